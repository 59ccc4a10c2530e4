"""Policy decisions for tool calls: the rules of a profile and a policy file, applied.

Deny overrides approve, approve overrides confirm, confirm overrides allow, and what no
rule allows is denied. On top of the rules the engine enforces three things no file can
turn off: `escape` needs a rule that names the caller and the tool (or tier) explicitly,
every allowed destructive call needs the human's confirmation (or a second person's
approval), and paths and hosts must arrive canonical. See
docs/policy.md for the full semantics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.principal import Principal
from pvemcp.policy.profiles import BUILTIN_RULES
from pvemcp.policy.rules import ApiRef, Rule, canonical_host, split_path
from pvemcp.policy.tiers import Tier

BUNDLE_FORMAT = "pvemcp.policy/1"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What is being asked: the tool, its tier, and where it lands.

    Target attributes left at `None` (or empty, for `paths` and `hosts`) are *unknown*, and
    a rule constraining an unknown attribute does not match. `tags` is `None` when unknown
    and an empty set for a guest known to have no tags. `paths` must be canonical absolute
    paths (the tool resolves them), `hosts` DNS names.
    """

    tool: str
    tier: Tier
    cluster: str | None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    node: str | None = None
    vmid: int | None = None
    pool: str | None = None
    tags: frozenset[str] | None = None
    argv: tuple[str, ...] | None = None
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    api: tuple[ApiRef, ...] = ()
    """The API requests the call sends (a write's planned calls, a read tool's declared
    endpoints): what `api` rules are checked against."""
    covered_by: frozenset[str] = frozenset()
    """For the generic API tools: the typed tools that send the same endpoints, whose deny
    and confirm rules apply to this call too."""
    others_task: bool = False
    """A task tool's call on a task another caller started: only `tasks = "any"` allow
    rules count (deny rules apply as ever)."""


TARGET_ATTRIBUTES = frozenset({"cluster", "node", "vmid", "pool", "tags"})
"""What a call acts on, which a request may not know yet (a read names no guest; a write
knows it after planning). A deny or confirm rule constrained on one of them applies when it
is unknown: unknown targets fail closed."""

_EFFECTS = tuple(Effect)
"""Iterating the enum class itself builds a new list each time: this is on every call."""


