"""Guest tools: VMs and containers together, found by vmid or name, and their power state."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

import anyio
from pydantic import Field, TypeAdapter, model_validator

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import Change, Plan, Target
from pvemcp.gateway.registry import ToolInput, ToolOutput, WriteInput, tool
from pvemcp.policy.tiers import Tier
from pvemcp.tools.cluster import gib, mib, pct
from pvemcp.tools.common import (
    OBJECT,
    Answer,
    GuestName,
    GuestType,
    NodeName,
    Timeout,
    Vmid,
    as_int,
    read_as,
    start_task,
    tag_list,
)

ExtraField = Literal[
    "cpu", "mem", "disk", "uptime", "pool", "template", "hastate", "lock", "net", "diskio"
]


class GuestRow(ToolOutput):
    """One guest as listed; extra fields appear only when asked for with `fields`."""

    vmid: int
    name: str | None = None
    type: str
    node: str
    status: str
    tags: list[str] | None = None
    cpu_pct: float | None = None
    cpus: int | None = None
    mem_mib: int | None = None
    maxmem_mib: int | None = None
    disk_gib: float | None = None
    maxdisk_gib: float | None = None
    uptime_s: int | None = None
    pool: str | None = None
    template: bool | None = None
    hastate: str | None = None
    lock: str | None = None
    netin: int | None = None
    netout: int | None = None
    diskread: int | None = None
    diskwrite: int | None = None


def _row(resource: dict[str, Any], fields: frozenset[str]) -> GuestRow:
    row = GuestRow(
        vmid=int(resource["vmid"]),
        name=resource.get("name"),
        type=str(resource.get("type")),
        node=str(resource.get("node")),
        status=str(resource.get("status", "unknown")),
        tags=tag_list(resource.get("tags")),
    )
    if "cpu" in fields:
        row.cpu_pct = pct(resource.get("cpu"))
        row.cpus = as_int(resource.get("maxcpu"))
    if "mem" in fields:
        row.mem_mib = mib(resource.get("mem"))
        row.maxmem_mib = mib(resource.get("maxmem"))
    if "disk" in fields:
        row.disk_gib = gib(resource.get("disk"))
        row.maxdisk_gib = gib(resource.get("maxdisk"))
    if "uptime" in fields:
        row.uptime_s = as_int(resource.get("uptime"))
    if "pool" in fields:
        row.pool = resource.get("pool")
    if "template" in fields:
        row.template = bool(resource.get("template"))
    if "hastate" in fields:
        row.hastate = resource.get("hastate")
    if "lock" in fields:
        row.lock = resource.get("lock")
    if "net" in fields:
        row.netin = as_int(resource.get("netin"))
        row.netout = as_int(resource.get("netout"))
    if "diskio" in fields:
        row.diskread = as_int(resource.get("diskread"))
        row.diskwrite = as_int(resource.get("diskwrite"))
    return row


class _Resource(Answer):
    """A guest's row in /cluster/resources: what the guest tools (and planners) read."""

    vmid: int
    type: str
    node: str
    name: str | None = None
    status: str = "unknown"
    tags: str | None = None
    pool: str | None = None
    template: bool | None = None
    hastate: str | None = None
    lock: str | None = None
    cpu: float | None = None
    maxcpu: float | None = None
    mem: float | None = None
    maxmem: float | None = None
    disk: float | None = None
    maxdisk: float | None = None
    uptime: float | None = None
    netin: float | None = None
    netout: float | None = None
    diskread: float | None = None
    diskwrite: float | None = None


class _HaState(Answer):
    managed: bool = False
    state: str | None = None


class _CurrentStatus(Answer):
    """GET .../status/current, the fields proxmox_guest_get shows."""

    name: str | None = None
    status: str | None = None
    qmpstatus: str | None = None
    uptime: float | None = None
    cpus: float | None = None
    cpu: float | None = None
    mem: float | None = None
    maxmem: float | None = None
    maxdisk: float | None = None
    tags: str | None = None
    lock: str | None = None
    ha: _HaState | None = None
    template: bool | None = None


_RESOURCES = TypeAdapter(list[_Resource])
_CURRENT_STATUS = TypeAdapter(_CurrentStatus)


async def _guest_resources(ctx: ToolContext) -> list[dict[str, Any]]:
    """The cluster's guests by vmid, as validated rows (None members left out): the
    dict form is what planners of other tool modules read (`resolve_guest`)."""
    rows = await read_as(ctx, _RESOURCES, "/cluster/resources", {"type": "vm"})
    return [
        row.model_dump(exclude_none=True)
        for row in sorted(rows, key=lambda r: r.vmid)
        if row.type in ("qemu", "lxc")
    ]


class GuestListArgs(ToolInput):
    node: NodeName | None = None
    status: Literal["running", "stopped", "paused"] | None = None
    type: GuestType | None = None
    name: Annotated[
        str | None, Field(max_length=128, description="Case-insensitive substring of the name.")
    ] = None
    tag: Annotated[str | None, Field(max_length=64, pattern=r"^[\w.+-]+$")] = None
    fields: Annotated[
        list[ExtraField] | None, Field(max_length=10, description="Extra columns to include.")
    ] = None
    offset: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class GuestList(ToolOutput):
    guests: list[GuestRow]
    total: int
    next_offset: int | None = None


