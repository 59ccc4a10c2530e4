"""Ceph of a hyper-converged cluster: status and health detail, lists of its daemons and
pools, an OSD in or out, a pool created or deleted.

Reads come first (pve-manager `PVE/API2/Cluster/Ceph.pm`, `PVE/API2/Ceph/*.pm`); the only
writes are the ones an operator makes weekly, both destructive: an OSD out makes Ceph move
its data (and a pool's placement groups undersized when its host has no other OSD), a pool
deleted loses its data. The OSD plan predicts the health from the CRUSH tree as Ceph
counts it with the `host` failure domain, and refuses an out that leaves fewer hosts than
a pool's `min_size` (its I/O would stop). The pool delete refuses a pool that a CephFS, a
guest disk or (unless `remove_storages`) a PVE storage uses, naming it, where PVE checks
only for RBD images. A cluster without Ceph answers every tool with `not_configured`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    Plan,
    ProxmoxError,
    Target,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    WriteInput,
    action,
    gib,
    matching,
    node_statuses,
    read_as,
    tool,
)

TOOLSET = "ceph"
PoolName = Annotated[str, matching(r"[^:/\s]{1,128}", "a Ceph pool name")]
_NOT_THERE = ("binary not installed", "not initialized", "not fully configured", "not enabled")
"""How `PVE/Ceph/Tools.pm`'s `check_ceph_*` say the node has no (working) Ceph."""


class _Pool(Answer):
    pool_name: str
    size: int
    min_size: int
    pg_num: int | None = None
    bytes_used: int | None = None
    percent_used: float | None = None
    application_metadata: dict[str, Any] | None = None


class _Storage(Answer):
    storage: str
    type: str
    pool: str | None = None


class _Volume(Answer):
    volid: str
    vmid: int | None = None


_POOLS = TypeAdapter(list[_Pool])
_STORAGES = TypeAdapter(list[_Storage])
_VOLUMES = TypeAdapter(list[_Volume])
_ROWS = TypeAdapter(list[dict[str, Any]])


async def _ceph(ctx: ToolContext, path: str, adapter: TypeAdapter[Any] = _ROWS) -> Any:
    """A Ceph read; a cluster without Ceph is one clear `not_configured` refusal."""
    try:
        return await read_as(ctx, adapter, path)
    except ProxmoxError as exc:
        if any(words in exc.message for words in _NOT_THERE):
            raise ToolFailure(
                "not_configured",
                f"this cluster has no Ceph: PVE says '{exc.message.strip()}'",
                hint="Install and initialise Ceph first (Datacenter > Ceph in the GUI, or "
                "pveceph install / pveceph init); for other storages use the storage toolset.",
            ) from exc
        raise


async def _online_node(ctx: ToolContext) -> str:
    nodes = await node_statuses(ctx)
    online = sorted(node for node, status in nodes.items() if status == "online")
    return (online or list(nodes))[0]


# --- status ----------------------------------------------------------------------------


class Check(ToolOutput):
    check: str
    message: str
    detail: list[str] | None = None


class Status(ToolOutput):
    health: str
    checks: list[Check]
    mons: list[str]
    quorum: list[str]
    mgr_active: str | None = None
    mgr_standby: list[str] | None = None
    osds: str
    pgs: dict[str, int]
    used_pct: float | None = None
    used_gib: float | None = None
    total_gib: float | None = None
    flags: list[str] | None = None


def _checks(status: dict[str, Any]) -> list[Check]:
    found = (status.get("health") or {}).get("checks") or {}
    return [
        Check(
            check=name,
            message=str((c.get("summary") or {}).get("message", "")),
            detail=[str(d.get("message")) for d in c.get("detail") or []] or None,
        )
        for name, c in sorted(found.items())
    ]


def _health(status: dict[str, Any]) -> str:
    return str((status.get("health") or {}).get("status", "unknown"))


