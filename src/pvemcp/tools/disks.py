"""Disk tools: add, resize, move and detach a VM's disks or a container's mount points.

Every planner reads the guest's config (with its `digest`, sent back so PVE refuses a
call planned on a config that changed since) and, where space is taken, the target
storage's status, so the plan says what the storage has free before and after and a call
that cannot fit is refused before anything is sent. Moving a disk never deletes data:
the source stays attached as `unusedN` and the plan says so; deleting it is a separate,
destructive `proxmox_disk_detach` with `delete`, confirmed by the user. (A move with
`delete_source` would destroy the source within a write-tier call, which the tiers
cannot express per argument, so the tool does not offer it.)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    GuestRef,
    Plan,
    ProxmoxError,
    StorageId,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WaitInput,
    action,
    check_api_request,
    cluster_default,
    planners,
    read_as,
    tool,
    undo,
)

GiB = 1024**3
_UNITS = {"K": 1024, "M": 1024**2, "G": GiB, "T": 1024 * GiB}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)([KMGT])?")
_SLOTS = {"scsi": 31, "virtio": 16, "sata": 6, "ide": 4}
_QEMU_DISK_RE = re.compile(r"(?:(?:scsi|virtio|sata|ide)\d+|efidisk0|tpmstate0)")
_LXC_DISK_RE = re.compile(r"rootfs|mp\d+")
_UNUSED_RE = re.compile(r"unused\d+")
_SET_BY_TOOL = frozenset({"file", "volume", "size", "mp", "media", "import-from"})
"""Drive options `proxmox_disk_add` sets itself: `options` may not name them."""

DiskKey = Annotated[
    str, Field(pattern=r"^[a-z]+\d{0,3}$", description="Config key: scsi0, rootfs, mp0, unused0.")
]


def _gib(size: int) -> float:
    return round(size / GiB, 2)


def _size_of(value: Any) -> int:
    """Bytes of a drive value's `size=` option (`32G`, `4M`), 0 when it has none."""
    for part in str(value).split(","):
        if part.startswith("size=") and (found := _SIZE_RE.fullmatch(part[5:])):
            return int(float(found.group(1)) * _UNITS.get(found.group(2) or "", 1))
    return 0


def _volume(value: Any) -> str:
    """The volume id of a drive or mount point value."""
    return str(value).split(",", 1)[0].removeprefix("volume=").removeprefix("file=")


class _Guest:
    """A resolved guest with its config and digest, refused when it is locked."""

    def __init__(self, row: dict[str, Any], config: dict[str, Any]) -> None:
        self.row = row
        self.target = planners.guest_target(row)
        self.config = {k: v for k, v in config.items() if k != "digest"}
        self.digest = config.get("digest")

    def path(self, rest: str) -> str:
        return f"/nodes/{{node}}/{self.target.type}/{{vmid}}/{rest}"

    def call(
        self,
        method: Literal["PUT", "POST"],
        rest: str,
        params: dict[str, Any],
        *,
        digest: bool = True,
    ) -> ApiCall:
        """A call on the guest, carrying the digest the plan was made on (`digest`: the
        first call of a plan; a second one finds the config the first has changed)."""
        if digest and self.digest is not None:
            params = {**params, "digest": self.digest}
        call = ApiCall.to(
            method,
            self.path(rest),
            params=params,
            task=rest not in {"config", "unlink"},
            node=self.target.node,
            vmid=self.target.vmid,
        )
        check_api_request(call.method, call.path, call.params)
        return call

    def disk(self, key: str) -> Any:
        """The value of the disk `key`, or a refusal naming the guest's disks."""
        value = self.config.get(key)
        pattern = _QEMU_DISK_RE if self.target.type == "qemu" else _LXC_DISK_RE
        disks = [k for k in self.config if pattern.fullmatch(k) or _UNUSED_RE.fullmatch(k)]
        if value is None or key not in disks:
            raise ToolFailure(
                "not_found",
                f"{self.label} has no disk {key}",
                field="disk",
                hint=f"Its disks: {', '.join(sorted(disks)) or 'none'}.",
            )
        if "media=cdrom" in str(value).split(","):
            raise ToolFailure(
                "unsupported",
                f"{key} of {self.label} is a CD-ROM drive, not a disk",
                field="disk",
                hint="Change a CD-ROM with proxmox_guest_config_update.",
            )
        return value

    @property
    def label(self) -> str:
        return f"{self.target.type} {self.target.vmid} ({self.target.name or '?'})"


