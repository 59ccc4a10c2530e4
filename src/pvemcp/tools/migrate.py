"""Moving a guest to another node, and turning a guest into a template."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    GuestRef,
    GuestTarget,
    Plan,
    StorageId,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WaitInput,
    action,
    gib,
    matching,
    planners,
    read_as,
    tool,
    undo,
)


class MigrateArgs(WaitInput, GuestRef):
    target: Annotated[
        str,
        matching(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", "a node name"),
        Field(description="Destination node."),
    ]
    online: Annotated[bool | None, Field(description="Live; default: if it runs (VMs).")] = None
    with_local_disks: Annotated[
        bool | None, Field(description="Copy local disks live; default: yes.")
    ] = None
    target_storage: Annotated[
        StorageId | None,
        Field(description="Storage for local disks."),
    ] = None


class _Node(Answer):
    node: str
    status: str = "unknown"


class _LocalDisk(Answer):
    volid: str
    size: int = 0
    cdrom: bool = False


class _Precondition(Answer):
    local_disks: list[_LocalDisk] = Field(default_factory=list)


class _Name(Answer):
    name: str


class _Storage(Answer):
    storage: str
    node: str
    plugintype: str = ""
    shared: bool = False


_NODES = TypeAdapter(list[_Node])
_PRECONDITION = TypeAdapter(_Precondition)
_SNAPSHOTS = TypeAdapter(list[_Name])
_STORAGES = TypeAdapter(list[_Storage])
_CT_VOLUME = re.compile(r"rootfs|mp\d+")


async def _check_target(ctx: ToolContext, source: str, target: str) -> None:
    """The target is another node of the cluster, and online."""
    if target == source:
        raise ToolFailure(
            "invalid_argument",
            f"the guest is already on node {target}",
            field="target",
            hint="Name another node (proxmox_node_list lists them).",
        )
    nodes = {n.node: n.status for n in await read_as(ctx, _NODES, "/nodes")}
    if target not in nodes:
        raise ToolFailure(
            "not_found",
            f"no node {target!r} in cluster {ctx.cluster_name}",
            field="target",
            hint="Nodes: " + ", ".join(sorted(nodes)),
        )
    if nodes[target] != "online":
        raise ToolFailure(
            "precondition_failed",
            f"node {target} is {nodes[target]}: a migration cannot reach it",
            field="target",
            hint="Pick an online node, or wait for this one to come back.",
        )


def _local(storages: dict[str, _Storage], volid: str) -> bool:
    storage = storages.get(volid.split(":", maxsplit=1)[0])
    return storage is not None and not storage.shared


async def _refuse_stuck_snapshots(
    ctx: ToolContext, target: GuestTarget, running: bool, disks: list[str]
) -> None:
    """PVE moves a local volume's snapshots only on ZFS and btrfs, or inside a VM's qcow2
    file, and never while a VM runs (QemuMigrate.pm `scan_local_volumes`, LXC/Migrate.pm
    `phase1`): such a guest is refused here rather than by `migration aborted` later.
    `disks` are a VM's local disks; a container's are read from its config."""
    names = [s.name for s in await read_as(ctx, _SNAPSHOTS, f"{target.path}/snapshot")]
    snapshots = [name for name in names if name != "current"]
    if not snapshots:
        return
    storages = {
        s.storage: s
        for s in await read_as(ctx, _STORAGES, "/cluster/resources", {"type": "storage"})
        if s.node == target.node
    }
    if target.type == "lxc":
        config: dict[str, Any] = await read_as(ctx, OBJECT, f"{target.path}/config")
        volumes = [
            str(value).split(",")[0].removeprefix("volume=")
            for key, value in config.items()
            if _CT_VOLUME.fullmatch(key)
        ]
        disks = [volid for volid in volumes if _local(storages, volid)]

    live = running and target.type == "qemu"  # a container is shut down before its move

    def stuck(volid: str) -> bool:
        storage = storages.get(volid.split(":", maxsplit=1)[0])
        kind = storage.plugintype if storage is not None else ""
        qcow2 = target.type == "qemu" and volid.endswith(".qcow2")
        return live or not (kind in ("zfspool", "btrfs") or qcow2)

    blocked = [volid for volid in disks if stuck(volid)]
    if blocked:
        raise ToolFailure(
            "precondition_failed",
            f"snapshots ({', '.join(snapshots)}) cannot move with local volume(s) "
            + ", ".join(blocked)
            + (" while the VM runs" if live else ""),
            field="vmid",
            hint="Delete the snapshots first (proxmox_snapshot_delete), or move the disks to "
            "shared storage; ZFS, btrfs and qcow2 files keep snapshots across an offline move.",
        )


async def _plan_migrate(ctx: ToolContext, args: MigrateArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    target = planners.guest_target(row)
    await _check_target(ctx, target.node, args.target)
    running = row.get("status") == "running"
    params: dict[str, str | int] = {"target": args.target}
    warnings: list[str] = []
    if target.type == "lxc":
        if running and args.online:
            raise ToolFailure(
                "unsupported",
                "containers cannot live-migrate",
                field="online",
                hint="Leave online unset: a running container is restarted on the target.",
            )
        await _refuse_stuck_snapshots(ctx, target, running, [])
        if running:
            params["restart"] = 1
            mode = "by restart"
            warnings.append(f"the container is shut down, moved and started again on {args.target}")
        else:
            mode = "offline"
        if args.target_storage:
            params["target-storage"] = args.target_storage
    else:
        if running and args.online is False:
            raise ToolFailure(
                "precondition_failed",
                "a running VM migrates only online",
                field="online",
                hint="Leave online unset, or shut the VM down first.",
            )
        mode = "online (live)" if running else "offline"
        pre = await read_as(ctx, _PRECONDITION, f"{target.path}/migrate", {"target": args.target})
        disks = [d for d in pre.local_disks if not d.cdrom]
        await _refuse_stuck_snapshots(ctx, target, running, [d.volid for d in disks])
        if running and disks and args.with_local_disks is False:
            raise ToolFailure(
                "precondition_failed",
                "a running VM's local disks must be copied for a live migration",
                field="with_local_disks",
                hint="Leave with_local_disks unset, or shut the VM down first.",
            )
        if running:
            params["online"] = 1
            if disks:
                params["with-local-disks"] = 1
        if args.target_storage:
            params["targetstorage"] = args.target_storage
        if disks:
            size = gib(sum(d.size for d in disks))
            warnings.append(
                f"{len(disks)} local disk(s), {size} GiB, are copied to {args.target}"
                + (" while the VM runs" if running else "")
            )
    state = str(row.get("status", "unknown"))
    plan = planners.guest_call(
        row,
        "migrate",
        "migrate",
        params=params,
        status=(state, state),
        changes=[Change(field="node", before=target.node, after=args.target)],
        warnings=warnings,
    )
    return plan.model_copy(update={"summary": f"{plan.summary} to {args.target}, {mode}"})


async def _undo_migrate(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    """A migration's undo moves the guest back to its source node. None when the call
    chose a target storage: the disks' storages before cannot be named in one argument."""
    source = next((c.before for c in plan.changes if c.field == "node"), None)
    params = plan.calls[-1].params
    if not isinstance(source, str) or "targetstorage" in params or "target-storage" in params:
        return None
    return undo.guest_undo(plan, output, "proxmox_guest_migrate", {"target": source})


