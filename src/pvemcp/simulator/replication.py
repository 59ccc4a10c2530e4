"""Storage replication jobs: the cluster's `replication.cfg` and each node's job state.

Follows pve-manager `PVE/API2/ReplicationConfig.pm` (the config API's checks and words),
`PVE/API2/Replication.pm` (status, log, schedule_now) and pve-guest-common
`PVE/ReplicationConfig.pm`, `ReplicationState.pm`, `Replication.pm`. A job copies a
guest's volumes to another node by ZFS snapshots, so every volume must be on storage
with the `replicate` feature (ZFS here: `missing replicate feature on volume ...`, as
qemu-server's and pve-container's `get_replicatable_volumes` say).

PVE runs jobs from pvescheduler, not as worker tasks: a job's state (last sync, duration,
failures, the running sync's pid) is read from the job state file and its log from
`/var/log/pve/replicate/<id>`. The simulator does the same lazily whenever a job is
read: a job is due at its next scheduled time or, after `schedule_now`, `SCHEDULER_DELAY`
later; a sync takes `SYNC_SECONDS` (both before the time scale) and leaves the replicas
on the target node. A removal (DELETE without `force`) is carried out the same way.
Only `*/N` minute schedules are computed; any other calendar event counts as every 15
minutes (unsure: PVE evaluates the full calendar-event syntax).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import ApiError, check_digest, failure, param_error
from .migrate import guest_volumes
from .model import Guest
from .router import Context, Params, Result, Route, api, deleted_keys, text

if TYPE_CHECKING:
    from .state import ClusterState

SCHEDULER_DELAY = 2.0
SYNC_SECONDS = 4.0
REPLICATE_TYPES = frozenset({"zfspool"})
"""Storage types with pve-storage's `replicate` feature."""
OPTIONS = ("comment", "disable", "rate", "remove_job", "schedule", "source")
_SCHEDULE = re.compile(r"^\*/(\d+)$")


