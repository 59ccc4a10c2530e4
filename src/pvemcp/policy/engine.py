"""Policy decisions for tool calls.

This is the built-in baseline, the floor every later policy file builds on: reads are open to
any authenticated caller, `write`/`destructive` calls only to the local operator, and
`escape` to nobody. It runs for every call through the gateway's single pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What is being asked: the tool, its tier, and where it lands."""

    tool: str
    tier: Tier
    cluster: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


class PolicyEngine(Protocol):
    """Anything that can decide a call."""

    def decide(self, principal: Principal, request: PolicyRequest) -> Decision: ...

    def could_allow(self, principal: Principal, tool: str, tier: Tier) -> bool:
        """Whether some call of `tool` could be allowed for `principal` (for tools/list)."""
        ...


class BaselinePolicy:
    """The built-in rules: read for all, write/destructive for the local operator, no escape."""

    def decide(self, principal: Principal, request: PolicyRequest) -> Decision:
        tier = request.tier
        if tier is Tier.ESCAPE:
            return Decision(
                Effect.DENY,
                ("builtin.no-escape",),
                "escape-tier tools run only when a policy rule names the caller",
            )
        if tier is Tier.READ:
            return Decision(Effect.ALLOW, ("builtin.read",), "reads are open to every caller")
        if principal.is_local:
            return Decision(
                Effect.ALLOW,
                ("builtin.local-operator",),
                f"the local operator may make {tier} calls",
            )
        return Decision(
            Effect.DENY,
            ("builtin.default-deny",),
            f"no rule allows {tier} calls for subject {principal.subject!r}",
        )

    def could_allow(self, principal: Principal, tool: str, tier: Tier) -> bool:
        return self.decide(principal, PolicyRequest(tool=tool, tier=tier, cluster="*")).allowed
