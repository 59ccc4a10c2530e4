"""Disks as volumes on storages: allocation, sizes, free space, resize, move and unlink.

A guest's disk keys (`scsi0`, `rootfs`, `mp0`, `unused0`...) name volumes (`volid`s) on
storages; this module keeps those volumes, so a storage's `used`/`avail` and its
`content` list follow every allocation, resize, move and removal. Names follow
pve-storage (`PVE/Storage/Plugin.pm` `get_next_vm_diskname`): a block storage (LVM,
LVM-thin, ZFS, RBD) names a volume `vm-<vmid>-disk-<n>` (volid `local-lvm:vm-100-disk-0`),
a directory storage `<vmid>/vm-<vmid>-disk-<n>.<fmt>` (volid
`local:100/vm-100-disk-0.qcow2`), with the first free `n` for that guest on that storage.

Where the simulator is simpler than PVE (said here once): a volume's whole size counts as
used, as on thick LVM (`LVMPlugin.pm` `alloc_lvm_image`: "not enough free space"); a thin
pool or a sparse file on a real node overcommits instead and fails only when it really
fills. The storage's `usage` from the seed is what lies there besides the guests' volumes.

The endpoints: GET `/nodes/{node}/storage/{storage}/status` and `.../content`, PUT
`.../qemu|lxc/{vmid}/resize`, POST `.../qemu/{vmid}/move_disk` and
`.../lxc/{vmid}/move_volume`, PUT `.../qemu/{vmid}/unlink`. A new disk given as
`storage:size` in a config update and a disk deleted from the config (it becomes
`unusedN`, or is freed with `force`) are handled by `guestconfig` through `attach_new`
and `detach`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MODIFIED, ApiError, failure, param_error
from .locks import check_lock, locked_message, remove_lock, set_lock
from .model import ConfigValue, GiB, Guest, GuestKind, Storage
from .router import Context, Handler, Params, Result, Route, api, integer, text
from .tasks import Plan, fail

RESIZE_SECONDS = 1.0
"""How long a `resize` worker runs, before the time scale."""
MOVE_SECONDS_PER_GIB = 0.25
"""How long a move copies one GiB, before the time scale."""

BLOCK_TYPES = frozenset({"lvm", "lvmthin", "zfspool", "rbd", "iscsidirect"})
"""Storage types whose volumes are block devices named `vm-<vmid>-disk-<n>`."""

_QEMU_DISK_RE = re.compile(r"(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0")
_LXC_DISK_RE = re.compile(r"rootfs|mp\d+")
_UNUSED_RE = re.compile(r"unused(\d+)")
_NEW_VOLUME_RE = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)", re.IGNORECASE)
_SIZE_RE = re.compile(r"(\+)?(\d+(?:\.\d+)?)([KMGT])?")
_UNITS = {"K": 1024, "M": 1024**2, "G": GiB, "T": 1024 * GiB, None: 1}


@dataclass
class Volume:
    """One guest volume on a storage (on one node's part of it when not shared)."""

    storage: str
    scope: str
    """The node that holds it, or "" on a shared storage."""
    volname: str
    vmid: int
    size: int
    format: str
    content: str
    """`images` for a VM's disk, `rootdir` for a container's volume."""
    ctime: int
    base: str = ""
    """For a linked clone's volume, the base volume's volid it is a copy-on-write child
    of (`simulator/clone.py`): it takes no space of its own until written."""

    @property
    def volid(self) -> str:
        """PVE's volume id, `storage:volname`."""
        return f"{self.storage}:{self.volname}"

    def item(self) -> dict[str, Any]:
        """The volume as an item of GET .../content (`PVE::Storage::volume_list`); a
        backup (`simulator/backups.py`) adds its own fields."""
        return {
            "volid": self.volid,
            "content": self.content,
            "format": self.format,
            "size": self.size,
            "used": 0 if self.base else self.size,
            **({"vmid": self.vmid} if self.vmid else {}),
            "ctime": self.ctime,
        }


def is_disk_key(kind: GuestKind, key: str) -> bool:
    """Whether a config key holds a volume (`scsi0`, `rootfs`, `mp1`, `unused0`...)."""
    disk = _QEMU_DISK_RE if kind == "qemu" else _LXC_DISK_RE
    return disk.fullmatch(key) is not None or _UNUSED_RE.fullmatch(key) is not None


def drive_file(value: ConfigValue) -> str:
    """The volume part of a drive or mount point value (`local-lvm:vm-100-disk-0,...`)."""
    for part in str(value).split(","):
        if "=" not in part:
            return part
        name, _, rest = part.partition("=")
        if name in ("file", "volume"):
            return rest
    return ""


def with_size(value: ConfigValue, size: int) -> str:
    """A drive value with its `size=` option set to `size` bytes, written as PVE prints
    it (`PVE::JSONSchema::format_size`: the largest whole unit)."""
    parts = [p for p in str(value).split(",") if not p.startswith("size=")]
    return ",".join([*parts, f"size={format_size(size)}"])


def format_size(size: int) -> str:
    """PVE's `format_size`: `32G`, `4M`, `1536M`, or bytes when nothing divides."""
    for unit, factor in (("T", 1024 * GiB), ("G", GiB), ("M", 1024**2), ("K", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def is_cdrom(value: ConfigValue) -> bool:
    """PVE's `drive_is_cdrom`: a `media=cdrom` drive (`none`, an ISO, cloud-init)."""
    return "media=cdrom" in str(value).split(",")


class Volumes:
    """Every guest volume of the cluster, by storage and node."""

    def __init__(self, storages: Sequence[Storage]) -> None:
        self.storages = {storage.name: storage for storage in storages}
        self._items: dict[tuple[str, str], Volume] = {}
        self.faults: dict[tuple[str, str], str] = {}
        """`(storage, "alloc" | "free" | "snapshot")` -> the error that operation fails with
        there, as a broken storage's plugin fails (LVM's `lvremove ... Logical volume ... in
        use`, an NFS server that stopped answering, a full thin pool). Empty unless a test
        sets it: the simulator's way to reproduce a worker that fails after allocating, a
        cleanup that cannot free (docs/architecture.md, "Create and delete") and a snapshot
        task that fails (`snapshots.py`); the plugin's own checks (content, free space,
        whether it can snapshot) come first."""

    def _scope(self, storage: Storage, node: str) -> str:
        return "" if storage.shared else node

    def storage_on(self, name: str, node: str) -> Storage:
        """The storage as `node` sees it, or PVE's error for an unknown one
        (`PVE::Storage::storage_config`)."""
        storage = self.storages.get(name)
        if storage is None or node not in storage.usage:
            raise failure(f"storage '{name}' does not exist")
        return storage

    def on(self, storage: Storage, node: str) -> list[Volume]:
        """The volumes on `storage` as `node` sees it, by volid."""
        scope = self._scope(storage, node)
        found = [v for (s, _), v in self._items.items() if s == scope and v.storage == storage.name]
        return sorted(found, key=lambda v: v.volid)

    def usage(self, storage: Storage, node: str) -> tuple[int, int]:
        """(total, used) bytes: the seeded other usage plus every volume's size."""
        total, other = storage.usage[node]
        return total, other + sum(v.size for v in self.on(storage, node) if not v.base)

    def find(self, node: str, volid: str) -> Volume | None:
        """The volume `volid` as `node` sees it."""
        storage = self.storages.get(volid.split(":", 1)[0])
        if storage is None or node not in storage.usage:
            return None
        return self._items.get((self._scope(storage, node), volid))

    def add(self, node: str, volume: Volume) -> Volume:
        """Record an existing volume (the seed's, or one just allocated)."""
        storage = self.storages[volume.storage]
        volume.scope = self._scope(storage, node)
        self._items[(volume.scope, volume.volid)] = volume
        return volume

    def allocate(
        self, node: str, name: str, vmid: int, size: int, *, kind: GuestKind, at: float
    ) -> Volume:
        """A new volume of `size` bytes for `vmid` (`PVE::Storage::vdisk_alloc`), named
        as the storage's plugin names it, or PVE's error when it cannot be."""
        storage = self.storage_on(name, node)
        wanted = "images" if kind == "qemu" else "rootdir"
        if wanted not in storage.content:
            # qemu-server Drive.pm / pve-container: the storage must allow the content.
            what = "vm images" if kind == "qemu" else "container directories"
            raise param_error({"storage": f"storage '{name}' does not support {what}"})
        block = storage.type in BLOCK_TYPES
        fmt = "raw" if block or kind == "lxc" else "qcow2"
        number = self._free_number(storage, node, vmid)
        volname = f"vm-{vmid}-disk-{number}" if block else f"{vmid}/vm-{vmid}-disk-{number}.{fmt}"
        total, used = self.usage(storage, node)
        if size > total - used:
            # LVMPlugin.pm alloc_lvm_image: die "not enough free space ($free < $size)\n"
            raise failure(f"not enough free space ({total - used} < {size})")
        if (fault := self.faults.get((name, "alloc"))) is not None:
            raise failure(fault)
        volume = Volume(name, "", volname, vmid, size, fmt, wanted, int(at))
        return self.add(node, volume)

    def _free_number(self, storage: Storage, node: str, vmid: int) -> int:
        """`find_free_diskname`: the first `n` no `vm-<vmid>-disk-<n>` there uses."""
        taken = {
            int(found.group(1))
            for v in self.on(storage, node)
            if (found := re.search(rf"vm-{vmid}-disk-(\d+)", v.volname))
        }
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def link(self, node: str, base: Volume, vmid: int, *, at: float) -> Volume:
        """A linked clone of the base volume `base` for `vmid`, named as the storage's
        `clone_image` names it: ZFS `base-9000-disk-0/vm-120-disk-0` (ZFSPoolPlugin.pm),
        a directory `9000/base-9000-disk-0.qcow2/120/vm-120-disk-0.qcow2` (Plugin.pm, a
        qcow2 backed by the base), LVM-thin a plain `vm-120-disk-0` thin snapshot."""
        storage = self.storages[base.storage]
        number = self._free_number(storage, node, vmid)
        if storage.type == "zfspool":
            volname = f"{base.volname}/vm-{vmid}-disk-{number}"
        elif storage.type in BLOCK_TYPES:
            volname = f"vm-{vmid}-disk-{number}"
        else:
            volname = f"{base.volname}/{vmid}/vm-{vmid}-disk-{number}.qcow2"
        fmt = "qcow2" if storage.type not in BLOCK_TYPES else base.format
        volume = Volume(base.storage, "", volname, vmid, base.size, fmt, base.content, int(at))
        volume.base = base.volid
        return self.add(node, volume)

    def linked_to(self, volid: str) -> list[Volume]:
        """The linked clones' volumes whose base is `volid`, on any node."""
        return [v for v in self._items.values() if v.base == volid]

    def free(self, node: str, volid: str) -> str | None:
        """Remove the volume (`vdisk_free`); an unknown volid is left alone. When its
        storage cannot free it (`faults`), the volume stays and the error is returned: PVE's
        workers wrap each cleanup `vdisk_free` in `eval { ... }; warn $@` and go on."""
        volume = self.find(node, volid)
        if volume is None:
            return None
        if (fault := self.faults.get((volume.storage, "free"))) is not None:
            return fault
        del self._items[(volume.scope, volume.volid)]
        return None

    def content(self, storage: Storage, node: str, vmid: int | None) -> list[dict[str, Any]]:
        """GET .../content: PVE's `volume_list` items for the guests' volumes, their
        backups and the media (ISOs, container templates), which belong to no guest
        (`vmid` 0, not shown)."""
        return [v.item() for v in self.on(storage, node) if vmid is None or v.vmid == vmid]


def seed_volumes(volumes: Volumes, guests: Iterable[Guest], at: float) -> None:
    """Record the seeded guests' disks as volumes with the sizes their configs say."""
    for guest in guests:
        for key, value in guest.config.items():
            if not is_disk_key(guest.kind, key) or is_cdrom(value):
                continue
            volid = drive_file(value)
            storage, _, volname = volid.partition(":")
            if storage not in volumes.storages or not volname:
                continue
            size = size_option(value)
            fmt = "raw" if volumes.storages[storage].type in BLOCK_TYPES else "qcow2"
            content = "images" if guest.kind == "qemu" else "rootdir"
            volume = Volume(storage, "", volname, guest.vmid, size, fmt, content, int(at))
            volumes.add(guest.node, volume)


def seed_media(volumes: Volumes, media: Iterable[tuple[str, str, int]], at: float) -> None:
    """Record the seeded ISO images and container templates, (volid, content type, size),
    on every node that has their storage (a `dir` storage is local to each node)."""
    for volid, content, size in media:
        storage, _, volname = volid.partition(":")
        # tar.zst: tzst; a snippet's format is `snippet` (Plugin.pm `get_subdir_files`)
        fmt = {"iso": "iso", "snippets": "snippet"}.get(content, "t" + volname.rsplit(".", 1)[-1])
        for node in volumes.storages[storage].usage:
            volumes.add(node, Volume(storage, "", volname, 0, size, fmt, content, int(at)))


def size_option(value: ConfigValue) -> int:
    """The bytes a drive value's `size=` option says (`size=32G`), 0 without one."""
    for part in str(value).split(","):
        if part.startswith("size="):
            found = _SIZE_RE.fullmatch(part[5:])
            if found:
                return int(float(found.group(2)) * _UNITS[found.group(3)])
    return 0


# --- what a config update does to volumes (called by guestconfig) ----------------------


def attach_new(ctx: Context, guest: Guest, values: dict[str, ConfigValue]) -> list[Volume]:
    """Allocate the volumes a config update asks for as `storage:size` (GiB), as
    qemu-server's `create_disks` and pve-container's `create_disks` do before writing
    the config, and replace each value with the new volid and its size. When one fails,
    the ones made before it are freed again and PVE's error is raised."""
    made: list[Volume] = []
    try:
        for key, value in sorted(values.items()):
            if not is_disk_key(guest.kind, key) or is_cdrom(value):
                continue
            found = _NEW_VOLUME_RE.fullmatch(drive_file(value))
            if found is None:
                continue
            size = int(float(found.group(2)) * GiB)
            volume = ctx.state.volumes.allocate(
                guest.node, found.group(1), guest.vmid, size, kind=guest.kind, at=ctx.now
            )
            made.append(volume)
            rest = str(value).split(",")[1:]
            values[key] = with_size(",".join([volume.volid, *rest]), size)
    except ApiError:
        for volume in made:
            ctx.state.volumes.free(guest.node, volume.volid)
        raise
    return made


def detach(volumes: Volumes, guest: Guest, key: str, value: ConfigValue, *, force: bool) -> None:
    """A disk key removed from the config: with `force` (or an `unusedN` key) its volume
    is freed (`try_deallocate_drive`), else it is kept as the next free `unusedN`
    (`vmconfig_register_unused_drive`, `add_unused_volume`). CD-ROMs own no volume."""
    if is_cdrom(value):
        return
    volid = drive_file(value)
    if force or _UNUSED_RE.fullmatch(key):
        if not referenced(guest, volid):
            volumes.free(guest.node, volid)
        return
    in_config = any(
        is_disk_key(guest.kind, k) and drive_file(v) == volid for k, v in guest.config.items()
    )
    if volumes.find(guest.node, volid) is not None and not in_config:
        guest.config[next_unused(guest)] = volid


def detach_removed(
    volumes: Volumes,
    guest: Guest,
    before: Mapping[str, ConfigValue],
    forced: Mapping[str, bool],
    *,
    force: bool,
) -> None:
    """`detach` every disk of `before` that an update removed or replaced by another
    volume; `forced` is each pending deletion's own `force` flag."""
    for key, value in before.items():
        now = guest.config.get(key)
        if is_disk_key(guest.kind, key) and (now is None or drive_file(now) != drive_file(value)):
            detach(volumes, guest, key, value, force=forced.get(key, force))


def next_unused(guest: Guest) -> str:
    """The first free `unusedN` key (`AbstractConfig.pm` `add_unused_volume`)."""
    taken = set(guest.config) | set(guest.pending)
    return next(f"unused{i}" for i in range(256) if f"unused{i}" not in taken)


def referenced(guest: Guest, volid: str) -> bool:
    """Whether a key of the config or of a snapshot still uses the volume (PVE's
    `is_volume_in_use`): such a volume is not freed."""
    configs: list[Mapping[str, ConfigValue]] = [guest.config, *(s.config for s in guest.snapshots)]
    return any(
        is_disk_key(guest.kind, key) and drive_file(value) == volid
        for config in configs
        for key, value in config.items()
    )


# --- handlers ------------------------------------------------------------------------


def storage_status(storage: Storage, usage: tuple[int, int]) -> dict[str, object]:
    """A storage's status on a node as GET .../storage/{storage}/status answers it (and
    each item of GET /nodes/{node}/storage starts with); `usage` is (total, used) bytes."""
    total, used = usage
    return {
        "type": storage.type,
        "content": ",".join(storage.content),
        "active": 1,
        "enabled": 1,
        "shared": 1 if storage.shared else 0,
        "total": total,
        "used": used,
        "avail": total - used,
    }


def _storage_status(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    storage = ctx.state.volumes.storage_on(text(params, "storage"), node)
    return Result(storage_status(storage, ctx.state.volumes.usage(storage, node)))


def _storage_content(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    storage = ctx.state.volumes.storage_on(text(params, "storage"), node)
    content = params.get("content")
    vmid = integer(params, "vmid") if "vmid" in params else None
    items = ctx.state.volumes.content(storage, node, vmid)
    return Result([item for item in items if content is None or item["content"] == content])


def _target(ctx: Context, params: Params, kind: GuestKind) -> Guest:
    ctx.state.node(text(params, "node"))
    return ctx.state.require_guest(text(params, "node"), kind, integer(params, "vmid"))


def _digest_check(guest: Guest, digest: object) -> None:
    if digest and digest != guest.digest():
        if guest.kind == "qemu":
            raise failure("checksum mismatch (file change by other user?)")
        # pve-common PVE/Tools.pm assert_if_modified
        raise failure(MODIFIED)


def _new_size(size_text: str, current: int) -> int:
    """The requested size in bytes: `+N[KMGT]` grows by N, `N[KMGT]` is absolute."""
    found = _SIZE_RE.fullmatch(size_text)
    if found is None:  # the schema's pattern has checked it
        raise failure("internal error")
    grow, number, unit = found.groups()
    size = float(number) * _UNITS[unit]
    return int(size + current if grow else size)


def _resize_checks(ctx: Context, guest: Guest, params: Params) -> tuple[str, Volume, int]:
    """qemu-server `resize_vm` and pve-container `resize_vm` `$load_and_check`, in order."""
    _digest_check(guest, params.get("digest"))
    if guest.kind == "lxc" or not params.get("skiplock"):
        check_lock(guest)
    disk = text(params, "disk")
    value = guest.config.get(disk)
    if value is None:
        raise failure(f"disk '{disk}' does not exist")
    if guest.kind == "qemu" and is_cdrom(value):
        raise failure("you can't resize a cdrom")
    volume = ctx.state.volumes.find(guest.node, drive_file(value))
    if volume is None:
        raise failure(f"disk '{disk}' has no associated volume")
    size = _new_size(text(params, "size"), volume.size)
    if size < volume.size:
        # Qemu.pm: "shrinking disks is not supported"; LXC.pm: "unable to shrink disk size"
        raise failure(
            "shrinking disks is not supported"
            if guest.kind == "qemu"
            else "unable to shrink disk size"
        )
    if size == volume.size and guest.kind == "lxc":
        raise failure("disk is already at specified size")
    storage = ctx.state.volumes.storages[volume.storage]
    total, used = ctx.state.volumes.usage(storage, guest.node)
    if size - volume.size > total - used:
        raise failure(f"not enough free space ({total - used} < {size - volume.size})")
    return disk, volume, size


def _resize(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        guest = _target(ctx, params, kind)
        if kind == "lxc":
            _resize_checks(ctx, guest, params)  # "early checks before forking+locking"

        def job(_begin: float) -> Plan:
            if ctx.state.guest_on(guest.node, kind, guest.vmid) is not guest:
                return fail(f"Configuration file of {guest.vmid} does not exist")
            try:
                disk, volume, size = _resize_checks(ctx, guest, params)
            except ApiError as err:
                return fail(err.reason)
            if size == volume.size:
                return Plan(RESIZE_SECONDS)  # qemu-server: `return if $size == $newsize`

            def apply(_at: float) -> None:
                volume.size = size
                guest.config[disk] = with_size(guest.config[disk], size)

            return Plan(RESIZE_SECONDS, apply=apply)

        task = ctx.state.start_task(guest.node, "resize", guest.vmid, ctx.user, job)
        return Result(task.upid)

    return handler


def _move_checks(ctx: Context, guest: Guest, params: Params, disk: str) -> tuple[Volume, Storage]:
    """qemu-server `move_vm_disk` `$load_and_check_move` / pve-container
    `move_to_storage_checks`, in PVE's order and wording."""
    if locked := locked_message(guest):
        raise failure(locked)
    if guest.kind == "lxc" and guest.status == "running":
        raise failure("cannot move volumes of a running container")
    if guest.kind == "qemu":
        _digest_check(guest, params.get("digest"))
    value = guest.config.get(disk)
    if value is None:
        if guest.kind == "lxc":
            raise failure(f"volume '{disk}' for container '{guest.vmid}' does not exist")
        raise failure(f"disk '{disk}' does not exist")
    if guest.kind == "lxc" and _UNUSED_RE.fullmatch(disk):
        raise failure(
            f"cannot move volume '{disk}', only configured volumes can be moved to another storage"
        )
    if guest.kind == "qemu" and is_cdrom(value):
        raise failure("you can't move a cdrom")
    volume = ctx.state.volumes.find(guest.node, drive_file(value))
    if volume is None:
        raise failure(f"disk '{disk}' has no associated volume")
    target = ctx.state.volumes.storage_on(text(params, "storage"), guest.node)
    if target.name == volume.storage:
        raise failure("you can't move to the same storage with same format")
    wanted = "images" if guest.kind == "qemu" else "rootdir"
    if wanted not in target.content:
        what = "vm images" if guest.kind == "qemu" else "container directories"
        raise param_error({"storage": f"storage '{target.name}' does not support {what}"})
    in_snapshots = any(
        drive_file(value) == volume.volid for s in guest.snapshots for value in s.config.values()
    )
    if params.get("delete") and in_snapshots:
        what = "disk" if guest.kind == "qemu" else "volume"
        raise failure(f"you can't move a {what} with snapshots and delete the source")
    if guest.kind == "lxc":
        _digest_check(guest, params.get("digest"))
    return volume, target


def _move(kind: GuestKind) -> Handler:
    key = "disk" if kind == "qemu" else "volume"
    type_ = "qmmove" if kind == "qemu" else "move_volume"

    def handler(ctx: Context, params: Params) -> Result:
        if "target-vmid" in params:
            if "storage" in params:
                msg = "either set 'storage' or 'target-vmid', but not both"
                raise param_error({"target-vmid": msg, "storage": msg})
            # Reassigning a disk to another guest is not modelled (said, not faked).
            raise failure("reassigning a disk to another guest is not simulated")
        if "storage" not in params:
            raise param_error({"target-vmid": "either set storage or target-vmid"})
        guest = _target(ctx, params, kind)
        disk = text(params, key)
        _move_checks(ctx, guest, params, disk)  # early checks before forking/locking
        if kind == "lxc":
            set_lock(guest, "disk")  # pve-container sets `lock: disk` before the worker

        def job(_begin: float) -> Plan:
            if kind == "lxc":
                remove_lock(guest)  # the checks run again; the worker holds it again below
            try:
                volume, target = _move_checks(ctx, guest, params, disk)
                new = ctx.state.volumes.allocate(
                    guest.node, target.name, guest.vmid, volume.size, kind=kind, at=ctx.now
                )
            except ApiError as err:
                return fail(f"storage migration failed: {err.reason}")
            if kind == "lxc":
                set_lock(guest, "disk")
            delete = bool(params.get("delete"))
            old = volume.volid
            lines = [(0.0, f"copying volume '{old}' from current storage "
                           f"'{volume.storage}' to target storage '{target.name}'")]  # fmt: skip
            unused = next_unused(guest) if not delete else None
            if unused:
                lines.append((0.99, f"adding source volume '{old}' as '{unused}' to config"))
            else:
                lines.append((0.99, f"removing source volume '{old}' after successful copy"))

            def apply(_at: float) -> None:
                rest = str(guest.config[disk]).split(",")[1:]
                guest.config[disk] = ",".join([new.volid, *rest])
                if unused:
                    guest.config[unused] = old
                else:
                    ctx.state.volumes.free(guest.node, old)
                if kind == "lxc":
                    remove_lock(guest)

            seconds = max(1.0, volume.size / GiB * MOVE_SECONDS_PER_GIB)
            return Plan(seconds, lines=tuple(lines), apply=apply)

        try:
            task = ctx.state.start_task(guest.node, type_, guest.vmid, ctx.user, job)
        except ApiError:
            if kind == "lxc":
                remove_lock(guest)
            raise
        return Result(task.upid)

    return handler


def _unlink(ctx: Context, params: Params) -> Result:
    """PUT .../qemu/{vmid}/unlink: `update_vm` with `delete` = idlist (qemu-server)."""
    from .guestconfig import put_update  # noqa: PLC0415 - guestconfig imports this module

    values: dict[str, Any] = {"delete": params["idlist"]}
    if params.get("force"):
        values["force"] = 1
    put_update(ctx, "qemu", {"node": params["node"], "vmid": params["vmid"], **values})
    return Result(None)


ROUTES: tuple[Route, ...] = (
    api("GET", "/nodes/{node}/storage/{storage}/status", _storage_status),
    api("GET", "/nodes/{node}/storage/{storage}/content", _storage_content),
    # qemu-server's resize_vm: skiplock "Only root may use this option.", pve-container's
    # has no skiplock.
    api("PUT", "/nodes/{node}/qemu/{vmid}/resize", _resize("qemu"), root_only=("skiplock",)),
    api("PUT", "/nodes/{node}/lxc/{vmid}/resize", _resize("lxc")),
    api("POST", "/nodes/{node}/qemu/{vmid}/move_disk", _move("qemu")),
    api("POST", "/nodes/{node}/lxc/{vmid}/move_volume", _move("lxc")),
    api("PUT", "/nodes/{node}/qemu/{vmid}/unlink", _unlink),
)
