"""The simulated API methods: for each, its PVE path template, parameters and handler.

Only methods that exist in PVE's schema appear here (the conformance test checks both the
paths and the parameter specs against the real apidoc). Handlers run under the state's
lock with tasks already advanced to `Context.now`, and return PVE's `data` (plus `total`
for the paged lists) or raise `ApiError`. This module holds the cluster, node, task and
power methods; each further domain keeps its routes beside its behaviour
(`guestconfig.py`, `snapshots.py`), and they all meet in `ROUTES` and the one `ROUTER`.
"""

from __future__ import annotations

import re
from typing import Any

from . import (
    access,
    agent,
    backups,
    ceph,
    clone,
    cloudinit,
    create,
    firewall,
    guestconfig,
    ha,
    jobs,
    lifecycle,
    logs,
    mappings,
    metrics,
    migrate,
    network,
    nodes,
    notify,
    replication,
    sdn,
    snapshots,
    volumes,
)
from .errors import failure, param_error
from .model import Guest, GuestKind
from .permissions import audited
from .power import ACTIONS, request_power_action
from .router import Context, Handler, Params, Result, Route, Router, api, integer, text
from .storage import ROUTES as STORAGE_ROUTES
from .tasks import Task, is_upid, status_kind
from .views import (
    PVE_RELEASE,
    PVE_REPOID,
    PVE_VERSION,
    cluster_status,
    guest_list_entry,
    guest_resource,
    guest_status,
    node_list_entry,
    node_resource,
    node_status,
    node_storage_entry,
    node_usage,
    storage_resource,
    task_entry,
    task_status,
)

LOCAL_NODE = "pve1"
"""The node the simulator pretends to be (the `local` one in /cluster/status)."""


# --- cluster -------------------------------------------------------------------------


def _version(ctx: Context, params: Params) -> Result:
    return Result({"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": PVE_REPOID})


def _cluster_status(ctx: Context, params: Params) -> Result:
    entries = cluster_status(ctx.state, LOCAL_NODE)
    # Quorum is a majority of the votes (one per node here): nodes that are down count
    # against it.
    online = sum(1 for node in ctx.state.nodes.values() if node.online)
    entries[0]["quorate"] = 1 if 2 * online > len(ctx.state.nodes) else 0
    return Result(entries)


def _cluster_resources(ctx: Context, params: Params) -> Result:
    state, now = ctx.state, ctx.now
    wanted = params.get("type")
    items: list[dict[str, Any]] = []
    if wanted in (None, "node"):
        usage = node_usage(state)
        items += [
            _node_entry(node_resource(state, node, now, usage), node.online)
            for node in state.nodes.values()
        ]
    if wanted in (None, "storage"):
        for storage in state.storages:
            items += [
                _node_entry(
                    storage_resource(storage, node, state.volumes.usage(storage, node)),
                    state.nodes[node].online,
                )
                for node in storage.usage
            ]
    if wanted in (None, "vm"):
        visible = audited(state.access, ctx.user, state.guests.values())
        # HA's view of each managed guest, looked up once rather than once per guest.
        hastates = {
            service.vmid: fields[0]
            for service in state.ha.services.values()
            if (fields := ha.guest_fields(state, service.vmid)) is not None
        }
        items += [_guest_resource(ctx, g, hastates) for g in sorted(visible, key=_vmid)]
    if wanted in (None, "sdn"):
        items += sdn.sdn_resources(state.sdn, state.nodes)
    if wanted is None:
        items += [{"id": f"/pool/{pool}", "type": "pool", "pool": pool} for pool in state.pools]
    return Result(items)


_LIVE_KEYS = ("cpu", "mem", "disk", "uptime", "netin", "netout", "diskread", "diskwrite")
"""What pvestatd reports of a live node or guest, which nobody reports while it is down."""


def _guest_resource(ctx: Context, guest: Guest, hastates: dict[int, str]) -> dict[str, Any]:
    """A guest's resource entry; on a node that is down, PVE knows its config only: its
    status is `unknown` and it has no live figures."""
    entry = guest_resource(guest, ctx.now)
    if (hastate := hastates.get(guest.vmid)) is not None:
        entry["hastate"] = hastate
    if not ctx.state.nodes[guest.node].online:
        entry["status"] = "unknown"
        for key in _LIVE_KEYS:
            entry.pop(key, None)
    return entry


def _node_entry(entry: dict[str, Any], online: bool) -> dict[str, Any]:
    """A node's (or a node's storage's) entry in /nodes and /cluster/resources: without
    live figures when the node is down, and a storage's status `unknown` then."""
    if not online:
        for key in (*_LIVE_KEYS, "maxcpu", "maxmem", "maxdisk"):
            entry.pop(key, None)
        if entry.get("type") == "storage":
            entry["status"] = "unknown"
    return entry


