"""Four-eyes approval end to end (issue 14 item 2), through the MCP SDK client: a call an
`approve` rule holds is pending, a second person approves it with `pvemcp approvals` in
another process while the agent waits (with progress), and the agent's re-sent call runs
exactly once; self-approval, other callers, changed arguments, reuse, denial and expiry are
refused, and the audit chain verifies."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp.cli import main
from pvemcp.gateway.approvals import ApprovalStore
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.loader import parse_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from tests.conftest import cluster_for, read_audit

pytestmark = pytest.mark.anyio

IDP = "https://idp.example"
ALICE = Principal("alice", "http", issuer=IDP, client_id="agent")
MALLORY = Principal("mallory", "http", issuer=IDP, client_id="agent")
POLICY = """
[[rules]]
id = "agents"
effect = "allow"
subjects = ["sub:alice", "sub:mallory"]
tiers = ["read", "write", "destructive"]

[[rules]]
id = "four-eyes"
effect = "approve"
description = "A hard stop needs a second person"
subjects = ["*"]
tools = ["proxmox_guest_stop"]
approvers = ["local", "group:secops"]
"""
TTL = 600


class Clock:
    """The wall clock, which a test can move forward (to expire a request)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Caller:
    """Who the in-memory client is, switchable between calls."""

    def __init__(self) -> None:
        self.principal = ALICE

    def __call__(self, _: object) -> Principal:
        return self.principal


class Setup:
    def __init__(self, tmp_path: Path, sim: SimulatorHandle) -> None:
        self.audit_path = tmp_path / "audit" / "audit.jsonl"
        self.store_dir = tmp_path / "audit" / "approvals"
        self.config = tmp_path / "pvemcp.toml"
        self.config.write_text(f'[audit]\npath = "{self.audit_path}"\n\n[approvals]\nttl = {TTL}\n')
        self.clock = Clock()
        self.audit = AuditLog(self.audit_path)
        self.store = ApprovalStore(self.store_dir, TTL, self.audit, clock=self.clock)
        self.caller = Caller()
        self.gateway = Gateway(
            tools=all_tools(),
            clusters=ClusterPool({"demo": cluster_for(sim)}, "demo"),
            policy=PolicyEngine(parse_policy(POLICY, source="test", known_tools=tier_map())),
            audit=self.audit,
            redactor=Redactor((sim.token_secret,)),
            approvals=self.store,
        )

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`pvemcp approvals ...` in another process, as the machine's operator runs it."""
        env = {**os.environ, "PVEMCP_CONFIG": str(self.config)}
        return subprocess.run(
            [sys.executable, "-m", "pvemcp", "approvals", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@pytest.fixture
async def setup(tmp_path: Path, sim: SimulatorHandle) -> AsyncIterator[Setup]:
    made = Setup(tmp_path, sim)
    try:
        yield made
    finally:
        await made.gateway.aclose()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[Client]:
    async with Client(build_mcp_server(setup.gateway, setup.caller)) as session:
        yield session


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return error


async def status_of(client: Client, vmid: int) -> str:
    result = await client.call_tool("proxmox_guest_get", {"vmid": vmid, "include_config": False})
    assert result.structured_content is not None
    return str(result.structured_content["status"])


async def held(client: Client, vmid: int) -> str:
    """Ask for a hard stop: held, nothing run; returns the approval id."""
    error = error_of(await client.call_tool("proxmox_guest_stop", {"vmid": vmid}))
    assert error["code"] == "approval_pending", error
    assert error["field"] == "approval_id" and "proxmox_approval_status" in error["hint"]
    details = error["details"]
    assert details["approvers"] == ["group:secops", "local"]
    assert details["expires_in"] == TTL
    assert details["plan"]["summary"].startswith(f"stop qemu {vmid}")
    assert await status_of(client, vmid) == "running"
    return str(details["approval_id"])


def stop_records(audit_path: Path) -> list[tuple[str, str | None]]:
    return [
        (r["phase"], r.get("outcome", {}).get("status"))
        for r in read_audit(audit_path)
        if r.get("what", {}).get("tool") == "proxmox_guest_stop" and r["phase"] != "approval"
    ]


async def test_a_held_call_runs_once_after_a_second_person_approves_it(
    setup: Setup, client: Client
) -> None:
    approval_id = await held(client, 100)
    listed = await client.call_tool("proxmox_approval_status", {})
    assert listed.structured_content is not None
    (mine,) = listed.structured_content["approvals"]
    assert mine["approval_id"] == approval_id and mine["status"] == "pending"

    # The requester cannot approve their own call, whatever way they try.
    with pytest.raises(ToolFailure) as self_approval:
        setup.store.approve(approval_id, ALICE, "trust me")
    assert self_approval.value.code == "approval_self"

    # The agent waits (bounded, with progress) while the operator approves from a shell.
    seen: list[float] = []
    answers: dict[str, Any] = {}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)
        assert total == 30 and message == "waiting for group:secops, local"

    async def wait() -> None:
        result = await client.call_tool(
            "proxmox_approval_status",
            {"approval_id": approval_id, "wait": True, "timeout": 30},
            progress_callback=on_progress,
        )
        answers["wait"] = result.structured_content

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await anyio.sleep(1.5)
        shown = await anyio.to_thread.run_sync(lambda: setup.cli("show", approval_id))
        assert shown.returncode == 0, shown.stderr
        assert "requester:  alice @https://idp.example" in shown.stdout
        assert "stop qemu 100" in shown.stdout
        done = await anyio.to_thread.run_sync(
            lambda: setup.cli("approve", approval_id, "--reason", "change CHG-42")
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{approval_id} approved: proxmox_guest_stop @demo"
    waited = answers["wait"]["approvals"][0]
    assert waited["status"] == "approved" and waited["reason"] == "change CHG-42"
    assert waited["decided_by"] == f"local ({getpass.getuser()})"
    assert seen, "the wait reported progress"
    assert answers["wait"]["waited"] < 30

    # Another caller, or changed arguments, cannot use the approval.
    setup.caller.principal = MALLORY
    stolen = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    )
    assert stolen["code"] == "approval_not_found"  # not theirs to see: like an unknown id
    setup.caller.principal = ALICE
    changed = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 102, "approval_id": approval_id})
    )
    assert changed["code"] == "approval_mismatch"
    assert await status_of(client, 102) == "running"

    # The exact call runs, once; no confirmation is asked on top of the approval.
    ran = await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    assert not ran.is_error, ran.content
    assert await status_of(client, 100) == "stopped"
    again = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    )
    assert again["code"] == "approval_decided" and "already used" in again["message"]

    assert stop_records(setup.audit_path) == [
        ("record", "approval_pending"),
        ("record", "rejected"),
        ("record", "rejected"),
        ("intent", None),
        ("outcome", "ok"),
        ("record", "rejected"),
    ]
    intent = next(r for r in read_audit(setup.audit_path) if r["phase"] == "intent")
    approval = intent["decision"]["approval"]
    assert approval["method"] == "four_eyes" and approval["approval_id"] == approval_id
    assert approval["by"]["sub"] == "local" and approval["by"]["os_user"] == getpass.getuser()
    assert approval["reason"] == "change CHG-42"
    assert approval["requested_by"]["sub"] == "alice"
    assert intent["decision"]["effect"] == "approve"
    steps = [
        (r["what"]["action"], r["who"]["sub"] if "who" in r else None, r["outcome"].get("error"))
        for r in read_audit(setup.audit_path)
        if r["phase"] == "approval"
    ]
    assert steps == [
        ("requested", "alice", None),
        ("refused", "alice", "approval_self"),
        ("approved", "local", None),
        ("refused", "mallory", "approval_not_found"),
        ("refused", "alice", "approval_mismatch"),
        ("used", "alice", None),
        ("refused", "alice", "approval_decided"),
    ]
    report = verify_files([setup.audit_path])
    assert report.ok, report.problems
    assert report.unpaired_intents == []


