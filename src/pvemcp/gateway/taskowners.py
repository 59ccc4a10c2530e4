"""Task ownership: which caller started which Proxmox task, so that the task tools show
and cancel a caller's own tasks only.

Most tasks are the one gateway PVE token's to Proxmox, so PVE cannot tell callers apart
(a caller with an identity mapping has its own token, whose user PVE writes into the UPID;
ownership here works the same for it); the gateway can. The audit log is the record: a
call's outcome holds the UPIDs it started (`outcome.upids`) and who made it (`who.sub`,
`who.iss`). The index is
read from the log's newest records on first use, so ownership survives a restart (a wait
resumes on the UPID); it learns a task the moment the gateway sees its UPID (before the
call's outcome is written), and on a miss it reads what other gateway processes sharing
the log appended since. A UPID that is in no record is nobody's: refused, never trusted.
Bounded: the newest `MAX_TASKS` tasks of the last `MAX_AGE` seconds, read from at most
`TAIL_BYTES` of the live log file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.upid import parse_upid

TAIL_BYTES = 16 * 1024 * 1024
"""How much of the live audit file is read when the index is built."""
MAX_TASKS = 10_000
"""How many tasks the index keeps (the oldest are forgotten first)."""
MAX_AGE = 7 * 24 * 3600.0
"""Tasks started longer ago than this (seconds) are not loaded from the log."""

NOT_YOURS_HINT = (
    "You can follow and cancel only tasks your own calls started (proxmox_task_mine lists "
    'them); an operator can grant more with a tasks = "any" policy rule.'
)


@dataclass(frozen=True, slots=True)
class Owner:
    """Who started a task, and with which call."""

    subject: str
    issuer: str | None
    tool: str
    event_id: str
    at: float
    """Epoch seconds when the gateway learnt of the task."""

    def is_(self, principal: Principal) -> bool:
        return (self.subject, self.issuer) == principal.person


Key = tuple[str, str]
"""(cluster, upid): UPIDs are unique per cluster, not across clusters."""


def _epoch(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _owned(record: Mapping[str, Any]) -> tuple[list[Key], Owner] | None:
    """The tasks a call's outcome (or single) record says the call started, and its owner."""
    outcome = record.get("outcome")
    who = record.get("who")
    if not isinstance(outcome, dict) or not isinstance(who, dict):
        return None
    upids = outcome.get("upids")
    cluster = (record.get("where") or {}).get("cluster")
    subject, at = who.get("sub"), _epoch(record.get("time"))
    if not upids or not isinstance(cluster, str) or not isinstance(subject, str) or at is None:
        return None
    issuer = who.get("iss") if isinstance(who.get("iss"), str) else None
    owner = Owner(
        subject, issuer, str((record.get("what") or {}).get("tool")), str(record["event_id"]), at
    )
    return [(cluster, upid) for upid in upids if isinstance(upid, str)], owner


class TaskOwners:
    """The ownership index over one audit log (`path` None: audit disabled, so only the
    tasks this process saw)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._owners: OrderedDict[Key, Owner] = OrderedDict()
        self._lock = threading.Lock()
        self._read_to: tuple[int, int] | None = None
        """(inode, offset) of the live file read so far; None before the first read."""

    def add(self, cluster: str, upid: str, owner: Owner) -> None:
        """Record a task a call just started."""
        with self._lock:
            self._put((cluster, upid), owner)

    def _put(self, key: Key, owner: Owner) -> None:
        self._owners.pop(key, None)
        self._owners[key] = owner
        while len(self._owners) > MAX_TASKS:
            self._owners.popitem(last=False)

    def _refresh(self) -> None:
        """Read the records appended to the log since the last read (all of its newest
        `TAIL_BYTES` the first time, or after a rotation)."""
        if self._path is None:
            return
        try:
            with self._path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                start = 0
                if self._read_to is not None and self._read_to[0] == stat.st_ino:
                    start = self._read_to[1]
                start = max(start, stat.st_size - TAIL_BYTES)
                handle.seek(start)
                data = handle.read(stat.st_size - start)
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1  # a line being written now is read next time
        lines = data[:complete].split(b"\n")
        if start > 0 and (self._read_to is None or start != self._read_to[1]):
            lines = lines[1:]  # started mid-line
        cutoff = time.time() - MAX_AGE
        with self._lock:
            self._read_to = (stat.st_ino, start + complete)
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                found = _owned(record) if isinstance(record, dict) else None
                if found is None or found[1].at < cutoff:
                    continue
                for key in found[0]:
                    self._put(key, found[1])

    async def owner(self, cluster: str, upid: str) -> Owner | None:
        """Who started `upid` in `cluster`, reading new audit records on a miss."""
        with self._lock:
            found = self._owners.get((cluster, upid))
        if found is None:
            await anyio.to_thread.run_sync(self._refresh)
            with self._lock:
                found = self._owners.get((cluster, upid))
        return found

    async def of(self, cluster: str, principal: Principal) -> list[tuple[str, Owner]]:
        """The caller's tasks in `cluster`, newest first."""
        await anyio.to_thread.run_sync(self._refresh)
        with self._lock:
            items = list(self._owners.items())
        return [
            (upid, owner)
            for (where, upid), owner in reversed(items)
            if where == cluster and owner.is_(principal)
        ]


@dataclass(frozen=True, slots=True)
class TaskDesk:
    """What the task tools reach through their context: the caller's tasks, and whether
    policy lets it act on others' (`others`, asked with the task's node)."""

    owners: TaskOwners
    principal: Principal
    cluster: str
    others: Callable[[str], bool]

    async def check(self, upid: str) -> None:
        """Refuse `upid` unless the caller started it or policy grants others' tasks; the
        refusal does not say whether the task exists or whose it is."""
        node = parse_upid(upid).node
        owner = await self.owners.owner(self.cluster, upid)
        if owner is not None and owner.is_(self.principal):
            return
        if self.others(node):
            return
        raise ToolFailure(
            "not_your_task",
            f"task {upid} was not started by your calls",
            field="upid",
            hint=NOT_YOURS_HINT,
        )

    async def mine(self) -> list[tuple[str, Owner]]:
        """The caller's tasks in this cluster, newest first."""
        return await self.owners.of(self.cluster, self.principal)