async def _guest(ctx: ToolContext, ref: GuestRef) -> _Guest:
    row = await planners.resolve_unlocked(ctx, ref)
    config = await read_as(ctx, OBJECT, f"/nodes/{row['node']}/{row['type']}/{row['vmid']}/config")
    return _Guest(row, dict(config))


async def _room(
    ctx: ToolContext, guest: _Guest, storage: str, size: int, *, field: str, storage_field: str
) -> list[Change]:
    """The storage's free space before and after `size` more bytes there, on the guest's
    node (see `planners.storage_room`); it must hold the guest's kind of disks."""
    content = "images" if guest.target.type == "qemu" else "rootdir"
    return await planners.storage_room(
        ctx,
        guest.target.node,
        [(storage, size, field)],
        content=content,
        storage_field=storage_field,
    )


class _Content(Answer):
    volid: str
    size: int = 0


_CONTENT = TypeAdapter(list[_Content])


async def _stored_size(ctx: ToolContext, guest: _Guest, value: Any) -> int:
    """The volume's size as its storage lists it (an `unusedN` value carries none), so a
    plan that deletes it says how much is lost; 0 when the storage does not list it."""
    volume = _volume(value)
    path = f"/nodes/{guest.target.node}/storage/{volume.split(':', 1)[0]}/content"
    try:
        items = await read_as(ctx, _CONTENT, path, {"vmid": guest.target.vmid})
    except ProxmoxError:
        return 0
    return next((item.size for item in items if item.volid == volume), 0)


def _default_storage(ctx: ToolContext, storage: str | None) -> str:
    return cluster_default(
        storage,
        ctx.cluster.default_storage,
        "storage",
        "one whose content includes images or rootdir",
    )


# --- add -----------------------------------------------------------------------------


class DiskAddArgs(WaitInput, GuestRef):
    size_gib: Annotated[int, Field(ge=1, description="Size in GiB.")]
    storage: Annotated[
        StorageId | None, Field(description="Default: the cluster's default_storage.")
    ] = None
    bus: Literal["scsi", "virtio", "sata", "ide"] = "scsi"
    slot: Annotated[int | None, Field(ge=0, le=255, description="Default: next free.")] = None
    options: Annotated[
        str | None,
        Field(max_length=200, description="PVE drive options, e.g. discard=on,ssd=1."),
    ] = None
    mount_path: Annotated[
        str | None,
        Field(max_length=256, pattern=r"^/\S*$", description="Containers: mount path."),
    ] = None


def _slot_key(guest: _Guest, args: DiskAddArgs) -> str:
    """The config key of the new disk: the given slot (refused when in use) or the
    first free one."""
    prefix, count = ("mp", 256) if guest.target.type == "lxc" else (args.bus, _SLOTS[args.bus])
    if args.slot is not None:
        key = f"{prefix}{args.slot}"
        if args.slot >= count:
            raise ToolFailure(
                "invalid_argument",
                f"{prefix} has slots 0 to {count - 1}",
                field="slot",
                hint="Leave slot out to take the next free one.",
            )
        if key in guest.config:
            raise ToolFailure(
                "slot_in_use",
                f"{key} of {guest.label} is in use: {guest.config[key]}",
                field="slot",
                hint="Leave slot out to take the next free one, or detach that disk first.",
            )
        return key
    for index in range(count):
        if f"{prefix}{index}" not in guest.config:
            return f"{prefix}{index}"
    raise ToolFailure(
        "no_free_slot",
        f"every {prefix} slot of {guest.label} is in use",
        field="bus",
        hint="Choose another bus.",
    )


