"""Monitoring endpoints: RRD data, the cluster task list, a node's syslog and journal.

Over real HTTPS against the simulator. The RRD rows must have PVE 9's shape (rows and
step per timeframe) and agree with the rest of the API (a stopped guest uses nothing, a
storage ends at its current usage, a guest stopped through the API stops using CPU from
then on); the logs must page and filter as PVE's handlers do and record the tasks the
simulator runs.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorOptions, simulator_in_thread
from pvemcp.simulator.model import GiB

from .conftest import START, FakeClock, client_for, get_data, post_upid

pytestmark = pytest.mark.anyio

STEPS = {
    "hour": (60, 60),
    "day": (60, 1440),
    "week": (1800, 336),
    "month": (1800, 1440),
    "year": (21_600, 1440),
    "decade": (604_800, 570),
}


async def _rrd(client: httpx2.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await get_data(client, f"{path}/rrddata", **params)
    return rows


async def _error(client: httpx2.AsyncClient, path: str, **params: Any) -> tuple[int, str]:
    response = await client.get(path, params=params)
    return response.status_code, str(response.json().get("message", ""))


@pytest.mark.parametrize("timeframe", list(STEPS))
async def test_node_rows_and_step_per_timeframe(client: httpx2.AsyncClient, timeframe: str) -> None:
    step, count = STEPS[timeframe]
    rows = await _rrd(client, "/nodes/pve1", timeframe=timeframe)
    assert len(rows) == count
    times = [row["time"] for row in rows]
    assert all(b - a == step for a, b in pairwise(times))
    assert times[-1] == step * int(START // step) - step
    last = rows[-1]
    assert last["maxcpu"] == 32 and last["memtotal"] == 128 * GiB
    assert 0 < last["cpu"] < 1 and 0 < last["memused"] < last["memtotal"]
    assert last["memavailable"] == last["memtotal"] - last["memused"]


async def test_guest_timeframes_stop_at_year(client: httpx2.AsyncClient) -> None:
    for kind, vmid in (("qemu", 100), ("lxc", 200)):
        for timeframe in ("hour", "week", "year"):
            rows = await _rrd(client, f"/nodes/pve1/{kind}/{vmid}", timeframe=timeframe)
            assert len(rows) == STEPS[timeframe][1]
        status, message = await _error(
            client, f"/nodes/pve1/{kind}/{vmid}/rrddata", timeframe="decade"
        )
        assert status == 400, message


async def test_same_clock_same_rows() -> None:
    answers = []
    for _ in range(2):
        options = SimulatorOptions(time_scale=0.0, clock=FakeClock())
        with simulator_in_thread(options) as sim:
            async with client_for(sim) as http:
                answers.append(await _rrd(http, "/nodes/pve2/qemu/104", timeframe="day"))
    assert answers[0] == answers[1]


async def test_stopped_guest_uses_nothing_running_guest_its_share(
    client: httpx2.AsyncClient,
) -> None:
    stopped = await _rrd(client, "/nodes/pve1/qemu/101", timeframe="day")
    assert {(r["cpu"], r["mem"], r["netin"]) for r in stopped} == {(0, 0, 0)}
    assert stopped[-1]["maxmem"] == 4096 * 1024**2
    running = await _rrd(client, "/nodes/pve1/qemu/100", timeframe="hour")
    current = await get_data(client, "/nodes/pve1/qemu/100/status/current")
    for row in running:
        assert row["maxmem"] == current["maxmem"]
        assert 0.8 * current["mem"] <= row["mem"] <= min(1.25 * current["mem"], row["maxmem"])
        assert 0 < row["cpu"] <= 1


async def test_guest_path_reads_the_vmid_whatever_node_and_kind(
    client: httpx2.AsyncClient,
) -> None:
    """qemu-server and pve-container read `pve-vm-9.0/{vmid}` and check neither."""
    here = await _rrd(client, "/nodes/pve1/qemu/100", timeframe="hour")
    assert await _rrd(client, "/nodes/pve3/lxc/100", timeframe="hour") == here


async def test_max_is_average_at_one_minute_and_above_it_coarser(
    client: httpx2.AsyncClient,
) -> None:
    path = "/nodes/pve2/qemu/104"
    assert await _rrd(client, path, timeframe="hour", cf="MAX") == await _rrd(
        client, path, timeframe="hour"
    )
    average = await _rrd(client, path, timeframe="week")
    peak = await _rrd(client, path, timeframe="week", cf="MAX")
    assert all(p["cpu"] > a["cpu"] for p, a in zip(peak, average, strict=True))


async def test_storage_ends_at_its_usage(client: httpx2.AsyncClient) -> None:
    status = await get_data(client, "/nodes/pve1/storage/local-lvm/status")
    rows = await _rrd(client, "/nodes/pve1/storage/local-lvm", timeframe="month")
    assert {row["total"] for row in rows} == {status["total"]}
    assert abs(rows[-1]["used"] - status["used"]) <= status["used"] * 0.01
    assert rows[0]["used"] < rows[-1]["used"]


async def test_missing_rrd_files_fail_as_rrds_does(client: httpx2.AsyncClient) -> None:
    status, message = await _error(client, "/nodes/pve1/qemu/999/rrddata", timeframe="hour")
    assert status == 500
    assert message.startswith("RRD error: opening '/var/lib/rrdcached/db/pve-vm-9.0/999'")
    status, message = await _error(client, "/nodes/pve9/rrddata", timeframe="hour")
    assert (status, "pve-node-9.0/pve9" in message) == (500, True)
    status, message = await _error(client, "/nodes/pve1/storage/nfs-nope/rrddata", timeframe="hour")
    assert (status, "pve-storage-9.0/pve1/nfs-nope" in message) == (500, True)
    status, message = await _error(client, "/nodes/pve1/rrddata", timeframe="minute")
    assert status == 400


async def test_a_stop_shows_in_the_rows_after_it(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/100/status/stop")
    clock.advance(30 * 60)
    status = await get_data(timed_client, f"/nodes/pve1/tasks/{upid}/status")
    assert status["exitstatus"] == "OK"
    rows = await _rrd(timed_client, "/nodes/pve1/qemu/100", timeframe="hour")
    before = [r for r in rows if r["time"] + 60 <= START]
    after = [r for r in rows if r["time"] >= START + 60]
    assert before and after
    assert all(r["cpu"] > 0 for r in before)
    assert {(r["cpu"], r["mem"]) for r in after} == {(0, 0)}


async def test_cluster_tasks_are_each_nodes_broadcast_list(client: httpx2.AsyncClient) -> None:
    items = await get_data(client, "/cluster/tasks")
    nodes = [item["node"] for item in items]
    assert nodes == sorted(nodes) and set(nodes) == {"pve1", "pve2", "pve3"}
    for node in ("pve1", "pve2", "pve3"):
        mine = [item for item in items if item["node"] == node]
        assert 0 < len(mine) <= 25
        starts = [item["starttime"] for item in mine]
        assert starts == sorted(starts, reverse=True)
    finished = items[0]
    assert "pstart" not in finished and "pid" not in finished
    assert finished["saved"] == "1" and "endtime" in finished and "status" in finished


async def test_syslog_pages_with_a_total(client: httpx2.AsyncClient) -> None:
    response = await client.get("/nodes/pve1/syslog", params={"start": 10, "limit": 5})
    body = response.json()
    assert [line["n"] for line in body["data"]] == [11, 12, 13, 14, 15]
    assert body["total"] > 100
    default = (await client.get("/nodes/pve1/syslog")).json()["data"]
    assert len(default) == 50 and default[0]["n"] == 1
    assert default[0]["t"].split()[3] == "pve1"


async def test_syslog_filters_by_unit_and_time(client: httpx2.AsyncClient) -> None:
    ssh = await get_data(client, "/nodes/pve1/syslog", service="sshd")
    assert ssh and all(" sshd[" in line["t"] for line in ssh)
    daemon = await get_data(client, "/nodes/pve1/syslog", service="pvedaemon", limit=500)
    assert any("starting task UPID:pve1:" in line["t"] for line in daemon)
    assert all(" pvedaemon[" in line["t"] for line in daemon)
    none = await client.get("/nodes/pve1/syslog", params={"service": "nope"})
    assert none.json()["data"] == [{"n": 1, "t": "-- No entries --"}]
    assert none.json()["total"] == 1
    late = await get_data(client, "/nodes/pve1/syslog", since="2100-01-01")
    assert late == [{"n": 1, "t": "-- No entries --"}]
    status, _ = await _error(client, "/nodes/pve1/syslog", since="yesterday")
    assert status == 400


async def test_journal_cursors_follow_new_task_lines(
    fresh_client: httpx2.AsyncClient,
) -> None:
    tail = await get_data(fresh_client, "/nodes/pve1/journal", lastentries=3)
    assert len(tail) == 5 and all(c.startswith("s=") for c in (tail[0], tail[-1]))
    assert await get_data(fresh_client, "/nodes/pve1/journal", startcursor=tail[-1]) == [tail[-1]]
    upid = await post_upid(fresh_client, "/nodes/pve1/qemu/101/status/start")
    newer = await get_data(fresh_client, "/nodes/pve1/journal", startcursor=tail[-1])
    lines = newer[1:-1]
    assert " pve1 pvedaemon[" in lines[0]
    assert lines[0].endswith(f"]: <root@pam!pvemcp> starting task {upid}")
    assert lines[-1].endswith(f"<root@pam!pvemcp> end task {upid} OK")


async def test_journal_range_conflicts_fail(client: httpx2.AsyncClient) -> None:
    for params in ({"lastentries": 5, "since": 1}, {"since": 1, "startcursor": "t=1"}):
        status, message = await _error(client, "/nodes/pve1/journal", **params)
        assert status == 500 and "mini-journalreader" in message
    window = await get_data(
        client, "/nodes/pve1/journal", since=int(START) - 3600, until=int(START)
    )
    assert 2 < len(window) < 40


async def test_a_new_guest_has_no_values_before_it_was_created(
    fresh_client: httpx2.AsyncClient,
) -> None:
    """Its RRD starts at creation (qemu's meta ctime): older rows carry only `time`."""
    upid = await post_upid(
        fresh_client, "/nodes/pve1/qemu", vmid=160, name="new", scsi0="local-lvm:1"
    )
    status = await get_data(fresh_client, f"/nodes/pve1/tasks/{upid}/status")
    assert status["exitstatus"] == "OK"
    rows = await _rrd(fresh_client, "/nodes/pve1/qemu/160", timeframe="hour")
    assert rows and all(set(row) == {"time"} for row in rows)
    assert len(await _rrd(fresh_client, "/nodes/pve1/qemu/100", timeframe="hour")) == 60
