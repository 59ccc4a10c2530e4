"""Backups (issue 11): start a vzdump, list archives, restore to a new vmid or over a guest.

`proxmox_backup_start` sends one POST /nodes/{node}/vzdump for guests of one node and
reads the new archives back after the task. Several guests go in one call only when they
share node, pool and tags: policy decides on one target, so that target must say the same
about every guest (their vmids are left unknown, so a rule on vmids fails closed).
The restores read the archive's config (GET .../vzdump/extractconfig) to plan the new
disks, their storages and the room left; a restore over a guest also lists what it
destroys (its config, disks with sizes, snapshots).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import quote

from pydantic import Field, TypeAdapter, field_validator, model_validator

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    GuestName,
    GuestRef,
    GuestTarget,
    GuestType,
    NodeName,
    Plan,
    ProxmoxError,
    StorageId,
    Target,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WaitInput,
    action,
    gib,
    guest_disks,
    matching,
    node_or_default,
    planners,
    read_as,
    tool,
    undo,
    utc_time,
)

VM_BACKUP = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"
CT_BACKUP = "nfs-backup:backup/vzdump-lxc-201-2026_11_30-23_01_40.tar.zst"
"""The simulator's seeded archives, which the examples and rejects name."""

_NOTES_VARIABLE = re.compile(r"\{\{([^\s{}]+)\}\}")
_COMPRESS = {"zstd": "zstd", "gzip": "gzip", "lzo": "lzo", "none": "0"}

BackupVolid = Annotated[
    str,
    matching(r"[a-zA-Z][\w.-]*[a-zA-Z0-9]:backup/\S+", "a backup volume id (storage:backup/...)"),
    Field(max_length=255, description="Backup volume id, from proxmox_backup_list."),
]


class _Item(Answer):
    """One backup in GET .../storage/{storage}/content?content=backup."""

    volid: str
    vmid: int | None = None
    subtype: str | None = None
    size: int | None = None
    ctime: int | None = None
    notes: str | None = None
    protected: bool | None = None


class _Storage(Answer):
    storage: str


_ITEMS = TypeAdapter(list[_Item])
_TEXT = TypeAdapter(str)
_STORAGES = TypeAdapter(list[_Storage])


def _content_path(node: str, storage: str) -> str:
    return f"/nodes/{node}/storage/{quote(storage, safe='')}/content"


async def backups_on(
    ctx: ToolContext, node: str, storage: str, vmid: int | None = None, *, field: str
) -> list[_Item]:
    """The archives on `storage` as `node` sees it; an unknown storage or one without
    `backup` content is refused naming `field`."""
    await planners.storage_status(ctx, node, storage, field=field, content="backup")
    params: dict[str, Any] = {"content": "backup"}
    if vmid is not None:
        params["vmid"] = vmid
    return await read_as(ctx, _ITEMS, _content_path(node, storage), params)


# --- list ------------------------------------------------------------------------------


class ListArgs(ToolInput):
    node: NodeName | None = None
    storage: Annotated[StorageId | None, Field(description="Default: every backup storage.")] = None
    vmid: Vmid | None = None
    type: GuestType | None = None
    offset: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class BackupRow(ToolOutput):
    volid: str
    vmid: int | None = None
    type: str | None = None
    size_gib: float | None = None
    created: str | None = None
    notes: str | None = None
    protected: bool | None = None


class BackupList(ToolOutput):
    backups: list[BackupRow]
    total: int
    next_offset: int | None = None


