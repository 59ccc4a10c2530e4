"""Task tools: the status, log and completion of Proxmox tasks (UPIDs), the caller's own
tasks, and stopping one.

A caller follows and cancels only the tasks its own calls started, unless policy grants
more (`tasks = "any"`, docs/policy.md): the owner comes from the audit log through
`gateway/taskowners.py`, so a UPID from elsewhere is refused, not trusted, and a wait
resumes after a gateway restart on the UPID alone.
"""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from pydantic import Field

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import ApiCall, Change, Plan, Target
from pvemcp.gateway.registry import ToolInput, ToolOutput, WriteInput, tool
from pvemcp.policy.tiers import Tier
from pvemcp.proxmox.errors import ProxmoxError
from pvemcp.proxmox.tasks import TaskStatus
from pvemcp.tools.common import Timeout, Upid


class TaskArgs(ToolInput):
    upid: Upid


class TaskInfo(ToolOutput):
    upid: str
    node: str
    type: str
    id: str | None = None
    user: str
    status: str
    exitstatus: str | None = None
    ok: bool | None = None
    starttime: int | None = None


async def _own(ctx: ToolContext, upid: str) -> None:
    """Refuse a task the caller did not start (unless policy grants others' tasks)."""
    if ctx.tasks is None:
        raise ToolFailure("internal_error", "this gateway keeps no task owners")
    await ctx.tasks.check(upid)


def _info(task: TaskStatus) -> TaskInfo:
    return TaskInfo(
        upid=task.upid,
        node=task.node,
        type=task.type,
        id=task.id or None,
        user=task.user,
        status=task.status,
        exitstatus=task.exitstatus,
        ok=task.ok if task.status == "stopped" else None,
        starttime=task.starttime,
    )


@tool(
    "proxmox_task_status",
    title="Task status",
    tier=Tier.READ,
    toolset="tasks",
    input=TaskArgs,
    output=TaskInfo,
    rejects=[({"upid": "UPID:pve1:nope"}, "invalid_argument")],
    idempotent=True,
    api=["GET /nodes/{node}/tasks/{upid}/status"],
)
async def task_status(ctx: ToolContext, args: TaskArgs) -> TaskInfo:
    """Whether a task you started (by upid) is still running and, once stopped, its exit
    status (`ok` true for OK or warnings)."""
    await _own(ctx, args.upid)
    return _info(await ctx.task_status(args.upid))


class TaskLogArgs(TaskArgs):
    start: Annotated[int, Field(ge=0, description="Line offset, 0 for the first line.")] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 50


class TaskLog(ToolOutput):
    lines: list[str]
    start: int
    total: int | None = None
    """Left out when the server does not report it (pvesh, some PVE-compatible servers)."""
    next_start: int | None = None
    may_have_more: bool | None = None
    """True when the total is unknown and the page was full: read on from next_start."""


@tool(
    "proxmox_task_log",
    title="Task log",
    tier=Tier.READ,
    toolset="tasks",
    input=TaskLogArgs,
    output=TaskLog,
    rejects=[({"upid": "UPID:pve1:nope"}, "invalid_argument")],
    idempotent=True,
    api=["GET /nodes/{node}/tasks/{upid}/log"],
)
async def task_log(ctx: ToolContext, args: TaskLogArgs) -> TaskLog:
    """A page of a task's log lines; a finished task's last line is TASK OK or TASK ERROR:
    .... Page with start and next_start; may_have_more when the total is unknown."""
    await _own(ctx, args.upid)
    lines, total = await ctx.task_log(args.upid, args.start, args.limit)
    end = args.start + len(lines)
    if total is None:
        # Without a total only a short page proves the end of the log.
        more = len(lines) >= args.limit
        return TaskLog(
            lines=[text for _, text in lines],
            start=args.start,
            next_start=end if more else None,
            may_have_more=more,
        )
    return TaskLog(
        lines=[text for _, text in lines],
        start=args.start,
        total=total,
        next_start=end if end < total else None,
    )


class TaskWaitArgs(TaskArgs):
    timeout: Timeout | None = None


@tool(
    "proxmox_task_wait",
    title="Wait for a task",
    tier=Tier.READ,
    toolset="tasks",
    input=TaskWaitArgs,
    output=TaskInfo,
    rejects=[({"upid": "UPID:pve1:nope"}, "invalid_argument")],
    idempotent=True,
    api=["GET /nodes/{node}/tasks/{upid}/status"],
)
async def task_wait(ctx: ToolContext, args: TaskWaitArgs) -> TaskInfo:
    """Wait until a task stops, reporting progress, and return its final status. A failed
    task is an error with its exit status; a timeout leaves the task running."""
    await _own(ctx, args.upid)
    return _info(await ctx.wait_task(args.upid, args.timeout))


