"""Risk tiers. Every tool declares one; nothing guesses a tier from a tool's name."""

from __future__ import annotations

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
    def records_intent(self) -> bool:
        """Whether a durable intent record must exist before the call runs."""
        return self is not Tier.READ
