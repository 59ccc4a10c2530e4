"""Every tool against a simulator that fails: a structured error in time, then it works.

The simulator breaks its own answers (`pvemcp.simulator.faults`); the gateway reaches it
over HTTPS with a short `read_timeout`, and the tools are called through the real MCP SDK
client. For each fault the answer must be a structured error (a code, a message, no
traceback, no `internal_error`) within the request timeout plus a margin, and once the
fault is cleared the same call must succeed on the same gateway: no restart, nothing
stuck. To keep CI bounded, every read tool of the catalogue meets one fast fault, and
every fault kind meets a sample of reads and writes. A task wait also survives the
simulator's HTTP server restarting under it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp.gateway.registry import AnySpec
from pvemcp.simulator.faults import Action, Cut, Hang, Huge, Respond, Trickle
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for, make_gateway
from tests.e2e.test_tools_inmemory import data
from tests.tools.test_examples import RUN

pytestmark = pytest.mark.anyio

READ_TIMEOUT = 0.5
REQUEST_TIMEOUT = 1.0
MARGIN = 3.0
"""Seconds a faulted call may take beyond one request's timeout (set-up, the MCP round
trip, a busy CI machine): a tool fails on the first broken answer, it does not retry."""
MAX_RESPONSE = 256 * 1024

FAULTS: dict[str, Action] = {
    "pve_500": Respond.pve_error(500, "got timeout"),
    "html_502": Respond.html(502),
    "not_json": Respond.not_json(),
    "hang": Hang(),
    "trickle": Trickle(interval=0.2),
    "reset": Cut(keep=10, reset=True),
    "truncated": Cut(keep=10, reset=False),
    "huge": Huge(2 * MAX_RESPONSE),
}

READS = [spec for spec in RUN if spec.read_only and spec.examples]
OFFLINE = frozenset(
    {
        "proxmox_toolset_enable",
        "proxmox_approval_status",
        "proxmox_call_undo",
        "proxmox_task_mine",
        "proxmox_api_search",
        "proxmox_api_describe",
    }
)
"""Read tools whose example the gateway answers alone (from its toolsets, approvals, audit
log and bundled API index): a broken node must not reach them."""
SAMPLE_READS = ("proxmox_guest_list", "proxmox_guest_get")
_EACH = itertools.count()
WRITES: dict[str, Callable[[], dict[str, Any]]] = {
    "proxmox_guest_config_update": lambda: {
        "vmid": 102,
        "values": {"description": f"fault test {next(_EACH)}"},
    },
    "proxmox_storage_volume_update": lambda: {
        "volid": "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst",
        "notes": f"fault test {next(_EACH)}",
    },
    "proxmox_guest_stop": lambda: {"vmid": 102},
}
"""Arguments of writes that change something each time (a write with nothing to change
sends nothing, and would not meet the fault), or that end in the same state whether or
not the fault let the first one through: the retry must succeed either way.
`proxmox_guest_stop` is destructive: confirmed, as a user would."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module-wide, so the gateways below serve every test of the module: a gateway's
    first tools/list (the SDK client lists before it checks a result) costs about 1 s."""
    return "asyncio"


@dataclass
class Setup:
    sim: SimulatorHandle
    client: Client


@pytest.fixture(scope="module")
async def setups(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Setup]]:
    """Gateways on three simulators: without Ceph and with (reads leave them as they
    are), and one the writes change; each test clears its faults."""
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    with (
        simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as plain,
        simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE, ceph=True)) as ceph,
        simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as writes,
    ):
        async with (
            connect(plain, audit) as plain_client,
            connect(ceph, audit) as ceph_client,
            connect(writes, audit) as writes_client,
        ):
            yield {
                "plain": Setup(plain, plain_client),
                "ceph": Setup(ceph, ceph_client),
                "writes": Setup(writes, writes_client),
            }


@asynccontextmanager
async def connect(sim: SimulatorHandle, audit: Path, **changes: Any) -> AsyncIterator[Client]:
    """An SDK client on a fresh gateway with short timeouts."""
    cluster = cluster_for(
        sim,
        read_timeout=READ_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        max_response_bytes=MAX_RESPONSE,
        read_cache_ttl=0,  # every call reaches the simulator and meets the fault
        **changes,
    )
    gateway = make_gateway({"demo": cluster}, audit, (sim.token_secret,))
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            yield client
    finally:
        await gateway.aclose()


async def call(client: Client, spec: AnySpec, arguments: Mapping[str, Any]) -> CallToolResult:
    """Call a tool; a destructive call's confirmation is given, as a user approving it."""
    result = await client.call_tool(spec.name, dict(arguments))
    if result.is_error:
        error = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
        if error["code"] == "confirmation_required":
            token = error["details"]["confirm_token"]
            result = await client.call_tool(spec.name, {**arguments, "confirm_token": token})
    return result


