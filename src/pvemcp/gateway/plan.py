"""What a risky call will do, worked out before it runs.

A plan is shown to the human (elicitation, or the two-step confirmation), returned by
`dry_run`, bound into confirmation tokens and recorded in the audit intent. Its `target`
is what policy's target rules (node, vmid, pool, tags) are checked against.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Target(BaseModel):
    """The object a call acts on, as resolved from the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str | None = None
    vmid: int | None = None
    type: str | None = None
    name: str | None = None
    pool: str | None = None
    tags: list[str] = []


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
        lines += [f"- {c.field}: {c.before!r} -> {c.after!r}" for c in self.changes]
        lines += [f"! {w}" for w in self.warnings]
        if self.diff:
            lines.append(self.diff)
        return "\n".join(lines)

    def bound_facts(self) -> dict[str, Any]:
        """What a confirmation binds besides the arguments: the target and what would run
        or be touched, so an approval cannot be redeemed for another command or path. For
        files the changes too (the hashes of the content replaced): the approved diff is
        the one applied. Other tools' changes are not bound, so a replayed token is
        refused as used rather than as a different call."""
        facts = {"target", "argv", "command", "paths", "hosts"}
        if self.paths:
            facts.add("changes")
        return self.model_dump(mode="json", include=facts)
