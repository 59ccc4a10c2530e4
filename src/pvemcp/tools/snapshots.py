"""Snapshots of VMs and containers: listed as a tree, taken, rolled back, deleted.

The writes are plain task calls on the default runner; their planners read the guest's
snapshots first, so what PVE would refuse in the task (a taken name, a missing or
incomplete snapshot, a locked guest, a rollback past a newer snapshot on storage that
cannot) is refused before anything is sent, and the plan says what is lost. The checks
and their order follow pve-guest-common `src/PVE/AbstractConfig.pm` (`__snapshot_prepare`,
`snapshot_rollback`, `snapshot_delete`) and qemu-server `src/PVE/API2/Qemu.pm`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    Change,
    GuestRef,
    Plan,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WaitInput,
    action,
    planners,
    read_as,
    tool,
    undo,
    utc_time,
)

SnapName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]+$", max_length=40),
]
"""PVE's `pve-snapshot-name`: a `pve-configid` of at most 40 characters."""

LATEST_ONLY = frozenset({"zfspool", "lvm"})
"""Storage types that roll a volume back only to its most recent snapshot (pve-storage
`ZFSPoolPlugin.pm` and `LVMPlugin.pm` `volume_rollback_is_possible`: "can't rollback, 'x'
is not most recent snapshot on 'y'"; thick LVM has snapshots only as volume chains). A
directory storage with `snapshot-as-volume-chain` refuses the same way, but that option
is not in what a node lists of its storages: PVE's task then fails with that message."""

_DISK_KEY = re.compile(r"(?:scsi|virtio|sata|ide|efidisk|tpmstate)\d+|rootfs|mp\d+")


class _Snapshot(Answer):
    name: str
    parent: str | None = None
    snaptime: int | None = None
    vmstate: bool | None = None
    description: str | None = None
    snapstate: str | None = None


_SNAPSHOTS = TypeAdapter(list[_Snapshot])


class _NodeStorage(Answer):
    storage: str
    type: str


_STORAGES = TypeAdapter(list[_NodeStorage])


class SnapshotRow(ToolOutput):
    name: str
    parent: str | None = None
    time: str | None = None
    vmstate: bool | None = None
    description: str | None = None
    incomplete: str | None = None


class SnapshotTree(ToolOutput):
    vmid: int
    node: str
    type: str
    snapshots: list[SnapshotRow]
    current: str | None = None


class SnapshotArgs(WaitInput, GuestRef):
    snapname: SnapName


class CreateArgs(SnapshotArgs):
    description: Annotated[str | None, Field(max_length=8192)] = None
    vmstate: Annotated[bool, Field(description="Also save a running VM's RAM.")] = False


class RollbackArgs(SnapshotArgs):
    start: Annotated[bool, Field(description="Start the guest afterwards.")] = False


class DeleteArgs(SnapshotArgs):
    force: Annotated[
        bool, Field(description="Drop it from the config even if a disk's snapshot stays.")
    ] = False


def _tree_order(snaps: list[_Snapshot]) -> list[_Snapshot]:
    """Each snapshot after its parent, siblings oldest first: the tree read top down."""
    names = {snap.name for snap in snaps}
    children: dict[str | None, list[_Snapshot]] = {}
    for snap in snaps:
        parent = snap.parent if snap.parent in names else None
        children.setdefault(parent, []).append(snap)
    ordered: list[_Snapshot] = []
    stack = sorted(children.get(None, []), key=lambda s: s.snaptime or 0, reverse=True)
    while stack:
        snap = stack.pop()
        ordered.append(snap)
        stack += sorted(children.get(snap.name, []), key=lambda s: s.snaptime or 0, reverse=True)
    return ordered


async def _read(ctx: ToolContext, row: dict[str, Any]) -> tuple[list[_Snapshot], str | None]:
    """The resolved guest's snapshots (without PVE's `current` entry) and the snapshot its
    current state descends from."""
    path = planners.guest_target(row).path + "/snapshot"
    entries = await read_as(ctx, _SNAPSHOTS, path)
    current = next((e.parent for e in entries if e.name == "current"), None)
    return [e for e in entries if e.name != "current"], current