guest_migrate = action(
    "proxmox_guest_migrate",
    title="Migrate a guest to another node",
    description="""Move a VM or container to another node: a running VM live, a running
    container by restart, a stopped guest offline. Snapshots on local storage block a move.""",
    tier=Tier.WRITE,
    toolset="guests",
    api=("POST /nodes/{node}/{type}/{vmid}/migrate",),
    input=MigrateArgs,
    output=TaskOutcome,
    planner=_plan_migrate,
    inverse=_undo_migrate,
    examples=[{"vmid": 101, "target": "pve2"}, {"name": "dns01", "target": "pve3"}],
    rejects=[
        ({"vmid": 101, "target": "pve1"}, "invalid_argument"),
        ({"vmid": 101, "target": "pve9"}, "not_found"),
        ({"vmid": 100, "target": "pve2", "online": False}, "precondition_failed"),
        ({"vmid": 200, "target": "pve2", "online": True}, "unsupported"),
    ],
)


class TemplateArgs(WaitInput, GuestRef):
    pass


def _templatable(target: GuestTarget, status: str, template: bool) -> None:
    """PVE's refusals that the resolved guest shows already (pve's own words follow in
    a task error for the rest: snapshots, a lock)."""
    if template:
        raise ToolFailure(
            "precondition_failed",
            f"{target.type} {target.vmid} is already a template",
            field="vmid",
            hint="Clone it to get a guest that can start.",
        )
    if status != "stopped":
        raise ToolFailure(
            "precondition_failed",
            f"{target.type} {target.vmid} is {status}: only a stopped guest becomes a template",
            field="vmid",
            hint="Shut it down with proxmox_guest_power first.",
        )


