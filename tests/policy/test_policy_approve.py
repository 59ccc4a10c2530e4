"""The `approve` effect (four eyes): precedence, approvers, the loader's checks, explain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvemcp.policy import commands
from pvemcp.policy.decision import Effect
from pvemcp.policy.loader import PolicyError, policy_schema
from tests.policy.policykit import ALICE, BOB, KNOWN_TOOLS, engine, request

GRANT = """
[[rules]]
id = "ops"
effect = "allow"
subjects = ["group:ops", "sub:bob"]
tools = ["proxmox_guest_power", "proxmox_guest_stop"]
"""

APPROVE = """
[[rules]]
id = "four-eyes"
effect = "approve"
subjects = ["*"]
tools = ["proxmox_guest_stop"]
clusters = ["prod"]
approvers = ["group:secops", "local"]
"""


def test_approve_holds_an_allowed_call_and_replaces_its_confirmation() -> None:
    decision = engine(GRANT + APPROVE).decide(ALICE, request("proxmox_guest_stop", cluster="prod"))
    assert decision.effect is Effect.APPROVE
    assert decision.rule_ids == ("ops", "four-eyes")
    assert decision.approvers == ("group:secops", "local")
    assert "approval by group:secops, local required by rule 'four-eyes'" in decision.reason
    # Elsewhere the destructive call is only confirmed, as before.
    lab = engine(GRANT + APPROVE).decide(ALICE, request("proxmox_guest_stop", cluster="lab"))
    assert lab.effect is Effect.CONFIRM and lab.approvers == ()


def test_approve_grants_nothing_and_deny_overrides_it() -> None:
    only_approve = engine(APPROVE).decide(ALICE, request("proxmox_guest_stop", cluster="prod"))
    assert only_approve.effect is Effect.DENY
    deny = """
    [[rules]]
    id = "no-prod-stop"
    effect = "deny"
    subjects = ["sub:bob"]
    tools = ["proxmox_guest_stop"]
    """
    decided = engine(GRANT + APPROVE + deny).decide(
        BOB, request("proxmox_guest_stop", cluster="prod")
    )
    assert decided.effect is Effect.DENY and decided.rule_ids == ("no-prod-stop",)


def test_approve_overrides_confirm_and_approvers_of_every_matching_rule_count() -> None:
    more = """
    [[rules]]
    id = "confirm-power"
    effect = "confirm"
    subjects = ["*"]
    tools = ["proxmox_guest_power"]

    [[rules]]
    id = "power-approval"
    effect = "approve"
    subjects = ["group:ops"]
    tools = ["proxmox_guest_*"]
    approvers = ["sub:carol"]
    """
    policy = engine(GRANT + APPROVE + more)
    power = policy.decide(ALICE, request("proxmox_guest_power", cluster="prod"))
    assert power.effect is Effect.APPROVE and power.approvers == ("sub:carol",)
    assert "confirm-power" not in power.rule_ids
    stop = policy.decide(ALICE, request("proxmox_guest_stop", cluster="prod"))
    assert stop.approvers == ("group:secops", "local", "sub:carol")
    # Bob is not in group ops: only the first approve rule holds his call.
    assert policy.decide(BOB, request("proxmox_guest_stop", cluster="prod")).approvers == (
        "group:secops",
        "local",
    )


def test_an_unknown_target_fails_closed_to_approval() -> None:
    decision = engine(GRANT + APPROVE).decide(ALICE, request("proxmox_guest_stop", cluster=None))
    assert decision.effect is Effect.APPROVE
    assert "cluster" in decision.unresolved


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'effect = "approve"\nsubjects = ["*"]',
            "effect: an approve rule needs approvers",
        ),
        (
            'effect = "confirm"\nsubjects = ["*"]\napprovers = ["sub:carol"]',
            "approvers: only an approve rule has approvers",
        ),
        (
            'effect = "approve"\nsubjects = ["*"]\napprovers = ["*", "scope:pve.admin"]',
            "approvers: '*', 'scope:pve.admin' cannot approve",
        ),
        (
            'effect = "approve"\nsubjects = ["*"]\napprovers = []',
            "approvers: List should have at least 1 item",
        ),
        (
            'effect = "approve"\nsubjects = ["*"]\napprovers = ["carol"]',
            "is not a subject selector",
        ),
    ],
)
def test_the_loader_checks_approvers(rule: str, message: str) -> None:
    with pytest.raises(PolicyError) as excinfo:
        engine(f'[[rules]]\nid = "r"\n{rule}\n')
    assert message in str(excinfo.value)
    assert "test.toml:" in str(excinfo.value)


def test_the_schema_documents_approve() -> None:
    rule = json.loads(policy_schema())["$defs"]["RuleSpec"]["properties"]
    assert "approve" in rule["effect"]["enum"]
    assert rule["approvers"]["type"] == "array"


def test_explain_shows_approvers_and_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GRANT + APPROVE)

    def explain(as_json: bool) -> int:
        return commands.explain(
            known_tools=KNOWN_TOOLS,
            file=path,
            profile="read-only",
            tool="proxmox_guest_stop",
            subject="alice",
            groups=("ops",),
            args_json='{"cluster": "prod", "vmid": 101}',
            as_json=as_json,
        )

    assert explain(False) == commands.EXIT_APPROVE == 4
    out = capsys.readouterr().out
    assert "decision: approve" in out
    assert "approvers: group:secops, local (any one; never the caller)" in out
    assert "  four-eyes (approve)" in out
    assert explain(True) == 4
    data = json.loads(capsys.readouterr().out)
    assert data["approvers"] == ["group:secops", "local"]
    assert data["rules"][1]["approvers"] == ["group:secops", "local"]
