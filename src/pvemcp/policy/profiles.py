"""The rules every policy starts from: the built-in floor and the named profiles.

Built-in ids start with `builtin.`, a prefix policy files may not use, so an audit record's
rule ids always say whether a decision came from the product or from the operator's file.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvemcp.policy.decision import Effect
from pvemcp.policy.rules import Rule, Selector
from pvemcp.policy.tiers import Tier

BUILTIN_PREFIX = "builtin."

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        id="builtin.read",
        effect=Effect.ALLOW,
        subjects=(Selector("any"),),
        tiers=frozenset({Tier.READ}),
        description="reads are open to every authenticated caller",
    ),
    Rule(
        id="builtin.local.tasks",
        effect=Effect.ALLOW,
        subjects=(Selector("local"),),
        tasks=True,
        description="the local operator (who holds the gateway's PVE credentials anyway) "
        "may follow and cancel any task, as its tier allows",
    ),
)
"""Always present, whatever the profile or file. A file can still deny reads (deny wins)."""

ENGINE_RULES: dict[str, str] = {
    "builtin.default-deny": "what no rule allows is denied",
    "builtin.no-escape": "escape-tier tools need an allow rule naming the caller and the tool "
    "or the escape tier; '*' and scopes never grant escape",
    "builtin.confirm-destructive": "every allowed destructive call needs the human's confirmation",
    "builtin.canonical-input": "paths must be canonical absolute paths and hosts DNS names, "
    "or the call is denied",
    "builtin.own-tasks": "a caller follows and cancels only the tasks its own calls started, "
    'unless an allow rule with tasks = "any" matches',
}
"""Ids the engine itself puts in decisions: fixed behaviour, not rules a file could change."""

PROFILES: dict[str, tuple[Tier, ...]] = {
    "read-only": (),
    "operator": (Tier.WRITE, Tier.DESTRUCTIVE),
    "admin": (Tier.WRITE, Tier.DESTRUCTIVE),
}
"""The tiers each profile allows beyond the built-in reads. None grants `escape`, and every
allowed destructive call still needs the human's confirmation (the engine adds it).

`operator` and `admin` allow the same tiers for now. They stay separate names so that
admin-only grants (node and storage administration, when those tools arrive) can be added
to one without changing what the other means in deployed configs."""


TASKS_ANY_PROFILES = frozenset({"admin"})
"""Profiles whose callers may act on tasks other callers started (`tasks = "any"`)."""


def profile_rules(name: str, subjects: Sequence[Selector]) -> tuple[Rule, ...]:
    """The allow rules of profile `name` for `subjects`; `KeyError` for an unknown profile."""
    tiers = PROFILES[name]
    if not subjects:
        return ()
    rules = tuple(
        Rule(
            id=f"{BUILTIN_PREFIX}{name}.{tier}",
            effect=Effect.ALLOW,
            subjects=tuple(subjects),
            tiers=frozenset({tier}),
            description=f"the {name} profile allows {tier} calls",
        )
        for tier in tiers
    )
    if name in TASKS_ANY_PROFILES:
        rules += (
            Rule(
                id=f"{BUILTIN_PREFIX}{name}.tasks",
                effect=Effect.ALLOW,
                subjects=tuple(subjects),
                tasks=True,
                description=f"the {name} profile may follow and cancel any caller's tasks",
            ),
        )
    return rules
