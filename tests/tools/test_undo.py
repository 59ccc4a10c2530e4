"""proxmox_call_undo end to end: the MCP SDK client, the gateway, its audit log and a fresh
simulator.

A reversible write records its inverse in its audit outcome; the undo tool lists the
caller's (and only the caller's) and applies one as a new call through the same pipeline,
refusing once it is undone and when the guest moved on since.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for
from tests.tools.test_catalogue import TOOLS
from tests.tools.test_examples import error_of

pytestmark = pytest.mark.anyio

STOPPED_VM = 101  # pve1, web02
RUNNING_VM = 100  # pve1, web01
ALICE = Principal(subject="alice", transport="memory")


@dataclass
class Callers:
    me: Client
    alice: Client
    audit: Path
    sim: SimulatorHandle


def _gateway(sim: SimulatorHandle, audit: Path) -> Gateway:
    return Gateway(
        tools=TOOLS,
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator",
            profile_subjects=["local", "sub:alice"],
            file=None,
            known_tools=tier_map(),
        ),
        audit=AuditLog(audit),
        redactor=Redactor((sim.token_secret,)),
    )


@pytest.fixture
async def callers(tmp_path: Path) -> AsyncIterator[Callers]:
    """Two callers on one gateway over a fresh simulator: the local operator and alice."""
    audit = tmp_path / "audit.jsonl"
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as sim:
        gateway = _gateway(sim, audit)
        try:
            async with (
                Client(build_mcp_server(gateway, local_principal)) as me,
                Client(build_mcp_server(gateway, lambda _: ALICE)) as alice,
            ):
                yield Callers(me, alice, audit, sim)
        finally:
            await gateway.aclose()


def _ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, error_of(result)
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def _refused(result: CallToolResult, code: str) -> dict[str, Any]:
    error = error_of(result)
    assert error is not None and error["code"] == code, error
    return error


async def _call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool(tool, arguments)


async def _undoable(client: Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = _ok(await _call(client, "proxmox_call_undo"))["calls"]
    return listed


async def _status(client: Client, vmid: int) -> str:
    got = _ok(await _call(client, "proxmox_guest_get", vmid=vmid, include_config=False))
    return str(got["status"])


async def _config(client: Client, vmid: int) -> dict[str, Any]:
    got = _ok(await _call(client, "proxmox_guest_config", vmid=vmid))
    config: dict[str, Any] = got["config"]
    return config


async def test_a_start_is_undone_by_a_shutdown_once(callers: Callers) -> None:
    me = callers.me
    assert _ok(await _call(me, "proxmox_guest_power", vmid=STOPPED_VM, action="start"))[
        "guest_status"
    ] == ("running")
    [latest, *_] = await _undoable(me)
    assert latest["tool"] == "proxmox_guest_power"
    assert latest["undo"] == f"proxmox_guest_power action=shutdown vmid={STOPPED_VM}"
    planned = _ok(await _call(me, "proxmox_call_undo", event_id=latest["event_id"], dry_run=True))
    assert planned["result"]["dry_run"] is True
    assert planned["result"]["plan"]["calls"][0]["path"].endswith("/status/shutdown")
    assert await _status(me, STOPPED_VM) == "running"  # a dry run changed nothing

    undone = _ok(await _call(me, "proxmox_call_undo", event_id=latest["event_id"]))
    assert undone["event_id"] != latest["event_id"]
    assert undone["result"]["guest_status"] == "stopped"
    assert await _status(me, STOPPED_VM) == "stopped"

    again = _refused(
        await _call(me, "proxmox_call_undo", event_id=latest["event_id"]), "already_undone"
    )
    assert again["field"] == "event_id"
    assert latest["event_id"] not in [c["event_id"] for c in await _undoable(me)]

    # The undo's own records name the call it undid; the chain still verifies.
    records = [json.loads(line) for line in callers.audit.read_text().splitlines()]
    undo_outcome = next(
        r for r in records if r.get("event_id") == undone["event_id"] and r["phase"] == "outcome"
    )
    assert undo_outcome["what"]["undoes"] == latest["event_id"]
    assert verify_files([callers.audit]).ok


async def test_an_undo_is_refused_once_the_guest_moved_on(callers: Callers) -> None:
    me = callers.me
    _ok(await _call(me, "proxmox_guest_power", vmid=STOPPED_VM, action="start"))
    [started, *_] = await _undoable(me)
    _ok(await _call(me, "proxmox_guest_power", vmid=STOPPED_VM, action="shutdown"))
    error = _refused(
        await _call(me, "proxmox_call_undo", event_id=started["event_id"]), "state_changed"
    )
    assert "stopped" in error["message"] and error["field"] == "event_id"


async def test_a_config_change_is_undone_unless_changed_since(callers: Callers) -> None:
    me = callers.me
    before = await _config(me, STOPPED_VM)
    assert "description" not in before
    _ok(
        await _call(
            me,
            "proxmox_guest_config_update",
            vmid=STOPPED_VM,
            values={"memory": 3072, "description": "test box"},
        )
    )
    [changed, *_] = await _undoable(me)
    assert changed["tool"] == "proxmox_guest_config_update"
    _ok(await _call(me, "proxmox_call_undo", event_id=changed["event_id"]))
    after = await _config(me, STOPPED_VM)
    assert after["memory"] == before["memory"] and "description" not in after

    # A change in between: the recorded digest no longer matches, nothing is overwritten.
    _ok(await _call(me, "proxmox_guest_config_update", vmid=STOPPED_VM, values={"cores": 3}))
    [cores, *_] = await _undoable(me)
    _ok(await _call(me, "proxmox_guest_config_update", vmid=STOPPED_VM, values={"cores": 4}))
    error = _refused(
        await _call(me, "proxmox_call_undo", event_id=cores["event_id"]), "config_changed"
    )
    assert error["field"] == "digest"
    assert str((await _config(me, STOPPED_VM))["cores"]) == "4"


async def test_a_snapshot_create_is_undone_by_a_confirmed_delete(callers: Callers) -> None:
    me = callers.me
    _ok(await _call(me, "proxmox_snapshot_create", vmid=STOPPED_VM, snapname="undo-me"))
    [taken, *_] = await _undoable(me)
    assert taken["undo"] == f"proxmox_snapshot_delete snapname=undo-me vmid={STOPPED_VM}"
    # The delete is destructive: the undo asks for the same confirmation it would.
    ask = _refused(
        await _call(me, "proxmox_call_undo", event_id=taken["event_id"]), "confirmation_required"
    )
    token = ask["details"]["confirm_token"]
    _ok(await _call(me, "proxmox_call_undo", event_id=taken["event_id"], confirm_token=token))
    tree = _ok(await _call(me, "proxmox_snapshot_list", vmid=STOPPED_VM))
    assert tree["snapshots"] == []


async def test_another_callers_calls_are_neither_listed_nor_undone(callers: Callers) -> None:
    _ok(await _call(callers.alice, "proxmox_guest_power", vmid=STOPPED_VM, action="start"))
    [hers] = await _undoable(callers.alice)
    assert await _undoable(callers.me) == []
    _refused(await _call(callers.me, "proxmox_call_undo", event_id=hers["event_id"]), "not_found")
    assert await _status(callers.me, STOPPED_VM) == "running"


async def test_a_call_that_did_not_wait_or_changed_nothing_records_no_undo(
    callers: Callers,
) -> None:
    me = callers.me
    _ok(await _call(me, "proxmox_guest_power", vmid=STOPPED_VM, action="start", wait=False))
    _ok(await _call(me, "proxmox_guest_power", vmid=RUNNING_VM, action="reboot"))
    assert await _undoable(me) == []


async def test_a_migration_is_undone_and_an_older_undo_refused_where_it_left(
    callers: Callers,
) -> None:
    me = callers.me
    _ok(await _call(me, "proxmox_guest_power", vmid=STOPPED_VM, action="start"))
    [started] = await _undoable(me)
    moved = _ok(await _call(me, "proxmox_guest_migrate", vmid=STOPPED_VM, target="pve2"))
    assert moved["node"] == "pve2"
    [migrated, _] = await _undoable(me)
    assert migrated["undo"] == f"proxmox_guest_migrate target=pve1 vmid={STOPPED_VM}"
    # The start's undo was recorded on pve1: the guest is not where that call left it.
    error = _refused(
        await _call(me, "proxmox_call_undo", event_id=started["event_id"]), "state_changed"
    )
    assert "pve2" in error["message"]
    back = _ok(await _call(me, "proxmox_call_undo", event_id=migrated["event_id"]))
    assert back["result"]["node"] == "pve1"


async def test_a_disk_move_is_undone_by_moving_it_back(callers: Callers) -> None:
    me = callers.me
    _ok(await _call(me, "proxmox_disk_move", vmid=STOPPED_VM, disk="scsi0", storage="local"))
    [moved] = await _undoable(me)
    assert moved["undo"] == f"proxmox_disk_move disk=scsi0 storage=local-lvm vmid={STOPPED_VM}"
    _ok(await _call(me, "proxmox_call_undo", event_id=moved["event_id"]))
    assert (await _config(me, STOPPED_VM))["scsi0"].startswith("local-lvm:")


async def test_irreversible_writes_say_so_in_their_plan(callers: Callers) -> None:
    plans = [
        _ok(await _call(callers.me, tool, **arguments, dry_run=True))["plan"]
        for tool, arguments in (
            ("proxmox_snapshot_delete", {"vmid": RUNNING_VM, "snapname": "pre-upgrade"}),
            ("proxmox_snapshot_rollback", {"vmid": RUNNING_VM, "snapname": "pre-upgrade"}),
            ("proxmox_guest_template", {"vmid": 103}),
        )
    ]
    for plan in plans:
        assert any(w.endswith("this cannot be undone") for w in plan["warnings"]), plan


async def test_an_undo_survives_a_restart_of_the_gateway(callers: Callers) -> None:
    """The audit log is the system of record: a new gateway on the same log undoes a call
    the previous one made."""
    _ok(await _call(callers.me, "proxmox_guest_power", vmid=STOPPED_VM, action="start"))
    restarted = _gateway(callers.sim, callers.audit)
    try:
        async with Client(build_mcp_server(restarted, local_principal)) as me:
            [started] = await _undoable(me)
            _ok(await _call(me, "proxmox_call_undo", event_id=started["event_id"]))
            assert await _status(me, STOPPED_VM) == "stopped"
    finally:
        await restarted.aclose()
    assert verify_files([callers.audit]).ok
