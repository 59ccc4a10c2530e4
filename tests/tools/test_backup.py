"""The backup tools end to end: the MCP SDK client, the gateway, a fresh simulator.

The declared examples and rejects run in test_examples.py; these follow a backup through
its life: made (and locked while it runs), listed, restored to a new vmid as a guest with
the archived config and disks, restored over its guest after the confirmation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools.backup import VM_BACKUP
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway, read_audit
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio

GiB = 1024**3


async def test_back_up_list_and_restore_to_a_new_vmid(session: Session) -> None:
    started = ok(await call(session, "proxmox_backup_start", vmid=101, storage="nfs-backup",
                            notes="{{guestname}} before upgrade", protected=True))  # fmt: skip
    assert (started["exitstatus"], started["guest_status"], started["vmid"]) == ("OK", "stopped",
                                                                                 101)  # fmt: skip
    (volid,) = started["backups"]
    assert volid.startswith("nfs-backup:backup/vzdump-qemu-101-") and volid.endswith(".vma.zst")
    assert "lock" not in session.sim.state.guests[101].config

    listed = ok(await call(session, "proxmox_backup_list", vmid=101))
    newest = listed["backups"][0]  # newest first, before the seeded monthly one
    assert (newest["volid"], newest["type"], newest["notes"], newest["protected"]) == (
        volid, "qemu", "web02 before upgrade", True
    )  # fmt: skip
    volids = [b["volid"] for b in listed["backups"]]
    assert volids[0] == volid and VM_BACKUP in volids  # and last night's (seeded history)
    every = ok(await call(session, "proxmox_backup_list", storage="nfs-backup"))
    assert [b["created"] for b in every["backups"]] == sorted(
        (b["created"] for b in every["backups"]), reverse=True
    )
    page = ok(await call(session, "proxmox_backup_list", storage="nfs-backup", limit=1))
    assert (page["total"], page["next_offset"]) == (every["total"], 1)
    assert page["backups"] == every["backups"][:1]

    plan = ok(await call(session, "proxmox_backup_restore", volid=volid, storage="local",
                         dry_run=True))["plan"]  # fmt: skip
    changes = {c["field"]: c for c in plan["changes"]}
    assert changes["vmid"]["after"] == 108  # the next free one
    assert changes["scsi0"]["after"] == "new volume on local, 32.0 GiB"
    free = changes["local free GiB"]
    assert round(free["before"] - free["after"], 2) == round((32 * GiB + 8 * 1024**2) / GiB, 2)

    restored = ok(await call(session, "proxmox_backup_restore", volid=volid, storage="local",
                             start=True))  # fmt: skip
    assert (restored["vmid"], restored["node"], restored["type"]) == (108, "pve1", "qemu")
    assert (restored["exitstatus"], restored["guest_status"]) == ("OK", "running")
    guest = ok(await call(session, "proxmox_guest_get", vmid=108))
    original = session.sim.state.guests[101].config
    assert guest["name"] == "web02"
    config = session.sim.state.guests[108].config
    assert (config["memory"], config["cores"], config["bios"]) == (
        original["memory"], original["cores"], original["bios"]
    )  # fmt: skip
    assert config["scsi0"] == "local:108/vm-108-disk-1.qcow2,iothread=1,size=32G"
    assert config["net0"] != original["net0"]  # unique (default): a MAC of its own
    assert session.sim.state.volumes.find("pve1", "local:108/vm-108-disk-1.qcow2") is not None


async def test_restore_to_a_vmid_in_use_names_restore_over(session: Session) -> None:
    error = refused(await call(session, "proxmox_backup_restore", volid=VM_BACKUP, vmid=101))
    assert (error["code"], error["field"]) == ("already_exists", "vmid")
    assert "proxmox_backup_restore_over" in error["hint"]


async def test_restore_over_says_what_is_lost_and_needs_confirmation(session: Session) -> None:
    ok(await call(session, "proxmox_snapshot_create", vmid=101, snapname="before"))
    ask = refused(await call(session, "proxmox_backup_restore_over", vmid=101, volid=VM_BACKUP,
                             storage="local"))  # fmt: skip
    assert ask["code"] == "confirmation_required", ask
    plan = ask["details"]["plan"]
    lost = {c["field"]: c for c in plan["changes"]}
    assert lost["scsi0 local-lvm:vm-101-disk-0"]["before"] == "32.0 GiB"
    assert lost["snapshots"]["before"] == ["before"]
    assert lost["config"]["before"]["name"] == "web02"
    assert any("cannot be undone" in w for w in plan["warnings"])
    assert plan["calls"][0]["params"]["force"] == 1
    assert session.sim.state.volumes.find("pve1", "local-lvm:vm-101-disk-0") is not None

    token = ask["details"]["confirm_token"]
    result = ok(await call(session, "proxmox_backup_restore_over", vmid=101, volid=VM_BACKUP,
                           storage="local", confirm_token=token))  # fmt: skip
    assert result["exitstatus"] == "OK"
    guest = session.sim.state.guests[101]
    assert str(guest.config["scsi0"]).startswith("local:101/vm-101-disk-")
    assert guest.snapshots == []
    assert session.sim.state.volumes.find("pve1", "local-lvm:vm-101-disk-0") is None


async def test_restore_over_refuses_a_locked_guest(session: Session) -> None:
    session.sim.state.guests[201].config["lock"] = "backup"
    error = refused(await call(session, "proxmox_backup_restore_over", name="proxy01",
                               volid="nfs-backup:backup/x.tar"))  # fmt: skip
    assert (error["code"], error["field"], error["details"]["lock"]) == (
        "guest_locked", "name", "backup"
    )  # fmt: skip


async def test_a_restore_that_does_not_fit_is_refused_before_sending(session: Session) -> None:
    started = ok(await call(session, "proxmox_backup_start", vmid=104, storage="nfs-backup"))
    (volid,) = started["backups"]
    error = refused(await call(session, "proxmox_backup_restore", volid=volid, node="pve2",
                               storage="local"))  # fmt: skip
    assert (error["code"], error["field"]) == ("storage_full", "storage")
    assert 150 not in session.sim.state.guests and 108 not in session.sim.state.guests


async def test_several_guests_of_one_node_in_one_job(session: Session) -> None:
    plan = ok(await call(session, "proxmox_backup_start", vmids=[105, 104], storage="nfs-backup",
                         mode="stop", dry_run=True))["plan"]  # fmt: skip
    assert "vmid" not in plan["target"]  # policy's rules on vmids fail closed
    assert (plan["target"]["node"], plan["target"]["pool"]) == ("pve2", "prod")
    assert plan["calls"][0]["params"]["vmid"] == "104,105"
    assert any("stop for the backup" in w for w in plan["warnings"])
    started = ok(await call(session, "proxmox_backup_start", vmids=[104, 105],
                            storage="nfs-backup", mode="stop"))  # fmt: skip
    assert started["exitstatus"] == "OK"
    assert [v.split("vzdump-qemu-")[1][:3] for v in started["backups"]] == ["104", "105"]
    for vmid in (104, 105):  # stopped for the backup, running again after it
        assert session.sim.state.guests[vmid].status == "running"


async def test_a_guest_that_fails_fails_the_job_and_the_others_are_kept(
    session: Session,
) -> None:
    guests = session.sim.state.guests  # one job needs one policy target: the same tags
    guests[107].config["tags"] = guests[106].config.get("tags", "")
    error = refused(await call(session, "proxmox_backup_start", vmids=[106, 107],
                               storage="local", compress="none"))  # fmt: skip
    assert (error["code"], error["details"]["exitstatus"]) == ("task_failed", "job errors")
    assert "proxmox_task_log" in error["hint"]
    listed = ok(await call(session, "proxmox_backup_list", node="pve3", storage="local"))
    assert [b["vmid"] for b in listed["backups"]] == [107]  # 106's did not fit


async def test_the_default_backup_storage_comes_from_the_config(
    own_sim: SimulatorHandle, audit_path: Path
) -> None:
    cluster = cluster_for(own_sim, default_backup_storage="nfs-backup")
    gateway = make_gateway({"demo": cluster}, audit_path)
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            result = await client.call_tool("proxmox_backup_start", {"name": "dns01"})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            assert result.structured_content["guest_status"] == "running"
    finally:
        await gateway.aclose()
    intent = next(r for r in read_audit(audit_path) if r.get("phase") == "intent")
    (sent,) = intent["where"]["target"]["calls"]
    assert sent["path"] == "/nodes/pve1/vzdump"
    assert sent["params"] == {"vmid": "200", "storage": "nfs-backup", "mode": "snapshot",
                              "compress": "zstd"}  # fmt: skip


async def test_a_restored_guest_migrates_and_is_deleted_like_any_other(session: Session) -> None:
    restored = ok(await call(session, "proxmox_backup_restore", volid=VM_BACKUP, vmid=150))
    assert restored["exitstatus"] == "OK"
    moved = ok(await call(session, "proxmox_guest_migrate", vmid=150, target="pve2"))
    assert (moved["exitstatus"], moved["node"]) == ("OK", "pve2")
    assert session.sim.state.volumes.find("pve2", "local-lvm:vm-150-disk-1") is not None
    ask = refused(await call(session, "proxmox_guest_delete", vmid=150))
    token = ask["details"]["confirm_token"]
    deleted = ok(await call(session, "proxmox_guest_delete", vmid=150, confirm_token=token))
    assert deleted["exitstatus"] == "OK"
    assert session.sim.state.find_guest(150) is None
    assert session.sim.state.volumes.find("pve2", "local-lvm:vm-150-disk-1") is None


async def test_a_guest_locked_by_another_task_is_refused_before_sending(
    session: Session,
) -> None:
    session.sim.state.guests[101].config["lock"] = "snapshot"
    error = refused(await call(session, "proxmox_backup_start", vmid=101, storage="local"))
    assert (error["code"], error["field"]) == ("guest_locked", "vmid")
    error = refused(await call(session, "proxmox_backup_start", vmids=[100, 101],
                               storage="local"))  # fmt: skip
    assert (error["code"], error["field"]) == ("guest_locked", "vmids")
