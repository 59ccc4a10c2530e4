"""The default runner: send a confirmed plan's calls, wait for their tasks, and say what
state the guest ended in.

Most writes need no handler of their own: their planner (`gateway/planners.py`) puts the
exact API calls in the plan, and `run_planned` sends those, nothing else. Its answer, a
`TaskOutcome`, says both the task's state and the guest's resulting state: a successful
start is `guest_status: running`, whatever the task's own `stopped` means.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol, runtime_checkable

import anyio
from pydantic import TypeAdapter

from pvemcp.gateway import leftovers
from pvemcp.gateway.answers import Answer, read_as
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.plan import ApiCall, GuestTarget, Plan
from pvemcp.gateway.registry import ToolOutput, WriteInput
from pvemcp.proxmox.errors import MalformedAnswer
from pvemcp.proxmox.tasks import TaskStatus

HA_REQUESTS = ("hastart", "hastop", "hamigrate")
"""Tasks PVE starts instead of the action for an HA-managed guest (qemu-server
`API2/Qemu.pm`, pve-container `API2/LXC/Status.pm`): they only hand the request to
ha-manager and end before the guest changes state, so the runner waits on the guest."""

SETTLE_FIRST = 0.25
SETTLE_MAX = 2.0
"""The first and longest pause between reads of an HA guest's state (seconds)."""


@runtime_checkable
class Waits(Protocol):
    """The arguments of a write that starts a task (tools' `WaitInput`): whether to wait
    for it, and for how long (None: the cluster's task_timeout)."""

    wait: bool
    timeout: float | None


# What a write that started a task did: the task, and the guest's resulting state. (A
# comment, not a docstring: it would be the schema's description, in every tools/list.)
class TaskOutcome(ToolOutput):
    unadvertised: ClassVar[tuple[str, ...]] = ("type", "task_status", "seconds")
    """Fields answered but left out of the output schema (`gateway/schema.py`): about 20
    write tools share this outcome, and the server instructions describe all of it once.
    Left out: what the caller named (`type`), what `exitstatus` implies (`task_status`:
    running until there is one) and the time taken."""

    vmid: int | None = None
    node: str | None = None
    type: str | None = None
    upid: str | None = None
    task_status: Literal["running", "stopped"] | None = None
    """`running` when the call did not wait; `stopped` once the task ended (see exitstatus)."""
    exitstatus: str | None = None
    guest_status: str | None = None
    """The guest's state after the task: running, stopped, paused, suspended..."""
    note: str | None = None
    seconds: float | None = None


class _GuestState(Answer):
    status: str = "unknown"
    qmpstatus: str | None = None
    lock: str | None = None


_GUEST_STATE = TypeAdapter(_GuestState)


def guest_state(status: str, qmpstatus: str | None, lock: str | None) -> str:
    """One word for a guest's state, as an operator says it: PVE reports a paused VM as
    `status: running` with QEMU's `qmpstatus: paused`, and a VM suspended to disk as
    `stopped` with `lock: suspended`."""
    if status == "running" and qmpstatus not in (None, "running"):
        return str(qmpstatus)
    if status == "stopped" and lock == "suspended":
        return "suspended"
    return status


async def read_guest_state(ctx: ToolContext, target: GuestTarget) -> str:
    """The guest's state now, read fresh (a write call never uses the read cache)."""
    now = await read_as(ctx, _GUEST_STATE, f"{target.path}/status/current")
    return guest_state(now.status, now.qmpstatus, now.lock)


async def _send(ctx: ToolContext, call: ApiCall) -> str | None:
    """Send one call; the UPID of the task it started, if it is a task call."""
    answer = await ctx.call(call.method, call.path, call.params or None)
    if not call.task:
        return None
    # The context records every UPID (strictly parsed) a write answered with.
    if not isinstance(answer.data, str) or answer.data not in ctx.upids:
        raise MalformedAnswer(
            f"Proxmox answered {call.method} {call.path} without a task id (UPID): the "
            f"answer's data is {type(answer.data).__name__ if answer.data is not None else 'null'}",
            method=call.method,
            path=call.path,
        )
    return answer.data


async def _settle(
    ctx: ToolContext,
    target: GuestTarget,
    expected: str,
    task: TaskStatus,
    *,
    started: float,
    deadline: float,
) -> tuple[str, str | None]:
    """The guest's state after its task, and a note when it is not the planned one. For
    an HA request the state is polled until it is `expected` or the wait's budget ends."""
    state = await read_guest_state(ctx, target)
    if state == expected or task.type not in HA_REQUESTS:
        return state, None
    delay = SETTLE_FIRST
    while state != expected and anyio.current_time() + delay < deadline:
        elapsed = anyio.current_time() - started
        message = f"HA: {target.type} {target.vmid} is {state}, {elapsed:.1f} s"
        await ctx.report_progress(round(elapsed, 1), None, message)
        await anyio.sleep(delay)
        delay = min(delay * 2, SETTLE_MAX)
        state = await read_guest_state(ctx, target)
    if state == expected:
        return state, None
    return state, (
        f"{task.type} handed the request to the HA manager, and the guest is still {state}, "
        f"not {expected}: check again with proxmox_guest_get (do not repeat the action)"
    )


async def run_planned(ctx: ToolContext, args: WriteInput, plan: Plan) -> TaskOutcome:
    """Send `plan.calls` in order; wait for each task (with MCP progress) unless the call
    asked not to (only the last task is left running then: the next call could collide
    with it); then report the guest's resulting state. A create or restore whose task
    fails says what it left behind (`leftovers.wait_creating`)."""
    wait = args.wait if isinstance(args, Waits) else True
    timeout = (args.timeout if isinstance(args, Waits) else None) or ctx.cluster.task_timeout
    started = anyio.current_time()
    deadline = started + timeout
    target = plan.target
    outcome = TaskOutcome(vmid=target.vmid, node=target.node, type=target.type)
    task: TaskStatus | None = None
    for index, call in enumerate(plan.calls):
        upid = await _send(ctx, call)
        if upid is None:
            continue
        outcome.upid, outcome.task_status = upid, "running"
        if wait or index < len(plan.calls) - 1:
            budget = max(deadline - anyio.current_time(), 0.001)
            task = await leftovers.wait_creating(ctx, call, upid, budget)
            outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
    moved = plan.after("node")
    # A migration: the guest's config, and so its API path, is on the new node now (an HA
    # request has only handed the move to ha-manager).
    if (
        isinstance(target, GuestTarget)
        and isinstance(moved, str)
        and task is not None
        and (task.type not in HA_REQUESTS)
    ):
        target = target.model_copy(update={"node": moved})
        outcome.node = moved
    expected = plan.after("status")
    if task is not None and isinstance(target, GuestTarget) and isinstance(expected, str):
        outcome.guest_status, outcome.note = await _settle(
            ctx, target, expected, task, started=started, deadline=deadline
        )
    if wait:
        outcome.seconds = round(anyio.current_time() - started, 2)
    return outcome
