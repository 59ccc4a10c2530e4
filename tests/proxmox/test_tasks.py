"""Task status, logs and waiting, against a fake task endpoint over real HTTPS."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import Response

from pvemcp.config import ClusterConfig
from pvemcp.proxmox.errors import (
    MalformedAnswer,
    NotFound,
    ParameterError,
    PermissionDenied,
    TaskFailed,
    TaskStatusUnknown,
    TaskTimeout,
)
from pvemcp.proxmox.rest import RestBackend
from pvemcp.proxmox.tasks import TaskStatus, get_task_log, get_task_status, wait_for_task
from pvemcp.proxmox.upid import parse_upid

from .fake_pve import FakePve, pve_json

pytestmark = pytest.mark.anyio

MakeCluster = Callable[..., ClusterConfig]
UPID = "UPID:pve2:0000ABCD:0001E240:65F0A1B2:qmstart:100:pvemcp@pve!gateway:"
STATUS_PATH = f"/nodes/pve2/tasks/{UPID}/status"


def status_body(status: str, exitstatus: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "upid": UPID,
        "node": "pve2",
        "pid": 0xABCD,
        "pstart": 0x1E240,
        "starttime": 0x65F0A1B2,
        "type": "qmstart",
        "id": "100",
        "user": "pvemcp@pve",
        "tokenid": "gateway",
        "status": status,
    }
    if exitstatus is not None:
        body["exitstatus"] = exitstatus
    return body


def task_stops_after(polls: int, exitstatus: str = "OK") -> Callable[[Request], Any]:
    """A status handler: `running` for `polls - 1` polls, then stopped."""
    seen = 0

    async def handler(_: Request) -> Response:
        nonlocal seen
        seen += 1
        if seen < polls:
            return pve_json(status_body("running"))
        return pve_json(status_body("stopped", exitstatus))

    return handler


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.calls.append((progress, total, message))


async def test_status_is_routed_to_the_upid_node(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, pve_json(status_body("stopped", "WARNINGS: 2")))
    async with RestBackend(make_cluster()) as backend:
        status = await get_task_status(backend, UPID)
    assert status.upid == UPID
    assert (status.node, status.type, status.id) == ("pve2", "qmstart", "100")
    assert (status.user, status.tokenid) == ("pvemcp@pve", "gateway")
    assert status.status == "stopped"
    assert status.ok
    assert [seen.path for seen in pve.requests] == [STATUS_PATH]


async def test_status_fills_gaps_from_the_upid(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, pve_json({"status": "RUNNING"}))
    async with RestBackend(make_cluster()) as backend:
        status = await get_task_status(backend, parse_upid(UPID))
    assert status.status == "running"
    assert status.starttime == 0x65F0A1B2
    assert not status.ok


@pytest.mark.parametrize(
    "data", [[1, 2], {"status": "exploded"}, {"status": "running", "starttime": "soon"}]
)
async def test_unexpected_status_is_a_malformed_answer(
    pve: FakePve, make_cluster: MakeCluster, data: Any
) -> None:
    pve.route("GET", STATUS_PATH, pve_json(data))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(MalformedAnswer) as info:
            await get_task_status(backend, UPID)
    assert info.value.path == STATUS_PATH


async def test_bad_upid_is_refused_without_a_request(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(ParameterError, match="not a UPID") as info:
            await get_task_status(backend, UPID + "/../../access")
    assert "upid" in info.value.errors
    assert pve.requests == []


@pytest.mark.parametrize(
    ("exitstatus", "ok"),
    [("OK", True), ("WARNINGS: 3", True), ("VM 100 already running", False), (None, False)],
)
def test_ok(exitstatus: str | None, ok: bool) -> None:
    status = TaskStatus(
        upid=UPID,
        node="pve2",
        type="qmstart",
        user="root@pam",
        status="stopped",
        exitstatus=exitstatus,
        starttime=1,
    )
    assert status.ok is ok


async def test_task_log_page(pve: FakePve, make_cluster: MakeCluster) -> None:
    lines = [{"n": 3, "t": "starting"}, {"n": 4, "t": "TASK OK"}]
    pve.route("GET", f"/nodes/pve2/tasks/{UPID}/log", pve_json(lines, total=4))
    async with RestBackend(make_cluster()) as backend:
        page, total = await get_task_log(backend, UPID, start=2, limit=2)
    assert page == [(3, "starting"), (4, "TASK OK")]
    assert total == 4
    assert pve.requests[0].query == "start=2&limit=2"


async def test_malformed_task_log_is_a_malformed_answer(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", f"/nodes/pve2/tasks/{UPID}/log", pve_json([{"n": "one", "t": 1}]))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(MalformedAnswer, match="malformed"):
            await get_task_log(backend, UPID)


async def test_task_log_without_total_says_it_is_unknown(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    """Before: a server that leaves out `total` had the page length passed off as it."""
    lines = [{"n": 1, "t": "starting"}, {"n": 2, "t": "working"}]
    pve.route("GET", f"/nodes/pve2/tasks/{UPID}/log", pve_json(lines))
    async with RestBackend(make_cluster()) as backend:
        page, total = await get_task_log(backend, UPID, start=0, limit=2)
    assert len(page) == 2
    assert total is None


@pytest.mark.parametrize("endpoint", ["status", "log"])
async def test_unknown_upid_is_not_found(
    pve: FakePve, make_cluster: MakeCluster, endpoint: str
) -> None:
    """PVE refuses an unknown task as a parameter (400, upid: no such task); before, that
    was `invalid_parameter` ("fix the parameters")."""
    pve.route(
        "GET",
        f"/nodes/pve2/tasks/{UPID}/{endpoint}",
        pve_json(
            status=400, errors={"upid": "no such task"}, message="Parameter verification failed."
        ),
    )
    async with RestBackend(make_cluster()) as backend:
        read = get_task_status if endpoint == "status" else get_task_log
        with pytest.raises(NotFound, match="knows no task") as info:
            await read(backend, UPID)
    assert info.value.errors == {"upid": "no such task"}


async def test_wait_retries_failed_polls(pve: FakePve, make_cluster: MakeCluster) -> None:
    """Before: one 502 on a poll ended the wait as `proxmox_refused`, the task running."""
    answers = iter(
        [
            Response("bad gateway", status_code=502),
            Response("<html>", status_code=200),
            pve_json(status_body("stopped", "OK")),
        ]
    )

    async def handler(_: Request) -> Response:
        return next(answers)

    pve.route("GET", STATUS_PATH, handler)
    async with RestBackend(make_cluster()) as backend:
        status = await wait_for_task(backend, UPID, timeout=10)
    assert status.ok
    assert len(pve.requests) == 3


async def test_wait_with_failing_polls_ends_with_status_unknown(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", STATUS_PATH, Response("bad gateway", status_code=502))
    started = time.monotonic()
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(TaskStatusUnknown, match="was started") as info:
            await wait_for_task(backend, UPID, timeout=1.2)
    assert time.monotonic() - started < 3
    assert info.value.upid == UPID
    assert "do not start the action again" in info.value.hint
    assert 2 <= len(pve.requests) <= 3


async def test_wait_does_not_retry_a_rejected_poll(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, pve_json(status=403, message="Permission check failed"))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(PermissionDenied):
            await wait_for_task(backend, UPID, timeout=10)
    assert len(pve.requests) == 1


async def test_wait_polls_until_stopped_with_increasing_progress(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", STATUS_PATH, task_stops_after(4))
    progress = Progress()
    async with RestBackend(make_cluster()) as backend:
        status = await wait_for_task(backend, UPID, timeout=10, on_progress=progress)
    assert status.status == "stopped"
    assert status.ok
    assert len(pve.requests) == 4
    values = [value for value, _, _ in progress.calls]
    assert len(values) == 4
    assert all(later > earlier for earlier, later in itertools.pairwise(values))
    assert all(total is None for _, total, _ in progress.calls)
    messages = [message or "" for _, _, message in progress.calls]
    assert messages[0].startswith("qmstart 100 on pve2: running, ")
    assert messages[-1].startswith("qmstart 100 on pve2: stopped (OK), ")


async def test_polling_backs_off(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, task_stops_after(5))
    stamps: list[float] = []

    async def record(progress: float, total: float | None, message: str | None) -> None:
        stamps.append(time.monotonic())

    async with RestBackend(make_cluster()) as backend:
        await wait_for_task(backend, UPID, timeout=10, on_progress=record)
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.14
    assert gaps[-1] > gaps[0] * 2  # 0.15 s growing x1.5 per poll


async def test_failed_task_raises_with_pve_exitstatus(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", STATUS_PATH, task_stops_after(2, "VM 100 already running"))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(TaskFailed) as info:
            await wait_for_task(backend, UPID, timeout=10)
    assert info.value.exitstatus == "VM 100 already running"
    assert info.value.upid == UPID
    assert "VM 100 already running" in str(info.value)
    assert "qmstart 100 on pve2" in str(info.value)


async def test_failed_task_returned_when_asked(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, task_stops_after(1, "command failed"))
    async with RestBackend(make_cluster()) as backend:
        status = await wait_for_task(backend, UPID, timeout=10, raise_on_failure=False)
    assert (status.status, status.exitstatus, status.ok) == ("stopped", "command failed", False)


async def test_timeout_raises_task_timeout_quickly(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", STATUS_PATH, pve_json(status_body("running")))
    async with RestBackend(make_cluster()) as backend:
        started = time.monotonic()
        with pytest.raises(TaskTimeout) as info:
            await wait_for_task(backend, UPID, timeout=0.5)
    assert 0.45 < time.monotonic() - started < 1.0
    assert info.value.upid == UPID
    assert "keeps running on the node" in str(info.value)


async def test_timeout_bounds_a_hanging_status_request(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    async def hang(_: Request) -> Response:
        await anyio.sleep(3)
        return pve_json(status_body("running"))

    pve.route("GET", STATUS_PATH, hang)
    async with RestBackend(make_cluster(read_timeout=30)) as backend:
        started = time.monotonic()
        with pytest.raises(TaskTimeout):
            await wait_for_task(backend, UPID, timeout=0.3)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("hangs", [False, True])
async def test_cancellation_propagates_promptly(
    pve: FakePve, make_cluster: MakeCluster, hangs: bool
) -> None:
    async def status(_: Request) -> Response:
        if hangs:
            await anyio.sleep(3)
        return pve_json(status_body("running"))

    pve.route("GET", STATUS_PATH, status)
    progress = Progress()
    async with RestBackend(make_cluster(read_timeout=30)) as backend:
        started = time.monotonic()
        with anyio.move_on_after(0.4) as scope:
            await wait_for_task(backend, UPID, timeout=60, on_progress=progress)
        elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert elapsed < 0.8
    assert bool(progress.calls) is not hangs