@tool(
    "proxmox_snapshot_list",
    title="List a guest's snapshots",
    tier=Tier.READ,
    toolset="snapshots",
    api=("GET /nodes/{node}/{type}/{vmid}/snapshot",),
    input=GuestRef,
    output=SnapshotTree,
    idempotent=True,
    examples=[{"vmid": 100}, {"name": "monitoring"}],
    rejects=[({"vmid": 999}, "not_found"), ({"vmid": 100, "name": "web01"}, "invalid_argument")],
)
async def snapshot_list(ctx: ToolContext, args: GuestRef) -> SnapshotTree:
    """A guest's snapshots as a tree (parent, time UTC, RAM state, description); current:
    the snapshot its present state descends from."""
    row = await planners.resolve_guest(ctx, args)
    snaps, current = await _read(ctx, row)
    return SnapshotTree(
        vmid=int(row["vmid"]),
        node=str(row["node"]),
        type=str(row["type"]),
        snapshots=[
            SnapshotRow(
                name=snap.name,
                parent=snap.parent,
                time=utc_time(snap.snaptime),
                vmstate=snap.vmstate or None,
                description=snap.description or None,
                incomplete=snap.snapstate,
            )
            for snap in _tree_order(snaps)
        ],
        current=current,
    )


def _no_template(row: dict[str, Any], args: GuestRef, what: str) -> None:
    if row.get("template"):
        raise ToolFailure(
            "unsupported",
            f"{row['vmid']} is a template: PVE cannot {what} a template's snapshots",
            field=planners.ref_field(args),
            hint="Clone the template to work on a guest made from it.",
        )


def _named(snaps: list[_Snapshot], args: SnapshotArgs) -> _Snapshot:
    found = next((snap for snap in snaps if snap.name == args.snapname), None)
    if found is None:
        names = ", ".join(snap.name for snap in snaps) or "none"
        raise ToolFailure(
            "not_found",
            f"snapshot '{args.snapname}' does not exist",
            field="snapname",
            hint=f"The guest's snapshots: {names} (proxmox_snapshot_list).",
        )
    return found


