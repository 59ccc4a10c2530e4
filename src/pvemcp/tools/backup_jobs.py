"""Cluster backup jobs (issue 12): scheduled vzdump runs in `/etc/pve/jobs.cfg`.

Part of the `backup` toolset (it loads this module beside `backup.py`): whoever backs up
guests by hand manages their schedules too, and the toolset is not in the default set,
so the default tools/list does not grow. pve-manager `PVE/API2/Backup.pm` keeps the jobs;
PVE has no API method to run one now: the web UI (`www/manager6/dc/Backup.js`
`run_backup`) POSTs the job's vzdump options to each node's `/nodes/{node}/vzdump`, and so
does `run` here, one call per node holding selected guests, naming them (so policy sees
each node and the vzdump of `proxmox_backup_start` does the work). The schedule is
checked by PVE (its calendar-event format); a refusal names `schedule`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from pvemcp.tools.backup import BackupStarted, backups_on
from pvemcp.tools.kit import (
    Answer,
    ApiCall,
    Change,
    Plan,
    StorageId,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    WriteInput,
    matching,
    planners,
    read_as,
    tool,
)

JobId = Annotated[
    str,
    matching(r"[A-Za-z][A-Za-z0-9_\-]{1,49}", "a job id (letters, digits, - and _)"),
]
_NOT_VZDUMP = frozenset({"id", "type", "schedule", "enabled", "comment", "next-run",
                         "repeat-missed", "starttime", "dow", "node", "digest"})  # fmt: skip
"""Job keys that are the schedule's, not the vzdump run's (what `run_backup` strips)."""
_COMPRESS = {"zstd": "zstd", "gzip": "gzip", "lzo": "lzo", "none": "0"}
_JOBS = TypeAdapter(list[dict[str, Any]])


class _Guest(Answer):
    vmid: int
    name: str | None = None
    type: str | None = None


_GUESTS = TypeAdapter(list[_Guest])


class _Included(Answer):
    id: int
    """The guest's vmid."""


class _Tree(Answer):
    children: list[_Included] = Field(default_factory=list)


async def _jobs(ctx: ToolContext) -> dict[str, dict[str, Any]]:
    return {str(job["id"]): job for job in await read_as(ctx, _JOBS, "/cluster/backup")}


async def _job(ctx: ToolContext, jobid: str) -> dict[str, Any]:
    jobs = await _jobs(ctx)
    if jobid not in jobs:
        raise ToolFailure(
            "not_found",
            f"no backup job {jobid!r}",
            field="id",
            hint=f"Jobs: {', '.join(sorted(jobs)) or 'none'} (proxmox_backup_job_list).",
        )
    return jobs[jobid]


async def _selected(ctx: ToolContext, jobid: str) -> list[int]:
    tree = await read_as(ctx, TypeAdapter(_Tree), f"/cluster/backup/{jobid}/included_volumes")
    return [guest.id for guest in tree.children]


def _selection(job: dict[str, Any]) -> str:
    if job.get("vmid"):
        return f"vmids {job['vmid']}"
    if job.get("pool"):
        extra = f" except {job['exclude']}" if job.get("exclude") else ""
        return f"pool {job['pool']}{extra}"
    return "all guests" + (f" except {job['exclude']}" if job.get("exclude") else "")


# --- list ------------------------------------------------------------------------------


class ListArgs(ToolInput):
    id: Annotated[JobId | None, Field(description="One job, with the guests it backs up.")] = None


class JobRow(ToolOutput):
    id: str
    schedule: str | None = None
    enabled: bool
    next_run: int | None = None
    selection: str
    storage: str | None = None
    mode: str | None = None
    compress: str | None = None
    notes: str | None = None
    comment: str | None = None
    guests: list[int] | None = None


class GuestRow(ToolOutput):
    vmid: int
    name: str | None = None
    type: str | None = None


class JobList(ToolOutput):
    jobs: list[JobRow]
    not_backed_up: list[GuestRow]


def _row(job: dict[str, Any]) -> JobRow:
    return JobRow(
        id=str(job["id"]),
        schedule=job.get("schedule"),
        enabled=bool(int(job.get("enabled", 1))),
        next_run=job.get("next-run"),
        selection=_selection(job),
        storage=job.get("storage"),
        mode=job.get("mode"),
        compress=job.get("compress"),
        notes=job.get("notes-template"),
        comment=job.get("comment"),
    )


