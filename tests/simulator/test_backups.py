"""Backups over HTTPS (simulator/backups.py): vzdump archives in a storage's content, the
`backup` lock while the job runs, and restores that make real guests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle

from .conftest import FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

GiB = 1024**3
VM_BACKUP = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"
CT_BACKUP = "nfs-backup:backup/vzdump-lxc-201-2026_11_30-23_01_40.tar.zst"


async def _backups(client: httpx2.AsyncClient, node: str, storage: str, **params: Any) -> Any:
    return await get_data(
        client, f"/nodes/{node}/storage/{storage}/content", content="backup", **params
    )


async def _log(client: httpx2.AsyncClient, upid: str) -> list[str]:
    node = upid.split(":")[1]
    lines = await get_data(client, f"/nodes/{node}/tasks/{upid}/log", limit=500)
    return [line["t"] for line in lines]


async def _exit(client: httpx2.AsyncClient, upid: str) -> str:
    return str((await task_status(client, upid))["exitstatus"])


async def test_a_backup_is_a_volume_with_pve_fields(fresh_client: httpx2.AsyncClient) -> None:
    before = await _backups(fresh_client, "pve1", "nfs-backup", vmid=100)
    upid = await post_upid(
        fresh_client,
        "/nodes/pve1/vzdump",
        vmid="100",
        storage="nfs-backup",
        mode="snapshot",
        compress="zstd",
        **{"notes-template": "{{guestname}} on {{node}}\\nvmid {{vmid}}"},
        protected="1",
    )
    assert ":vzdump:100:" in upid
    assert await _exit(fresh_client, upid) == "OK"
    (item,) = [i for i in await _backups(fresh_client, "pve1", "nfs-backup", vmid=100)
               if i not in before]  # fmt: skip
    assert item["volid"].startswith("nfs-backup:backup/vzdump-qemu-100-")
    assert item["volid"].endswith(".vma.zst")
    assert (item["format"], item["subtype"], item["vmid"], item["content"]) == (
        "vma.zst", "qemu", 100, "backup"
    )  # fmt: skip
    assert item["notes"] == "web01 on pve1"  # the first line only, as the list shows it
    assert item["protected"] == 1
    assert 0 < item["size"] < 33 * GiB
    info = await get_data(
        fresh_client, f"/nodes/pve1/storage/nfs-backup/content/{quote(item['volid'], safe='')}"
    )
    assert info["notes"] == "web01 on pve1\nvmid 100"
    assert info["path"] == "/mnt/pve/nfs-backup/dump/" + item["volid"].split("/", 1)[1]
    config = await get_data(fresh_client, "/nodes/pve1/vzdump/extractconfig",
                            volume=item["volid"])  # fmt: skip
    assert "name: web01\n" in config
    assert "#qmdump#map:scsi0:drive-scsi0:local-lvm:raw:" in config
    assert "lock" not in await get_data(fresh_client, "/nodes/pve1/qemu/100/config")
    # The same archive is on the shared storage for every node.
    assert item in await _backups(fresh_client, "pve3", "nfs-backup")


async def test_the_guest_holds_the_backup_lock_while_the_job_runs(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/vzdump", vmid="101", storage="local")
    config = await get_data(timed_client, "/nodes/pve1/qemu/101/config")
    assert config["lock"] == "backup"
    response = await timed_client.put("/nodes/pve1/qemu/101/config", data={"memory": "1024"})
    assert response.status_code == 500
    assert response.reason_phrase == "VM is locked (backup)"
    clock.advance(60)
    assert await _exit(timed_client, upid) == "OK"
    assert "lock" not in await get_data(timed_client, "/nodes/pve1/qemu/101/config")
    (item,) = await _backups(timed_client, "pve1", "local", vmid=101)
    assert item["format"] == "vma"  # compress defaults to 0
    assert not await _backups(timed_client, "pve2", "local", vmid=101)  # a node's own dir


async def test_stop_mode_stops_the_guest_and_starts_it_again(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/vzdump", vmid="102", mode="stop",
                           storage="nfs-backup")  # fmt: skip
    status = await get_data(timed_client, "/nodes/pve1/qemu/102/status/current")
    assert status["status"] == "stopped"
    clock.advance(60)
    assert await _exit(timed_client, upid) == "OK"
    status = await get_data(timed_client, "/nodes/pve1/qemu/102/status/current")
    assert status["status"] == "running"
    assert "INFO: stopping virtual guest" in await _log(timed_client, upid)


@pytest.mark.parametrize(
    ("storage", "error"),
    [
        ("local-lvm", "could not get storage information for 'local-lvm': can't use storage "
                      "'local-lvm' for backups - wrong content type"),
        ("nope", "could not activate storage 'nope': storage 'nope' does not exist"),
    ],
)  # fmt: skip
async def test_a_storage_that_cannot_hold_backups_fails_the_job(
    fresh_client: httpx2.AsyncClient, storage: str, error: str
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/vzdump", vmid="101", storage=storage)
    assert await _exit(fresh_client, upid) == error
    assert "lock" not in await get_data(fresh_client, "/nodes/pve1/qemu/101/config")


async def test_a_full_storage_fails_that_guest_and_keeps_the_others(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve3/vzdump", vmid="106,107", storage="local",
                           compress="0")  # fmt: skip
    assert ":vzdump::" in upid  # several guests: no id in the UPID
    assert await _exit(fresh_client, upid) == "job errors"
    log = await _log(fresh_client, upid)
    assert (
        "ERROR: Backup of VM 106 failed - vma_queue_write: write error - No space left on device"
        in log
    )
    assert "INFO: Backup job finished with errors" in log
    assert not await _backups(fresh_client, "pve3", "local", vmid=106)
    assert len(await _backups(fresh_client, "pve3", "local", vmid=107)) == 1
    for vmid in (106, 107):
        assert "lock" not in await get_data(fresh_client, f"/nodes/pve3/qemu/{vmid}/config")


async def test_a_locked_guest_fails_its_backup(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    guest = fresh_sim.state.find_guest(101)
    assert guest is not None
    guest.config["lock"] = "snapshot"
    upid = await post_upid(fresh_client, "/nodes/pve1/vzdump", vmid="101", storage="local")
    assert await _exit(fresh_client, upid) == "job errors"
    assert "ERROR: Backup of VM 101 failed - VM is locked (snapshot)" in await _log(
        fresh_client, upid
    )
    assert guest.config["lock"] == "snapshot"  # not the job's to remove


async def test_guests_of_other_nodes_are_skipped_silently(
    fresh_client: httpx2.AsyncClient,
) -> None:
    response = await fresh_client.post("/nodes/pve2/vzdump", data={"vmid": "100"})
    assert response.json()["data"] == "OK"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"vmid": "100", "storage": "local", "notes-template": "{{name}}"}, "notes-template",
         "found unknown: variable 'name' at char 4"),
        ({"storage": "local"}, "vmid", "property is missing"),
        ({"vmid": "100", "all": "1"}, "all", "option conflicts with option 'vmid'"),
    ],
)  # fmt: skip
async def test_bad_vzdump_parameters_are_refused(
    client: httpx2.AsyncClient, params: dict[str, str], field: str, message: str
) -> None:
    response = await client.post("/nodes/pve1/vzdump", data=params)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][field].strip() == message


async def test_a_vm_restores_to_a_new_vmid_with_its_config_and_disks(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu", vmid="150", archive=VM_BACKUP,
                           storage="local", unique="1")  # fmt: skip
    assert ":qmrestore:150:" in upid
    assert await _exit(fresh_client, upid) == "OK"
    config = await get_data(fresh_client, "/nodes/pve1/qemu/150/config")
    assert config["name"] == "web02"
    # Allocated in the order of the drives' names, as `$restore_allocate_devices` sorts them.
    assert config["scsi0"] == "local:150/vm-150-disk-1.qcow2,iothread=1,size=32G"
    assert config["efidisk0"].startswith("local:150/vm-150-disk-0.qcow2,")
    original = await get_data(fresh_client, "/nodes/pve1/qemu/101/config")
    assert config["net0"] != original["net0"]  # unique: a new MAC
    assert config["net0"].endswith(",bridge=vmbr0,firewall=1")
    assert "lock" not in config
    items = await get_data(fresh_client, "/nodes/pve1/storage/local/content", vmid=150)
    assert sorted((i["volid"], i["size"]) for i in items) == [
        ("local:150/vm-150-disk-0.qcow2", 4 * 1024**2),  # efidisk0
        ("local:150/vm-150-disk-1.qcow2", 32 * GiB),  # scsi0
        ("local:150/vm-150-disk-2.qcow2", 4 * 1024**2),  # tpmstate0
    ]
    # A normal guest: it starts, stops and is deleted with its disks.
    for action in ("start", "stop"):
        upid = await post_upid(fresh_client, f"/nodes/pve1/qemu/150/status/{action}")
        assert await _exit(fresh_client, upid) == "OK"
    response = await fresh_client.delete("/nodes/pve1/qemu/150")
    assert await _exit(fresh_client, response.json()["data"]) == "OK"
    assert not await get_data(fresh_client, "/nodes/pve1/storage/local/content", vmid=150)


async def test_a_container_restores_onto_the_storage_given(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve2/lxc", vmid="260", ostemplate=CT_BACKUP,
                           restore="1", storage="local-lvm", start="1")  # fmt: skip
    assert ":vzrestore:260:" in upid
    assert await _exit(fresh_client, upid) == "OK"
    config = await get_data(fresh_client, "/nodes/pve2/lxc/260/config")
    assert (config["hostname"], config["rootfs"]) == (
        "proxy01", "local-lvm:vm-260-disk-0,size=8G"
    )  # fmt: skip
    status = await get_data(fresh_client, "/nodes/pve2/lxc/260/status/current")
    assert status["status"] == "running"


async def test_a_restore_takes_the_create_lock_while_it_runs(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu", vmid="150", archive=VM_BACKUP)
    config = await get_data(timed_client, "/nodes/pve1/qemu/150/config")
    assert config["lock"] == "create"
    clock.advance(60)
    assert await _exit(timed_client, upid) == "OK"
    config = await get_data(timed_client, "/nodes/pve1/qemu/150/config")
    assert "lock" not in config
    assert config["scsi0"].startswith("local-lvm:vm-150-disk-1,")  # where it was backed up


async def test_restoring_over_a_guest_replaces_its_disks_and_config(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    response = await fresh_client.post("/nodes/pve1/qemu", data={"vmid": "101",
                                                                 "archive": VM_BACKUP})  # fmt: skip
    assert response.status_code == 500
    assert response.reason_phrase == (
        "unable to restore VM 101 - VM 101 already exists on node 'pve1'"
    )
    await post_upid(fresh_client, "/nodes/pve1/qemu/101/config", memory="8192", scsi1="local:2")
    await post_upid(fresh_client, "/nodes/pve1/qemu/101/snapshot", snapname="before")
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu", vmid="101", archive=VM_BACKUP,
                           force="1", storage="local")  # fmt: skip
    assert await _exit(fresh_client, upid) == "OK"
    config = await get_data(fresh_client, "/nodes/pve1/qemu/101/config")
    assert "scsi1" not in config
    assert config["memory"] != "8192"
    assert config["scsi0"].startswith("local:101/vm-101-disk-1.qcow2,")
    assert not await get_data(fresh_client, "/nodes/pve1/storage/local-lvm/content", vmid=101)
    snapshots = await get_data(fresh_client, "/nodes/pve1/qemu/101/snapshot")
    assert [s["name"] for s in snapshots] == ["current"]


async def test_restoring_over_a_running_guest_fails_and_changes_nothing(
    fresh_client: httpx2.AsyncClient,
) -> None:
    before = await get_data(fresh_client, "/nodes/pve1/qemu/100/config")
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu", vmid="100", archive=VM_BACKUP,
                           force="1")  # fmt: skip
    assert await _exit(fresh_client, upid) == "unable to restore VM 100 - vm is running"
    assert await get_data(fresh_client, "/nodes/pve1/qemu/100/config") == before
    response = await fresh_client.post("/nodes/pve1/lxc", data={
        "vmid": "200", "ostemplate": CT_BACKUP, "restore": "1", "force": "1"})  # fmt: skip
    assert response.status_code == 500
    assert response.reason_phrase == "can't overwrite running container"


async def test_a_backup_of_the_other_type_fails_the_restore(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu", vmid="150", archive=CT_BACKUP)
    path = "/mnt/pve/nfs-backup/dump/" + CT_BACKUP.split("/", 1)[1]
    assert await _exit(fresh_client, upid) == (
        f"ERROR: file '{path}' does not look like a QemuServer vzdump backup"
    )
    upid = await post_upid(fresh_client, "/nodes/pve1/lxc", vmid="250", ostemplate=VM_BACKUP,
                           restore="1", storage="local-lvm")  # fmt: skip
    assert await _exit(fresh_client, upid) == (
        "unable to restore CT 250 - ERROR: archive contains no configuration file"
    )
    resources = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert not {150, 250} & {row["vmid"] for row in resources}


@pytest.mark.parametrize(
    ("archive", "reason"),
    [
        ("local:iso/debian-12.9.0-amd64-netinst.iso", "unable to use volume local:iso/"
         "debian-12.9.0-amd64-netinst.iso - content type needs to be 'backup'"),
        ("nfs-backup:backup/vzdump-qemu-101-2020_01_01-00_00_00.vma.zst",
         "can't find file 'nfs-backup:backup/vzdump-qemu-101-2020_01_01-00_00_00.vma.zst'"),
        ("nope:backup/x.vma", "storage 'nope' does not exist"),
    ],
)  # fmt: skip
async def test_an_archive_that_is_not_a_backup_is_refused(
    client: httpx2.AsyncClient, archive: str, reason: str
) -> None:
    response = await client.post("/nodes/pve1/qemu", data={"vmid": "150", "archive": archive})
    assert response.status_code == 500
    assert response.reason_phrase == reason


async def test_a_restore_that_does_not_fit_leaves_nothing(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve2/vzdump", vmid="104", storage="nfs-backup",
                           compress="0")  # fmt: skip
    assert await _exit(fresh_client, upid) == "OK"
    (item,) = [i for i in await _backups(fresh_client, "pve2", "nfs-backup", vmid=104)
               if i["format"] == "vma"]  # fmt: skip
    upid = await post_upid(fresh_client, "/nodes/pve2/qemu", vmid="155", archive=item["volid"],
                           storage="local")  # fmt: skip
    assert (await _exit(fresh_client, upid)).startswith("not enough free space")
    assert not await get_data(fresh_client, "/nodes/pve2/storage/local/content", vmid=155)
    resources = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert 155 not in {row["vmid"] for row in resources}


async def test_deleting_a_guest_keeps_its_backups(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/vzdump", vmid="101", storage="local")
    assert await _exit(fresh_client, upid) == "OK"
    (item,) = await _backups(fresh_client, "pve1", "local", vmid=101)
    response = await fresh_client.delete(
        "/nodes/pve1/qemu/101", params={"purge": "1", "destroy-unreferenced-disks": "1"}
    )
    assert await _exit(fresh_client, response.json()["data"]) == "OK"
    # `destroy-unreferenced-disks` scans the guest's images (`vdisk_list`), not its backups.
    assert await _backups(fresh_client, "pve1", "local", vmid=101) == [item]
    assert len(await _backups(fresh_client, "pve1", "nfs-backup", vmid=101)) == 2


async def test_each_guest_is_locked_for_its_own_part_of_the_job(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/vzdump", vmid="100,101", storage="local")

    async def lock(vmid: int) -> str | None:
        config = await get_data(timed_client, f"/nodes/pve1/qemu/{vmid}/config")
        return None if "lock" not in config else str(config["lock"])

    assert (await lock(100), await lock(101)) == ("backup", None)
    assert not await _backups(timed_client, "pve1", "local")
    clock.advance(4)  # 100's part (32 GiB of disks) is done, 101's has begun
    assert (await lock(100), await lock(101)) == (None, "backup")
    assert [i["vmid"] for i in await _backups(timed_client, "pve1", "local")] == [100]
    clock.advance(60)
    assert await _exit(timed_client, upid) == "OK"
    assert (await lock(100), await lock(101)) == (None, None)
    assert len(await _backups(timed_client, "pve1", "local")) == 2


async def test_the_seeded_nightly_jobs_archives_are_in_the_content(
    shared_sim: SimulatorHandle, client: httpx2.AsyncClient
) -> None:
    """What the seeded vzdump tasks' logs say they made is on nfs-backup, with its size."""
    job = next(t for t in shared_sim.state.tasks if t.node == "pve1" and t.type == "vzdump")
    log = await _log(client, job.upid)
    made = [line.rsplit("/", 1)[1].rstrip("'") for line in log
            if line.startswith("INFO: creating vzdump archive")]  # fmt: skip
    assert len(made) == 6  # the guests of pve1
    listed = {i["volid"]: i for i in await _backups(client, "pve1", "nfs-backup")}
    for name in made:
        item = listed["nfs-backup:backup/" + name]
        assert item["size"] > 0 and item["notes"] and "protected" not in item
