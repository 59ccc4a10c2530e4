"""Snapshots over HTTPS: the tree, RAM state, rollback, delete, and the locks they take."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle
from pvemcp.simulator.model import GiB, Storage
from pvemcp.simulator.state import ClusterState

from .conftest import FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

VM = "/nodes/pve1/qemu/101"  # stopped, no snapshots
RUNNING_VM = "/nodes/pve1/qemu/100"  # pre-upgrade <- after-upgrade (with RAM)
CT = "/nodes/pve1/lxc/201"  # stopped
RUNNING_CT = "/nodes/pve1/lxc/200"


async def _tree(client: httpx2.AsyncClient, path: str) -> dict[str, str | None]:
    """Snapshot name -> parent, `current` included."""
    items = await get_data(client, f"{path}/snapshot")
    return {item["name"]: item.get("parent") for item in items}


async def _snapshot(client: httpx2.AsyncClient, path: str, name: str, **params: Any) -> str:
    return await post_upid(client, f"{path}/snapshot", snapname=name, **params)


async def _exit(client: httpx2.AsyncClient, upid: str) -> str:
    return str((await task_status(client, upid))["exitstatus"])


async def test_snapshots_form_a_tree(fresh_client: httpx2.AsyncClient) -> None:
    upid = await _snapshot(fresh_client, VM, "s1", description="first")
    assert upid.split(":")[5] == "qmsnapshot"
    assert await _exit(fresh_client, upid) == "OK"
    await _snapshot(fresh_client, VM, "s2")
    assert await _tree(fresh_client, VM) == {"s1": None, "s2": "s1", "current": "s2"}

    # After a rollback the guest descends from s1, so the next snapshot opens a branch.
    upid = await post_upid(fresh_client, f"{VM}/snapshot/s1/rollback")
    assert upid.split(":")[5] == "qmrollback"
    assert await _exit(fresh_client, upid) == "OK"
    await _snapshot(fresh_client, VM, "s3")
    assert await _tree(fresh_client, VM) == {"s1": None, "s2": "s1", "s3": "s1", "current": "s3"}

    # Deleting s1 hands its children its own parent.
    deleted = await fresh_client.delete(f"{VM}/snapshot/s1")
    assert (await task_status(fresh_client, deleted.json()["data"]))["type"] == "qmdelsnapshot"
    assert await _tree(fresh_client, VM) == {"s2": None, "s3": None, "current": "s3"}

    items = {item["name"]: item for item in await get_data(fresh_client, f"{VM}/snapshot")}
    assert items["s2"]["vmstate"] == 0
    assert isinstance(items["s2"]["snaptime"], int)
    assert items["current"]["running"] == 0
    assert items["current"]["digest"] == (await get_data(fresh_client, f"{VM}/config"))["digest"]


async def test_the_task_log_names_the_disks(fresh_client: httpx2.AsyncClient) -> None:
    response = await fresh_client.put(f"{VM}/config", data={"cdrom": "local:iso/d.iso"})
    assert response.status_code == 200
    upid = await _snapshot(fresh_client, VM, "logged")
    lines = [line["t"] for line in await get_data(fresh_client, f"/nodes/pve1/tasks/{upid}/log")]
    assert lines == [
        "snapshotting 'drive-scsi0' (local-lvm:vm-101-disk-0)",
        "snapshotting 'drive-efidisk0' (local-lvm:vm-101-disk-1)",
        "snapshotting 'drive-tpmstate0' (local-lvm:vm-101-disk-2)",
        "TASK OK",
    ]


async def test_ram_state_is_saved_for_a_running_vm_only(fresh_client: httpx2.AsyncClient) -> None:
    await _snapshot(fresh_client, RUNNING_VM, "hot", vmstate=1)
    await _snapshot(fresh_client, VM, "cold", vmstate=1)
    hot = await get_data(fresh_client, f"{RUNNING_VM}/snapshot/hot/config")
    assert hot["vmstate"] == "local-lvm:vm-100-state-hot"
    cold = {i["name"]: i for i in await get_data(fresh_client, f"{VM}/snapshot")}["cold"]
    assert cold["vmstate"] == 0


async def test_rollback_restores_the_config_and_stops_the_guest(
    fresh_client: httpx2.AsyncClient,
) -> None:
    await _snapshot(fresh_client, RUNNING_VM, "plain")
    response = await fresh_client.put(f"{RUNNING_VM}/config", data={"name": "renamed"})
    assert response.status_code == 200
    await post_upid(fresh_client, f"{RUNNING_VM}/snapshot/plain/rollback")
    config = await get_data(fresh_client, f"{RUNNING_VM}/config")
    assert (config["name"], config["parent"]) == ("web01", "plain")
    status = await get_data(fresh_client, f"{RUNNING_VM}/status/current")
    assert status["status"] == "stopped"

    # A snapshot with RAM state resumes the VM; `start` starts one without.
    await post_upid(fresh_client, f"{RUNNING_VM}/snapshot/after-upgrade/rollback")
    assert (await get_data(fresh_client, f"{RUNNING_VM}/status/current"))["status"] == "running"
    upid = await post_upid(fresh_client, f"{CT}/snapshot", snapname="c1")
    assert upid.split(":")[5] == "vzsnapshot"
    await post_upid(fresh_client, f"{CT}/snapshot/c1/rollback", start=1)
    assert (await get_data(fresh_client, f"{CT}/status/current"))["status"] == "running"


def move_disks_to_zfs(state: ClusterState, vmid: int) -> str:
    """Give the cluster a `local-zfs` pool (as a node installed on ZFS has) and move the
    guest's disks, in its config and its snapshots, onto it; returns its first volume id.
    The demo's own storages all roll back past newer snapshots."""
    with state.lock:
        usage = {node: (900 * GiB, 120 * GiB) for node in state.nodes}
        state.storages.append(Storage("local-zfs", "zfspool", ("images", "rootdir"), False, usage))
        guest = state.guests[vmid]
        for config in (guest.config, *(snap.config for snap in guest.snapshots)):
            for key, value in config.items():
                if isinstance(value, str) and value.startswith("local-lvm:"):
                    config[key] = "local-zfs:" + value.removeprefix("local-lvm:")
        return str(guest.config["scsi0"]).split(",", 1)[0]


