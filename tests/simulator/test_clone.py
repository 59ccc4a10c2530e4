"""Cloning over HTTPS: full and linked clones, their volumes, locks and PVE's refusals."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle
from pvemcp.simulator.clone import base_in_use

from .conftest import FakeClock, client_for, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio


async def _volids(client: httpx2.AsyncClient, node: str, storage: str, vmid: int) -> list[str]:
    items = await get_data(client, f"/nodes/{node}/storage/{storage}/content", vmid=str(vmid))
    return [item["volid"] for item in items]


async def _message(client: httpx2.AsyncClient, path: str, **params: Any) -> str:
    response = await client.post(path, data=params)
    assert response.status_code == 500, response.text
    message: str = response.json()["message"]
    return message


async def test_a_linked_clone_of_the_template_references_its_base(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve2/qemu/9000/clone", newid="120", name="web03")
    assert upid.split(":")[5] == "qmclone"
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    config = await get_data(fresh_client, "/nodes/pve2/qemu/120/config")
    assert config["name"] == "web03" and "template" not in config and "lock" not in config
    assert config["scsi0"] == "local-lvm:vm-120-disk-0,iothread=1,size=8G"
    assert config["ide2"] == "local-lvm:vm-120-cloudinit,media=cdrom"
    source = await get_data(fresh_client, "/nodes/pve2/qemu/9000/config")
    assert config["net0"] != source["net0"] and config["smbios1"] != source["smbios1"]
    items = await get_data(fresh_client, "/nodes/pve2/storage/local-lvm/content", vmid="120")
    # A linked clone shares its base's blocks: it takes no space of its own yet.
    assert [(i["volid"], i["size"], i["used"]) for i in items] == [
        ("local-lvm:vm-120-disk-0", 8 << 30, 0)
    ]


async def test_a_full_clone_copies_each_disk_and_its_size(fresh_client: httpx2.AsyncClient) -> None:
    before = await get_data(fresh_client, "/nodes/pve1/storage/local/status")
    upid = await post_upid(
        fresh_client, "/nodes/pve1/qemu/101/clone", newid="121", storage="local", pool="dev"
    )
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    after = await get_data(fresh_client, "/nodes/pve1/storage/local/status")
    # 101 has a 32 GiB disk, a 4 MiB EFI disk and a 4 MiB TPM state.
    assert after["used"] - before["used"] == (32 << 30) + (8 << 20)
    assert await _volids(fresh_client, "pve1", "local", 121) == [
        "local:121/vm-121-disk-0.qcow2",
        "local:121/vm-121-disk-1.qcow2",
        "local:121/vm-121-disk-2.qcow2",
    ]
    config = await get_data(fresh_client, "/nodes/pve1/qemu/121/config")
    assert config["name"] == "Copy-of-VM-web02"
    rows = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert next(r for r in rows if r["vmid"] == 121)["pool"] == "dev"


async def test_refusals_in_pves_words(client: httpx2.AsyncClient) -> None:
    path = "/nodes/pve1/qemu/101/clone"
    assert await _message(client, path, newid="130", full="0") == (
        "Linked clone feature is not supported for 'local-lvm:vm-101-disk-1' (efidisk0)\n"
    )
    template = "/nodes/pve2/qemu/9000/clone"
    assert await _message(client, template, newid="130", full="0", storage="local") == (
        "parameter 'storage' not allowed for linked clones\n"
    )
    assert await _message(client, path, newid="130", pool="nope") == (
        "pool 'nope' does not exist\n"
    )
    assert await _message(client, path, newid="130", target="pve2") == (
        "can't clone VM to node 'pve2' (VM uses local storage)\n"
    )
    assert await _message(client, path, newid="130", target="pve2", storage="local") == (
        "can't clone to non-shared storage 'local'\n"
    )
    assert await _message(client, path, newid="130", snapname="nope") == (
        "snapshot 'nope' does not exist\n"
    )
    assert await _message(client, path, newid="100") == (
        "unable to create VM 100: config file already exists\n"
    )
    assert await _message(client, "/nodes/pve1/lxc/201/clone", newid="100") == (
        "VM 100 already exists on node 'pve1'\n"
    )
    assert await _message(client, "/nodes/pve1/lxc/200/clone", newid="130") == (
        "Full clone of a running container is only possible from a snapshot\n"
    )
    assert await _message(client, "/nodes/pve1/lxc/201/clone", newid="130", full="0") == (
        "Linked clone feature for 'local-lvm:vm-201-disk-0' is not available\n"
    )
    bad = await client.post(path, data={"newid": "130", "storage": "nfs-backup"})
    assert bad.status_code == 400
    assert bad.json()["errors"] == {"storage": "storage 'nfs-backup' does not support vm images"}


async def test_a_full_storage_fails_the_task_and_leaves_nothing(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve3/qemu/106/clone", newid="122", storage="local")
    status = await task_status(fresh_client, upid)
    assert status["exitstatus"].startswith("clone failed: not enough free space (")
    assert await _volids(fresh_client, "pve3", "local", 122) == []
    assert fresh_sim.state.find_guest(122) is None
    rows = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert 122 not in [r["vmid"] for r in rows]


async def test_the_clone_and_a_containers_source_are_locked_while_it_runs(
    timed_sim: SimulatorHandle, clock: FakeClock
) -> None:
    async with client_for(timed_sim) as client:
        upid = await post_upid(client, "/nodes/pve1/lxc/201/clone", newid="123", hostname="p2")
        rows = {r["vmid"]: r for r in await get_data(client, "/cluster/resources", type="vm")}
        assert rows[123].get("lock") == "create" and rows[201].get("lock") == "disk"
        again = await _message(client, "/nodes/pve1/qemu/101/clone", newid="123")
        assert again == "unable to create VM 123: config file already exists\n"
        busy = await _message(client, "/nodes/pve1/lxc/201/clone", newid="124")
        assert busy == "CT is locked (disk)\n"
        clock.advance(600)
        assert (await task_status(client, upid))["exitstatus"] == "OK"
        config = await get_data(client, "/nodes/pve1/lxc/123/config")
        assert config["hostname"] == "p2" and "lock" not in config
        source = await get_data(client, "/nodes/pve1/lxc/201/config")
        assert "lock" not in source


async def test_a_linked_clone_pins_its_base_volume(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    client = fresh_client
    full = await post_upid(client, "/nodes/pve1/qemu/102/clone", newid="125", storage="local")
    assert (await task_status(client, full))["exitstatus"] == "OK"
    made = await post_upid(client, "/nodes/pve1/qemu/125/template", disk="scsi0")
    assert (await task_status(client, made))["exitstatus"] == "OK"
    base = "local:125/base-125-disk-0.qcow2"
    assert base in await _volids(client, "pve1", "local", 125)
    linked = await post_upid(client, "/nodes/pve1/qemu/125/clone", newid="126")
    assert (await task_status(client, linked))["exitstatus"] == "OK"
    assert await _volids(client, "pve1", "local", 126) == [
        "local:125/base-125-disk-0.qcow2/126/vm-126-disk-0.qcow2"
    ]
    assert base_in_use(fresh_sim.state, base) == [126]
    # LVM-thin: a thin snapshot does not need its origin (pve-storage allows the delete).
    lvm = await post_upid(client, "/nodes/pve2/qemu/9000/clone", newid="127")
    assert (await task_status(client, lvm))["exitstatus"] == "OK"
    assert base_in_use(fresh_sim.state, "local-lvm:base-9000-disk-0") == []


async def test_a_vm_clone_locks_the_new_vm_not_its_source(
    timed_sim: SimulatorHandle, clock: FakeClock
) -> None:
    """qemu-server writes the new VM's config as `lock: clone` first; the source keeps
    only a config flock (no `lock` property), so its config can still be read and set."""
    async with client_for(timed_sim) as client:
        upid = await post_upid(client, "/nodes/pve1/qemu/101/clone", newid="128")
        rows = {r["vmid"]: r for r in await get_data(client, "/cluster/resources", type="vm")}
        assert rows[128].get("lock") == "clone" and "lock" not in rows[101]
        locked = await client.put("/nodes/pve1/qemu/128/config", data={"memory": "1024"})
        assert locked.status_code == 500
        assert locked.json()["message"] == "VM is locked (clone)\n"
        clock.advance(600)
        assert (await task_status(client, upid))["exitstatus"] == "OK"
        config = await get_data(client, "/nodes/pve1/qemu/128/config")
        # Drives are cloned in key order (`sort keys %$drives`): efidisk0 takes disk-0.
        assert "lock" not in config and config["scsi0"].startswith("local-lvm:vm-128-disk-1,")
