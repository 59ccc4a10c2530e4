"""Ceph over HTTPS: a cluster without it refuses every Ceph method as PVE does, and one
with it computes health from its OSDs and pools, marks OSDs in and out, and creates and
deletes pools in tasks with PVE's checks."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle, SimulatorOptions, serve_simulator
from pvemcp.simulator.endpoints import ROUTES

from .conftest import client_for, get_data, post_upid, task_status
from .test_server import _banner, _lines

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ceph(anyio_backend: str) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of a simulator with Ceph whose tasks finish at once."""
    async with (
        serve_simulator(SimulatorOptions(time_scale=0.0, ceph=True)) as sim,
        client_for(sim) as http,
    ):
        yield http


async def _checks(client: httpx2.AsyncClient) -> dict[str, str]:
    status = await get_data(client, "/cluster/ceph/status")
    checks: dict[str, Any] = status["health"]["checks"]
    return {name: check["summary"]["message"] for name, check in checks.items()}


async def _task_log(client: httpx2.AsyncClient, upid: str) -> tuple[str, list[str]]:
    status = await task_status(client, upid)
    log = await get_data(client, f"/nodes/{upid.split(':')[1]}/tasks/{upid}/log")
    return status["exitstatus"], [line["t"] for line in log]


async def test_without_ceph_every_ceph_method_says_it_is_not_installed(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    storages = [s["storage"] for s in await get_data(fresh_client, "/storage")]
    assert "ceph-rbd" not in storages
    ceph_routes = [r for r in ROUTES if "/ceph" in r.path]
    assert len(ceph_routes) == 16
    for route in ceph_routes:
        path = route.path.format(node="pve1", osdid="0", name="rbd")
        form = {"name": "bench"} if route.method == "POST" and path.endswith("pool") else None
        form = {"size": "3"} if route.method == "PUT" else form
        response = await fresh_client.request(route.method, path, data=form)
        assert response.status_code == 500, path
        assert response.json()["message"].strip() == "binary not installed: /usr/bin/ceph-mon"


async def test_the_seeded_ceph(ceph: httpx2.AsyncClient) -> None:
    status = await get_data(ceph, "/cluster/ceph/status")
    assert status["health"]["status"] == "HEALTH_WARN"
    assert await _checks(ceph) == {"RECENT_CRASH": "1 daemons have recently crashed"}
    assert status["quorum_names"] == ["pve1", "pve2", "pve3"]
    assert status["osdmap"] == {"num_osds": 6, "num_up_osds": 5, "num_in_osds": 5}
    tree = await get_data(ceph, "/nodes/pve3/ceph/osd")
    pve3 = tree["root"]["children"][0]["children"][2]
    assert [(o["name"], o["status"], o["in"]) for o in pve3["children"]] == [
        ("osd.4", "up", 1),
        ("osd.5", "down", 0),
    ]
    pools = await get_data(ceph, "/nodes/pve1/ceph/pool")
    assert [p["pool_name"] for p in pools] == [".mgr", "rbd", "cephfs_data", "cephfs_metadata"]
    assert [(m["name"], m["state"]) for m in await get_data(ceph, "/nodes/pve1/ceph/mgr")] == [
        ("pve1", "active"),
        ("pve2", "standby"),
    ]
    fs = await get_data(ceph, "/nodes/pve1/ceph/fs")
    assert [(f["name"], f["data_pool"], f["metadata_pool"]) for f in fs] == [
        ("cephfs", "cephfs_data", "cephfs_metadata")
    ]
    rbd = await get_data(ceph, "/storage/ceph-rbd")
    assert (rbd["type"], rbd["pool"], rbd["shared"]) == ("rbd", "rbd", 1)


async def test_osd_out_and_in_change_health(ceph: httpx2.AsyncClient) -> None:
    # osd.4 is pve3's last OSD up and in: out, every size-3 pool is undersized.
    assert (await ceph.post("/nodes/pve3/ceph/osd/4/out")).json()["data"] is None
    checks = await _checks(ceph)
    assert checks["PG_DEGRADED"].startswith("Degraded data redundancy: ")
    assert checks["PG_DEGRADED"].endswith("289 pgs degraded, 289 pgs undersized")
    # Two hosts left out of three: below min_size 2 nothing is, so no PG is inactive.
    assert "PG_AVAILABILITY" not in checks
    await ceph.post("/nodes/pve2/ceph/osd/2/out")
    await ceph.post("/nodes/pve2/ceph/osd/3/out")
    assert "Reduced data availability: 289 pgs inactive" in (await _checks(ceph)).values()
    for osd in (2, 3, 4):
        await ceph.post(f"/nodes/pve3/ceph/osd/{osd}/in")
    assert set(await _checks(ceph)) == {"RECENT_CRASH"}
    # osd.5 is down: in, its share of the PGs is degraded and Ceph says it is down.
    await ceph.post("/nodes/pve3/ceph/osd/5/in")
    checks = await _checks(ceph)
    assert checks["OSD_DOWN"] == "1 osds down"
    assert "pgs undersized" not in checks["PG_DEGRADED"]
    response = await ceph.post("/nodes/pve3/ceph/osd/42/out")
    assert response.status_code == 500
    assert response.json()["message"].strip() == "no such OSD '42'"


async def test_pool_create_with_storage_and_pve_checks(ceph: httpx2.AsyncClient) -> None:
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="vmdata", add_storages=1)
    assert upid.split(":")[5:7] == ["cephcreatepool", "vmdata"]
    assert (await task_status(ceph, upid))["exitstatus"] == "OK"
    pool = next(
        p for p in await get_data(ceph, "/nodes/pve1/ceph/pool") if p["pool_name"] == "vmdata"
    )
    # PVE's defaults (Pool.pm createpool).
    assert (pool["size"], pool["min_size"], pool["pg_num"], pool["pg_autoscale_mode"]) == (
        3, 2, 128, "warn"
    )  # fmt: skip
    assert (await get_data(ceph, "/storage/vmdata"))["pool"] == "vmdata"
    # The same name again: Ceph's create succeeds, PVE sets the options given, and the
    # storage it cannot add again fails the task.
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="vmdata", add_storages=1)
    status, _ = await _task_log(ceph, upid)
    assert status == (
        "adding PVE storage for ceph pool 'vmdata' failed: storage ID 'vmdata' already defined"
    )
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="rbd", pg_num=64)
    status, log = await _task_log(ceph, upid)
    assert status == "OK" and "pool 'rbd' already exists" in log
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="tiny", size=2, min_size=3)
    status, _ = await _task_log(ceph, upid)
    assert status == "pool min_size must be between 1 and size, which is 2"
    # PVE creates the pool, then adds the storage: a storage ID taken leaves the pool made.
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="local", add_storages=1)
    status, _ = await _task_log(ceph, upid)
    assert status.endswith("storage ID 'local' already defined")
    names = [p["pool_name"] for p in await get_data(ceph, "/nodes/pve1/ceph/pool")]
    assert "local" in names


