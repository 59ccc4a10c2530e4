"""Replication jobs over HTTPS: the config API's refusals, a job run now by the
scheduler, its status and log, and its removal with the replicas on the target."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from .conftest import START, FakeClock, get_data

pytestmark = pytest.mark.anyio


async def _refused(response: httpx2.Response) -> str:
    assert response.status_code == 500, response.text
    return str(response.json()["message"])


async def _volids(client: httpx2.AsyncClient, node: str, vmid: int) -> list[str]:
    items = await get_data(client, f"/nodes/{node}/storage/local-zfs/content", vmid=vmid)
    return [item["volid"] for item in items]


async def test_the_seeded_job_and_its_state(client: httpx2.AsyncClient) -> None:
    jobs = await get_data(client, "/cluster/replication")
    assert [(j["id"], j["guest"], j["jobnum"], j["source"], j["target"], j["schedule"])
            for j in jobs] == [("203-0", 203, 0, "pve3", "pve2", "*/15")]  # fmt: skip
    status = await get_data(client, "/nodes/pve3/replication")
    assert [s["id"] for s in status] == ["203-0"]
    assert status[0]["last_sync"] == int(START) // 900 * 900
    assert status[0]["next_sync"] == status[0]["last_sync"] + 900
    assert status[0]["fail_count"] == 0 and status[0]["vmtype"] == "lxc"
    assert await get_data(client, "/nodes/pve2/replication") == []
    job = await get_data(client, "/cluster/replication/203-0")
    assert len(job["digest"]) == 40


async def test_creating_a_job_is_refused_as_pve_refuses_it(
    fresh_client: httpx2.AsyncClient,
) -> None:
    client = fresh_client

    async def create(**params: Any) -> httpx2.Response:
        return await client.post("/cluster/replication", data={"type": "local", **params})

    lvm = await create(id="100-0", target="pve2")
    assert await _refused(lvm) == "missing replicate feature on volume 'local-lvm:vm-100-disk-0'\n"
    assert (
        await _refused(await create(id="999-0", target="pve2")) == "Guest '999' does not exist.\n"
    )
    assert (
        await _refused(await create(id="204-0", target="pve9")) == "Target 'pve9' does not exist.\n"
    )
    same = await create(id="204-0", target="pve3")
    assert await _refused(same) == "Source and target must not be identical\n"
    twice = await create(id="203-1", target="pve2")
    assert (
        await _refused(twice) == "replication job for guest '203' to target 'pve2' already exists\n"
    )
    made = await create(id="204-0", target="pve2", schedule="*/5", rate="50", comment="c")
    assert made.status_code == 200, made.text
    again = await create(id="204-0", target="pve2")
    assert await _refused(again) == "replication job '204-0' already exists\n"
    job = await get_data(client, "/cluster/replication/204-0")
    assert (job["source"], job["schedule"], job["rate"]) == ("pve3", "*/5", 50)
    stale = await client.put("/cluster/replication/204-0", data={"digest": "0" * 40, "rate": "9"})
    assert "detected modified configuration" in await _refused(stale)
    fresh = await client.put(
        "/cluster/replication/204-0", data={"digest": job["digest"], "delete": "rate"}
    )
    assert fresh.status_code == 200, fresh.text
    assert "rate" not in await get_data(client, "/cluster/replication/204-0")


async def test_schedule_now_runs_the_job_and_delete_removes_its_replicas(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    client = timed_client
    made = await client.post(
        "/cluster/replication", data={"type": "local", "id": "204-0", "target": "pve2"}
    )
    assert made.status_code == 200, made.text
    before = await get_data(client, "/nodes/pve3/replication/204-0/status")
    assert "last_sync" not in before
    log = await get_data(client, "/nodes/pve3/replication/204-0/log")
    assert log == [{"n": 1, "t": "unable to open file - No such file or directory"}]

    now = await client.post("/nodes/pve3/replication/204-0/schedule_now")
    assert now.status_code == 200, now.text
    clock.advance(3)
    running = await get_data(client, "/nodes/pve3/replication/204-0/status")
    assert "pid" in running and "last_sync" not in running
    clock.advance(5)
    done = await get_data(client, "/nodes/pve3/replication/204-0/status")
    assert done["last_sync"] == int(START) + 2 and done["fail_count"] == 0 and "pid" not in done
    lines = [line["t"] for line in await get_data(client, "/nodes/pve3/replication/204-0/log")]
    assert lines[0].endswith("204-0: start replication job")
    assert any("full sync 'local-zfs:subvol-204-disk-0'" in line for line in lines)
    assert lines[-1].endswith("204-0: end replication job")
    assert await _volids(client, "pve2", 204) == ["local-zfs:subvol-204-disk-0"]

    assert (await client.delete("/cluster/replication/204-0")).status_code == 200
    marked = await get_data(client, "/cluster/replication/204-0")
    assert marked["remove_job"] == "full"
    clock.advance(3)
    assert [j["id"] for j in await get_data(client, "/cluster/replication")] == ["203-0"]
    assert await _volids(client, "pve2", 204) == []
    missing = await client.get("/nodes/pve3/replication/204-0/status")
    assert await _refused(missing) == "no such replication job '204-0'\n"


async def test_force_and_keep_conflict(client: httpx2.AsyncClient) -> None:
    both = await client.delete("/cluster/replication/203-0", params={"force": "1", "keep": "1"})
    assert both.status_code == 400
    assert both.json()["errors"] == {"keep": "conflicts with parameter 'force'"}


async def test_a_migrated_guest_replicates_back_to_its_old_node(
    fresh_client: httpx2.AsyncClient,
) -> None:
    moved = await fresh_client.post("/cluster/ha/resources/ct:203/migrate", data={"node": "pve2"})
    assert moved.status_code == 200, moved.text
    job = await get_data(fresh_client, "/cluster/replication/203-0")
    assert (job["source"], job["target"]) == ("pve2", "pve3")
    assert [s["id"] for s in await get_data(fresh_client, "/nodes/pve2/replication")] == ["203-0"]
    assert await get_data(fresh_client, "/nodes/pve3/replication") == []
