"""Faults between the gateway and Proxmox, injected by a proxy in front of the simulator.

Each test drives the tools through the real MCP SDK client; the gateway reaches the
simulator over HTTPS through `tests.support.faultproxy`, which breaks chosen requests the
way a failing node, a proxy in front of it or the network would.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from pvemcp.proxmox.errors import TASK_STARTED_HINT
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for, make_gateway
from tests.e2e.test_tools_inmemory import data, error
from tests.support.faultproxy import (
    Cut,
    FaultProxy,
    Hang,
    Huge,
    Mutate,
    Respond,
    Trickle,
    plain_http_server,
)

pytestmark = pytest.mark.anyio

STATUS_POLL = r"/nodes/[^/]+/tasks/UPID:[^/]+/status"
BAD_GATEWAY = Respond(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    """A simulator of this module's own: the tests start guests and change their state."""
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as handle:
        yield handle


@pytest.fixture
async def proxy(sim: SimulatorHandle) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(sim.url, sim.cert_pem) as running:
        yield running


@asynccontextmanager
async def connect(
    sim: SimulatorHandle, audit_path: Path, api_url: str, fingerprint: str, **changes: Any
) -> AsyncIterator[Client]:
    """An SDK client on a gateway whose one cluster is at `api_url` (pinned)."""
    cluster = cluster_for(sim, api_url=api_url, fingerprint=fingerprint, **changes)
    gateway = make_gateway({"demo": cluster}, audit_path, (sim.token_secret,))
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            yield client
    finally:
        await gateway.aclose()


@pytest.fixture
async def client(
    sim: SimulatorHandle, proxy: FaultProxy, audit_path: Path
) -> AsyncIterator[Client]:
    async with connect(sim, audit_path, proxy.url, proxy.fingerprint, read_timeout=2.0) as c:
        yield c


# -- a write that took effect is reported as such (issue 10, item 20) ------------------------


POLL_FAULTS = {
    "502": BAD_GATEWAY,
    "503": Respond.json({"data": None, "message": "service unavailable"}, 503),
    "null": Respond.json({"data": None}),
    "html": Respond(200, b"<html>maintenance</html>", "text/html"),
    "reset": Cut(keep=5, reset=True),
    "truncated": Cut(keep=5, reset=False),
    "hang": Hang(),
}


@pytest.mark.parametrize("fault", POLL_FAULTS.values(), ids=POLL_FAULTS.keys())
async def test_one_failed_poll_does_not_end_the_wait(
    client: Client, proxy: FaultProxy, fault: Any
) -> None:
    """Before: one 502 (or any of these) on a task poll gave an error such as
    `proxmox_refused` "fix the cause, then retry", without the UPID, though the guest was
    rebooting."""
    proxy.inject("GET", STATUS_POLL, fault, times=1)
    result = data(await client.call_tool("proxmox_guest_power", {"vmid": 102, "action": "reboot"}))
    assert result["task_status"] == "stopped" and result["exitstatus"] == "OK"
    assert result["guest_status"] == "running"
    assert result["upid"].startswith("UPID:pve1:")
    polls = [path for method, path in proxy.seen if method == "GET" and "/tasks/" in path]
    assert len(polls) >= 2


async def test_polls_that_keep_failing_name_the_started_task(
    client: Client, proxy: FaultProxy
) -> None:
    proxy.inject("GET", STATUS_POLL, BAD_GATEWAY)
    failure = error(
        await client.call_tool(
            "proxmox_guest_power", {"vmid": 103, "action": "start", "timeout": 2}
        )
    )
    assert failure["code"] == "task_status_unknown"
    upid = failure["details"]["upid"]
    assert upid in failure["message"] and "was started" in failure["message"]
    assert failure["hint"] == TASK_STARTED_HINT
    proxy.clear()
    task = data(await client.call_tool("proxmox_task_wait", {"upid": upid}))
    assert task["ok"] is True  # the start had happened