@tool(
    "proxmox_backup_list",
    title="List backups",
    tier=Tier.READ,
    toolset="backup",
    api=("GET /nodes/{node}/storage/{storage}/content",),
    input=ListArgs,
    output=BackupList,
    idempotent=True,
    examples=[{"storage": "nfs-backup"}, {"vmid": 101}, {"type": "lxc", "node": "pve2"}],
    rejects=[({"storage": "local-lvm"}, "invalid_argument"), ({"storage": "nope"}, "not_found")],
)
async def backup_list(ctx: ToolContext, args: ListArgs) -> BackupList:
    """List backups (vzdump archives) on a node's backup storages, or one storage,
    newest first, filtered by vmid or type, paged. The volid is what the restore tools
    take."""
    node = node_or_default(ctx, args.node)
    if args.storage is not None:
        storages = [args.storage]
    else:
        listed = await read_as(ctx, _STORAGES, f"/nodes/{node}/storage", {"content": "backup"})
        storages = sorted(s.storage for s in listed)
    items = [
        item
        for storage in storages
        for item in await backups_on(ctx, node, storage, args.vmid, field="storage")
        if args.type is None or item.subtype == args.type
    ]
    items.sort(key=lambda item: (item.ctime or 0, item.volid), reverse=True)
    page = items[args.offset : args.offset + args.limit]
    end = args.offset + len(page)
    rows = [
        BackupRow(
            volid=i.volid,
            vmid=i.vmid,
            type=i.subtype,
            size_gib=gib(i.size),
            created=utc_time(i.ctime),
            notes=i.notes,
            protected=i.protected or None,
        )
        for i in page
    ]
    return BackupList(backups=rows, total=len(items), next_offset=end if end < len(items) else None)


# --- start -----------------------------------------------------------------------------


class StartArgs(WaitInput):
    advertised_bare: ClassVar[tuple[str, ...]] = ("vmid", "name")

    vmid: Vmid | None = None
    name: GuestName | None = None
    vmids: Annotated[
        list[Vmid] | None,
        Field(min_length=1, max_length=50, description="Several guests of one node."),
    ] = None
    storage: Annotated[
        StorageId | None, Field(description="Default: the cluster's default_backup_storage.")
    ] = None
    mode: Literal["snapshot", "suspend", "stop"] = "snapshot"
    compress: Literal["zstd", "gzip", "lzo", "none"] = "zstd"
    notes: Annotated[
        str | None,
        Field(max_length=1024, description="Notes; {{guestname}} {{vmid}} {{node}} {{cluster}}."),
    ] = None
    protected: Annotated[bool, Field(description="Keep it from pruning and deletion.")] = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if sum(x is not None for x in (self.vmid, self.name, self.vmids)) != 1:
            raise ValueError("give exactly one of vmid, name or vmids")
        return self

    @field_validator("notes")
    @classmethod
    def _template(cls, notes: str | None) -> str | None:
        """PVE's `$verify_notes_template`: one line, known variables only."""
        if notes is None:
            return None
        if "\n" in notes:
            raise ValueError("must be one line (write \\n for a line break)")
        unknown = [v for v in _NOTES_VARIABLE.findall(notes)
                   if v not in ("cluster", "guestname", "node", "vmid")]  # fmt: skip
        if unknown:
            raise ValueError(f"has unknown variable {{{{{unknown[0]}}}}}")
        return notes


def _several(rows: list[dict[str, Any]], vmids: list[int]) -> list[dict[str, Any]]:
    """The rows of `vmids`, which must share node, pool and tags (one policy target)."""
    by_vmid = {int(row["vmid"]): row for row in rows}
    missing = [vmid for vmid in vmids if vmid not in by_vmid]
    if missing:
        raise ToolFailure(
            "not_found",
            f"no guest with vmid {missing[0]}",
            field="vmids",
            hint="List guests with proxmox_guest_list.",
        )
    chosen = [by_vmid[vmid] for vmid in sorted(set(vmids))]
    facts = {(r["node"], r.get("pool"), r.get("tags") or "") for r in chosen}
    if len(facts) > 1:
        raise ToolFailure(
            "invalid_argument",
            "the guests are on different nodes or in different pools or tags",
            field="vmids",
            hint="Back up guests of one node, pool and tags per call (policy decides per "
            "target), or one guest per call.",
            details={
                "guests": [
                    {
                        "vmid": r["vmid"],
                        "node": r["node"],
                        "pool": r.get("pool"),
                        "tags": r.get("tags"),
                    }
                    for r in chosen
                ]
            },
        )
    for row in chosen:
        planners.require_unlocked(row, "vmids")
    return chosen