def structured_error(result: CallToolResult, elapsed: float) -> dict[str, Any]:
    """The error of a faulted call, checked: structured, explained, in time."""
    assert elapsed < REQUEST_TIMEOUT + MARGIN, f"took {elapsed:.1f} s"
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text and 'File "' not in text, text
    error: dict[str, Any] = json.loads(text)["error"]
    assert error["code"] and error["message"], error
    assert error["code"] != "internal_error", error  # an unexpected exception: a gateway bug
    return error


async def faulted_then_fine(
    setup: Setup,
    spec: AnySpec,
    action: Action,
    methods: tuple[str | None, ...] = (None,),
    arguments: Callable[[], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Call `spec` (with `arguments()`, or its first example) while `action` breaks every
    request of `methods` (None: any method), then again once the fault is cleared: the
    error, then success."""
    make = arguments or (lambda: spec.examples[0])
    faults = [setup.sim.faults.inject(action, method=method) for method in methods]
    try:
        started = time.monotonic()
        result = await call(setup.client, spec, make())
        error = structured_error(result, time.monotonic() - started)
        assert sum(fault.hits for fault in faults) >= 1, "the call met the fault"
    finally:
        setup.sim.faults.clear()
    data(await call(setup.client, spec, make()))
    return error


@pytest.mark.parametrize("spec", READS, ids=[spec.name for spec in READS])
async def test_every_read_tool_reports_a_pve_error_then_recovers(
    setups: dict[str, Setup], spec: AnySpec
) -> None:
    setup = setups["ceph" if spec.toolset == "ceph" else "plain"]
    if spec.name in OFFLINE:
        fault = setup.sim.faults.inject(FAULTS["pve_500"])
        try:
            data(await call(setup.client, spec, spec.examples[0]))
        finally:
            setup.sim.faults.clear()
        assert fault.hits == 0
        return
    error = await faulted_then_fine(setup, spec, FAULTS["pve_500"])
    # PVE's own message: an upstream failure is never passed off as, say, not_found.
    assert "got timeout" in error["message"], error


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
@pytest.mark.parametrize("name", SAMPLE_READS)
async def test_each_fault_on_a_read(setups: dict[str, Setup], name: str, fault: Action) -> None:
    spec = next(spec for spec in READS if spec.name == name)
    await faulted_then_fine(setups["plain"], spec, fault)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
@pytest.mark.parametrize("name", WRITES)
async def test_each_fault_on_a_write(setups: dict[str, Setup], name: str, fault: Action) -> None:
    """The fault meets the write itself; its planning reads go through."""
    spec = next(spec for spec in RUN if spec.name == name)
    methods = ("POST", "PUT", "DELETE")
    await faulted_then_fine(setups["writes"], spec, fault, methods, WRITES[name])


async def test_a_task_wait_survives_the_simulator_restarting(tmp_path: Path) -> None:
    """pveproxy restarts while `proxmox_task_wait` polls: the polls that fail meanwhile
    do not end the wait, which reports the finished task once the node answers again."""
    with simulator_in_thread(SimulatorOptions(time_scale=1.0)) as sim:
        async with connect(sim, tmp_path / "audit.jsonl") as client:
            arguments = {"vmid": 103, "action": "start", "wait": False}
            upid = data(await client.call_tool("proxmox_guest_power", arguments))["upid"]
            outcome: dict[str, Any] = {}

            async def wait() -> None:
                outcome.update(data(await client.call_tool("proxmox_task_wait", {"upid": upid})))

            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await anyio.sleep(0.3)
                await sim.stop_http()
                await anyio.sleep(1.5)  # several polls refused meanwhile
                assert outcome == {}, "still waiting across the outage"
                await sim.start_http()
    assert outcome["upid"] == upid
    assert outcome["ok"] is True, outcome
