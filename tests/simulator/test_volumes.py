"""Disks as volumes on storages over HTTPS: allocation, free space, resize, move, unlink."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle

from .conftest import get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

VM = "/nodes/pve3/qemu/107"  # stopped, scsi0 is local-lvm:vm-107-disk-0 (40G)
CT = "/nodes/pve1/lxc/201"  # stopped, rootfs is local-lvm:vm-201-disk-0 (8G)
RUNNING_CT = "/nodes/pve1/lxc/200"
GiB = 1024**3


async def _status(client: httpx2.AsyncClient, node: str, storage: str) -> dict[str, Any]:
    status: dict[str, Any] = await get_data(client, f"/nodes/{node}/storage/{storage}/status")
    return status


async def _volids(client: httpx2.AsyncClient, node: str, storage: str, vmid: int) -> set[str]:
    items = await get_data(client, f"/nodes/{node}/storage/{storage}/content", vmid=vmid)
    return {item["volid"] for item in items}


async def _config(client: httpx2.AsyncClient, path: str) -> dict[str, Any]:
    config: dict[str, Any] = await get_data(client, f"{path}/config")
    return config


async def _error(response: httpx2.Response, status: int = 500) -> str:
    assert response.status_code == status, response.text
    return response.reason_phrase


async def test_seeded_disks_are_volumes_with_their_sizes(client: httpx2.AsyncClient) -> None:
    items = await get_data(client, "/nodes/pve3/storage/local-lvm/content", vmid=107)
    assert [(i["volid"], i["size"], i["format"], i["content"]) for i in items] == [
        ("local-lvm:vm-107-disk-0", 40 * GiB, "raw", "images")
    ]
    ct = await get_data(client, "/nodes/pve1/storage/local-lvm/content", content="rootdir")
    assert {i["vmid"] for i in ct} == {200, 201}
    status = await _status(client, "pve3", "local-lvm")
    assert status["used"] + status["avail"] == status["total"]


async def test_a_new_disk_is_allocated_and_takes_free_space(
    fresh_client: httpx2.AsyncClient,
) -> None:
    before = await _status(fresh_client, "pve3", "local-lvm")
    response = await fresh_client.put(
        f"{VM}/config", data={"scsi1": "local-lvm:8,discard=on", "scsi2": "local:2"}
    )
    assert response.status_code == 200, response.text
    config = await _config(fresh_client, VM)
    assert config["scsi1"] == "local-lvm:vm-107-disk-1,discard=on,size=8G"
    # A directory storage names the file by vmid and format (pve-storage Plugin.pm).
    assert config["scsi2"] == "local:107/vm-107-disk-0.qcow2,size=2G"
    after = await _status(fresh_client, "pve3", "local-lvm")
    assert after["avail"] == before["avail"] - 8 * GiB
    assert await _volids(fresh_client, "pve3", "local", 107) == {"local:107/vm-107-disk-0.qcow2"}


async def test_a_full_storage_refuses_and_leaves_nothing(
    fresh_client: httpx2.AsyncClient,
) -> None:
    free = (await _status(fresh_client, "pve3", "local"))["avail"]
    # The first disk fits; the second does not: neither is left behind.
    response = await fresh_client.put(
        f"{VM}/config", data={"scsi1": "local:1", "scsi2": "local:500"}
    )
    assert (await _error(response)).startswith(f"not enough free space ({free - GiB} <")
    assert await _volids(fresh_client, "pve3", "local", 107) == set()
    assert "scsi1" not in await _config(fresh_client, VM)


async def test_a_storage_without_images_is_refused(fresh_client: httpx2.AsyncClient) -> None:
    response = await fresh_client.put(f"{VM}/config", data={"scsi1": "nfs-backup:1"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == {
        "storage": "storage 'nfs-backup' does not support vm images"
    }


async def test_resize_grows_and_refuses_to_shrink(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid_put(fresh_client, f"{VM}/resize", disk="scsi0", size="+2G")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert "size=42G" in (await _config(fresh_client, VM))["scsi0"]
    upid = await post_upid_put(fresh_client, f"{VM}/resize", disk="scsi0", size="10G")
    # qemu-server checks in the worker: the task fails with PVE's words.
    assert (await task_status(fresh_client, upid))["exitstatus"] == (
        "shrinking disks is not supported"
    )
    # pve-container checks before forking: the call itself fails.
    response = await fresh_client.put(f"{CT}/resize", data={"disk": "rootfs", "size": "4G"})
    assert await _error(response) == "unable to shrink disk size"
    response = await fresh_client.put(f"{CT}/resize", data={"disk": "mp3", "size": "+1G"})
    assert await _error(response) == "disk 'mp3' does not exist"


async def post_upid_put(client: httpx2.AsyncClient, path: str, **params: Any) -> str:
    """PUT `path` and return the task's UPID (resize answers one)."""
    response = await client.put(path, data=params)
    assert response.status_code == 200, response.text
    upid = response.json()["data"]
    assert isinstance(upid, str)
    return upid