@tool(
    "proxmox_backup_job_list",
    title="List backup jobs",
    tier=Tier.READ,
    toolset="backup",
    input=ListArgs,
    output=JobList,
    idempotent=True,
    examples=[{}, {"id": "backup-nightly"}],
    rejects=[({"id": "nope"}, "not_found"), ({"id": "-x"}, "invalid_argument")],
    api=[
        "GET /cluster/backup",
        "GET /cluster/backup/{id}/included_volumes",
        "GET /cluster/backup-info/not-backed-up",
    ],
)
async def backup_job_list(ctx: ToolContext, args: ListArgs) -> JobList:
    """Scheduled backup jobs (schedule, next run as epoch, selection, storage) and the
    guests no enabled job backs up; with id, that job's guests."""
    jobs = await _jobs(ctx)
    if args.id is not None:
        jobs = {args.id: await _job(ctx, args.id)}
    rows = [_row(job) for job in jobs.values()]
    if args.id is not None:
        rows[0].guests = await _selected(ctx, args.id)
    missing = await read_as(ctx, _GUESTS, "/cluster/backup-info/not-backed-up")
    return JobList(
        jobs=rows,
        not_backed_up=[GuestRow(vmid=g.vmid, name=g.name, type=g.type) for g in missing],
    )


# --- create, update, run -----------------------------------------------------------------


class JobArgs(WaitInput):
    op: Literal["create", "update", "run"]
    id: Annotated[JobId | None, Field(description="Required for update/run; create: new.")] = None
    schedule: Annotated[
        str | None,
        Field(max_length=128, description="Calendar event: 'mon..fri 22:30', '01:00', '*/30'."),
    ] = None
    vmids: Annotated[list[int] | None, Field(min_length=1, max_length=200)] = None
    pool: Annotated[str | None, Field(max_length=64)] = None
    all: Annotated[bool | None, Field(description="Every guest (but exclude).")] = None
    exclude: Annotated[list[int] | None, Field(max_length=200)] = None
    storage: StorageId | None = None
    mode: Literal["snapshot", "suspend", "stop"] | None = None
    compress: Literal["zstd", "gzip", "lzo", "none"] | None = None
    notes: Annotated[
        str | None, Field(max_length=1024, description="{{guestname}} {{vmid}} {{node}}.")
    ] = None
    enabled: bool | None = None
    comment: Annotated[str | None, Field(max_length=512)] = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.op != "create" and self.id is None:
            raise ValueError(f"op={self.op} needs the job's id")
        chosen = [k for k in ("vmids", "pool", "all") if getattr(self, k)]
        if len(chosen) > 1:
            raise ValueError(f"choose one selection, not {' and '.join(chosen)}")
        if self.exclude and self.vmids:
            raise ValueError("exclude goes with all or pool, not vmids")
        if self.op == "create" and (not chosen or self.schedule is None):
            raise ValueError("a new job needs a schedule and one of vmids, pool or all")
        return self

    def settings(self) -> dict[str, Any]:
        """The PVE job options these arguments set."""
        values: dict[str, Any] = {
            "schedule": self.schedule,
            "vmid": ",".join(map(str, self.vmids)) if self.vmids else None,
            "pool": self.pool,
            "all": 1 if self.all else None,
            "exclude": ",".join(map(str, self.exclude)) if self.exclude else None,
            "storage": self.storage,
            "mode": self.mode,
            "compress": _COMPRESS[self.compress] if self.compress else None,
            "notes-template": self.notes,
            "enabled": None if self.enabled is None else int(self.enabled),
            "comment": self.comment,
        }
        return {k: v for k, v in values.items() if v is not None}


class JobChanged(ToolOutput):
    summary: str
    changes: list[Change] | None = None


class JobDone(JobChanged):
    runs: list[BackupStarted] | None = None
    """A run's vzdump tasks, one per node, with the archives each made."""


async def _check_refs(ctx: ToolContext, args: JobArgs) -> None:
    """The storage, pool and guests named exist (PVE would store a job naming none)."""
    if args.storage is not None:
        storages = {str(s["storage"]): s for s in await read_as(ctx, _JOBS, "/storage")}
        found = storages.get(args.storage)
        if found is None or "backup" not in str(found.get("content", "")).split(","):
            raise ToolFailure(
                "not_found" if found is None else "invalid_argument",
                f"storage {args.storage!r} "
                + ("does not exist" if found is None else "does not hold backups"),
                field="storage",
                hint="Backup storages: "
                + ", ".join(
                    sorted(k for k, s in storages.items() if "backup" in str(s.get("content", "")))
                ),
            )
    if args.pool is not None:
        pools = [str(p["poolid"]) for p in await read_as(ctx, _JOBS, "/pools")]
        if args.pool not in pools:
            raise ToolFailure("not_found", f"no pool {args.pool!r}", field="pool",
                              hint=f"Pools: {', '.join(sorted(pools))}.")  # fmt: skip
    named = [*(args.vmids or []), *(args.exclude or [])]
    if named:
        known = {int(r["vmid"]) for r in await planners.guest_resources(ctx)}
        unknown = [v for v in named if v not in known]
        if unknown:
            field = "vmids" if unknown[0] in (args.vmids or []) else "exclude"
            raise ToolFailure("not_found", f"no guest with vmid {unknown[0]}", field=field,
                              hint="List guests with proxmox_guest_list.")  # fmt: skip


