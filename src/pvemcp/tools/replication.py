"""Storage replication jobs: list with their state and log, create, run now, delete.

PVE replicates a guest's volumes to another node with ZFS snapshots, run by pvescheduler
rather than as worker tasks (pve-manager `PVE/API2/Replication.pm`,
`PVE/API2/ReplicationConfig.pm`; pve-guest-common `PVE/Replication*.pm`). So the create
plan reads the guest's disks and the storages of both nodes and refuses a volume without
the replicate feature (ZFS) before PVE would; "run now" only makes the job due, and the
tool then reads the job's state until its sync has ended.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Applied,
    Change,
    GuestRef,
    NodeName,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WaitInput,
    WriteInput,
    apply_plan,
    guest_disks,
    matching,
    node_statuses,
    planners,
    read_as,
    tool,
    utc_time,
)

TOOLSET = "replication"
JobId = Annotated[str, matching(r"[1-9][0-9]{2,8}-\d{1,9}", "a job id (<vmid>-<number>)")]
REPLICATE_TYPES = frozenset({"zfspool"})
"""Storage types with pve-storage's `replicate` feature (ZFS only)."""
_POLL = 0.5


class _Job(Answer):
    id: str
    guest: int
    target: str
    source: str | None = None
    schedule: str | None = None
    rate: float | None = None
    comment: str | None = None
    disable: bool | None = None
    remove_job: str | None = None


class _State(_Job):
    last_sync: int | None = None
    next_sync: int | None = None
    duration: float | None = None
    fail_count: int | None = None
    error: str | None = None
    pid: int | None = None


class _Storage(Answer):
    storage: str
    type: str
    shared: bool | None = None


class _Line(Answer):
    n: int
    t: str


_JOBS = TypeAdapter(list[_Job])
_STATES = TypeAdapter(list[_State])
_STATE = TypeAdapter(_State)
_STORAGES = TypeAdapter(list[_Storage])
_LINES = TypeAdapter(list[_Line])


async def _jobs(ctx: ToolContext) -> dict[str, _Job]:
    return {job.id: job for job in await read_as(ctx, _JOBS, "/cluster/replication")}


async def _job(ctx: ToolContext, jobid: str) -> _Job:
    jobs = await _jobs(ctx)
    if jobid not in jobs:
        raise ToolFailure(
            "not_found",
            f"no replication job {jobid!r}",
            field="id",
            hint=f"Jobs: {', '.join(sorted(jobs)) or 'none'} (proxmox_replication_list).",
        )
    return jobs[jobid]


def _source(job: _Job) -> str:
    if job.source is None:
        raise ToolFailure(
            "bad_upstream_answer",
            f"replication job {job.id} names no source node",
            field="id",
            hint="Read it with proxmox_replication_list.",
        )
    return job.source


# --- list ------------------------------------------------------------------------------


class ListArgs(ToolInput):
    vmid: Vmid | None = None
    id: Annotated[JobId | None, Field(description="One job, with its last run's log.")] = None


class JobRow(ToolOutput):
    id: str
    vmid: int
    source: str | None = None
    target: str
    schedule: str
    rate: float | None = None
    comment: str | None = None
    disabled: bool | None = None
    removing: str | None = None
    last_sync: str | None = None
    next_sync: str | None = None
    duration: float | None = None
    fail_count: int | None = None
    error: str | None = None
    syncing: bool | None = None


class JobList(ToolOutput):
    jobs: list[JobRow]
    log: list[str] | None = None


def _row(job: _Job, state: _State | None) -> JobRow:
    return JobRow(
        id=job.id,
        vmid=job.guest,
        source=job.source,
        target=job.target,
        schedule=job.schedule or "*/15",
        rate=job.rate,
        comment=job.comment,
        disabled=job.disable or None,
        removing=job.remove_job,
        last_sync=utc_time(state.last_sync or None) if state else None,
        next_sync=utc_time(state.next_sync or None) if state else None,
        duration=state.duration if state else None,
        fail_count=state.fail_count if state else None,
        error=state.error if state else None,
        syncing=(state.pid is not None) or None if state else None,
    )


@tool(
    "proxmox_replication_list",
    title="List replication jobs",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=ListArgs,
    output=JobList,
    idempotent=True,
    examples=[{}, {"vmid": 203}, {"id": "203-0"}],
    rejects=[({"id": "999-0"}, "not_found"), ({"id": "abc"}, "invalid_argument")],
    api=[
        "GET /cluster/replication",
        "GET /nodes/{node}/replication",
        "GET /nodes/{node}/replication/{id}/log",
    ],
)
async def replication_list(ctx: ToolContext, args: ListArgs) -> JobList:
    """Replication jobs (ZFS copies of a guest's disks to another node) with their state:
    last and next sync, duration, failures, error; with id, also that job's last run log."""
    jobs = await _jobs(ctx)
    if args.id is not None:
        jobs = {args.id: await _job(ctx, args.id)}
    elif args.vmid is not None:
        jobs = {k: j for k, j in jobs.items() if j.guest == args.vmid}
    states: dict[str, _State] = {}
    for node in sorted({j.source for j in jobs.values() if j.source}):
        for state in await read_as(ctx, _STATES, f"/nodes/{node}/replication"):
            states[state.id] = state
    log = None
    if args.id is not None:
        node = _source(jobs[args.id])
        lines = await read_as(ctx, _LINES, f"/nodes/{node}/replication/{args.id}/log")
        log = [line.t for line in lines]
    return JobList(jobs=[_row(job, states.get(job.id)) for job in jobs.values()], log=log)