async def test_pool_update(ceph: httpx2.AsyncClient) -> None:
    response = await ceph.put("/nodes/pve1/ceph/pool/rbd", data={"size": 2, "min_size": 1})
    assert response.json()["data"].split(":")[5:7] == ["cephsetpool", "rbd"]
    assert (await task_status(ceph, response.json()["data"]))["exitstatus"] == "OK"
    status = await get_data(ceph, "/nodes/pve1/ceph/pool/rbd/status")
    assert (status["size"], status["min_size"], status["pg_num"]) == (2, 1, 128)
    response = await ceph.put("/nodes/pve1/ceph/pool/rbd", data={"min_size": 3})
    status, _ = await _task_log(ceph, response.json()["data"])
    assert status == "pool min_size must be between 1 and size, which is 2"
    response = await ceph.put("/nodes/pve1/ceph/pool/nope", data={"size": 3})
    assert (await _task_log(ceph, response.json()["data"]))[0] == "unrecognized pool 'nope'"


async def test_pool_delete_as_pve_checks_it(ceph: httpx2.AsyncClient) -> None:
    # A VM disk on ceph-rbd: PVE refuses the pool unless forced.
    response = await ceph.post("/nodes/pve1/qemu/101/config", data={"scsi3": "ceph-rbd:4"})
    assert response.status_code == 200, response.text
    upid = (await ceph.delete("/nodes/pve1/ceph/pool/rbd")).json()["data"]
    status, log = await _task_log(ceph, upid)
    assert status == "ceph pool 'rbd' still in use by storage 'ceph-rbd'"
    assert log[0] == "checking storage 'ceph-rbd' for RBD images.."
    upid = (await ceph.delete("/nodes/pve1/ceph/pool/cephfs_data")).json()["data"]
    assert (await _task_log(ceph, upid))[0] == "pool 'cephfs_data' is in use by CephFS"
    upid = (await ceph.delete("/nodes/pve1/ceph/pool/rbd", params={"force": 1})).json()["data"]
    assert (await task_status(ceph, upid))["exitstatus"] == "OK"
    names = [p["pool_name"] for p in await get_data(ceph, "/nodes/pve1/ceph/pool")]
    assert "rbd" not in names
    # Without remove_storages the storage stays, pointing at a pool that is gone (as PVE).
    assert "ceph-rbd" in [s["storage"] for s in await get_data(ceph, "/storage")]
    upid = await post_upid(ceph, "/nodes/pve1/ceph/pool", name="scratch", add_storages=1)
    assert (await task_status(ceph, upid))["exitstatus"] == "OK"
    response = await ceph.delete("/nodes/pve1/ceph/pool/scratch", params={"remove_storages": 1})
    assert (await task_status(ceph, response.json()["data"]))["exitstatus"] == "OK"
    assert "scratch" not in [s["storage"] for s in await get_data(ceph, "/storage")]


@pytest.mark.slow
def test_simulate_ceph_flag_gives_the_cluster_ceph(tmp_path: Path) -> None:
    cert_out = tmp_path / "simulator.pem"
    command = [sys.executable, "-m", "pvemcp.simulator", "--port", "0", "--time-scale", "0",
               "--ceph", "--token-secret", "s3cr3t", "--cert-out", str(cert_out)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = _banner(_lines(process.stdout), time.monotonic() + 20)["URL"]
            response = httpx2.get(
                f"{url}/api2/json/cluster/ceph/status",
                verify=ssl.create_default_context(cafile=str(cert_out)),
                headers={"Authorization": "PVEAPIToken=root@pam!pvemcp=s3cr3t"},
            )
            assert response.status_code == 200
            assert response.json()["data"]["health"]["status"] == "HEALTH_WARN"
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