class MineArgs(ToolInput):
    running: Annotated[bool, Field(description="Only the running ones.")] = False
    limit: Annotated[int, Field(ge=1, le=50, description="Newest tasks read.")] = 20


class MyTask(TaskInfo):
    tool: str
    """The tool whose call started the task."""


class MyTasks(ToolOutput):
    tasks: list[MyTask]
    total: int
    """How many tasks of yours the gateway knows (the newest `limit` were read)."""


async def _statuses(ctx: ToolContext, upids: list[str]) -> dict[str, TaskStatus]:
    """The status of each task that can be read now (a task on an offline node is left
    out rather than failing the listing)."""
    found: dict[str, TaskStatus] = {}

    async def read(upid: str) -> None:
        try:
            found[upid] = await ctx.task_status(upid)
        except ProxmoxError:
            return

    async with anyio.create_task_group() as group:
        for upid in upids:
            group.start_soon(read, upid)
    return found


@tool(
    "proxmox_task_mine",
    title="My tasks",
    tier=Tier.READ,
    toolset="tasks",
    input=MineArgs,
    output=MyTasks,
    examples=[{}, {"running": True, "limit": 5}],
    rejects=[({"limit": 0}, "invalid_argument")],
    idempotent=True,
    api=["GET /nodes/{node}/tasks/{upid}/status"],
)
async def task_mine(ctx: ToolContext, args: MineArgs) -> MyTasks:
    """The Proxmox tasks your own calls started, newest first, with their status and the
    tool that started each: what to wait for, read or cancel. Others' tasks: not listed."""
    if ctx.tasks is None:
        raise ToolFailure("internal_error", "this gateway keeps no task owners")
    mine = await ctx.tasks.mine()
    page = mine[: args.limit]
    statuses = await _statuses(ctx, [upid for upid, _ in page])
    rows = [
        MyTask(**_info(statuses[upid]).model_dump(), tool=owner.tool)
        for upid, owner in page
        if upid in statuses and (not args.running or statuses[upid].status == "running")
    ]
    return MyTasks(tasks=rows, total=len(mine))


class CancelArgs(WriteInput):
    upid: Upid


STOP_WAIT = 15.0
"""How long a cancel waits for the task to end (PVE's worker gets SIGTERM, then dies)."""


async def _plan_cancel(ctx: ToolContext, args: CancelArgs) -> Plan:
    """Name the task and its guest; a task that already ended is refused (PVE would
    accept the DELETE and do nothing)."""
    await _own(ctx, args.upid)
    task = await ctx.task_status(args.upid)
    if task.status != "running":
        raise ToolFailure(
            "task_finished",
            f"task {args.upid} already ended ({task.exitstatus}): nothing to stop",
            field="upid",
            hint="Read its log with proxmox_task_log.",
        )
    node = task.node
    vmid = int(task.id) if task.id.isdigit() else None
    what = f"{task.type} of guest {vmid}" if vmid is not None else f"{task.type} {task.id}"
    return Plan(
        summary=f"Stop the running task {what} on {node} ({args.upid}); what it did so far "
        "stays done",
        target=Target(node=node, vmid=vmid),
        changes=[Change(field="task", before="running", after="stopped")],
        calls=[ApiCall.to("DELETE", "/nodes/{node}/tasks/{upid}", node=node, upid=args.upid)],
        warnings=["A stopped task may leave its guest locked or half done: check it after."],
    )


@tool(
    "proxmox_task_cancel",
    title="Stop a task",
    tier=Tier.DESTRUCTIVE,
    toolset="tasks",
    input=CancelArgs,
    output=TaskInfo,
    planner=_plan_cancel,
    rejects=[({"upid": "UPID:pve1:nope"}, "invalid_argument")],
    api=["GET /nodes/{node}/tasks/{upid}/status", "DELETE /nodes/{node}/tasks/{upid}"],
)
async def task_cancel(ctx: ToolContext, args: CancelArgs) -> TaskInfo:
    """Stop a running task you started (PVE ends its worker); returns its final status.
    Not for undoing a finished task: it refuses one that already ended."""
    assert ctx.plan is not None
    await ctx.call("DELETE", ctx.plan.calls[0].path)
    deadline = time.monotonic() + STOP_WAIT
    task = await ctx.task_status(args.upid)
    while task.status == "running" and time.monotonic() < deadline:
        await anyio.sleep(0.2)
        task = await ctx.task_status(args.upid)
    return _info(task)


TOOLS = (task_status, task_log, task_wait, task_mine, task_cancel)