async def test_a_denied_call_never_runs(
    setup: Setup, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    approval_id = await held(client, 100)
    code = main(["approvals", "--config", str(setup.config), "deny", approval_id, "--reason", "no"])
    assert code == 0, capsys.readouterr().err
    refused = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    )
    assert refused["code"] == "approval_denied" and ": no;" in refused["message"]
    assert await status_of(client, 100) == "running"
    # Deciding twice is refused, with a structured error and exit status 1.
    assert main(["approvals", "--config", str(setup.config), "approve", approval_id,
                 "--reason", "changed my mind"]) == 1  # fmt: skip
    assert "approval_decided" in capsys.readouterr().err
    assert verify_files([setup.audit_path]).ok


async def test_an_expired_approval_does_not_run(setup: Setup, client: Client) -> None:
    approval_id = await held(client, 100)
    setup.store.approve(approval_id, Principal.local(), "fine")
    setup.clock.offset = TTL + 1
    expired = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    )
    assert expired["code"] == "approval_expired"
    assert await status_of(client, 100) == "running"
    actions = [
        r["what"]["action"] for r in read_audit(setup.audit_path) if r["phase"] == "approval"
    ]
    assert actions == ["requested", "approved", "expired", "refused"]


async def test_a_pending_call_resent_early_still_waits_and_a_forged_id_is_refused(
    setup: Setup, client: Client
) -> None:
    approval_id = await held(client, 100)
    early = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": approval_id})
    )
    assert early["code"] == "approval_pending"
    forged = error_of(
        await client.call_tool("proxmox_guest_stop", {"vmid": 100, "approval_id": "x" * 24})
    )
    assert forged["code"] == "approval_not_found"
    status = error_of(
        await client.call_tool("proxmox_approval_status", {"approval_id": "../../etc/passwd"})
    )
    assert status["code"] == "approval_not_found"
    listed = await anyio.to_thread.run_sync(lambda: setup.cli("list", "--status", "pending"))
    assert listed.returncode == 0 and approval_id in listed.stdout
    assert await status_of(client, 100) == "running"
