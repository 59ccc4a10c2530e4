"""Properties that must hold for every rule set, not just the ones we thought of.

Rules are built directly (not through the loader) so that the generator can also produce
rules the loader would refuse, such as `*` granting escape: the engine must be safe on its
own.
"""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.principal import Principal
from pvemcp.policy.rules import Rule, Selector, VmidRange
from pvemcp.policy.tiers import Tier
from tests.policy.policykit import ALICE, FAKE_LOCAL, KNOWN_TOOLS

SELECTORS = [
    "*",
    "local",
    "sub:alice",
    "sub:bob",
    "sub:local",
    "group:ops",
    "group:dev",
    "scope:pve.write",
    "scope:pve.escape",
    "client:agent-1",
]
TOOL_PATTERNS = [*KNOWN_TOOLS, "proxmox_*", "proxmox_cli_*", "*", "proxmox_guest_?ower"]
NODES = ["pve1", "pve2"]
TAGS = ["lab", "prod"]


SUBJECT_SETS = st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=3).map(
    lambda texts: tuple(Selector.parse(text) for text in texts)
)
ANY_EFFECT = st.sampled_from(list(Effect))
ANY_TIERS = st.none() | st.frozensets(st.sampled_from(list(Tier)), min_size=1)
ANY_TOOLS = st.none() | st.lists(st.sampled_from(TOOL_PATTERNS), min_size=1, max_size=3).map(tuple)
# Biased towards rules that mention escape, so that escape calls are often allowed and the
# property is tested where it matters, not only on easy denials.
ESCAPE_TIERS = st.sampled_from(
    [None, frozenset({Tier.ESCAPE}), frozenset({Tier.ESCAPE, Tier.WRITE}), frozenset({Tier.READ})]
)
ESCAPE_TOOLS = st.sampled_from(
    [None, ("proxmox_cli_run",), ("proxmox_file_write", "proxmox_cli_run"), ("proxmox_*",), ("*",)]
)


def rule_sets(
    tiers: st.SearchStrategy[frozenset[Tier] | None],
    tools: st.SearchStrategy[tuple[str, ...] | None],
    *,
    effects: st.SearchStrategy[Effect] = ANY_EFFECT,
    targets: bool = True,
) -> st.SearchStrategy[list[Rule]]:
    """Lists of up to 8 rules with unique ids, random subjects and tools, and (with `targets`)
    random node, tag and vmid constraints."""
    spans = [VmidRange(100, 199), VmidRange(150, 150)]
    rule = st.builds(
        Rule,
        id=st.just(""),
        effect=effects,
        subjects=SUBJECT_SETS,
        tools=tools,
        tiers=tiers,
        nodes=st.none() | st.frozensets(st.sampled_from(NODES), min_size=1)
        if targets
        else st.none(),
        tags=st.none() | st.frozensets(st.sampled_from(TAGS), min_size=1) if targets else st.none(),
        vmids=st.none() | st.lists(st.sampled_from(spans), min_size=1).map(tuple)
        if targets
        else st.none(),
    )
    return st.lists(rule, max_size=8).map(
        lambda found: [replace(r, id=f"r{index}") for index, r in enumerate(found)]
    )


RULE_SETS = rule_sets(ANY_TIERS, ANY_TOOLS)


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    subject = draw(st.sampled_from(["alice", "bob", "local", "carol"]))
    return Principal(
        subject=subject,
        transport=draw(st.sampled_from(["stdio", "http", "memory"])),
        client_id=draw(st.none() | st.sampled_from(["agent-1", "agent-2"])),
        groups=draw(st.frozensets(st.sampled_from(["ops", "dev", "sec"]))),
        scopes=draw(st.frozensets(st.sampled_from(["pve.write", "pve.escape", "pve.read"]))),
    )


@st.composite
def requests(draw: st.DrawFn, tools: list[str] | None = None) -> PolicyRequest:
    tool = draw(st.sampled_from(tools or list(KNOWN_TOOLS)))
    return PolicyRequest(
        tool=tool,
        tier=Tier(KNOWN_TOOLS[tool]),
        cluster=draw(st.none() | st.sampled_from(["lab", "prod"])),
        node=draw(st.none() | st.sampled_from([*NODES, "pve3"])),
        vmid=draw(st.none() | st.integers(min_value=100, max_value=320)),
        tags=draw(st.none() | st.frozensets(st.sampled_from([*TAGS, "web"]))),
    )


