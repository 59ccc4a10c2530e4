"""`pvemcp audit report` from a log written by real calls on the real sshd: who asked,
what exactly ran, where, who approved, outcome, exit code, duration, evidence links, the
denials and failed confirmations; and HTML that escapes every value."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import re
import subprocess
import sys
import tty
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pvemcp.cli import main
from pvemcp.policy.audit_commands import report_command
from pvemcp.policy.audit_report import build_report, load_report, render_html, render_text
from pvemcp.policy.evidence import EvidenceStore
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.ssh import conftest as ssh
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The real sshd and its simulator, as the SSH tests use them.
ssh_sim = ssh.ssh_sim
sshd = ssh.sshd

LOCAL = Principal.local("memory")
POLICY = """
version = 1

[[rules]]
id = "shell"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_shell_run"]

[[rules]]
id = "never-reboot"
effect = "deny"
subjects = ["*"]
tools = ["proxmox_shell_run"]
argv = [["sh", "-c", "reboot"]]

[[rules]]
id = "cli"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_cli_run"]

[[rules]]
id = "cli-confirm"
effect = "confirm"
subjects = ["local"]
tools = ["proxmox_cli_run"]
argv = [["pvesh", "get", "*", "--output-format", "json"]]
"""
HOSTILE = "echo '<script>alert(1)</script>' \"&amp;\"; exit 4"
VERSION = ["pvesh", "get", "/version", "--output-format", "json"]


@pytest.fixture
async def log(ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path) -> Path:
    """An audit log of: a shell call that printed markup and exited 4, a denied reboot, a
    CLI call confirmed with its token, and one with a forged token."""
    async with ssh.escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path
    ) as gateway:
        gateway.evidence = EvidenceStore(tmp_path / "evidence")
        ssh.ok(
            await gateway.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": HOSTILE})
        )
        denied = await gateway.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve2", "command": "reboot"}
        )
        assert ssh.failed(denied)["code"] == "denied"
        args = {"node": "pve3", "argv": VERSION}
        asked = ssh.failed(await gateway.invoke(LOCAL, "proxmox_cli_run", args))
        assert asked["code"] == "confirmation_required"
        token = asked["details"]["confirm_token"]
        ssh.ok(await gateway.invoke(LOCAL, "proxmox_cli_run", args | {"confirm_token": token}))
        forged = await gateway.invoke(LOCAL, "proxmox_cli_run", args | {"confirm_token": "x" * 40})
        assert ssh.failed(forged)["code"] == "confirmation_invalid"
    return audit_path


async def test_the_report_says_who_ran_what_where_approved_how_and_how_it_ended(
    log: Path,
) -> None:
    report = load_report([log])
    shell, cli = report.calls
    records = read_audit(log)
    shell_outcome = next(
        r for r in records if r["event_id"] == shell.event_id and r["phase"] == "outcome"
    )
    assert (shell.tool, shell.tier, shell.ran, shell.where) == (
        "proxmox_shell_run",
        "escape",
        HOSTILE,
        "lab/pve1",
    )
    assert shell.who == "local (memory)"
    assert shell.approval == "allow (shell)"
    assert (shell.status, shell.exit_code) == ("ok", "4")
    assert shell.duration_ms == f"{shell_outcome['outcome']['duration_ms']:.0f}"
    assert [ref["kind"] for ref in shell.evidence] == ["stdout"]
    sha = shell.evidence[0]["sha256"]
    assert sha == shell_outcome["outcome"]["evidence"][0]["sha256"]
    assert (cli.ran, cli.where, cli.status, cli.exit_code) == (
        "pvesh get /version --output-format json",
        "lab/pve3",
        "ok",
        "0",
    )
    assert cli.approval.startswith("token by local, token_id ")
    denied, forged = report.refusals
    assert (denied.tool, denied.status, denied.where) == (
        "proxmox_shell_run",
        "denied",
        "lab/pve2",
    )
    assert "never-reboot" in denied.reason and denied.ran == "reboot"
    assert (forged.tool, forged.status) == (
        "proxmox_cli_run",
        "confirmation_failed:confirmation_invalid",
    )
    text = render_text(report)
    assert "Risky and escape calls from the start of the log to now: 2" in text
    assert f"    ran:      {HOSTILE}" in text
    assert f"pvemcp audit show --evidence {sha}" in text
    assert "Denials and failed confirmations: 2" in text
    # The confirmation request itself (a token handed back) is not a failure.
    assert "confirmation_required" not in text


async def test_the_window_and_the_command(log: Path) -> None:
    later = datetime.now(UTC) + timedelta(minutes=1)
    empty = load_report([log], since=later)
    assert not empty.calls and not empty.refusals
    out, err = io.StringIO(), io.StringIO()
    html_file = log.parent / "report.html"
    code = report_command(
        [log], default_log=None, since="1h", html_file=html_file, out=out, err=err
    )
    assert code == 0 and "Risky and escape calls from " in out.getvalue()
    assert html_file.is_file() and str(html_file) in err.getvalue()
    assert report_command([log], default_log=None, since="yesterday", out=out, err=err) == 2


@pytest.mark.parametrize("age", ["99999999999d", "1000000000d", "9999999999999h"])
async def test_an_age_out_of_range_is_a_bad_time_not_a_traceback(log: Path, age: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert report_command([log], default_log=None, since=age, out=out, err=err) == 2
    assert err.getvalue().startswith("bad time: ") and out.getvalue() == ""


async def test_html_escapes_every_value_and_is_self_contained(log: Path) -> None:
    page = render_html(load_report([log]))
    assert "<script" not in page.lower(), "the shell string must not become markup"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&amp;amp;&quot;" in page, "an entity in a value is shown, not decoded"
    assert not re.search(r"<(link|img|iframe|object)\b|\bsrc=|\bhref=|@import", page)
    assert page.count("<tr>") == 1 + 2 + 1 + 2  # headers and rows of both tables
    report = load_report([log])
    ids = [row.event_id for row in report.calls] + [row.event_id for row in report.refusals]
    assert all(f"<small>{event_id}</small>" in page for event_id in ids), "each row's event"


def test_an_approval_of_any_method_is_shown_generically() -> None:
    base = {
        "event_id": "e1",
        "time": "2026-01-01T00:00:00.000000Z",
        "what": {"tool": "proxmox_shell_run", "tier": "escape"},
        "where": {"cluster": "c", "argv": ["sh", "-c", "id"]},
    }
    approval = {
        "method": "approval",
        "by": [{"sub": "bob"}, {"sub": "carol"}],
        "approval_id": "req-7",
        "at": "2026-01-01T00:00:00Z",
    }
    intent = base | {"phase": "intent", "decision": {"effect": "confirm", "approval": approval}}
    step = {
        "event_id": "e2",
        "phase": "approval",
        "time": "2026-01-01T00:00:01.000000Z",
        "who": {"sub": "bob", "transport": "http"},
        "what": {"approval_id": "req-8", "action": "denied", "tool": "proxmox_shell_run"},
        "outcome": {"status": "denied", "reason": "not today"},
    }
    report = build_report([intent, step])
    (row,) = report.calls
    assert row.approval == "approval by bob, carol, approval_id req-7"
    assert row.status.startswith("no outcome")
    (refusal,) = report.refusals
    assert (refusal.status, refusal.who, refusal.reason) == (
        "approval denied",
        "bob (http)",
        "not today",
    )


async def test_the_cli_reports_verifies_and_prints_evidence(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pvemcp.toml"
    config.write_text(f'[audit]\npath = "{log}"\nevidence_dir = "{tmp_path / "evidence"}"\n')
    page = tmp_path / "review.html"
    assert main(["audit", "report", "--config", str(config), "--html", str(page)]) == 0
    text = capsys.readouterr().out
    sha = re.findall(r"pvemcp audit show --evidence ([0-9a-f]{64})", text)[0]
    assert HOSTILE in text and "&lt;script&gt;" in page.read_text()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "evidence: 2 blob(s) checked" in capsys.readouterr().out
    assert main(["audit", "show", "--evidence", sha, "--config", str(config)]) == 0
    assert capsys.readouterr().out == "<script>alert(1)</script> &amp;\n"
    assert (
        main(["audit", "show", "--evidence", "../../../etc/passwd", "--config", str(config)]) == 2
    )
    (tmp_path / "evidence" / sha[:2] / sha).write_bytes(b"forged\n")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert f"evidence_altered: evidence blob {sha} was altered" in capsys.readouterr().err


def _show_evidence_on_a_terminal(tmp_path: Path, sha: str, *flags: str) -> tuple[bytes, str]:
    """What `pvemcp audit show --evidence` writes to a real terminal (a pty in raw mode, so
    the bytes read are the bytes written), and its stderr."""
    main_fd, terminal = pty.openpty()
    tty.setraw(terminal)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pvemcp", "audit", "show", "--evidence", sha, *flags],
            stdout=terminal,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            timeout=60,
            check=True,
            text=True,
        )
    finally:
        os.close(terminal)
    shown = b""
    while True:
        try:
            piece = os.read(main_fd, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not piece:
            break
        shown += piece
    os.close(main_fd)
    return shown, done.stderr


def test_evidence_on_a_terminal_shows_control_characters_escaped_and_raw_exact(
    tmp_path: Path,
) -> None:
    """A command's output can hold escape sequences (retitle the window, rewrite what is on
    screen, OSC 52 into the clipboard): shown to a reviewer's terminal they would act.
    Escaped there unless --raw; a pipe or a file still gets the exact bytes."""
    blob = b"ok\tdone\n\x1b]0;owned\x07\x1b[2J\rgone \x9b\xc2\x9b1m caf\xc3\xa9\n"
    sha = hashlib.sha256(blob).hexdigest()
    store = tmp_path / "evidence"
    (store / sha[:2]).mkdir(parents=True)
    (store / sha[:2] / sha).write_bytes(blob)
    config = tmp_path / "pvemcp.toml"
    config.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\nevidence_dir = "{store}"\n')
    flags = ("--config", str(config))

    shown, err = _show_evidence_on_a_terminal(tmp_path, sha, *flags)
    assert shown == b"ok\tdone\n\\x1b]0;owned\\x07\\x1b[2J\\x0dgone \\x9b\\x9b1m caf\xc3\xa9\n"
    assert "--raw writes the exact bytes" in err
    assert _show_evidence_on_a_terminal(tmp_path, sha, "--raw", *flags) == (blob, "")
    piped = subprocess.run(
        [sys.executable, "-m", "pvemcp", "audit", "show", "--evidence", sha, *flags],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert (piped.stdout, piped.stderr) == (blob, b"")
