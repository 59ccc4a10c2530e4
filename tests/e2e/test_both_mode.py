"""`pvemcp demo --mode both`: one process, one gateway, a stdio client and an HTTP client.

The stdio caller is the local operator, the HTTP caller its static key's subject; both land
in the one audit log. Closing stdin (what a stdio client does when it is done) stops the
whole process, HTTP included, so nothing is left holding the port.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from pvemcp.policy.audit_verify import verify_files
from tests.conftest import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "both-mode-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def payload(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def server_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0.1",
        "PVEMCP_HTTP__AUTH": "static",
        "PVEMCP_HTTP__STATIC_KEYS": f'["{KEY}"]',
        "PVEMCP_HTTP__PORT": str(port),
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    return env


async def test_stdio_and_http_clients_share_one_process(tmp_path: Path) -> None:
    port = free_port()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "pvemcp", "demo", "--mode", "both"],
        env=server_env(tmp_path, port),
    )
    url = f"http://127.0.0.1:{port}/mcp"
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as local:
            stdio_tools = {tool.name for tool in (await local.list_tools()).tools}
            assert "proxmox_guest_power" in stdio_tools, "the local operator may power guests"
            assert payload(await local.call_tool("proxmox_node_list", {}))["nodes"]
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http,
                Client(streamable_http_client(url, http_client=http)) as remote,
            ):
                http_tools = {tool.name for tool in (await remote.list_tools()).tools}
                assert "proxmox_guest_power" not in http_tools, "remote callers only read"
                assert payload(await remote.call_tool("proxmox_node_list", {}))["nodes"]
            # stdio keeps serving after the HTTP client left.
            assert payload(await local.call_tool("proxmox_cluster_status", {}))
        # Leaving the client closed stdin; the SDK waits 2 s before it would signal.
    log = (tmp_path / "stderr.log").read_text()
    assert '"event": "stdin_closed"' in log
    assert "signal_received" not in log, "stdin EOF alone stopped the process"
    assert not listening(port), "HTTP stopped with stdio: nothing keeps the port"

    audit = tmp_path / "audit.jsonl"
    calls = [r for r in read_audit(audit) if r["phase"] == "record"]
    who = {(r["who"]["sub"], r["who"]["transport"]) for r in calls}
    assert who == {("local", "stdio"), ("static:0", "http")}
    report = verify_files([audit])
    assert report.ok, report.summary()