async def _plan_job(ctx: ToolContext, args: JobArgs) -> Plan:
    if args.op == "run":
        return await _plan_run(ctx, args)
    jobs = await _jobs(ctx)
    await _check_refs(ctx, args)
    values = args.settings()
    if args.op == "create":
        if args.id is not None and args.id in jobs:
            raise ToolFailure("already_exists", f"backup job {args.id!r} already exists",
                              field="id", hint="Choose another id, or op=update.")  # fmt: skip
        params = {"id": args.id, **values} if args.id else values
        return Plan(
            summary=f"create backup job {args.id or '(new id)'}: {_selection(values)}, "
            f"{values['schedule']}",
            changes=[Change(field="job", before=None, after=values)],
            target=Target(name=args.id),
            calls=[ApiCall.to("POST", "/cluster/backup", params=params)],
        )
    assert args.id is not None
    job = await _job(ctx, args.id)
    if not values:
        raise ToolFailure("invalid_argument", "nothing to change", field="op",
                          hint="Pass the settings to change (schedule, vmids, ...).")  # fmt: skip
    before = {k: job.get(k) for k in values}
    changed = [Change(field=k, before=before[k], after=v) for k, v in values.items()
               if str(before[k]) != str(v)]  # fmt: skip
    if values.keys() & {"vmid", "pool", "all"}:
        changed.append(Change(field="selection", before=_selection(job), after=_selection(values)))
    return Plan(
        summary=f"update backup job {args.id}",
        changes=changed,
        target=Target(name=args.id),
        calls=[ApiCall.to("PUT", "/cluster/backup/{id}", params=values, id=args.id)],
    )


async def _plan_run(ctx: ToolContext, args: JobArgs) -> Plan:
    assert args.id is not None
    job = await _job(ctx, args.id)
    if args.settings():
        raise ToolFailure("invalid_argument", "op=run takes only the job's id", field="op",
                          hint="Change the job with op=update first.")  # fmt: skip
    wanted = set(await _selected(ctx, args.id))
    rows = [r for r in await planners.guest_resources(ctx) if int(r["vmid"]) in wanted]
    if not rows:
        raise ToolFailure("precondition_failed", f"backup job {args.id} selects no guest",
                          field="id", hint="Change its selection with op=update.")  # fmt: skip
    options = {k: v for k, v in job.items() if k not in _NOT_VZDUMP and k not in
               ("vmid", "pool", "all", "exclude")}  # fmt: skip
    nodes = sorted({str(r["node"]) for r in rows})
    await _check_nodes(ctx, nodes, str(job.get("storage", "local")))
    locked = [f"{r['vmid']} ({r['lock']})" for r in rows if r.get("lock")]
    calls = []
    for node in nodes:
        vmids = sorted(int(r["vmid"]) for r in rows if r["node"] == node)
        params = {**options, "vmid": ",".join(map(str, vmids))}
        calls.append(ApiCall.to("POST", "/nodes/{node}/vzdump", params=params, task=True,
                                node=node))  # fmt: skip
    return Plan(
        summary=f"run backup job {args.id} now: {len(rows)} guests on {len(calls)} nodes "
        f"to {job.get('storage', 'local')}",
        target=Target(name=args.id),
        calls=calls,
        warnings=[
            "each guest is locked (backup) while its part runs: other changes to it fail",
            *([f"locked now, their backup fails: {', '.join(locked)}"] if locked else []),
        ],
    )


async def _check_nodes(ctx: ToolContext, nodes: list[str], storage: str) -> None:
    """Every node the run sends a vzdump to is online and has the job's storage for
    backups, so the run does not start on some nodes and fail on the next."""
    status = {str(n["node"]): n.get("status") for n in await read_as(ctx, _JOBS, "/nodes")}
    down = [node for node in nodes if status.get(node) != "online"]
    if down:
        raise ToolFailure(
            "precondition_failed",
            f"node {', '.join(down)} holding guests of the job is not online",
            field="id",
            hint="Bring the node back, or exclude its guests (op=update), then run.",
        )
    for node in nodes:
        await planners.storage_status(ctx, node, storage, field="id", content="backup")