@settings(max_examples=200, deadline=None)
@given(RULE_SETS, principals(), requests(), st.data())
def test_a_matching_deny_always_wins(
    ruleset: list[Rule], principal: Principal, request: PolicyRequest, data: st.DataObject
) -> None:
    """Wherever a deny that matches the call sits, and whatever else the policy holds."""
    subject = data.draw(
        st.sampled_from([s for s in SELECTORS if Selector.parse(s).matches(principal)])
    )
    deny = Rule(
        id="the-deny",
        effect=Effect.DENY,
        subjects=(Selector.parse(subject),),
        tools=data.draw(st.sampled_from([None, (request.tool,), ("*",)])),
        tiers=data.draw(st.sampled_from([None, frozenset({request.tier})])),
        nodes=None if request.node is None else frozenset({request.node}),
        tags=None if not request.tags else frozenset(request.tags),
    )
    position = data.draw(st.integers(min_value=0, max_value=len(ruleset)))
    decision = PolicyEngine([*ruleset[:position], deny, *ruleset[position:]]).decide(
        principal, request
    )
    assert decision.effect is Effect.DENY
    assert "the-deny" in decision.rule_ids


def names_caller_and_escape(rule: Rule, principal: Principal, tool: str) -> bool:
    """The oracle, written apart from the engine: an allow rule with no `*` subject, naming
    the caller by sub/client/group/local and naming the tool literally or the escape tier."""
    explicit = any(
        (s.kind == "sub" and s.value == principal.subject)
        or (s.kind == "client" and s.value == principal.client_id)
        or (s.kind == "group" and s.value in principal.groups)
        or (s.kind == "local" and principal.subject == "local" and principal.transport != "http")
        for s in rule.subjects
    )
    no_star = all(s.kind != "any" for s in rule.subjects)
    named = (rule.tiers is not None and Tier.ESCAPE in rule.tiers) or (
        rule.tools is not None and tool in rule.tools
    )
    tool_fits = rule.tools is None or any(fnmatchcase(tool, p) for p in rule.tools)
    return rule.effect is Effect.ALLOW and explicit and no_star and named and tool_fits


def escape_rule(*subjects: str, tools: tuple[str, ...] | None = None) -> list[Rule]:
    return [
        Rule(
            "r0",
            Effect.ALLOW,
            tuple(Selector.parse(s) for s in subjects),
            tools=tools,
            tiers=None if tools else frozenset({Tier.ESCAPE}),
        )
    ]


CLI_RUN = PolicyRequest("proxmox_cli_run", Tier.ESCAPE, "lab")


@settings(max_examples=300, deadline=None)
# The near misses, always tried: `*` beside a name, a scope, a glob, a token claiming `local`.
@example(escape_rule("*", "sub:alice"), ALICE, CLI_RUN)
@example(escape_rule("scope:pve.write"), ALICE, CLI_RUN)
@example(escape_rule("sub:alice", tools=("proxmox_cli_*",)), ALICE, CLI_RUN)
@example(escape_rule("local"), FAKE_LOCAL, CLI_RUN)
@given(
    rule_sets(
        ESCAPE_TIERS,
        ESCAPE_TOOLS,
        effects=st.sampled_from([Effect.ALLOW] * 4 + [Effect.CONFIRM, Effect.DENY]),
        targets=False,
    ),
    principals(),
    requests(["proxmox_cli_run", "proxmox_file_write"]),
)
def test_escape_needs_a_rule_naming_the_caller(
    ruleset: list[Rule], principal: Principal, request: PolicyRequest
) -> None:
    policy = PolicyEngine(ruleset)
    decision = policy.decide(principal, request)
    granting = [r for r in ruleset if names_caller_and_escape(r, principal, request.tool)]
    event(f"escape {decision.effect}")
    if decision.effect is not Effect.DENY:
        assert granting, decision
        assert set(decision.rule_ids) & {r.id for r in granting}
    if not granting:
        assert not policy.could_allow(principal, request.tool, request.tier)


@settings(max_examples=100, deadline=None)
@given(RULE_SETS, principals(), requests(), st.data())
def test_decisions_do_not_depend_on_rule_order(
    ruleset: list[Rule], principal: Principal, request: PolicyRequest, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(ruleset))
    first = PolicyEngine(ruleset).decide(principal, request)
    second = PolicyEngine(shuffled).decide(principal, request)
    assert first.effect is second.effect
    assert set(first.rule_ids) == set(second.rule_ids)
    assert first.unresolved == second.unresolved


@settings(max_examples=150, deadline=None)
@given(RULE_SETS, principals(), requests())
def test_tools_list_shows_every_tool_a_call_could_use(
    ruleset: list[Rule], principal: Principal, request: PolicyRequest
) -> None:
    """`could_allow` over-approximates `decide`: a hidden tool is never one that would run."""
    policy = PolicyEngine(ruleset)
    if policy.decide(principal, request).effect is not Effect.DENY:
        assert policy.could_allow(principal, request.tool, request.tier)
