"""Migration and templates over HTTPS: PVE's refusals, the lock, the guest changing node."""

from __future__ import annotations

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle

from .conftest import FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio


async def _log(client: httpx2.AsyncClient, upid: str) -> list[str]:
    node = upid.split(":")[1]
    return [line["t"] for line in await get_data(client, f"/nodes/{node}/tasks/{upid}/log")]


async def test_the_migrated_guest_answers_on_its_new_node_only(
    fresh_client: httpx2.AsyncClient,
) -> None:
    pre = await get_data(fresh_client, "/nodes/pve1/qemu/101/migrate")
    assert pre["running"] == 0 and pre["allowed_nodes"] == ["pve2", "pve3"]
    assert pre["local_disks"][0] == {
        "volid": "local-lvm:vm-101-disk-0",
        "size": 32 << 30,
        "cdrom": 0,
        "is_unused": 0,
    }

    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/101/migrate", target="pve2")
    assert upid.split(":")[1] == "pve1" and upid.split(":")[5] == "qmigrate"
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    log = await _log(fresh_client, upid)
    assert log[0].endswith("starting migration of VM 101 to node 'pve2' (10.10.10.12)")
    assert log[-2].endswith("migration finished successfully (duration 00:00:04)")

    moved = await get_data(fresh_client, "/nodes/pve2/qemu/101/status/current")
    assert moved["status"] == "stopped"
    gone = await fresh_client.get("/nodes/pve1/qemu/101/status/current")
    assert gone.status_code == 500
    assert gone.json()["message"] == (
        "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist\n"
    )
    rows = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert next(r for r in rows if r["vmid"] == 101)["node"] == "pve2"


async def test_refusals_before_the_fork(fresh_client: httpx2.AsyncClient) -> None:
    local = await fresh_client.post("/nodes/pve1/qemu/101/migrate", data={"target": "pve1"})
    assert local.status_code == 400
    assert local.json()["errors"] == {"target": "target is local node."}
    unknown = await fresh_client.post("/nodes/pve1/lxc/201/migrate", data={"target": "pve9"})
    assert unknown.json()["message"] == "no such cluster node 'pve9'\n"
    running = await fresh_client.post("/nodes/pve1/qemu/100/migrate", data={"target": "pve2"})
    assert running.json()["message"] == "can't migrate running VM without --online\n"
    ct = await fresh_client.post("/nodes/pve1/lxc/200/migrate", data={"target": "pve2"})
    assert ct.json()["message"] == (
        "can't migrate running container without --online or --restart\n"
    )
    storage = await fresh_client.post(
        "/nodes/pve1/qemu/101/migrate", data={"target": "pve2", "targetstorage": "nfs-backup"}
    )
    assert storage.json()["message"] == "storage 'nfs-backup' does not support vm images\n"
    missing = await fresh_client.post(
        "/nodes/pve1/qemu/101/migrate", data={"target": "pve2", "targetstorage": "nope"}
    )
    assert missing.json()["message"] == "storage 'nope' does not exist\n"


async def test_a_running_vm_moves_live_with_its_local_disks(
    fresh_client: httpx2.AsyncClient,
) -> None:
    path = "/nodes/pve1/qemu/102/migrate"
    upid = await post_upid(fresh_client, path, target="pve3", online=1)
    assert (await task_status(fresh_client, upid))["exitstatus"] == "migration aborted"
    assert any(
        line.endswith(
            "can't migrate local disk 'local-lvm:vm-102-disk-0': can't live migrate attached "
            "local disks without with-local-disks option"
        )
        for line in await _log(fresh_client, upid)
    )
    upid = await post_upid(fresh_client, path, target="pve3", online=1, **{"with-local-disks": 1})
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    status = await get_data(fresh_client, "/nodes/pve3/qemu/102/status/current")
    assert status["status"] == "running"