async def _plan_start(ctx: ToolContext, args: StartArgs) -> Plan:
    if args.vmids is not None:
        rows = _several(await planners.guest_resources(ctx), args.vmids)
    else:
        row = await planners.resolve_guest(ctx, args)
        planners.require_unlocked(row, planners.ref_field(args))
        rows = [row]
    storage = args.storage or ctx.cluster.default_backup_storage
    if storage is None:
        raise ToolFailure(
            "storage_required",
            "no storage given and the cluster has no default_backup_storage",
            field="storage",
            hint="Pass storage (one whose content includes backup; proxmox_node_status "
            "lists them).",
        )
    first = planners.guest_target(rows[0])
    node = first.node
    status = await planners.storage_status(ctx, node, storage, field="storage", content="backup")
    params: dict[str, Any] = {
        "vmid": ",".join(str(r["vmid"]) for r in rows),
        "storage": storage,
        "mode": args.mode,
        "compress": _COMPRESS[args.compress],
    }
    if args.notes:
        params["notes-template"] = args.notes
    if args.protected:
        params["protected"] = 1
    names = ", ".join(f"{r['type']} {r['vmid']} ({r.get('name', '?')})" for r in rows)
    changes = [Change(field="backups", after=f"one archive per guest on {storage}"),
               Change(field=f"{storage} free GiB", before=gib(status.avail))]  # fmt: skip
    warnings = ["each guest is locked (backup) while the job runs: other changes to it fail"]
    running = [str(r["vmid"]) for r in rows if r.get("status") == "running"]
    if args.mode == "stop" and running:
        warnings.append(f"stop mode: {', '.join(running)} stop for the backup, then start again")
    target: Target = first
    if len(rows) > 1:
        target = Target(node=node, pool=first.pool, tags=first.tags)
    call = ApiCall.to("POST", "/nodes/{node}/vzdump", params=params, task=True, node=node)
    return Plan(
        summary=f"back up {names} on {node} to {storage} ({args.mode}, {args.compress})",
        changes=changes,
        target=target,
        calls=[call],
        warnings=warnings,
    )


class BackupStarted(TaskOutcome):
    backups: list[str] = Field(default_factory=list)
    """The archives the job made (read after the task; empty when not waited for)."""


@tool(
    "proxmox_backup_start",
    title="Back up guests",
    tier=Tier.WRITE,
    toolset="backup",
    api=("POST /nodes/{node}/vzdump",),
    input=StartArgs,
    output=BackupStarted,
    planner=_plan_start,
    examples=[
        {"vmid": 101, "storage": "nfs-backup", "notes": "{{guestname}} before upgrade"},
        {"name": "dns01", "storage": "local", "mode": "stop", "compress": "none"},
        {"vmids": [104, 105], "storage": "nfs-backup", "protected": True},
    ],
    rejects=[
        ({"vmid": 100, "storage": "local-lvm"}, "invalid_argument"),
        ({"vmid": 100, "storage": "nope"}, "not_found"),
        ({"vmid": 100}, "storage_required"),
        ({"vmids": [100, 104], "storage": "local"}, "invalid_argument"),
        ({"vmid": 999, "storage": "local"}, "not_found"),
        ({"vmid": 100, "storage": "local", "notes": "{{name}}"}, "invalid_argument"),
    ],
)
async def backup_start(ctx: ToolContext, args: StartArgs) -> BackupStarted:
    """Back up one guest, or several of one node (vmids), to a backup storage (vzdump).
    Returns the new archives; a job where a guest failed is task_failed (its log says
    why). Restore with proxmox_backup_restore."""
    plan = ctx.plan
    assert plan is not None
    call = plan.calls[0]
    node, storage = str(plan.target.node), str(call.params["storage"])
    vmids = [int(v) for v in str(call.params["vmid"]).split(",")]
    before = {i.volid for i in await backups_on(ctx, node, storage, field="storage")}
    upid = str((await ctx.call(call.method, call.path, call.params)).data)
    single = plan.target if isinstance(plan.target, GuestTarget) else None
    outcome = BackupStarted(vmid=single.vmid if single else None, node=node, upid=upid,
                            type=single.type if single else None)  # fmt: skip
    outcome.task_status = "running"
    if not args.wait:
        return outcome
    task = await ctx.wait_task(upid, args.timeout)
    outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
    after = await backups_on(ctx, node, storage, field="storage")
    outcome.backups = sorted(i.volid for i in after if i.volid not in before and i.vmid in vmids)
    if single is not None:
        state = await read_as(ctx, OBJECT, f"{single.path}/status/current")
        outcome.guest_status = str(state.get("status", "unknown"))
    return outcome


