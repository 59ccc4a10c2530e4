"""Every call leaves its trace: unknown tools are audited, unrecorded reads are counted.

The SDK used to answer a tools/call of a name the gateway has no tool for itself ("Unknown
tool: X"), so probing for tools left no trace in the audit log; now the gateway refuses and
records it. A read answered while the audit log cannot be written shows in /metrics.
Driven by the real SDK client in memory and over real HTTP on 127.0.0.1 (static bearer
keys), each test reads the audit file or the metrics the gateway wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from pvemcp.gateway.invoke import MAX_TOOL_NAME, Gateway
from pvemcp.transports.mcp_app import UNKNOWN_TOOL_LABEL, build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import read_audit
from tests.gateway.test_pipeline import break_audit_dir
from tests.transports.test_http_app import KEYS, bearer, served

pytestmark = pytest.mark.anyio

LONG_NAME = "proxmox_" + "x" * 10_000


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return error


def refusals(audit_path: Path) -> list[dict[str, Any]]:
    return [r for r in read_audit(audit_path) if r["what"]["tier"] == "unknown"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_unknown_tool_in_memory_is_refused_and_recorded(
    gateway: Gateway, audit_path: Path, mode: str
) -> None:
    async with Client(build_mcp_server(gateway, local_principal), mode=mode) as client:
        error = error_of(await client.call_tool("proxmox_vm_delete_all", {"force": True}))
        long_error = error_of(await client.call_tool(LONG_NAME, {}))
    assert error["code"] == "unknown_tool"
    assert error["message"] == "no tool named 'proxmox_vm_delete_all'"
    assert "tools/list" in error["hint"]
    assert long_error["code"] == "unknown_tool"
    assert len(long_error["message"]) < MAX_TOOL_NAME + 64

    first, second = refusals(audit_path)
    assert first["phase"] == "record"
    assert first["who"] == {"sub": "local", "transport": "stdio"}
    assert first["what"]["tool"] == "proxmox_vm_delete_all"
    assert first["what"]["tier"] == "unknown"
    assert first["outcome"]["status"] == "rejected"
    assert first["outcome"]["error"] == "unknown_tool"
    # The caller chose the name: the record keeps its start and says how much was cut.
    cut = len(LONG_NAME) - MAX_TOOL_NAME
    assert second["what"]["tool"] == f"{LONG_NAME[:MAX_TOOL_NAME]}…(+{cut} chars)"
    assert len(audit_path.read_bytes()) < 4_000


async def test_unknown_and_hidden_tools_over_http_are_recorded_with_the_caller(
    gateway: Gateway, audit_path: Path
) -> None:
    async with served(gateway) as app:
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http,
            Client(streamable_http_client(app.url, http_client=http)) as client,
        ):
            assert not (await client.call_tool("proxmox_node_list", {})).is_error
            error = error_of(await client.call_tool("proxmox_nope", {"vmid": 100}))
            # Hidden from this caller's tools/list (remote callers read only by default).
            hidden = error_of(
                await client.call_tool("proxmox_guest_power", {"vmid": 100, "action": "start"})
            )
            error_of(await client.call_tool(LONG_NAME, {}))
        async with httpx2.AsyncClient() as plain:
            metrics = (await plain.get(f"{app.base}/metrics")).text
    assert error["code"] == "unknown_tool"
    assert "tools/list" in error["hint"]
    assert hidden["code"] == "denied"

    records = [r for r in read_audit(audit_path) if r["phase"] == "record"]
    read, unknown, denied, long = records
    caller = read["who"]
    assert caller["transport"] == "http"
    assert caller["token_sha256"]
    assert unknown["who"] == caller
    assert unknown["what"]["tool"] == "proxmox_nope"
    assert unknown["outcome"]["error"] == "unknown_tool"
    assert denied["who"] == caller
    assert denied["what"]["tool"] == "proxmox_guest_power"
    assert denied["outcome"]["status"] == "denied"
    assert long["what"]["tool"].startswith(LONG_NAME[:MAX_TOOL_NAME] + "…")
    # Unknown names are counted under one label, so callers cannot grow /metrics.
    label = f'pvemcp_tool_calls_total{{outcome="unknown_tool",tool="{UNKNOWN_TOOL_LABEL}"}} 2.0'
    assert label in metrics
    assert "proxmox_nope" not in metrics


async def test_reads_answered_unrecorded_are_counted_in_metrics(
    gateway: Gateway, audit_path: Path
) -> None:
    async with served(gateway) as app:
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http,
            Client(streamable_http_client(app.url, http_client=http)) as client,
        ):
            assert not (await client.call_tool("proxmox_node_list", {})).is_error
            break_audit_dir(audit_path)
            assert not (await client.call_tool("proxmox_node_list", {})).is_error
            assert not (await client.call_tool("proxmox_node_list", {})).is_error
        async with httpx2.AsyncClient() as plain:
            metrics = (await plain.get(f"{app.base}/metrics")).text
    assert 'pvemcp_audit_write_failures_total{phase="record"} 2.0' in metrics