async def _plan_add(ctx: ToolContext, args: DiskAddArgs) -> Plan:
    guest = await _guest(ctx, args)
    lxc = guest.target.type == "lxc"
    if lxc and args.mount_path is None:
        raise ToolFailure(
            "invalid_argument",
            "a container's new volume needs mount_path",
            field="mount_path",
            hint="Pass mount_path, e.g. /mnt/data.",
        )
    given = {part.split("=", 1)[0] for part in (args.options or "").split(",") if part}
    if reserved := sorted(given & _SET_BY_TOOL):
        raise ToolFailure(
            "invalid_argument",
            f"options may not set {', '.join(reserved)}: the tool sets them",
            field="options",
            hint="Pass storage, size_gib and mount_path as their own arguments.",
        )
    storage = _default_storage(ctx, args.storage)
    key = _slot_key(guest, args)
    room = await _room(
        ctx, guest, storage, args.size_gib * GiB, field="size_gib", storage_field="storage"
    )
    value = ",".join(
        part
        for part in (
            f"{storage}:{args.size_gib}",
            f"mp={args.mount_path}" if lxc else None,
            args.options,
        )
        if part
    )
    call = guest.call("PUT", "config", {key: value})
    cold = not lxc and args.bus in ("sata", "ide") and guest.row.get("status") == "running"
    return Plan(
        summary=f"add a {args.size_gib} GiB disk {key} on {storage} to {guest.label}",
        changes=[Change(field=key, after=value), *room],
        target=guest.target,
        calls=[call],
        # qemu-server hotplugs only SCSI and VirtIO disks; the volume is made at once.
        warnings=[f"a running VM gets a {args.bus} disk at its next start"] if cold else [],
    )


disk_add = action(
    "proxmox_disk_add",
    title="Add a disk to a guest",
    description="""Add a disk to a VM (bus; next free slot) or a mount point to a container
    (mount_path), size_gib on a storage; refused when the storage lacks room. To grow a disk
    use proxmox_disk_resize.""",
    tier=Tier.WRITE,
    toolset="disks",
    api=("PUT /nodes/{node}/{type}/{vmid}/config",),
    input=DiskAddArgs,
    output=TaskOutcome,
    planner=_plan_add,
    examples=[
        {"vmid": 101, "size_gib": 8, "storage": "local-lvm", "options": "discard=on,ssd=1"},
        {"vmid": 201, "size_gib": 2, "storage": "local", "mount_path": "/srv"},
    ],
    rejects=[
        ({"vmid": 101, "size_gib": 8, "storage": "local-lvm", "slot": 0}, "slot_in_use"),
        ({"vmid": 101, "size_gib": 8, "storage": "nope"}, "not_found"),
        ({"vmid": 101, "size_gib": 500, "storage": "local"}, "storage_full"),
        ({"vmid": 201, "size_gib": 2, "storage": "local-lvm"}, "invalid_argument"),
        ({"vmid": 101, "size_gib": 1, "options": "file=local:iso/x.iso"}, "invalid_argument"),
        (
            {"vmid": 101, "size_gib": 8, "storage": "local-lvm", "options": "discrad=on"},
            "invalid_argument",
        ),
    ],
)


# --- resize --------------------------------------------------------------------------


class DiskResizeArgs(WaitInput, GuestRef):
    disk: DiskKey
    size_gib: Annotated[
        float, Field(gt=0, le=131072, description="New total size in GiB (grow only).")
    ]


async def _plan_resize(ctx: ToolContext, args: DiskResizeArgs) -> Plan:
    guest = await _guest(ctx, args)
    if _UNUSED_RE.fullmatch(args.disk):
        raise ToolFailure(
            "unsupported",
            f"{args.disk} is detached; only an attached disk can be resized",
            field="disk",
            hint="Attach it again with proxmox_guest_config_update first.",
        )
    value = guest.disk(args.disk)
    current = _size_of(value)
    wanted = int(args.size_gib * GiB)
    if wanted < current:
        raise ToolFailure(
            "invalid_argument",
            f"{args.disk} is {_gib(current)} GiB; a disk cannot shrink to {args.size_gib} GiB",
            field="size_gib",
            hint=f"Give a size above {_gib(current)} GiB; shrinking is not supported by Proxmox.",
        )
    if wanted == current:
        return Plan(
            summary=f"{args.disk} of {guest.label} is already {_gib(current)} GiB",
            target=guest.target,
        )
    storage = _volume(value).split(":", 1)[0]
    room = await _room(
        ctx, guest, storage, wanted - current, field="size_gib", storage_field="disk"
    )
    size = f"{args.size_gib:g}G" if args.size_gib == int(args.size_gib) else f"{wanted // 1024**2}M"
    call = guest.call("PUT", "resize", {"disk": args.disk, "size": size})
    return Plan(
        summary=f"grow {args.disk} of {guest.label} by {_gib(wanted - current)} GiB",
        changes=[
            Change(field=f"{args.disk} GiB", before=_gib(current), after=_gib(wanted)),
            *room,
        ],
        target=guest.target,
        calls=[call],
        warnings=["the filesystem inside a VM is not grown: extend it in the guest"]
        if guest.target.type == "qemu"
        else [],
    )


