"""A large cluster (issue 15): the scaled seed, and guest listing and searching on it.

The simulator is seeded with 2,000 guests on 16 nodes (`seed.Scale`; the bench,
bench/large_cluster.py, uses 10,000 on 32): big enough that a per-guest request or a
page that grows with the cluster would show, small enough for CI. Each list or search
must be one REST round trip, counted at the gateway's backend with the read cache off,
and its default page must stay within about 2,000 tokens (8,000 bytes of JSON).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.proxmox.rest import RestBackend
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.permissions import Checker, audited
from pvemcp.simulator.seed import Scale, build_demo
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.simulator.server import main as simulate_main
from pvemcp.simulator.state import ClusterState
from pvemcp.simulator.views import node_usage
from pvemcp.tools import all_tools
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, operator_policy
from tests.e2e.test_client_schema import RecordingBackend
from tests.tools.test_examples import error_of

pytestmark = pytest.mark.anyio

SCALE = Scale(guests=2_000, nodes=16)
PAGE_BUDGET = 8_000
"""Bytes of a default page's JSON: about 2,000 tokens at 4 bytes a token."""


@pytest.fixture(scope="module")
def big_sim() -> Iterator[SimulatorHandle]:
    with simulator_in_thread(SimulatorOptions(time_scale=0, scale=SCALE)) as handle:
        yield handle


class Recorded:
    """A client on a gateway over `big_sim` whose backend keeps every request."""

    def __init__(self, client: Client, recorders: list[RecordingBackend]) -> None:
        self.client = client
        self.recorders = recorders

    def requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(m, p, params) for r in self.recorders for m, p, params, _ in r.calls]

    async def listing(self, arguments: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The call's structured result, and how many requests it sent."""
        before = len(self.requests())
        result = await self.client.call_tool("proxmox_guest_list", arguments)
        assert not result.is_error, error_of(result)
        assert result.structured_content is not None
        return result.structured_content, len(self.requests()) - before


@pytest.fixture
async def recorded(big_sim: SimulatorHandle, tmp_path: Path) -> AsyncIterator[Recorded]:
    recorders: list[RecordingBackend] = []

    def factory(cluster: ClusterConfig) -> RecordingBackend:
        recorders.append(RecordingBackend(RestBackend(cluster)))
        return recorders[-1]

    gateway = Gateway(
        tools=all_tools(),
        # No reuse of answers: every call must make (exactly) its own request.
        clusters=ClusterPool(
            {"demo": cluster_for(big_sim, read_cache_ttl=0)}, backend_factory=factory
        ),
        policy=operator_policy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor((big_sim.token_secret,)),
    )
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            yield Recorded(client, recorders)
    finally:
        await gateway.aclose()


# --- the seed ------------------------------------------------------------------------


def test_scaled_seed_has_the_counts_and_keeps_the_demo() -> None:
    demo = build_demo(1, 1_750_000_000.0)
    grown = build_demo(1, 1_750_000_000.0, SCALE)
    assert len(grown.guests) == SCALE.guests
    assert list(grown.nodes) == [f"pve{n}" for n in range(1, SCALE.nodes + 1)]
    # The demo's guests and nodes are untouched: tests written for the demo hold.
    for vmid, guest in demo.guests.items():
        assert grown.guests[vmid] == guest
    assert {n: grown.nodes[n] for n in demo.nodes} == demo.nodes
    # Generated guests go on the added nodes only, evenly.
    per_node = {name: 0 for name in grown.nodes}
    for guest in grown.guests.values():
        per_node[guest.node] += 1
    added = [per_node[f"pve{n}"] for n in range(4, SCALE.nodes + 1)]
    assert max(added) - min(added) <= 1
    assert sum(added) == SCALE.guests - len(demo.guests)


def test_scaled_seed_is_deterministic_and_plausible() -> None:
    first = ClusterState(7, clock=lambda: 1_750_000_000.0, scale=SCALE)
    again = ClusterState(7, clock=lambda: 1_750_000_000.0, scale=SCALE)
    other = ClusterState(8, clock=lambda: 1_750_000_000.0, scale=SCALE)
    assert first.guests == again.guests
    assert first.nodes == again.nodes
    assert first.guests != other.guests
    # Every node has the memory its running guests use, and room on its storage.
    for name, (cpu, mem) in node_usage(first).items():
        assert 0 <= cpu <= 1
        assert mem < first.nodes[name].mem_total, name
        for storage in first.storages:
            if name in storage.usage:
                assert first.volumes.usage(storage, name)[1] < storage.usage[name][0]


@pytest.mark.parametrize("caller", ["carol@pve", "bob@pve!monitoring"])
def test_a_listing_for_a_caller_without_root_is_linear(caller: str) -> None:
    """A caller who is not root gets its guests filtered by VM.Audit, checked per guest.
    Each check walked every guest (pool membership, and a copy of the list), so 2,000
    guests took over a second and 10,000 about half a minute; now a few hundred ms."""
    state = ClusterState(1, time_scale=0, scale=Scale(10_000, 32))
    started = time.perf_counter()
    visible = audited(state.access, caller, state.guests.values())
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert 0 < len(visible) <= len(state.guests)
    checker = Checker(state.access, caller, state.guests.values())
    sample = list(state.guests.values())[::97]
    seen = {g.vmid for g in visible}
    assert all((g.vmid in seen) == checker.has(f"/vms/{g.vmid}", ["VM.Audit"]) for g in sample)


@pytest.mark.parametrize("bad", [Scale.MIN_GUESTS - 1, Scale.MAX_GUESTS + 1])
def test_scale_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="guests must be"):
        Scale(guests=bad, nodes=4)
    with pytest.raises(SystemExit):
        simulate_main(["--guests", str(bad)])