async def test_any_failure_after_the_start_names_the_task(
    client: Client, proxy: FaultProxy
) -> None:
    """A poll refused for good (403 is not retried) still says the action was started."""
    proxy.inject("GET", STATUS_POLL, Respond.json({"data": None}, 403))
    failure = error(await client.call_tool("proxmox_guest_power", {"vmid": 107, "action": "start"}))
    assert failure["code"] == "permission_denied"
    assert failure["details"]["upid"].startswith("UPID:pve3:")
    assert "the action was started" in failure["message"]
    assert failure["hint"] == TASK_STARTED_HINT


@pytest.mark.parametrize(
    "answer",
    [Respond.json({"data": 42}), Respond.json({"data": None}), Respond(200, b"<html>OK</html>")],
    ids=["number", "null", "html"],
)
async def test_odd_answer_to_a_start_says_it_may_have_run(
    client: Client, proxy: FaultProxy, answer: Respond
) -> None:
    """Before: a start answered with junk was `invalid_parameter` ("fix the parameters")."""
    proxy.inject("POST", r"/nodes/pve1/lxc/201/status/start", answer)
    failure = error(await client.call_tool("proxmox_guest_power", {"vmid": 201, "action": "start"}))
    assert failure["code"] == "bad_upstream_answer"
    assert "may have run" in failure["message"]
    assert "/nodes/pve1/lxc/201/status/start" in failure["message"]
    assert "before retrying" in failure["hint"]


async def test_a_proxy_failure_on_a_start_says_it_may_have_run(
    client: Client, proxy: FaultProxy
) -> None:
    """Before: a 502 from a proxy in front of Proxmox on the start itself was
    `proxmox_refused` "fix the cause, then retry", though the node may have started it."""
    proxy.inject("POST", r"/nodes/pve1/lxc/201/status/start", BAD_GATEWAY)
    failure = error(await client.call_tool("proxmox_guest_power", {"vmid": 201, "action": "start"}))
    assert failure["code"] == "proxmox_refused"
    assert "may or may not have reached the node" in failure["message"]
    assert "before retrying" in failure["hint"]
    proxy.inject("GET", "/cluster/resources", BAD_GATEWAY)
    failure = error(await client.call_tool("proxmox_guest_list", {}))
    assert "may or may not" not in failure["message"]  # a read changes nothing


# -- odd answers to reads (item 22) ------------------------------------------------------------


def _with_junk(answer: Any) -> Any:
    return {**answer, "data": [*answer["data"], 7, "junk"]}


ODD_READS = [
    ("proxmox_guest_list", {}, "/cluster/resources", Respond.json({"data": None})),
    ("proxmox_guest_list", {}, "/cluster/resources", Respond.json({"data": "x"})),
    ("proxmox_guest_list", {}, "/cluster/resources", Mutate(_with_junk)),
    (
        "proxmox_guest_list",
        {},
        "/cluster/resources",
        Respond.json({"data": [{"vmid": "abc", "type": "qemu", "node": "pve1"}]}),
    ),
    ("proxmox_guest_list", {}, "/cluster/resources", Respond(200, b"not json", "text/plain")),
    (
        "proxmox_guest_get",
        {"vmid": 100},
        "/nodes/pve1/qemu/100/status/current",
        Respond.json({"data": None}),
    ),
    (
        "proxmox_guest_get",
        {"vmid": 100},
        "/nodes/pve1/qemu/100/status/current",
        Respond.json({"data": {"mem": "lots", "ha": 3}}),
    ),
    ("proxmox_cluster_status", {}, "/cluster/status", Respond.json({"data": None})),
    ("proxmox_cluster_status", {}, "/cluster/status", Mutate(_with_junk)),
    ("proxmox_node_list", {}, "/nodes", Respond.json({"data": {"node": "pve1"}})),
    ("proxmox_node_status", {"node": "pve1"}, "/nodes/pve1/status", Respond.json({"data": None})),
    (
        "proxmox_node_status",
        {"node": "pve1"},
        "/nodes/pve1/status",
        Respond.json({"data": {"memory": "lots", "loadavg": 5}}),
    ),
    ("proxmox_next_vmid", {}, "/cluster/nextid", Respond.json({"data": "abc"})),
]


