"""`pvemcp policy check | explain | schema` as the CLI will call them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvemcp.cli import main
from pvemcp.policy import commands
from pvemcp.policy.loader import policy_schema
from tests.policy.policykit import KNOWN_TOOLS

POLICY = """\
[[rules]]
id = "ops-power"
effect = "allow"
description = "ops may power lab guests"
subjects = ["group:ops"]
tools = ["proxmox_guest_*"]
tiers = ["write", "destructive"]
tags = ["lab"]

[[rules]]
id = "prod-confirm"
effect = "confirm"
subjects = ["*"]
clusters = ["prod"]
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


def test_check_ok(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.check(policy, KNOWN_TOOLS) == 0
    assert capsys.readouterr().out == f"ok: 2 rules in {policy}\n"


def test_check_reports_lines(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy.write_text(POLICY.replace('"write", ', '"wirte", ').replace("clusters", "cluster"))
    assert commands.check(policy, KNOWN_TOOLS) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{policy}:7: rule 'ops-power': tiers[0]: Input should be")
    assert err[1] == f"{policy}:14: rule 'prod-confirm': cluster: unknown key"


def explain(
    policy: Path,
    *,
    tool: str,
    subject: str = "local",
    groups: tuple[str, ...] = (),
    args_json: str = "{}",
    as_json: bool = False,
) -> int:
    return commands.explain(
        known_tools=KNOWN_TOOLS,
        file=policy,
        profile="read-only",
        tool=tool,
        subject=subject,
        groups=groups,
        args_json=args_json,
        as_json=as_json,
    )


def test_explain_text(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(
        policy,
        subject="alice",
        groups=("ops",),
        tool="proxmox_guest_power",
        args_json='{"cluster": "prod", "vmid": 101, "tags": ["lab"]}',
    )
    out = capsys.readouterr().out
    assert code == commands.EXIT_CONFIRM
    assert "decision: confirm" in out
    assert "call:     proxmox_guest_power [write] cluster=prod vmid=101 tags=lab" in out
    assert "caller:   alice (http) groups=ops" in out
    assert "  ops-power (allow): ops may power lab guests" in out
    assert "  prod-confirm (confirm)" in out
    assert "policy:   sha256:" in out


def test_explain_deny_names_what_is_unknown(
    policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = explain(policy, subject="alice", groups=("ops",), tool="proxmox_guest_power")
    out = capsys.readouterr().out
    assert code == commands.EXIT_DENY
    assert "builtin.default-deny (engine): what no rule allows is denied" in out
    assert "unknown:  tags" in out


def test_explain_json(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(
        policy,
        subject="local",
        tool="proxmox_guest_list",
        args_json='{"cluster": "lab"}',
        as_json=True,
    )
    data = json.loads(capsys.readouterr().out)
    assert code == commands.EXIT_ALLOW
    assert data["effect"] == "allow"
    assert data["rule_ids"] == ["builtin.read"]
    assert data["rules"][0]["subjects"] == ["*"]
    assert len(data["bundle_hash"]) == 64


def test_explain_argument_constraints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[rules]]\nid = "cli"\neffect = "allow"\nsubjects = ["sub:alice"]\n'
        'tools = ["proxmox_cli_run"]\nargv = [["qm", "status", "*"]]\n\n'
        '[[rules]]\nid = "dl"\neffect = "allow"\nsubjects = ["*"]\n'
        'tools = ["proxmox_download_url"]\nhosts = ["*.debian.org"]\n'
    )
    ok = '{"argv": ["qm", "status", "101"]}'
    assert explain(path, subject="alice", tool="proxmox_cli_run", args_json=ok) == 0
    bad = '{"argv": ["qm", "status", "--help"]}'
    assert explain(path, subject="alice", tool="proxmox_cli_run", args_json=bad) == 1
    url = '{"url": "https://cdimage.debian.org/x.iso"}'
    assert explain(path, subject="bob", tool="proxmox_download_url", args_json=url) == 0
    evil = '{"url": "https://debian.org.evil.net/x.iso"}'
    assert explain(path, subject="bob", tool="proxmox_download_url", args_json=evil) == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("proxmox_guest_pwr", "{}", "unknown tool 'proxmox_guest_pwr'; did you mean"),
        ("proxmox_guest_power", "{", "--args is not JSON"),
        ("proxmox_guest_power", "[]", "--args must be a JSON object"),
        ("proxmox_guest_power", '{"vmid": "101"}', "vmid must be an integer"),
        ("proxmox_guest_power", '{"tags": [1]}', "tags must be a string or a list of strings"),
    ],
)
def test_explain_bad_input(
    policy: Path, capsys: pytest.CaptureFixture[str], tool: str, args: str, message: str
) -> None:
    assert explain(policy, tool=tool, args_json=args) == commands.EXIT_INVALID
    assert message in capsys.readouterr().err


def test_explain_bad_policy(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy.write_text("[[rules]]\n")
    assert explain(policy, tool="proxmox_guest_list") == commands.EXIT_INVALID
    assert f"{policy}:1: rule #1: id: required key is missing" in capsys.readouterr().err


def test_schema_write_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "policy.schema.json"
    assert commands.schema(target, check_only=True) == 1
    assert commands.schema(target) == 0
    assert target.read_text() == policy_schema()
    assert commands.schema(target, check_only=True) == 0
    capsys.readouterr()


def test_explain_decides_with_the_file_given_on_the_command_line(
    policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/policy.md names `--file`; the CLI used to refuse it ("unrecognized arguments")."""
    call = [
        "policy",
        "explain",
        "--subject",
        "alice",
        "--group",
        "ops",
        "--tool",
        "proxmox_guest_power",
        "--args",
        '{"cluster": "lab", "vmid": 101, "tags": ["lab"]}',
    ]
    assert main([*call, "--file", str(policy)]) == commands.EXIT_ALLOW
    assert "allowed by rule 'ops-power'" in capsys.readouterr().out
    # The same call under another file (say, before a change): the difference shows.
    stricter = tmp_path / "stricter.toml"
    stricter.write_text(POLICY.replace('tags = ["lab"]', 'tags = ["sandbox"]'))
    assert main([*call, "--file", str(stricter)]) == commands.EXIT_DENY
    assert "decision: deny" in capsys.readouterr().out
    assert main([*call, "--file", str(tmp_path / "missing.toml")]) == commands.EXIT_INVALID
    assert "missing.toml" in capsys.readouterr().err