@dataclass
class Job:
    """One replication job: its config and its state on the source node."""

    id: str
    guest: int
    target: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    last_sync: float = 0.0
    last_try: float = 0.0
    duration: float | None = None
    fail_count: int = 0
    error: str | None = None
    due: float | None = None
    """When `schedule_now` asked for a run."""
    running: tuple[float, float] | None = None
    """(begin, end) of the sync in progress."""
    pid: int | None = None
    log: list[str] = field(default_factory=list)
    removing: float | None = None
    """When the scheduler removes a job marked for removal."""

    @property
    def jobnum(self) -> int:
        return int(self.id.split("-", 1)[1])

    @property
    def schedule(self) -> str:
        return str(self.options.get("schedule", "*/15"))

    def next_scheduled(self) -> float:
        """The next time the schedule names after the last sync (or try)."""
        found = _SCHEDULE.match(self.schedule)
        step = 60 * int(found.group(1)) if found else 900
        last = max(self.last_sync, self.last_try)
        return (int(last) // step + 1) * step


@dataclass
class Replication:
    """The cluster's replication jobs, advanced lazily to the clock."""

    jobs: dict[str, Job] = field(default_factory=dict)

    def digest(self) -> str:
        body = {j.id: [j.guest, j.target, j.source, j.options] for j in self.jobs.values()}
        return hashlib.sha1(
            json.dumps(body, sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()

    def of_guest(self, vmid: int) -> list[Job]:
        return [job for job in self.jobs.values() if job.guest == vmid]


def demo_replication(now: float) -> Replication:
    """Container 203 on local-zfs, replicated to pve2 every 15 minutes, last synced at
    the previous quarter hour."""
    job = Job("203-0", 203, "pve2", "pve3", {"schedule": "*/15", "comment": "dns to pve2"})
    job.last_sync = job.last_try = (int(now) // 900) * 900
    job.duration = 2.81
    return Replication({job.id: job})


# --- running jobs --------------------------------------------------------------------


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def replicatable(state: ClusterState, guest: Guest) -> list[str]:
    """The guest's volumes a job copies; raises PVE's failure for one that cannot be."""
    volids: list[str] = []
    for volume in guest_volumes(guest):
        if volume.cdrom or "replicate=0" in str(guest.config.get(volume.key, "")):
            continue
        storage = next((s for s in state.storages if s.name == volume.storage), None)
        if storage is None or storage.type not in REPLICATE_TYPES or storage.shared:
            if storage is not None and storage.shared:
                continue  # shared storage needs no replica
            raise failure(f"missing replicate feature on volume '{volume.volid}'")
        volids.append(volume.volid)
    return sorted(volids)


def advance(state: ClusterState, now: float) -> None:
    """Carry every job forward to `now`: due syncs run and end, removals happen."""
    scale = state.time_scale
    for job in list(state.replication.jobs.values()):
        _follow(state, job)
        if job.removing is not None:
            if job.removing <= now:
                _remove(state, job)
            continue
        for _ in range(100):  # at most a hundred missed runs are caught up at once
            if job.running is None:
                due = job.due if job.due is not None else job.next_scheduled()
                if job.options.get("disable") or due > now:
                    break
                _begin(state, job, due, scale)
            if job.running is None or job.running[1] > now:
                break
            _end(state, job)


def _follow(state: ClusterState, job: Job) -> None:
    """A guest that moved takes its jobs along: its node is the source, and a job to the
    node it moved to now replicates back to the old source (QemuMigrate.pm and
    LXC/Migrate.pm `switch_replication_job_target` after a migration)."""
    guest = state.guests.get(job.guest)
    if guest is None or guest.node == job.source:
        return
    if guest.node == job.target:
        job.target = job.source
    job.source = guest.node


def _begin(state: ClusterState, job: Job, at: float, scale: float) -> None:
    job.due = None
    job.last_try = at
    guest = state.guests.get(job.guest)
    job.log = [f"{_stamp(at)} {job.id}: start replication job"]
    try:
        if guest is None:
            raise failure(f"no such guest '{job.guest}'")
        volids = replicatable(state, guest)
    except ApiError as err:  # the run ends with the error, as in run_single_job
        message = err.message.strip()
        job.log.append(f"{_stamp(at)} {job.id}: end replication job with error: {message}")
        job.error, job.fail_count, job.duration = message, job.fail_count + 1, 0.0
        return
    kind = "VM" if guest.kind == "qemu" else "CT"
    running = int(guest.status == "running")
    snap = f"__replicate_{job.id}_{int(at)}__"
    previous = f"__replicate_{job.id}_{int(job.last_sync)}__" if job.last_sync else None
    job.log += [
        f"{_stamp(at)} {job.id}: guest => {kind} {job.guest}, running => {running}",
        f"{_stamp(at)} {job.id}: volumes => {','.join(volids)}",
    ]
    for volid in volids:
        job.log.append(f"{_stamp(at)} {job.id}: create snapshot '{snap}' on {volid}")
        rate = job.options.get("rate")
        job.log.append(f"{_stamp(at)} {job.id}: using secure transmission, rate limit: "
                       f"{f'{rate} MByte/s' if rate else 'none'}")  # fmt: skip
        if previous:
            job.log.append(f"{_stamp(at)} {job.id}: incremental sync '{volid}' ({previous} => "
                           f"{snap})")  # fmt: skip
        else:
            job.log.append(f"{_stamp(at)} {job.id}: full sync '{volid}' ({snap})")
        job.log.append(f"{_stamp(at)} {job.id}: successfully imported '{volid}'")
    node = state.nodes.get(job.source)
    job.pid = state.new_worker_pid(node) if node is not None else None
    job.running = (at, at + SYNC_SECONDS * scale)
    _keep_replicas(state, job, guest, volids, at)


def _keep_replicas(
    state: ClusterState, job: Job, guest: Guest, volids: list[str], at: float
) -> None:
    for volid in volids:
        source = state.volumes.find(job.source, volid)
        if source is not None and state.volumes.find(job.target, volid) is None:
            state.volumes.add(job.target, replace(source, ctime=int(at)))


def _end(state: ClusterState, job: Job) -> None:
    assert job.running is not None
    begin, end = job.running
    job.log.append(f"{_stamp(end)} {job.id}: end replication job")
    job.last_sync, job.duration = begin, round(end - begin, 2)
    job.fail_count, job.error, job.running, job.pid = 0, None, None, None


def _remove(state: ClusterState, job: Job) -> None:
    """The scheduler's removal: the replicas on the target go with a `full` removal."""
    if job.options.get("remove_job") == "full":
        guest = state.guests.get(job.guest)
        for volume in guest_volumes(guest) if guest is not None else []:
            if guest is not None and guest.node != job.target:
                state.volumes.free(job.target, volume.volid)
    state.replication.jobs.pop(job.id, None)


# --- the config API ------------------------------------------------------------------


def _parse_id(raw: str) -> tuple[int, int]:
    """`parse_replication_job_id`."""
    found = re.fullmatch(r"(\d+)-(\d+)", raw)
    if found is None:
        raise failure(f"invalid replication job id '{raw}'")
    guest = int(found.group(1))
    if guest < 100:
        raise failure(f"invalid replication job id '{raw}' (guest IDs < 100 are reserved)")
    return guest, int(found.group(2))


def _config_view(state: ClusterState, job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": "local",
        "guest": job.guest,
        "jobnum": job.jobnum,
        "target": job.target,
        "source": job.source,
        **job.options,
    }


def _job(state: ClusterState, raw: str, message: str) -> Job:
    job = state.replication.jobs.get(raw)
    if job is None:
        raise failure(message)
    return job


def _list(ctx: Context, params: Params) -> Result:
    jobs = sorted(ctx.state.replication.jobs.values(), key=lambda j: j.id)
    return Result([_config_view(ctx.state, job) for job in jobs])


def _read(ctx: Context, params: Params) -> Result:
    job = _job(ctx.state, text(params, "id"), f"no such replication job '{text(params, 'id')}'")
    view = _config_view(ctx.state, job)
    view["digest"] = ctx.state.replication.digest()
    return Result(view)


def _create(ctx: Context, params: Params) -> Result:
    state = ctx.state
    jobid, target = text(params, "id"), text(params, "target")
    vmid, _num = _parse_id(jobid)
    guest = state.guests.get(vmid)
    if guest is None:
        raise failure(f"Guest '{vmid}' does not exist.")
    if target not in state.nodes:
        raise failure(f"Target '{target}' does not exist.")
    if "source" in params and params["source"] != guest.node:
        raise failure(f"Source '{params['source']}' does not match current node of guest "
                      f"'{vmid}' ({guest.node})")  # fmt: skip
    if target == guest.node:
        raise failure("Source and target must not be identical")
    if not replicatable(state, guest):
        raise failure("No replicatable volumes found")
    if jobid in state.replication.jobs:
        raise failure(f"replication job '{jobid}' already exists")
    if any(j.target == target for j in state.replication.of_guest(vmid)):
        # ReplicationConfig.pm write_config: one job per guest and target.
        raise failure(f"replication job for guest '{vmid}' to target '{target}' already exists")
    options = {k: params[k] for k in OPTIONS if k in params and k != "source"}
    job = Job(jobid, vmid, target, guest.node, options)
    # A job without state is due at once (ReplicationState.pm job_status: next_sync 1),
    # so the scheduler's next pass runs it.
    job.due = ctx.now + SCHEDULER_DELAY * state.time_scale
    state.replication.jobs[jobid] = job
    return Result(None)


def _update(ctx: Context, params: Params) -> Result:
    state = ctx.state
    check_digest(params.get("digest"), state.replication.digest())
    job = _job(state, text(params, "id"), f"no such job '{text(params, 'id')}'")
    options = dict(job.options)
    options.update({k: params[k] for k in OPTIONS if k in params and k != "source"})
    for key in deleted_keys(params):
        if key not in OPTIONS:
            raise failure(f"no such option '{key}'")
        options.pop(key, None)
    job.options = options
    if "source" in params:
        job.source = str(params["source"])
    return Result(None)


def _delete(ctx: Context, params: Params) -> Result:
    state = ctx.state
    jobid = text(params, "id")
    if params.get("force"):
        if params.get("keep"):
            raise param_error({"keep": "conflicts with parameter 'force'"})
        state.replication.jobs.pop(jobid, None)
        return Result(None)
    job = _job(state, jobid, f"no such job '{jobid}'")
    # Without keep a local job also removes the replicas on the target (`full`).
    job.options["remove_job"] = "local" if params.get("keep") else "full"
    job.removing = ctx.now + SCHEDULER_DELAY * state.time_scale
    return Result(None)


# --- the node API --------------------------------------------------------------------


def _status_view(state: ClusterState, job: Job) -> dict[str, Any]:
    guest = state.guests.get(job.guest)
    view = _config_view(state, job)
    view["vmtype"] = guest.kind if guest is not None else "qemu"
    if job.last_sync:
        view["last_sync"] = int(job.last_sync)
    if job.last_try:
        view["last_try"] = int(job.last_try)
    view["fail_count"] = job.fail_count
    if job.duration is not None:
        view["duration"] = job.duration
    if job.error:
        view["error"] = job.error
    if job.pid is not None:
        view["pid"] = job.pid
    if not job.options.get("disable"):
        view["next_sync"] = int(job.due if job.due is not None else job.next_scheduled())
    return view


def _local_job(ctx: Context, params: Params) -> Job:
    ctx.state.node(text(params, "node"))
    jobid = text(params, "id")
    return _job(ctx.state, jobid, f"no such replication job '{jobid}'")


def _node_status(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    wanted = params.get("guest")
    jobs = sorted(ctx.state.replication.jobs.values(), key=lambda j: j.id)
    return Result([
        _status_view(ctx.state, job) for job in jobs
        if job.source == node and wanted in (None, job.guest)
    ])  # fmt: skip


def _job_index(ctx: Context, params: Params) -> Result:
    _local_job(ctx, params)
    return Result([{"name": "schedule_now"}, {"name": "log"}, {"name": "status"}])


def _job_status(ctx: Context, params: Params) -> Result:
    return Result(_status_view(ctx.state, _local_job(ctx, params)))


def _job_log(ctx: Context, params: Params) -> Result:
    job = _local_job(ctx, params)
    if not job.log:
        return Result([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)
    start = int(str(params.get("start", 0)))
    limit = int(str(params.get("limit", 50)))
    page = job.log[start : start + limit]
    return Result([{"n": start + i + 1, "t": t} for i, t in enumerate(page)], len(job.log))


def _schedule_now(ctx: Context, params: Params) -> Result:
    job = _local_job(ctx, params)
    _parse_id(job.id)
    if job.running is None:
        job.due = ctx.now + SCHEDULER_DELAY * ctx.state.time_scale
    # PVE answers with what `schedule_job_now` returns (no UPID: pvescheduler runs the
    # job, not a worker task); the schema says only "string". Unsure of the exact value.
    return Result("")


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/replication", _list),
    api("POST", "/cluster/replication", _create),
    api("GET", "/cluster/replication/{id}", _read),
    api("PUT", "/cluster/replication/{id}", _update),
    api("DELETE", "/cluster/replication/{id}", _delete),
    api("GET", "/nodes/{node}/replication", _node_status),
    api("GET", "/nodes/{node}/replication/{id}", _job_index),
    api("GET", "/nodes/{node}/replication/{id}/status", _job_status),
    api("GET", "/nodes/{node}/replication/{id}/log", _job_log),
    api("POST", "/nodes/{node}/replication/{id}/schedule_now", _schedule_now),
)