class PolicyEngine:
    """Decides calls against the built-in rules followed by `rules`, in that order."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = (*BUILTIN_RULES, *rules)
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"two policy rules have the id {rule.id!r}")
            seen.add(rule.id)
        canonical = {"format": BUNDLE_FORMAT, "rules": [rule.canonical() for rule in self.rules]}
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self.bundle_hash: str = hashlib.sha256(text.encode()).hexdigest()
        """SHA-256 of the canonical rule set, built-ins included, for audit records."""

    def decide(self, principal: Principal, request: PolicyRequest) -> Decision:
        """The effect for this call, the rules that decided it, and why."""
        refusal = _noncanonical(request)
        if refusal is not None:
            return Decision(Effect.DENY, ("builtin.canonical-input",), refusal)
        escape = request.tier is Tier.ESCAPE
        hits: dict[Effect, list[Rule]] = {effect: [] for effect in _EFFECTS}
        pending: dict[Effect, set[str]] = {effect: set() for effect in _EFFECTS}
        unsure: dict[Effect, list[Rule]] = {effect: [] for effect in _EFFECTS}
        not_by_name: list[Rule] = []
        for rule in self.rules:
            found = rule.match(principal, request)
            if found is None:
                continue
            if (
                escape
                and rule.effect is Effect.ALLOW
                and not rule.grants_escape(request.tool, found)
            ):
                not_by_name.append(rule)
            elif found.missing:
                pending[rule.effect] |= found.missing
                # A deny, approve or confirm rule that might apply to the unknown target counts as
                # applying (fail closed); an argv, path or host constraint on a call that
                # has none simply does not apply.
                if rule.effect is not Effect.ALLOW and found.missing & TARGET_ATTRIBUTES:
                    unsure[rule.effect].append(rule)
            else:
                hits[rule.effect].append(rule)
        if hits[Effect.DENY] or unsure[Effect.DENY]:
            denies = hits[Effect.DENY] or unsure[Effect.DENY]
            reason = f"denied by {_named(denies)}"
            if not hits[Effect.DENY]:
                reason += (
                    f", which depends on {_listed(pending[Effect.DENY] & TARGET_ATTRIBUTES)} "
                    "that this request did not carry (unknown targets fail closed)"
                )
            return Decision(Effect.DENY, _ids(denies), reason, frozenset(pending[Effect.DENY]))
        if not hits[Effect.ALLOW]:
            return _unallowed(principal, request, not_by_name, pending[Effect.ALLOW])
        unresolved = pending[Effect.DENY] | pending[Effect.APPROVE] | pending[Effect.CONFIRM]
        return _granted(request, hits, unsure, frozenset(unresolved))

    def refuses(self, principal: Principal, request: PolicyRequest) -> Decision | None:
        """The denial of `request` if it holds whatever the attributes `request` leaves
        unknown turn out to be (argv, paths, a guest's pool...); None while some values
        could still get it allowed.

        The gateway asks this on what the arguments already name (a node) before a planner
        reaches that target, so a node that policy refuses sees no connection at all.
        """
        decision = self.decide(principal, request)
        if decision.effect is not Effect.DENY:
            return None
        if decision.rule_ids == ("builtin.canonical-input",):
            return decision
        escape = request.tier is Tier.ESCAPE
        allowable = False
        not_by_name: list[Rule] = []
        for rule in self.rules:
            found = rule.match(principal, request)
            if found is None:
                continue
            if rule.effect is Effect.DENY and not found.missing:
                return decision  # a deny rule that holds on what is known
            if rule.effect is Effect.ALLOW:
                if not escape or rule.grants_escape(request.tool, found):
                    allowable = True  # it fits, or may once the plan is known
                else:
                    not_by_name.append(rule)
        if allowable:
            return None
        # No allow rule can fit, whatever the unknown attributes (and any deny) turn out to be.
        return _unallowed(principal, request, not_by_name, set())

    def could_allow(self, principal: Principal, tool: str, tier: Tier) -> bool:
        """Whether some call of `tool` could be allowed or confirmed for `principal`.

        Target and argument constraints are assumed satisfiable, so a tool shows in the
        caller's tools/list if any allow rule could grant it and no deny rule refuses every
        call of it.
        """
        allowed = False
        for rule in self.rules:
            found = rule.applies(principal, tool, tier)
            if found is None:
                continue
            if rule.effect is Effect.DENY and not rule.conditional:
                return False
            if (
                rule.effect is Effect.ALLOW
                and not rule.tasks
                and (tier is not Tier.ESCAPE or rule.grants_escape(tool, found))
            ):
                allowed = True
        return allowed


def _granted(
    request: PolicyRequest,
    hits: Mapping[Effect, list[Rule]],
    unsure: Mapping[Effect, list[Rule]],
    unresolved: frozenset[str],
) -> Decision:
    """The decision on an allowed call: approve over confirm over allow."""
    ids = list(_ids(hits[Effect.ALLOW]))
    reasons = [f"allowed by {_named(hits[Effect.ALLOW])}"]
    approves = hits[Effect.APPROVE] + unsure[Effect.APPROVE]
    if approves:
        # A second person's approval replaces the requester's confirmation: it is the
        # stronger check, and the approver sees the same plan.
        approvers = sorted({str(s) for rule in approves for s in rule.approvers})
        reasons.append(f"approval by {', '.join(approvers)} required by {_named(approves)}")
        return Decision(
            Effect.APPROVE,
            (*ids, *_ids(approves)),
            "; ".join(reasons),
            unresolved,
            tuple(approvers),
        )
    effect = Effect.ALLOW
    confirms = hits[Effect.CONFIRM] + unsure[Effect.CONFIRM]
    if confirms:
        effect = Effect.CONFIRM
        ids += _ids(confirms)
        reasons.append(f"confirmation required by {_named(confirms)}")
    if request.tier is Tier.DESTRUCTIVE:
        effect = Effect.CONFIRM
        ids.append("builtin.confirm-destructive")
        reasons.append("destructive calls always need the human's confirmation")
    return Decision(effect, tuple(ids), "; ".join(reasons), unresolved)


def _unallowed(
    principal: Principal, request: PolicyRequest, not_by_name: list[Rule], pending: set[str]
) -> Decision:
    """The default deny, saying what was missing; for escape, why matching rules did not count."""
    who = _caller(principal)
    if request.tier is Tier.ESCAPE:
        rule_id = "builtin.no-escape"
        reason = (
            f"{request.tool} is an escape-tier tool: only an allow rule that names {who} "
            "(sub:, client:, group: or local, never * or a scope) and names the tool or the "
            "escape tier can allow it"
        )
        if not_by_name:
            reason += f"; {_named(not_by_name)} matched but cannot grant escape"
    elif request.others_task:
        rule_id = "builtin.own-tasks"
        reason = (
            f"{request.tool} on a task another caller started needs an allow rule with "
            f'tasks = "any" for {who}'
        )
    else:
        rule_id = "builtin.default-deny"
        reason = f"no rule allows {request.tool} ({request.tier}) for {who}"
    if pending:
        reason += f"; rules depending on {_listed(pending)} (not carried) might allow it"
    return Decision(Effect.DENY, (rule_id,), reason, frozenset(pending))


def _noncanonical(request: PolicyRequest) -> str | None:
    for path in request.paths:
        if split_path(path) is None:
            return (
                f"path {path!r} is not canonical (absolute, no '.', '..', '//' or trailing /); "
                "the tool must resolve it before policy can judge it"
            )
    for host in request.hosts:
        if canonical_host(host) is None:
            return f"host {host!r} is not a DNS name"
    return None


def _ids(rules: list[Rule]) -> tuple[str, ...]:
    return tuple(rule.id for rule in rules)


def _named(rules: list[Rule]) -> str:
    quoted = ", ".join(f"'{rule.id}'" for rule in rules)
    return f"rule {quoted}" if len(rules) == 1 else f"rules {quoted}"


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _caller(principal: Principal) -> str:
    return "the local operator" if principal.is_local else f"subject {principal.subject!r}"
