"""Proxmox task identifiers (UPIDs): strict parsing and the canonical text form.

A UPID arrives from tool arguments and from PVE answers, and its node decides where task
calls are routed, so it is parsed strictly (PVE's own grammar, nothing after the trailing
colon) before it is ever put into a request path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAX_LENGTH = 512
_FIELDS = ("node", "pid", "pstart", "starttime", "type", "id", "user")

# A DNS label, as PVE's UPID.pm requires of the node name.
_NODE_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HEX8_RE = re.compile(r"[0-9A-Fa-f]{8}")
# pstart counts clock ticks since boot: 9 digits after ~497 days of uptime.
_PSTART_RE = re.compile(r"[0-9A-Fa-f]{8,9}")
# type, id and user: no ':', '/', whitespace or control characters; only id may be empty.
_WORD_RE = re.compile(r"[^:/\s\x00-\x1f\x7f]+")
_TOKEN_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9.\-_]+")


@dataclass(frozen=True, slots=True)
class Upid:
    """A parsed UPID; `str()` gives PVE's canonical form (upper-case hex)."""

    node: str
    pid: int
    pstart: int
    starttime: int
    """Epoch seconds when the task started."""
    type: str
    id: str
    """The task's object (a vmid, a storage, ...); empty for some task types."""
    user: str
    """`user@realm`, without the token part."""
    tokenid: str | None = None
    """The API token name when a token started the task (`user@realm!tokenid`)."""

    def __str__(self) -> str:
        owner = self.user if self.tokenid is None else f"{self.user}!{self.tokenid}"
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{owner}:"
        )


def _shown(text: str) -> str:
    """A bounded repr for error messages, so a huge or odd input cannot flood a log."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def parse_upid(text: str) -> Upid:
    """Parse `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:` strictly.

    Hex fields may be upper or lower case. Raises `ValueError` naming the first bad part.
    """
    if not isinstance(text, str):
        raise ValueError(f"a UPID must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        raise ValueError(f"not a UPID: longer than {_MAX_LENGTH} characters")
    if not text.startswith("UPID:"):
        raise ValueError(f"not a UPID: {_shown(text)} does not start with 'UPID:'")
    if not text.endswith(":"):
        raise ValueError(
            f"not a UPID: {_shown(text)} must end with the colon after the user field "
            "(nothing may follow it)"
        )
    parts = text[len("UPID:") : -1].split(":")
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"not a UPID: {_shown(text)} has {len(parts)} fields, expected {len(_FIELDS)} "
            "(node:pid:pstart:starttime:type:id:user)"
        )
    node, pid, pstart, starttime, task_type, task_id, owner = parts
    checks = (
        ("node", node, _NODE_RE, "a DNS label"),
        ("pid", pid, _HEX8_RE, "8 hex digits"),
        ("pstart", pstart, _PSTART_RE, "8 or 9 hex digits"),
        ("starttime", starttime, _HEX8_RE, "8 hex digits"),
        ("type", task_type, _WORD_RE, "a non-empty word without '/' or whitespace"),
        ("user", owner, _WORD_RE, "a non-empty word without '/' or whitespace"),
    )
    for field, value, pattern, expected in checks:
        if not pattern.fullmatch(value):
            raise ValueError(f"not a UPID: field {field} {_shown(value)} must be {expected}")
    if task_id and not _WORD_RE.fullmatch(task_id):
        raise ValueError(
            f"not a UPID: field id {_shown(task_id)} must not contain '/' or whitespace"
        )
    user, bang, tokenid = owner.partition("!")
    if bang and not _TOKEN_NAME_RE.fullmatch(tokenid):
        raise ValueError(f"not a UPID: token name {_shown(tokenid)} is not valid")
    return Upid(
        node=node,
        pid=int(pid, 16),
        pstart=int(pstart, 16),
        starttime=int(starttime, 16),
        type=task_type,
        id=task_id,
        user=user,
        tokenid=tokenid if bang else None,
    )


def is_upid(value: object) -> bool:
    """True when `value` is a string that `parse_upid` accepts."""
    if not isinstance(value, str):
        return False
    try:
        parse_upid(value)
    except ValueError:
        return False
    return True