# --- restore ---------------------------------------------------------------------------


async def _archive(ctx: ToolContext, node: str, volid: str) -> tuple[_Item, dict[str, str]]:
    """The backup `volid` as `node` lists it, and the guest config it holds."""
    storage = volid.split(":", 1)[0]
    found = [i for i in await backups_on(ctx, node, storage, field="volid") if i.volid == volid]
    if not found or found[0].subtype not in ("qemu", "lxc"):
        raise ToolFailure(
            "not_found",
            f"no backup {volid} on node {node}",
            field="volid",
            hint="List backups with proxmox_backup_list (a node's local storage holds only "
            "that node's).",
        )
    params = {"volume": volid}
    text = await read_as(ctx, _TEXT, f"/nodes/{node}/vzdump/extractconfig", params)
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not key.startswith("#"):
            config[key] = value
    return found[0], config


def _kind(item: _Item) -> GuestType:
    return "qemu" if item.subtype == "qemu" else "lxc"


async def _restore_plan(
    ctx: ToolContext,
    archive: tuple[_Item, dict[str, str]],
    *,
    node: str,
    vmid: int,
    storage: str | None,
    freed: dict[str, int],
) -> tuple[GuestTarget, dict[str, Any], list[Change]]:
    """The restore's target, parameters and new disks, with the room each storage keeps
    (`freed`: what a restore over a guest frees there first, as PVE does)."""
    item, config = archive
    kind = _kind(item)
    disks = guest_disks(kind, config)
    if kind == "lxc":  # pve-container puts them all on `storage`, which defaults to `local`
        rootfs = next((v.split(":", 1)[0] for k, v, _ in disks if k == "rootfs"), "local")
        storage = storage or rootfs
    changes: list[Change] = []
    wanted: list[tuple[str, int, str]] = []
    for key, was, size in disks:
        where = storage or was.split(":", 1)[0]
        wanted.append((where, size, "storage"))
        changes.append(Change(field=key, after=f"new volume on {where}, {gib(size)} GiB"))
    credit = [(where, -freed[where], "storage") for where in sorted({w for w, _, _ in wanted})
              if freed.get(where)]  # fmt: skip
    content = "images" if kind == "qemu" else "rootdir"
    changes += await planners.storage_room(
        ctx, node, credit + wanted, content=content, storage_field="storage"
    )
    params: dict[str, Any] = {"vmid": vmid}
    if kind == "qemu":
        params["archive"] = item.volid
    else:
        params |= {"ostemplate": item.volid, "restore": 1}
    if storage is not None:
        params["storage"] = storage
    name = config.get("name" if kind == "qemu" else "hostname")
    target = GuestTarget(node=node, vmid=vmid, type=kind, name=name)
    return target, params, changes


def _calls(target: GuestTarget, params: dict[str, Any], start: bool) -> list[ApiCall]:
    """The restore (a task), and a start after it (so the runner waits and reports it)."""
    base = f"/nodes/{{node}}/{target.type}"
    calls = [ApiCall.to("POST", base, params=params, task=True, node=target.node)]
    if start:
        start_call = ApiCall.to(
            "POST", base + "/{vmid}/status/start", task=True, node=target.node, vmid=target.vmid
        )
        calls.append(start_call)
    return calls


