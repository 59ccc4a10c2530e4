"""Long Proxmox calls as MCP tasks: the Tasks extension (`io.modelcontextprotocol/tasks`,
SEP-2663) of the 2026-07-28 protocol.

When a 2026-07-28 request declares the extension in its per-request capabilities and
calls a tool that starts a Proxmox task and waits for it (its input has a `wait` field
and the call does not pass wait=false), the call runs as usual until Proxmox hands back
its first UPID; the client then gets a `CreateTaskResult` (`resultType: "task"`) and the
call goes on waiting in the background. Everything before the UPID stays synchronous, as
the spec asks of input gathered before a task exists: validation, policy, the
confirmation round and refusals come back as the ordinary result, and so does a call that
starts no task (a dry run). Other clients, and older protocol versions (where this
extension is not defined), see no change.

The extension's methods (it has no tasks/result and no tasks/list: a 2026-07-28 client
calling them gets -32601 from the SDK):

- tasks/get: the task's state (working, completed, failed, cancelled); while working its
  `statusMessage` is the Proxmox task's progress; a completed task carries the tool's
  `CallToolResult` (a tool error included, as the spec says), `failed` is for a JSON-RPC
  error or a gateway that stopped before the call ended.
- tasks/update: acknowledged; these tasks never ask for input, so responses are ignored.
- tasks/cancel: goes through `proxmox_task_cancel`'s own pipeline (ownership, policy,
  audit). Stopping a task is destructive, so policy always wants the person's
  confirmation, which the spec's ack-only cancel cannot ask for: the answer is a
  structured error naming proxmox_task_cancel, whose confirmed stop (it asks) then ends
  the MCP task `cancelled`.

Tasks live in this process's memory, keyed by the caller's principal: another caller's
task id is as unknown as a made-up one. The UPID stays the durable record (the audit log,
task ownership): after a restart the task id is gone, but proxmox_task_wait resumes on the
UPID, which the task's status message names.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import TaskGroup
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    CallToolResult,
)
from mcp_types import RequestParams as MCPRequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel
from starlette.requests import Request

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal

log = structlog.get_logger(__name__)

IDENTIFIER = "io.modelcontextprotocol/tasks"
TTL_SECONDS = 3600.0
"""How long a task is kept after its last change (a finished one: after it finished)."""
POLL_INTERVAL_MS = 2000
"""The polling interval suggested to clients (PVE task progress moves in seconds)."""
MAX_TASKS_PER_CALLER = 100
"""A caller with this many tasks kept gets its next long call answered synchronously."""
CANCEL_TOOL = "proxmox_task_cancel"

Status = Literal["working", "completed", "failed", "cancelled"]
OwnerKey = tuple[str, str | None]
"""(subject, issuer): who a task belongs to, as task ownership compares callers."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _owner(principal: Principal) -> OwnerKey:
    return principal.person


