"""Cluster backup jobs over HTTPS: the seeded nightly job, PVE's refusals, a create,
update and delete, the included volumes and the guests no job backs up."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from pvemcp.simulator.jobs import parse_schedule

from .conftest import START, get_data

pytestmark = pytest.mark.anyio


async def _errors(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    errors: dict[str, str] = response.json()["errors"]
    return errors


async def test_the_seeded_nightly_job_agrees_with_its_vzdump_runs(
    client: httpx2.AsyncClient,
) -> None:
    jobs = await get_data(client, "/cluster/backup")
    assert [j["id"] for j in jobs] == ["backup-nightly"]
    job = jobs[0]
    assert (job["storage"], job["mode"], job["compress"]) == ("nfs-backup", "snapshot", "zstd")
    assert job["schedule"] == "01:00" and job["type"] == "vzdump"
    # START is 2026-05-28 20:26:40 UTC: the next 01:00 is the next morning.
    assert job["next-run"] == (int(START) // 86400 + 1) * 86400 + 3600
    assert await get_data(client, "/cluster/backup/backup-nightly") == job
    # Every guest but the template, as the seeded nightly tasks back up.
    assert await get_data(client, "/cluster/backup-info/not-backed-up") == [
        {"vmid": 9000, "type": "qemu", "name": "tmpl-deb12"}
    ]
    tree = await get_data(client, "/cluster/backup/backup-nightly/included_volumes")
    web01 = next(g for g in tree["children"] if g["id"] == 100)
    assert web01["type"] == "qemu" and web01["name"] == "web01"
    assert {"id": "scsi0", "name": "local-lvm:vm-100-disk-0", "included": 1,
            "reason": "disk"} in web01["children"]  # fmt: skip


async def test_create_update_and_delete_a_job(fresh_client: httpx2.AsyncClient) -> None:
    client = fresh_client
    created = await client.post(
        "/cluster/backup",
        data={
            "id": "weekly-prod",
            "schedule": "sat 02:30",
            "pool": "prod",
            "storage": "local",
            "compress": "zstd",
        },
    )
    assert created.status_code == 200, created.text
    job = await get_data(client, "/cluster/backup/weekly-prod")
    assert (job["pool"], job["enabled"], job["schedule"]) == ("prod", 1, "sat 02:30")
    when = time.gmtime(job["next-run"])  # this simulator keeps the real clock
    assert (when.tm_wday, when.tm_hour, when.tm_min) == (5, 2, 30)
    again = await client.post("/cluster/backup", data={"id": "weekly-prod", "all": 1,
                                                         "schedule": "daily"})  # fmt: skip
    assert again.status_code == 500 and again.json()["message"] == (
        "Job 'weekly-prod' already exists\n"
    )
    # A new vmid list drops the pool (Backup.pm update_job).
    updated = await client.put("/cluster/backup/weekly-prod",
                               data={"vmid": "102", "delete": "compress"})  # fmt: skip
    assert updated.status_code == 200, updated.text
    job = await get_data(client, "/cluster/backup/weekly-prod")
    assert job["vmid"] == "102" and "pool" not in job and "compress" not in job
    both = await client.put("/cluster/backup/weekly-prod", data={"all": 1, "vmid": "100"})
    assert await _errors(both) == {"all": "option conflicts with option 'vmid'"}
    assert (await client.delete("/cluster/backup/weekly-prod")).status_code == 200
    gone = await client.get("/cluster/backup/weekly-prod")
    assert await _errors(gone) == {"id": "No such job 'weekly-prod'"}
    assert await _errors(await client.delete("/cluster/backup/weekly-prod")) == {
        "id": "No such job 'weekly-prod'"
    }


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"vmid": "100", "all": 1, "schedule": "daily"},
         {"all": "option conflicts with option 'vmid'"}),
        ({"vmid": "100", "pool": "prod", "schedule": "daily"},
         {"pool": "option conflicts with option 'vmid'"}),
        ({"schedule": "daily"}, {"vmid": "property is missing"}),
        ({"vmid": "100"}, {"schedule": "property is missing"}),
        ({"vmid": "100", "schedule": "25:00"},
         {"schedule": "invalid calendar event '25:00' - hour '25' out of range"}),
        ({"vmid": "100", "schedule": "someday 01:00"},
         {"schedule": "invalid calendar event 'someday 01:00' - unable to parse weekday "
          "'someday'"}),
    ],
)  # fmt: skip
async def test_bad_jobs_are_refused_and_nothing_is_written(
    client: httpx2.AsyncClient, params: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await client.post("/cluster/backup", data={"id": "bad", **params})
    assert await _errors(response) == errors
    assert [j["id"] for j in await get_data(client, "/cluster/backup")] == ["backup-nightly"]


def test_the_calendar_event_subset() -> None:
    monday = 1_780_272_000  # 2026-06-01 00:00 UTC, a Monday
    assert parse_schedule("mon..fri 22:30").next_after(monday) == monday + 22 * 3600 + 1800
    assert parse_schedule("*/15").next_after(monday) == monday + 900
    assert parse_schedule("2,22:0/30").next_after(monday) == monday + 2 * 3600
    assert parse_schedule("sat,sun 03:00").next_after(monday) == monday + 5 * 86400 + 3 * 3600
    assert parse_schedule("hourly").next_after(monday) == monday + 3600
    for unsupported in ("monthly", "2026-12-24 01:00", "01:00:30", "mon 01~05:00"):
        with pytest.raises(ValueError, match="not simulated"):
            parse_schedule(unsupported)