@tool(
    "proxmox_guest_list",
    title="List guests",
    tier=Tier.READ,
    toolset="guests",
    input=GuestListArgs,
    output=GuestList,
    idempotent=True,
)
async def guest_list(ctx: ToolContext, args: GuestListArgs) -> GuestList:
    """List VMs and containers across the cluster, filtered by node, status, type, name or
    tag, sorted by vmid and paged (`total`, `next_offset`). Use proxmox_guest_get for one
    guest's configuration."""
    wanted = frozenset(args.fields or ())
    needle = args.name.lower() if args.name else None
    matches = [
        r
        for r in await _guest_resources(ctx)
        if (args.node is None or r.get("node") == args.node)
        and (args.status is None or r.get("status") == args.status)
        and (args.type is None or r.get("type") == args.type)
        and (needle is None or needle in str(r.get("name", "")).lower())
        and (args.tag is None or args.tag in (tag_list(r.get("tags")) or ()))
    ]
    page = matches[args.offset : args.offset + args.limit]
    end = args.offset + len(page)
    return GuestList(
        guests=[_row(r, wanted) for r in page],
        total=len(matches),
        next_offset=end if end < len(matches) else None,
    )


class GuestRef(ToolInput):
    """A guest named by vmid or by name (exactly one)."""

    vmid: Vmid | None = None
    name: GuestName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.vmid is None) == (self.name is None):
            raise ValueError("give exactly one of vmid or name")
        return self


def guest_target(row: dict[str, Any]) -> Target:
    """A guest's resource row as the plan target policy decides on (node, pool, tags)."""
    return Target(
        node=str(row["node"]),
        vmid=int(row["vmid"]),
        type=str(row["type"]),
        name=row.get("name"),
        pool=row.get("pool"),
        tags=tag_list(row.get("tags")) or [],
    )