def _nextid(ctx: Context, params: Params) -> Result:
    guests = ctx.state.guests
    if "vmid" in params:
        vmid = integer(params, "vmid")
        if vmid in guests:
            raise param_error({"vmid": f"VM {vmid} already exists"})
        return Result(vmid)
    vmid = 100
    while vmid in guests:
        vmid += 1
    return Result(vmid)


# --- nodes ---------------------------------------------------------------------------


def _nodes(ctx: Context, params: Params) -> Result:
    state = ctx.state
    usage = node_usage(state)
    return Result(
        [
            _node_entry(node_list_entry(state, node, ctx.now, usage), node.online)
            for node in state.nodes.values()
        ]
    )


def _node_status(ctx: Context, params: Params) -> Result:
    return Result(node_status(ctx.state, ctx.state.node(text(params, "node")), ctx.now))


def _storage_list(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    content = set(re.split(r"[;,\s]+", str(params.get("content", "")))) - {""}
    target = params.get("target")
    items: list[dict[str, Any]] = []
    for storage in ctx.state.storages:
        if node not in storage.usage:
            continue
        if "storage" in params and storage.name != params["storage"]:
            continue
        if content and not content & set(storage.content):
            continue
        if target is not None and target != node and not storage.shared:
            continue
        usage = ctx.state.volumes.usage(storage, node)
        items.append(node_storage_entry(storage, usage, bool(params.get("format"))))
    return Result(items)


# --- guests --------------------------------------------------------------------------


def _vmid(guest: Guest) -> int:
    return guest.vmid


def _guest_list(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        node = ctx.state.node(text(params, "node")).name
        guests = [g for g in ctx.state.guests.values() if g.node == node and g.kind == kind]
        guests = audited(ctx.state.access, ctx.user, guests)
        full = bool(params.get("full"))
        return Result([guest_list_entry(g, ctx.now, full) for g in sorted(guests, key=_vmid)])

    return handler


def _guest_status(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        ctx.state.node(text(params, "node"))
        guest = ctx.state.require_guest(text(params, "node"), kind, integer(params, "vmid"))
        status = guest_status(guest, ctx.now)
        if (fields := ha.guest_fields(ctx.state, guest.vmid)) is not None:
            status["ha"] = fields[1]
        return Result(status)

    return handler


def _power(kind: GuestKind, action: str) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        node, vmid = text(params, "node"), integer(params, "vmid")
        upid = request_power_action(
            ctx.state, kind, node, vmid, action, params=params, user=ctx.user
        )
        return Result(upid)

    return handler


def _agent_exec(ctx: Context, params: Params) -> Result:
    ctx.state.node(text(params, "node"))
    guest = ctx.state.require_guest(text(params, "node"), "qemu", integer(params, "vmid"))
    command = params["command"]
    assert isinstance(command, list)
    stdin = str(params.get("input-data", ""))
    return Result({"pid": ctx.state.agents.start(guest, command, stdin, ctx.now)})


def _agent_exec_status(ctx: Context, params: Params) -> Result:
    ctx.state.node(text(params, "node"))
    guest = ctx.state.require_guest(text(params, "node"), "qemu", integer(params, "vmid"))
    return Result(ctx.state.agents.status(guest, integer(params, "pid"), ctx.now))


# --- tasks ---------------------------------------------------------------------------


def _task(ctx: Context, params: Params) -> Task:
    """The task named by `upid` on `node`, or PVE's 400 on `upid`."""
    node = ctx.state.node(text(params, "node")).name
    upid = text(params, "upid")
    if not is_upid(upid):
        raise param_error({"upid": "unable to parse worker upid"})
    task = ctx.state.tasks.find(node, upid)
    if task is None:
        raise param_error({"upid": "no such task"})
    return task


def _task_status(ctx: Context, params: Params) -> Result:
    return Result(task_status(_task(ctx, params)))


def _task_log(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    upid = text(params, "upid")
    if not is_upid(upid):
        raise param_error({"upid": "unable to parse worker upid"})
    if params.get("download"):
        if "start" in params or "limit" in params:
            raise failure("'download' cannot be used together with 'start' or 'limit' parameters")
        raise failure("log download is not supported by the simulator")
    task = ctx.state.tasks.find(node, upid)
    if task is None:
        # dump_logfile answers a missing file with one line, not an error.
        return Result([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)
    lines = task.log(ctx.now)
    if not lines:
        # A worker that has not written yet: PVE's placeholder for ExtJS.
        return Result([{"n": 1, "t": "no content"}], 1)
    start = integer(params, "start") if "start" in params else 0
    limit = integer(params, "limit") if "limit" in params else 50
    page = lines[start:] if limit == 0 else lines[start : start + limit]
    return Result([{"n": start + i + 1, "t": text} for i, text in enumerate(page)], len(lines))


def _task_stop(ctx: Context, params: Params) -> Result:
    ctx.state.tasks.interrupt(_task(ctx, params), ctx.now)
    return Result(None)


def _node_tasks(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    start = integer(params, "start") if "start" in params else 0
    limit = integer(params, "limit") if "limit" in params else 50
    source = params.get("source", "archive")
    allowed = {"ok", "warning", "error", "unknown"}
    if params.get("errors"):
        allowed.discard("ok")
    elif "statusfilter" in params:
        allowed = {s.lower() for s in re.split(r"[;,\s]+", text(params, "statusfilter")) if s}
    on_node = [task for task in ctx.state.tasks if task.node == node]
    active = sorted((t for t in on_node if t.running), key=lambda t: -t.created)
    archive = sorted((t for t in on_node if not t.running), key=lambda t: -(t.end or 0.0))
    candidates = (active if source in ("active", "all") else []) + (
        archive if source != "active" else []
    )
    total = 0
    items: list[dict[str, Any]] = []
    for task in candidates:
        if not _task_matches(task, params) or status_kind(task.exitstatus) not in allowed:
            continue
        total += 1
        if total <= start or len(items) >= limit:
            continue
        entry = task_entry(task)
        if task.running:
            entry["status"] = "RUNNING"
        items.append(entry)
    return Result(items, total)


def _task_matches(task: Task, params: Params) -> bool:
    userfilter = str(params.get("userfilter", "")).lower()
    if userfilter and userfilter not in task.owner.lower():
        return False
    if "typefilter" in params and task.type != params["typefilter"]:
        return False
    if "vmid" in params and task.id != str(params["vmid"]):
        return False
    if "since" in params and task.starttime < integer(params, "since"):
        return False
    return not ("until" in params and task.starttime > integer(params, "until"))


# --- the table -----------------------------------------------------------------------

_ROOT_ONLY: dict[tuple[GuestKind, str], tuple[str, ...]] = {
    # qemu-server API2/Qemu.pm and pve-container API2/LXC/Status.pm: the options whose
    # description says "Only root may use this option" (the schema says it in prose only).
    ("qemu", "start"): ("skiplock", "stateuri", "migratedfrom", "migration_type",
                        "migration_network", "force-cpu", "targetstorage"),
    ("qemu", "stop"): ("skiplock", "migratedfrom", "keepActive"),
    ("qemu", "shutdown"): ("skiplock", "keepActive"),
    ("qemu", "suspend"): ("skiplock",),
    ("qemu", "resume"): ("skiplock", "nocheck"),
    ("lxc", "start"): ("skiplock",),
    ("lxc", "stop"): ("skiplock",),
}  # fmt: skip


def _guest_routes(kind: GuestKind) -> list[Route]:
    base = f"/nodes/{{node}}/{kind}"
    power = [
        api("POST", f"{base}/{{vmid}}/status/{action}", _power(kind, action),
            root_only=_ROOT_ONLY.get((kind, action), ()))
        for action in ACTIONS
    ]  # fmt: skip
    return [
        api("GET", base, _guest_list(kind)),
        api("GET", f"{base}/{{vmid}}/status/current", _guest_status(kind)),
        *power,
    ]


ROUTES: tuple[Route, ...] = (
    api("GET", "/version", _version),
    api("GET", "/cluster/status", _cluster_status),
    api("GET", "/cluster/resources", _cluster_resources),
    api("GET", "/cluster/nextid", _nextid),
    api("GET", "/nodes", _nodes),
    api("GET", "/nodes/{node}/status", _node_status),
    api("GET", "/nodes/{node}/storage", _storage_list),
    *_guest_routes("qemu"),
    *_guest_routes("lxc"),
    api("POST", "/nodes/{node}/qemu/{vmid}/agent/exec", _agent_exec),
    api("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status", _agent_exec_status),
    api("GET", "/nodes/{node}/tasks", _node_tasks),
    api("GET", "/nodes/{node}/tasks/{upid}/status", _task_status),
    api("GET", "/nodes/{node}/tasks/{upid}/log", _task_log),
    api("DELETE", "/nodes/{node}/tasks/{upid}", _task_stop),
    *guestconfig.ROUTES,
    *agent.ROUTES,
    *cloudinit.ROUTES,
    *snapshots.ROUTES,
    *migrate.ROUTES,
    *lifecycle.ROUTES,
    *create.ROUTES,
    *network.ROUTES,
    *sdn.ROUTES,
    *volumes.ROUTES,
    *clone.ROUTES,
    *backups.ROUTES,
    *metrics.ROUTES,
    *logs.ROUTES,
    *access.ROUTES,
    *firewall.ROUTES,
    *nodes.ROUTES,
    *ha.ROUTES,
    *replication.ROUTES,
    *ceph.ROUTES,
    *jobs.ROUTES,
    *notify.ROUTES,
    *mappings.ROUTES,
    *STORAGE_ROUTES,
)

ROUTER = Router(ROUTES)


def find_route(method: str, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
    """The route for `method` and the path segments, with its path parameters."""
    return ROUTER.find(method, segments)
