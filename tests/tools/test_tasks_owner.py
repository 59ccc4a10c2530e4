"""Owner-bound tasks end to end: the MCP SDK client, the gateway, its audit log and a fresh
simulator whose tasks run long enough to be followed and stopped.

alice starts a task; bob (another principal) can neither read nor stop it, alice can, a
new gateway on the same audit log still knows it is hers, and a `tasks = "any"` rule lets
carol read it (only read: her rule names the read tools).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_report import load_report
from pvemcp.policy.loader import PolicyError, load_policy, parse_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for
from tests.tools.test_catalogue import TOOLS
from tests.tools.test_examples import error_of
from tests.transports.test_http_app import KEYS, bearer, policy_gateway, served

pytestmark = pytest.mark.anyio

STOPPED_VM = 101  # pve1, web02
ALICE = Principal(subject="alice", transport="memory")
BOB = Principal(subject="bob", transport="memory")
CAROL = Principal(subject="carol", transport="memory")
GRANT = """
[[rules]]
id = "carol-reads-all-tasks"
effect = "allow"
subjects = ["sub:carol"]
tools = ["proxmox_task_status", "proxmox_task_log"]
tasks = "any"
"""


@dataclass
class World:
    sim: SimulatorHandle
    audit: Path
    policy_file: Path

    def gateway(self) -> Gateway:
        return Gateway(
            tools=TOOLS,
            clusters=ClusterPool({"demo": cluster_for(self.sim)}),
            policy=load_policy(
                profile="operator",
                profile_subjects=["local", "sub:alice", "sub:bob", "sub:carol"],
                file=self.policy_file,
                known_tools=tier_map(),
            ),
            audit=AuditLog(self.audit),
            redactor=Redactor((self.sim.token_secret,)),
        )


def _world(tmp_path: Path, time_scale: float) -> Iterator[World]:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(GRANT)
    with simulator_in_thread(SimulatorOptions(time_scale=time_scale)) as sim:
        yield World(sim, tmp_path / "audit.jsonl", policy_file)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A simulator slow enough (time scale 10: a start takes 30 s) to stop a task in."""
    yield from _world(tmp_path, 10)


@pytest.fixture
def quick_world(tmp_path: Path) -> Iterator[World]:
    """A start takes 1.5 s: long enough to outlive a gateway, short enough to wait for."""
    yield from _world(tmp_path, 0.5)


def _ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, error_of(result)
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def _refused(result: CallToolResult, code: str) -> dict[str, Any]:
    error = error_of(result)
    assert error is not None and error["code"] == code, error
    return error


def _as(principal: Principal) -> Callable[[Any], Principal]:
    return lambda _: principal


async def _start(client: Client) -> str:
    started = _ok(
        await client.call_tool(
            "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start", "wait": False}
        )
    )
    upid: str = started["upid"]
    return upid