disk_resize = action(
    "proxmox_disk_resize",
    title="Grow a guest's disk",
    description="""Grow a VM disk or container volume (scsi0, rootfs, mp0...) to size_gib in
    total; a smaller size is refused. Extend a VM's filesystem inside the guest afterwards.""",
    tier=Tier.WRITE,
    toolset="disks",
    api=("PUT /nodes/{node}/{type}/{vmid}/resize",),
    input=DiskResizeArgs,
    output=TaskOutcome,
    planner=_plan_resize,
    examples=[
        {"vmid": 101, "disk": "scsi0", "size_gib": 40},
        {"vmid": 201, "disk": "rootfs", "size_gib": 10},
    ],
    rejects=[
        ({"vmid": 101, "disk": "scsi0", "size_gib": 8}, "invalid_argument"),
        ({"vmid": 101, "disk": "scsi7", "size_gib": 40}, "not_found"),
        ({"vmid": 101, "disk": "ide2", "size_gib": 40}, "unsupported"),
    ],
)


# --- move ----------------------------------------------------------------------------


class DiskMoveArgs(WaitInput, GuestRef):
    disk: DiskKey
    storage: StorageId
    snapshot_first: Annotated[
        bool, Field(description="Snapshot the guest first, to roll back to.")
    ] = False


async def _plan_move(ctx: ToolContext, args: DiskMoveArgs) -> Plan:
    guest = await _guest(ctx, args)
    value = guest.disk(args.disk)
    volume = _volume(value)
    if volume.split(":", 1)[0] == args.storage:
        raise ToolFailure(
            "invalid_argument",
            f"{args.disk} is already on storage {args.storage!r}",
            field="storage",
            hint="Choose another storage.",
        )
    if guest.target.type == "lxc":
        if guest.row.get("status") == "running":
            raise ToolFailure(
                "guest_running",
                f"{guest.label} is running; a container's volume moves only while it is stopped",
                field="vmid",
                hint="Shut it down with proxmox_guest_power first.",
            )
        if _UNUSED_RE.fullmatch(args.disk):
            raise ToolFailure(
                "unsupported",
                "only a container's configured volumes can be moved",
                field="disk",
                hint="Move rootfs or an mpN.",
            )
    room = await _room(
        ctx, guest, args.storage, _size_of(value), field="storage", storage_field="storage"
    )
    rest = "move_disk" if guest.target.type == "qemu" else "move_volume"
    key = "disk" if guest.target.type == "qemu" else "volume"
    call = guest.call("POST", rest, {key: args.disk, "storage": args.storage, "delete": 0})
    plan = Plan(
        summary=f"move {args.disk} of {guest.label} from {volume} to storage {args.storage}",
        changes=[
            Change(
                field=f"{args.disk} storage", before=volume.split(":", 1)[0], after=args.storage
            ),
            *room,
        ],
        target=guest.target,
        calls=[call],
        warnings=[
            f"the source {volume} stays attached as an unusedN disk: remove it with "
            "proxmox_disk_detach (delete) once the guest works from the new storage"
        ],
    )
    return await planners.snapshot_first(
        ctx, plan, asked=args.snapshot_first, short="move", field="snapshot_first"
    )


async def _undo_move(ctx: ToolContext, plan: Plan, output: ToolOutput) -> undo.Undo | None:
    """A disk move's undo copies the disk back to the storage it was on (a new volume
    there: the old source, kept as unusedN, is not reattached)."""
    params = plan.calls[-1].params
    disk = params.get("disk", params.get("volume"))
    source = next((c.before for c in plan.changes if c.field == f"{disk} storage"), None)
    if not isinstance(disk, str) or not isinstance(source, str):
        return None
    return undo.guest_undo(plan, output, "proxmox_disk_move", {"disk": disk, "storage": source})


