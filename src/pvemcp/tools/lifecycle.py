"""Creating and deleting VMs and containers (issue 11, the lifecycle).

A create's plan is the guest it makes: every config key it sends, and each storage's free
space before and after its new volumes; it is refused before anything is sent for a vmid
in use, an unknown node, pool, ISO, template or bridge, a storage that is unknown, cannot
hold the volumes or has no room. A `start` is planned as a second call (POST .../status/start
after the create task), so the result reports the guest's state once it runs. A
container's password is only the name of an operator-provided secret
(`ToolContext.guest_secret`, as `proxmox_cloudinit_set`): its value is in no argument,
plan, result or audit record.

A delete's plan says what is lost: each disk with its size, the snapshots; backups on
backup storages are kept. A running guest is refused (PVE would answer `VM 100 is running
- destroy failed`), as is a locked one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

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
    WaitInput,
    action,
    cluster_default,
    gib,
    matching,
    node_or_default,
    planners,
    read_as,
    undo,
)

_STORAGE_RE = r"[a-zA-Z][\w.-]*[a-zA-Z0-9]"
Tags = Annotated[list[Annotated[str, matching(r"[\w][\w+.-]*", "a tag")]], Field(max_length=16)]
_GIB = 1 << 30


def _one_of(*values: str) -> AfterValidator:
    """A choice checked by the validator, not advertised as an enum (bytes in tools/list);
    the error names the choices."""
    return matching("|".join(map(re.escape, values)), "one of " + ", ".join(values))


_DNS_NAME = Annotated[
    str, matching(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?", "a DNS name (PVE's dns-name)")
]
_NODE = Annotated[str, matching(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", "a node name")]


# One new disk: storage (default: the cluster's default_storage), size, bus. (Comments,
# not docstrings: a docstring is a description in every tools/list.)
class NewDisk(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: StorageId | None = None
    size_gib: Annotated[int, Field(ge=1, le=65536)]
    bus: Literal["scsi", "virtio", "sata"] = "scsi"


# One NIC: bridge (default: the cluster's default_bridge), VLAN tag, model.
class NewNic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bridge: Annotated[str | None, matching(r"[\w.-]{1,15}", "a bridge name")] = None
    vlan: Annotated[int | None, Field(ge=1, le=4094)] = None
    model: Annotated[str, _one_of("virtio", "e1000", "vmxnet3", "rtl8139")] = "virtio"


class _CreateCommon(WaitInput):
    vmid: Annotated[int | None, Field(ge=100, le=999_999_999)] = None
    node: _NODE | None = None
    cores: Annotated[int, Field(ge=1)] = 1
    memory_mib: Annotated[int, Field(ge=16)] = 512
    nics: Annotated[list[NewNic], Field(default_factory=list, max_length=8)]
    tags: Annotated[Tags, Field(default_factory=list)]
    pool: Annotated[str | None, matching(r"[\w.-]{1,64}", "a pool name")] = None
    start: bool = False


class VmCreateArgs(_CreateCommon):
    name: _DNS_NAME | None = None
    sockets: Annotated[int, Field(ge=1, le=4)] = 1
    balloon_mib: Annotated[int | None, Field(ge=0)] = None
    disks: Annotated[list[NewDisk], Field(default_factory=list, max_length=8)]
    iso: Annotated[
        str | None, matching(_STORAGE_RE + r":iso/[^/,]+", "storage:iso/file.iso"), Field()
    ] = None
    ostype: Annotated[
        str,
        _one_of("l26", "l24", "win11", "win10", "win8", "win7", "w2k8", "wvista", "wxp", "w2k3",
                "w2k", "solaris", "other"),
    ] = "l26"  # fmt: skip
    bios: Literal["seabios", "ovmf"] = "seabios"
    machine: Annotated[str | None, matching(r"(pc|q35)[\w.+-]*", "pc or q35[...]")] = None
    scsihw: Annotated[
        str, _one_of("virtio-scsi-single", "virtio-scsi-pci", "lsi", "megasas", "pvscsi")
    ] = "virtio-scsi-single"
    agent: bool = True
    cloudinit: Annotated[bool, Field(description="Add a cloud-init drive.")] = False


class CtCreateArgs(_CreateCommon):
    template: Annotated[
        str, matching(_STORAGE_RE + r":vztmpl/[^/,]+", "storage:vztmpl/file"), Field()
    ]
    hostname: _DNS_NAME | None = None
    rootfs_storage: StorageId | None = None
    rootfs_gib: Annotated[int, Field(ge=1, le=65536)] = 8
    unprivileged: bool = True
    nameserver: Annotated[str | None, Field(max_length=256)] = None
    ssh_keys: Annotated[
        list[Annotated[str, Field(max_length=4096)]], Field(default_factory=list, max_length=32)
    ]
    features: Annotated[list[Literal["nesting", "keyctl", "fuse"]], Field(default_factory=list)]
    password_secret: Annotated[
        str | None,
        matching(r"[A-Za-z][A-Za-z0-9_-]{0,63}", "a secret name"),
        Field(description="Name of a guest secret the operator provided."),
    ] = None


class _Content(Answer):
    volid: str
    size: int = 0


_CONTENT = TypeAdapter(list[_Content])
_ROWS = TypeAdapter(list[dict[str, Any]])


async def _new_vmid(ctx: ToolContext, vmid: int | None) -> int:
    if vmid is None:
        return int(await ctx.get("/cluster/nextid"))
    if any(row["vmid"] == vmid for row in await planners.guest_resources(ctx)):
        raise ToolFailure(
            "already_exists",
            f"vmid {vmid} is in use in cluster {ctx.cluster_name}",
            field="vmid",
            hint="Leave vmid unset to take the next free one.",
        )
    return vmid


async def _check_pool(ctx: ToolContext, pool: str | None) -> None:
    if pool is None:
        return
    rows = await read_as(ctx, _ROWS, "/cluster/resources")
    if not any(row.get("type") == "pool" and row.get("pool") == pool for row in rows):
        raise ToolFailure(
            "not_found", f"pool {pool!r} does not exist", field="pool", hint="Use an existing pool."
        )


async def _require_volume(
    ctx: ToolContext, node: str, volid: str, content: str, field: str
) -> None:
    storage = volid.split(":", 1)[0]
    await planners.storage_status(ctx, node, storage, field=field, content=content)
    items = await read_as(
        ctx, _CONTENT, f"/nodes/{node}/storage/{storage}/content", {"content": content}
    )
    if not any(item.volid == volid for item in items):
        raise ToolFailure(
            "not_found",
            f"{volid!r} is not in storage {storage!r} on {node}",
            field=field,
            hint=f"List the storage's {content} content; upload or download it there first.",
        )


async def _nics(
    ctx: ToolContext, node: str, nics: Sequence[NewNic], *, lxc: bool
) -> dict[str, str]:
    """The `netN` values; a bridge the node does not run is refused here, since PVE
    accepts it at create and fails only when the guest starts."""
    if not nics:
        return {}
    bridges = await planners.node_bridges(ctx, node)
    values = {}
    for index, nic in enumerate(nics):
        bridge = cluster_default(nic.bridge, ctx.cluster.default_bridge, "bridge", "e.g. vmbr0")
        bridges.require(bridge, f"nics[{index}].bridge")
        head = f"name=eth{index},bridge={bridge},ip=dhcp" if lxc else f"{nic.model},bridge={bridge}"
        values[f"net{index}"] = head + (f",tag={nic.vlan}" if nic.vlan else "")
    return values


def _create_plan(
    kind: Literal["qemu", "lxc"],
    *,
    node: str,
    vmid: int,
    name: str | None,
    args: _CreateCommon,
    params: dict[str, Any],
    room: list[Change],
) -> Plan:
    """The create call (and the start after it), with the resulting config as changes."""
    if args.tags:
        params["tags"] = ";".join(args.tags)
    if args.pool:
        params["pool"] = args.pool
    calls = [ApiCall.to("POST", f"/nodes/{{node}}/{kind}", params={"vmid": vmid, **params},
                        task=True, node=node)]  # fmt: skip
    if args.start:
        calls.append(ApiCall.to("POST", f"/nodes/{{node}}/{kind}/{{vmid}}/status/start",
                                task=True, node=node, vmid=vmid))  # fmt: skip
    shown = {k: v for k, v in params.items() if not planners.is_secret(k)}
    changes = [Change(field=key, after=value) for key, value in sorted(shown.items())]
    changes += [*room, Change(field="status", after="running" if args.start else "stopped")]
    what = "VM" if kind == "qemu" else "container"
    return Plan(
        summary=f"create {what} {vmid} ({name or '?'}) on {node}",
        changes=changes,
        target=GuestTarget(
            node=node, vmid=vmid, type=kind, name=name, pool=args.pool, tags=args.tags
        ),
        calls=calls,
    )


async def _plan_vm_create(ctx: ToolContext, args: VmCreateArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    vmid = await _new_vmid(ctx, args.vmid)
    await _check_pool(ctx, args.pool)
    params: dict[str, Any] = {
        "cores": args.cores, "sockets": args.sockets, "memory": args.memory_mib,
        "ostype": args.ostype, "bios": args.bios, "scsihw": args.scsihw,
        "agent": int(args.agent),
    }  # fmt: skip
    if args.name:
        params["name"] = args.name
    if args.balloon_mib is not None:
        params["balloon"] = args.balloon_mib
    if args.machine:
        params["machine"] = args.machine
    wanted: list[tuple[str, int, str]] = []
    counts: dict[str, int] = {}
    for index, disk in enumerate(args.disks):
        storage = cluster_default(
            disk.storage, ctx.cluster.default_storage, "storage", "for VM disks"
        )
        key = f"{disk.bus}{counts.get(disk.bus, 0)}"
        counts[disk.bus] = counts.get(disk.bus, 0) + 1
        params[key] = f"{storage}:{disk.size_gib}"
        wanted.append((storage, disk.size_gib * _GIB, f"disks[{index}].storage"))
    if args.cloudinit:
        first = wanted[0][0] if wanted else None
        drive = cluster_default(first, ctx.cluster.default_storage, "storage", "for cloud-init")
        params["ide0"] = f"{drive}:cloudinit"
        await planners.storage_status(ctx, node, drive, field="cloudinit", content="images")
    if args.iso:
        await _require_volume(ctx, node, args.iso, "iso", "iso")
        params["ide2"] = f"{args.iso},media=cdrom"
    params.update(await _nics(ctx, node, args.nics, lxc=False))
    if args.disks:
        params["boot"] = f"order={next(k for k in params if k[:-1] in counts)}"
    room = await planners.storage_room(ctx, node, wanted, content="images")
    return _create_plan(
        "qemu", node=node, vmid=vmid, name=args.name, args=args, params=params, room=room
    )


async def _plan_ct_create(ctx: ToolContext, args: CtCreateArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    vmid = await _new_vmid(ctx, args.vmid)
    await _check_pool(ctx, args.pool)
    await _require_volume(ctx, node, args.template, "vztmpl", "template")
    storage = cluster_default(args.rootfs_storage, ctx.cluster.default_storage, "storage", "rootfs")
    params: dict[str, Any] = {
        "ostemplate": args.template,
        "rootfs": f"{storage}:{args.rootfs_gib}",
        "cores": args.cores,
        "memory": args.memory_mib,
        "unprivileged": int(args.unprivileged),
    }
    if args.hostname:
        params["hostname"] = args.hostname
    if args.nameserver:
        params["nameserver"] = args.nameserver
    if args.ssh_keys:
        params["ssh-public-keys"] = "\n".join(args.ssh_keys)
    if args.features:
        params["features"] = ",".join(f"{feature}=1" for feature in args.features)
    if args.password_secret is not None:
        params["password"] = ctx.guest_secret(args.password_secret, field="password_secret")
    params.update(await _nics(ctx, node, args.nics, lxc=True))
    field = "rootfs_storage" if args.rootfs_storage else "rootfs_gib"
    wanted = [(storage, args.rootfs_gib * _GIB, field)]
    room = await planners.storage_room(ctx, node, wanted, content="rootdir")
    return _create_plan(
        "lxc", node=node, vmid=vmid, name=args.hostname, args=args, params=params, room=room
    )


vm_create = action(
    "proxmox_vm_create",
    title="Create a VM",
    description="""Create a QEMU VM: CPUs, memory, disks on storages, NICs on bridges, ISO,
    OS type, BIOS, cloud-init drive. Unset vmid/node/storage/bridge: the next free id, the
    cluster's defaults. To copy a template use proxmox_guest_clone.""",
    tier=Tier.WRITE,
    toolset="lifecycle",
    api=("POST /nodes/{node}/qemu", "POST /nodes/{node}/qemu/{vmid}/status/start"),
    input=VmCreateArgs,
    output=TaskOutcome,
    planner=_plan_vm_create,
    examples=[
        {
            "vmid": 150,
            "node": "pve1",
            "name": "web03",
            "memory_mib": 2048,
            "disks": [{"storage": "local-lvm", "size_gib": 32}],
            "nics": [{"bridge": "vmbr0", "vlan": 20}],
            "iso": "local:iso/debian-12.9.0-amd64-netinst.iso",
        },
    ],
    rejects=[
        ({"vmid": 100, "node": "pve1"}, "already_exists"),
        ({"node": "pve1", "disks": [{"storage": "nope", "size_gib": 1}]}, "not_found"),
        ({"node": "pve1", "disks": [{"storage": "local-lvm", "size_gib": 60000}]}, "storage_full"),
        ({"node": "pve1", "iso": "local:iso/nope.iso"}, "not_found"),
        ({"node": "pve1", "nics": [{"bridge": "vmbr9"}]}, "not_found"),
        ({"node": "pve1", "name": "web 03"}, "invalid_argument"),
        ({"node": "pve1", "disks": [{"storage": "nfs-backup", "size_gib": 1}]}, "invalid_argument"),
    ],
)

