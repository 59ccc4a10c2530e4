"""Risk tiers. Every tool declares one; nothing guesses a tier from a tool's name."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Tier(StrEnum):
    """How much harm a call can do, in increasing order."""

    READ = "read"
    """Looks, changes nothing."""
    WRITE = "write"
    """Changes state in a way that can be undone (start a guest, edit a config)."""
    DESTRUCTIVE = "destructive"
    """Can lose data or availability (hard stop, delete, rollback)."""
    ESCAPE = "escape"
    """Runs commands or touches files on a node or guest: off unless policy names the subject."""

    @property
    def rank(self) -> int:
        """0 for read up to 3 for escape: tiers compare by how much harm they can do."""
        return _ORDER.index(self)

    @classmethod
    def most(cls, tiers: Iterable[Tier]) -> Tier:
        """The riskiest of `tiers` (read when there are none)."""
        return max(tiers, key=lambda tier: tier.rank, default=cls.READ)

    @property
    def records_intent(self) -> bool:
        """Whether a durable intent record must exist before the call runs."""
        return self is not Tier.READ


_ORDER = tuple(Tier)


def parse_tiers(text: str) -> frozenset[Tier]:
    """A tool's tiers as the registry gives them to the policy loader: one tier, or several
    comma-separated for a generic API tool, whose tier is its call's (`write,destructive,
    escape`); `ValueError` for a name that is not a tier."""
    return frozenset(Tier(name.strip()) for name in text.split(","))
