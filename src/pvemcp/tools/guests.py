"""Guest tools: VMs and containers together, found by vmid or name, and their power state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    GuestRef,
    GuestTarget,
    GuestType,
    NodeName,
    Plan,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    action,
    answer_as,
    as_int,
    gib,
    mib,
    pct,
    planners,
    tag_list,
    tool,
    undo,
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


_CURRENT_STATUS = TypeAdapter(_CurrentStatus)


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
    api=("GET /cluster/resources",),
    input=GuestListArgs,
    output=GuestList,
    idempotent=True,
    examples=[{"type": "lxc", "status": "running"}, {"tag": "prod", "fields": ["mem"]}],
    rejects=[({"limit": 0}, "invalid_argument"), ({"fields": ["ram"]}, "invalid_argument")],
)
async def guest_list(ctx: ToolContext, args: GuestListArgs) -> GuestList:
    """VMs and containers across the cluster, filtered by node, status, type, name or tag,
    sorted by vmid and paged (total, next_offset). For one guest's details use
    proxmox_guest_get."""
    wanted = frozenset(args.fields or ())
    needle = args.name.lower() if args.name else None
    matches = [
        r
        for r in await planners.guest_resources(ctx)
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
    api=(
        "GET /nodes/{node}/{type}/{vmid}/status/current",
        "GET /nodes/{node}/{type}/{vmid}/config",
    ),
    input=GuestGetArgs,
    output=GuestDetails,
    idempotent=True,
    examples=[{"vmid": 100}, {"name": "gitlab", "include_config": False}],
    rejects=[({"name": "test"}, "ambiguous_name"), ({"vmid": 999}, "not_found")],
)
async def guest_get(ctx: ToolContext, args: GuestGetArgs) -> GuestDetails:
    """One VM or container: its status and, by default, its configuration. A name that
    several guests share is an error listing their vmids."""
    row = await planners.resolve_guest(ctx, args)
    base = f"/nodes/{row['node']}/{row['type']}/{row['vmid']}"
    paths = [f"{base}/status/current", *([f"{base}/config"] if args.include_config else [])]
    answers = await ctx.get_many(*paths)
    status = answer_as(_CURRENT_STATUS, answers[0], method="GET", path=paths[0])
    config: dict[str, Any] = {}
    if args.include_config:
        config = answer_as(OBJECT, answers[1], method="GET", path=paths[1])
    config = {key: value for key, value in config.items() if key != "digest"}
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


class PowerArgs(WaitInput, GuestRef):
    action: Literal["start", "shutdown", "reboot", "suspend", "resume"]


class StopArgs(WaitInput, GuestRef):
    pass


# The guest state each action expects to find and leaves behind.
_TRANSITIONS: dict[str, tuple[str, str]] = {
    "start": ("stopped", "running"),
    "shutdown": ("running", "stopped"),
    "reboot": ("running", "running"),
    "suspend": ("running", "paused"),
    "resume": ("paused", "running"),
    "stop": ("running", "stopped"),
}


def _no_pause_for_containers(action: str) -> Callable[[GuestTarget], None] | None:
    """Suspend and resume are QEMU's pause and continue: containers have no such state."""

    def check(target: GuestTarget) -> None:
        if target.type == "lxc":
            raise ToolFailure(
                "unsupported",
                f"containers cannot {action} here; {target.vmid} is an LXC container",
                field="action",
                hint="Use shutdown and start for containers.",
            )

    return check if action in ("suspend", "resume") else None


_LXC_POWER = ("start", "shutdown", "reboot")
"""The power actions of both guest types; suspend and resume are VMs' only (see above)."""


async def _plan_power(ctx: ToolContext, args: PowerArgs) -> Plan:
    return await planners.guest_action(
        ctx,
        args,
        args.action,
        f"status/{args.action}",
        status=_TRANSITIONS[args.action],
        check=_no_pause_for_containers(args.action),
    )


async def _plan_stop(ctx: ToolContext, args: StopArgs) -> Plan:
    return await planners.guest_action(
        ctx,
        args,
        "stop",
        "status/stop",
        status=_TRANSITIONS["stop"],
        warnings=["a hard stop loses unsaved data in the guest, like pulling the plug"],
    )


# The action that takes a guest back to the state each action found it in (a reboot
# leaves it as it was: nothing to undo).
_REVERSE = {"start": "shutdown", "shutdown": "start", "suspend": "resume", "resume": "suspend"}


async def _undo_power(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    done = plan.calls[-1].path.rsplit("/", 1)[-1]
    if done not in _REVERSE:
        return None
    return undo.guest_undo(
        plan, output, "proxmox_guest_power", {"action": _REVERSE[done]}, status=True
    )


async def _undo_stop(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    """A hard stop's undo is a start: the guest runs again, though what it lost is lost."""
    return undo.guest_undo(plan, output, "proxmox_guest_power", {"action": "start"}, status=True)


guest_power = action(
    "proxmox_guest_power",
    title="Start, shut down, reboot, suspend or resume a guest",
    description="""Start, cleanly shut down, reboot, suspend or resume a VM or container;
    guest_status is its state afterwards. For a hard power-off use proxmox_guest_stop.""",
    tier=Tier.WRITE,
    toolset="guests",
    input=PowerArgs,
    output=TaskOutcome,
    planner=_plan_power,
    inverse=_undo_power,
    api=[
        *(f"POST /nodes/{{node}}/{{type}}/{{vmid}}/status/{a}" for a in _LXC_POWER),
        *(f"POST /nodes/{{node}}/qemu/{{vmid}}/status/{a}" for a in ("suspend", "resume")),
    ],
    examples=[{"vmid": 101, "action": "start"}, {"name": "db02", "action": "resume"}],
    rejects=[
        ({"vmid": 200, "action": "suspend"}, "unsupported"),
        ({"vmid": 101, "action": "hibernate"}, "invalid_argument"),
    ],
)

guest_stop = action(
    "proxmox_guest_stop",
    title="Hard-stop a guest",
    description="""Power a guest off at once, like pulling the plug: unsaved data is lost.
    Use it only when the guest ignores proxmox_guest_power action shutdown.""",
    tier=Tier.DESTRUCTIVE,
    toolset="guests",
    api=("POST /nodes/{node}/{type}/{vmid}/status/stop",),
    input=StopArgs,
    output=TaskOutcome,
    planner=_plan_stop,
    inverse=_undo_stop,
    examples=[{"vmid": 102}],
    rejects=[({"vmid": 99}, "invalid_argument"), ({"name": "nope"}, "not_found")],
)


TOOLS = (guest_list, guest_get, guest_power, guest_stop)