ct_create = action(
    "proxmox_ct_create",
    title="Create a container",
    description="""Create an LXC container from a template (storage:vztmpl/...): rootfs,
    unprivileged by default, NICs, DNS, SSH keys, features; a root password only as the
    name of an operator-provided secret.""",
    tier=Tier.WRITE,
    toolset="lifecycle",
    api=("POST /nodes/{node}/lxc", "POST /nodes/{node}/lxc/{vmid}/status/start"),
    input=CtCreateArgs,
    output=TaskOutcome,
    planner=_plan_ct_create,
    examples=[
        {
            "vmid": 250,
            "node": "pve1",
            "hostname": "db03",
            "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "rootfs_storage": "local-lvm",
            "nics": [{"bridge": "vmbr0"}],
            "start": True,
        },
    ],
    rejects=[
        (
            {
                "node": "pve1",
                "template": "local:vztmpl/nope.tar.zst",
                "rootfs_storage": "local-lvm",
            },
            "not_found",
        ),
        ({"vmid": 200, "node": "pve1", "template": "local:vztmpl/x.tar.zst"}, "already_exists"),
        (
            {
                "node": "pve1",
                "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "rootfs_storage": "local-lvm",
                "password_secret": "nope",
            },
            "secret_not_found",
        ),
    ],
)