@tool(
    "proxmox_disk_move",
    title="Move a guest's disk to another storage",
    tier=Tier.WRITE,
    toolset="disks",
    api=(
        "POST /nodes/{node}/qemu/{vmid}/move_disk",
        "POST /nodes/{node}/lxc/{vmid}/move_volume",
        "POST /nodes/{node}/{type}/{vmid}/snapshot",
    ),
    input=DiskMoveArgs,
    output=planners.SnapshottedOutcome,
    planner=_plan_move,
    inverse=_undo_move,
    examples=[
        {"vmid": 101, "disk": "scsi0", "storage": "local"},
        {"vmid": 101, "disk": "scsi0", "storage": "local", "snapshot_first": True},
    ],
    rejects=[
        ({"vmid": 101, "disk": "scsi0", "storage": "local-lvm"}, "invalid_argument"),
        ({"vmid": 200, "disk": "rootfs", "storage": "local"}, "guest_running"),
        ({"vmid": 101, "disk": "scsi0", "storage": "nfs-backup"}, "invalid_argument"),
        ({"vmid": 9000, "disk": "scsi0", "storage": "local", "snapshot_first": True},
         "unsupported"),
    ],
)  # fmt: skip
async def disk_move(ctx: ToolContext, args: DiskMoveArgs) -> TaskOutcome:
    """Copy a VM disk (even running) or a stopped container's volume to another storage
    and switch to the copy. The source stays as unusedN: delete it with
    proxmox_disk_detach."""
    assert ctx.plan is not None  # a write's handler runs on its confirmed plan
    return await planners.run_snapshot_first(ctx, args, ctx.plan)


# --- detach --------------------------------------------------------------------------


class DiskDetachArgs(WaitInput, GuestRef):
    disk: DiskKey
    delete: Annotated[
        bool, Field(description="Also delete the volume and its data (else kept as unusedN).")
    ] = False


async def _plan_detach(ctx: ToolContext, args: DiskDetachArgs) -> Plan:
    guest = await _guest(ctx, args)
    value = guest.disk(args.disk)
    if args.disk == "rootfs":
        raise ToolFailure(
            "unsupported",
            "a container's rootfs cannot be detached",
            field="disk",
            hint="Move it with proxmox_disk_move, or delete the container.",
        )
    volume, size = _volume(value), _size_of(value) or await _stored_size(ctx, guest, value)
    unused = bool(_UNUSED_RE.fullmatch(args.disk))
    deleting = args.delete or unused
    lost = f"{volume} ({_gib(size)} GiB)" if size else volume
    changes = [Change(field=args.disk, before=value)]
    if guest.target.type == "qemu":
        params: dict[str, Any] = {"idlist": args.disk, **({"force": 1} if deleting else {})}
        calls = [guest.call("PUT", "unlink", params, digest=False)]  # unlink takes none
    else:
        # pve-container has no unlink: a deleted mount point becomes unusedN (the first
        # free one), and deleting that frees the volume.
        calls = [guest.call("PUT", "config", {"delete": args.disk})]
        if deleting and not unused:
            spare = next(f"unused{i}" for i in range(256) if f"unused{i}" not in guest.config)
            calls.append(guest.call("PUT", "config", {"delete": spare}, digest=False))
    if not deleting:
        changes.append(Change(field="unusedN", after=volume))
    return Plan(
        summary=(f"delete {args.disk} of {guest.label} and its volume {lost}" if deleting
                 else f"detach {args.disk} of {guest.label}, keeping {volume} as unusedN"),
        changes=changes,
        target=guest.target,
        calls=calls,
        warnings=[undo.irreversible(f"the data on {lost} is deleted for good")] if deleting else [],
    )  # fmt: skip


disk_detach = action(
    "proxmox_disk_detach",
    title="Detach or delete a guest's disk",
    description="""Detach a VM disk or container mount point: its volume stays as unusedN.
    With delete, or for an unusedN disk, the volume and its data are deleted for good.""",
    tier=Tier.DESTRUCTIVE,
    toolset="disks",
    api=("PUT /nodes/{node}/qemu/{vmid}/unlink", "PUT /nodes/{node}/lxc/{vmid}/config"),
    input=DiskDetachArgs,
    output=TaskOutcome,
    planner=_plan_detach,
    examples=[{"vmid": 101, "disk": "scsi0"}, {"vmid": 101, "disk": "scsi0", "delete": True}],
    rejects=[
        ({"vmid": 201, "disk": "rootfs"}, "unsupported"),
        ({"vmid": 101, "disk": "virtio3"}, "not_found"),
    ],
)


TOOLS = (disk_add, disk_resize, disk_move, disk_detach)
