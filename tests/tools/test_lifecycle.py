"""Create and delete tools end to end: the MCP SDK client, the gateway, a fresh simulator.

The declared examples and rejects run in test_examples.py; these are what one call
cannot show there: the plan's resulting config and free space, the state after a create
that starts the guest, a container password that never leaves the gateway, what a delete
says is lost and what it leaves behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway import leftovers
from pvemcp.gateway.plan import ApiCall
from pvemcp.proxmox.errors import TaskFailed
from tests.tools.calls import call as _call
from tests.tools.calls import ok as _ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
SECRET = "Pw-never-shown-4711"


async def test_vm_create_plans_the_config_and_space_then_starts_it(session: Session) -> None:
    arguments: dict[str, Any] = {
        "vmid": 150, "node": "pve1", "name": "web03", "cores": 2, "memory_mib": 2048,
        "disks": [{"storage": "local-lvm", "size_gib": 32}, {"size_gib": 4, "bus": "virtio",
                                                             "storage": "local"}],
        "nics": [{"bridge": "vmbr0", "vlan": 20}], "cloudinit": True, "start": True,
        "iso": "local:iso/debian-12.9.0-amd64-netinst.iso", "tags": ["web"], "pool": "dev",
    }  # fmt: skip
    plan = _ok(await _call(session, "proxmox_vm_create", **arguments, dry_run=True))
    changes = {c["field"]: c for c in plan["plan"]["changes"]}
    assert changes["scsi0"]["after"] == "local-lvm:32"
    assert changes["net0"]["after"] == "virtio,bridge=vmbr0,tag=20"
    assert changes["ide0"]["after"] == "local-lvm:cloudinit"
    free = changes["local-lvm free GiB"]
    assert round(free["before"] - free["after"], 1) == 32
    assert session.sim.state.find_guest(150) is None  # a dry run sends nothing

    result = _ok(await _call(session, "proxmox_vm_create", **arguments))
    assert (result["vmid"], result["node"], result["guest_status"]) == (150, "pve1", "running")
    guest = session.sim.state.find_guest(150)
    assert guest is not None and guest.pool == "dev"
    assert guest.config["scsi0"] == "local-lvm:vm-150-disk-0,size=32G"
    assert guest.config["virtio0"] == "local:150/vm-150-disk-0.qcow2,size=4G"
    assert guest.config["boot"] == "order=scsi0"


async def test_vm_create_takes_the_next_free_vmid(session: Session) -> None:
    result = _ok(await _call(session, "proxmox_vm_create", node="pve2"))
    guest = session.sim.state.find_guest(result["vmid"])
    assert guest is not None and guest.node == "pve2" and result["guest_status"] == "stopped"


async def test_vm_create_refusals_name_the_field(session: Session) -> None:
    full = await _call(session, "proxmox_vm_create", node="pve1",
                       disks=[{"storage": "local-lvm", "size_gib": 1000},
                              {"storage": "local-lvm", "size_gib": 1000}])  # fmt: skip
    error = error_of(full)
    assert error is not None
    assert (error["code"], error["field"]) == ("storage_full", "disks[1].storage")
    bridge = error_of(await _call(session, "proxmox_vm_create", node="pve1",
                                  nics=[{"bridge": "vmbr0; rm"}]))  # fmt: skip
    assert bridge is not None and bridge["code"] == "invalid_argument"
    assert "bridge" in bridge["field"]
    unknown = error_of(await _call(session, "proxmox_vm_create", node="pve1",
                                   nics=[{"bridge": "vmbr0"}, {"bridge": "vmbr9"}]))  # fmt: skip
    assert unknown is not None
    assert (unknown["code"], unknown["field"]) == ("not_found", "nics[1].bridge")
    assert "vmbr0, vmbr1" in unknown["hint"]
    unset = error_of(await _call(session, "proxmox_vm_create", node="pve1",
                                 disks=[{"size_gib": 1}]))  # fmt: skip
    assert unset is not None and (unset["code"], unset["field"]) == ("storage_required", "storage")


async def test_ct_password_is_a_secret_reference_never_shown(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVEMCP_GUEST_SECRET_CT_ROOT", SECRET)
    arguments: dict[str, Any] = {
        "vmid": 260, "node": "pve1", "hostname": "db03", "template": TEMPLATE,
        "rootfs_storage": "local-lvm", "rootfs_gib": 4, "password_secret": "ct-root",
        "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG test"], "features": ["nesting"],
        "nameserver": "192.0.2.53",
    }  # fmt: skip
    plan = await _call(session, "proxmox_ct_create", **arguments, dry_run=True)
    assert SECRET not in str(plan.model_dump())
    result = await _call(session, "proxmox_ct_create", **arguments)
    assert _ok(result)["guest_status"] == "stopped"
    assert SECRET not in str(result.model_dump())
    assert SECRET not in (tmp_path / "audit.jsonl").read_text()
    guest = session.sim.state.find_guest(260)
    assert guest is not None
    assert (guest.config["unprivileged"], guest.config["features"]) == (1, "nesting=1")
    assert guest.config["rootfs"] == "local-lvm:vm-260-disk-0,size=4G"


async def test_ct_create_refuses_an_unknown_template(session: Session) -> None:
    error = error_of(await _call(session, "proxmox_ct_create", node="pve1",
                                 template="local:vztmpl/nope.tar.zst"))  # fmt: skip
    assert error is not None and (error["code"], error["field"]) == ("not_found", "template")


async def test_delete_refuses_a_running_guest(session: Session) -> None:
    error = error_of(await _call(session, "proxmox_guest_delete", name="web01"))
    assert error is not None
    assert (error["code"], error["field"]) == ("guest_running", "name")
    assert "shut it down" in error["hint"].lower()


async def test_delete_says_what_is_lost_and_frees_it(session: Session) -> None:
    ask = error_of(await _call(session, "proxmox_guest_delete", vmid=107))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    plan = ask["details"]["plan"]
    lost = {c["field"]: c["before"] for c in plan["changes"]}
    assert lost["scsi0 local-lvm:vm-107-disk-0"] == "40.0 GiB"
    assert any("backups" in w and "cannot be undone" in w for w in plan["warnings"])
    token = ask["details"]["confirm_token"]
    result = _ok(await _call(session, "proxmox_guest_delete", vmid=107, confirm_token=token))
    assert result["exitstatus"] == "OK"
    state = session.sim.state
    assert state.find_guest(107) is None
    assert state.volumes.find("pve3", "local-lvm:vm-107-disk-0") is None


# --- a create whose task fails: what it left behind -----------------------------------

_READ_ONLY = (
    "unable to create image: qemu-img: /var/lib/vz/images/{vmid}/vm-{vmid}-disk-0.qcow2: "
    "Could not create: Read-only file system"
)
_IN_USE = "lvremove 'pve/vm-{vmid}-disk-0' error:   Logical volume pve/vm-{vmid}-disk-0 in use."


def _create_two_disks(vmid: int) -> dict[str, Any]:
    """scsi0 on local-lvm is allocated first, then virtio0 on local (qemu-server's
    create_disks goes through the drives in order)."""
    return {"vmid": vmid, "node": "pve1", "disks": [
        {"storage": "local-lvm", "size_gib": 1}, {"storage": "local", "size_gib": 1,
                                                  "bus": "virtio"}]}  # fmt: skip


async def test_a_failed_create_that_pve_cleaned_up_says_nothing_was_left(
    session: Session,
) -> None:
    # The second disk cannot be made after the first was: PVE frees the first again.
    volumes = session.sim.state.volumes
    volumes.faults["local", "alloc"] = _READ_ONLY.format(vmid=151)
    error = error_of(await _call(session, "proxmox_vm_create", **_create_two_disks(151)))
    assert error is not None and error["code"] == "task_failed", error
    assert error["message"].startswith("VM 151 was not created: unable to create VM 151 - ")
    assert "Nothing was left behind" in error["message"]
    assert error["details"]["left_behind"] == {"config": False, "volumes": []}
    assert error["details"]["upid"].startswith("UPID:pve1:")
    assert volumes.find("pve1", "local-lvm:vm-151-disk-0") is None


async def test_a_failed_create_whose_cleanup_failed_names_what_is_left(
    session: Session,
) -> None:
    # PVE's cleanup is `eval { vdisk_free(...) }; warn $@`: a volume the storage cannot
    # free stays, and only the task log says so. The tool finds it and says how to free it.
    volumes = session.sim.state.volumes
    volumes.faults["local", "alloc"] = _READ_ONLY.format(vmid=152)
    volumes.faults["local-lvm", "free"] = _IN_USE.format(vmid=152)
    error = error_of(await _call(session, "proxmox_vm_create", **_create_two_disks(152)))
    assert error is not None and error["code"] == "task_failed", error
    assert "Left behind: volumes local-lvm:vm-152-disk-0." in error["message"]
    assert error["details"]["left_behind"] == {
        "config": False, "volumes": ["local-lvm:vm-152-disk-0"]}  # fmt: skip
    assert "pvesm free" in error["hint"] and "pve1" in error["hint"]
    assert volumes.find("pve1", "local-lvm:vm-152-disk-0") is not None
    assert session.sim.state.find_guest(152) is None


async def test_a_failed_ct_create_is_checked_too(session: Session) -> None:
    session.sim.state.volumes.faults["local-lvm", "alloc"] = "lvcreate 'pve/vm-253-disk-0' error"
    error = error_of(await _call(session, "proxmox_ct_create", vmid=253, node="pve1",
                                 template=TEMPLATE, rootfs_storage="local-lvm"))  # fmt: skip
    assert error is not None and error["code"] == "task_failed", error
    assert error["message"].startswith("CT 253 was not created: unable to create CT 253 - ")
    assert error["details"]["left_behind"] == {"config": False, "volumes": []}


async def test_a_failed_clone_says_what_it_left(session: Session) -> None:
    session.sim.state.volumes.faults["local", "alloc"] = _READ_ONLY.format(vmid=153)
    error = error_of(await _call(session, "proxmox_guest_clone", vmid=101, newid=153,
                                 storage="local"))  # fmt: skip
    assert error is not None and error["code"] == "task_failed", error
    assert error["message"].startswith("VM 153 was not created: clone failed: ")
    assert error["details"]["left_behind"] == {"config": False, "volumes": []}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ApiCall.to("POST", "/nodes/{node}/qemu", params={"vmid": 150}, task=True, node="pve1"),
         ("pve1", "qemu", 150)),
        (ApiCall.to("POST", "/nodes/{node}/lxc", params={"vmid": 250, "restore": 1}, task=True,
                    node="pve2"), ("pve2", "lxc", 250)),
        # A clone's worker runs (and allocates) on the source's node, whatever its target.
        (ApiCall.to("POST", "/nodes/{node}/qemu/{vmid}/clone",
                    params={"newid": 160, "target": "pve2"}, task=True, node="pve1", vmid=9000),
         ("pve1", "qemu", 160)),
        (ApiCall.to("POST", "/nodes/{node}/qemu/{vmid}/status/start", task=True, node="pve1",
                    vmid=100), None),
        (ApiCall.to("DELETE", "/nodes/{node}/qemu/{vmid}", task=True, node="pve1", vmid=100),
         None),
    ],
)  # fmt: skip
def test_the_calls_that_create_a_guest(call: ApiCall, expected: tuple[Any, ...] | None) -> None:
    assert leftovers.created_guest(call) == expected


def _failed(vmid: int, exitstatus: str) -> TaskFailed:
    upid = f"UPID:pve1:00001234:00005678:6A000000:qmrestore:{vmid}:root@pam:"
    return TaskFailed(f"task failed: {exitstatus}", upid=upid, exitstatus=exitstatus)


def test_a_config_left_behind_is_deleted_with_the_delete_tool_after_unlocking() -> None:
    # A failed restore keeps its config (qemu-server: "VM 170 state is NOT cleaned up");
    # the simulator's restore checks room first and leaves nothing, so this is the words.
    guest = leftovers.CreatedGuest("pve1", "qemu", 170)
    left = leftovers.LeftBehind("pve1", "create", ("local-lvm:vm-170-disk-0",))
    failure = leftovers._explained(_failed(170, "command 'zstd' failed: exit code 1"), guest, left)
    assert failure.message == (
        "VM 170 was not created: command 'zstd' failed: exit code 1. Left behind: its config "
        "on pve1, locked (create) and volumes local-lvm:vm-170-disk-0."
    )
    assert failure.hint is not None
    assert failure.hint.startswith("To remove it, unlock it first on pve1 (`qm unlock 170`)")
    assert "proxmox_guest_delete with vmid 170" in failure.hint
    assert failure.details["left_behind"] == {
        "config": True, "config_node": "pve1", "lock": "create",
        "volumes": ["local-lvm:vm-170-disk-0"]}  # fmt: skip


def test_a_vmid_taken_meanwhile_is_not_reported_as_left_behind() -> None:
    guest = leftovers.CreatedGuest("pve1", "qemu", 171)
    taken = leftovers._vmid_taken(_failed(171, "VM 171 already exists on node 'pve2'"), guest)
    assert taken is not None and "left_behind" not in taken.details
    assert taken.hint is not None and "proxmox_next_vmid" in taken.hint
    assert leftovers._vmid_taken(_failed(171, "unable to create VM 171 - x"), guest) is None


async def test_a_failed_restore_is_checked_like_a_create(session: Session) -> None:
    # proxmox_backup_restore is a create with `archive` on the default runner.
    session.sim.state.volumes.faults["local", "alloc"] = _READ_ONLY.format(vmid=154)
    error = error_of(await _call(session, "proxmox_backup_restore", vmid=154, storage="local",
                                 volid="nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02"
                                       ".vma.zst"))  # fmt: skip
    assert error is not None and error["code"] == "task_failed", error
    assert error["message"].startswith("VM 154 was not created: ")
    assert error["details"]["left_behind"] == {"config": False, "volumes": []}
    assert session.sim.state.find_guest(154) is None
