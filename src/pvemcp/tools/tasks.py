"""Task tools: the status, log and completion of Proxmox tasks (UPIDs)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.registry import ToolInput, ToolOutput, tool
from pvemcp.policy.tiers import Tier
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
)
async def task_status(ctx: ToolContext, args: TaskArgs) -> TaskInfo:
    """Whether a Proxmox task (by upid) is still running and, once stopped, its exit status
    (`ok` true for OK or warnings)."""
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
)
async def task_log(ctx: ToolContext, args: TaskLogArgs) -> TaskLog:
    """A page of a task's log lines; a finished task's last line is TASK OK or TASK ERROR:
    .... Page with start and next_start; may_have_more when the total is unknown."""
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
)
async def task_wait(ctx: ToolContext, args: TaskWaitArgs) -> TaskInfo:
    """Wait until a task stops, reporting progress, and return its final status. A failed
    task is an error with its exit status; a timeout leaves the task running."""
    return _info(await ctx.wait_task(args.upid, args.timeout))


TOOLS = (task_status, task_log, task_wait)