@pytest.mark.parametrize("case", ODD_READS)
async def test_odd_read_answers_are_reported_not_crashed(
    client: Client, proxy: FaultProxy, case: tuple[str, dict[str, Any], str, Any]
) -> None:
    """Before: `internal_error` ("This is a gateway bug") with a traceback."""
    tool, args, path, answer = case
    proxy.inject("GET", path, answer)
    failure = error(await client.call_tool(tool, args))
    assert failure["code"] == "bad_upstream_answer", failure
    assert path in failure["message"]
    assert "may have run" not in failure["message"]


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "truncated"])
async def test_a_broken_read_is_reported(client: Client, proxy: FaultProxy, reset: bool) -> None:
    proxy.inject("GET", "/cluster/resources", Cut(keep=20, reset=reset))
    failure = error(await client.call_tool("proxmox_guest_list", {}))
    assert failure["code"] == "unreachable"
    assert "broke during GET /cluster/resources" in failure["message"]


# -- deadlines (item 21) ---------------------------------------------------------------------


async def test_a_trickling_answer_is_cut_by_the_request_timeout(
    sim: SimulatorHandle, proxy: FaultProxy, audit_path: Path
) -> None:
    """Before: at 1 byte every 0.5 s no answer came for as long as the server kept going,
    since read_timeout bounds only the gap between bytes."""
    async with connect(
        sim, audit_path, proxy.url, proxy.fingerprint, read_timeout=1.0, request_timeout=2.0
    ) as client:
        started = time.monotonic()
        proxy.inject("GET", "/cluster/resources", Trickle(b'{"data":[]}' + b" " * 100))
        failure = error(await client.call_tool("proxmox_guest_list", {}))
        assert failure["code"] == "timeout"
        assert "request_timeout (2 s)" in failure["message"]
        proxy.clear()
        proxy.inject("POST", r"/nodes/pve1/qemu/103/status/start", Trickle(b"{}" * 50))
        failure = error(
            await client.call_tool("proxmox_guest_power", {"vmid": 103, "action": "start"})
        )
        assert failure["code"] == "timeout"
        assert "may still take effect" in failure["message"]
        assert time.monotonic() - started < 8  # two calls, each about 2 s


async def test_a_hanging_server_is_a_timeout(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("GET", "/version", Hang())
    started = time.monotonic()
    failure = error(await client.call_tool("proxmox_cluster_status", {}))
    assert failure["code"] == "timeout"
    # read_timeout is 2 s and the hang never ends: bounded, with room for a loaded CI box
    # (6 s was missed by 0.08 s once with eight test runs sharing two cores).
    assert time.monotonic() - started < 10


# -- size caps (item 23) ---------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_huge_answers_stop_at_the_cap_and_memory_stays_bounded(
    client: Client, proxy: FaultProxy
) -> None:
    """Before: eight concurrent 50 MB answers took the gateway from 90 to 1,165 MiB."""
    size = 50_000_000
    proxy.inject("GET", r"/nodes/pve\d/(qemu|lxc)/\d+/status/current", Huge(size))
    guests = [100, 101, 102, 103, 104, 105, 106, 107]
    before = peak = _rss()
    failures: list[dict[str, Any]] = []

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss())
            await anyio.sleep(0.02)

    async def get(vmid: int) -> None:
        failures.append(error(await client.call_tool("proxmox_guest_get", {"vmid": vmid})))

    async with anyio.create_task_group() as sampler:
        sampler.start_soon(sample)
        async with anyio.create_task_group() as calls:
            for vmid in guests:
                calls.start_soon(get, vmid)
        sampler.cancel_scope.cancel()
    assert {f["code"] for f in failures} == {"upstream_answer_too_large"}
    assert "max_response_bytes (8388608 bytes)" in failures[0]["message"]
    assert len(proxy.sent) == len(guests)
    # The gateway stopped reading at the cap: the proxy could send at most the cap plus
    # what the socket buffers took.
    assert max(proxy.sent) < 3 * 8 * 2**20 < size
    print(f"8 x 50 MB answers: RSS grew by {(peak - before) / 2**20:.0f} MiB")
    assert peak - before < 200 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MiB"


