"""The `pvemcp` command's offline subcommands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvemcp.cli import main
from pvemcp.policy.audit import AuditLog, new_event_id
from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.principal import Principal

ROOT = Path(__file__).resolve().parents[1]


def test_tools_lists_every_tool_with_its_tier(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert rows["proxmox_guest_list"] == "read"
    assert rows["proxmox_guest_power"] == "write"
    assert rows["proxmox_guest_stop"] == "destructive"


def test_tools_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "--json"]) == 0
    tools = json.loads(capsys.readouterr().out)
    assert all(t["inputSchema"]["type"] == "object" for t in tools)


def test_console_script_runs_as_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pvemcp", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.startswith("pvemcp ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_policy_check_reports_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[rules]]\nid = "ops"\neffect = "allow"\nsubjects = ["group:ops"]\n'
        'tools = ["proxmox_guest_power"]\n'
    )
    assert main(["policy", "check", str(good)]) == 0
    assert "ok: 1 rules" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[rules]]\nid = "ops"\neffect = "allow"\nsubjects = ["*"]\n\n'
        '[[rules]]\nid = "typo"\neffect = "allow"\nsubjects = ["*"]\n'
        'tools = ["proxmox_gust_list"]\n'
    )
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:10" in err
    assert "proxmox_gust_list" in err


def test_policy_explain_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    assert main(["policy", "explain", "--tool", "proxmox_guest_list"]) == 0
    assert main(["policy", "explain", "--tool", "proxmox_guest_stop"]) == 3
    assert main(["policy", "explain", "--subject", "alice", "--tool", "proxmox_guest_power"]) == 1
    out = capsys.readouterr().out
    assert "builtin.confirm-destructive" in out
    assert "builtin.default-deny" in out


def test_policy_schema_is_current() -> None:
    assert (
        main(["policy", "schema", "--check", "--output", str(ROOT / "docs/policy.schema.json")])
        == 0
    )


def test_audit_verify_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(log, checkpoint_every=2)
    decision = Decision(Effect.ALLOW, ("builtin.read",), "reads are allowed")
    for tool in ("proxmox_node_list", "proxmox_guest_list", "proxmox_task_log"):
        audit.outcome(
            new_event_id(),
            Principal.local(),
            tool=tool,
            tier="read",
            cluster="demo",
            arguments={},
            decision=decision,
            status="ok",
            duration_ms=1.0,
            phase="record",
        )
    audit.close()
    assert main(["audit", "verify", str(log)]) == 0
    assert main(["audit", "show", str(log), "--tool", "proxmox_guest_*", "--json"]) == 0
    shown = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [r["what"]["tool"] for r in shown] == ["proxmox_guest_list"]
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("proxmox_guest_list", "proxmox_guest_lisT")
    log.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(log)]) == 1
    assert f"{log}:2" in capsys.readouterr().err


def test_secrets_check_never_prints_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    monkeypatch.setenv("PVEMCP_API_URL", "https://pve1:8006")
    monkeypatch.setenv("PVEMCP_TOKEN_ID", "pvemcp@pve!gw")
    monkeypatch.setenv("PVEMCP_TOKEN_SECRET", secret)
    assert main(["secrets", "check"]) == 0
    out = capsys.readouterr().out
    assert "pvemcp@pve!gw" in out
    assert secret not in out


def clean_pvemcp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)


@pytest.mark.parametrize("mode", ["stdio", "http", "both"])
def test_serve_without_a_cluster_refuses_and_says_what_it_looked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """A misspelt variable must not turn a production start into a simulator."""
    clean_pvemcp_env(monkeypatch)
    monkeypatch.setenv("PVEMCP_API_UR", "https://pve1.example:8006")
    assert main(["serve", "--mode", mode]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pvemcp: no Proxmox cluster is configured")
    assert "PVEMCP_API_URL is not set" in err and "PVEMCP_CONFIG" in err
    assert "PVEMCP_API_UR is set but names no setting" in err
    assert "pvemcp demo" in err


def test_serve_with_a_file_without_clusters_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_pvemcp_env(monkeypatch)
    config = tmp_path / "pvemcp.toml"
    config.write_text('log_level = "INFO"\n')
    monkeypatch.setenv("PVEMCP_CONFIG", str(config))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert f"{config} has no [clusters.NAME] table" in err
    assert "names no setting" not in err


def test_policy_schema_outside_the_checkout_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "schema"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output FILE" in err and "Traceback" not in err
    assert main(["policy", "schema", "--output", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "object"
    assert main(["policy", "schema", "--check"]) == 1
    assert "pvemcp policy schema --output docs/policy.schema.json" in capsys.readouterr().err


def test_demo_writes_only_json_lines_to_stderr(tmp_path: Path) -> None:
    """README: logs are JSON lines on stderr. A stdio server whose client closes stdin at
    once starts, stops, and says nothing else (no library warning either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PVEMCP_", "PYTHONWARN"))}
    env["PVEMCP_AUDIT__PATH"] = str(tmp_path / "audit.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "pvemcp", "demo"],
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines), lines