def test_simulate_serves_a_scaled_cluster() -> None:
    """`pvemcp simulate --guests N --nodes M`, as a user runs it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pvemcp", "simulate", "--port=0", "--guests=500", "--nodes=8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(10)
    assert re.search(r"nodes pve1, .*, pve8 and 500 guests", banner), banner


def _demo_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl")}
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    return env


async def test_demo_serves_a_scaled_cluster(tmp_path: Path) -> None:
    """`pvemcp demo --guests N --nodes M` over stdio, with the SDK client."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "pvemcp", "demo", "--guests", "300", "--nodes", "5"],
        env=_demo_env(tmp_path),
    )
    async with Client(params) as client:
        listed = await client.call_tool("proxmox_guest_list", {"node": "pve5"})
    assert not listed.is_error, error_of(listed)
    assert listed.structured_content is not None
    # 286 generated guests round-robin on pve4 and pve5.
    assert listed.structured_content["total"] == 143


def test_demo_refuses_a_scale_out_of_range(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pvemcp", "demo", "--nodes", "1"],
        env=_demo_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "[simulator] guests/nodes: nodes must be 3 to 200" in done.stderr


# --- listing and searching through the gateway ---------------------------------------


async def test_default_page_is_one_request_and_fits_the_budget(recorded: Recorded) -> None:
    page, sent = await recorded.listing({})
    assert sent == 1
    assert recorded.requests()[-1] == ("GET", "/cluster/resources", {"type": "vm"})
    assert page["total"] == SCALE.guests
    assert len(page["guests"]) == 50
    assert page["next_offset"] == 50
    size = len(json.dumps(page, separators=(",", ":")))
    assert size <= PAGE_BUDGET, size
    vmids = [row["vmid"] for row in page["guests"]]
    assert vmids == sorted(vmids)


async def test_every_column_is_still_one_request(recorded: Recorded) -> None:
    """Extra columns come from the same answer; asked for, they widen each row (about
    twice), so half the default page of them fits the same budget."""
    columns = ["cpu", "mem", "disk", "uptime", "pool", "template", "hastate", "lock"]
    page, sent = await recorded.listing({"fields": [*columns, "net", "diskio"], "limit": 25})
    assert sent == 1
    assert all("maxmem_mib" in row and "uptime_s" in row for row in page["guests"])
    assert len(json.dumps(page, separators=(",", ":"))) <= PAGE_BUDGET


async def test_search_is_one_request_and_counts_every_match(
    recorded: Recorded, big_sim: SimulatorHandle
) -> None:
    guests = list(big_sim.state.guests.values())
    cases: list[tuple[dict[str, Any], int]] = [
        ({"name": "DB-0"}, sum("db-0" in g.name.lower() for g in guests)),
        ({"tag": "prod"}, sum("prod" in (g.tags or "").split(";") for g in guests)),
        (
            {"node": "pve9", "type": "lxc", "status": "running"},
            sum(g.node == "pve9" and g.kind == "lxc" and g.status == "running" for g in guests),
        ),
    ]
    for arguments, expected in cases:
        page, sent = await recorded.listing(arguments)
        assert sent == 1, arguments
        assert expected > 0, arguments
        assert page["total"] == expected, arguments
        assert len(page["guests"]) == min(expected, 50)


async def test_following_next_offset_walks_every_guest_once(recorded: Recorded) -> None:
    seen: list[int] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page, sent = await recorded.listing({"offset": offset, "limit": 500})
        assert sent == 1
        seen += [row["vmid"] for row in page["guests"]]
        offset = page.get("next_offset")  # left out on the last page
        pages += 1
    assert pages == SCALE.guests // 500
    assert seen == sorted(seen)
    assert len(set(seen)) == SCALE.guests