async def _plan_template(ctx: ToolContext, args: TemplateArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    target = planners.guest_target(row)
    _templatable(target, str(row.get("status", "unknown")), bool(row.get("template")))
    call = ApiCall.to(
        "POST",
        f"/nodes/{{node}}/{target.type}/{{vmid}}/template",
        task=target.type == "qemu",  # pve-container answers null, not the worker's UPID
        node=target.node,
        vmid=target.vmid,
    )
    return Plan(
        summary=f"convert {target.type} {target.vmid} ({target.name or '?'}) on {target.node} "
        "into a template",
        changes=[Change(field="template", before=False, after=True)],
        target=target,
        calls=[call],
        warnings=[
            undo.irreversible(
                "a template can never be started again as a guest, only cloned; its disks "
                "become read-only base volumes"
            )
        ],
    )


class _Worker(Answer):
    upid: str


_WORKERS = TypeAdapter(list[_Worker])


@tool(
    "proxmox_guest_template",
    title="Convert a guest into a template",
    tier=Tier.DESTRUCTIVE,
    toolset="guests",
    api=("POST /nodes/{node}/{type}/{vmid}/template",),
    input=TemplateArgs,
    output=TaskOutcome,
    planner=_plan_template,
    examples=[{"vmid": 103}, {"name": "nginx-dev"}],
    rejects=[({"vmid": 100}, "precondition_failed"), ({"vmid": 9000}, "precondition_failed")],
)
async def guest_template(ctx: ToolContext, args: TemplateArgs) -> TaskOutcome:
    """Turn a stopped VM or container into a template to clone from. Irreversible: it never
    starts again. Refused for a running guest, a template, or a guest with snapshots."""
    plan = ctx.plan
    assert plan is not None
    assert isinstance(plan.target, GuestTarget)
    target, call = plan.target, plan.calls[0]
    answer = await ctx.call(call.method, call.path, call.params or None)
    upid = answer.data if isinstance(answer.data, str) else None
    if upid is None:
        # pve-container forks the worker but answers null: find it in the node's tasks.
        workers = await read_as(
            ctx,
            _WORKERS,
            f"/nodes/{target.node}/tasks",
            {"vmid": target.vmid, "typefilter": "vztemplate", "source": "all", "limit": 1},
        )
        upid = workers[0].upid if workers else None
    outcome = TaskOutcome(vmid=target.vmid, node=target.node, type=target.type, upid=upid)
    if upid is not None and args.wait:
        task = await ctx.wait_task(upid, args.timeout)
        outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
        outcome.guest_status = "template"
    else:
        outcome.task_status = "running" if upid is not None else None
    return outcome


TOOLS = (guest_migrate, guest_template)