class RestoreArgs(WaitInput):
    volid: BackupVolid
    vmid: Annotated[
        int | None, Field(ge=100, le=999_999_999, description="New vmid; default: next free.")
    ] = None
    node: NodeName | None = None
    storage: Annotated[
        StorageId | None, Field(description="For its disks; default: where they were.")
    ] = None
    unique: Annotated[bool, Field(description="New MACs and ids (the original may run).")] = True
    start: bool = False
    pool: Annotated[str | None, Field(max_length=64)] = None


async def _plan_restore(ctx: ToolContext, args: RestoreArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    if args.vmid is None:
        vmid = int(str((await ctx.call("GET", "/cluster/nextid")).data))
    else:
        vmid = args.vmid
        existing = {int(r["vmid"]): r for r in await planners.guest_resources(ctx)}
        if vmid in existing:
            raise ToolFailure(
                "already_exists",
                f"vmid {vmid} is in use ({existing[vmid].get('name', '?')} on "
                f"{existing[vmid]['node']})",
                field="vmid",
                hint="Leave vmid unset for the next free one; to replace that guest with the "
                "backup use proxmox_backup_restore_over.",
            )
    archive = await _archive(ctx, node, args.volid)
    target, params, changes = await _restore_plan(
        ctx, archive, node=node, vmid=vmid, storage=args.storage, freed={}
    )
    if args.unique:
        params["unique"] = 1
    if args.pool:
        params["pool"] = args.pool
        target = target.model_copy(update={"pool": args.pool})
    changes.insert(0, Change(field="vmid", after=vmid))
    if args.start:
        changes.append(Change(field="status", before="stopped", after="running"))
    return Plan(
        summary=f"restore {args.volid} as {target.type} {vmid} ({target.name or '?'}) on {node}",
        changes=changes,
        target=target,
        calls=_calls(target, params, args.start),
    )


backup_restore = action(
    "proxmox_backup_restore",
    title="Restore a backup to a new guest",
    description="""Restore a backup (volid from proxmox_backup_list) as a NEW guest:
    next free vmid, disks where they were or on storage. The plan lists disks and free
    space. To replace a guest: proxmox_backup_restore_over.""",
    tier=Tier.WRITE,
    toolset="backup",
    api=("POST /nodes/{node}/{type}", "POST /nodes/{node}/{type}/{vmid}/status/start"),
    input=RestoreArgs,
    output=TaskOutcome,
    planner=_plan_restore,
    examples=[
        {"volid": VM_BACKUP, "storage": "local-lvm", "start": True},
        {"volid": CT_BACKUP, "vmid": 260, "node": "pve2", "pool": "dev"},
    ],
    rejects=[
        ({"volid": VM_BACKUP, "vmid": 100}, "already_exists"),
        ({"volid": "nfs-backup:backup/vzdump-qemu-1-x.vma"}, "not_found"),
        ({"volid": "nope:backup/x.vma"}, "not_found"),
        ({"volid": "local:iso/debian-12.9.0-amd64-netinst.iso"}, "invalid_argument"),
        ({"volid": VM_BACKUP, "storage": "nfs-backup"}, "invalid_argument"),
    ],
)


class RestoreOverArgs(WaitInput, GuestRef):
    volid: BackupVolid
    storage: Annotated[
        StorageId | None, Field(description="For its disks; default: where they were.")
    ] = None
    start: bool = False


class _Snapshot(Answer):
    name: str


_SNAPSHOTS = TypeAdapter(list[_Snapshot])


async def _losses(ctx: ToolContext, target: GuestTarget) -> tuple[list[Change], dict[str, int]]:
    """What a restore over the guest destroys: its config, each disk with its size (as
    its storage lists it), its snapshots; and the bytes freed per storage."""
    config: dict[str, Any] = await read_as(ctx, OBJECT, f"{target.path}/config")
    config.pop("digest", None)
    shown = {k: v for k, v in config.items() if not planners.is_secret(k)}
    changes = [Change(field="config", before=shown, after="the backup's")]
    freed: dict[str, int] = {}
    disks = guest_disks(target.type, config)
    unused = [(k, str(v), 0) for k, v in sorted(config.items()) if k.startswith("unused")]
    for key, volid, config_size in disks + unused:
        storage = volid.split(":", 1)[0]
        try:
            items = await read_as(ctx, _ITEMS, _content_path(target.node, storage),
                                  {"vmid": target.vmid})  # fmt: skip
        except ProxmoxError:
            items = []
        size = next((i.size or 0 for i in items if i.volid == volid), config_size)
        freed[storage] = freed.get(storage, 0) + size
        changes.append(Change(field=f"{key} {volid}", before=f"{gib(size)} GiB", after=None))
    snapshots = await read_as(ctx, _SNAPSHOTS, f"{target.path}/snapshot")
    names = [s.name for s in snapshots if s.name != "current"]
    if names:
        changes.append(Change(field="snapshots", before=names, after=None))
    return changes, freed


async def _plan_restore_over(ctx: ToolContext, args: RestoreOverArgs) -> Plan:
    row = await planners.resolve_guest(ctx, args)
    field = planners.ref_field(args)
    planners.require_unlocked(row, field)
    guest = planners.guest_target(row)
    if row.get("status") != "stopped":
        raise ToolFailure(
            "guest_running",
            f"{guest.type} {guest.vmid} ({guest.name or '?'}) is {row.get('status')}",
            field=field,
            hint="Shut it down (proxmox_guest_power action shutdown) or stop it first.",
        )
    archive = await _archive(ctx, guest.node, args.volid)
    if _kind(archive[0]) != guest.type:
        what = {"qemu": "a VM", "lxc": "a container"}
        raise ToolFailure(
            "invalid_argument",
            f"{args.volid} is a backup of {what[_kind(archive[0])]}, {guest.vmid} is "
            f"{what[guest.type]}",
            field="volid",
            hint="Restore it to a new vmid with proxmox_backup_restore instead.",
        )
    lost, freed = await _losses(ctx, guest)
    _target, params, changes = await _restore_plan(
        ctx, archive, node=guest.node, vmid=guest.vmid, storage=args.storage, freed=freed
    )
    params["force"] = 1
    if args.start:
        changes.append(Change(field="status", before="stopped", after="running"))
    return Plan(
        summary=f"restore {args.volid} over {guest.type} {guest.vmid} ({guest.name or '?'}) "
        f"on {guest.node}",
        changes=[*lost, *changes],
        target=guest,
        calls=_calls(guest, params, args.start),
        warnings=[undo.irreversible("its current config, disks and snapshots are destroyed")],
    )


backup_restore_over = action(
    "proxmox_backup_restore_over",
    title="Restore a backup over a guest",
    description="""Replace a stopped guest with a backup of it: its current config,
    disks and snapshots are destroyed (the plan lists them) and cannot be recovered. For a
    copy next to it use proxmox_backup_restore.""",
    tier=Tier.DESTRUCTIVE,
    toolset="backup",
    api=("POST /nodes/{node}/{type}", "POST /nodes/{node}/{type}/{vmid}/status/start"),
    input=RestoreOverArgs,
    output=TaskOutcome,
    planner=_plan_restore_over,
    examples=[
        {"vmid": 101, "volid": VM_BACKUP},
        {"name": "proxy01", "volid": CT_BACKUP, "storage": "local-lvm", "start": True},
    ],
    rejects=[
        ({"vmid": 100, "volid": VM_BACKUP}, "guest_running"),
        ({"vmid": 201, "volid": VM_BACKUP}, "invalid_argument"),
        ({"vmid": 999, "volid": VM_BACKUP}, "not_found"),
    ],
)


TOOLS = (backup_list, backup_start, backup_restore, backup_restore_over)