@tool(
    "proxmox_ceph_status",
    title="Ceph status and health",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=ToolInput,
    output=Status,
    idempotent=True,
    examples=[{}],
    api=["GET /cluster/ceph/status", "GET /cluster/ceph/flags"],
)
async def ceph_status(ctx: ToolContext, args: ToolInput) -> Status:
    """Ceph health with each check's detail (OSD down, degraded PGs, crashes...), monitors
    and quorum, managers, OSDs up/in, PG states, raw usage and OSD flags set."""
    status: dict[str, Any] = await _ceph(ctx, "/cluster/ceph/status", OBJECT)
    flags = await _ceph(ctx, "/cluster/ceph/flags")
    osdmap, pgmap, mgrmap = (status.get(k) or {} for k in ("osdmap", "pgmap", "mgrmap"))
    total, used = int(pgmap.get("bytes_total") or 0), int(pgmap.get("bytes_used") or 0)
    return Status(
        health=_health(status),
        checks=_checks(status),
        mons=[str(m.get("name")) for m in (status.get("monmap") or {}).get("mons") or []],
        quorum=[str(n) for n in status.get("quorum_names") or []],
        mgr_active=mgrmap.get("active_name") or None,
        mgr_standby=[str(s.get("name")) for s in mgrmap.get("standbys") or []] or None,
        osds=f"{osdmap.get('num_osds', 0)} total, {osdmap.get('num_up_osds', 0)} up, "
        f"{osdmap.get('num_in_osds', 0)} in",
        pgs={str(s["state_name"]): int(s["count"]) for s in pgmap.get("pgs_by_state") or []},
        used_pct=round(100 * used / total, 1) if total else None,
        used_gib=gib(used) if total else None,
        total_gib=gib(total) if total else None,
        flags=[str(f["name"]) for f in flags if f.get("value")] or None,
    )


# --- lists -----------------------------------------------------------------------------


class ListArgs(ToolInput):
    kind: Literal["osds", "pools", "mons", "mgrs", "mds", "fs"]


class Row(ToolOutput):
    name: str
    host: str | None = None
    state: str | None = None
    marked_in: bool | None = None
    used_pct: float | None = None
    size: int | None = None
    min_size: int | None = None
    pg_num: int | None = None
    application: str | None = None
    used_gib: float | None = None
    fs: str | None = None
    metadata_pool: str | None = None
    data_pools: list[str] | None = None


class Rows(ToolOutput):
    kind: str
    rows: list[Row]


def _osd_rows(tree: dict[str, Any]) -> list[Row]:
    rows = []
    stack = list((tree.get("root") or {}).get("children") or [])
    while stack:
        item = stack.pop(0)
        if item.get("type") == "osd":
            rows.append(
                Row(
                    name=str(item["name"]),
                    host=item.get("host"),
                    state=item.get("status"),
                    marked_in=bool(item.get("in")),
                    used_pct=item.get("percent_used"),
                )
            )
        stack += item.get("children") or []
    return sorted(rows, key=lambda r: int(r.name.split(".")[1]))


def _pool_row(pool: _Pool) -> Row:
    apps = sorted(pool.application_metadata or {})
    return Row(
        name=pool.pool_name,
        size=pool.size,
        min_size=pool.min_size,
        pg_num=pool.pg_num,
        application=",".join(apps) or None,
        used_gib=round((pool.bytes_used or 0) / 2**30, 2),
        used_pct=round(100 * (pool.percent_used or 0), 2),
    )