async def test_a_locked_guest_is_not_resized(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    guest = fresh_sim.state.find_guest(201)
    assert guest is not None
    guest.config["lock"] = "backup"
    response = await fresh_client.put(f"{CT}/resize", data={"disk": "rootfs", "size": "+1G"})
    assert await _error(response) == "CT is locked (backup)"


async def test_a_deleted_disk_becomes_unused_then_is_freed(
    fresh_client: httpx2.AsyncClient,
) -> None:
    await fresh_client.put(f"{VM}/config", data={"scsi1": "local-lvm:4"})
    response = await fresh_client.put(f"{VM}/config", data={"delete": "scsi1"})
    assert response.status_code == 200, response.text
    config = await _config(fresh_client, VM)
    assert "scsi1" not in config
    assert config["unused0"] == "local-lvm:vm-107-disk-1"
    assert "local-lvm:vm-107-disk-1" in await _volids(fresh_client, "pve3", "local-lvm", 107)
    response = await fresh_client.put(f"{VM}/unlink", data={"idlist": "unused0"})
    assert response.status_code == 200, response.text
    assert "unused0" not in await _config(fresh_client, VM)
    assert await _volids(fresh_client, "pve3", "local-lvm", 107) == {"local-lvm:vm-107-disk-0"}


async def test_unlink_with_force_frees_the_volume(fresh_client: httpx2.AsyncClient) -> None:
    await fresh_client.put(f"{VM}/config", data={"scsi1": "local-lvm:4"})
    response = await fresh_client.put(f"{VM}/unlink", data={"idlist": "scsi1", "force": 1})
    assert response.status_code == 200, response.text
    config = await _config(fresh_client, VM)
    assert "scsi1" not in config
    assert "unused0" not in config
    assert await _volids(fresh_client, "pve3", "local-lvm", 107) == {"local-lvm:vm-107-disk-0"}


async def test_move_disk_keeps_or_deletes_the_source(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, f"{VM}/move_disk", disk="scsi0", storage="local")
    status = await task_status(fresh_client, upid)
    assert (status["type"], status["exitstatus"]) == ("qmmove", "OK")
    config = await _config(fresh_client, VM)
    assert config["scsi0"].startswith("local:107/vm-107-disk-0.qcow2,")
    assert config["unused0"] == "local-lvm:vm-107-disk-0"
    log = await get_data(fresh_client, f"/nodes/pve3/tasks/{upid}/log")
    assert log[0]["t"] == (
        "copying volume 'local-lvm:vm-107-disk-0' from current storage 'local-lvm' to "
        "target storage 'local'"
    )
    upid = await post_upid(
        fresh_client, f"{VM}/move_disk", disk="scsi0", storage="local-lvm", delete=1
    )
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert await _volids(fresh_client, "pve3", "local", 107) == set()
    response = await fresh_client.post(
        f"{VM}/move_disk", data={"disk": "scsi0", "storage": "local-lvm"}
    )
    assert await _error(response) == "you can't move to the same storage with same format"


async def test_move_volume_of_a_container(fresh_client: httpx2.AsyncClient) -> None:
    response = await fresh_client.post(
        f"{RUNNING_CT}/move_volume", data={"volume": "rootfs", "storage": "local"}
    )
    assert await _error(response) == "cannot move volumes of a running container"
    upid = await post_upid(
        fresh_client, f"{CT}/move_volume", volume="rootfs", storage="local", delete=1
    )
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    config = await _config(fresh_client, CT)
    assert config["rootfs"].startswith("local:201/vm-201-disk-0.raw,")
    assert "lock" not in config
    assert "unused0" not in config


async def test_a_pending_disk_deletion_detaches_at_the_next_start(
    fresh_client: httpx2.AsyncClient,
) -> None:
    # SATA is not hotplugged: on a running VM both the new disk and its deletion wait.
    running = "/nodes/pve1/qemu/100"
    response = await fresh_client.put(f"{running}/config", data={"sata1": "local-lvm:1"})
    assert response.status_code == 200, response.text
    for action in ("stop", "start"):
        await post_upid(fresh_client, f"{running}/status/{action}")
    assert (await _config(fresh_client, running))["sata1"].endswith(",size=1G")
    response = await fresh_client.put(f"{running}/config", data={"delete": "sata1"})
    assert response.status_code == 200, response.text
    assert "sata1" in await get_data(fresh_client, f"{running}/config", current=1)
    for action in ("stop", "start"):
        await post_upid(fresh_client, f"{running}/status/{action}")
    config = await _config(fresh_client, running)
    assert "sata1" not in config
    assert config["unused0"].startswith("local-lvm:vm-100-disk-")
