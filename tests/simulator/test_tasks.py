"""Asynchronous power actions: UPIDs, task status and logs, state changes over time."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from pvemcp.simulator import ClusterState, SimulatorHandle

from .conftest import START, FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

UPID_RE = re.compile(
    r"UPID:(?P<node>pve[123]):[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:(?P<type>[a-z]+):"
    r"(?P<id>\d*):(?P<user>[^:\s]+):"
)


async def _log(client: httpx2.AsyncClient, upid: str, **params: Any) -> tuple[list[Any], int]:
    node = upid.split(":")[1]
    response = await client.get(f"/nodes/{node}/tasks/{upid}/log", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["data"], body["total"]


async def _guest_status(client: httpx2.AsyncClient, node: str, kind: str, vmid: int) -> str:
    current = await get_data(client, f"/nodes/{node}/{kind}/{vmid}/status/current")
    return str(current["status"])


# Tests on the module's shared simulator use guests of their own; see the fixture.


async def test_upid_looks_like_pve(client: httpx2.AsyncClient) -> None:
    upid = await post_upid(client, "/nodes/pve1/qemu/103/status/start")
    match = UPID_RE.fullmatch(upid)
    assert match is not None, upid
    assert match["type"] == "qmstart"
    assert match["id"] == "103"
    assert match["user"] == "root@pam!pvemcp"


async def test_time_scale_zero_finishes_at_once(client: httpx2.AsyncClient) -> None:
    upid = await post_upid(client, "/nodes/pve1/qemu/102/status/stop")
    status = await task_status(client, upid)
    assert status["status"] == "stopped"
    assert status["exitstatus"] == "OK"
    assert status["user"] == "root@pam"
    assert status["tokenid"] == "pvemcp"
    assert await _guest_status(client, "pve1", "qemu", 102) == "stopped"
    assert await _log(client, upid) == ([{"n": 1, "t": "TASK OK"}], 1)


async def test_task_runs_on_the_injected_clock(
    timed_client: httpx2.AsyncClient, timed_sim: SimulatorHandle, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/101/status/start")
    assert (await task_status(timed_client, upid))["status"] == "running"
    assert "exitstatus" not in await task_status(timed_client, upid)
    assert await _log(timed_client, upid) == ([{"n": 1, "t": "no content"}], 1)
    clock.advance(2.9)
    assert (await task_status(timed_client, upid))["status"] == "running"
    assert await _guest_status(timed_client, "pve1", "qemu", 101) == "stopped"
    swtpm = {"n": 1, "t": "swtpm_setup: Not overwriting existing state file."}
    assert await _log(timed_client, upid) == ([swtpm], 1)
    clock.advance(0.2)
    status = await task_status(timed_client, upid)
    assert (status["status"], status["exitstatus"]) == ("stopped", "OK")
    assert await _log(timed_client, upid) == ([swtpm, {"n": 2, "t": "TASK OK"}], 2)
    current = await get_data(timed_client, "/nodes/pve1/qemu/101/status/current")
    assert current["status"] == "running"
    assert current["uptime"] == 0
    clock.advance(60)
    assert (await get_data(timed_client, "/nodes/pve1/qemu/101/status/current"))["uptime"] == 60
    guest = timed_sim.state.find_guest(101)
    assert guest is not None and guest.started_at == pytest.approx(START + 3.0)


async def test_starting_a_running_vm_fails_inside_the_task(
    client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(client, "/nodes/pve1/qemu/100/status/start")
    status = await task_status(client, upid)
    assert status["exitstatus"] == "VM 100 already running"
    assert await _log(client, upid) == (
        [{"n": 1, "t": "TASK ERROR: VM 100 already running"}],
        1,
    )


async def test_starting_a_missing_vm_fails_inside_the_task(
    client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(client, "/nodes/pve2/qemu/100/status/start")
    assert (await task_status(client, upid))["exitstatus"] == (
        "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist"
    )


async def test_starting_a_template_fails(client: httpx2.AsyncClient) -> None:
    upid = await post_upid(client, "/nodes/pve2/qemu/9000/status/start")
    assert (await task_status(client, upid))["exitstatus"] == (
        "you can't start a vm if it's a template"
    )


async def test_stopping_a_stopped_vm_is_a_quiet_success(
    client: httpx2.AsyncClient,
) -> None:
    # qemu-server's vm_stop returns early when the VM does not run: TASK OK.
    upid = await post_upid(client, "/nodes/pve1/qemu/101/status/stop")
    assert (await task_status(client, upid))["exitstatus"] == "OK"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nodes/pve1/lxc/201/status/stop", "CT 201 not running"),
        ("/nodes/pve1/lxc/201/status/shutdown", "CT 201 not running"),
        ("/nodes/pve1/lxc/201/status/reboot", "VM 201 not running"),
        ("/nodes/pve1/lxc/200/status/start", "CT 200 already running"),
        ("/nodes/pve1/lxc/200/status/resume", "CT 200 already running"),
        ("/nodes/pve1/qemu/101/status/reboot", "VM 101 not running"),
        ("/nodes/pve1/qemu/101/status/suspend", "VM 101 not running"),
        ("/nodes/pve1/qemu/999/status/reboot",
         "unable to find configuration file for VM 999 on node 'pve1'"),
        ("/nodes/pve2/qemu/105/status/shutdown", "VM is paused - cannot shutdown"),
        ("/nodes/pve2/qemu/105/status/reboot", "VM is paused - cannot shutdown"),
    ],
)  # fmt: skip
async def test_checks_made_before_the_fork_are_500(
    client: httpx2.AsyncClient, path: str, message: str
) -> None:
    response = await client.post(path)
    assert response.status_code == 500
    assert response.reason_phrase == message
    assert response.json() == {"data": None, "message": message + "\n"}


async def test_container_lifecycle(client: httpx2.AsyncClient) -> None:
    await post_upid(client, "/nodes/pve1/lxc/201/status/start")
    assert await _guest_status(client, "pve1", "lxc", 201) == "running"
    for action in ("reboot", "shutdown"):
        upid = await post_upid(client, f"/nodes/pve1/lxc/201/status/{action}")
        assert UPID_RE.fullmatch(upid) is not None
        assert upid.split(":")[5] == f"vz{action}"
    assert await _guest_status(client, "pve1", "lxc", 201) == "stopped"


async def test_container_suspend_and_resume(client: httpx2.AsyncClient) -> None:
    resume = await post_upid(client, "/nodes/pve3/lxc/204/status/resume")
    assert (await task_status(client, resume))["exitstatus"].startswith(
        "command 'lxc-checkpoint -n 204 -r"
    )
    suspend = await post_upid(client, "/nodes/pve3/lxc/203/status/suspend")
    assert (await task_status(client, suspend))["exitstatus"] == "OK"
    assert await _guest_status(client, "pve3", "lxc", 203) == "stopped"
    resume = await post_upid(client, "/nodes/pve3/lxc/203/status/resume")
    assert (await task_status(client, resume))["exitstatus"] == "OK"
    assert await _guest_status(client, "pve3", "lxc", 203) == "running"


async def test_vm_pause_and_resume(client: httpx2.AsyncClient) -> None:
    upid = await post_upid(client, "/nodes/pve2/qemu/104/status/suspend")
    assert upid.split(":")[5] == "qmpause"
    current = await get_data(client, "/nodes/pve2/qemu/104/status/current")
    assert (current["status"], current["qmpstatus"]) == ("running", "paused")
    resumed = await post_upid(client, "/nodes/pve2/qemu/104/status/resume")
    assert (await task_status(client, resumed))["exitstatus"] == "OK"
    current = await get_data(client, "/nodes/pve2/qemu/104/status/current")
    assert current["qmpstatus"] == "running"


async def test_vm_hibernate_shows_a_partial_log_then_resumes(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(
        timed_client, "/nodes/pve1/qemu/102/status/suspend", todisk=1, statestorage="local-lvm"
    )
    assert upid.split(":")[5] == "qmsuspend"
    clock.advance(2.0)
    lines, total = await _log(timed_client, upid)
    assert lines[0] == {"n": 1, "t": "saving VM state and RAM using storage 'local-lvm'"}
    assert total == len(lines) == 2
    clock.advance(3.0)
    lines, total = await _log(timed_client, upid)
    assert lines[-1] == {"n": total, "t": "TASK OK"}
    assert total == 6
    config = await get_data(timed_client, "/nodes/pve1/qemu/102/config")
    assert config["lock"] == "suspended"
    assert await _guest_status(timed_client, "pve1", "qemu", 102) == "stopped"
    resume = await post_upid(timed_client, "/nodes/pve1/qemu/102/status/resume")
    clock.advance(3.0)
    assert (await task_status(timed_client, resume))["exitstatus"] == "OK"
    assert "lock" not in await get_data(timed_client, "/nodes/pve1/qemu/102/config")
    assert await _guest_status(timed_client, "pve1", "qemu", 102) == "running"


async def test_reboot_restarts_the_uptime(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    before = await get_data(timed_client, "/nodes/pve1/qemu/100/status/current")
    assert before["uptime"] > 3600
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/100/status/reboot")
    clock.advance(8.0)
    assert (await task_status(timed_client, upid))["exitstatus"] == "OK"
    after = await get_data(timed_client, "/nodes/pve1/qemu/100/status/current")
    assert (after["status"], after["uptime"]) == ("running", 0)


async def test_tasks_on_one_guest_queue_behind_each_other(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    start = await post_upid(timed_client, "/nodes/pve1/qemu/101/status/start")
    stop = await post_upid(timed_client, "/nodes/pve1/qemu/101/status/stop")
    clock.advance(3.5)
    assert (await task_status(timed_client, start))["exitstatus"] == "OK"
    assert (await task_status(timed_client, stop))["status"] == "running"
    assert await _guest_status(timed_client, "pve1", "qemu", 101) == "running"
    clock.advance(1.0)
    assert (await task_status(timed_client, stop))["exitstatus"] == "OK"
    assert await _guest_status(timed_client, "pve1", "qemu", 101) == "stopped"


async def test_stopping_a_task_interrupts_it(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/101/status/start")
    clock.advance(1.0)
    response = await timed_client.delete(f"/nodes/pve1/tasks/{upid}")
    assert response.status_code == 200
    assert response.json() == {"data": None}
    clock.advance(5.0)
    status = await task_status(timed_client, upid)
    assert (status["status"], status["exitstatus"]) == ("stopped", "received interrupt")
    assert await _guest_status(timed_client, "pve1", "qemu", 101) == "stopped"
    assert (await _log(timed_client, upid))[0][-1]["t"] == "TASK ERROR: received interrupt"


async def test_task_lists(timed_client: httpx2.AsyncClient, clock: FakeClock) -> None:
    upid = await post_upid(timed_client, "/nodes/pve1/qemu/101/status/start")
    response = await timed_client.get("/nodes/pve1/tasks", params={"source": "active"})
    body = response.json()
    assert body["total"] == 1
    assert body["data"][0]["upid"] == upid
    assert body["data"][0]["status"] == "RUNNING"
    archive = await timed_client.get("/nodes/pve1/tasks")
    assert upid not in {task["upid"] for task in archive.json()["data"]}
    every = (await timed_client.get("/nodes/pve1/tasks", params={"source": "all"})).json()
    assert every["total"] == archive.json()["total"] + 1
    cluster = await get_data(timed_client, "/cluster/tasks")
    running = next(task for task in cluster if task["upid"] == upid)
    assert "status" not in running
    clock.advance(3.0)
    latest = await get_data(timed_client, "/nodes/pve1/tasks", limit=1)
    assert latest[0]["upid"] == upid
    assert latest[0]["status"] == "OK"
    assert latest[0]["endtime"] == int(START + 3.0)


@pytest.mark.parametrize(
    ("params", "check"),
    [
        ({"vmid": 103}, lambda t: t["id"] == "103"),
        ({"typefilter": "vzdump"}, lambda t: t["type"] == "vzdump"),
        ({"errors": 1}, lambda t: t["status"] != "OK"),
        ({"statusfilter": "warning"}, lambda t: t["status"].startswith("WARNINGS")),
        ({"userfilter": "ROOT@"}, lambda t: t["user"] == "root@pam"),
        ({"since": int(START - 3 * 86_400), "until": int(START)},
         lambda t: START - 3 * 86_400 <= t["starttime"] <= START),
    ],
)  # fmt: skip
async def test_task_list_filters(
    client: httpx2.AsyncClient, params: dict[str, Any], check: Any
) -> None:
    tasks: list[dict[str, Any]] = []
    for node in ("pve1", "pve2", "pve3"):
        tasks += await get_data(client, f"/nodes/{node}/tasks", **params)
    assert tasks
    assert all(check(task) for task in tasks), tasks


async def test_task_list_paging(client: httpx2.AsyncClient) -> None:
    everything = (await client.get("/nodes/pve1/tasks")).json()
    assert everything["total"] == len(everything["data"]) > 4
    page = (await client.get("/nodes/pve1/tasks", params={"start": 2, "limit": 2})).json()
    assert page["total"] == everything["total"]
    assert page["data"] == everything["data"][2:4]


async def test_task_log_paging(client: httpx2.AsyncClient) -> None:
    backups = await get_data(client, "/nodes/pve1/tasks", typefilter="vzdump")
    upid = backups[0]["upid"]
    first, total = await _log(client, upid, start=0, limit=10)
    assert [line["n"] for line in first] == list(range(1, 11))
    assert first[0]["t"].startswith("INFO: starting new backup job: vzdump")
    assert total > 30
    second, again = await _log(client, upid, start=10, limit=10)
    assert again == total
    assert [line["n"] for line in second] == list(range(11, 21))
    everything, _ = await _log(client, upid, limit=0)
    assert len(everything) == total
    assert everything[-1] == {"n": total, "t": "TASK OK"}
    assert everything[:20] == first + second
    default, _ = await _log(client, upid)
    assert len(default) == 50


@pytest.mark.parametrize(
    ("node", "upid", "error"),
    [
        ("pve1", "not-a-upid", "unable to parse worker upid"),
        ("pve1", "UPID:pve1:00000001:00000001:00000001:qmstart:100:root@pam", "unable to parse"),
        ("pve1", "UPID:pve1:00000001:00000001:00000001:qmstart:100:root@pam:", "no such task"),
    ],
)
async def test_bad_or_unknown_upid_is_400(
    client: httpx2.AsyncClient, node: str, upid: str, error: str
) -> None:
    for method in ("GET", "DELETE"):
        suffix = "/status" if method == "GET" else ""
        response = await client.request(method, f"/nodes/{node}/tasks/{upid}{suffix}")
        assert response.status_code == 400
        assert response.json()["errors"]["upid"].startswith(error)


async def test_task_is_only_known_on_its_own_node(client: httpx2.AsyncClient) -> None:
    upid = (await get_data(client, "/nodes/pve1/tasks", limit=1))[0]["upid"]
    response = await client.get(f"/nodes/pve2/tasks/{upid}/status")
    assert response.status_code == 400
    assert response.json()["errors"] == {"upid": "no such task"}
    lines, total = await _log(client, upid.replace(":pve1:", ":pve2:"))
    assert (lines, total) == ([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)


def test_state_is_deterministic_for_a_seed() -> None:
    def fingerprint(state: ClusterState) -> list[Any]:
        return [(g.vmid, g.config, g.started_at, g.cpu_load) for g in state.guests.values()] + [
            task.upid for task in state.tasks
        ]

    clock = FakeClock()
    assert fingerprint(ClusterState(7, clock=clock)) == fingerprint(ClusterState(7, clock=clock))
    assert fingerprint(ClusterState(7, clock=clock)) != fingerprint(ClusterState(8, clock=clock))
