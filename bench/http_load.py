"""Throughput and latency over streamable HTTP with OIDC, at 1, 16 and 64 concurrent clients.

Run: `.venv/bin/python bench/http_load.py` (after scripts/bootstrap, which installs the
OpenID provider; add `--seconds 3` for a shorter run).

Three processes on 127.0.0.1: the PVE simulator (`pvemcp simulate`, tasks instant), the
gateway (`pvemcp serve --mode http`, OIDC against a real npm oidc-provider, policy and
audit on) and this load generator. Each virtual client opens its own MCP session with a
provider-issued bearer token and calls the read tool `proxmox_node_status` in a loop for a
fixed time. Printed per level: calls/s, p50 and p99 latency, errors, the gateway's RSS and
the CPU milliseconds each process spent per call. All three share the machine's cores, so
the figures are a floor for the gateway alone. Three gateway settings are measured in turn
(`VARIANTS`): the default, every answer streamed, and the default without the read cache.
"""

from __future__ import annotations

import argparse
import asyncio
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
def simulator() -> Iterator[tuple[dict[str, str], int]]:
    """`pvemcp simulate` in its own process; yields the env lines that point a gateway at it
    and its pid."""
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
        yield env, process.pid
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for JSON-RPC
    POSTs: the generator's own CPU per call stays small (httpx2 cost about 2 ms a call,
    close to half of what it measured), so the figures say more about the gateway."""

    def __init__(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.port, self.reader, self.writer = port, reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(port, reader, writer)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        received: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                received[name.strip().lower()] = value.strip()
        if "content-length" in received:
            payload = await self.reader.readexactly(int(received["content-length"]))
        elif received.get("transfer-encoding") == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
            payload = b"".join(parts)
        else:
            payload = b""
        return status, received, payload

    def close(self) -> None:
        self.writer.close()


def rpc_result(payload: bytes) -> dict[str, object]:
    """The JSON-RPC response in an SSE body (or a plain JSON body)."""
    for line in payload.splitlines():
        if line.startswith(b"data:"):
            message: dict[str, object] = json.loads(line[5:])
            if "id" in message:
                return message
    parsed: dict[str, object] = json.loads(payload)
    return parsed


async def open_session(
    connection: Connection, path: str, token: str, name: str = "bench"
) -> dict[str, str]:
    """Initialize an MCP session on `connection`; the headers its requests carry."""
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
            "clientInfo": {"name": name, "version": "1"},
        },
    }
    status, received, _ = await connection.request("POST", path, headers, json.dumps(init).encode())
    if status != 200:
        raise RuntimeError(f"initialize answered HTTP {status}")
    headers["Mcp-Session-Id"] = received["mcp-session-id"]
    headers["MCP-Protocol-Version"] = PROTOCOL
    notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await connection.request("POST", path, headers, json.dumps(notice).encode())
    return headers


async def client(port: int, path: str, token: str, until: float, latencies: list[float]) -> int:
    """One MCP session on its own connection: initialize, then the read tool in a loop."""
    connection = await Connection.open(port)
    headers = await open_session(connection, path, token)
    errors, call_id = 0, 0
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        call_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"node": "pve2"}},
        }
        started = loop.time()
        status, _, payload = await connection.request(
            "POST", path, headers, json.dumps(body).encode()
        )
        result = rpc_result(payload)
        latencies.append(loop.time() - started)
        outcome = result.get("result")
        if (
            status != 200
            or "error" in result
            or (isinstance(outcome, dict) and outcome.get("isError"))
        ):
            errors += 1
    await connection.request("DELETE", path, headers)
    connection.close()
    return errors


async def level(
    port: int, path: str, token: str, clients: int, seconds: float
) -> tuple[int, float, float, float, int]:
    """Calls made, calls/s, p50 and p99 latency, errors."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    started = loop.time()
    results = await asyncio.gather(
        *(client(port, path, token, until, latencies) for _ in range(clients))
    )
    elapsed = loop.time() - started
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return len(latencies), len(latencies) / elapsed, p50, p99, sum(results)


VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("response_mode = auto (the default: reads get one JSON body)", {}),
    ("response_mode = sse (every answer an SSE stream)", {"PVEMCP_HTTP__RESPONSE_MODE": "sse"}),
    (
        "response_mode = auto, read_cache_ttl = 0 (no reuse; identical reads in flight "
        "still share one request)",
        {"PVEMCP_CLUSTERS__SIM__READ_CACHE_TTL": "0"},
    ),
)
"""Gateway settings measured in turn, each on a fresh gateway."""


def as_cluster(sim: dict[str, str]) -> dict[str, str]:
    """The simulator's one-cluster env lines as cluster `sim`, so its per-cluster settings
    (such as `read_cache_ttl`) can be set from the environment too."""
    return {f"PVEMCP_CLUSTERS__SIM__{name.removeprefix('PVEMCP_')}": v for name, v in sim.items()}


def gateway_env(sim: dict[str, str], tmp: str, issuer: str) -> dict[str, str]:
    """A measured gateway's environment: this one's without PVEMCP_ settings, the
    simulator as cluster `sim`, audit in `tmp`, OIDC bearers from `issuer`, no rate limit
    (the load would hit it)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PVEMCP_")},
        **as_cluster(sim),
        "PVEMCP_AUDIT__PATH": str(Path(tmp) / "audit.jsonl"),
        "PVEMCP_LOG_LEVEL": "WARNING",
        "PVEMCP_HTTP__AUTH": "oidc",
        "PVEMCP_HTTP__OIDC__ISSUER": issuer,
        "PVEMCP_HTTP__OIDC__REQUIRED_SCOPES": '["pvemcp"]',
        "PVEMCP_HTTP__RATE_LIMIT_PER_MINUTE": "0",
    }


def run_levels(port: int, token: str, seconds: float, pid: int, sim_pid: int) -> None:
    asyncio.run(level(port, "/mcp", token, 1, 1.0))  # warm-up
    print(f"  gateway RSS after start: {rss_mib(pid):.0f} MiB")
    for clients in (1, 16, 64):
        before = (cpu_seconds(pid), cpu_seconds(sim_pid), time.process_time())
        calls, rate, p50, p99, errors = asyncio.run(level(port, "/mcp", token, clients, seconds))
        after = (cpu_seconds(pid), cpu_seconds(sim_pid), time.process_time())
        gw, sm, gen = ((b - a) * 1000 / calls for a, b in zip(before, after, strict=True))
        print(
            f"  {clients:3d} clients: {rate:7.1f} calls/s   p50 {p50 * 1000:7.2f} ms   "
            f"p99 {p99 * 1000:7.2f} ms   errors {errors}   RSS {rss_mib(pid):.0f} MiB   "
            f"CPU ms/call: gateway {gw:.2f} simulator {sm:.2f} load {gen:.2f}"
        )


def main(seconds: float) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_oidc_provider(resource) as idp,
        simulator() as (sim, sim_pid),
    ):
        token = idp.token(*AGENT, ["pvemcp", "pve.read"])
        base = gateway_env(sim, tmp, idp.issuer)
        for title, settings in VARIANTS:
            print(title)
            with gateway({**base, **settings}, port) as process:
                run_levels(port, token, seconds, process.pid, sim_pid)
    print(f"{TOOL} over streamable HTTP, OIDC bearer, one session a client, {seconds:g} s a level")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    main(parser.parse_args().seconds)
