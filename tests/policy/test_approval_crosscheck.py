"""The review report and `audit verify` cross-check four-eyes runs against the log's own
`approval` records (issue 14, the tampering operator of docs/security.md).

A real flow (approval store, gateway, the MCP SDK client, as tests/e2e/test_approvals_flow.py
runs it); then, instead of approving through the store, the request's JSON file is edited by
hand to name an approver. The gateway runs the call and its record names that approver,
but the log holds no `approved` step by them: verify fails naming the run and the report
flags it. A genuine approval passes both; a log that starts after the request was made
says "not covered" instead of failing."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from pvemcp.cli import main
from pvemcp.policy.audit_commands import report_command, verify_command
from pvemcp.policy.audit_report import load_report, render_html, render_text
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.principal import Principal
from tests.conftest import read_audit
from tests.e2e import test_approvals_flow as flow

pytestmark = pytest.mark.anyio

# The approvals flow's simulator, store, gateway and SDK client.
sim = flow.sim
setup = flow.setup
client = flow.client

BOB = {"sub": "bob", "iss": flow.IDP, "transport": "http", "groups": ["secops"]}


def edit_request(setup: flow.Setup, approval_id: str, **changes: Any) -> None:
    """Change a request's file as someone who can write the store would: by hand, with no
    store call and so no audit record."""
    path = setup.store_dir / f"{approval_id}.json"
    data = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(data, sort_keys=True, indent=1))


async def run(client: Client, approval_id: str, vmid: int = 100) -> None:
    ran = await client.call_tool("proxmox_guest_stop", {"vmid": vmid, "approval_id": approval_id})
    assert not ran.is_error, ran.content
    assert await flow.status_of(client, vmid) == "stopped"


async def test_a_genuine_approval_is_matched_by_verify_and_the_report(
    setup: flow.Setup, client: Client
) -> None:
    approval_id = await flow.held(client, 100)
    setup.store.approve(approval_id, Principal.local(), "change CHG-7")
    await run(client, approval_id)

    verified = verify_files([setup.audit_path])
    assert verified.ok, verified.problems
    assert verified.approvals_matched == 1 and verified.approvals_not_covered == []
    assert "approvals: 1 four-eyes run(s) match the log's approval records" in (verified.summary())
    report = load_report([setup.audit_path])
    (row,) = report.calls
    assert row.check is not None and row.check.kind is None
    assert (row.unmatched, row.check_text) == (False, "recorded")
    text = render_text(report)
    assert text.startswith("Four-eyes runs the log's approval records do not match: 0 of 1\n")
    assert "!!" not in text and "    check:    recorded\n" in text
    page = render_html(report)
    assert "<h2>Unmatched approvals (0 of 1 four-eyes runs)</h2>" in page
    assert "<td>recorded</td>" in page


@pytest.mark.parametrize("approved_first", [False, True], ids=["never-approved", "by-another"])
async def test_an_approval_written_into_the_store_by_hand_fails_verify_and_is_flagged(
    setup: flow.Setup, client: Client, approved_first: bool
) -> None:
    approval_id = await flow.held(client, 100)
    if approved_first:  # approved by the operator, then rewritten to name bob
        setup.store.approve(approval_id, Principal.local(), "ok")
    edit_request(
        setup,
        approval_id,
        status="approved",
        decided_by=BOB,
        reason="looks fine",
        decided_at=time.time(),
    )
    await run(client, approval_id)  # the gateway trusts the store: the call runs
    intent = next(r for r in read_audit(setup.audit_path) if r["phase"] == "intent")
    assert intent["decision"]["approval"]["by"]["sub"] == "bob"

    verified = verify_files([setup.audit_path])
    (problem,) = verified.problems
    assert (problem.kind, problem.seq) == ("approval_unrecorded", intent["seq"])
    assert intent["event_id"] in problem.message and approval_id in problem.message
    assert f"approved by bob ({flow.IDP})" in problem.message
    only = " (only by local)" if approved_first else ""
    assert f"holds no `approved` step by them{only} for that approval" in problem.message
    out, err = io.StringIO(), io.StringIO()
    code = verify_command([setup.audit_path], default_log=None, out=out, err=err)
    assert code == 1 and f"approval_unrecorded: four-eyes run {intent['event_id']}" in (
        err.getvalue()
    )

    report = load_report([setup.audit_path])
    (row,) = report.unmatched
    assert row.event_id == intent["event_id"] and row.check_text.startswith("APPROVAL_UNRECORDED: ")
    text = render_text(report)
    assert text.startswith("!! Four-eyes runs the log's approval records do not match: 1 of 1\n")
    assert f"approval {approval_id} approved by bob" in text.split("Risky and escape")[0]
    page = render_html(report)
    assert '<h2 class="bad">Unmatched approvals (1 of 1 four-eyes runs)</h2>' in page
    assert f'<li class="bad">{row.time} ' in page
    assert '<td class="bad">APPROVAL_UNRECORDED: ' in page


async def test_a_request_file_made_by_hand_fails_verify(setup: flow.Setup, client: Client) -> None:
    held_id = await flow.held(client, 100)
    forged_id = "F" * 24  # a request the store never made: no `requested` record either
    data = json.loads((setup.store_dir / f"{held_id}.json").read_text())
    data |= {"id": forged_id, "status": "approved", "decided_by": BOB, "reason": "hand-made"}
    (setup.store_dir / f"{forged_id}.json").write_text(json.dumps(data))
    await run(client, forged_id)

    (problem,) = verify_files([setup.audit_path]).problems
    assert problem.kind == "approval_unrecorded" and forged_id in problem.message
    assert "holds no `requested` step and no `approved` step by them for that" in (problem.message)
    (row,) = load_report([setup.audit_path]).unmatched
    assert forged_id in row.check_text


async def test_a_second_run_of_one_approval_is_flagged(
    setup: flow.Setup, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    approval_id = await flow.held(client, 100)
    setup.store.approve(approval_id, Principal.local(), "change CHG-8")
    await run(client, approval_id)
    started = await client.call_tool("proxmox_guest_power", {"vmid": 100, "action": "start"})
    assert not started.is_error, started.content
    edit_request(setup, approval_id, status="approved")  # "used" turned back by hand
    await run(client, approval_id)

    first, second = (r for r in read_audit(setup.audit_path) if r["phase"] == "intent"
                     and r["what"]["tool"] == "proxmox_guest_stop")  # fmt: skip
    verified = verify_files([setup.audit_path])
    (problem,) = verified.problems
    assert (problem.kind, problem.seq) == ("approval_reused", second["seq"])
    assert f"which already ran as {first['event_id']}" in problem.message
    assert verified.approvals_matched == 1
    assert main(["audit", "verify", "--config", str(setup.config)]) == 1
    assert "approval_reused" in capsys.readouterr().err
    assert main(["audit", "report", "--config", str(setup.config)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("!! Four-eyes runs the log's approval records do not match: 1 of 2")
    assert f"APPROVAL_REUSED: four-eyes run {second['event_id']}" in shown


async def test_a_log_that_starts_after_the_request_says_not_covered(
    setup: flow.Setup, client: Client, tmp_path: Path
) -> None:
    approval_id = await flow.held(client, 100)
    edit_request(setup, approval_id, status="approved", decided_by=BOB, reason="hand-made")
    await run(client, approval_id)
    lines = setup.audit_path.read_bytes().splitlines(keepends=True)
    requested = next(
        number
        for number, raw in enumerate(lines)
        if json.loads(raw).get("what", {}).get("action") == "requested"
    )
    later = tmp_path / "later.jsonl"
    later.write_bytes(b"".join(lines[requested + 1 :]))

    verified = verify_files([later], partial=True)
    assert verified.ok, verified.problems
    assert verified.approvals_not_covered == [approval_id]
    assert any("1 not covered (requested before the first record given)" in line
               for line in verified.summary())  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    assert report_command([later], default_log=None, since=None, out=out, err=err) == 0
    assert out.getvalue().startswith(
        "Four-eyes runs the log's approval records do not match: 0 of 1\n"
    )
    assert "    check:    not covered (requested before the log given)\n" in out.getvalue()
    # The whole log covers the request: there the same run fails.
    assert not verify_files([setup.audit_path]).ok
