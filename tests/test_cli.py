"""The `pvemcp` command's offline subcommands."""

from __future__ import annotations

import json
import os
import pty
import shlex
import shutil
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


def test_terminal_hint_names_a_command_a_client_can_spawn(tmp_path: Path) -> None:
    """In a terminal, the demo suggests an Inspector command line. Its server command must
    work without .venv/bin on PATH: an absolute path to an executable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVEMCP_")}
    env |= {"PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl"), "PATH": "/usr/bin:/bin"}
    terminal, tty = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "pvemcp", "demo"],
        env=env,
        stdin=tty,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        os.close(tty)
        assert server.stderr is not None
        hint = next(line for line in server.stderr if "--cli" in line)
        os.write(terminal, b"\x04")  # Ctrl-D: end of input
        assert server.wait(30) == 0
    os.close(terminal)
    command = shlex.split(hint.split("--cli", 1)[1].split(" demo ", 1)[0])
    assert Path(command[0]).is_absolute()
    version = subprocess.run(
        [*command, "--version"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.startswith("pvemcp ")


def bootstrap_copy(tmp_path: Path) -> Path:
    """A checkout holding only scripts/bootstrap and a pyproject.toml older than the stamp
    a finished install leaves, so bootstrap's venv part runs and nothing is installed."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "bootstrap", tmp_path / "scripts" / "bootstrap")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    os.utime(tmp_path / "pyproject.toml", (0, 0))
    return tmp_path / "scripts" / "bootstrap"


def test_bootstrap_repairs_a_venv_made_without_pip(tmp_path: Path) -> None:
    """What `python3 -m venv` leaves when python3-venv is missing: bin/python, no pip.
    Bootstrap used to stop there for good with "No module named pip"."""
    script = bootstrap_copy(tmp_path)
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    (venv / ".pvemcp-installed").touch()
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    done = subprocess.run(
        [script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    subprocess.run([venv / "bin" / "python", "-m", "pip", "--version"], check=True, timeout=60)


def test_bootstrap_without_a_venv_module_says_what_to_install(tmp_path: Path) -> None:
    script = bootstrap_copy(tmp_path)
    python = tmp_path / "python3"  # a Python 3.11+ whose venv module fails, as on Debian
    python.write_text(
        f'#!/bin/sh\ncase "$*" in *venv*) echo "ensurepip is not available" >&2; exit 1;; esac\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python)}
    done = subprocess.run(
        [script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "apt install python3-venv" in done.stderr


def test_config_docs_outside_the_checkout_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to create docs/ wherever it ran, and end in a traceback where it could not."""
    monkeypatch.chdir(tmp_path)
    assert main(["config", "docs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output FILE" in err and not (tmp_path / "docs").exists()
    assert main(["config", "docs", "--output", "-"]) == 0
    assert capsys.readouterr().out.startswith("# Configuration reference")


@pytest.mark.parametrize("port", ["abc", "-1", "65536"])
def test_a_bad_port_is_named(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--port", port])
    assert info.value.code == 2
    assert f"argument --port: {port!r} is not a port" in capsys.readouterr().err