async def _plan_create(ctx: ToolContext, args: CreateArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    snaps, current = await _read(ctx, row)
    _no_template(row, args, "take")
    qemu = row["type"] == "qemu"
    # Qemu.pm refuses 'current' and 'pending' (any case); LXC/Snapshot.pm 'current', 'vzdump'.
    reserved = ("current", "pending") if qemu else ("current", "vzdump")
    if args.snapname in reserved or (qemu and args.snapname.lower() == "pending"):
        raise ToolFailure(
            "invalid_argument",
            f"unable to use snapshot name '{args.snapname}' (reserved name)",
            field="snapname",
            hint="Choose another name.",
        )
    if any(snap.name == args.snapname for snap in snaps):
        raise ToolFailure(
            "already_exists",
            f"snapshot name '{args.snapname}' already used",
            field="snapname",
            hint="Choose another name, or delete the old snapshot first.",
        )
    if args.vmstate and not qemu:
        raise ToolFailure(
            "invalid_argument",
            "containers have no RAM state to save",
            field="vmstate",
            hint="Omit vmstate for a container.",
        )
    warnings = []
    if args.vmstate and row.get("status") != "running":
        warnings.append("the VM is not running: no RAM state is saved (PVE ignores vmstate)")
    params: dict[str, Any] = {"snapname": args.snapname}
    if args.description:
        params["description"] = args.description
    if args.vmstate:
        params["vmstate"] = 1
    ram = " with its RAM" if args.vmstate and row.get("status") == "running" else ""
    return planners.guest_call(
        row,
        f"take snapshot '{args.snapname}'{ram} of",
        "snapshot",
        params=params,
        changes=[
            Change(field="snapshot", after=args.snapname),
            Change(field="parent", before=current, after=args.snapname),
        ],
        warnings=warnings,
    )


async def _blocking(
    ctx: ToolContext, row: dict[str, Any], snaps: list[_Snapshot], target: _Snapshot
) -> None:
    """Refuse a rollback past a newer snapshot of a disk on storage that cannot (ZFS,
    thick LVM); on other storage the newer snapshots stay and remain usable.

    Any newer snapshot of the guest counts: it holds the same disks unless one was
    detached in between, a case left to PVE's task. A storage the API token may not audit
    is not listed by the node, so it is not checked here either: the task then fails with
    PVE's own words."""
    newer = [s.name for s in snaps if (s.snaptime or 0) > (target.snaptime or 0)]
    if not newer:
        return
    guest = planners.guest_target(row)
    saved = await read_as(ctx, OBJECT, f"{guest.path}/snapshot/{target.name}/config")
    volumes = [
        str(value).split(",", 1)[0]
        for key, value in saved.items()
        if _DISK_KEY.fullmatch(key) and "media=cdrom" not in str(value)
    ]
    storages = await read_as(ctx, _STORAGES, f"/nodes/{guest.node}/storage")
    latest_only = {s.storage for s in storages if s.type in LATEST_ONLY}
    stuck = [volid for volid in volumes if volid.split(":", 1)[0] in latest_only]
    if stuck:
        raise ToolFailure(
            "precondition_failed",
            f"can't rollback, '{target.name}' is not most recent snapshot on '{stuck[0]}'",
            field="snapname",
            hint=f"The storage of {stuck[0]} rolls back only to the newest snapshot: delete "
            f"the newer ones first ({', '.join(newer)}), each with proxmox_snapshot_delete.",
            details={"newer": newer, "volumes": stuck},
        )


async def _plan_rollback(ctx: ToolContext, args: RollbackArgs) -> Plan:
    row = await planners.resolve_guest(ctx, args)
    snaps, current = await _read(ctx, row)
    _no_template(row, args, "roll back to")
    snap = _named(snaps, args)
    await _blocking(ctx, row, snaps, snap)
    if snap.snapstate:
        raise ToolFailure(
            "precondition_failed",
            f"unable to rollback to incomplete snapshot (snapstate = {snap.snapstate})",
            field="snapname",
            hint="A snapshot task failed or is running; delete this snapshot (force) instead.",
        )
    # Not resolve_unlocked: PVE's snapshot_rollback (pve-guest-common AbstractConfig.pm)
    # refuses an incomplete snapshot before it checks the lock that its failed task left.
    planners.require_unlocked(row, planners.ref_field(args))
    now = str(row.get("status", "unknown"))
    resumes = bool(snap.vmstate) and row["type"] == "qemu"
    after = "running" if resumes or args.start else "stopped"
    since = utc_time(snap.snaptime) or "the snapshot"
    warnings = [
        undo.irreversible(
            f"everything the guest changed since {since} (disks and configuration) is lost; "
            "snapshots are kept"
        )
    ]
    if now != "stopped":
        warnings.append(f"the guest is {now}: it is stopped hard first (unsaved data is lost)")
    if resumes:
        warnings.append("the snapshot holds RAM state: the VM resumes where it was")
    params = {"start": 1} if args.start else None
    return planners.guest_call(
        row,
        f"roll back to snapshot '{args.snapname}'",
        "snapshot/{snapname}/rollback",
        params=params,
        status=(now, after),
        changes=[Change(field="parent", before=current, after=args.snapname)],
        warnings=warnings,
        where={"snapname": args.snapname},
    )


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    snaps, current = await _read(ctx, row)
    snap = _named(snaps, args)
    _no_template(row, args, "delete")
    children = [s.name for s in snaps if s.parent == snap.name]
    warnings = [undo.irreversible(f"rolling back to '{snap.name}' is no longer possible")]
    if children:
        warnings.append(f"{', '.join(children)} then descend from {snap.parent or 'no snapshot'}")
    if args.force:
        warnings.append("force: a disk snapshot that cannot be deleted is left on its storage")
    changes = [Change(field="snapshot", before=snap.name)]
    if current == snap.name:
        changes.append(Change(field="parent", before=snap.name, after=snap.parent))
    return planners.guest_call(
        row,
        f"delete snapshot '{args.snapname}'{' with its RAM state' if snap.vmstate else ''} of",
        "snapshot/{snapname}",
        method="DELETE",
        params={"force": 1} if args.force else None,
        changes=changes,
        warnings=warnings,
        where={"snapname": args.snapname},
    )


async def _undo_create(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    """A new snapshot's undo deletes it (the guest's present state is kept)."""
    name = plan.after("snapshot")
    if not isinstance(name, str):
        return None
    return undo.guest_undo(plan, output, "proxmox_snapshot_delete", {"snapname": name})


snapshot_create = action(
    "proxmox_snapshot_create",
    title="Take a snapshot",
    description="""Snapshot a guest's disks and config; with vmstate, a running VM's RAM
    too. A taken name or a locked guest is refused.""",
    tier=Tier.WRITE,
    toolset="snapshots",
    api=("POST /nodes/{node}/{type}/{vmid}/snapshot",),
    input=CreateArgs,
    output=TaskOutcome,
    planner=_plan_create,
    inverse=_undo_create,
    examples=[
        {"vmid": 102, "snapname": "sim-check", "description": "before the test"},
        {"name": "web01", "snapname": "with-ram", "vmstate": True},
        {"vmid": 202, "snapname": "ct-snap"},
    ],
    rejects=[
        ({"vmid": 100, "snapname": "pre-upgrade"}, "already_exists"),
        ({"vmid": 100, "snapname": "current"}, "invalid_argument"),
        ({"vmid": 200, "snapname": "ram", "vmstate": True}, "invalid_argument"),
        ({"vmid": 9000, "snapname": "base"}, "unsupported"),
        ({"vmid": 100, "snapname": "1st"}, "invalid_argument"),
    ],
)

snapshot_rollback = action(
    "proxmox_snapshot_rollback",
    title="Roll a guest back to a snapshot",
    description="""Roll a guest back to a snapshot: what changed since is lost; a running
    guest is stopped hard first and stays stopped unless start or the snapshot has RAM.
    Refused past a newer snapshot on ZFS.""",
    tier=Tier.DESTRUCTIVE,
    toolset="snapshots",
    api=("POST /nodes/{node}/{type}/{vmid}/snapshot/{snapname}/rollback",),
    input=RollbackArgs,
    output=TaskOutcome,
    planner=_plan_rollback,
    examples=[
        {"vmid": 100, "snapname": "pre-upgrade"},
        {"vmid": 100, "snapname": "after-upgrade"},
        {"vmid": 202, "snapname": "pre-update", "start": True},
    ],
    rejects=[({"vmid": 100, "snapname": "nope"}, "not_found")],
)

snapshot_delete = action(
    "proxmox_snapshot_delete",
    title="Delete a snapshot",
    description="""Delete a guest's snapshot (its disk snapshots and saved RAM); the guest's
    present state and its other snapshots are kept.""",
    tier=Tier.DESTRUCTIVE,
    toolset="snapshots",
    api=("DELETE /nodes/{node}/{type}/{vmid}/snapshot/{snapname}",),
    input=DeleteArgs,
    output=TaskOutcome,
    planner=_plan_delete,
    examples=[
        {"vmid": 100, "snapname": "pre-upgrade"},
        {"name": "db01", "snapname": "before-migration", "force": True},
    ],
    rejects=[({"vmid": 202, "snapname": "nope"}, "not_found")],
)


TOOLS = (snapshot_list, snapshot_create, snapshot_rollback, snapshot_delete)