async def test_only_the_starter_follows_and_stops_its_task(world: World) -> None:
    gateway = world.gateway()
    try:
        async with (
            Client(build_mcp_server(gateway, _as(ALICE))) as alice,
            Client(build_mcp_server(gateway, _as(BOB))) as bob,
        ):
            upid = await _start(alice)
            for tool in ("proxmox_task_status", "proxmox_task_log", "proxmox_task_wait"):
                refusal = _refused(await bob.call_tool(tool, {"upid": upid}), "not_your_task")
                assert refusal["field"] == "upid"
            # A refused cancel asks nobody for confirmation: no plan, no token.
            refusal = _refused(
                await bob.call_tool("proxmox_task_cancel", {"upid": upid}), "not_your_task"
            )
            assert "details" not in refusal
            assert _ok(await bob.call_tool("proxmox_task_mine", {}))["tasks"] == []

            assert _ok(await alice.call_tool("proxmox_task_status", {"upid": upid}))["status"] == (
                "running"
            )
            [mine] = _ok(await alice.call_tool("proxmox_task_mine", {"running": True}))["tasks"]
            assert (mine["upid"], mine["tool"], mine["id"]) == (
                upid,
                "proxmox_guest_power",
                str(STOPPED_VM),
            )

            ask = _refused(
                await alice.call_tool("proxmox_task_cancel", {"upid": upid}),
                "confirmation_required",
            )
            plan = ask["details"]["plan"]
            assert upid in plan["summary"] and f"guest {STOPPED_VM}" in plan["summary"]
            assert plan["target"]["vmid"] == STOPPED_VM
            stopped = _ok(
                await alice.call_tool(
                    "proxmox_task_cancel",
                    {"upid": upid, "confirm_token": ask["details"]["confirm_token"]},
                )
            )
            assert (stopped["status"], stopped["exitstatus"]) == ("stopped", "received interrupt")
            guest = _ok(
                await alice.call_tool(
                    "proxmox_guest_get", {"vmid": STOPPED_VM, "include_config": False}
                )
            )
            assert guest["status"] == "stopped"  # the interrupted start never happened

            again = _refused(
                await alice.call_tool("proxmox_task_cancel", {"upid": upid}), "task_finished"
            )
            assert again["field"] == "upid"
            log = _ok(await alice.call_tool("proxmox_task_log", {"upid": upid}))
            assert log["lines"][-1] == "TASK ERROR: received interrupt"
    finally:
        await gateway.aclose()


async def test_ownership_survives_a_restart_and_a_grant_lets_others_read(world: World) -> None:
    first = world.gateway()
    try:
        async with Client(build_mcp_server(first, _as(ALICE))) as alice:
            upid = await _start(alice)
    finally:
        await first.aclose()

    restarted = world.gateway()  # knows the task from the audit log alone
    try:
        async with (
            Client(build_mcp_server(restarted, _as(ALICE))) as alice,
            Client(build_mcp_server(restarted, _as(BOB))) as bob,
            Client(build_mcp_server(restarted, _as(CAROL))) as carol,
            Client(build_mcp_server(restarted, local_principal)) as operator,
        ):
            assert _ok(await alice.call_tool("proxmox_task_status", {"upid": upid}))["upid"] == upid
            assert [
                t["upid"] for t in _ok(await alice.call_tool("proxmox_task_mine", {}))["tasks"]
            ] == [upid]
            _refused(await bob.call_tool("proxmox_task_status", {"upid": upid}), "not_your_task")

            # carol's tasks = "any" rule names the read tools: she reads, but cannot stop it.
            assert _ok(await carol.call_tool("proxmox_task_status", {"upid": upid}))["upid"] == upid
            _ok(await carol.call_tool("proxmox_task_log", {"upid": upid}))
            _refused(await carol.call_tool("proxmox_task_cancel", {"upid": upid}), "not_your_task")
            # The rule widens whose tasks, it grants nothing else: not carol's own reads.
            assert _ok(await carol.call_tool("proxmox_task_mine", {}))["tasks"] == []

            # The local operator holds the gateway's PVE credentials: it may follow any task.
            status = _ok(await operator.call_tool("proxmox_task_status", {"upid": upid}))
            assert status["upid"] == upid
    finally:
        await restarted.aclose()


async def test_a_second_gateway_on_the_same_log_learns_new_tasks(world: World) -> None:
    """Two processes on one audit log (a desktop client's several stdio servers): the one
    that did not start the task reads the records appended since it last looked."""
    one, two = world.gateway(), world.gateway()
    try:
        async with (
            Client(build_mcp_server(one, _as(ALICE))) as alice_one,
            Client(build_mcp_server(two, _as(ALICE))) as alice_two,
            Client(build_mcp_server(two, _as(BOB))) as bob_two,
        ):
            for _ in range(2):  # the second reads the log the first call's record started
                assert _ok(await alice_two.call_tool("proxmox_task_mine", {}))["tasks"] == []
            upid = await _start(alice_one)
            assert _ok(await alice_two.call_tool("proxmox_task_status", {"upid": upid}))[
                "status"
            ] == ("running")
            _refused(await bob_two.call_tool("proxmox_task_log", {"upid": upid}), "not_your_task")
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_wait_resumes_after_a_restart_on_the_upid(quick_world: World) -> None:
    first = quick_world.gateway()
    try:
        async with Client(build_mcp_server(first, _as(ALICE))) as alice:
            upid = await _start(alice)
    finally:
        await first.aclose()
    restarted = quick_world.gateway()
    try:
        async with Client(build_mcp_server(restarted, _as(ALICE))) as alice:
            done = _ok(await alice.call_tool("proxmox_task_wait", {"upid": upid}))
            assert (done["status"], done["exitstatus"], done["ok"]) == ("stopped", "OK", True)
    finally:
        await restarted.aclose()