# --- delete --------------------------------------------------------------------------


class DeleteArgs(WaitInput, GuestRef):
    purge: Annotated[bool, Field(description="Also remove it from jobs, HA and pools.")] = True


class _Snapshot(Answer):
    name: str


_SNAPSHOTS = TypeAdapter(list[_Snapshot])


async def _disks_lost(ctx: ToolContext, target: GuestTarget) -> list[Change]:
    """Each disk of the guest with its size, as its storage lists the guest's volumes."""
    config = await read_as(ctx, OBJECT, f"{target.path}/config")
    changes = []
    for key, value in sorted(config.items()):
        text = str(value)
        if not _is_disk(target.type, key) or "media=cdrom" in text.split(","):
            continue
        volid = text.split(",", 1)[0]
        storage = volid.split(":", 1)[0]
        try:
            items = await read_as(ctx, _CONTENT, f"/nodes/{target.node}/storage/{quote(storage)}"
                                  "/content", {"vmid": target.vmid})  # fmt: skip
        except ProxmoxError:
            items = []
        size = next((item.size for item in items if item.volid == volid), 0)
        changes.append(Change(field=f"{key} {volid}", before=f"{gib(size)} GiB", after=None))
    return changes


def _is_disk(kind: str, key: str) -> bool:
    head = key.rstrip("0123456789")
    disks = ("ide", "sata", "scsi", "virtio", "unused", "efidisk", "tpmstate")
    return head in disks if kind == "qemu" else head in ("rootfs", "mp", "unused")


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    field = planners.ref_field(args)
    target = planners.guest_target(row)
    if row.get("status") != "stopped":
        raise ToolFailure(
            "guest_running",
            f"{target.type} {target.vmid} ({target.name or '?'}) is {row.get('status')}",
            field=field,
            hint="Shut it down (proxmox_guest_power action shutdown) or stop it first.",
        )
    lost = await _disks_lost(ctx, target)
    snapshots = await read_as(ctx, _SNAPSHOTS, f"{target.path}/snapshot")
    names = [s.name for s in snapshots if s.name != "current"]
    if names:
        lost.append(Change(field="snapshots", before=names, after=None))
    params: dict[str, Any] = {"destroy-unreferenced-disks": 1}
    if args.purge:
        params["purge"] = 1
    call = ApiCall.to("DELETE", f"/nodes/{{node}}/{target.type}/{{vmid}}", params=params,
                      task=True, node=target.node, vmid=target.vmid)  # fmt: skip
    return Plan(
        summary=f"delete {target.type} {target.vmid} ({target.name or '?'}) on {target.node}",
        changes=[Change(field="guest", before=target.vmid, after=None), *lost],
        target=target,
        calls=[call],
        warnings=[
            undo.irreversible(
                "the disks and snapshots listed are destroyed (backups on backup storages are kept)"
            )
        ],
    )


guest_delete = action(
    "proxmox_guest_delete",
    title="Delete a VM or container",
    description="""Delete a stopped VM or container for good: its disks and snapshots are
    destroyed (the plan lists them), backups kept. Shut a running guest down first. purge
    (default) drops it from pools, HA and jobs.""",
    tier=Tier.DESTRUCTIVE,
    toolset="lifecycle",
    api=("DELETE /nodes/{node}/{type}/{vmid}",),
    input=DeleteArgs,
    output=TaskOutcome,
    planner=_plan_delete,
    examples=[{"vmid": 101}],
    rejects=[({"vmid": 100}, "guest_running"), ({"name": "nope"}, "not_found")],
)


TOOLS = (vm_create, ct_create, guest_delete)
