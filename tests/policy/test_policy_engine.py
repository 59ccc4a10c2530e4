"""Table tests of the policy semantics: precedence, defaults, subjects, tools, targets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.principal import Principal
from pvemcp.policy.rules import Rule, Selector
from pvemcp.policy.tiers import Tier
from tests.policy.policykit import ALICE, BOB, FAKE_LOCAL, LOCAL, engine, request

ALLOW, DENY, CONFIRM = Effect.ALLOW, Effect.DENY, Effect.CONFIRM

OPS_WRITE = """
[[rules]]
id = "ops-write"
effect = "allow"
subjects = ["group:ops"]
tiers = ["write", "destructive"]
"""


@dataclass(frozen=True)
class Case:
    name: str
    policy: str
    principal: Principal
    request: PolicyRequest
    effect: Effect
    rule_ids: tuple[str, ...]


def rule(rule_id: str, effect: str, subjects: str, **keys: str) -> str:
    """One [[rules]] table; `keys` values are TOML literals."""
    lines = [
        "[[rules]]",
        f'id = "{rule_id}"',
        f'effect = "{effect}"',
        f"subjects = {subjects}",
    ]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


CASES = [
    # Defaults and precedence.
    Case("read is open to all", "", BOB, request("proxmox_guest_list"), ALLOW, ("builtin.read",)),
    Case(
        "write is denied by default",
        "",
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case("allow grants", OPS_WRITE, ALICE, request("proxmox_guest_power"), ALLOW, ("ops-write",)),
    Case(
        "deny overrides allow",
        OPS_WRITE + rule("no-alice", "deny", '["sub:alice"]'),
        ALICE,
        request("proxmox_guest_power"),
        DENY,
        ("no-alice",),
    ),
    Case(
        "deny overrides the built-in read",
        rule("no-agent-2", "deny", '["client:agent-2"]'),
        BOB,
        request("proxmox_guest_list"),
        DENY,
        ("no-agent-2",),
    ),
    Case(
        "deny overrides confirm",
        OPS_WRITE
        + rule("confirm-all", "confirm", '["*"]')
        + rule("deny-lab", "deny", '["*"]', clusters='["lab"]'),
        ALICE,
        request("proxmox_guest_power"),
        DENY,
        ("deny-lab",),
    ),
    Case(
        "confirm overrides allow",
        OPS_WRITE + rule("confirm-lab", "confirm", '["*"]', clusters='["lab"]'),
        ALICE,
        request("proxmox_guest_power"),
        CONFIRM,
        ("ops-write", "confirm-lab"),
    ),
    Case(
        "confirm alone grants nothing",
        rule("confirm-all", "confirm", '["*"]'),
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "an allowed destructive call needs confirmation",
        OPS_WRITE,
        ALICE,
        request("proxmox_guest_stop"),
        CONFIRM,
        ("ops-write", "builtin.confirm-destructive"),
    ),
    # Subject selectors.
    Case(
        "sub matches",
        rule("a", "allow", '["sub:alice"]', tiers='["write"]'),
        ALICE,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    Case(
        "sub is exact",
        rule("a", "allow", '["sub:ali"]', tiers='["write"]'),
        ALICE,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "client matches",
        rule("a", "allow", '["client:agent-1"]', tiers='["write"]'),
        ALICE,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    Case(
        "scope matches",
        rule("a", "allow", '["scope:pve.write"]', tiers='["write"]'),
        ALICE,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    Case(
        "scope missing",
        rule("a", "allow", '["scope:pve.write"]', tiers='["write"]'),
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "local matches the stdio operator",
        rule("a", "allow", '["local"]', tiers='["write"]'),
        LOCAL,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    Case(
        "local is not an HTTP token with sub=local",
        rule("a", "allow", '["local"]', tiers='["write"]'),
        FAKE_LOCAL,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "star matches anyone",
        rule("a", "allow", '["*"]', tiers='["write"]'),
        BOB,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    # Tools and tiers.
    Case(
        "tool glob",
        rule("a", "allow", '["*"]', tools='["proxmox_guest_*"]'),
        BOB,
        request("proxmox_guest_power"),
        ALLOW,
        ("a",),
    ),
    Case(
        "tool glob misses other tools",
        rule("a", "allow", '["*"]', tools='["proxmox_guest_*"]'),
        BOB,
        request("proxmox_download_url", hosts=("a.example",)),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "tools and tiers must both match",
        rule("a", "allow", '["*"]', tools='["proxmox_guest_*"]', tiers='["write"]'),
        BOB,
        request("proxmox_guest_stop"),
        DENY,
        ("builtin.default-deny",),
    ),
    # Targets.
    Case(
        "node matches",
        rule("a", "allow", '["*"]', tiers='["write"]', nodes='["pve1"]'),
        BOB,
        request("proxmox_guest_power", node="pve1"),
        ALLOW,
        ("a",),
    ),
    Case(
        "node differs",
        rule("a", "allow", '["*"]', tiers='["write"]', nodes='["pve1"]'),
        BOB,
        request("proxmox_guest_power", node="pve2"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "unknown node is no match",
        rule("a", "allow", '["*"]', tiers='["write"]', nodes='["pve1"]'),
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "vmid in range",
        rule("a", "allow", '["*"]', tiers='["write"]', vmids='[100, "200-299"]'),
        BOB,
        request("proxmox_guest_power", vmid=250),
        ALLOW,
        ("a",),
    ),
    Case(
        "vmid single",
        rule("a", "allow", '["*"]', tiers='["write"]', vmids='[100, "200-299"]'),
        BOB,
        request("proxmox_guest_power", vmid=100),
        ALLOW,
        ("a",),
    ),
    Case(
        "vmid outside",
        rule("a", "allow", '["*"]', tiers='["write"]', vmids='[100, "200-299"]'),
        BOB,
        request("proxmox_guest_power", vmid=300),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "pool matches",
        rule("a", "allow", '["*"]', tiers='["write"]', pools='["lab"]'),
        BOB,
        request("proxmox_guest_power", pool="lab"),
        ALLOW,
        ("a",),
    ),
    Case(
        "cluster differs",
        rule("a", "allow", '["*"]', tiers='["write"]', clusters='["prod"]'),
        BOB,
        request("proxmox_guest_power", cluster="lab"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "tags any-of, case-insensitive",
        rule("a", "allow", '["*"]', tiers='["write"]', tags='["lab", "test"]'),
        BOB,
        request("proxmox_guest_power", tags=frozenset({"web", "LAB"})),
        ALLOW,
        ("a",),
    ),
    Case(
        "no tags in common",
        rule("a", "allow", '["*"]', tiers='["write"]', tags='["lab"]'),
        BOB,
        request("proxmox_guest_power", tags=frozenset({"prod"})),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "unknown tags are no match for an allow",
        rule("a", "allow", '["*"]', tiers='["write"]', tags='["lab"]'),
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "a deny on tags applies when the tags are unknown (fail closed)",
        rule("a", "allow", '["*"]', tiers='["write"]')
        + rule("d", "deny", '["*"]', tags='["prod"]'),
        BOB,
        request("proxmox_guest_power"),
        DENY,
        ("d",),
    ),
    Case(
        "a deny on tags does not apply to other known tags",
        rule("a", "allow", '["*"]', tiers='["write"]')
        + rule("d", "deny", '["*"]', tags='["prod"]'),
        BOB,
        request("proxmox_guest_power", tags=frozenset({"lab"})),
        ALLOW,
        ("a",),
    ),
    # Argument constraints.
    Case(
        "argv fits",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', argv='[["qm", "status", "*"]]'),
        ALICE,
        request("proxmox_cli_run", argv=("qm", "status", "101")),
        ALLOW,
        ("a",),
    ),
    Case(
        "argv wildcard refuses an option",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', argv='[["qm", "status", "*"]]'),
        ALICE,
        request("proxmox_cli_run", argv=("qm", "status", "--help")),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "argv without argv",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', argv='[["qm", "status", "*"]]'),
        ALICE,
        request("proxmox_cli_run"),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "path glob by component",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', paths='["/etc/pve/**"]'),
        ALICE,
        request("proxmox_file_write", paths=("/etc/pve/qemu-server/100.conf",)),
        ALLOW,
        ("a",),
    ),
    Case(
        "path glob is not a prefix match",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', paths='["/etc/pve/**"]'),
        ALICE,
        request("proxmox_file_write", paths=("/etc/pve-evil/x",)),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "an allow must cover every path",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', paths='["/etc/pve/**"]'),
        ALICE,
        request("proxmox_file_write", paths=("/etc/pve/a", "/etc/shadow")),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "a deny fires on any path",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', paths='["/etc/pve/**"]')
        + rule("no-priv", "deny", '["*"]', paths='["/etc/pve/priv/**"]'),
        ALICE,
        request("proxmox_file_write", paths=("/etc/pve/a", "/etc/pve/priv/authkey.key")),
        DENY,
        ("no-priv",),
    ),
    Case(
        "a path with .. is refused outright",
        rule("a", "allow", '["sub:alice"]', tiers='["escape"]', paths='["/etc/pve/**"]'),
        ALICE,
        request("proxmox_file_write", paths=("/etc/pve/../shadow",)),
        DENY,
        ("builtin.canonical-input",),
    ),
    Case(
        "host allowlisted",
        rule("a", "allow", '["*"]', tools='["proxmox_download_url"]', hosts='["*.debian.org"]'),
        BOB,
        request("proxmox_download_url", hosts=("Cdimage.Debian.org.",)),
        ALLOW,
        ("a",),
    ),
    Case(
        "host suffix is by label",
        rule("a", "allow", '["*"]', tools='["proxmox_download_url"]', hosts='["*.debian.org"]'),
        BOB,
        request("proxmox_download_url", hosts=("evildebian.org",)),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "subdomain pattern excludes the apex",
        rule("a", "allow", '["*"]', tools='["proxmox_download_url"]', hosts='["*.debian.org"]'),
        BOB,
        request("proxmox_download_url", hosts=("debian.org",)),
        DENY,
        ("builtin.default-deny",),
    ),
    Case(
        "a host that is not a DNS name is refused",
        rule("a", "allow", '["*"]', tools='["proxmox_download_url"]'),
        BOB,
        request("proxmox_download_url", hosts=("a.debian.org/x@evil",)),
        DENY,
        ("builtin.canonical-input",),
    ),
    # Escape.
    Case(
        "escape by sub and tool name",
        rule("a", "allow", '["sub:alice"]', tools='["proxmox_cli_run"]'),
        ALICE,
        request("proxmox_cli_run", argv=("qm", "list")),
        ALLOW,
        ("a",),
    ),
    Case(
        "escape by group and tier",
        rule("a", "allow", '["group:ops"]', tiers='["escape"]'),
        ALICE,
        request("proxmox_cli_run"),
        ALLOW,
        ("a",),
    ),
    Case(
        "escape by local",
        rule("a", "allow", '["local"]', tiers='["escape"]'),
        LOCAL,
        request("proxmox_cli_run"),
        ALLOW,
        ("a",),
    ),
    Case(
        "escape is not granted by a tool glob",
        rule("a", "allow", '["sub:alice"]', tools='["proxmox_*"]'),
        ALICE,
        request("proxmox_cli_run"),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "escape is not granted by a rule without tools or tiers",
        rule("a", "allow", '["sub:alice"]'),
        ALICE,
        request("proxmox_cli_run"),
        DENY,
        ("builtin.no-escape",),
    ),
    Case(
        "escape named for someone else",
        rule("a", "allow", '["sub:bob"]', tiers='["escape"]'),
        ALICE,
        request("proxmox_cli_run"),
        DENY,
        ("builtin.no-escape",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_semantics(case: Case) -> None:
    decision = engine(case.policy).decide(case.principal, case.request)
    assert (decision.effect, decision.rule_ids) == (case.effect, case.rule_ids), decision.reason
    assert decision.reason


def test_star_and_scope_cannot_grant_escape_even_when_built_directly() -> None:
    """The loader refuses such rules; the engine does not rely on that."""
    rules = [
        Rule("star", Effect.ALLOW, (Selector("any"),), tiers=frozenset({Tier.ESCAPE})),
        Rule("scope", Effect.ALLOW, (Selector("scope", "pve.write"),), tools=("proxmox_cli_run",)),
        Rule(
            "mixed",
            Effect.ALLOW,
            (Selector("any"), Selector("sub", "alice")),
            tiers=frozenset({Tier.ESCAPE}),
        ),
    ]
    policy = PolicyEngine(rules)
    decision = policy.decide(ALICE, request("proxmox_cli_run"))
    assert decision.effect is DENY
    assert decision.rule_ids == ("builtin.no-escape",)
    assert "'star', 'scope', 'mixed' matched but cannot grant escape" in decision.reason
    assert not policy.could_allow(ALICE, "proxmox_cli_run", Tier.ESCAPE)


@pytest.mark.parametrize(
    ("profile", "write", "destructive"),
    [("read-only", DENY, DENY), ("operator", ALLOW, CONFIRM), ("admin", ALLOW, CONFIRM)],
)
def test_profiles(profile: str, write: Effect, destructive: Effect) -> None:
    policy = engine(profile=profile, subjects=("local", "group:ops"))
    for caller in (LOCAL, ALICE):
        assert policy.decide(caller, request("proxmox_guest_list")).effect is ALLOW
        assert policy.decide(caller, request("proxmox_guest_power")).effect is write
        assert policy.decide(caller, request("proxmox_guest_stop")).effect is destructive
        assert policy.decide(caller, request("proxmox_cli_run")).effect is DENY
    # Callers outside profile_subjects get the built-in reads only.
    assert policy.decide(BOB, request("proxmox_guest_list")).effect is ALLOW
    assert policy.decide(BOB, request("proxmox_guest_power")).effect is DENY


def test_profile_rules_are_named_after_profile_and_tier() -> None:
    decision = engine(profile="operator", subjects=("local",)).decide(
        LOCAL, request("proxmox_guest_stop")
    )
    assert decision.rule_ids == ("builtin.operator.destructive", "builtin.confirm-destructive")
    assert "confirmation" in decision.reason


def test_file_rules_add_to_the_profile() -> None:
    policy = engine(OPS_WRITE, profile="operator", subjects=("local",))
    assert policy.decide(LOCAL, request("proxmox_guest_power")).effect is ALLOW
    assert policy.decide(ALICE, request("proxmox_guest_power")).effect is ALLOW
    assert policy.decide(BOB, request("proxmox_guest_power")).effect is DENY


def test_unknown_targets_fail_closed_until_resolved() -> None:
    policy = engine(
        rule("a", "allow", '["*"]', tiers='["write"]', tags='["lab"]')
        + rule("prod", "deny", '["*"]', pools='["prod"]')
    )
    before = policy.decide(BOB, request("proxmox_guest_power"))
    assert before.effect is DENY
    assert before.rule_ids == ("prod",)
    assert "unknown targets fail closed" in before.reason
    # Tags known, pool still unknown: the pool deny still applies.
    unsure = policy.decide(BOB, request("proxmox_guest_power", tags=frozenset({"lab"})))
    assert (unsure.effect, unsure.unresolved) == (DENY, frozenset({"pool"}))
    final = policy.decide(BOB, request("proxmox_guest_power", tags=frozenset({"lab"}), pool="dev"))
    assert (final.effect, final.unresolved) == (ALLOW, frozenset())
    assert (
        policy.decide(
            BOB, request("proxmox_guest_power", tags=frozenset({"lab"}), pool="prod")
        ).effect
        is DENY
    )


def test_argument_constraints_do_not_apply_to_calls_without_them() -> None:
    policy = engine(
        rule("a", "allow", '["*"]', tiers='["write"]')
        + rule("no-rm", "deny", '["*"]', argv='[["rm", "**"]]')
    )
    assert policy.decide(BOB, request("proxmox_guest_power")).effect is ALLOW


def test_could_allow_filters_tools_list() -> None:
    policy = engine(
        rule("ops", "allow", '["group:ops"]', tiers='["write"]', nodes='["pve1"]')
        + rule("ops-cli", "allow", '["group:ops"]', tools='["proxmox_cli_run"]')
        + rule("bob-glob", "allow", '["sub:bob"]', tools='["proxmox_*"]')
        + rule("no-bob-power", "deny", '["sub:bob"]', tools='["proxmox_guest_power"]')
        + rule("no-alice-dl", "deny", '["sub:alice"]', tools='["proxmox_download_url"]')
        + rule("no-alice-dl-prod", "deny", '["sub:alice"]', clusters='["prod"]')
    )
    # Target constraints are assumed satisfiable.
    assert policy.could_allow(ALICE, "proxmox_guest_power", Tier.WRITE)
    assert policy.could_allow(ALICE, "proxmox_cli_run", Tier.ESCAPE)
    assert not policy.could_allow(ALICE, "proxmox_file_write", Tier.ESCAPE)
    # An unconditional deny hides the tool; a conditional one does not.
    assert not policy.could_allow(ALICE, "proxmox_download_url", Tier.WRITE)
    assert not policy.could_allow(BOB, "proxmox_guest_power", Tier.WRITE)
    assert policy.could_allow(BOB, "proxmox_guest_stop", Tier.DESTRUCTIVE)
    assert not policy.could_allow(BOB, "proxmox_cli_run", Tier.ESCAPE)
    assert policy.could_allow(BOB, "proxmox_guest_list", Tier.READ)


def test_bundle_hash_identifies_the_policy() -> None:
    first = engine(OPS_WRITE).bundle_hash
    assert first == engine(OPS_WRITE).bundle_hash
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert first != engine(OPS_WRITE.replace('"write", ', "")).bundle_hash
    assert first != engine(OPS_WRITE, profile="operator", subjects=("local",)).bundle_hash
    assert engine().bundle_hash != engine(profile="admin", subjects=("local",)).bundle_hash


def test_duplicate_ids_are_refused_by_the_engine() -> None:
    with pytest.raises(ValueError, match=r"builtin\.read"):
        PolicyEngine([Rule("builtin.read", Effect.DENY, (Selector("any"),))])


REFUSES = engine(
    rule("ops-cli", "allow", '["group:ops"]', tools='["proxmox_cli_run"]', argv='[["qm", "**"]]')
    + rule("ops-files", "allow", '["group:ops"]', tools='["proxmox_file_write"]', nodes='["pve1"]')
    + rule("not-pve3", "deny", '["*"]', nodes='["pve3"]')
    + rule("no-prod-pool", "deny", '["*"]', nodes='["pve2"]', pools='["prod"]')
)


@pytest.mark.parametrize(
    ("tool", "node", "refused_by"),
    [
        # A deny rule that matches on the node alone: certain whatever the plan finds.
        ("proxmox_cli_run", "pve3", "not-pve3"),
        ("proxmox_file_write", "pve3", "not-pve3"),
        # No allow rule can fit this node, whatever the path.
        ("proxmox_file_write", "pve2", "builtin.no-escape"),
        # The argv is still unknown and an allow rule wants one: planning goes on.
        ("proxmox_cli_run", "pve1", None),
        ("proxmox_file_write", "pve1", None),
        # A deny that depends on the guest's pool, still unknown: not yet certain.
        ("proxmox_cli_run", "pve2", None),
    ],
)
def test_refuses_only_what_no_unknown_attribute_could_allow(
    tool: str, node: str, refused_by: str | None
) -> None:
    denial = REFUSES.refuses(ALICE, request(tool, node=node))
    if refused_by is None:
        assert denial is None
    else:
        assert denial is not None and denial.effect is DENY
        assert denial.rule_ids[0] == refused_by
    # What `refuses` settles, the full decision agrees with, whatever the plan adds.
    if denial is not None:
        planned = request(tool, node=node, argv=("qm", "list"), paths=("/etc/hosts",))
        assert REFUSES.decide(ALICE, planned).effect is DENY


def test_refuses_a_non_canonical_path_outright() -> None:
    denial = REFUSES.refuses(ALICE, request("proxmox_file_write", node="pve1", paths=("/a/../b",)))
    assert denial is not None and denial.rule_ids == ("builtin.canonical-input",)
