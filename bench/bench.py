"""Foundation benchmark: cold start, tools/list size, and the gateway's per-call overhead.

Run: `.venv/bin/python bench/bench.py` (add `--quick` for fewer iterations). Everything
runs on 127.0.0.1 against the embedded simulator; figures go to stdout.

(a) cold start and memory (`cold_start.py`): spawn → `tools/list` answered over stdio, CPU
    used, peak RSS and modules imported, for `pvemcp serve`, `pvemcp demo` and the SDK's
    hello-world server (the floor), interleaved, medians.
(b) `tools/list` size: compact JSON bytes of the tool definitions (about 4 bytes a token), per
    tool, for the default toolsets as the local operator sees them and for every toolset
    with every tool granted (the whole catalogue).
(c) gateway overhead: `proxmox_guest_list` through the SDK's in-memory client minus the same
    REST call (`GET /cluster/resources?type=vm`) made directly on the same backend, next to
    the SDK floor (the hello-world server's trivial tool through the same kind of client),
    interleaved in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import Client
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, PolicyConfig, Settings, TlsMode, ToolsConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.logsetup import configure_logging
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.tiers import Tier
from pvemcp.runtime import build_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, catalogue
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal

sys.path.insert(0, str(Path(__file__).parent))
import cold_start
import hello_server


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def tools_list_bytes(gateway: Gateway) -> tuple[int, int]:
    async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
        tools = (await client.list_tools()).tools
    wire = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    return len(json.dumps(wire, separators=(",", ":"))), len(tools)


async def overhead(gateway: Gateway, iterations: int) -> dict[str, list[float]]:
    """Interleaved, one of each in turn: the direct REST call, the same read through the
    gateway, and the SDK floor (the hello-world server's trivial tool, in-memory client)."""
    backend = gateway.clusters.backend("bench")
    samples: dict[str, list[float]] = {"direct": [], "gateway": [], "sdk": []}
    async with (
        Client(build_mcp_server(gateway, local_principal), mode="legacy") as client,
        Client(hello_server.mcp, mode="legacy") as hello,
    ):
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "direct": lambda: backend.call("GET", "/cluster/resources", {"type": "vm"}),
            "gateway": lambda: client.call_tool("proxmox_guest_list", {}),
            "sdk": lambda: hello.call_tool("hello", {"name": "bench"}),
        }
        for _ in range(20):  # warm connections and caches on every path
            for call in calls.values():
                await call()
        for _ in range(iterations):
            for name, call in calls.items():
                started = time.perf_counter()
                result = await call()
                samples[name].append(time.perf_counter() - started)
                assert not getattr(result, "is_error", False), result
    return samples


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


async def main(quick: bool) -> None:
    configure_logging("WARNING", Redactor())
    runs, iterations = (3, 100) if quick else (9, 500)
    # Spawns only, before this process starts its own simulator and gateways.
    print("(a) " + "\n".join(cold_start.report(cold_start.measure(runs), runs)))
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator_in_thread(SimulatorOptions(time_scale=0)) as sim,
    ):
        cluster = ClusterConfig(
            api_url=sim.url,
            token_id=sim.token_id,
            token_secret=SecretStr(sim.token_secret),
            tls=TlsMode.FINGERPRINT,
            fingerprint=sim.fingerprint,
            # (c) compares the pipeline with the same request made directly: no reuse of
            # answers (sequential calls never share one in flight either).
            read_cache_ttl=0,
        )
        # A second policy also names the local operator for every escape tool, so that
        # tools/list shows the whole catalogue (the default shows what the operator may run).
        everything = Path(tmp) / "everything.toml"
        escape = [spec.name for spec in all_tools() if spec.tier is Tier.ESCAPE]
        everything.write_text(
            f'[[rules]]\nid = "all"\neffect = "allow"\nsubjects = ["local"]\n'
            f"tools = {json.dumps(escape)}\n"
        )
        gateways = [
            Gateway(
                tools=catalogue(toolsets),
                clusters=ClusterPool({"bench": cluster}),
                policy=build_policy(Settings(policy=PolicyConfig(file=policy))),
                audit=AuditLog(Path(tmp) / "audit.jsonl"),
                redactor=Redactor([sim.token_secret]),
            )
            for toolsets, policy in ((ToolsConfig().toolsets, None), (None, everything))
        ]
        try:
            size, count = await tools_list_bytes(gateways[0])
            all_size, all_count = await tools_list_bytes(gateways[1])
            samples = await overhead(gateways[0], iterations)
        finally:
            for gateway in gateways:
                await gateway.aclose()

    for label, (nbytes, ntools) in (
        ("default toolsets, local operator", (size, count)),
        ("whole catalogue", (all_size, all_count)),
    ):
        print(
            f"(b) tools/list, {label}: {nbytes} bytes for {ntools} tools"
            f" ({nbytes // ntools} bytes/tool, ~{nbytes // 4} tokens)"
        )
    print("    budget of the default list: 33000 bytes (tests/tools/test_catalogue.py)")
    direct, gw, sdk = samples["direct"], samples["gateway"], samples["sdk"]
    for pct in (50, 99):
        d, g, f = percentile(direct, pct), percentile(gw, pct), percentile(sdk, pct)
        print(
            f"(c) p{pct}: direct REST {ms(d)}, via gateway {ms(g)}, overhead {ms(g - d)}"
            f" (x{g / d:.2f}); SDK floor (trivial tool) {ms(f)}: ours beyond it {ms(g - d - f)}"
        )
    print(f"    {iterations} calls of each, interleaved, same run, same backend connection")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    anyio.run(main, parser.parse_args().quick)
