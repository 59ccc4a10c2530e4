"""`pvemcp demo` as a real subprocess over stdio, driven by the official SDK client.

This is the README's promise: one command, no Proxmox, and an agent can list guests, start
a stopped VM with `wait`, receive progress, and read the finished task's log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from pvemcp.policy.audit_verify import verify_files

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def payload(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_demo_over_stdio(tmp_path: Path, mode: str) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(audit),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0.2",
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "pvemcp", "demo"], env=env)
    async with Client(params, mode=mode) as client:
        guests = payload(
            await client.call_tool(
                "proxmox_guest_list", {"status": "stopped", "type": "qemu", "limit": 500}
            )
        )["guests"]
        assert guests
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        started = payload(
            await client.call_tool(
                "proxmox_guest_power",
                {"vmid": guests[0]["vmid"], "action": "start", "wait": True},
                progress_callback=on_progress,
            )
        )
        assert started["exitstatus"] == "OK"
        assert seen
        log = payload(await client.call_tool("proxmox_task_log", {"upid": started["upid"]}))
        assert log["lines"][-1] == "TASK OK"
        bad = await client.call_tool("proxmox_guest_get", {"vmid": "abc"})
        assert bad.is_error
        assert json.loads(bad.content[0].text)["error"]["field"] == "vmid"  # type: ignore[union-attr]
        # The process keeps serving after a bad call.
        assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(
        r["phase"] == "intent" and r["what"]["tool"] == "proxmox_guest_power" for r in records
    )
    calls = [r for r in records if r["phase"] != "checkpoint"]
    assert all(r["who"] == {"sub": "local", "transport": "stdio"} for r in calls)
    assert records[-1]["phase"] == "checkpoint", "a clean stop closes the log with a checkpoint"
    report = verify_files([audit])
    assert report.ok, report.summary()
    assert report.unpaired_intents == [], "every intent has its outcome"