@dataclass(slots=True)
class McpTask:
    """One task: a tool call that started a Proxmox task and is (or was) waiting for it."""

    task_id: str
    owner: OwnerKey
    tool: str
    created: float
    updated: float
    status: Status = "working"
    message: str | None = None
    cluster: str | None = None
    upids: list[str] = field(default_factory=list)
    """The UPIDs the call started, in order; a cancel stops the last one."""
    result: dict[str, Any] | None = None
    """The `CallToolResult` (wire form) of a completed task."""
    error: dict[str, Any] | None = None
    """The JSON-RPC error of a failed task."""
    cancelled: bool = False
    """proxmox_task_cancel stopped its Proxmox task: it ends `cancelled`, whatever the call
    said."""
    cancelling: bool = False
    """A proxmox_task_cancel of its Proxmox task is under way: the call's end waits in
    `held` until it is decided, so a terminal status is published once and never changes."""
    held: tuple[Status, str, dict[str, Any] | None, dict[str, Any] | None] | None = None

    def touch(self, message: str | None) -> None:
        self.message = message
        self.updated = time.time()

    def finish(
        self,
        status: Status,
        message: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        if self.cancelling:
            self.held = (status, message, result, error)
            return
        if self.cancelled:
            status, result, error = "cancelled", None, None
            message = f"stopped with {CANCEL_TOOL}; {message}"
        self.status, self.result, self.error = status, result, error
        self.touch(message)

    def cancel_decided(self, stopped: bool) -> None:
        """End a proxmox_task_cancel: `stopped` when it stopped the Proxmox task; publish
        the end the call reached meanwhile, if it did."""
        self.cancelling, self.cancelled = False, stopped
        if self.held is not None:
            status, message, result, error = self.held
            self.held = None
            self.finish(status, message, result=result, error=error)

    @property
    def expires(self) -> float:
        return float("inf") if self.status == "working" else self.updated + TTL_SECONDS

    def wire(self) -> dict[str, Any]:
        """The task as `tasks/get` and `CreateTaskResult` carry it (a DetailedTask)."""
        out: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": _iso(self.created),
            "lastUpdatedAt": _iso(self.updated),
            # From creation, as the spec counts it; it grows while the call runs.
            "ttlMs": round((self.updated + TTL_SECONDS - self.created) * 1000),
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.message is not None:
            out["statusMessage"] = self.message
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class TaskStore:
    """The tasks of this process, per caller; a task past its TTL is forgotten."""

    def __init__(self) -> None:
        self._tasks: dict[OwnerKey, OrderedDict[str, McpTask]] = {}

    def _mine(self, owner: OwnerKey) -> OrderedDict[str, McpTask]:
        mine = self._tasks.setdefault(owner, OrderedDict())
        now = time.time()
        for task_id in [t.task_id for t in mine.values() if t.expires <= now]:
            del mine[task_id]
        return mine

    def room_for(self, principal: Principal) -> bool:
        return len(self._mine(_owner(principal))) < MAX_TASKS_PER_CALLER

    def add(self, task: McpTask) -> None:
        self._mine(task.owner)[task.task_id] = task

    def holding(self, principal: Principal, upid: object) -> McpTask | None:
        """The caller's working task whose running Proxmox task is `upid`, if any."""
        for task in self._mine(_owner(principal)).values():
            if task.status == "working" and task.upids and task.upids[-1] == upid:
                return task
        return None

    def get(self, principal: Principal, task_id: str) -> McpTask | None:
        """The caller's own task; None for an unknown, expired or another caller's id."""
        return self._mine(_owner(principal)).get(task_id)


class _Call:
    """One tool call the extension may turn into a task: it learns the call's UPIDs and
    progress (through `forward`, see `task_watch`), and hands the call over to its task
    once the client has been answered with it."""

    def __init__(self, task: McpTask) -> None:
        self.task = task
        self.ready = anyio.Event()
        """Set when a UPID came back or the call ended, whichever first."""
        self.detached = False
        """The client got the task: the call's end goes to the task, not to the request."""
        self.outcome: HandlerResult | None = None
        self.raised: Exception | None = None
        self.scope = anyio.CancelScope()

    def started(self, cluster: str, upid: str) -> None:
        """A UPID the call started (the gateway's `on_task` hook)."""
        if self.task.cluster is None:
            self.task.cluster = cluster
        self.task.upids.append(upid)
        self.task.touch(f"Proxmox task {upid} started")
        self.ready.set()

    def follows(self, message: str | None) -> bool:
        """Take a progress message as the task's status once the client has the task
        (the spec sends no progress notifications for tasks); False before, when the
        request itself still reports progress."""
        if not self.detached:
            return False
        upid = self.task.upids[-1]
        self.task.touch(f"{message} ({upid})" if message else f"waiting for {upid}")
        return True

    async def run(self, call_next: CallNext, ctx: ServerRequestContext[Any, Any]) -> None:
        with self.scope:  # cancelled when the request goes away before a task exists
            try:
                self._complete(await call_next(ctx))
            except anyio.get_cancelled_exc_class():
                if self.detached:
                    self.task.finish(
                        "failed",
                        "the gateway stopped before the call ended; the Proxmox task may "
                        f"still run: follow {self.task.upids[-1]} with proxmox_task_wait",
                        error={"code": INTERNAL_ERROR, "message": "gateway stopped"},
                    )
                raise
            except MCPError as exc:  # e.g. a stale requestState: the request's own error
                self._end(exc, {"code": exc.code, "message": exc.message})
            except Exception as exc:
                # Raised here it would end the lifespan's task group, and the server with it.
                log.exception("task_call_crashed", tool=self.task.tool)
                self._end(exc, {"code": INTERNAL_ERROR, "message": "internal error"})

    def _end(self, exc: Exception, error: dict[str, Any]) -> None:
        if self.detached:
            self.task.finish("failed", error["message"], error=error)
        else:
            self.raised = exc
            self.ready.set()

    def _complete(self, outcome: HandlerResult) -> None:
        if not self.detached:
            self.outcome = outcome
            self.ready.set()
            return
        assert isinstance(outcome, BaseModel)  # a CallToolResult: no input rounds after a UPID
        result = outcome.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.task.finish("completed", f"{self.task.tool} {_ended(result)}", result=result)


def _ended(result: dict[str, Any]) -> str:
    """How a finished call ended, for the status message: done, or its error's message
    (an error result's one text block is `{"error": {...}}`, see `forward`)."""
    if not result.get("isError"):
        return "done"
    try:
        error = json.loads(result["content"][0]["text"])["error"]
        return f"failed: {error['message']}"
    except (LookupError, TypeError, ValueError):
        return "failed"


_WATCH: ContextVar[_Call | None] = ContextVar("pvemcp_task_watch", default=None)


def task_watch() -> _Call | None:
    """The task-eligible call running in this context, for `forward` to report its UPIDs
    (`_Call.started`) and progress (`_Call.follows`) to; None for any other call."""
    return _WATCH.get()


class TaskIdParams(MCPRequestParams):
    """Params of tasks/get and tasks/cancel."""

    task_id: str


class UpdateTaskParams(TaskIdParams):
    """Params of tasks/update."""

    input_responses: dict[str, Any] | None = None


def _unknown(task_id: str) -> MCPError:
    return MCPError(
        INVALID_PARAMS,
        f"Failed to retrieve task: no task {task_id[:64]!r} (unknown, expired or not yours)",
        data={
            "code": "not_found",
            "field": "taskId",
            "hint": "Use a taskId a tools/call of yours returned, within its ttlMs; for the "
            "Proxmox task itself use proxmox_task_mine.",
        },
    )


PrincipalOf = Callable[[ServerRequestContext[Any, Any] | None], Principal]


class TasksExtension(Extension):
    """The server side of SEP-2663 for the gateway's task-starting tools."""

    identifier = IDENTIFIER

    def __init__(self, gateway: Gateway, principal_of: PrincipalOf) -> None:
        self._gateway = gateway
        self._principal_of = principal_of
        self.store = TaskStore()
        self._groups: list[TaskGroup] = []
        """Where detached calls run: one task group per running server (its lifespan)."""

    @asynccontextmanager
    async def running(self, _server: object) -> AsyncIterator[dict[str, Any]]:
        """The server's lifespan: a task group for the calls that outlive their request.
        On shutdown their waits stop (the Proxmox tasks run on) and their tasks fail
        saying so."""
        async with anyio.create_task_group() as group:
            self._groups.append(group)
            try:
                yield {}
            finally:
                self._groups.remove(group)
                group.cancel_scope.cancel()

    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", TaskIdParams, self._get, versions),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, versions),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, versions),
        )

    def _eligible(self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any]) -> bool:
        """Whether this call may become a task: a 2026-07-28 request that declares the
        extension, for a tool whose input has `wait` (it starts a Proxmox task), not
        called with wait=false, from a caller with room for one more task."""
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS or not self._groups:
            return False
        capabilities = ctx.session.client_capabilities
        if capabilities is None or IDENTIFIER not in (capabilities.extensions or {}):
            return False
        spec = self._gateway.catalogue.find(params.name)
        if spec is None or "wait" not in spec.input_model.model_fields:
            return False
        if (params.arguments or {}).get("wait", True) is False:
            return False
        return self.store.room_for(self._principal_of(ctx))

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        """Run an eligible call in the background; answer with its task at its first UPID,
        or with its own result if it ends first. A proxmox_task_cancel of a task's UPID
        marks the task cancelled once it stopped the Proxmox task."""
        if params.name == CANCEL_TOOL:
            return await self._cancel_tool(params, ctx, call_next)
        if not self._eligible(params, ctx):
            return await call_next(ctx)
        now = time.time()
        principal = self._principal_of(ctx)
        task = McpTask(secrets.token_urlsafe(24), _owner(principal), params.name, now, now)
        call = _Call(task)
        token = _WATCH.set(call)
        try:
            self._groups[-1].start_soon(call.run, call_next, ctx)
        finally:
            _WATCH.reset(token)
        try:
            await call.ready.wait()
        except anyio.get_cancelled_exc_class():
            call.scope.cancel()  # the client went away before anything started
            raise
        if call.raised is not None:
            raise call.raised
        if call.outcome is not None:
            return call.outcome
        call.detached = True
        self.store.add(task)  # before the answer: a tasks/get for it must resolve
        return {"resultType": "task", **task.wire()}

    async def _cancel_tool(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        """Run proxmox_task_cancel; while it runs, the end of the task it stops is held, so
        that the task's terminal status is published once: `cancelled` if the stop
        succeeded, else what the call reached."""
        upid = (params.arguments or {}).get("upid")
        task = self.store.holding(self._principal_of(ctx), upid)
        if task is None:
            return await call_next(ctx)
        task.cancelling, stopped = True, False
        try:
            outcome = await call_next(ctx)
            stopped = isinstance(outcome, CallToolResult) and not outcome.is_error
        finally:
            task.cancel_decided(stopped)
        return outcome

    def _task(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> McpTask:
        require_client_extension(ctx, IDENTIFIER)
        # Over streamable HTTP the spec routes tasks/* by Mcp-Name = taskId; the SDK checks
        # the header for tools, prompts and resources only.
        request = ctx.request
        if isinstance(request, Request) and (
            decode_header_value(request.headers.get(MCP_NAME_HEADER)) != task_id
        ):
            raise MCPError(HEADER_MISMATCH, f"{MCP_NAME_HEADER} header does not match taskId")
        task = self.store.get(self._principal_of(ctx), task_id)
        if task is None:
            raise _unknown(task_id)
        return task

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        return self._task(ctx, params.task_id).wire()

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        self._task(ctx, params.task_id)  # no input is ever outstanding: nothing to apply
        return {}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        """Ask to stop the task's Proxmox task through proxmox_task_cancel's pipeline, for
        this caller and under its policy (refusals and the attempt are audited there).

        Stopping a task is destructive, so policy always wants the person's confirmation,
        and a tasks/cancel can neither ask nor carry one: the answer is the gateway's
        refusal (a deny, a disabled toolset) or `confirmation_required` pointing at
        proxmox_task_cancel, whose confirmed stop then ends this task `cancelled`. A task
        that already ended is acknowledged: nothing is left to stop."""
        task = self._task(ctx, params.task_id)
        if task.status != "working":
            return {}
        upid = task.upids[-1]
        result = await self._gateway.invoke(
            self._principal_of(ctx), CANCEL_TOOL, {"upid": upid, "cluster": task.cluster}
        )
        error = result.error
        if error is None or error.get("code") == "task_finished":
            return {}
        if error.get("code") in {"confirmation_required", "confirmation_unavailable"}:
            error = {
                "code": "confirmation_required",
                "message": f"stopping {upid} needs the user's confirmation, which tasks/cancel "
                "cannot ask for",
                "field": "taskId",
                "hint": f"Call {CANCEL_TOOL} with upid={upid!r}: it asks, and its stop ends "
                "this task cancelled.",
            }
        raise MCPError(INVALID_REQUEST, str(error.get("message")), data=error)
