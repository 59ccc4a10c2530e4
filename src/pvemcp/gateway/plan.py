"""What a risky call will do, worked out before it runs.

A plan is shown to the human (elicitation, or the two-step confirmation), returned by
`dry_run`, bound into confirmation tokens and recorded in the audit intent. Its `target`
is what policy's target rules (node, vmid, pool, tags) are checked against, and its
`calls` are exactly the API requests the call will send.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from pvemcp.proxmox.backend import Method

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class Target(BaseModel):
    """The object a call acts on, as resolved from the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str | None = None
    vmid: int | None = None
    type: str | None = None
    name: str | None = None
    pool: str | None = None
    tags: list[str] = []


class GuestTarget(Target):
    """A VM or container: node, vmid and type are known, so a handler needs no checks."""

    node: str
    vmid: int
    type: Literal["qemu", "lxc"]

    @property
    def path(self) -> str:
        """The guest's API path, `/nodes/{node}/{type}/{vmid}`."""
        return f"/nodes/{self.node}/{self.type}/{self.vmid}"


class ApiCall(BaseModel):
    """One request a write will send, exactly: what dry run shows, the confirmation binds
    and the audit intent records before it is sent.

    `template` is the API's own name for the endpoint (`/nodes/{node}/qemu/{vmid}/status/
    start`), the key policy and the schema index know it by; `path` is the template filled
    in. `task` says the answer is a task's UPID, which the runner waits for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    template: str
    path: str
    params: dict[str, Any] = {}
    task: bool = False

    @classmethod
    def to(
        cls,
        method: Method,
        template: str,
        *,
        params: dict[str, Any] | None = None,
        task: bool = False,
        **where: str | int,
    ) -> ApiCall:
        """The call of `template` with its `{placeholders}` filled from `where` (quoted
        as one path segment each, so a value cannot reach another endpoint)."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in where:
                raise ValueError(f"{template}: no value for {{{name}}}")
            return quote(str(where[name]), safe="")

        path = _PLACEHOLDER.sub(fill, template)
        return cls(method=method, template=template, path=path, params=params or {}, task=task)

    def describe(self) -> str:
        """`POST /nodes/pve1/qemu/100/status/start`, with its parameters if any."""
        text = f"{self.method} {self.path}"
        if self.params:
            text += " " + " ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return text


class Change(BaseModel):
    """One attribute that will change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    before: Any = None
    after: Any = None


class Plan(BaseModel):
    """A human-readable summary, the changes, the target, and for commands and files
    exactly what will run or be touched.

    `argv`, `paths` and `hosts` are what policy's `argv`, `paths` and `hosts` rules are
    checked against (paths canonical, resolved on the node); `command` is the exact string
    that will be sent over SSH, recorded in the audit intent before it runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str
    changes: list[Change] = []
    target: Target = Target()
    calls: list[ApiCall] = []
    """The API requests the call sends, in order (empty for commands and files)."""
    warnings: list[str] = []
    argv: list[str] | None = None
    command: str | None = None
    paths: list[str] = []
    hosts: list[str] = []
    diff: str | None = None
    """For file writes: the start of a unified diff of the content (text files)."""

    def describe(self) -> str:
        """The plan as a few lines of text for a confirmation prompt."""
        lines = [self.summary]
        if self.command is not None:
            lines.append(f"$ {self.command}")
        lines += [f"> {call.describe()}" for call in self.calls]
        lines += [f"- {c.field}: {c.before!r} -> {c.after!r}" for c in self.changes]
        lines += [f"! {w}" for w in self.warnings]
        if self.diff:
            lines.append(self.diff)
        return "\n".join(lines)

    def after(self, field: str) -> Any:
        """What the plan says `field` will be once the call is done (None: not planned)."""
        return next((change.after for change in self.changes if change.field == field), None)

    def bound_facts(self) -> dict[str, Any]:
        """What a confirmation binds besides the arguments: the target and what would run,
        be sent or be touched, so an approval cannot be redeemed for another command,
        path or API call. For files the changes too (the hashes of the content replaced):
        the approved diff is the one applied. Other tools' changes are not bound, so a
        replayed token is refused as used rather than as a different call."""
        facts = {"target", "calls", "argv", "command", "paths", "hosts"}
        if self.paths:
            facts.add("changes")
        return self.model_dump(mode="json", include=facts)