async def _run(ctx: ToolContext, args: JobArgs, plan: Plan) -> list[BackupStarted]:
    runs = []
    for call in plan.calls:
        node, storage = call.path.split("/")[2], str(call.params.get("storage", "local"))
        vmids = [int(v) for v in str(call.params["vmid"]).split(",")]
        before = {i.volid for i in await backups_on(ctx, node, storage, field="id")}
        upid = str((await ctx.call(call.method, call.path, call.params)).data)
        started = BackupStarted(node=node, upid=upid, task_status="running")
        if args.wait:
            task = await ctx.wait_task(upid, args.timeout)
            started.task_status, started.exitstatus = task.status, task.exitstatus
            after = await backups_on(ctx, node, storage, field="id")
            started.backups = sorted(i.volid for i in after
                                     if i.volid not in before and i.vmid in vmids)  # fmt: skip
        runs.append(started)
    return runs


@tool(
    "proxmox_backup_job",
    title="Create, change or run a backup job",
    tier=Tier.WRITE,
    toolset="backup",
    input=JobArgs,
    output=JobDone,
    planner=_plan_job,
    examples=[
        {
            "op": "create",
            "id": "weekly-prod",
            "schedule": "sat 02:30",
            "pool": "prod",
            "storage": "nfs-backup",
            "compress": "zstd",
        },
        {"op": "update", "id": "backup-nightly", "schedule": "02:00", "exclude": [9000, 103]},
        {"op": "run", "id": "backup-nightly", "wait": False},
    ],
    rejects=[
        ({"op": "create", "schedule": "01:00"}, "invalid_argument"),
        (
            {"op": "create", "id": "backup-nightly", "schedule": "01:00", "all": True},
            "already_exists",
        ),
        ({"op": "create", "schedule": "01:00", "vmids": [999]}, "not_found"),
        (
            {"op": "create", "schedule": "01:00", "all": True, "storage": "local-lvm"},
            "invalid_argument",
        ),
        ({"op": "update", "id": "nope", "schedule": "01:00"}, "not_found"),
        ({"op": "run", "id": "backup-nightly", "schedule": "01:00"}, "invalid_argument"),
    ],
    api=["POST /cluster/backup", "PUT /cluster/backup/{id}", "POST /nodes/{node}/vzdump"],
)
async def backup_job(ctx: ToolContext, args: JobArgs) -> JobDone:
    """Create or change a scheduled backup job (selection: vmids, a pool, or all with
    exclude), or run one now: a vzdump per node, answered with the new archives."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    if args.op == "run":
        return JobDone(summary=plan.summary, runs=await _run(ctx, args, plan))
    call = plan.calls[0]
    await ctx.call(call.method, call.path, call.params)
    return JobDone(summary=plan.summary, changes=plan.changes)


# --- delete ----------------------------------------------------------------------------


class DeleteArgs(WriteInput):
    id: JobId


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    job = await _job(ctx, args.id)
    guests = await _selected(ctx, args.id)
    others = [j for j in (await _jobs(ctx)).values() if j["id"] != args.id]
    warnings = [f"{len(guests)} guests lose this schedule; guests no other job backs up are "
                "listed by proxmox_backup_job_list afterwards"] if others else [
                "no backup job is left: no guest is backed up on a schedule"]  # fmt: skip
    return Plan(
        summary=f"delete backup job {args.id} ({_selection(job)}, {job.get('schedule')})",
        changes=[
            Change(
                field="job", before={k: v for k, v in job.items() if k != "next-run"}, after=None
            )
        ],
        target=Target(name=args.id),
        calls=[ApiCall.to("DELETE", "/cluster/backup/{id}", id=args.id)],
        warnings=warnings,
    )


@tool(
    "proxmox_backup_job_delete",
    title="Delete a backup job",
    tier=Tier.DESTRUCTIVE,
    toolset="backup",
    input=DeleteArgs,
    output=JobChanged,
    planner=_plan_delete,
    examples=[{"id": "backup-nightly"}],
    rejects=[({"id": "nope"}, "not_found")],
    api=["DELETE /cluster/backup/{id}"],
)
async def backup_job_delete(ctx: ToolContext, args: DeleteArgs) -> JobChanged:
    """Delete a scheduled backup job. Its archives stay; its guests are no longer backed
    up on that schedule."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    await ctx.call("DELETE", plan.calls[0].path)
    return JobChanged(summary=plan.summary, changes=plan.changes)


TOOLS = (backup_job_list, backup_job, backup_job_delete)
