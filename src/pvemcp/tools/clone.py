"""Cloning a VM or container, full or linked, to a new vmid (issue 11, the lifecycle).

The plan reads the source's disks (of its current config, or of `snapname`) and says
what the clone makes: each new volume, on which storage, its size, and each storage's
free space after a full copy (a linked clone shares its template's base volumes and takes
none). Refused before anything is sent: a linked clone of a guest that is not a template
(PVE would answer `Linked clone feature is not supported`), `storage` for a linked clone,
a vmid in use, an unknown node, a full storage, a locked source.
"""

from __future__ import annotations

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
    ProxmoxError,
    StorageId,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WaitInput,
    gib,
    guest_disks,
    leftovers,
    matching,
    node_statuses,
    planners,
    read_as,
    tool,
    undo,
)


class CloneArgs(WaitInput, GuestRef):
    newid: Annotated[
        int | None, Field(ge=100, le=999_999_999, description="New vmid; default: next free.")
    ] = None
    new_name: Annotated[str | None, Field(min_length=1, max_length=63)] = None
    target: Annotated[
        str | None,
        matching(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", "a node name"),
        Field(description="Node for the clone (needs shared storage)."),
    ] = None
    storage: Annotated[
        StorageId | None,
        Field(description="Storage for a full clone's disks."),
    ] = None
    full: Annotated[bool | None, Field(description="Default: linked from a template.")] = None
    pool: Annotated[str | None, Field(max_length=64)] = None
    snapname: Annotated[str | None, Field(max_length=40, description="Clone this snapshot.")] = None


class _Guest(Answer):
    vmid: int


_GUESTS = TypeAdapter(list[_Guest])


async def _newid(ctx: ToolContext, wanted: int | None) -> int:
    """The clone's vmid: the one asked for if it is free, else the cluster's next."""
    if wanted is None:
        answer = await ctx.call("GET", "/cluster/nextid")
        return int(str(answer.data))
    used = {g.vmid for g in await read_as(ctx, _GUESTS, "/cluster/resources", {"type": "vm"})}
    if wanted in used:
        raise ToolFailure(
            "already_exists",
            f"vmid {wanted} is in use in cluster {ctx.cluster_name}",
            field="newid",
            hint="Leave newid unset to take the next free one (proxmox_cluster_nextid).",
        )
    return wanted


async def _check_node(ctx: ToolContext, target: str) -> None:
    nodes = sorted(await node_statuses(ctx))
    if target not in nodes:
        raise ToolFailure(
            "not_found",
            f"no node {target!r} in cluster {ctx.cluster_name}",
            field="target",
            hint="Nodes: " + ", ".join(nodes),
        )


def _refuse(args: CloneArgs, source: GuestTarget, template: bool, full: bool) -> None:
    """What PVE would refuse about the arguments, said before anything is sent."""
    if not full and not template:
        raise ToolFailure(
            "precondition_failed",
            f"{source.type} {source.vmid} is not a template: only a template clones linked",
            field="full",
            hint="Leave full unset (a full copy), or make it a template first "
            "(proxmox_guest_template).",
        )
    if not full and args.storage is not None:
        raise ToolFailure(
            "invalid_argument",
            "a linked clone stays on its template's storage",
            field="storage",
            hint="Leave storage unset, or set full to true.",
        )


async def _plan(ctx: ToolContext, args: CloneArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    source = planners.guest_target(row)
    template = bool(row.get("template"))
    full = args.full if args.full is not None else not template
    _refuse(args, source, template, full)
    if args.target is not None:
        await _check_node(ctx, args.target)
    rest = f"snapshot/{args.snapname}/config" if args.snapname else "config"
    try:
        config: dict[str, Any] = await read_as(ctx, OBJECT, f"{source.path}/{rest}")
    except ProxmoxError:
        if not args.snapname:
            raise
        raise ToolFailure(
            "not_found",
            f"{source.type} {source.vmid} has no snapshot {args.snapname!r}",
            field="snapname",
            hint="List them with proxmox_snapshot_list.",
        ) from None
    newid = await _newid(ctx, args.newid)
    disks = guest_disks(source.type, config)  # `clone_vm` skips CD-ROMs and unusedN too
    needs: dict[str, int] = {}
    changes = [Change(field="vmid", after=newid), Change(field="clone", after="full" if full else
                                                         "linked")]  # fmt: skip
    for key, volid, size in disks:
        storage = args.storage or volid.split(":", 1)[0]
        if full:
            needs[storage] = needs.get(storage, 0) + size
        how = f"copy of {volid}" if full else f"linked to {volid}"
        changes.append(Change(field=key, after=f"new volume on {storage}, {gib(size)} GiB, {how}"))
    wanted = [(storage, size, "storage") for storage, size in sorted(needs.items())]
    changes += await planners.storage_room(ctx, source.node, wanted)
    node = args.target or source.node
    if node != source.node:
        changes.append(Change(field="node", before=source.node, after=node))
    params: dict[str, Any] = {"newid": newid, "full": int(full)}
    if args.new_name:
        params["name" if source.type == "qemu" else "hostname"] = args.new_name
    optional = {"target": args.target, "storage": args.storage, "pool": args.pool}
    params |= {key: value for key, value in optional.items() if value is not None}
    if args.snapname:
        params["snapname"] = args.snapname
    call = ApiCall.to(
        "POST",
        f"/nodes/{{node}}/{source.type}/{{vmid}}/clone",
        params=params,
        task=True,
        node=source.node,
        vmid=source.vmid,
    )
    kind = "full" if full else "linked"
    return Plan(
        summary=f"{kind} clone of {source.type} {source.vmid} ({source.name or '?'}) on "
        f"{source.node} as {newid} on {node}",
        changes=changes,
        target=source,
        calls=[call],
    )


async def _undo_clone(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    """A clone's undo deletes the clone (destructive, so confirmed again), while it is
    still on the node the clone left it on. None unless the task was waited for and OK."""
    if not isinstance(output, TaskOutcome) or output.vmid is None:
        return None
    if output.task_status != "stopped" or output.exitstatus != "OK":
        return None
    return undo.Undo(
        tool="proxmox_guest_delete", arguments={"vmid": output.vmid}, expect={"node": output.node}
    )


@tool(
    "proxmox_guest_clone",
    title="Clone a VM or container",
    tier=Tier.WRITE,
    toolset="lifecycle",
    api=("POST /nodes/{node}/{type}/{vmid}/clone",),
    input=CloneArgs,
    output=TaskOutcome,
    planner=_plan,
    inverse=_undo_clone,
    examples=[
        {"vmid": 9000, "new_name": "web03"},
        {"vmid": 101, "newid": 150, "storage": "local"},
        {"name": "proxy01", "new_name": "proxy02"},
    ],
    rejects=[
        ({"vmid": 101, "full": False}, "precondition_failed"),
        ({"vmid": 9000, "storage": "local"}, "invalid_argument"),
        ({"vmid": 101, "newid": 100}, "already_exists"),
        ({"vmid": 101, "target": "pve9"}, "not_found"),
        ({"vmid": 106, "storage": "local"}, "storage_full"),
    ],
)
async def guest_clone(ctx: ToolContext, args: CloneArgs) -> TaskOutcome:
    """Copy a VM or container to a new vmid: linked from a template (shares its disks), else
    a full copy; the plan lists the new volumes and free space. To move a guest use
    proxmox_guest_migrate."""
    plan = ctx.plan
    assert plan is not None
    assert isinstance(plan.target, GuestTarget)
    source, call = plan.target, plan.calls[0]
    newid = int(call.params["newid"])
    node = str(call.params.get("target", source.node))
    answer = await ctx.call(call.method, call.path, call.params)
    upid = str(answer.data)
    outcome = TaskOutcome(vmid=newid, node=node, type=source.type, upid=upid)
    outcome.task_status = "running"
    outcome.note = f"clone of {source.type} {source.vmid}"
    if args.wait:
        task = await leftovers.wait_creating(ctx, call, upid, args.timeout)
        outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
        state = await read_as(ctx, OBJECT, f"/nodes/{node}/{source.type}/{newid}/status/current")
        outcome.guest_status = str(state.get("status", "unknown"))
    return outcome


TOOLS = (guest_clone,)
