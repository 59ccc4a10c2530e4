"""Endpoint rules: the `api` key (method + path glob, on the template or the concrete
path), and typed-tool rules that reach the generic API call of the same endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from pvemcp.policy import commands
from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.loader import PolicyError, parse_policy
from pvemcp.policy.rules import api_matches, parse_api_pattern
from pvemcp.policy.tiers import Tier
from tests.policy.policykit import ALICE, KNOWN_TOOLS, LOCAL, engine

MIGRATE = ("POST", "/nodes/{node}/qemu/{vmid}/migrate", "/nodes/pve1/qemu/100/migrate")
CONFIG = ("PUT", "/nodes/{node}/qemu/{vmid}/config", "/nodes/pve2/qemu/104/config")
KNOWN = {
    **KNOWN_TOOLS,
    "proxmox_api_call": "write,destructive,escape",
    "proxmox_guest_migrate": "write",
}


def generic(
    *calls: tuple[str, str, str | None],
    vmid: int | None = None,
    covered_by: frozenset[str] = frozenset(),
) -> PolicyRequest:
    """A write through the generic API call sending `calls`."""
    return PolicyRequest(
        tool="proxmox_api_call",
        tier=Tier.WRITE,
        cluster="lab",
        vmid=vmid,
        api=calls,
        covered_by=covered_by,
    )


@pytest.mark.parametrize(
    ("pattern", "ref", "fits"),
    [
        ("POST /nodes/*/qemu/*/migrate", MIGRATE, True),
        ("* /nodes/**", MIGRATE, True),
        ("PUT /nodes/*/qemu/*/migrate", MIGRATE, False),
        ("POST /nodes/pve1/qemu/*/migrate", MIGRATE, True),  # the concrete path
        ("POST /nodes/pve2/qemu/*/migrate", MIGRATE, False),
        ("POST /nodes/{node}/qemu/{vmid}/migrate", MIGRATE, True),  # the template itself
        ("POST /nodes/*/qemu/*", MIGRATE, False),  # component by component, not a prefix
        ("POST /nodes/*/qemu/*/migrate", ("POST", MIGRATE[1], None), True),
    ],
)
def test_api_patterns(pattern: str, ref: tuple[str, str, str | None], fits: bool) -> None:
    assert api_matches(parse_api_pattern(pattern), ref) is fits


@pytest.mark.parametrize(
    "bad", ["POST", "PATCH /nodes", "post /nodes", "POST nodes/x", "POST /nodes/../x", "* //"]
)
def test_bad_api_patterns_name_the_rule(bad: str) -> None:
    text = f'[[rules]]\nid = "x"\neffect = "deny"\nsubjects = ["*"]\napi = ["{bad}"]\n'
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, source="p.toml", known_tools=KNOWN)
    assert "p.toml:5: rule 'x': api[0]:" in str(raised.value)


def test_an_api_deny_applies_to_any_call_sending_the_endpoint() -> None:
    policy = engine(
        """
        [[rules]]
        id = "no-config"
        effect = "deny"
        subjects = ["*"]
        api = ["PUT /nodes/*/qemu/*/config"]
        """,
        profile="operator",
        subjects=("local",),
    )
    denied = policy.decide(LOCAL, generic(CONFIG))
    assert denied.effect is Effect.DENY and denied.rule_ids == ("no-config",)
    # Any of several calls is enough for a deny; a call sending none does not match.
    assert policy.decide(LOCAL, generic(MIGRATE, CONFIG)).effect is Effect.DENY
    assert policy.decide(LOCAL, generic(MIGRATE)).effect is Effect.ALLOW
    # A call with no API requests at all (a command over SSH): the rule does not apply.
    ssh = PolicyRequest(tool="proxmox_guest_power", tier=Tier.WRITE, cluster="lab")
    assert policy.decide(LOCAL, ssh).effect is Effect.ALLOW


def test_an_api_grant_must_cover_every_call() -> None:
    policy = engine(
        """
        [[rules]]
        id = "alice-config"
        effect = "allow"
        subjects = ["sub:alice"]
        api = ["PUT /nodes/pve2/qemu/*/config"]
        """
    )
    assert policy.decide(ALICE, generic(CONFIG)).effect is Effect.ALLOW
    assert policy.decide(ALICE, generic(CONFIG, MIGRATE)).effect is Effect.DENY
    assert policy.decide(ALICE, generic(MIGRATE)).effect is Effect.DENY


def test_deny_and_confirm_on_a_typed_tool_reach_its_endpoints_a_grant_does_not() -> None:
    text = """
    [[rules]]
    id = "alice-migrates"
    effect = "allow"
    subjects = ["sub:alice"]
    tools = ["proxmox_guest_migrate"]

    [[rules]]
    id = "alice-api"
    effect = "allow"
    subjects = ["sub:alice"]
    tools = ["proxmox_api_call"]
    tiers = ["write"]

    [[rules]]
    id = "migrations-confirmed"
    effect = "confirm"
    subjects = ["*"]
    tools = ["proxmox_guest_migrate"]
    """
    deny = """
    [[rules]]
    id = "no-migrate"
    effect = "deny"
    subjects = ["*"]
    tools = ["proxmox_guest_migrate"]
    vmids = ["100-199"]
    """
    rules = parse_policy(text, source="t", known_tools=KNOWN)
    policy = PolicyEngine(rules)
    covered = generic(MIGRATE, covered_by=frozenset({"proxmox_guest_migrate"}), vmid=100)
    confirmed = policy.decide(ALICE, covered)
    assert confirmed.effect is Effect.CONFIRM
    assert "migrations-confirmed" in confirmed.rule_ids
    assert "alice-migrates" not in confirmed.rule_ids, "a grant of the typed tool is not reused"
    assert policy.decide(ALICE, generic(MIGRATE, vmid=100)).effect is Effect.ALLOW

    denying = PolicyEngine((*rules, *parse_policy(deny, source="d", known_tools=KNOWN)))
    denied = denying.decide(ALICE, covered)
    assert denied.effect is Effect.DENY and denied.rule_ids == ("no-migrate",)
    # The deny's own target constraint still holds: another vmid is not denied.
    other = generic(MIGRATE, covered_by=frozenset({"proxmox_guest_migrate"}), vmid=300)
    assert denying.decide(ALICE, other).effect is Effect.CONFIRM


def test_api_rules_are_conditional_and_in_the_canonical_form() -> None:
    rules = parse_policy(
        '[[rules]]\nid = "x"\neffect = "deny"\nsubjects = ["*"]\n'
        'api = ["POST /nodes/*/qemu/*/migrate", "* /access/**"]\n',
        source="t",
        known_tools=KNOWN,
    )
    assert rules[0].conditional, "a deny on endpoints hides no tool from tools/list"
    assert rules[0].canonical()["api"] == ["* /access/**", "POST /nodes/*/qemu/*/migrate"]


def test_explain_shows_endpoint_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[rules]]\nid = "no-prod-migrate"\neffect = "deny"\nsubjects = ["*"]\n'
        'tools = ["proxmox_guest_migrate"]\ntags = ["prod"]\n'
    )

    def explain(args: Mapping[str, object]) -> int:
        return commands.explain(
            known_tools=KNOWN,
            file=path,
            profile="operator",
            tool="proxmox_api_call",
            args_json=json.dumps(args),
        )

    migrate: dict[str, object] = {
        "api": ["POST /nodes/pve1/qemu/100/migrate"],
        "tier": "write",
        "tags": ["prod"],
    }
    assert explain({**migrate, "covered_by": ["proxmox_guest_migrate"]}) == 1
    out = capsys.readouterr().out
    assert "api=POST /nodes/pve1/qemu/100/migrate covered_by=proxmox_guest_migrate" in out
    assert "denied by rule 'no-prod-migrate'" in out
    assert explain(migrate) == 0, "not a migration through the typed tool's rules"
    assert explain({**migrate, "tier": "read"}) == commands.EXIT_INVALID
    assert explain({"api": ["* /nodes"]}) == commands.EXIT_INVALID
    # No tier given: the riskiest a generic call can have (escape needs a rule naming you).
    assert explain({"api": ["POST /nodes/pve1/execute"]}) == 1
