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
