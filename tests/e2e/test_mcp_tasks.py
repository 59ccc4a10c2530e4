"""Long calls as MCP tasks (`io.modelcontextprotocol/tasks`, SEP-2663) end to end: the SDK
client's low-level session sends the extension's raw requests (tasks/get, tasks/update,
tasks/cancel) to the gateway over a fresh simulator, in memory and over streamable HTTP.

The client side is the SDK's own extension mechanism: a `ClientExtension` that declares
the identifier in every request's capabilities and claims the `"task"` result shape, so
`session.call_tool(..., allow_claimed=True)` hands back the task handle and
`Client.call_tool` resolves it by polling, as a task-aware client would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, InputRequiredResult
from mcp_types import Request, Result
from pydantic import ConfigDict

from pvemcp.gateway.invoke import Gateway
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.mcp_tasks import IDENTIFIER, TaskIdParams
from tests.conftest import cluster_for, read_audit
from tests.tools.test_tasks_owner import ALICE, BOB, GRANT, STOPPED_VM, World
from tests.transports.test_http_app import KEYS, bearer, policy_gateway, served

pytestmark = pytest.mark.anyio

TEMPLATE = 9000  # pve2, a template to clone
RUNNING_VM = 100  # pve1, running


class CreatedTask(Result):
    """The `CreateTaskResult` a tools/call may answer with."""

    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class TaskState(Result):
    """A tasks/get answer (a DetailedTask)."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Ack(Result):
    """An acknowledgement: nothing but its result type (and `_meta`)."""

    model_config = ConfigDict(extra="allow")

    result_type: str


