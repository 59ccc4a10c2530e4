"""Large cluster: a 10,000-guest simulator, and guest listing and searching through the gateway.

Run: `.venv/bin/python bench/large_cluster.py` (`--quick` for fewer calls; `--guests`,
`--nodes` for another size). Everything in this process, on 127.0.0.1:

- seed: building the scaled cluster state (`ClusterState(scale=...)`), median of 3;
- simulator: its handler for `GET /cluster/resources?type=vm` in process (under the
  state lock, as a request runs it), and the answer's size;
- floor: the same request made directly on the gateway's backend connection (HTTPS,
  JSON decoded), which every list or search needs once;
- gateway: `proxmox_guest_list` through the SDK's in-memory client, listing and
  searching (by name, by tag), with `read_cache_ttl = 0` so every call makes that one
  request; p50 and p99, each next to the floor as a ratio and as the difference (what
  the gateway adds: validation, filtering, paging, policy, audit, the MCP round trip);
- page: the default page's JSON bytes and tokens (about 4 bytes a token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from pydantic import SecretStr

from bench import ms, percentile  # bench/bench.py, beside this script
from pvemcp.config import ClusterConfig, Settings, TlsMode
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.logsetup import configure_logging
from pvemcp.policy.audit import AuditLog
from pvemcp.runtime import build_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.endpoints import find_route
from pvemcp.simulator.router import Context
from pvemcp.simulator.seed import Scale
from pvemcp.simulator.server import DEFAULT_TOKEN_ID, SimulatorOptions, simulator_in_thread
from pvemcp.simulator.state import ClusterState
from pvemcp.tools import all_tools
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal

CALLS = {"list": {}, "search by name": {"name": "db-0"}, "search by tag": {"tag": "prod"}}
"""The guest_list calls measured, each against the same direct request."""


def seed_seconds(scale: Scale, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        ClusterState(1, time_scale=0, scale=scale)
        times.append(time.perf_counter() - started)
    return times


def handler_seconds(state: ClusterState, runs: int) -> tuple[list[float], int]:
    """The simulator's own time for the listing (handler and JSON encoding), and its bytes."""
    found = find_route("GET", ["cluster", "resources"])
    assert found is not None
    route, _ = found
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        with state.lock:
            result = route.handler(
                Context(state, DEFAULT_TOKEN_ID, state.advance()), {"type": "vm"}
            )
        size = len(json.dumps({"data": result.data}, separators=(",", ":")))
        times.append(time.perf_counter() - started)
    return times, size


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def measure(scale: Scale, calls: int) -> None:
    seeds = seed_seconds(scale, 3)
    print(
        f"seed: {scale.guests} guests on {scale.nodes} nodes built in "
        f"{ms(statistics.median(seeds))} (median of 3)"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator_in_thread(SimulatorOptions(time_scale=0, scale=scale)) as sim,
    ):
        answer, size = handler_seconds(sim.state, max(5, calls // 5))
        print(
            f"simulator: GET /cluster/resources?type=vm handler + JSON p50 "
            f"{ms(percentile(answer, 50))}, {size} bytes"
        )
        cluster = ClusterConfig(
            api_url=sim.url,
            token_id=sim.token_id,
            token_secret=SecretStr(sim.token_secret),
            tls=TlsMode.FINGERPRINT,
            fingerprint=sim.fingerprint,
            read_cache_ttl=0,
            api_schema_fetch=False,  # the simulator serves no apidoc.js: the shipped one
        )
        gateway = Gateway(
            tools=all_tools(),
            clusters=ClusterPool({"bench": cluster}),
            policy=build_policy(Settings()),
            audit=AuditLog(Path(tmp) / "audit.jsonl"),
            redactor=Redactor([sim.token_secret]),
        )
        backend = gateway.clusters.backend("bench")
        samples: dict[str, list[float]] = {"direct": [], **{label: [] for label in CALLS}}
        try:
            async with Client(build_mcp_server(gateway, local_principal)) as client:

                async def direct() -> None:
                    await backend.call("GET", "/cluster/resources", {"type": "vm"})

                page = await client.call_tool("proxmox_guest_list", {})  # warm both paths
                await direct()
                for _ in range(calls):
                    samples["direct"].append(await timed(direct))
                    for label, arguments in CALLS.items():

                        async def listing(arguments: dict[str, Any] = arguments) -> None:
                            result = await client.call_tool("proxmox_guest_list", arguments)
                            assert not result.is_error, result.content

                        samples[label].append(await timed(listing))
        finally:
            await gateway.aclose()
    floor = samples["direct"]
    for pct in (50, 99):
        print(f"floor, the same REST call direct: p{pct} {ms(percentile(floor, pct))}")
    for label in CALLS:
        for pct in (50, 99):
            via, base = percentile(samples[label], pct), percentile(floor, pct)
            print(
                f"guest_list {label:15s} p{pct}: {ms(via)} (x{via / base:.2f} the floor, "
                f"gateway adds {ms(via - base)})"
            )
    structured = json.dumps(page.structured_content, separators=(",", ":"))
    total = page.structured_content["total"] if page.structured_content else None
    print(
        f"default page: {len(structured)} bytes of JSON (~{len(structured) // 4} tokens), "
        f"total {total}; {calls} calls of each, read_cache_ttl = 0, one request per call"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--calls", type=int, default=50, help="calls of each kind (50)")
    parser.add_argument("--quick", action="store_true", help="10 calls of each kind")
    args = parser.parse_args()
    configure_logging("WARNING", Redactor())
    anyio.run(measure, Scale(args.guests, args.nodes), 10 if args.quick else args.calls)


if __name__ == "__main__":
    main()