async def test_snapshots_on_lvm_thin_cannot_move(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve2/lxc/202/migrate", target="pve1", restart=1)
    assert (await task_status(fresh_client, upid))["exitstatus"] == "migration aborted"
    log = await _log(fresh_client, upid)
    assert log[-3].endswith(
        "can't migrate local volume 'local-lvm:vm-202-disk-0': non-migratable snapshot exists"
    )
    assert log[-2].endswith("can't migrate CT - check log")
    status = await get_data(fresh_client, "/nodes/pve2/lxc/202/status/current")
    assert status["status"] == "running" and "lock" not in status


async def test_a_container_restarts_on_the_target(fresh_client: httpx2.AsyncClient) -> None:
    live = await post_upid(fresh_client, "/nodes/pve1/lxc/200/migrate", target="pve2", online=1)
    assert (await task_status(fresh_client, live))["exitstatus"] == "migration aborted"
    assert (await _log(fresh_client, live))[-2].endswith(
        "lxc live migration is currently not implemented"
    )
    upid = await post_upid(
        fresh_client, "/nodes/pve1/lxc/200/migrate", target="pve2", restart=1,
        **{"target-storage": "local-lvm:local-lvm"},
    )  # fmt: skip
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert (await _log(fresh_client, upid))[0].endswith("shutdown CT 200")
    status = await get_data(fresh_client, "/nodes/pve2/lxc/200/status/current")
    assert status["status"] == "running"


async def test_an_offline_target_cannot_be_reached(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    fresh_sim.state.nodes["pve3"].online = False
    nodes = {n["node"]: n["status"] for n in await get_data(fresh_client, "/nodes")}
    assert nodes["pve3"] == "offline"
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/101/migrate", target="pve3")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "migration aborted"
    assert (await _log(fresh_client, upid))[-2].endswith(
        "Can't connect to destination address using public key"
    )


async def test_the_migrate_lock_holds_off_other_calls(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/101/migrate", target="pve2")
    clock.advance(1)
    config = await get_data(timed_client, "/nodes/pve1/qemu/101/config")
    assert config["lock"] == "migrate"
    config_change = await timed_client.put("/nodes/pve1/qemu/101/config", data={"description": "x"})
    assert config_change.json()["message"] == "VM is locked (migrate)\n"
    clock.advance(10)
    assert (await task_status(timed_client, upid))["exitstatus"] == "OK"
    pre = await timed_client.get("/nodes/pve2/qemu/101/migrate")
    assert pre.status_code == 200 and "lock" not in await get_data(
        timed_client, "/nodes/pve2/qemu/101/config"
    )


async def test_templates(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/103/template")
    assert upid.split(":")[5] == "qmtemplate"
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    config = await get_data(fresh_client, "/nodes/pve1/qemu/103/config")
    assert config["template"] == 1
    assert config["scsi0"].startswith("local-lvm:base-103-disk-0,")
    start = await post_upid(fresh_client, "/nodes/pve1/qemu/103/status/start")
    assert (await task_status(fresh_client, start))["exitstatus"] == (
        "you can't start a vm if it's a template"
    )
    again = await fresh_client.post("/nodes/pve1/qemu/103/template")
    assert again.json()["message"] == "you can't convert a template to a template\n"

    # The container's API drops the worker's UPID: it answers null.
    ct = await fresh_client.post("/nodes/pve1/lxc/201/template")
    assert ct.status_code == 200 and ct.json()["data"] is None
    assert (await get_data(fresh_client, "/nodes/pve1/lxc/201/config"))["template"] == 1

    refusals = {
        "/nodes/pve1/qemu/102/template": "you can't convert a VM to template if VM is running",
        "/nodes/pve1/lxc/200/template": "you can't convert a CT to template if the CT is running",
        "/nodes/pve1/qemu/100/template": "unable to create template, because VM contains snapshots",
    }
    for path, message in refusals.items():
        response = await fresh_client.post(path)
        assert (response.status_code, response.json()["message"]) == (500, message + "\n")


async def _volids(client: httpx2.AsyncClient, node: str, storage: str, vmid: int) -> list[str]:
    items = await get_data(client, f"/nodes/{node}/storage/{storage}/content", vmid=vmid)
    return [item["volid"] for item in items]


async def test_local_volumes_move_with_the_guest(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(
        fresh_client, "/nodes/pve1/qemu/101/migrate", target="pve2",
        targetstorage="local-lvm:local",
    )  # fmt: skip
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert await _volids(fresh_client, "pve1", "local-lvm", 101) == []
    moved = await _volids(fresh_client, "pve2", "local", 101)
    assert moved == [f"local:101/vm-101-disk-{n}.qcow2" for n in range(3)]
    config = await get_data(fresh_client, "/nodes/pve2/qemu/101/config")
    assert config["scsi0"].startswith("local:101/vm-101-disk-0.qcow2,")

    upid = await post_upid(fresh_client, "/nodes/pve1/lxc/201/migrate", target="pve3")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert await _volids(fresh_client, "pve3", "local-lvm", 201) == ["local-lvm:vm-201-disk-0"]
    assert await _volids(fresh_client, "pve1", "local-lvm", 201) == []


async def test_a_full_target_storage_aborts_the_copy(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    storage = next(s for s in fresh_sim.state.storages if s.name == "local-lvm")
    total, _used = storage.usage["pve2"]
    storage.usage["pve2"] = (total, total - (1 << 30))
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/101/migrate", target="pve2")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "migration aborted"
    assert "storage migration for 'local-lvm:vm-101-disk-0' to storage 'local-lvm' failed - " \
        "not enough free space" in (await _log(fresh_client, upid))[-2]  # fmt: skip
    assert await _volids(fresh_client, "pve1", "local-lvm", 101) != []
    assert await _volids(fresh_client, "pve2", "local-lvm", 101) == []
    assert "lock" not in await get_data(fresh_client, "/nodes/pve1/qemu/101/status/current")


async def test_a_template_s_volumes_become_base_volumes(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/103/template")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert await _volids(fresh_client, "pve1", "local-lvm", 103) == [
        f"local-lvm:base-103-disk-{n}" for n in range(3)
    ]


async def test_snapshots_in_a_qcow2_file_move_offline(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(
        fresh_client, "/nodes/pve1/qemu/101/migrate", target="pve2", targetstorage="local"
    )
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    snap = await post_upid(fresh_client, "/nodes/pve2/qemu/101/snapshot", snapname="s1")
    assert (await task_status(fresh_client, snap))["exitstatus"] == "OK"
    # QemuMigrate.pm: a qcow2 file on a directory storage carries its snapshots along.
    back = await post_upid(fresh_client, "/nodes/pve2/qemu/101/migrate", target="pve1")
    assert (await task_status(fresh_client, back))["exitstatus"] == "OK", await _log(
        fresh_client, back
    )
    assert (await get_data(fresh_client, "/nodes/pve1/qemu/101/snapshot"))[0]["name"] == "s1"