# --- create ----------------------------------------------------------------------------


class CreateArgs(WriteInput, GuestRef):
    target: Annotated[NodeName, Field(description="Node that receives the copies.")]
    schedule: Annotated[
        str | None, Field(max_length=128, description="Calendar event; PVE default */15.")
    ] = None
    rate: Annotated[float | None, Field(ge=1, description="Limit in MB/s.")] = None
    comment: Annotated[str | None, Field(max_length=4096)] = None


async def _storages(ctx: ToolContext, node: str) -> dict[str, _Storage]:
    return {s.storage: s for s in await read_as(ctx, _STORAGES, f"/nodes/{node}/storage")}


async def _volumes(ctx: ToolContext, row: dict[str, Any], field: str) -> list[str]:
    """The volumes a job would copy, after checking each has the replicate feature."""
    target = planners.guest_target(row)
    config = await read_as(ctx, OBJECT, f"{target.path}/config")
    storages = await _storages(ctx, target.node)
    volids = []
    for key, volid, _size in guest_disks(target.type, config):
        storage = storages.get(volid.split(":", 1)[0])
        if storage is not None and storage.shared:
            continue  # shared storage needs no copy
        if storage is None or storage.type not in REPLICATE_TYPES:
            kind = storage.type if storage else "unknown"
            raise ToolFailure(
                "precondition_failed",
                f"missing replicate feature on volume '{volid}' ({key}, {kind} storage): "
                "replication needs ZFS",
                field=field,
                hint="Move the disk to a ZFS storage first (proxmox_disk_move).",
            )
        volids.append(volid)
    if not volids:
        raise ToolFailure(
            "precondition_failed",
            "No replicatable volumes found",
            field=field,
            hint="Replication copies local ZFS volumes; this guest has none.",
        )
    return sorted(volids)