async def test_zfs_rolls_back_only_to_the_newest_snapshot(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    """pve-storage ZFSPoolPlugin.pm volume_rollback_is_possible: a rollback past a newer
    snapshot of a volume fails in the task, before the guest is stopped or locked."""
    volid = move_disks_to_zfs(fresh_sim.state, 100)
    upid = await post_upid(fresh_client, f"{RUNNING_VM}/snapshot/pre-upgrade/rollback")
    status = await task_status(fresh_client, upid)
    assert status["exitstatus"] == (
        f"can't rollback, 'pre-upgrade' is not most recent snapshot on '{volid}'"
    )
    assert (await get_data(fresh_client, f"{RUNNING_VM}/status/current"))["status"] == "running"
    assert "lock" not in await get_data(fresh_client, f"{RUNNING_VM}/config")
    # Without the newer snapshot the way back is open.
    await post_upid(fresh_client, f"{RUNNING_VM}/snapshot/after-upgrade/rollback")
    deleted = await fresh_client.delete(f"{RUNNING_VM}/snapshot/after-upgrade")
    assert deleted.status_code == 200
    upid = await post_upid(fresh_client, f"{RUNNING_VM}/snapshot/pre-upgrade/rollback")
    assert await _exit(fresh_client, upid) == "OK"


async def test_a_taken_name_fails_in_the_task(fresh_client: httpx2.AsyncClient) -> None:
    upid = await _snapshot(fresh_client, RUNNING_VM, "pre-upgrade")
    assert await _exit(fresh_client, upid) == "snapshot name 'pre-upgrade' already used"


@pytest.mark.parametrize(
    ("path", "name", "message"),
    [
        (VM, "current", "unable to use snapshot name 'current' (reserved name)"),
        (VM, "PENDING", "unable to use snapshot name 'pending' (reserved name)"),
        (CT, "vzdump", "unable to use snapshot name 'vzdump' (reserved name)"),
        ("/nodes/pve2/qemu/101", "x1", "Configuration file 'nodes/pve2/qemu-server/101.conf' "
         "does not exist"),
    ],
)  # fmt: skip
async def test_refused_before_the_fork(
    client: httpx2.AsyncClient, path: str, name: str, message: str
) -> None:
    response = await client.post(f"{path}/snapshot", data={"snapname": name})
    assert response.status_code == 500, response.text
    assert response.reason_phrase == message


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"snapname": "1st"},
         {"snapname": "invalid format - invalid configuration ID '1st'\n"}),
        ({"snapname": "s" * 41}, {"snapname": "value may only be 40 characters long"}),
        ({"snapname": "ok", "vmstate": 1},
         {"vmstate": "property is not defined in schema and the schema does not allow "
                     "additional properties"}),
    ],
)  # fmt: skip
async def test_bad_snapshot_parameters(
    client: httpx2.AsyncClient, params: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await client.post(f"{CT}/snapshot", data=params)  # containers have no vmstate
    assert response.status_code == 400
    assert response.json()["errors"] == errors


async def test_snapshot_config_reads_and_describes(client: httpx2.AsyncClient) -> None:
    path = f"{RUNNING_VM}/snapshot/pre-upgrade"
    assert await get_data(client, path) == [{"cmd": "rollback"}, {"cmd": "config"}]
    saved = await get_data(client, f"{path}/config")
    assert saved["description"] == "before the Debian 13 upgrade"
    assert "parent" not in saved and "lock" not in saved
    assert (await client.put(f"{path}/config", data={"description": "renamed"})).status_code == 200
    assert (await get_data(client, f"{path}/config"))["description"] == "renamed"
    missing = await client.get(f"{RUNNING_VM}/snapshot/nope/config")
    assert missing.status_code == 500
    assert missing.reason_phrase == "snapshot 'nope' does not exist"
    missing = await client.post(f"{RUNNING_VM}/snapshot/nope/rollback")
    assert await _exit(client, missing.json()["data"]) == "snapshot 'nope' does not exist"


async def test_a_snapshot_locks_the_guest_while_it_runs(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await _snapshot(timed_client, RUNNING_VM, "slow", vmstate=1)
    taking = {i["name"]: i for i in await get_data(timed_client, f"{RUNNING_VM}/snapshot")}
    assert taking["slow"]["snapstate"] == "prepare"
    assert (await get_data(timed_client, f"{RUNNING_VM}/config"))["lock"] == "snapshot"

    # A sync call fails at once, a worker fails in its task (pve-guest-common check_lock).
    response = await timed_client.put(f"{RUNNING_VM}/config", data={"cores": 3})
    assert (response.status_code, response.reason_phrase) == (500, "VM is locked (snapshot)")
    second = await _snapshot(timed_client, RUNNING_VM, "other")
    stop = await post_upid(timed_client, f"{RUNNING_VM}/status/stop")
    rollback = await post_upid(timed_client, f"{RUNNING_VM}/snapshot/pre-upgrade/rollback")
    clock.advance(1)
    for upid_ in (second, stop, rollback):
        assert await _exit(timed_client, upid_) == "VM is locked (snapshot)"

    clock.advance(10)
    assert await _exit(timed_client, upid) == "OK"
    config = await get_data(timed_client, f"{RUNNING_VM}/config")
    assert "lock" not in config
    assert config["parent"] == "slow"
    assert (await get_data(timed_client, f"{RUNNING_VM}/status/current"))["status"] == "running"


async def test_delete_and_rollback_hold_their_own_locks(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    deleting = await timed_client.delete(f"{RUNNING_VM}/snapshot/pre-upgrade")
    assert (await get_data(timed_client, f"{RUNNING_VM}/config"))["lock"] == "snapshot-delete"
    rollback = await post_upid(timed_client, f"{RUNNING_VM}/snapshot/after-upgrade/rollback")
    clock.advance(1)
    assert await _exit(timed_client, rollback) == "VM is locked (snapshot-delete)"
    clock.advance(10)
    assert await _exit(timed_client, deleting.json()["data"]) == "OK"

    await post_upid(timed_client, f"{RUNNING_CT}/snapshot/nope/rollback")  # fails, no lock
    rollback = await post_upid(timed_client, f"{RUNNING_VM}/snapshot/after-upgrade/rollback")
    clock.advance(0.5)
    assert (await get_data(timed_client, f"{RUNNING_VM}/config"))["lock"] == "rollback"
    start = await post_upid(timed_client, f"{RUNNING_VM}/status/start")
    clock.advance(0.5)
    # qemu-server vm_start: check_lock says "VM is locked (...)", without the vmid.
    assert await _exit(timed_client, start) == "VM is locked (rollback)"


async def test_a_killed_snapshot_task_leaves_its_lock(
    timed_client: httpx2.AsyncClient, timed_sim: SimulatorHandle, clock: FakeClock
) -> None:
    upid = await _snapshot(timed_client, RUNNING_CT, "killed")
    response = await timed_client.delete(f"/nodes/pve1/tasks/{upid}")
    assert response.status_code == 200
    clock.advance(5)
    # As on PVE, the `snapshot` lock stays until someone unlocks the guest.
    assert (await get_data(timed_client, f"{RUNNING_CT}/config"))["lock"] == "snapshot"
    stop = await post_upid(timed_client, f"{RUNNING_CT}/status/shutdown")
    clock.advance(1)
    assert await _exit(timed_client, stop) == "CT is locked (snapshot)"
    guest = timed_sim.state.find_guest(200)
    assert guest is not None and guest.status == "running"
