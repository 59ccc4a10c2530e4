"""Every tool through the official SDK client, in-process, against the real simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway, read_audit

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["auto", "legacy"])
async def client(gateway: Gateway, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    server = build_mcp_server(gateway, local_principal)
    async with Client(server, mode=request.param) as c:
        yield c


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == structured
    return structured


def error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    payload: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return payload


async def test_tools_list_is_compact_and_honest(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    assert {
        "proxmox_cluster_status",
        "proxmox_node_list",
        "proxmox_node_status",
        "proxmox_next_vmid",
        "proxmox_guest_list",
        "proxmox_guest_get",
        "proxmox_guest_power",
        "proxmox_guest_stop",
        "proxmox_task_status",
        "proxmox_task_log",
        "proxmox_task_wait",
    } <= names
    for t in tools:
        schema = json.dumps(t.input_schema)
        assert t.input_schema["type"] == "object"
        assert '"title"' not in schema and "anyOf" not in schema, t.name
        assert t.output_schema is not None and t.output_schema["type"] == "object"
        assert t.annotations is not None
    by_name = {t.name: t for t in tools}
    power = by_name["proxmox_guest_power"].annotations
    stop = by_name["proxmox_guest_stop"].annotations
    listing = by_name["proxmox_guest_list"].annotations
    assert power is not None and stop is not None and listing is not None
    # Only hints that differ from MCP's defaults are sent (destructiveHint always on a write).
    assert listing.read_only_hint is True and listing.destructive_hint is None
    assert power.read_only_hint is None and power.destructive_hint is False
    assert stop.destructive_hint is True


async def test_cluster_and_nodes(client: Client) -> None:
    status = data(await client.call_tool("proxmox_cluster_status", {}))
    assert status["nodes_total"] == 3
    assert status["quorate"] is True
    nodes = data(await client.call_tool("proxmox_node_list", {}))["nodes"]
    assert [n["node"] for n in nodes] == ["pve1", "pve2", "pve3"]
    node = data(await client.call_tool("proxmox_node_status", {"node": "pve2"}))
    assert node["node"] == "pve2"
    assert node["mem_total_mib"] > node["mem_used_mib"] > 0
    vmid = data(await client.call_tool("proxmox_next_vmid", {}))["vmid"]
    listed = data(await client.call_tool("proxmox_guest_list", {"limit": 500}))["guests"]
    assert vmid >= 100
    assert vmid not in {g["vmid"] for g in listed}


async def test_guest_list_filters_and_pages(client: Client) -> None:
    everything = data(await client.call_tool("proxmox_guest_list", {"limit": 500}))
    total = everything["total"]
    assert total >= 10
    assert {g["type"] for g in everything["guests"]} == {"qemu", "lxc"}
    first = data(await client.call_tool("proxmox_guest_list", {"limit": 4}))
    assert len(first["guests"]) == 4 and first["next_offset"] == 4 and first["total"] == total
    second = data(await client.call_tool("proxmox_guest_list", {"limit": 4, "offset": 4}))
    assert {g["vmid"] for g in first["guests"]}.isdisjoint(g["vmid"] for g in second["guests"])
    on_pve1 = data(await client.call_tool("proxmox_guest_list", {"node": "pve1", "limit": 500}))
    assert on_pve1["guests"] and all(g["node"] == "pve1" for g in on_pve1["guests"])
    lxc = data(await client.call_tool("proxmox_guest_list", {"type": "lxc", "status": "running"}))
    assert all(g["type"] == "lxc" and g["status"] == "running" for g in lxc["guests"])
    tagged = [g for g in everything["guests"] if g.get("tags")]
    assert tagged, "the demo cluster has tagged guests"
    tag = tagged[0]["tags"][0]
    by_tag = data(await client.call_tool("proxmox_guest_list", {"tag": tag, "limit": 500}))
    assert by_tag["guests"] and all(tag in g["tags"] for g in by_tag["guests"])
    compact = everything["guests"][0]
    assert "maxmem_mib" not in compact
    wide = data(await client.call_tool("proxmox_guest_list", {"fields": ["mem", "cpu"]}))
    assert "maxmem_mib" in wide["guests"][0]


async def test_guest_get_by_vmid_and_name_and_ambiguity(client: Client) -> None:
    guests = data(await client.call_tool("proxmox_guest_list", {"limit": 500}))["guests"]
    names: dict[str, list[dict[str, Any]]] = {}
    for g in guests:
        names.setdefault(g.get("name", ""), []).append(g)
    unique = next(g for g in guests if len(names[g["name"]]) == 1)
    by_vmid = data(await client.call_tool("proxmox_guest_get", {"vmid": unique["vmid"]}))
    assert by_vmid["name"] == unique["name"]
    assert by_vmid["config"]
    by_name = data(
        await client.call_tool(
            "proxmox_guest_get", {"name": unique["name"], "include_config": False}
        )
    )
    assert by_name["vmid"] == unique["vmid"] and "config" not in by_name
    shared = next(name for name, gs in names.items() if len(gs) > 1)
    err = error(await client.call_tool("proxmox_guest_get", {"name": shared}))
    assert err["code"] == "ambiguous_name"
    assert sorted(c["vmid"] for c in err["details"]["candidates"]) == sorted(
        g["vmid"] for g in names[shared]
    )


async def test_start_with_wait_reports_progress_and_log(client: Client) -> None:
    stopped = data(
        await client.call_tool(
            "proxmox_guest_list", {"status": "stopped", "type": "qemu", "limit": 500}
        )
    )["guests"]
    vmid = stopped[0]["vmid"]
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    started = data(
        await client.call_tool(
            "proxmox_guest_power",
            {"vmid": vmid, "action": "start", "wait": True},
            progress_callback=on_progress,
        )
    )
    # The task has stopped; the guest it started is running (the answer said "stopped").
    assert started["task_status"] == "stopped" and started["exitstatus"] == "OK"
    assert started["guest_status"] == "running"
    assert seen, "progress notifications arrive while the task runs"
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)
    now = data(await client.call_tool("proxmox_guest_get", {"vmid": vmid}))
    assert now["status"] == "running"
    upid = started["upid"]
    status = data(await client.call_tool("proxmox_task_status", {"upid": upid}))
    assert status["ok"] is True and status["status"] == "stopped"
    log = data(await client.call_tool("proxmox_task_log", {"upid": upid}))
    assert log["lines"][-1] == "TASK OK"
    assert log["total"] == len(log["lines"])
    page = data(await client.call_tool("proxmox_task_log", {"upid": upid, "limit": 1}))
    assert page["lines"] == log["lines"][:1]
    assert page["next_start"] == 1
    # Starting it again fails inside the task, as on real PVE; the error carries the upid.
    again = error(await client.call_tool("proxmox_guest_power", {"vmid": vmid, "action": "start"}))
    assert again["code"] == "task_failed"
    assert "already running" in again["message"]
    failed_log = data(
        await client.call_tool("proxmox_task_log", {"upid": again["details"]["upid"]})
    )
    assert failed_log["lines"][-1].startswith("TASK ERROR")
    # A hard stop is destructive: the first call only returns the plan and a token.
    ask = error(await client.call_tool("proxmox_guest_stop", {"vmid": vmid}))
    assert ask["code"] == "confirmation_required"
    token = ask["details"]["confirm_token"]
    stop = data(
        await client.call_tool("proxmox_guest_stop", {"vmid": vmid, "confirm_token": token})
    )
    assert stop["exitstatus"] == "OK" and stop["guest_status"] == "stopped"


async def test_no_wait_then_task_wait(client: Client) -> None:
    running = data(
        await client.call_tool("proxmox_guest_list", {"status": "running", "type": "lxc"})
    )["guests"]
    vmid = running[0]["vmid"]
    queued = data(
        await client.call_tool(
            "proxmox_guest_power", {"vmid": vmid, "action": "reboot", "wait": False}
        )
    )
    # Not waited for: the task runs, and the guest's resulting state is not known yet.
    assert queued["task_status"] == "running"
    assert "exitstatus" not in queued and "guest_status" not in queued
    done = data(await client.call_tool("proxmox_task_wait", {"upid": queued["upid"]}))
    assert done["status"] == "stopped" and done["ok"] is True


async def test_results_say_the_guests_resulting_state(audit_path: Path) -> None:
    """Each power action answers the state it left the guest in, read after its task (the
    answer said `status: stopped` after a successful start: the task's state)."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as own:
        gateway = make_gateway({"demo": cluster_for(own)}, audit_path)
        try:
            async with Client(build_mcp_server(gateway, local_principal)) as client:
                resulting: dict[str, str] = {}
                for action in ("start", "suspend", "resume", "reboot", "shutdown"):
                    done = data(
                        await client.call_tool(
                            "proxmox_guest_power", {"vmid": 107, "action": action}
                        )
                    )
                    assert done["task_status"] == "stopped" and done["exitstatus"] == "OK"
                    resulting[action] = done["guest_status"]
        finally:
            await gateway.aclose()
    assert resulting == {
        "start": "running",
        "suspend": "paused",
        "resume": "running",
        "reboot": "running",
        "shutdown": "stopped",
    }


async def test_bad_upid_is_rejected(client: Client) -> None:
    err = error(await client.call_tool("proxmox_task_status", {"upid": "UPID:nope"}))
    assert err["code"] == "invalid_argument" and err["field"] == "upid"


async def test_remote_caller_sees_and_runs_only_what_policy_allows(
    gateway: Gateway, audit_path: Path
) -> None:
    alice = Principal(subject="alice", transport="http", client_id="agent")
    server = build_mcp_server(gateway, lambda _ctx: alice)
    async with Client(server, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "proxmox_guest_list" in names
        assert not names & {"proxmox_guest_power", "proxmox_guest_stop"}
        hidden = error(
            await client.call_tool("proxmox_guest_power", {"vmid": 101, "action": "start"})
        )
        assert hidden["code"] == "denied"
    (record,) = [r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_guest_power"]
    assert record["outcome"]["status"] == "denied"
    assert record["who"]["sub"] == "alice"