async def _plan_create(ctx: ToolContext, args: CreateArgs) -> Plan:
    row = await planners.resolve_guest(ctx, args)
    field, source, vmid = planners.ref_field(args), str(row["node"]), int(row["vmid"])
    if args.target == source:
        raise ToolFailure(
            "invalid_argument",
            f"the guest is on {source}: source and target must not be identical",
            field="target",
            hint="Name another node.",
        )
    nodes = await node_statuses(ctx)
    if nodes.get(args.target) != "online":
        raise ToolFailure(
            "not_found",
            f"node {args.target!r} is not an online cluster node",
            field="target",
            hint=f"Nodes: {', '.join(sorted(nodes))}.",
        )
    jobs = [j for j in (await _jobs(ctx)).values() if j.guest == vmid]
    if any(j.target == args.target for j in jobs):
        raise ToolFailure(
            "already_exists",
            f"guest {vmid} already replicates to {args.target}",
            field="target",
            hint="Run it with proxmox_replication_run, or pick another target.",
        )
    volids = await _volumes(ctx, row, field)
    there = await _storages(ctx, args.target)
    missing = sorted({v.split(":", 1)[0] for v in volids} - set(there))
    if missing:
        raise ToolFailure(
            "precondition_failed",
            f"storage {', '.join(missing)} is not on node {args.target}",
            field="target",
            hint="Replicate to a node with the same ZFS storage.",
        )
    taken = {int(j.id.split("-", 1)[1]) for j in jobs}
    jobid = f"{vmid}-{next(n for n in range(len(taken) + 1) if n not in taken)}"
    params: dict[str, Any] = {"id": jobid, "type": "local", "target": args.target}
    for key in ("schedule", "rate", "comment"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return Plan(
        summary=f"Replicate guest {vmid} from {source} to {args.target} as job {jobid}",
        changes=[
            Change(field="job", before=None, after=jobid),
            Change(field="volumes", before=None, after=volids),
            Change(field="schedule", before=None, after=args.schedule or "*/15"),
        ],
        target=planners.guest_target(row),
        calls=[ApiCall.to("POST", "/cluster/replication", params=params)],
        warnings=["the first (full) sync starts within a minute and copies every volume"],
    )


@tool(
    "proxmox_replication_create",
    title="Create a replication job",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=CreateArgs,
    output=Applied,
    planner=_plan_create,
    examples=[
        {"vmid": 204, "target": "pve2"},
        {"name": "nginx-dev", "target": "pve2", "schedule": "*/30", "rate": 50},
    ],
    rejects=[
        ({"vmid": 100, "target": "pve2"}, "precondition_failed"),
        ({"vmid": 203, "target": "pve2"}, "already_exists"),
        ({"vmid": 204, "target": "pve3"}, "invalid_argument"),
        ({"vmid": 204, "target": "pve1"}, "precondition_failed"),
        ({"vmid": 204, "target": "pve9"}, "not_found"),
    ],
    api=["POST /cluster/replication"],
)
async def replication_create(ctx: ToolContext, args: CreateArgs) -> Applied:
    """Replicate a guest's ZFS disks to another node on a schedule (PVE default every 15
    min), for fast migration and HA failover. Refused when a disk is not on ZFS."""
    return await apply_plan(ctx, args)


# --- run now ---------------------------------------------------------------------------


class RunArgs(WaitInput):
    id: JobId


async def _plan_run(ctx: ToolContext, args: RunArgs) -> Plan:
    job = await _job(ctx, args.id)
    if job.disable or job.remove_job:
        why = "is being removed" if job.remove_job else "is disabled"
        raise ToolFailure(
            "precondition_failed",
            f"job '{job.id}' {why}",
            field="id",
            hint="Enable the job on the node first (pvesr enable)."
            if job.disable
            else "Create a new job instead.",
        )
    source = _source(job)
    return Plan(
        summary=f"Run replication job {job.id} ({source} to {job.target}) now",
        target=_job_target(job, source),
        calls=[
            ApiCall.to(
                "POST",
                "/nodes/{node}/replication/{id}/schedule_now",
                node=source,
                id=job.id,
            )
        ],
    )


def _job_target(job: _Job, source: str) -> Target:
    """What policy decides on: the guest the job copies, on its source node."""
    return Target(node=source, vmid=job.guest)


class RunOutcome(ToolOutput):
    id: str
    node: str
    result: Literal["synced", "failed", "pending"]
    last_sync: str | None = None
    duration: float | None = None
    fail_count: int | None = None
    error: str | None = None
    note: str | None = None


@tool(
    "proxmox_replication_run",
    title="Run a replication job now",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=RunArgs,
    output=RunOutcome,
    planner=_plan_run,
    examples=[{"id": "203-0"}, {"id": "203-0", "wait": False}],
    rejects=[({"id": "204-0"}, "not_found")],
    api=["POST /nodes/{node}/replication/{id}/schedule_now"],
)
async def replication_run(ctx: ToolContext, args: RunArgs) -> RunOutcome:
    """Sync a replication job now instead of at its next scheduled time, and wait for the
    sync to end (result synced or failed, with PVE's error)."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    call = plan.calls[0]
    node = str(plan.target.node)
    path = f"/nodes/{node}/replication/{args.id}/status"
    before = await read_as(ctx, _STATE, path)
    await ctx.call(call.method, call.path)
    outcome = RunOutcome(id=args.id, node=node, result="pending")
    deadline = anyio.current_time() + (args.timeout or ctx.cluster.task_timeout)
    while args.wait:
        now = await read_as(ctx, _STATE, path)
        synced = (now.last_sync or 0) > (before.last_sync or 0)
        failed = (now.fail_count or 0) > (before.fail_count or 0)
        if synced or failed:
            outcome.result = "synced" if synced else "failed"
            outcome.last_sync, outcome.duration = utc_time(now.last_sync or None), now.duration
            outcome.fail_count, outcome.error = now.fail_count, now.error
            return outcome
        if anyio.current_time() >= deadline:
            break
        await ctx.report_progress(0.5, 1.0, f"{args.id}: {'syncing' if now.pid else 'due'}")
        await anyio.sleep(_POLL)
    outcome.note = "scheduled; proxmox_replication_list id=... shows the run and its log"
    return outcome


# --- delete ----------------------------------------------------------------------------


class DeleteArgs(WriteInput):
    id: JobId
    keep: Annotated[bool, Field(description="Keep the copies on the target node.")] = False


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    job = await _job(ctx, args.id)
    source = _source(job)
    warnings = ["pvescheduler removes the job within a minute"]
    if not args.keep:
        warnings.append(
            f"the replicated volumes of guest {job.guest} on {job.target} are deleted: a "
            "later job to that node starts with a full sync"
        )
    return Plan(
        summary=f"Delete replication job {job.id} ({source} to {job.target})",
        changes=[Change(field="job", before=job.id, after=None)],
        target=_job_target(job, source),
        calls=[
            ApiCall.to(
                "DELETE",
                "/cluster/replication/{id}",
                params={"keep": 1} if args.keep else {},
                id=job.id,
            )
        ],
        warnings=warnings,
    )


@tool(
    "proxmox_replication_delete",
    title="Delete a replication job",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=DeleteArgs,
    output=Applied,
    planner=_plan_delete,
    examples=[{"id": "203-0"}, {"id": "203-0", "keep": True}],
    rejects=[({"id": "204-0"}, "not_found")],
    api=["DELETE /cluster/replication/{id}"],
)
async def replication_delete(ctx: ToolContext, args: DeleteArgs) -> Applied:
    """Delete a replication job; its copies on the target node are deleted too unless keep.
    The guest and its own disks are not touched."""
    return await apply_plan(ctx, args)


TOOLS = (replication_list, replication_create, replication_run, replication_delete)
