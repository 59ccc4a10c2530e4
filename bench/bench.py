"""Foundation benchmark: cold start, tools/list size, and the gateway's per-call overhead.

Run: `.venv/bin/python bench/bench.py` (add `--quick` for fewer iterations). Everything
runs on 127.0.0.1 against the embedded simulator; figures go to stdout.

(a) cold start: spawn `python -m pvemcp demo` → `tools/list` answered over stdio, median of 5.
(b) `tools/list` size: compact JSON bytes of the tool definitions (about 4 bytes a token), per
    tool, for the default toolsets as the local operator sees them and for every toolset
    with every tool granted (the whole catalogue).
(c) gateway overhead: `proxmox_guest_list` through the SDK's in-memory client minus the same
    REST call (`GET /cluster/resources?type=vm`) made directly on the same backend, same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
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


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def cold_start(runs: int, audit_dir: Path) -> list[float]:
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(audit_dir / "cold.jsonl"),
        "PVEMCP_LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "pvemcp", "demo"], env=env)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        async with Client(params, mode="legacy") as client:
            await client.list_tools()
            times.append(time.perf_counter() - started)
    return times


async def tools_list_bytes(gateway: Gateway) -> tuple[int, int]:
    async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
        tools = (await client.list_tools()).tools
    wire = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    return len(json.dumps(wire, separators=(",", ":"))), len(tools)


async def overhead(gateway: Gateway, iterations: int) -> dict[str, list[float]]:
    backend = gateway.clusters.backend("bench")
    direct: list[float] = []
    via_gateway: list[float] = []
    async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
        for _ in range(20):  # warm connections and caches on both paths
            await backend.call("GET", "/cluster/resources", {"type": "vm"})
            await client.call_tool("proxmox_guest_list", {})
        for _ in range(iterations):
            started = time.perf_counter()
            await backend.call("GET", "/cluster/resources", {"type": "vm"})
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = await client.call_tool("proxmox_guest_list", {})
            via_gateway.append(time.perf_counter() - started)
            assert not result.is_error
    return {"direct": direct, "gateway": via_gateway}


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


async def main(quick: bool) -> None:
    configure_logging("WARNING", Redactor())
    runs, iterations = (3, 100) if quick else (5, 500)
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
            starts = await cold_start(runs, Path(tmp))
            size, count = await tools_list_bytes(gateways[0])
            all_size, all_count = await tools_list_bytes(gateways[1])
            samples = await overhead(gateways[0], iterations)
        finally:
            for gateway in gateways:
                await gateway.aclose()

    print(
        f"(a) cold start, spawn -> tools/list over stdio: median {ms(statistics.median(starts))}"
        f" of {runs} (min {ms(min(starts))}, max {ms(max(starts))})"
    )
    for label, (nbytes, ntools) in (
        ("default toolsets, local operator", (size, count)),
        ("whole catalogue", (all_size, all_count)),
    ):
        print(
            f"(b) tools/list, {label}: {nbytes} bytes for {ntools} tools"
            f" ({nbytes // ntools} bytes/tool, ~{nbytes // 4} tokens)"
        )
    print("    budget of the default list: 33000 bytes (tests/tools/test_catalogue.py)")
    direct, gw = samples["direct"], samples["gateway"]
    for pct in (50, 99):
        d, g = percentile(direct, pct), percentile(gw, pct)
        print(
            f"(c) p{pct}: direct REST {ms(d)}, via gateway {ms(g)}, overhead {ms(g - d)}"
            f" (x{g / d:.2f})"
        )
    print(f"    {iterations} sequential calls each, same run, same backend connection")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke check")
    anyio.run(main, parser.parse_args().quick)
