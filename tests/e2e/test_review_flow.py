"""Issue 14's "done when" for an escape call, end to end: through the MCP SDK client over
streamable HTTP (OIDC tokens from the test issuer), Alice's shell call under an `approve`
rule is held, Bob (group secops) approves it through the HTTP approval API, Alice's re-sent
call runs on the real sshd exactly once, its output is in the evidence store, `audit
verify` passes, tampering with the blob is detected, and `audit report` shows who asked,
what ran, who approved and the evidence."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from pvemcp.gateway.approvals import ApprovalStore
from pvemcp.policy.audit_commands import verify_command
from pvemcp.policy.audit_report import load_report, render_text
from pvemcp.policy.evidence import EvidenceStore, blob_path
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.ssh import conftest as ssh
from tests.support.oidc import TestIssuer, run_test_issuer, signing_key
from tests.support.sshd import Sshd
from tests.transports.test_approvals_http import serving
from tests.transports.test_http_app import bearer, error_of, payload

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The real sshd and its simulator, as the SSH tests use them.
ssh_sim = ssh.ssh_sim
sshd = ssh.sshd

POLICY = """
version = 1

[[rules]]
id = "alice-shell"
effect = "allow"
subjects = ["sub:alice"]
tools = ["proxmox_shell_run"]

[[rules]]
id = "shell-four-eyes"
effect = "approve"
subjects = ["*"]
tools = ["proxmox_shell_run"]
approvers = ["group:secops"]
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    with run_test_issuer() as running:
        running.reset([signing_key()])
        yield running


async def test_an_approved_shell_call_runs_once_with_its_evidence_verified_and_reported(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path, issuer: TestIssuer
) -> None:
    marker_dir = Path(tempfile.mkdtemp(prefix="pvemcp-review-"))
    marker_dir.chmod(0o777)
    marker = marker_dir / "ran"
    command = f"echo ran >> {marker}; uname -s"
    root = tmp_path / "evidence"
    try:
        async with ssh.escape_gateway(
            ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path
        ) as gateway:
            gateway.evidence = EvidenceStore(root)
            gateway.approvals = ApprovalStore(tmp_path / "approvals", 600, gateway.audit)
            async with (
                serving(gateway, issuer) as api,
                httpx2.AsyncClient(headers=bearer(api.token("alice"))) as http,
                Client(streamable_http_client(api.resource, http_client=http)) as alice,
            ):
                args = {"node": "pve1", "command": command}
                pending = error_of(await alice.call_tool("proxmox_shell_run", args))
                assert pending["code"] == "approval_pending"
                approval_id = pending["details"]["approval_id"]
                assert not marker.exists(), "held: nothing ran"

                bob = api.token("bob", "secops")
                decided = await api.call(
                    "POST", f"/approvals/{approval_id}/approve", bob, json={"reason": "CHG-7"}
                )
                assert decided.status_code == 200, decided.text

                ran = await alice.call_tool(
                    "proxmox_shell_run", args | {"approval_id": approval_id}
                )
                assert not ran.is_error, ran.content
                assert payload(ran)["stdout"] == "Linux\n"
                again = error_of(
                    await alice.call_tool("proxmox_shell_run", args | {"approval_id": approval_id})
                )
                assert again["code"] == "approval_decided"
        assert marker.read_text() == "ran\n", "it ran exactly once"
    finally:
        shutil.rmtree(marker_dir)

    (outcome,) = [r for r in read_audit(audit_path) if r["phase"] == "outcome"]
    (ref,) = outcome["outcome"]["evidence"]
    assert ref["kind"] == "stdout" and blob_path(root, ref["sha256"]).read_bytes() == b"Linux\n"
    out = io.StringIO()
    assert verify_command([audit_path], default_log=None, evidence_root=root, out=out) == 0

    report = load_report([audit_path])
    (call,) = report.calls
    assert (call.who.split(" ")[0], call.ran, call.where) == ("alice", command, "lab/pve1")
    assert call.approval.startswith("four_eyes by bob") and "CHG-7" in call.approval
    assert (call.status, call.exit_code) == ("ok", "0")
    text = render_text(report)
    assert f"pvemcp audit show --evidence {ref['sha256']}" in text
    assert "approval_decided" in text, "the reuse is among the refusals"

    blob_path(root, ref["sha256"]).write_bytes(b"Linux!\n")
    err = io.StringIO()
    code = verify_command([audit_path], default_log=None, evidence_root=root, out=out, err=err)
    assert code == 1 and f"evidence blob {ref['sha256']}" in err.getvalue()