@tool(
    "proxmox_ceph_list",
    title="List Ceph OSDs, pools or daemons",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=ListArgs,
    output=Rows,
    idempotent=True,
    examples=[{"kind": k} for k in ("osds", "pools", "mons", "mgrs", "mds", "fs")],
    rejects=[({"kind": "disks"}, "invalid_argument")],
    api=[f"GET /nodes/{{node}}/ceph/{k}" for k in ("osd", "pool", "mon", "mgr", "mds", "fs")]
    + ["GET /nodes"],
)
async def ceph_list(ctx: ToolContext, args: ListArgs) -> Rows:
    """Ceph OSDs (host, up/down, in/out, usage), pools (size, min_size, PGs, usage), mons,
    mgrs, MDS or CephFS filesystems. Health is in proxmox_ceph_status."""
    node = await _online_node(ctx)
    path = {"osds": "osd", "pools": "pool", "mons": "mon", "mgrs": "mgr"}.get(args.kind, args.kind)
    data = await _ceph(ctx, f"/nodes/{node}/ceph/{path}", OBJECT if path == "osd" else _ROWS)
    if args.kind == "osds":
        rows = _osd_rows(data)
    elif args.kind == "pools":
        rows = [_pool_row(p) for p in _POOLS.validate_python(data)]
    elif args.kind == "fs":
        rows = [
            Row(
                name=str(f["name"]),
                metadata_pool=f.get("metadata_pool"),
                data_pools=f.get("data_pools") or [f.get("data_pool")],
            )
            for f in data
        ]
    else:
        rows = [
            Row(name=str(d["name"]), host=d.get("host"), state=d.get("state"), fs=d.get("fs_name"))
            for d in data
        ]
    return Rows(kind=args.kind, rows=rows)


# --- OSD in/out ------------------------------------------------------------------------


class OsdArgs(WriteInput):
    osd: Annotated[int, Field(ge=0, le=65535, description="OSD id (osd.N).")]
    action: Literal["in", "out"]


class OsdOutcome(ToolOutput):
    osd: str
    action: str
    health: str
    checks: list[Check]


def _osds(tree: dict[str, Any]) -> dict[int, Row]:
    return {int(r.name.split(".")[1]): r for r in _osd_rows(tree)}


async def _plan_osd(ctx: ToolContext, args: OsdArgs) -> Plan:
    node = await _online_node(ctx)
    osds = _osds(await _ceph(ctx, f"/nodes/{node}/ceph/osd", OBJECT))
    osd = osds.get(args.osd)
    if osd is None:
        raise ToolFailure(
            "not_found",
            f"no such OSD '{args.osd}'",
            field="osd",
            hint=f"OSDs: {', '.join(r.name for r in osds.values())}.",
        )
    inside = args.action == "in"
    if osd.marked_in == inside:
        raise ToolFailure(
            "precondition_failed",
            f"{osd.name} is already {args.action}",
            field="action",
            hint="Nothing to do.",
        )
    osd.marked_in = inside
    hosts = {r.host for r in osds.values() if r.marked_in and r.state == "up"}
    pools = _POOLS.validate_python(await _ceph(ctx, f"/nodes/{node}/ceph/pool"))
    stops = [p.pool_name for p in pools if len(hosts) < p.min_size]
    if stops:
        raise ToolFailure(
            "precondition_failed",
            f"taking {osd.name} out leaves {len(hosts)} host(s) with an OSD up and in, below "
            f"min_size of pool(s) {', '.join(stops)}: their I/O would stop",
            field="osd",
            hint="Bring another OSD of a different host in (or up) first.",
        )
    short = [p.pool_name for p in pools if len(hosts) < p.size]
    warnings = []
    if not inside:
        warnings.append(f"Ceph moves the data of {osd.name} to other OSDs (rebalance)")
    if short:
        warnings.append(
            f"pools {', '.join(short)} become undersized (HEALTH_WARN PG_DEGRADED)"
            f": only {len(hosts)} hosts hold copies"
        )
    if inside and osd.state != "up":
        warnings.append(f"{osd.name} is down: in, its PGs are degraded (HEALTH_WARN OSD_DOWN)")
    call = ApiCall.to(
        "POST",
        "/nodes/{node}/ceph/osd/{osdid}/" + args.action,
        node=node,  # a monitor command: any node with Ceph sends it, the OSD's may be down
        osdid=str(args.osd),
    )
    return Plan(
        summary=f"Mark {osd.name} on {osd.host} {args.action}",
        target=Target(node=osd.host, name=osd.name),
        changes=[Change(field=f"{osd.name} in", before=not inside, after=inside)],
        calls=[call],
        warnings=warnings,
    )


