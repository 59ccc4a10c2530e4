"""proxmox_guest_config and proxmox_guest_config_update end to end: the MCP SDK client,
the gateway and a fresh simulator each (test_examples.fresh_session). The declared
examples and rejects run in test_examples.py; these are what one call cannot show:
pending changes on a running guest, a revert, the digest as a precondition, the plan's
diff, and an unknown key refused before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from pvemcp.simulator.server import SimulatorHandle
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway
from tests.tools.calls import call, ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

RUNNING_VM = 100  # pve1, web01: memory 4096, hotplug network,disk,usb (memory waits)


async def read(session: Session, **arguments: Any) -> dict[str, Any]:
    return ok(await call(session, "proxmox_guest_config", **arguments))


async def test_read_current_pending_and_a_snapshot(session: Session) -> None:
    config = await read(session, vmid=RUNNING_VM)
    assert (config["node"], config["type"]) == ("pve1", "qemu")
    assert config["config"]["memory"] == "4096" and config["config"]["name"] == "web01"
    assert "digest" not in config["config"] and len(config["digest"]) == 40
    assert "pending" not in config

    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"memory": 8192, "description": "web"}, delete=["numa"]))  # fmt: skip
    config = await read(session, name="web01")
    # Memory and numa's deletion wait for the next start; the description applies now.
    assert config["config"]["memory"] == "4096" and config["config"]["description"] == "web"
    assert config["pending"] == {"memory": "8192"} and config["pending_delete"] == ["numa"]

    saved = await read(session, vmid=RUNNING_VM, snapshot="pre-upgrade")
    assert saved["snapshot"] == "pre-upgrade" and "snaptime" in saved["config"]
    missing = error_of(await call(session, "proxmox_guest_config", vmid=RUNNING_VM,
                                  snapshot="nope"))  # fmt: skip
    assert missing is not None and "does not exist" in missing["message"]


async def test_the_plan_shows_the_diff_and_revert_drops_pending(session: Session) -> None:
    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"memory": 8192}))  # fmt: skip
    plan = ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                         values={"cores": 4}, revert=["memory"],
                         dry_run=True))  # fmt: skip
    assert plan["dry_run"] is True
    changes = {c["field"]: c for c in plan["plan"]["changes"]}
    assert changes["cores"] == {"field": "cores", "before": "2", "after": 4}
    assert changes["memory"] == {"field": "memory", "before": "8192", "after": "4096"}
    (sent,) = plan["plan"]["calls"]
    assert sent["method"] == "PUT" and sent["params"]["revert"] == "memory"
    assert "memory" not in {k for k in sent["params"] if k != "revert"}

    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM, revert=["memory"]))
    assert "pending" not in await read(session, vmid=RUNNING_VM)
    nothing = ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                            revert=["memory"], dry_run=True))  # fmt: skip
    assert nothing["plan"]["warnings"] == ["memory has no pending change: nothing to revert"]


async def test_the_digest_is_a_precondition(session: Session) -> None:
    digest = (await read(session, vmid=RUNNING_VM))["digest"]
    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"tags": "prod;web;checked"}, digest=digest))  # fmt: skip
    stale = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                values={"onboot": 0}, digest=digest))  # fmt: skip
    assert stale is not None and stale["code"] == "config_changed"
    assert stale["field"] == "digest" and "proxmox_guest_config" in stale["hint"]
    assert len([w for w in session.writes() if w.endswith("/config")]) == 1


async def test_an_unknown_key_is_named_with_the_closest_before_anything_is_sent(
    session: Session,
) -> None:
    refused = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                  values={"memroy": 8192, "cores": 4}))  # fmt: skip
    assert refused is not None and refused["code"] == "invalid_argument"
    assert refused["field"] == "memroy" and "memory" in refused["hint"]
    bad_value = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                    values={"cores": True}))  # fmt: skip
    assert bad_value is not None and bad_value["code"] == "invalid_argument"
    assert "values" in bad_value["message"] or bad_value.get("field") == "values"
    assert session.writes() == []


async def test_a_locked_guest_is_refused_before_anything_is_sent(session: Session) -> None:
    started = ok(await call(session, "proxmox_snapshot_create", vmid=RUNNING_VM,
                            snapname="ram", vmstate=True, wait=False))  # fmt: skip
    assert started["task_status"] == "running"
    locked = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                 values={"cores": 4}))  # fmt: skip
    assert locked is not None and locked["code"] == "guest_locked", locked
    assert locked["field"] == "vmid" and locked["details"]["lock"] == "snapshot"
    assert [w for w in session.writes() if w.endswith("/config")] == []


STOPPED_VM = 101  # pve1, web02: memory 4096, every disk on local-lvm (LVM-thin)
TEMPLATE = 9000
STOPPED_CT = 201  # pve1, proxy01: rootfs on local-lvm


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan, then the call with the token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def test_snapshot_first_then_the_change_and_a_rollback_restores_it(
    session: Session,
) -> None:
    change = {"vmid": STOPPED_VM, "values": {"memory": 3072}, "snapshot_first": True}
    plan = ok(await call(session, "proxmox_guest_config_update", **change, dry_run=True))["plan"]
    snap, put = plan["calls"]
    name = snap["params"]["snapname"]
    assert (snap["method"], snap["path"]) == ("POST", "/nodes/pve1/qemu/101/snapshot")
    assert name.startswith("pre-config-") and len(name) <= 40
    assert put["method"] == "PUT" and put["params"]["memory"] == 3072
    assert plan["changes"] == [{"field": "memory", "before": "4096", "after": 3072}]
    assert any(name in w and "proxmox_snapshot_rollback" in w for w in plan["warnings"])
    assert session.writes() == []

    done = ok(await call(session, "proxmox_guest_config_update", **change))
    assert done["snapshot"] == name and "proxmox_snapshot_rollback" in done["note"]
    assert session.writes() == [
        "POST /nodes/pve1/qemu/101/snapshot",
        "PUT /nodes/pve1/qemu/101/config",
    ]
    assert (await read(session, vmid=STOPPED_VM))["config"]["memory"] == "3072"
    saved = await read(session, vmid=STOPPED_VM, snapshot=name)
    assert saved["config"]["memory"] == "4096"

    # The undo recorded is the config's inverse (the snapshot is kept for a rollback).
    listed = ok(await call(session, "proxmox_call_undo"))["calls"]
    assert listed[0]["tool"] == "proxmox_guest_config_update"
    assert "proxmox_guest_config_update" in listed[0]["undo"]

    rolled = await _confirmed(session, "proxmox_snapshot_rollback", vmid=STOPPED_VM, snapname=name)
    assert rolled["exitstatus"] == "OK"
    assert (await read(session, vmid=STOPPED_VM))["config"]["memory"] == "4096"


async def test_snapshot_first_is_refused_where_pve_cannot_snapshot(session: Session) -> None:
    template = error_of(await call(session, "proxmox_guest_config_update", vmid=TEMPLATE,
                                   values={"cores": 4}, snapshot_first=True))  # fmt: skip
    assert template is not None and template["code"] == "unsupported"
    assert template["field"] == "snapshot_first" and "template" in template["message"]

    # A container volume on a directory storage is a raw file: no snapshots there.
    ok(await call(session, "proxmox_guest_config_update", vmid=STOPPED_CT,
                  values={"mp0": "local:1,mp=/data"}))  # fmt: skip
    before = session.writes()
    raw = error_of(await call(session, "proxmox_guest_config_update", vmid=STOPPED_CT,
                              values={"memory": 2048}, snapshot_first=True))  # fmt: skip
    assert raw is not None and raw["code"] == "unsupported", raw
    assert raw["field"] == "snapshot_first"
    assert raw["message"].startswith("snapshot feature is not available for CT 201")
    assert raw["details"]["disks"] == ["mp0 (local:201/vm-201-disk-0.raw on local, dir)"]
    assert session.writes() == before
    # PVE's own refusal, which the check spares: the snapshot task fails.
    failed = error_of(await call(session, "proxmox_snapshot_create", vmid=STOPPED_CT,
                                 snapname="direct"))  # fmt: skip
    assert failed is not None and failed["code"] == "task_failed"
    assert failed["details"]["exitstatus"] == "snapshot feature is not available"


async def test_a_failed_snapshot_sends_no_change(session: Session) -> None:
    session.sim.state.volumes.faults["local-lvm", "snapshot"] = "thin pool is full"
    failed = error_of(await call(session, "proxmox_guest_config_update", vmid=STOPPED_VM,
                                 values={"memory": 3072}, snapshot_first=True))  # fmt: skip
    assert failed is not None and failed["code"] == "task_failed", failed
    assert "the change was not sent" in failed["message"]
    assert failed["details"]["exitstatus"] == "thin pool is full"
    assert session.writes() == ["POST /nodes/pve1/qemu/101/snapshot"]
    assert (await read(session, vmid=STOPPED_VM))["config"]["memory"] == "4096"


async def test_an_edit_made_while_the_snapshot_runs_is_not_overwritten(
    session: Session,
) -> None:
    guest = session.sim.state.guests[STOPPED_VM]

    async def meddle() -> None:
        # root's `qm set --skiplock` while the snapshot task holds the lock (bounded: if
        # the lock is never seen, the assertions below fail rather than the test hang)
        for _ in range(2000):
            if guest.config.get("lock") == "snapshot":
                guest.config["cores"] = 4
                return
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as group:
        group.start_soon(meddle)
        result = await call(session, "proxmox_guest_config_update", vmid=STOPPED_VM,
                            values={"memory": 3072}, snapshot_first=True)  # fmt: skip
    changed = error_of(result)
    assert changed is not None and changed["code"] == "config_changed", changed
    assert "while snapshot 'pre-config-" in changed["message"]
    assert "the change was not sent" in changed["message"]
    assert session.writes() == ["POST /nodes/pve1/qemu/101/snapshot"]
    assert str(guest.config["memory"]) == "4096" and len(guest.snapshots) == 1


async def test_a_cluster_can_require_a_snapshot_before_each_change(
    own_sim: SimulatorHandle, audit_path: Path
) -> None:
    required = cluster_for(own_sim, snapshot_before_change=True)
    gateway = make_gateway({"demo": required}, audit_path)
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            done = await client.call_tool(
                "proxmox_guest_config_update", {"vmid": STOPPED_VM, "values": {"cores": 3}}
            )
            assert not done.is_error and done.structured_content is not None
            name = done.structured_content["snapshot"]
            assert name.startswith("pre-config-")
            guest = own_sim.state.guests[STOPPED_VM]
            assert [s.name for s in guest.snapshots] == [name]
            assert guest.config["cores"] == 3

            refused = error_of(
                await client.call_tool(
                    "proxmox_guest_config_update", {"vmid": TEMPLATE, "values": {"cores": 4}}
                )
            )
            assert refused is not None and refused["code"] == "unsupported"
            assert "snapshot_before_change" in refused["hint"]
            assert own_sim.state.guests[TEMPLATE].config["cores"] == 2
    finally:
        await gateway.aclose()


async def test_a_nic_on_a_bridge_the_node_does_not_run_is_refused_naming_the_key(
    session: Session,
) -> None:
    # pve3's vmbr1 is only a pending change (seed), and the VNet dmz is not applied:
    # PVE would take either into the config and fail the hotplug or the next start.
    pending = error_of(await call(session, "proxmox_guest_config_update", vmid=107,
                                  values={"net1": "virtio,bridge=vmbr1,tag=20"}))  # fmt: skip
    assert pending is not None, "a NIC on a pending bridge was accepted"
    assert (pending["code"], pending["field"]) == ("invalid_argument", "net1"), pending
    assert "pending" in pending["message"] and "proxmox_network_apply" in pending["hint"]
    assert "vmbr0" in pending["hint"]
    vnet = error_of(await call(session, "proxmox_guest_config_update", vmid=STOPPED_CT,
                               values={"net1": "name=eth1,bridge=dmz,ip=dhcp"}))  # fmt: skip
    assert vnet is not None and (vnet["code"], vnet["field"]) == ("not_found", "net1"), vnet
    assert [w for w in session.writes() if w.endswith("/config")] == []
    # An active bridge and an applied VNet (labnet) are bridges guests can use.
    ok(await call(session, "proxmox_guest_config_update", vmid=STOPPED_VM,
                  values={"net1": "virtio,bridge=vmbr1,tag=20"}))  # fmt: skip
    ok(await call(session, "proxmox_guest_config_update", vmid=STOPPED_CT,
                  values={"net1": "name=eth1,bridge=labnet,ip=dhcp"}))  # fmt: skip
    assert (await read(session, vmid=STOPPED_CT))["config"]["net1"].startswith("name=eth1,")
