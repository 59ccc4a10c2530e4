"""Two agents on one gateway at the same time: two MCP SDK clients over real HTTP, each
with its own static bearer key (subjects `static:0` and `static:1`), both operators, the
first denied clones. They run concurrently against one gateway and one simulator whose
tasks run long (a start takes 30 s): each starts tasks without waiting and changes a
guest of its own, and then each sees only its own tasks, cannot read, wait for or cancel
the other's (a structured `not_your_task`), both changes landed, and what
`proxmox_capabilities_list` says each may do differs as their policy does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import tier_map
from tests.conftest import cluster_for
from tests.tools.test_catalogue import TOOLS
from tests.tools.test_examples import error_of
from tests.transports.test_http_app import KEYS, bearer, served

pytestmark = pytest.mark.anyio

POLICY = """
version = 1

[[rules]]
id = "static-0-no-clones"
effect = "deny"
subjects = ["sub:static:0"]
tools = ["proxmox_guest_clone"]
"""


@dataclass
class Agent:
    """One agent's client and what it did."""

    name: str
    client: Client
    upids: list[str] = field(default_factory=list)

    async def call(self, tool: str, /, **arguments: Any) -> CallToolResult:
        """Call `tool`, confirming with the token a confirmation answer hands back."""
        result = await self.client.call_tool(tool, arguments)
        error = error_of(result)
        if error is not None and error["code"] == "confirmation_required":
            token = error["details"]["confirm_token"]
            result = await self.client.call_tool(tool, {**arguments, "confirm_token": token})
        return result

    async def ok(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        result = await self.call(tool, **arguments)
        assert not result.is_error, (self.name, tool, error_of(result))
        structured: dict[str, Any] | None = result.structured_content
        assert structured is not None
        return structured

    async def start(self, tool: str, /, **arguments: Any) -> None:
        """Start a long task without waiting for it, and keep its UPID."""
        answer = await self.ok(tool, **arguments, wait=False)
        assert answer["upid"], answer
        self.upids.append(answer["upid"])

    async def refused(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        error = error_of(await self.client.call_tool(tool, arguments))
        assert error is not None, (self.name, tool)
        return error


@pytest.fixture
def slow_sim() -> Iterator[SimulatorHandle]:
    """Tasks long enough (a start takes 30 s) to still run when they are looked at."""
    with simulator_in_thread(SimulatorOptions(time_scale=10)) as sim:
        yield sim


@asynccontextmanager
async def two_agents(sim: SimulatorHandle, tmp_path: Path) -> AsyncIterator[tuple[Agent, Agent]]:
    """Both keys' clients on one gateway served over HTTP on a loopback port."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    gateway = Gateway(
        tools=TOOLS,
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator",
            profile_subjects=["sub:static:0", "sub:static:1"],
            file=policy_file,
            known_tools=tier_map(),
        ),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor((sim.token_secret,)),
    )
    try:
        async with (
            served(gateway) as app,
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http_a,
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as http_b,
            Client(streamable_http_client(app.url, http_client=http_a)) as a,
            Client(streamable_http_client(app.url, http_client=http_b)) as b,
        ):
            yield Agent("static:0", a), Agent("static:1", b)
    finally:
        await gateway.aclose()


async def test_two_agents_at_once_each_own_their_tasks(
    slow_sim: SimulatorHandle, tmp_path: Path
) -> None:
    async with two_agents(slow_sim, tmp_path) as (a, b):

        async def work_a() -> None:
            await a.start("proxmox_guest_power", vmid=101, action="start")
            await a.ok("proxmox_guest_config_update", vmid=204, values={"description": "by a"})
            await a.start("proxmox_guest_power", vmid=107, action="start")

        async def work_b() -> None:
            await b.start("proxmox_guest_clone", vmid=9000, new_name="by-b")
            await b.ok("proxmox_guest_config_update", vmid=201, values={"description": "by b"})
            await b.start("proxmox_guest_power", vmid=103, action="start")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(work_a)
                group.start_soon(work_b)

        for me, other in ((a, b), (b, a)):
            mine = await me.ok("proxmox_task_mine")
            assert sorted(task["upid"] for task in mine["tasks"]) == sorted(me.upids), me.name
            assert all(task["status"] == "running" for task in mine["tasks"]), mine
            for upid in other.upids:
                for tool in ("proxmox_task_status", "proxmox_task_log", "proxmox_task_cancel"):
                    error = await me.refused(tool, upid=upid)
                    assert error["code"] == "not_your_task" and error["field"] == "upid", error
                    assert "details" not in error, "a refused cancel plans and asks nothing"

        with slow_sim.state.lock:
            guests = slow_sim.state.guests
            assert guests[204].config["description"] == "by a"
            assert guests[201].config["description"] == "by b"
            cloning = [g for g in guests.values() if g.config.get("lock") == "clone"]
            assert len(cloning) == 1, "b's clone exists at once, locked while it runs"
        # Nobody stopped anybody's task: each is still running (or ran to its end).
        for agent in (a, b):
            for upid in agent.upids:
                status = await agent.ok("proxmox_task_status", upid=upid)
                assert status["status"] == "running" or status["exitstatus"] == "OK", status

        can_a = await a.ok("proxmox_capabilities_list", vmid=9000, tool="proxmox_guest_clone")
        can_b = await b.ok("proxmox_capabilities_list", vmid=9000, tool="proxmox_guest_clone")
        assert "proxmox_guest_clone" in can_a["refused"], can_a
        assert "static-0-no-clones" in can_a["refused"]["proxmox_guest_clone"], can_a
        # Policy lets static:1 clone; whether PVE does depends on a storage the vmid does not
        # name, so capabilities cannot tell PVE's side (`unknown`), but it is not refused.
        assert "proxmox_guest_clone" not in can_b["refused"], can_b
        assert "proxmox_guest_clone" in can_b["allowed"] + can_b["confirm"] + can_b["unknown"]
        error = await a.refused("proxmox_guest_clone", vmid=9000, new_name="by-a")
        assert error["code"] == "denied", error