@tool(
    "proxmox_ceph_osd",
    title="Mark a Ceph OSD in or out",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=OsdArgs,
    output=OsdOutcome,
    planner=_plan_osd,
    examples=[{"osd": 4, "action": "out"}, {"osd": 5, "action": "in"}],
    rejects=[
        ({"osd": 42, "action": "out"}, "not_found"),
        ({"osd": 5, "action": "out"}, "precondition_failed"),
    ],
    api=[
        "POST /nodes/{node}/ceph/osd/{osdid}/in",
        "POST /nodes/{node}/ceph/osd/{osdid}/out",
        "GET /nodes/{node}/ceph/osd",
        "GET /nodes/{node}/ceph/pool",
        "GET /nodes",
        "GET /cluster/ceph/status",
    ],
)
async def ceph_osd(ctx: ToolContext, args: OsdArgs) -> OsdOutcome:
    """Mark an OSD out (Ceph moves its data away: before replacing a disk) or in again;
    the plan says how health changes. Refused when a pool would drop below min_size."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    await ctx.call(plan.calls[0].method, plan.calls[0].path)
    status: dict[str, Any] = await _ceph(ctx, "/cluster/ceph/status", OBJECT)
    return OsdOutcome(
        osd=f"osd.{args.osd}", action=args.action, health=_health(status), checks=_checks(status)
    )


# --- pools -----------------------------------------------------------------------------


class PoolArgs(WaitInput):
    action: Literal["create", "delete"]
    name: PoolName
    size: Annotated[int | None, Field(ge=1, le=7, description="Replicas; PVE default 3.")] = None
    min_size: Annotated[int | None, Field(ge=1, le=7, description="PVE default 2.")] = None
    pg_num: Annotated[int | None, Field(ge=1, le=32768)] = None
    application: Literal["rbd", "cephfs", "rgw"] | None = None
    add_storage: Annotated[
        bool, Field(description="create: also add an RBD storage of that name.")
    ] = False
    remove_storages: Annotated[
        bool, Field(description="delete: also remove the PVE storages on the pool.")
    ] = False

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if (self.size or 3) < (self.min_size or 2):
            raise ValueError("min_size must not exceed size")
        return self


async def _users(ctx: ToolContext, node: str, name: str) -> tuple[list[str], list[str], list[str]]:
    """What uses a pool: CephFS filesystems, PVE storages, guests with disks there."""
    fs = [
        str(f["name"])
        for f in await _ceph(ctx, f"/nodes/{node}/ceph/fs")
        if name in {f.get("metadata_pool"), *(f.get("data_pools") or [f.get("data_pool")])}
    ]
    storages = [
        s.storage
        for s in await read_as(ctx, _STORAGES, "/storage")
        if s.type == "rbd" and (s.pool or "rbd") == name
    ]
    guests = []
    for storage in storages:
        content = f"/nodes/{node}/storage/{storage}/content"
        guests += [f"{v.vmid} ({v.volid})" for v in await read_as(ctx, _VOLUMES, content) if v.vmid]
    return fs, storages, guests


async def _plan_pool(ctx: ToolContext, args: PoolArgs) -> Plan:
    node = await _online_node(ctx)
    pools = {
        p.pool_name: p for p in _POOLS.validate_python(await _ceph(ctx, f"/nodes/{node}/ceph/pool"))
    }
    target = Target(node=node, name=args.name)
    if args.action == "create":
        if args.name in pools:
            raise ToolFailure(
                "already_exists",
                f"pool '{args.name}' already exists",
                field="name",
                hint="Choose another name.",
            )
        params: dict[str, Any] = {"name": args.name}
        for key in ("size", "min_size", "pg_num", "application"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        if args.add_storage:
            # PVE adds the storage after creating the pool: a name taken fails it half-done.
            taken = {s.storage for s in await read_as(ctx, _STORAGES, "/storage")}
            if args.name in taken:
                raise ToolFailure(
                    "already_exists",
                    f"storage ID '{args.name}' already defined",
                    field="add_storage",
                    hint="Choose another pool name, or create the pool without add_storage.",
                )
            params["add_storages"] = 1
        return Plan(
            summary=f"Create Ceph pool {args.name}",
            target=target,
            changes=[Change(field="pool", before=None, after=args.name)]
            + ([Change(field="storage", before=None, after=args.name)] if args.add_storage else []),
            calls=[
                ApiCall.to("POST", "/nodes/{node}/ceph/pool", params=params, node=node, task=True)
            ],
        )
    if args.name not in pools:
        raise ToolFailure(
            "not_found",
            f"no Ceph pool '{args.name}'",
            field="name",
            hint=f"Pools: {', '.join(sorted(pools))}.",
        )
    fs, storages, guests = await _users(ctx, node, args.name)
    used_by = (
        f"CephFS {', '.join(fs)}"
        if fs
        else f"guest disks {', '.join(guests)} on storage {', '.join(storages)}"
        if guests
        else f"PVE storage {', '.join(storages)}"
        if storages and not args.remove_storages
        else ""
    )
    if used_by:
        raise ToolFailure(
            "in_use",
            f"pool '{args.name}' is in use by {used_by}",
            field="name",
            hint="Move or delete the guest disks first."
            if guests
            else "Delete the CephFS first."
            if fs
            else "Pass remove_storages=true to remove the storage with the pool.",
        )
    pool = pools[args.name]
    params = {"remove_storages": 1} if args.remove_storages else {}
    return Plan(
        summary=f"Delete Ceph pool {args.name} and its data",
        target=target,
        changes=[Change(field="pool", before=args.name, after=None)]
        + [Change(field="storage", before=s, after=None) for s in storages],
        calls=[
            ApiCall.to(
                "DELETE",
                "/nodes/{node}/ceph/pool/{name}",
                params=params,
                node=node,
                name=args.name,
                task=True,
            )
        ],
        warnings=[f"all {gib(pool.bytes_used or 0)} GiB in the pool are lost"],
    )


POOL = action(
    "proxmox_ceph_pool",
    title="Create or delete a Ceph pool",
    description="""Create a replicated Ceph pool (optionally with an RBD storage), or delete
    one with its data. Delete is refused while a CephFS, guest disk or storage uses it.""",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=PoolArgs,
    output=TaskOutcome,
    planner=_plan_pool,
    examples=[
        {"action": "create", "name": "bench", "pg_num": 32},
        {"action": "create", "name": "vmdata", "add_storage": True},
        {"action": "delete", "name": "rbd", "remove_storages": True},
    ],
    rejects=[
        ({"action": "create", "name": "rbd"}, "already_exists"),
        ({"action": "create", "name": "local", "add_storage": True}, "already_exists"),
        ({"action": "delete", "name": "nope"}, "not_found"),
        ({"action": "delete", "name": "rbd"}, "in_use"),
        ({"action": "delete", "name": "cephfs_data"}, "in_use"),
        ({"action": "create", "name": "x", "size": 2, "min_size": 3}, "invalid_argument"),
    ],
    api=[
        "POST /nodes/{node}/ceph/pool",
        "DELETE /nodes/{node}/ceph/pool/{name}",
        "GET /nodes/{node}/ceph/pool",
        "GET /nodes/{node}/ceph/fs",
        "GET /storage",
        "GET /nodes/{node}/storage/{storage}/content",
        "GET /nodes",
    ],
)

TOOLS = (ceph_status, ceph_list, ceph_osd, POOL)