async def test_a_huge_declared_answer_is_not_read(client: Client, proxy: FaultProxy) -> None:
    proxy.inject("GET", "/cluster/resources", Huge(50_000_000, declare_length=True))
    failure = error(await client.call_tool("proxmox_guest_list", {}))
    assert failure["code"] == "upstream_answer_too_large"


async def test_a_huge_error_message_is_cut(client: Client, proxy: FaultProxy) -> None:
    """Before: an 8 MB PVE error message reached the agent verbatim."""
    message = "disk full " * 800_000
    proxy.inject("GET", "/cluster/resources", Respond.json({"data": None, "message": message}, 500))
    failure = error(await client.call_tool("proxmox_guest_list", {}))
    assert failure["code"] == "proxmox_refused"
    assert len(failure["message"]) < 600
    assert failure["message"].endswith(f"[{len(message.strip()) - 500} more characters cut]")


# -- smaller (item 26) -----------------------------------------------------------------------


async def test_plain_http_on_the_tls_port_says_so(sim: SimulatorHandle, audit_path: Path) -> None:
    """Before: reported as a certificate problem (tls_verification_failed)."""
    async with plain_http_server() as url, connect(sim, audit_path, url, sim.fingerprint) as c:
        failure = error(await c.call_tool("proxmox_cluster_status", {}))
    assert failure["code"] == "unreachable"
    assert "plain HTTP on a TLS port" in failure["message"]


async def test_a_redirect_says_where_to(client: Client, proxy: FaultProxy) -> None:
    """Before: only "Found" (as proxmox_refused)."""
    where = "https://login.example.com/sso?next=/api2/json/version"
    proxy.inject("GET", "/version", Respond(302, b"", "text/html", (("Location", where),)))
    failure = error(await client.call_tool("proxmox_cluster_status", {}))
    assert failure["code"] == "unexpected_redirect"
    assert "302" in failure["message"] and where in failure["message"]
    assert "not followed" in failure["message"]
    assert ("GET", "/sso") not in proxy.seen


@pytest.mark.parametrize("tool", ["proxmox_task_status", "proxmox_task_log"])
async def test_an_unknown_task_is_not_found(client: Client, tool: str) -> None:
    """Before: `invalid_parameter` (PVE refuses an unknown UPID as a bad parameter)."""
    upid = "UPID:pve1:00001234:00001234:65F0A1B2:qmstart:100:root@pam:"
    failure = error(await client.call_tool(tool, {"upid": upid}))
    assert failure["code"] == "not_found"
    assert failure["field"] == "upid"
    assert "knows no task" in failure["message"]


# -- tool items 6 and 7 -----------------------------------------------------------------------


async def test_a_task_log_without_total_says_there_may_be_more(
    client: Client, proxy: FaultProxy
) -> None:
    """Before: a server that leaves out `total` got a full page reported as the whole log."""
    started = data(await client.call_tool("proxmox_guest_power", {"vmid": 100, "action": "reboot"}))
    proxy.inject(
        "GET",
        r"/nodes/pve1/tasks/[^/]+/log",
        Mutate(lambda answer: {key: value for key, value in answer.items() if key != "total"}),
    )
    page = data(await client.call_tool("proxmox_task_log", {"upid": started["upid"], "limit": 1}))
    assert len(page["lines"]) == 1
    assert "total" not in page
    assert page["may_have_more"] is True and page["next_start"] == 1
    rest = data(
        await client.call_tool(
            "proxmox_task_log", {"upid": started["upid"], "start": 1, "limit": 1000}
        )
    )
    assert rest["may_have_more"] is False and "next_start" not in rest
    assert rest["lines"][-1] == "TASK OK"


async def test_node_status_defaults_and_names_unknown_nodes(client: Client) -> None:
    """Before: `node` was required although the cluster has a default_node, and an unknown
    node was `proxmox_refused` ("hostname lookup failed")."""
    status = data(await client.call_tool("proxmox_node_status", {}))
    assert status["node"] == "pve1"
    failure = error(await client.call_tool("proxmox_node_status", {"node": "pve9"}))
    assert failure["code"] == "not_found" and failure["field"] == "node"
    assert "pve1, pve2, pve3" in failure["hint"]
    assert failure["details"]["nodes"] == ["pve1", "pve2", "pve3"]