async def test_a_upid_from_nowhere_and_a_bad_one_are_refused(world: World) -> None:
    gateway = world.gateway()
    try:
        async with Client(build_mcp_server(gateway, _as(ALICE))) as alice:
            nobody = "UPID:pve1:00001234:00005678:65000000:qmstart:100:root@pam:"
            _refused(await alice.call_tool("proxmox_task_log", {"upid": nobody}), "not_your_task")
            for bad in ("UPID:pve1:nope", "UPID:pve1:00001234:00005678:65000000:qmstart:100:x:y"):
                refusal = _refused(
                    await alice.call_tool("proxmox_task_status", {"upid": bad}), "invalid_argument"
                )
                assert refusal["field"] == "upid"
    finally:
        await gateway.aclose()


def test_tasks_any_is_an_allow_rule_only() -> None:
    """`tasks = "any"` widens a grant; on a deny or confirm rule it would mean nothing, so
    the policy does not load."""
    denying = GRANT.replace('effect = "allow"', 'effect = "deny"')
    with pytest.raises(PolicyError) as refused:
        parse_policy(denying, source="policy.toml", known_tools=tier_map())
    assert str(refused.value) == (
        "policy.toml:7: rule 'carol-reads-all-tasks': tasks: only an allow rule can grant "
        "others' tasks"
    )
    [rule] = parse_policy(GRANT, source="policy.toml", known_tools=tier_map())
    assert rule.canonical()["tasks"] == "any"


async def test_over_http_each_token_holder_sees_only_its_tasks(world: World) -> None:
    """Two static bearer keys over real HTTP: subjects static:1 (may power guests) and
    static:0 (reads only)."""
    gateway = policy_gateway(
        {"demo": cluster_for(world.sim)}, world.audit, world.policy_file.with_name("http.toml")
    )
    try:
        async with (
            served(gateway) as app,
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as http_one,
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http_zero,
            Client(streamable_http_client(app.url, http_client=http_one)) as one,
            Client(streamable_http_client(app.url, http_client=http_zero)) as zero,
        ):
            upid = await _start(one)
            assert _ok(await one.call_tool("proxmox_task_status", {"upid": upid}))["upid"] == upid
            _refused(await zero.call_tool("proxmox_task_status", {"upid": upid}), "not_your_task")
            assert _ok(await zero.call_tool("proxmox_task_mine", {}))["tasks"] == []
    finally:
        await gateway.aclose()


async def test_the_review_report_lists_a_try_at_another_callers_task(world: World) -> None:
    """bob reading or stopping alice's task is refused (`not_your_task`, the own-tasks
    rule): a reviewer must see those attempts among the report's denials."""
    gateway = world.gateway()
    try:
        async with (
            Client(build_mcp_server(gateway, _as(ALICE))) as alice,
            Client(build_mcp_server(gateway, _as(BOB))) as bob,
        ):
            upid = await _start(alice)
            _refused(await bob.call_tool("proxmox_task_log", {"upid": upid}), "not_your_task")
            _refused(await bob.call_tool("proxmox_task_cancel", {"upid": upid}), "not_your_task")
    finally:
        await gateway.aclose()
    report = load_report([world.audit])
    tries = [(row.who, row.tool) for row in report.refusals if "not_your_task" in row.status]
    expected = [("bob (memory)", tool) for tool in ("proxmox_task_log", "proxmox_task_cancel")]
    assert tries == expected, [(row.who, row.tool, row.status) for row in report.refusals]
