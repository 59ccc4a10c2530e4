"""The invoke pipeline against the real simulator: validation, refusal, audit, redaction."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from pvemcp.config import AuditConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.registry import ToolInput, ToolOutput, tool
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import all_tools
from tests.conftest import cluster_for, make_gateway, operator_policy, read_audit

pytestmark = pytest.mark.anyio

LOCAL = Principal.local("memory")
REMOTE = Principal(subject="alice", transport="http", client_id="agent")


async def error_of(gateway: Gateway, tool: str, args: dict[str, Any] | None) -> dict[str, Any]:
    result = await gateway.invoke(LOCAL, tool, args)
    assert result.error is not None, result.data
    return result.error


async def test_wrong_type_names_the_field_and_range(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_get", {"vmid": "100"})
    assert error["code"] == "invalid_argument"
    assert error["field"] == "vmid"
    assert "100 to 999999999" in error["hint"]


async def test_out_of_range_value(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_list", {"limit": 0})
    assert error["field"] == "limit"
    assert "greater than or equal to 1" in error["message"]


async def test_unknown_argument_lists_accepted_ones(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_node_status", {"node": "pve1", "verbose": True})
    assert error["field"] == "verbose"
    assert error["message"] == "verbose: unknown argument"
    assert "node" in error["hint"]


async def test_enum_hint_lists_choices(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_power", {"vmid": 100, "action": "explode"})
    assert error["field"] == "action"
    assert "start" in error["hint"] and "resume" in error["hint"]


async def test_vmid_and_name_together_rejected(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_get", {"vmid": 100, "name": "x"})
    assert error["code"] == "invalid_argument"
    assert "exactly one of vmid or name" in error["message"]


async def test_list_given_as_json_text_is_accepted(gateway: Gateway) -> None:
    result = await gateway.invoke(LOCAL, "proxmox_guest_list", {"fields": '["mem"]', "limit": 1})
    assert result.data is not None
    assert "maxmem_mib" in result.data["guests"][0]


async def test_unknown_tool_and_cluster(gateway: Gateway) -> None:
    assert (await error_of(gateway, "proxmox_nope", {}))["code"] == "unknown_tool"
    error = await error_of(gateway, "proxmox_node_list", {"cluster": "prod"})
    assert error["code"] == "unknown_cluster"
    assert "demo" in error["hint"]


async def test_unknown_tool_name_that_is_not_utf8_is_recorded(
    gateway: Gateway, audit_path: Path
) -> None:
    """A lone surrogate (valid JSON text, not UTF-8) in an unknown name used to crash the
    audit write and so the call."""
    assert (await error_of(gateway, "proxmox_\ud800", {}))["code"] == "unknown_tool"
    (record,) = read_audit(audit_path)
    assert record["what"]["tool"] == "proxmox_\\ud800"


async def test_bad_cluster_name_is_rejected_before_lookup(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_node_list", {"cluster": "Prod!"})
    assert error["code"] == "invalid_argument"
    assert error["field"] == "cluster"
    assert "not a cluster name" in error["message"]


async def test_control_characters_in_a_name_are_rejected(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_get", {"name": "web\x00"})
    assert error["field"] == "name"
    assert "control characters" in error["message"]


async def test_unknown_vmid_is_not_found(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_guest_get", {"vmid": 99999})
    assert error["code"] == "not_found"
    assert "proxmox_guest_list" in error["hint"]


async def test_unknown_node_is_a_structured_error(gateway: Gateway) -> None:
    error = await error_of(gateway, "proxmox_node_status", {"node": "nosuchnode"})
    assert error["code"] in {"not_found", "proxmox_refused"}
    assert "nosuchnode" in error["message"]


async def test_reads_leave_one_record_writes_an_intent_and_outcome(
    gateway: Gateway, audit_path: Path
) -> None:
    await gateway.invoke(LOCAL, "proxmox_node_list", {})
    stopped = await gateway.invoke(
        LOCAL, "proxmox_guest_list", {"status": "running", "type": "qemu", "limit": 1}
    )
    assert stopped.data is not None
    vmid = stopped.data["guests"][0]["vmid"]
    result = await gateway.invoke(
        LOCAL, "proxmox_guest_power", {"vmid": vmid, "action": "reboot", "wait": True}
    )
    assert result.ok, result.error
    records = read_audit(audit_path)
    phases = [(r["what"]["tool"], r["phase"]) for r in records]
    assert phases == [
        ("proxmox_node_list", "record"),
        ("proxmox_guest_list", "record"),
        ("proxmox_guest_power", "intent"),
        ("proxmox_guest_power", "outcome"),
    ]
    intent, outcome = records[2], records[3]
    assert intent["event_id"] == outcome["event_id"]
    assert intent["decision"]["rules"] == ["builtin.operator.write"]
    assert intent["what"]["arguments"]["vmid"] == vmid
    assert outcome["outcome"]["status"] == "ok"
    assert outcome["outcome"]["upids"] == [result.data["upid"]]  # type: ignore[index]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]


async def test_write_denied_for_remote_subject_and_audited(
    gateway: Gateway, audit_path: Path
) -> None:
    result = await gateway.invoke(REMOTE, "proxmox_guest_power", {"vmid": 100, "action": "start"})
    assert result.error is not None
    assert result.error["code"] == "denied"
    assert result.error["details"]["rules"] == ["builtin.default-deny"]
    (record,) = read_audit(audit_path)
    assert record["outcome"]["status"] == "denied"
    assert record["who"]["sub"] == "alice"
    # A denied caller does not see the tool either.
    names = {spec.name for spec in gateway.visible_specs(REMOTE)}
    assert "proxmox_guest_list" in names
    assert "proxmox_guest_power" not in names


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only directory")
async def test_unwritable_audit_refuses_writes_but_serves_reads(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    await _check_unwritable(sim, locked / "audit.jsonl")


async def test_audit_path_that_cannot_exist_refuses_writes_but_serves_reads(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    await _check_unwritable(sim, blocker / "audit.jsonl")


async def _check_unwritable(sim: SimulatorHandle, path: Path) -> None:
    gw = make_gateway({"demo": cluster_for(sim)}, path)
    try:
        read = await gw.invoke(LOCAL, "proxmox_node_list", {})
        assert read.ok
        write = await gw.invoke(LOCAL, "proxmox_guest_power", {"vmid": 100, "action": "start"})
        assert write.error is not None
        assert write.error["code"] == "audit_unavailable"
    finally:
        await gw.aclose()


def audit_gateway(sim: SimulatorHandle, path: Path, **audit: Any) -> Gateway:
    """A gateway whose audit log is built from `[audit]` settings, as `pvemcp serve` does."""
    return Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=operator_policy(),
        audit=AuditLog.from_config(AuditConfig(path=path, **audit)),
        redactor=Redactor(),
    )


def break_audit_dir(path: Path) -> None:
    """Replace the live log's directory by a regular file: the next append cannot reopen
    the log (root included), as after an unmounted or deleted log volume."""
    shutil.rmtree(path.parent)
    path.parent.write_text("not a directory any more")


async def test_reads_answer_unrecorded_but_counted_by_default(
    sim: SimulatorHandle, audit_path: Path
) -> None:
    gw = audit_gateway(sim, audit_path)
    try:
        assert (await gw.invoke(LOCAL, "proxmox_node_list", {})).ok
        break_audit_dir(audit_path)
        read = await gw.invoke(LOCAL, "proxmox_node_list", {})
        assert read.ok, read.error
        write = await gw.invoke(LOCAL, "proxmox_guest_power", {"vmid": 100, "action": "start"})
        assert write.error is not None
        assert write.error["code"] == "audit_unavailable"
        assert write.error["hint"].endswith("reads work.")
        assert gw.audit.write_failures == {"record": 1, "intent": 1}
    finally:
        await gw.aclose()


async def test_require_for_reads_refuses_every_unrecorded_answer(
    sim: SimulatorHandle, audit_path: Path
) -> None:
    gw = audit_gateway(sim, audit_path, require_for_reads=True)
    try:
        assert (await gw.invoke(LOCAL, "proxmox_node_list", {})).ok
        assert [r["what"]["tool"] for r in read_audit(audit_path)] == ["proxmox_node_list"]
        break_audit_dir(audit_path)
        answers = [
            await gw.invoke(LOCAL, "proxmox_node_list", {}),
            await gw.invoke(LOCAL, "proxmox_guest_list", {"limit": 1}),
            # A dry run's plan and a confirmation's plan and token are answers too.
            await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100, "dry_run": True}),
            await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100}),
            await gw.invoke(LOCAL, "proxmox_guest_power", {"vmid": 100, "action": "start"}),
        ]
        for answer in answers:
            assert answer.data is None
            assert answer.error is not None
            assert answer.error["code"] == "audit_unavailable"
            assert "require_for_reads" in answer.error["hint"]
            assert "confirm_token" not in str(answer.error)
        assert gw.audit.write_failures == {"record": 4, "intent": 1}
    finally:
        await gw.aclose()


@pytest.mark.parametrize("required", [False, True])
async def test_disabled_audit_serves_reads_unless_they_must_be_recorded(
    sim: SimulatorHandle, tmp_path: Path, required: bool
) -> None:
    gw = audit_gateway(sim, tmp_path / "audit.jsonl", enabled=False, require_for_reads=required)
    try:
        read = await gw.invoke(LOCAL, "proxmox_node_list", {})
        assert read.ok is not required
        if required:
            assert read.error is not None
            assert read.error["code"] == "audit_unavailable"
            assert "audit.enabled = false" in read.error["message"]
    finally:
        await gw.aclose()
    assert not (tmp_path / "audit.jsonl").exists()


async def test_secrets_never_reach_results_or_errors(
    sim: SimulatorHandle, audit_path: Path
) -> None:
    gw = make_gateway(
        {"demo": cluster_for(sim, token_secret="00000000-0000-0000-0000-000000000bad")},
        audit_path,
        ("00000000-0000-0000-0000-000000000bad",),
    )
    try:
        error = (await gw.invoke(LOCAL, "proxmox_node_list", {})).error
        assert error is not None
        assert error["code"] == "authentication_failed"
        assert "000000000bad" not in str(error)
    finally:
        await gw.aclose()
    assert "000000000bad" not in audit_path.read_text()


async def test_unreachable_cluster_is_a_clear_error(audit_path: Path, sim: SimulatorHandle) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = make_gateway(
        {"demo": cluster_for(sim, api_url=f"https://127.0.0.1:{port}", retries=1)}, audit_path
    )
    try:
        error = (await gw.invoke(LOCAL, "proxmox_cluster_status", {})).error
        assert error is not None
        assert error["code"] == "unreachable"
        assert f"127.0.0.1:{port}" in error["message"]
    finally:
        await gw.aclose()


async def test_fingerprint_mismatch_is_a_clear_error(
    audit_path: Path, sim: SimulatorHandle
) -> None:
    gw = make_gateway({"demo": cluster_for(sim, fingerprint="ab" * 32)}, audit_path)
    try:
        error = (await gw.invoke(LOCAL, "proxmox_node_list", {})).error
        assert error is not None
        assert error["code"] == "tls_verification_failed"
        assert sim.fingerprint_colons in error["message"]
    finally:
        await gw.aclose()


class _Boom(ToolOutput):
    pass


@tool("test_crash", title="crash", tier=Tier.READ, toolset="core", input=ToolInput, output=_Boom)
async def _crash(ctx: ToolContext, args: ToolInput) -> _Boom:
    """A tool with a bug."""
    raise RuntimeError("internal detail /etc/secret-path")


async def test_a_crashing_tool_is_an_internal_error_without_details(
    sim: SimulatorHandle, audit_path: Path
) -> None:
    gw = Gateway(
        tools=[*all_tools(), _crash],
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=operator_policy(),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
    )
    try:
        result = await gw.invoke(LOCAL, "test_crash", {})
        assert result.error is not None
        assert result.error["code"] == "internal_error"
        assert result.event_id in result.error["message"]
        assert "secret-path" not in str(result.error)
        assert (await gw.invoke(LOCAL, "proxmox_node_list", {})).ok
    finally:
        await gw.aclose()
    assert read_audit(audit_path)[0]["outcome"]["error"] == "internal_error"
