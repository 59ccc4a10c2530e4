"""proxmox_guest_migrate and proxmox_guest_template through the SDK client, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.e2e.test_tools_inmemory import data, error

pytestmark = pytest.mark.anyio


async def _call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return data(await client.call_tool(name, args))


async def test_a_stopped_vm_moves_offline(client: Client, audit_path: Path) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await client.call_tool(
        "proxmox_guest_migrate", {"vmid": 101, "target": "pve2"}, progress_callback=on_progress
    )
    outcome = data(result)
    assert outcome["node"] == "pve2" and outcome["guest_status"] == "stopped"
    assert outcome["exitstatus"] == "OK" and outcome["upid"].startswith("UPID:pve1:")
    assert seen, "a migration reports progress while it waits"
    guest = await _call(client, "proxmox_guest_get", {"vmid": 101, "include_config": False})
    assert guest["node"] == "pve2"
    intent = next(r for r in read_audit(audit_path) if r.get("phase") == "intent")
    (call,) = intent["where"]["target"]["calls"]
    assert call["path"] == "/nodes/pve1/qemu/101/migrate" and call["params"] == {"target": "pve2"}


async def test_the_plan_names_the_mode(client: Client) -> None:
    vm = await _call(
        client, "proxmox_guest_migrate", {"vmid": 102, "target": "pve3", "dry_run": True}
    )
    plan = vm["plan"]
    assert plan["summary"] == "migrate qemu 102 (test) on pve1 to pve3, online (live)"
    assert plan["calls"][0]["params"] == {"target": "pve3", "online": 1, "with-local-disks": 1}
    assert {"field": "node", "before": "pve1", "after": "pve3"} in plan["changes"]
    assert plan["warnings"] == ["1 local disk(s), 16.0 GiB, are copied to pve3 while the VM runs"]

    ct = await _call(
        client, "proxmox_guest_migrate", {"name": "dns01", "target": "pve3", "dry_run": True}
    )
    assert ct["plan"]["summary"].endswith("on pve1 to pve3, by restart")
    assert ct["plan"]["calls"][0]["params"] == {"target": "pve3", "restart": 1}


async def test_running_guests_move_and_keep_running(client: Client) -> None:
    vm = await _call(client, "proxmox_guest_migrate", {"vmid": 102, "target": "pve3"})
    assert (vm["node"], vm["guest_status"]) == ("pve3", "running")
    ct = await _call(
        client,
        "proxmox_guest_migrate",
        {"vmid": 200, "target": "pve2", "target_storage": "local-lvm"},
    )
    assert (ct["node"], ct["guest_status"]) == ("pve2", "running")


async def test_bad_targets_are_named(own_sim: SimulatorHandle, client: Client) -> None:
    same = error(await client.call_tool("proxmox_guest_migrate", {"vmid": 101, "target": "pve1"}))
    assert (same["code"], same["field"]) == ("invalid_argument", "target")
    unknown = error(
        await client.call_tool("proxmox_guest_migrate", {"vmid": 101, "target": "pve9"})
    )
    assert (unknown["code"], unknown["field"]) == ("not_found", "target")
    assert unknown["hint"] == "Nodes: pve1, pve2, pve3"
    own_sim.state.nodes["pve3"].online = False
    offline = error(
        await client.call_tool("proxmox_guest_migrate", {"vmid": 101, "target": "pve3"})
    )
    assert (offline["code"], offline["field"]) == ("precondition_failed", "target")
    live_ct = error(
        await client.call_tool(
            "proxmox_guest_migrate", {"vmid": 200, "target": "pve2", "online": True}
        )
    )
    assert (live_ct["code"], live_ct["field"]) == ("unsupported", "online")
    storage = error(
        await client.call_tool(
            "proxmox_guest_migrate", {"vmid": 101, "target": "pve2", "target_storage": "-x"}
        )
    )
    assert (storage["code"], storage["field"]) == ("invalid_argument", "target_storage")


async def test_snapshots_that_cannot_move_are_refused_in_the_plan(client: Client) -> None:
    # VM 100 runs with snapshots, CT 202 has one: both on LVM-thin, which PVE cannot move.
    for args in ({"vmid": 100, "target": "pve2"}, {"vmid": 202, "target": "pve1"}):
        refused = error(await client.call_tool("proxmox_guest_migrate", args))
        assert (refused["code"], refused["field"]) == ("precondition_failed", "vmid")
        assert "snapshot" in refused["message"]
    local = error(
        await client.call_tool(
            "proxmox_guest_migrate", {"vmid": 102, "target": "pve2", "with_local_disks": False}
        )
    )
    assert (local["code"], local["field"]) == ("precondition_failed", "with_local_disks")


async def test_what_pve_refuses_in_the_task_is_a_task_error(
    own_sim: SimulatorHandle, client: Client
) -> None:
    # A full target storage is found only by the copy: PVE's task fails, with its UPID.
    storage = next(s for s in own_sim.state.storages if s.name == "local-lvm")
    total, _used = storage.usage["pve2"]
    storage.usage["pve2"] = (total, total)
    failed = error(await client.call_tool("proxmox_guest_migrate", {"vmid": 101, "target": "pve2"}))
    assert failed["code"] == "task_failed"
    assert "migration aborted" in failed["message"]
    assert failed["details"]["upid"].startswith("UPID:pve1:")
    guest = await _call(client, "proxmox_guest_get", {"vmid": 101, "include_config": False})
    assert guest["node"] == "pve1" and "lock" not in guest


async def test_a_template_needs_confirmation_and_cannot_start(client: Client) -> None:
    asked = error(await client.call_tool("proxmox_guest_template", {"vmid": 103}))
    assert asked["code"] == "confirmation_required"
    assert "never be started again" in str(asked["details"])
    token = asked["details"]["confirm_token"]
    done = await _call(client, "proxmox_guest_template", {"vmid": 103, "confirm_token": token})
    assert done["exitstatus"] == "OK" and done["guest_status"] == "template"
    guest = await _call(client, "proxmox_guest_get", {"vmid": 103})
    assert guest["template"] is True
    assert guest["config"]["scsi0"].startswith("local-lvm:base-103-disk-0")
    again = error(await client.call_tool("proxmox_guest_template", {"vmid": 103}))
    assert (again["code"], again["field"]) == ("precondition_failed", "vmid")
    start = error(await client.call_tool("proxmox_guest_power", {"vmid": 103, "action": "start"}))
    assert "template" in start["message"]


async def test_a_container_template_finds_its_worker(client: Client) -> None:
    asked = error(await client.call_tool("proxmox_guest_template", {"name": "nginx-dev"}))
    token = asked["details"]["confirm_token"]
    done = await _call(
        client, "proxmox_guest_template", {"name": "nginx-dev", "confirm_token": token}
    )
    assert done["upid"].split(":")[5] == "vztemplate" and done["exitstatus"] == "OK"
    running = error(await client.call_tool("proxmox_guest_template", {"vmid": 200}))
    assert (running["code"], running["field"]) == ("precondition_failed", "vmid")


async def test_a_locked_guest_is_refused_before_anything_is_sent(
    own_sim: SimulatorHandle, client: Client
) -> None:
    guest = own_sim.state.find_guest(101)
    assert guest is not None
    guest.config["lock"] = "backup"
    for name, args in (
        ("proxmox_guest_migrate", {"vmid": 101, "target": "pve2"}),
        ("proxmox_guest_template", {"vmid": 101}),
    ):
        refused = error(await client.call_tool(name, args))
        assert (refused["code"], refused["field"]) == ("guest_locked", "vmid"), name
        by_name = {"name": "web02", **{k: v for k, v in args.items() if k != "vmid"}}
        refused = error(await client.call_tool(name, by_name))
        assert (refused["code"], refused["field"]) == ("guest_locked", "name"), name
    assert own_sim.state.find_guest(101) is guest and guest.node == "pve1"


async def test_snapshots_in_a_qcow2_file_move_along(client: Client) -> None:
    there = await _call(
        client,
        "proxmox_guest_migrate",
        {"vmid": 101, "target": "pve2", "target_storage": "local"},
    )
    assert there["node"] == "pve2"
    await _call(client, "proxmox_snapshot_create", {"vmid": 101, "snapname": "s1"})
    back = await _call(client, "proxmox_guest_migrate", {"vmid": 101, "target": "pve1"})
    assert (back["node"], back["exitstatus"]) == ("pve1", "OK")


async def test_malformed_names_are_refused_naming_the_field(client: Client) -> None:
    for args, field in (
        ({"vmid": 101, "target": "pve 2"}, "target"),
        ({"vmid": 101, "target": "pve2", "target_storage": "x;rm"}, "target_storage"),
    ):
        refused = error(await client.call_tool("proxmox_guest_migrate", args))
        assert (refused["code"], refused["field"]) == ("invalid_argument", field)