async def resolve_guest(ctx: ToolContext, ref: GuestRef) -> dict[str, Any]:
    """Find the guest's resource row (node and type); errors list what exists instead."""
    rows = await _guest_resources(ctx)
    if ref.vmid is not None:
        for row in rows:
            if int(row["vmid"]) == ref.vmid:
                return row
        raise ToolFailure(
            "not_found",
            f"no guest with vmid {ref.vmid} in cluster {ctx.cluster_name}",
            field="vmid",
            hint="List guests with proxmox_guest_list.",
        )
    exact = [r for r in rows if r.get("name") == ref.name]
    found = exact or [r for r in rows if str(r.get("name", "")).lower() == str(ref.name).lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ToolFailure(
            "not_found",
            f"no guest named {ref.name!r} in cluster {ctx.cluster_name}",
            field="name",
            hint="List guests with proxmox_guest_list (its name filter matches substrings).",
        )
    candidates = [
        {
            "vmid": int(r["vmid"]),
            "type": r.get("type"),
            "node": r.get("node"),
            "status": r.get("status"),
        }
        for r in found
    ]
    raise ToolFailure(
        "ambiguous_name",
        f"{len(found)} guests are named {ref.name!r}",
        field="name",
        hint="Call again with vmid: " + ", ".join(str(c["vmid"]) for c in candidates),
        details={"candidates": candidates},
    )


class GuestGetArgs(GuestRef):
    include_config: Annotated[
        bool, Field(description="Include the guest's configuration (disks, NICs, options).")
    ] = True


class GuestDetails(ToolOutput):
    vmid: int
    name: str | None = None
    type: str
    node: str
    status: str
    qmpstatus: str | None = None
    uptime_s: int | None = None
    cpus: float | None = None
    cpu_pct: float | None = None
    mem_mib: int | None = None
    maxmem_mib: int | None = None
    maxdisk_gib: float | None = None
    tags: list[str] | None = None
    lock: str | None = None
    ha: str | None = None
    template: bool | None = None
    config: dict[str, Any] | None = None


@tool(
    "proxmox_guest_get",
    title="Get a guest",
    tier=Tier.READ,
    toolset="guests",
    input=GuestGetArgs,
    output=GuestDetails,
    idempotent=True,
)
async def guest_get(ctx: ToolContext, args: GuestGetArgs) -> GuestDetails:
    """One VM or container by vmid or exact name: current status and, by default, its
    configuration. A name that several guests share is an error listing their vmids."""
    row = await resolve_guest(ctx, args)
    base = f"/nodes/{row['node']}/{row['type']}/{row['vmid']}"
    statuses: list[_CurrentStatus] = []
    config: dict[str, Any] = {}

    async def fetch_status() -> None:
        statuses.append(await read_as(ctx, _CURRENT_STATUS, f"{base}/status/current"))

    async def fetch_config() -> None:
        answer: dict[str, Any] = await read_as(ctx, OBJECT, f"{base}/config")
        config.update(answer)

    async with anyio.create_task_group() as group:
        group.start_soon(fetch_status)
        if args.include_config:
            group.start_soon(fetch_config)
    config.pop("digest", None)
    (status,) = statuses
    return GuestDetails(
        vmid=int(row["vmid"]),
        name=status.name or row.get("name"),
        type=str(row["type"]),
        node=str(row["node"]),
        status=status.status or str(row.get("status", "unknown")),
        qmpstatus=status.qmpstatus,
        uptime_s=as_int(status.uptime),
        cpus=status.cpus,
        cpu_pct=pct(status.cpu),
        mem_mib=mib(status.mem),
        maxmem_mib=mib(status.maxmem),
        maxdisk_gib=gib(status.maxdisk),
        tags=tag_list(status.tags or row.get("tags")),
        lock=status.lock,
        ha=status.ha.state if status.ha is not None and status.ha.managed else None,
        template=status.template or None,
        config=config or None,
    )


class PowerResult(ToolOutput):
    vmid: int
    node: str
    type: str
    action: str
    upid: str
    status: Literal["running", "stopped"]
    exitstatus: str | None = None
    seconds: float | None = None


class PowerArgs(GuestRef, WriteInput):
    action: Literal["start", "shutdown", "reboot", "suspend", "resume"]
    wait: Annotated[bool, Field(description="Wait for the task to finish, reporting progress.")] = (
        True
    )
    timeout: Timeout | None = None


class StopArgs(GuestRef, WriteInput):
    wait: Annotated[bool, Field(description="Wait for the task to finish.")] = True
    timeout: Timeout | None = None


# What each action expects to find and leaves behind, for plans and warnings.
_TRANSITIONS: dict[str, tuple[str, str]] = {
    "start": ("stopped", "running"),
    "shutdown": ("running", "stopped"),
    "reboot": ("running", "running"),
    "suspend": ("running", "paused"),
    "resume": ("paused", "running"),
    "stop": ("running", "stopped"),
}


async def _power_plan(ctx: ToolContext, ref: GuestRef, action: str) -> Plan:
    row = await resolve_guest(ctx, ref)
    if action in ("suspend", "resume") and row["type"] == "lxc":
        raise ToolFailure(
            "unsupported",
            f"containers cannot {action} here; {row['vmid']} is an LXC container",
            field="action",
            hint="Use shutdown and start for containers.",
        )
    expected, after = _TRANSITIONS[action]
    status = str(row.get("status", "unknown"))
    label = f"{row['type']} {row['vmid']} ({row.get('name', '?')}) on {row['node']}"
    warnings = []
    if status != expected:
        warnings.append(f"the guest is {status}, not {expected}: the task may fail or do nothing")
    if action == "stop":
        warnings.append("a hard stop loses unsaved data in the guest, like pulling the plug")
    return Plan(
        summary=f"{action} {label}",
        changes=[Change(field="status", before=status, after=after)],
        target=guest_target(row),
        warnings=warnings,
    )


async def _power(ctx: ToolContext, action: str, wait: bool, timeout: float | None) -> PowerResult:
    assert ctx.plan is not None, "the gateway plans every power action before running it"
    target = ctx.plan.target
    started = anyio.current_time()
    upid = await start_task(
        ctx, f"/nodes/{target.node}/{target.type}/{target.vmid}/status/{action}"
    )
    result = PowerResult(
        vmid=int(target.vmid or 0),
        node=str(target.node),
        type=str(target.type),
        action=action,
        upid=upid,
        status="running",
    )
    if wait:
        task = await ctx.wait_task(upid, timeout)
        result.status = "stopped"
        result.exitstatus = task.exitstatus
        result.seconds = round(anyio.current_time() - started, 2)
    return result


async def _plan_power(ctx: ToolContext, args: PowerArgs) -> Plan:
    return await _power_plan(ctx, args, args.action)


async def _plan_stop(ctx: ToolContext, args: StopArgs) -> Plan:
    return await _power_plan(ctx, args, "stop")


@tool(
    "proxmox_guest_power",
    title="Start, shut down, reboot, suspend or resume a guest",
    tier=Tier.WRITE,
    toolset="guests",
    input=PowerArgs,
    output=PowerResult,
    planner=_plan_power,
)
async def guest_power(ctx: ToolContext, args: PowerArgs) -> PowerResult:
    """Start, cleanly shut down, reboot, suspend or resume a VM or container (by vmid or
    name). With wait (default) it returns when the Proxmox task ends, reporting progress; a
    failed task is an error carrying its upid. For a hard power-off use proxmox_guest_stop."""
    return await _power(ctx, args.action, args.wait, args.timeout)


@tool(
    "proxmox_guest_stop",
    title="Hard-stop a guest",
    tier=Tier.DESTRUCTIVE,
    toolset="guests",
    input=StopArgs,
    output=PowerResult,
    planner=_plan_stop,
)
async def guest_stop(ctx: ToolContext, args: StopArgs) -> PowerResult:
    """Power a VM or container off immediately, like pulling the plug: unsaved data in the
    guest is lost. Prefer proxmox_guest_power with action shutdown; use this only when the
    guest does not respond to a shutdown."""
    return await _power(ctx, "stop", args.wait, args.timeout)


TOOLS = (guest_list, guest_get, guest_power, guest_stop)