class GetTask(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # SEP-2663: Mcp-Name carries the task id


class CancelTask(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class UpdateTask(Request[TaskIdParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: TaskIdParams
    name_param = "taskId"


class TaskResult(Request[TaskIdParams, Literal["tasks/result"]]):
    """The 2025-11-25 blocking method the extension removed."""

    method: Literal["tasks/result"] = "tasks/result"
    params: TaskIdParams


async def get(session: ClientSession, task_id: str) -> TaskState:
    return await session.send_request(GetTask(params=TaskIdParams(task_id=task_id)), TaskState)


async def until_done(session: ClientSession, task_id: str) -> TaskState:
    """Poll tasks/get until the task reaches a terminal status."""
    with anyio.fail_after(30):
        while True:
            state = await get(session, task_id)
            if state.status != "working":
                return state
            await anyio.sleep(0.1)


class TasksClient(ClientExtension):
    """A task-aware client: declares the extension and finishes a task by polling;
    `resolved` lists the tasks it finished."""

    identifier = IDENTIFIER

    def __init__(self) -> None:
        self.resolved: list[str] = []

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=CreatedTask, resolve=self._resolve),)

    async def _resolve(self, created: CreatedTask, ctx: ClaimContext) -> CallToolResult:
        state = await until_done(ctx.session, created.task_id)
        assert state.status == "completed" and state.result is not None, state
        self.resolved.append(ctx.tool_name)
        return CallToolResult.model_validate(state.result)


async def start_task(client: Client, tool: str, arguments: dict[str, Any]) -> CreatedTask:
    out = await client.session.call_tool(tool, arguments, allow_claimed=True)
    assert isinstance(out, CreatedTask), out
    return out


def tool_payload(result: dict[str, Any] | CallToolResult) -> dict[str, Any]:
    """The JSON a tool result's text block carries (its structured content, or the error)."""
    wire = result if isinstance(result, dict) else result.model_dump(by_alias=True)
    payload: dict[str, Any] = json.loads(wire["content"][0]["text"])
    return payload


def refusal(raised: pytest.ExceptionInfo[MCPError]) -> tuple[int, dict[str, Any]]:
    data = raised.value.error.data
    assert isinstance(data, dict) or data is None
    return raised.value.code, data or {}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A simulator whose start takes 1.5 s (time scale 0.5) and alice and bob, operators."""
    yield from _world(tmp_path, 0.5)


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    """Time scale 10: a start takes 30 s, long enough to stop it."""
    yield from _world(tmp_path, 10)


def _world(tmp_path: Path, time_scale: float) -> Iterator[World]:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(GRANT)
    with simulator_in_thread(SimulatorOptions(time_scale=time_scale)) as sim:
        yield World(sim, tmp_path / "audit.jsonl", policy_file)


def _as(principal: Any) -> Any:
    return lambda _: principal


async def test_a_clone_and_a_start_run_as_tasks_with_the_tool_result(world: World) -> None:
    gateway = world.gateway()
    try:
        server = build_mcp_server(gateway, _as(ALICE))
        tasks = TasksClient()
        async with Client(server, extensions=[tasks]) as alice:
            assert alice.protocol_version == "2026-07-28"
            assert IDENTIFIER in (alice.server_capabilities.extensions or {})
            created = await start_task(
                alice, "proxmox_guest_clone", {"vmid": TEMPLATE, "new_name": "web03"}
            )
            assert created.status == "working" and created.poll_interval_ms
            assert created.status_message and created.status_message.startswith(
                "Proxmox task UPID:"
            )
            assert created.ttl_ms is not None and created.ttl_ms >= 3_600_000
            upid = created.status_message.split()[2]

            done = await until_done(alice.session, created.task_id)
            assert done.status == "completed" and done.result is not None
            assert done.status_message == "proxmox_guest_clone done"
            cloned = done.result["structuredContent"]
            assert cloned == tool_payload(done.result)
            assert (cloned["upid"], cloned["task_status"], cloned["exitstatus"]) == (
                upid,
                "stopped",
                "OK",
            )
            # The same shape a client without the extension gets back synchronously.
            async with Client(server) as plain:
                again = await plain.call_tool(
                    "proxmox_guest_clone", {"vmid": TEMPLATE, "new_name": "web04"}
                )
                assert not again.is_error
                assert set(again.structured_content or {}) == set(cloned)
            # A finished task stays readable, and answers the same.
            assert (await get(alice.session, created.task_id)).result == done.result

            # A task-aware client's call_tool resolves the task by polling it.
            started = await alice.call_tool(
                "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start"}
            )
            assert not started.is_error and started.structured_content is not None
            assert started.structured_content["guest_status"] == "running"
            assert tasks.resolved == ["proxmox_guest_power"]
    finally:
        await gateway.aclose()
    outcomes = [r for r in read_audit(world.audit) if r.get("phase") == "outcome"]
    clone = next(r for r in outcomes if upid in (r["outcome"].get("upids") or []))
    assert clone["what"]["tool"] == "proxmox_guest_clone" and clone["who"]["sub"] == "alice"


async def test_what_ends_before_a_task_starts_is_answered_at_once(world: World) -> None:
    """Refusals, dry runs, wait=false and tools that start no task are ordinary results;
    a client without the extension, or on the handshake protocol, never gets a task."""
    gateway = world.gateway()
    try:
        server = build_mcp_server(gateway, _as(ALICE))
        async with (
            Client(server, extensions=[TasksClient()]) as alice,
            Client(server) as plain,
            Client(server, mode="legacy", extensions=[TasksClient()]) as legacy,
        ):
            power = {"vmid": STOPPED_VM, "action": "start"}
            for arguments in (
                {**power, "dry_run": True},
                {"vmid": 424242, "action": "start"},
                {**power, "vmid": "x"},
            ):
                out = await alice.session.call_tool(
                    "proxmox_guest_power", arguments, allow_claimed=True
                )
                assert isinstance(out, CallToolResult), out
            failed = await alice.call_tool(
                "proxmox_guest_power", {"vmid": 424242, "action": "start"}
            )
            assert tool_payload(failed)["error"]["code"] == "not_found"
            listed = await alice.session.call_tool("proxmox_guest_list", {}, allow_claimed=True)
            assert isinstance(listed, CallToolResult) and not listed.is_error

            # wait=false returns the UPID at once, as before.
            quick = await alice.session.call_tool(
                "proxmox_guest_power", {**power, "wait": False}, allow_claimed=True
            )
            assert isinstance(quick, CallToolResult) and not quick.is_error

            assert legacy.protocol_version == "2025-11-25"
            stopped = await legacy.session.call_tool(
                "proxmox_guest_power",
                {"vmid": STOPPED_VM, "action": "shutdown"},
                allow_claimed=True,
            )
            assert isinstance(stopped, CallToolResult) and not stopped.is_error
            started = await plain.session.call_tool(
                "proxmox_guest_power", power, allow_claimed=True
            )
            assert isinstance(started, CallToolResult) and not started.is_error

            # The task methods: for declaring clients on 2026-07-28 only; no tasks/result.
            ask = TaskIdParams(task_id="x")
            with pytest.raises(MCPError) as missing:
                await plain.session.send_request(GetTask(params=ask), TaskState)
            assert missing.value.code == -32021
            with pytest.raises(MCPError) as legacy_get:
                await legacy.session.send_request(GetTask(params=ask), TaskState)
            assert legacy_get.value.code == -32601
            with pytest.raises(MCPError) as removed:
                await alice.session.send_request(TaskResult(params=ask), TaskState)
            assert removed.value.code == -32601
    finally:
        await gateway.aclose()


async def test_a_confirmed_call_becomes_a_task_after_its_question(world: World) -> None:
    """A hard stop needs the person's confirmation: the question (input-required) comes
    back on the call itself, synchronously, and the retry that carries the answer starts
    the Proxmox task and is answered with the MCP task (SEP-2663: input rounds before
    task creation)."""
    asked: list[str] = []

    async def accept(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    gateway = world.gateway()
    try:
        server = build_mcp_server(gateway, _as(ALICE))
        tasks = TasksClient()
        async with Client(server, extensions=[tasks], elicitation_callback=accept) as alice:
            stop = {"vmid": RUNNING_VM}
            question = await alice.session.call_tool(
                "proxmox_guest_stop", stop, allow_input_required=True, allow_claimed=True
            )
            assert isinstance(question, InputRequiredResult)
            stopped = await alice.call_tool("proxmox_guest_stop", stop)
            assert not stopped.is_error, tool_payload(stopped)
            assert stopped.structured_content is not None
            assert stopped.structured_content["guest_status"] == "stopped"
            assert len(asked) == 1 and "proxmox_guest_stop" in asked[0]
            assert tasks.resolved == ["proxmox_guest_stop"]  # the retry was a task
    finally:
        await gateway.aclose()


async def test_only_the_caller_sees_its_task(world: World) -> None:
    gateway = world.gateway()
    try:
        async with (
            Client(build_mcp_server(gateway, _as(ALICE)), extensions=[TasksClient()]) as alice,
            Client(build_mcp_server(gateway, _as(BOB)), extensions=[TasksClient()]) as bob,
        ):
            created = await start_task(
                alice, "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start"}
            )
            for task_id in (created.task_id, "no-such-task"):
                for request in (GetTask, CancelTask, UpdateTask):
                    with pytest.raises(MCPError) as unknown:
                        await bob.session.send_request(
                            request(params=TaskIdParams(task_id=task_id)), TaskState
                        )
                    code, data = refusal(unknown)
                    assert code == -32602 and (data["code"], data["field"]) == (
                        "not_found",
                        "taskId",
                    )
                    assert task_id[:64] in unknown.value.error.message
            # tasks/update: acknowledged, nothing is ever asked of the client.
            ack = await alice.session.send_request(
                UpdateTask(params=TaskIdParams(task_id=created.task_id)), Ack
            )
            assert ack.result_type == "complete" and not ack.model_extra
            assert (await until_done(alice.session, created.task_id)).status == "completed"
    finally:
        await gateway.aclose()


async def test_a_task_is_cancelled_through_proxmox_task_cancel(slow_world: World) -> None:
    """tasks/cancel cannot carry the confirmation stopping a task needs: it is refused
    with a pointer to proxmox_task_cancel (the refusal audited), whose confirmed stop ends
    the MCP task `cancelled`; once the task ended, tasks/cancel is acknowledged."""
    gateway = slow_world.gateway()
    try:
        async with Client(
            build_mcp_server(gateway, _as(ALICE)), extensions=[TasksClient()]
        ) as alice:
            created = await start_task(
                alice, "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start"}
            )
            cancel = CancelTask(params=TaskIdParams(task_id=created.task_id))
            with pytest.raises(MCPError) as asked:
                await alice.session.send_request(cancel, Result)
            code, data = refusal(asked)
            assert code == -32600 and data["code"] == "confirmation_required"
            assert created.status_message is not None
            upid = created.status_message.split()[2]  # "Proxmox task <UPID> started"
            working = await get(alice.session, created.task_id)
            # While it runs, the status is the Proxmox task's progress.
            assert working.status == "working" and working.status_message is not None
            assert working.status_message.startswith("qmstart 101 on pve1: running, ")
            assert working.status_message.endswith(f" ({upid})")
            assert f"proxmox_task_cancel with upid={upid!r}" in data["hint"]

            first = await alice.call_tool("proxmox_task_cancel", {"upid": upid})
            token = tool_payload(first)["error"]["details"]["confirm_token"]
            stopped = await alice.call_tool(
                "proxmox_task_cancel", {"upid": upid, "confirm_token": token}
            )
            assert not stopped.is_error, tool_payload(stopped)
            done = await until_done(alice.session, created.task_id)
            assert (done.status, done.result, done.error) == ("cancelled", None, None)
            assert done.status_message and done.status_message.startswith(
                "stopped with proxmox_task_cancel; proxmox_guest_power failed:"
            )
            await alice.session.send_request(cancel, Result)  # ended: acknowledged
    finally:
        await gateway.aclose()
    cancels = [
        r for r in read_audit(slow_world.audit) if r["what"]["tool"] == "proxmox_task_cancel"
    ]
    # tasks/cancel's refusal, the tool's first call (its token) and its confirmed stop.
    assert [r["outcome"].get("error") for r in cancels if r["phase"] != "intent"] == [
        "confirmation_required",
        "confirmation_required",
        None,
    ]


async def test_a_stopped_gateway_fails_the_task_naming_the_upid(slow_world: World) -> None:
    """The wait ends with the server's run; the Proxmox task runs on, and the task says
    which UPID to follow (proxmox_task_wait resumes on it)."""
    gateway = slow_world.gateway()
    try:
        server = build_mcp_server(gateway, _as(ALICE))
        async with Client(server, extensions=[TasksClient()]) as alice:
            created = await start_task(
                alice, "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start"}
            )
        async with Client(server, extensions=[TasksClient()]) as alice:
            failed = await get(alice.session, created.task_id)
            assert failed.status == "failed" and failed.error == {
                "code": -32603,
                "message": "gateway stopped",
            }
            assert failed.status_message is not None
            upid = failed.status_message.split("follow ")[1].split()[0]
            running = await alice.call_tool("proxmox_task_status", {"upid": upid})
            assert tool_payload(running)["status"] == "running"
    finally:
        await gateway.aclose()


async def test_over_http_each_token_holder_sees_only_its_tasks(world: World) -> None:
    """Streamable HTTP with two static bearer keys: static:1 may power guests and starts
    one as a task; static:0's tasks/get of it is not found; a tasks/get whose Mcp-Name
    header disagrees with its taskId is refused."""
    gateway: Gateway = policy_gateway(
        {"demo": cluster_for(world.sim)}, world.audit, world.policy_file.with_name("http.toml")
    )
    try:
        async with (
            served(gateway) as app,
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as http_one,
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http_zero,
            Client(
                streamable_http_client(app.url, http_client=http_one), extensions=[TasksClient()]
            ) as one,
            Client(
                streamable_http_client(app.url, http_client=http_zero), extensions=[TasksClient()]
            ) as zero,
        ):
            assert one.protocol_version == "2026-07-28"
            created = await start_task(
                one, "proxmox_guest_power", {"vmid": STOPPED_VM, "action": "start"}
            )
            with pytest.raises(MCPError) as unknown:
                await get(zero.session, created.task_id)
            assert refusal(unknown)[0] == -32602
            # SEP-2663: Mcp-Name carries the task id; one that disagrees with the body is
            # refused before the task is looked up (the SDK client always sends it right).
            envelope = {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"extensions": {IDENTIFIER: {}}},
            }
            raw = await http_one.post(
                app.url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tasks/get",
                    "params": {"taskId": created.task_id, "_meta": envelope},
                },
                headers={
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2026-07-28",
                    "Mcp-Method": "tasks/get",
                    "Mcp-Name": "another-task",
                },
            )
            assert (raw.status_code, raw.json()["error"]["code"]) == (400, -32020)
            done = await until_done(one.session, created.task_id)
            assert done.status == "completed" and done.result is not None
            assert done.result["structuredContent"]["guest_status"] == "running"
    finally:
        await gateway.aclose()
