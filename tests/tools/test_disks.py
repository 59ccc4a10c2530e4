"""The disk tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are what one call
cannot show: the plan's free space and slot, what a resize, a move and a detach leave on
the storages, the confirmation of a delete, and a guest locked by another task.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call as _call
from tests.tools.calls import ok as _ok
from tests.tools.calls import refused as _refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio

VM = 101  # pve1, web02, stopped: scsi0 local-lvm 32G, efidisk0, tpmstate0
CT = 201  # pve1, proxy01, stopped: rootfs local-lvm 8G
RUNNING_VM = 100  # pve1, web01


async def _config(session: Session, vmid: int) -> dict[str, Any]:
    guest = _ok(await _call(session, "proxmox_guest_get", vmid=vmid))
    config: dict[str, Any] = guest["config"]
    return config


async def test_add_plans_the_next_slot_and_the_free_space(session: Session) -> None:
    plan = _ok(
        await _call(
            session, "proxmox_disk_add", vmid=VM, size_gib=8, storage="local-lvm", dry_run=True
        )
    )["plan"]
    (call,) = plan["calls"]
    assert (call["method"], call["path"]) == ("PUT", "/nodes/pve1/qemu/101/config")
    assert call["params"]["scsi1"] == "local-lvm:8"
    assert "digest" in call["params"]
    free = next(c for c in plan["changes"] if c["field"] == "local-lvm free GiB")
    assert free["before"] - free["after"] == 8
    assert session.writes() == []
    _ok(await _call(session, "proxmox_disk_add", vmid=VM, size_gib=8, storage="local-lvm"))
    config = await _config(session, VM)
    assert config["scsi1"] == "local-lvm:vm-101-disk-3,size=8G"
    again = _ok(
        await _call(
            session, "proxmox_disk_add", vmid=VM, size_gib=8, storage="local-lvm", dry_run=True
        )
    )["plan"]
    assert free["after"] - next(
        c["after"] for c in again["changes"] if c["field"] == "local-lvm free GiB"
    ) == pytest.approx(8)


async def test_a_sata_disk_waits_for_the_next_start(session: Session) -> None:
    args = {"vmid": RUNNING_VM, "size_gib": 1, "storage": "local-lvm", "bus": "sata"}
    plan = _ok(await _call(session, "proxmox_disk_add", **args, dry_run=True))["plan"]
    assert plan["warnings"] == ["a running VM gets a sata disk at its next start"]
    assert plan["calls"][0]["params"]["sata0"] == "local-lvm:1"


async def test_a_container_mount_point(session: Session) -> None:
    _ok(
        await _call(
            session, "proxmox_disk_add", vmid=CT, size_gib=2, storage="local", mount_path="/srv"
        )
    )
    assert (await _config(session, CT))["mp0"] == "local:201/vm-201-disk-0.raw,mp=/srv,size=2G"
    refused = _refused(
        await _call(session, "proxmox_disk_add", vmid=CT, size_gib=2, storage="local-lvm")
    )
    assert refused["field"] == "mount_path"


async def test_resize_grows_and_says_by_how_much(session: Session) -> None:
    plan = _ok(
        await _call(
            session, "proxmox_disk_resize", vmid=VM, disk="scsi0", size_gib=40, dry_run=True
        )
    )["plan"]
    assert plan["summary"].startswith("grow scsi0 of qemu 101 (web02) by 8.0 GiB")
    assert {"field": "scsi0 GiB", "before": 32.0, "after": 40.0} in plan["changes"]
    done = _ok(await _call(session, "proxmox_disk_resize", vmid=VM, disk="scsi0", size_gib=40))
    assert done["exitstatus"] == "OK" and done["upid"].split(":")[5] == "resize"
    assert "size=40G" in (await _config(session, VM))["scsi0"]
    shrink = _refused(
        await _call(session, "proxmox_disk_resize", vmid=VM, disk="scsi0", size_gib=39)
    )
    assert (shrink["code"], shrink["field"]) == ("invalid_argument", "size_gib")
    assert "cannot shrink" in shrink["message"]
    same = _ok(await _call(session, "proxmox_disk_resize", vmid=VM, disk="scsi0", size_gib=40))
    assert "upid" not in same or same["upid"] is None


async def test_a_full_storage_is_refused_naming_the_size(session: Session) -> None:
    refused = _refused(
        await _call(session, "proxmox_disk_resize", vmid=VM, disk="scsi0", size_gib=100_000)
    )
    assert (refused["code"], refused["field"]) == ("storage_full", "size_gib")
    assert session.writes() == []


async def test_move_keeps_the_source_until_detach_deletes_it(session: Session) -> None:
    plan = _ok(
        await _call(
            session, "proxmox_disk_move", vmid=VM, disk="scsi0", storage="local", dry_run=True
        )
    )["plan"]
    assert any("stays attached as an unusedN" in w for w in plan["warnings"])
    done = _ok(await _call(session, "proxmox_disk_move", vmid=VM, disk="scsi0", storage="local"))
    assert done["exitstatus"] == "OK"
    config = await _config(session, VM)
    assert config["scsi0"].startswith("local:101/vm-101-disk-0.qcow2,")
    assert config["unused0"] == "local-lvm:vm-101-disk-0"
    # Deleting the left-behind source is destructive: a plan to approve first.
    ask = _refused(await _call(session, "proxmox_disk_detach", vmid=VM, disk="unused0"))
    assert ask["code"] == "confirmation_required"
    assert ask["details"]["plan"]["warnings"] == [
        "the data on local-lvm:vm-101-disk-0 (32.0 GiB) is deleted for good: this cannot be undone"
    ]
    token = ask["details"]["confirm_token"]
    _ok(await _call(session, "proxmox_disk_detach", vmid=VM, disk="unused0", confirm_token=token))
    config = await _config(session, VM)
    assert "unused0" not in config
    assert [w for w in session.writes() if w.endswith("/unlink")] == [
        "PUT /nodes/pve1/qemu/101/unlink"
    ]


async def test_detach_keeps_the_volume_as_unused(session: Session) -> None:
    _ok(await _call(session, "proxmox_disk_add", vmid=VM, size_gib=1, storage="local-lvm"))
    ask = _refused(await _call(session, "proxmox_disk_detach", vmid=VM, disk="scsi1"))
    token = ask["details"]["confirm_token"]
    _ok(await _call(session, "proxmox_disk_detach", vmid=VM, disk="scsi1", confirm_token=token))
    config = await _config(session, VM)
    assert "scsi1" not in config
    assert config["unused0"] == "local-lvm:vm-101-disk-3"


async def test_a_container_volume_is_deleted_in_two_steps(session: Session) -> None:
    _ok(
        await _call(
            session, "proxmox_disk_add", vmid=CT, size_gib=1, storage="local-lvm", mount_path="/d"
        )
    )
    args = {"vmid": CT, "disk": "mp0", "delete": True}
    ask = _refused(await _call(session, "proxmox_disk_detach", **args))
    token = ask["details"]["confirm_token"]
    _ok(await _call(session, "proxmox_disk_detach", **args, confirm_token=token))
    config = await _config(session, CT)
    assert not [key for key in config if key.startswith(("mp", "unused"))]


async def test_a_locked_guest_is_refused(session: Session) -> None:
    started = _ok(
        await _call(
            session,
            "proxmox_snapshot_create",
            vmid=RUNNING_VM,
            snapname="ram",
            vmstate=True,
            wait=False,
        )
    )
    assert started["task_status"] == "running"
    refused = _refused(
        await _call(session, "proxmox_disk_add", vmid=RUNNING_VM, size_gib=1, storage="local-lvm")
    )
    assert (refused["code"], refused["field"]) == ("guest_locked", "vmid")
    assert refused["message"].startswith("VM is locked (snapshot): qemu 100 (web01)")


async def test_an_unknown_storage_and_a_missing_default(session: Session) -> None:
    unknown = _refused(
        await _call(session, "proxmox_disk_move", vmid=VM, disk="scsi0", storage="fast-nvme")
    )
    assert (unknown["code"], unknown["field"]) == ("not_found", "storage")
    missing = _refused(await _call(session, "proxmox_disk_add", vmid=VM, size_gib=1))
    assert (missing["code"], missing["field"]) == ("storage_required", "storage")


async def test_move_with_snapshot_first_and_a_rollback_to_it(session: Session) -> None:
    args = {"vmid": VM, "disk": "scsi0", "storage": "local", "snapshot_first": True}
    plan = _ok(await _call(session, "proxmox_disk_move", **args, dry_run=True))["plan"]
    snap, move = plan["calls"]
    name = snap["params"]["snapname"]
    assert snap["path"] == "/nodes/pve1/qemu/101/snapshot" and name.startswith("pre-move-")
    assert move["path"] == "/nodes/pve1/qemu/101/move_disk" and move["params"]["delete"] == 0

    done = _ok(await _call(session, "proxmox_disk_move", **args))
    assert done["snapshot"] == name and done["exitstatus"] == "OK"
    assert session.writes() == [
        "POST /nodes/pve1/qemu/101/snapshot",
        "POST /nodes/pve1/qemu/101/move_disk",
    ]
    config = await _config(session, VM)
    assert config["scsi0"].startswith("local:101/vm-101-disk-0.qcow2,")
    assert config["unused0"] == "local-lvm:vm-101-disk-0"

    # The rollback goes back to the source (which holds the snapshot) and keeps the copy
    # made since as unusedN, as PVE's __snapshot_rollback_get_unused does.
    ask = _refused(await _call(session, "proxmox_snapshot_rollback", vmid=VM, snapname=name))
    token = ask["details"]["confirm_token"]
    rolled = _ok(
        await _call(
            session, "proxmox_snapshot_rollback", vmid=VM, snapname=name, confirm_token=token
        )
    )
    assert rolled["exitstatus"] == "OK"
    config = await _config(session, VM)
    assert config["scsi0"].startswith("local-lvm:vm-101-disk-0,")
    assert "local:101/vm-101-disk-0.qcow2" in config.values()


async def test_move_with_snapshot_first_is_refused_on_a_template(session: Session) -> None:
    refused = _refused(
        await _call(
            session,
            "proxmox_disk_move",
            vmid=9000,
            disk="scsi0",
            storage="local",
            snapshot_first=True,
        )
    )
    assert refused["code"] == "unsupported" and refused["field"] == "snapshot_first"
    assert session.writes() == []
