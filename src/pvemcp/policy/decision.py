"""The outcome of a policy check: an effect, the rules that decided it, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy decision; `rule_ids` name the rules that decided it, for audit and explain."""

    effect: Effect
    rule_ids: tuple[str, ...]
    reason: str

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW
