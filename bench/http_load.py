"""Throughput and latency over streamable HTTP with OIDC, at 1, 16 and 64 concurrent clients.

Run: `.venv/bin/python bench/http_load.py` (after scripts/bootstrap, which installs the
OpenID provider; add `--seconds 3` for a shorter run).

Three processes on 127.0.0.1: the PVE simulator (`pvemcp simulate`, tasks instant), the
gateway (`pvemcp serve --mode http`, OIDC against a real npm oidc-provider, policy and
audit on) and this load generator. Each virtual client opens its own MCP session with a
provider-issued bearer token and calls the read tool `proxmox_node_status` in a loop for a
fixed time. Printed per level: calls/s, p50 and p99 latency, errors, and the gateway's RSS.
All three share the machine's cores, so the figures are a floor for the gateway alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.oidc import AGENT, run_oidc_provider

TOOL = "proxmox_node_status"
PROTOCOL = "2025-11-25"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def simulator() -> Iterator[dict[str, str]]:
    """`pvemcp simulate` in its own process; yields the env lines that point a gateway at it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pvemcp", "simulate", "--port", "0", "--time-scale", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        env: dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            match = re.match(r"export (PVEMCP_\w+)=(.*)", line.strip())
            if match:
                env[match.group(1)] = match.group(2).strip("'")
            if "PVEMCP_FINGERPRINT" in env:
                break
        yield env
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def gateway(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pvemcp", "serve", "--mode", "http", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the gateway did not start")
        yield process
    finally:
        process.terminate()
        process.wait(15)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sse_result(text: str) -> dict[str, object]:
    """The JSON-RPC response in an SSE body (or a plain JSON body)."""
    for line in text.splitlines():
        if line.startswith("data:"):
            message: dict[str, object] = json.loads(line[5:])
            if "id" in message:
                return message
    parsed: dict[str, object] = json.loads(text)
    return parsed


async def client(
    http: httpx2.AsyncClient, url: str, token: str, until: float, latencies: list[float]
) -> int:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    response = await http.post(url, json=init, headers=headers)
    response.raise_for_status()
    headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
    headers["MCP-Protocol-Version"] = PROTOCOL
    notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post(url, json=notice, headers=headers)
    errors, call_id = 0, 0
    while anyio.current_time() < until:
        call_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"node": "pve2"}},
        }
        started = anyio.current_time()
        response = await http.post(url, json=body, headers=headers)
        result = sse_result(response.text)
        latencies.append(anyio.current_time() - started)
        outcome = result.get("result")
        if (
            response.status_code != 200
            or "error" in result
            or (isinstance(outcome, dict) and outcome.get("isError"))
        ):
            errors += 1
    await http.delete(url, headers=headers)
    return errors


async def level(
    url: str, token: str, clients: int, seconds: float
) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx2.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx2.AsyncClient(timeout=30, limits=limits) as http:
        until = anyio.current_time() + seconds
        results: list[int] = []

        async def one() -> None:
            results.append(await client(http, url, token, until, latencies))

        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            for _ in range(clients):
                group.start_soon(one)
        elapsed = anyio.current_time() - started
        errors = sum(results)
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return len(latencies) / elapsed, p50, p99, errors


def main(seconds: float) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_oidc_provider(resource) as idp,
        simulator() as sim,
    ):
        token = idp.token(*AGENT, ["pvemcp", "pve.read"])
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PVEMCP_")},
            **sim,
            "PVEMCP_AUDIT__PATH": str(Path(tmp) / "audit.jsonl"),
            "PVEMCP_LOG_LEVEL": "WARNING",
            "PVEMCP_HTTP__AUTH": "oidc",
            "PVEMCP_HTTP__OIDC__ISSUER": idp.issuer,
            "PVEMCP_HTTP__OIDC__REQUIRED_SCOPES": '["pvemcp"]',
            "PVEMCP_HTTP__RATE_LIMIT_PER_MINUTE": "0",
        }
        with gateway(env, port) as process:
            anyio.run(level, resource, token, 1, 1.0)  # warm-up
            print(f"gateway RSS after start: {rss_mib(process.pid):.0f} MiB")
            for clients in (1, 16, 64):
                rate, p50, p99, errors = anyio.run(level, resource, token, clients, seconds)
                print(
                    f"{clients:3d} clients: {rate:7.1f} calls/s   p50 {p50 * 1000:7.2f} ms   "
                    f"p99 {p99 * 1000:7.2f} ms   errors {errors}   "
                    f"gateway RSS {rss_mib(process.pid):.0f} MiB"
                )
    print(f"    {TOOL} over streamable HTTP (SSE responses), OIDC bearer, {seconds:.0f} s a level")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    main(parser.parse_args().seconds)
