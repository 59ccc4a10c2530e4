"""The outcome of a policy check: an effect, the rules that decided it, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    CONFIRM = "confirm"
    APPROVE = "approve"
    """Held until a second person, named by the rule, approves it (four eyes)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy decision; `rule_ids` name the rules that decided it, for audit and explain.

    `unresolved` names the request attributes (`node`, `vmid`, `pool`, `tags`, `argv`, ...)
    that some rule constrains but the request did not carry, where knowing them could change
    the effect. A rule never matches on an unknown attribute, so such a decision is final
    only if the caller cannot learn more; a gateway that can resolve the target should do
    so and decide again.
    """

    effect: Effect
    rule_ids: tuple[str, ...]
    reason: str
    unresolved: frozenset[str] = field(default_factory=frozenset)
    approvers: tuple[str, ...] = ()
    """For `approve`: who may approve the call (the subject selectors of every matching
    approve rule, any one of whom suffices; never the requester)."""

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW
