"""Cloning VMs and containers: full copies and linked clones of a template's base volumes.

The checks and their wording follow qemu-server `src/PVE/API2/Qemu.pm` `clone_vm` (its
`$load_and_check`, run before the fork and again in the `qmclone` worker) and
pve-container `src/PVE/API2/LXC.pm` `clone_vm` (the `vzclone` worker). Which volume can be
cloned linked is pve-storage's `volume_has_feature(..., 'clone', ...)`: a base volume
(`base-9000-disk-0`, made by converting to a template) on LVM-thin (also a snapshot), ZFS,
or a directory storage (a qcow2 backed by the base, VMs only: a container's volume must
stay raw); never on thick LVM. A full clone copies each disk to a new volume (on
`storage`, else the source disk's storage) through `volumes.Volumes.allocate`, so a full
storage fails the task (`clone failed: not enough free space ...`) and the volumes made
so far are freed again, as `clonefn`'s error path does.

Locks, as PVE takes them: the source keeps a config flock for the task (both), a
container's source also gets `lock: disk` until the end; the new guest exists at once
with `lock: clone` (QEMU's temporary config) or `lock: create` (LXC), so its vmid is
taken and a second clone to it fails. A linked clone pins its base: `base_in_use` is what
a delete of the base (or of the template) asks first. Not modelled: bandwidth limits,
`format`, firewall and IPAM copies, cloning a running VM's live disks (mirror jobs).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field, replace

from .errors import ApiError, failure, param_error
from .locks import check_lock, remove_lock, set_lock
from .model import ConfigValue, GiB, Guest, GuestKind
from .router import Context, Handler, Params, Result, Route, for_kinds, integer, text
from .state import ClusterState
from .tasks import Plan, fail, guest_lock
from .volumes import BLOCK_TYPES, MOVE_SECONDS_PER_GIB, Volume, drive_file, is_cdrom, is_disk_key

LINKED_SECONDS = 1.0
"""How long a linked clone takes, before the time scale (a full one copies its GiB)."""
_SKIPPED = re.compile(
    r"unused\d+|lock|template|parent|snaptime|vmstate|snapstate|runningcpu|runningmachine"
    r"|running-nets-host-mtu"
)
"""Keys a clone does not copy (`clone_vm`: snapshot info, unused volumes; `template` is
deleted from the new config, the lock is the task's)."""
_MAC_RE = re.compile(r"(?<=[=,])([0-9A-F]{2}:){5}[0-9A-F]{2}", re.IGNORECASE)


def base_in_use(state: ClusterState, volid: str) -> list[int]:
    """The vmids of the linked clones whose volumes are children of the base volume
    `volid`: pve-storage `vdisk_free` refuses to free it then (`base volume '<volname>'
    is still in use by linked clones`, `volume_is_base_and_used`). LVM-thin is the
    exception its comment names ("LVM-thin allows deletion of still referenced base
    volumes!"): a thin snapshot does not need its origin, so none are listed there."""
    storage = state.volumes.storages.get(volid.split(":", 1)[0])
    if storage is None or storage.type == "lvmthin":
        return []
    return sorted({v.vmid for v in state.volumes.linked_to(volid)})


def _is_base(volname: str) -> bool:
    """`parse_volname`'s `isBase`: the volume's own name (the last path part) is a base."""
    return volname.rsplit("/", 1)[-1].startswith("base-")


def linkable(storage_type: str, volname: str, kind: GuestKind, snapname: str | None) -> bool:
    """`volume_has_feature($cfg, 'clone', ...)` for one volume (LvmThinPlugin.pm
    `clone => { base => 1, snap => 1 }`, ZFSPoolPlugin.pm `{ base => 1 }`, Plugin.pm
    `{ base => { qcow2, raw, vmdk } }` with a qcow2 result, LVMPlugin.pm none)."""
    if storage_type == "lvmthin":
        return snapname is not None or _is_base(volname)
    if storage_type == "zfspool":
        return snapname is None and _is_base(volname)
    if storage_type in BLOCK_TYPES:
        return False
    return kind == "qemu" and snapname is None and _is_base(volname)


@dataclass
class _Request:
    """What the API handler accepted, for the worker."""

    kind: GuestKind
    node: str
    vmid: int
    newid: int
    full: bool
    target: str | None
    storage: str | None
    snapname: str | None
    pool: str | None
    name: str | None
    description: str | None
    disks: list[tuple[str, str]] = field(default_factory=list)
    """(config key, volid) of the volumes to copy or link, in key order."""


def _label(kind: GuestKind) -> str:
    return "VM" if kind == "qemu" else "CT"


def _check_newid(state: ClusterState, kind: GuestKind, newid: int) -> None:
    existing = state.guests.get(newid)
    if existing is None:
        return
    if kind == "qemu":
        # Qemu.pm: die "unable to create VM $newid: config file already exists\n"
        raise failure(f"unable to create VM {newid}: config file already exists")
    # pve-cluster PVE/Cluster.pm check_vmid_unused, called by create_and_lock_config.
    raise failure(f"{_label(existing.kind)} {newid} already exists on node '{existing.node}'")


def _check(ctx: Context, source: Guest, request: _Request) -> None:
    """`$load_and_check` (QEMU) / the checks before and under the locks (LXC), in order."""
    state, kind = ctx.state, request.kind
    if request.pool is not None and request.pool not in state.pools:
        raise failure(f"pool '{request.pool}' does not exist")  # RPCEnvironment check_pool_exist
    if request.target is not None and request.target not in state.nodes:
        raise failure(f"no such cluster node '{request.target}'")
    if request.storage is not None:
        storage = state.volumes.storage_on(request.storage, request.node)
        if kind == "qemu" and "images" not in storage.content:
            raise param_error({"storage": f"storage '{storage.name}' does not support vm images"})
        if request.target is not None:
            state.volumes.storage_on(request.storage, request.target)
            if not storage.shared:
                raise failure(f"can't clone to non-shared storage '{storage.name}'")
    check_lock(source)
    if request.snapname and not any(s.name == request.snapname for s in source.snapshots):
        raise failure(f"snapshot '{request.snapname}' does not exist")
    if request.storage is not None and not request.full:
        raise failure("parameter 'storage' not allowed for linked clones")
    _check_volumes(ctx.state, source, request)
    _check_newid(state, kind, request.newid)


def _check_volumes(state: ClusterState, source: Guest, request: _Request) -> None:
    """The per-volume pass of `$load_and_check`: each disk can be copied or linked, and
    a clone to another node needs every volume on shared storage. Fills `request.disks`."""
    kind = request.kind
    running = source.status == "running"
    shared = True
    request.disks = []
    for key, value in sorted(_source_config(source, request.snapname).items()):
        if not is_disk_key(kind, key) or key.startswith("unused"):
            continue
        volid = drive_file(value)
        storage_name, _, volname = volid.partition(":")
        stored = state.volumes.storages.get(storage_name)
        if stored is None or not volname:
            continue  # `none`, `cdrom`, a path
        shared = shared and stored.shared
        if is_cdrom(value):
            continue
        if request.full:
            if kind == "lxc" and running and request.snapname is None:
                raise failure("Full clone of a running container is only possible from a snapshot")
        elif not linkable(stored.type, volname, kind, request.snapname):
            if kind == "lxc":
                raise failure(f"Linked clone feature for '{volid}' is not available")
            snap = " a snapshot of" if request.snapname else ""
            raise failure(f"Linked clone feature is not supported for{snap} '{volid}' ({key})")
        request.disks.append((key, volid))
    if request.target is not None and not shared:
        raise failure(
            f"can't clone {_label(kind)} to node '{request.target}' "
            f"({_label(kind)} uses local storage)"
        )


def _source_config(source: Guest, snapname: str | None) -> dict[str, ConfigValue]:
    if snapname is None:
        return source.config
    return next(s.config for s in source.snapshots if s.name == snapname)


def _mac(newid: int, key: str) -> str:
    """A fresh MAC for the clone's NIC (`random_ether_addr`), stable per vmid and key so
    the simulator stays reproducible; BC:24:11 is Proxmox's prefix."""
    digest = hashlib.sha1(f"{newid}/{key}".encode(), usedforsecurity=False).digest()
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in digest[:3])


def _new_config(source: Guest, request: _Request) -> dict[str, ConfigValue]:
    """The clone's config: the source's (or the snapshot's) minus what `clone_vm` drops,
    new MACs, a new SMBIOS UUID and vmgenid (QEMU), the name or hostname asked for."""
    config: dict[str, ConfigValue] = {}
    for key, value in _source_config(source, request.snapname).items():
        if _SKIPPED.fullmatch(key):
            continue
        fresh = _MAC_RE.sub(_mac(request.newid, key), str(value), count=1)
        config[key] = fresh if re.fullmatch(r"net\d+", key) else value
    if request.kind == "qemu":
        seed = f"{request.newid}"
        config["smbios1"] = f"uuid={uuid.uuid5(uuid.NAMESPACE_OID, 'smbios1/' + seed)}"
        if "vmgenid" in config:
            config["vmgenid"] = str(uuid.uuid5(uuid.NAMESPACE_OID, "vmgenid/" + seed))
        old_name = source.config.get("name", source.vmid)
        config["name"] = request.name or f"Copy-of-VM-{old_name}"
    elif request.name:
        config["hostname"] = request.name
    if request.description:
        config["description"] = request.description
    return config


def _why(err: ApiError) -> str:
    """An error's text for a task log: the parameter message when there is one."""
    return "; ".join(err.errors.values()) if err.errors else err.reason


class _Worker:
    """The `qmclone` / `vzclone` worker: copies or links the disks, then writes the
    clone's config on its node; on failure it frees what it made and drops the clone."""

    def __init__(self, state: ClusterState, request: _Request) -> None:
        self.state, self.request = state, request

    def undo(self, source: Guest | None, made: list[Volume], node: str) -> None:
        for volume in made:
            self.state.volumes.free(node, volume.volid)
        self.state.guests.pop(self.request.newid, None)
        if source is not None and self.request.kind == "lxc":
            remove_lock(source)

    def __call__(self, begin: float) -> Plan:
        request, state = self.request, self.state
        source = state.guest_on(request.node, request.kind, request.vmid)
        if source is None:
            self.undo(None, [], request.node)
            return fail(f"clone failed: {_label(request.kind)} {request.vmid} does not exist")
        label = "VM" if request.kind == "qemu" else "container"
        lines = [(0.0, f"creating a clone of {label} {request.vmid} with ID {request.newid}")]
        made: list[Volume] = []
        volids: dict[str, str] = {}
        try:
            for key, volid in request.disks:
                stored = state.volumes.find(request.node, volid)
                if stored is None:
                    continue
                how = "full" if request.full else "linked"
                what = "drive" if request.kind == "qemu" else "mount point"
                lines.append((0.05, f"create {how} clone of {what} {key} ({volid})"))
                if request.full:
                    new = state.volumes.allocate(
                        request.node, request.storage or stored.storage, request.newid,
                        stored.size, kind=request.kind, at=begin,
                    )  # fmt: skip
                else:
                    new = state.volumes.link(request.node, stored, request.newid, at=begin)
                made.append(new)
                volids[key] = new.volid
        except ApiError as err:
            self.undo(source, made, request.node)
            return fail(f"clone failed: {_why(err)}")
        copied = sum(v.size for v in made if not v.base)
        seconds = max(LINKED_SECONDS, copied / GiB * MOVE_SECONDS_PER_GIB)
        config = _new_config(source, request)
        old_ci, new_ci = f"vm-{request.vmid}-cloudinit", f"vm-{request.newid}-cloudinit"
        for key, value in list(config.items()):
            if key in volids:
                config[key] = str(value).replace(drive_file(value), volids[key], 1)
            elif is_cdrom(value) and old_ci in str(value):
                config[key] = str(value).replace(old_ci, new_ci, 1)

        def finish(_at: float) -> None:
            node = request.target or request.node
            for volume in made:
                if node != request.node:
                    state.volumes.free(request.node, volume.volid)
                    state.volumes.add(node, replace(volume))
            clone = Guest(
                vmid=request.newid,
                kind=request.kind,
                node=node,
                config=config,
                status="stopped",
                pool=request.pool,
                maxdisk=source.maxdisk,
                disk_used=source.disk_used,
                cpu_load=source.cpu_load,
                mem_fraction=source.mem_fraction,
                net_rate=source.net_rate,
                io_rate=source.io_rate,
            )
            state.guests[request.newid] = clone
            if request.kind == "lxc":
                remove_lock(source)

        return Plan(seconds, lines=tuple(lines), apply=finish)


def _handler(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        node, vmid = text(params, "node"), integer(params, "vmid")
        ctx.state.node(node)
        source = ctx.state.require_guest(node, kind, vmid)
        target = params.get("target")
        name = params.get("name" if kind == "qemu" else "hostname")
        full = params.get("full")
        request = _Request(
            kind=kind,
            node=node,
            vmid=vmid,
            newid=integer(params, "newid"),
            full=bool(full) if full is not None else not source.template,
            target=None if target in (None, node, "localhost") else str(target),
            storage=str(params["storage"]) if "storage" in params else None,
            snapname=str(params["snapname"]) if "snapname" in params else None,
            pool=str(params["pool"]) if "pool" in params else None,
            name=str(name) if name else None,
            description=str(params["description"]) if params.get("description") else None,
        )
        _check(ctx, source, request)  # early checks before forking/locking
        # The new vmid is taken at once: QEMU's temporary config says `lock: clone`,
        # LXC's `create_and_lock_config` writes `lock: create` (and locks the source).
        placeholder: dict[str, ConfigValue] = {"lock": "clone" if kind == "qemu" else "create"}
        ctx.state.guests[request.newid] = Guest(request.newid, kind, node, placeholder, "stopped")
        ctx.state.firewall.clone_guest(vmid, request.newid)
        if kind == "lxc":
            set_lock(source, "disk")
        locks = (guest_lock(vmid), guest_lock(request.newid))
        task_type = "qmclone" if kind == "qemu" else "vzclone"
        worker = _Worker(ctx.state, request)
        try:
            task = ctx.state.start_task(node, task_type, vmid, ctx.user, worker, locks=locks)
        except ApiError:
            worker.undo(source, [], node)
            raise
        return Result(task.upid)

    return handler


ROUTES: tuple[Route, ...] = tuple(
    for_kinds("POST", "/nodes/{node}/{kind}/{vmid}/clone", None, _handler)
)
