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
    """A human-readable summary, the changes, and the target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str
    changes: list[Change] = []
    target: Target = Target()
    warnings: list[str] = []

    def describe(self) -> str:
        """The plan as a few lines of text for a confirmation prompt."""
        lines = [self.summary]
        lines += [f"- {c.field}: {c.before!r} -> {c.after!r}" for c in self.changes]
        lines += [f"! {w}" for w in self.warnings]
        return "\n".join(lines)
