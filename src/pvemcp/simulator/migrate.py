"""Migration of VMs and containers to another node of the cluster.

The checks follow PVE in where they happen. The API handler (qemu-server
`src/PVE/API2/Qemu.pm` `migrate_vm`, pve-container `src/PVE/API2/LXC.pm` `migrate_vm`)
refuses at once (the target is this node, no such cluster node, a locked or running guest
without the right mode, a target storage that is missing or not for images); the worker
(`src/PVE/QemuMigrate.pm`, `src/PVE/LXC/Migrate.pm`, both driven by pve-guest-common's
`src/PVE/AbstractMigrate.pm` `migrate`) then holds the guest's flock, sets the config
`lock: migrate` for its run, scans the local volumes and ends in `migration aborted` when
one cannot move (a snapshot on LVM-thin, a local disk of a running VM without
`with-local-disks`) or the target cannot be reached. When it ends OK the guest's config
lives on the target node: every `/nodes/{node}/...` path of the guest answers there and
no longer on the source, as PVE's `proxyto => 'node'` finds the config where it is.

The local volumes are copied to the target node (`volumes.py`), keeping their names
unless a storage map sends them to another storage. An HA-managed guest's migrate call
hands the move to ha-manager (`hamigrate`, `ha.py`), whose LRM runs `worker`. Not
modelled: replication, local devices (PCI/USB), bandwidth limits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import ha
from .errors import ApiError, failure, param_error
from .locks import check_lock, locked_message, remove_lock, set_lock
from .model import GiB, Guest, GuestKind, KiB, MiB, Storage, TiB
from .router import Context, Handler, Params, Result, Route, api, for_kinds, integer, text
from .state import ClusterState
from .tasks import Plan
from .volumes import Volume as StoredVolume

SECONDS = {"offline": 4.0, "online": 9.0, "restart": 12.0}
"""Realistic durations of a successful migration, before the time scale."""
ABORT_SECONDS = 0.5

_DISK_RE = re.compile(r"(?:scsi|virtio|sata|ide|efidisk|tpmstate|unused)\d+|rootfs|mp\d+")
_SIZE_RE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)")
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}
_UNREACHABLE = "Can't connect to destination address using public key"
"""QemuMigrate.pm / LXC/Migrate.pm `prepare`: the ssh test to the target failed."""


@dataclass(frozen=True)
class Volume:
    """One volume a guest's config refers to."""

    key: str
    volid: str
    storage: str
    size: int
    cdrom: bool


def guest_volumes(guest: Guest) -> list[Volume]:
    """The guest's volumes on storages (`storage:name`), CD-ROM images and the
    cloud-init drive included; paths, `none` and `cdrom` are not volumes."""
    found = []
    for key, value in guest.config.items():
        if not _DISK_RE.fullmatch(key):
            continue
        spec = str(value)
        volid = spec.split(",", 1)[0]
        if key == "rootfs" or key.startswith("mp"):
            volid = spec.split(",", 1)[0].removeprefix("volume=")
        if ":" not in volid or volid.startswith("/"):
            continue
        size = _SIZE_RE.search(spec)
        found.append(
            Volume(
                key=key,
                volid=volid,
                storage=volid.split(":", 1)[0],
                size=int(float(size.group(1)) * _UNITS[size.group(2)]) if size else 0,
                cdrom="media=cdrom" in spec,
            )
        )
    return found


def keeps_snapshots(storage_type: str, volid: str, kind: GuestKind) -> bool:
    """Whether an offline move keeps a local volume's snapshots: on ZFS and btrfs, and
    for a VM inside a qcow2 file (QemuMigrate.pm `scan_local_volumes`, LXC/Migrate.pm
    `phase1`); elsewhere (LVM, LVM-thin) PVE refuses `non-migratable snapshot exists`."""
    if storage_type in ("zfspool", "btrfs"):
        return True
    return kind == "qemu" and volid.endswith(".qcow2")


def _storage(state: ClusterState, name: str) -> Storage | None:
    return next((s for s in state.storages if s.name == name), None)


def _local(state: ClusterState, volume: Volume) -> bool:
    storage = _storage(state, volume.storage)
    return storage is None or not storage.shared


def _parse_map(field: str, raw: str) -> dict[str, str]:
    """PVE's `parse_idmap` of a `storage-pair-list`: `source:target` pairs and at most one
    bare default (key ""); `1` maps each storage to itself (an empty map here)."""
    mapping: dict[str, str] = {}
    for item in re.split(r"[,;\s]+", raw.strip()):
        if not item or item == "1":
            continue
        source, sep, target = item.partition(":")
        key, value = (source, target) if sep else ("", source)
        if key in mapping:
            problem = "default target specified multiple times" if not key else (
                f"duplicate mapping for source '{key}'")  # fmt: skip
            raise param_error({field: f"failed to parse storage map: {problem}"})
        mapping[key] = value
    return mapping


def _check_target_storage(state: ClusterState, name: str, node: str, content: str) -> None:
    """`$check_storage_access_migrate`: the storage exists, is on the target node, and
    holds guest volumes (pve-storage `storage_config`, `storage_check_enabled`)."""
    storage = _storage(state, name)
    if storage is None:
        raise failure(f"storage '{name}' does not exist")
    if node not in storage.usage:
        raise failure(f"storage '{name}' is not available on node '{node}'")
    if content not in storage.content:
        what = "vm images" if content == "images" else "container directories"
        raise failure(f"storage '{name}' does not support {what}")


def _mapped(mapping: Mapping[str, str], storage: str) -> str:
    """`map_id`: the target of a local volume's storage under the map."""
    return mapping.get(storage, mapping.get("", storage))


def _stamp(at: float) -> str:
    """The prefix AbstractMigrate's `log` writes before each line."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Log:
    """Lines of a migration task as AbstractMigrate prints them, spread over its run."""

    def __init__(self, begin: float, seconds: float) -> None:
        self.begin, self.seconds = begin, seconds
        self.lines: list[tuple[float, str]] = []

    def add(self, fraction: float, text: str, *, error: bool = False) -> None:
        stamp = _stamp(self.begin + fraction * self.seconds)
        self.lines.append((fraction, f"{stamp}{' ERROR:' if error else ''} {text}"))

    def abort(self, reason: str) -> Plan:
        """`migration aborted`: the task's error; the reason is in the log."""
        self.add(
            0.9, f"migration aborted (duration {_duration(self.seconds)}): {reason}", error=True
        )
        return Plan(self.seconds, error="migration aborted", lines=tuple(self.lines))


@dataclass(frozen=True)
class _Request:
    """What the API handler accepted, handed to the worker."""

    kind: GuestKind
    node: str
    vmid: int
    target: str
    online: bool
    restart: bool
    with_local_disks: bool
    storagemap: Mapping[str, str]


class _Abort(Exception):
    """A migration that ends in `migration aborted`, with the reason for its log."""


@dataclass
class _Copies:
    """What the copy made: the config values that name new volumes, and each source
    volume with its copy on the target (the sources are freed when the task ends)."""

    config: dict[str, str] = field(default_factory=dict)
    made: list[tuple[StoredVolume, StoredVolume]] = field(default_factory=list)


class _Worker:
    def __init__(self, state: ClusterState, request: _Request) -> None:
        self.state, self.request = state, request

    def __call__(self, begin: float) -> Plan:
        request = self.request
        guest = self.state.guest_on(request.node, request.kind, request.vmid)
        label = "VM" if request.kind == "qemu" else "CT"
        if guest is None:
            return _Log(begin, ABORT_SECONDS).abort(
                f"unable to find configuration file for {label} {request.vmid} on node "
                f"'{request.node}'"
            )
        running = guest.status == "running"
        mode = "online" if running and request.kind == "qemu" else (
            "restart" if running else "offline")  # fmt: skip
        log = _Log(begin, SECONDS[mode])
        if locked := locked_message(guest):
            return log.abort(locked)
        if running and request.kind == "qemu" and not request.online:
            return log.abort("can't migrate running VM without --online")
        if running and request.kind == "lxc" and request.online:
            return log.abort("lxc live migration is currently not implemented")
        target = self.state.nodes[request.target]
        if not target.online:
            return log.abort(_UNREACHABLE)
        if mode == "restart":
            log.add(0.0, f"shutdown CT {request.vmid}")
        log.add(0.05, f"starting migration of {label} {request.vmid} to node '{target.name}' "
                      f"({target.ip})")  # fmt: skip
        problems = self._scan(guest, log, running)
        if problems:
            return log.abort(problems)
        try:
            copies = self._copy(guest, log, mode, begin)
        except _Abort as abort:
            return log.abort(str(abort))
        set_lock(guest, "migrate")  # phase1 writes it into the config before the copy
        if mode == "restart":
            log.add(0.95, "start container on target node")
        log.add(0.97, f"migration finished successfully (duration {_duration(log.seconds)})")

        def finish(at: float) -> None:
            guest.config.update(copies.config)
            for old, _copy in copies.made:
                self.state.volumes.free(request.node, old.volid)
            remove_lock(guest)
            guest.node = target.name
            if guest.status == "running":
                # The guest now runs on the target, in a new process (a restarted
                # container from a cold start, a live-migrated VM resumed there).
                guest.pid = self.state.new_worker_pid(target)
                if mode == "restart":
                    guest.apply_pending()
                    guest.started_at = at

        return Plan(log.seconds, lines=tuple(log.lines), apply=finish)

    def _scan(self, guest: Guest, log: _Log, running: bool) -> str | None:
        """`scan_local_volumes` (QEMU) / the volume pass of `phase1` (LXC): each local
        volume is listed, each that cannot move is logged; the reason to abort, if any."""
        kind, errors = self.request.kind, {}
        for volume in sorted(guest_volumes(guest), key=lambda v: v.volid):
            if not _local(self.state, volume):
                continue
            cloudinit = volume.cdrom and "-cloudinit" in volume.volid
            if kind == "lxc":
                log.add(0.1, f"found local volume '{volume.volid}' (in current VM config)")
            elif cloudinit:
                log.add(0.1, f"found generated disk '{volume.volid}' (in current VM config)")
            else:
                state = "unused" if volume.key.startswith("unused") else "attached"
                log.add(0.1, f"found local disk '{volume.volid}' ({state})")
            if problem := self._problem(guest, volume, cloudinit, running):
                errors[volume.volid] = problem
        noun = "disk" if kind == "qemu" else "volume"
        for volid, reason in sorted(errors.items()):
            log.add(0.15, f"can't migrate local {noun} '{volid}': {reason}")
        if not errors:
            return None
        if kind == "lxc":
            return "can't migrate CT - check log"
        return "Problem found while scanning volumes - can't migrate VM - check log"

    def _problem(self, guest: Guest, volume: Volume, cloudinit: bool, running: bool) -> str | None:
        """Why one local volume cannot move (QemuMigrate.pm `$test_volid`, the checks
        after it; LXC/Migrate.pm `$test_volid`), or None."""
        live = running and self.request.kind == "qemu"
        if volume.cdrom:
            return None if cloudinit else "local cdrom image"
        if guest.snapshots:
            if live:
                return "online storage migration not possible if non-replicated snapshot exists"
            if not keeps_snapshots(self._storage_type(volume), volume.volid, guest.kind):
                return "non-migratable snapshot exists"
        attached = not volume.key.startswith("unused")
        if live and attached and not self.request.with_local_disks:
            return "can't live migrate attached local disks without with-local-disks option"
        return None

    def _storage_type(self, volume: Volume) -> str:
        storage = _storage(self.state, volume.storage)
        return storage.type if storage is not None else ""

    def _copy(self, guest: Guest, log: _Log, mode: str, begin: float) -> _Copies:
        """The copy of the local volumes to the target (pve-storage `storage_migrate`): a
        volume keeps its name on the same storage, and a mapped storage names it as its
        plugin does. Raises `_Abort` when the target cannot take one, after freeing the
        copies made so far (as `phase1_cleanup` does)."""
        volumes, source, target = self.state.volumes, self.request.node, self.request.target
        copies = _Copies()
        local = [v for v in guest_volumes(guest) if _local(self.state, v)]
        if mode == "online":
            log.add(0.2, f"starting VM {guest.vmid} on remote node '{target}'")
        elif local:
            log.add(0.2, "copying local disk images" if guest.kind == "qemu" else
                    "copying local volumes")  # fmt: skip
        for volume in sorted(local, key=lambda v: v.volid):
            name = _mapped(self.request.storagemap, volume.storage)
            stored = volumes.find(source, volume.volid)
            new = name + ":" + volume.volid.split(":", 1)[1]
            if stored is not None:  # the cloud-init drive is generated, not stored
                try:
                    copy = self._place(stored, name, begin)
                except ApiError as err:
                    for _old, made in copies.made:
                        volumes.free(target, made.volid)
                    raise _Abort(
                        f"storage migration for '{volume.volid}' to storage '{name}' failed - "
                        + err.message.strip()
                    ) from err
                copies.made.append((stored, copy))
                new = copy.volid
            if new != volume.volid:
                copies.config[volume.key] = str(guest.config[volume.key]).replace(
                    volume.volid, new, 1
                )
            log.add(0.6, f"volume '{volume.volid}' is '{new}' on the target")
        if mode == "online":
            log.add(0.7, f"starting online/live migration on unix:/run/qemu-server/"
                         f"{guest.vmid}.migrate")  # fmt: skip
            log.add(0.9, "migration status: completed")
        return copies

    def _place(self, stored: StoredVolume, name: str, begin: float) -> StoredVolume:
        """The volume's copy on the target node: the same name on the same storage, if
        it has room (LVMPlugin.pm's `not enough free space`), else a new volume."""
        volumes, target = self.state.volumes, self.request.target
        if name != stored.storage:
            kind = self.request.kind
            return volumes.allocate(target, name, stored.vmid, stored.size, kind=kind, at=begin)
        total, used = volumes.usage(volumes.storage_on(name, target), target)
        if stored.size > total - used:
            raise failure(f"not enough free space ({total - used} < {stored.size})")
        return volumes.add(target, replace(stored))


def worker(
    state: ClusterState,
    kind: GuestKind,
    node: str,
    vmid: int,
    target: str,
    *,
    online: bool,
    restart: bool,
) -> tuple[str, Callable[[float], Plan]]:
    """The migration worker the HA manager's LRM runs (`ha.py`): the task type and job,
    without the API's checks (the CRM asks only for a managed guest on a known node)."""
    request = _Request(kind, node, vmid, target, online, restart, False, {})
    return ("qmigrate" if kind == "qemu" else "vzmigrate"), _Worker(state, request)


def _start(ctx: Context, request: _Request) -> str:
    task_type = "qmigrate" if request.kind == "qemu" else "vzmigrate"
    worker = _Worker(ctx.state, request)
    return ctx.state.start_task(request.node, task_type, request.vmid, ctx.user, worker).upid


def _target(ctx: Context, params: Params) -> tuple[str, str]:
    """The source and target node, checked as `migrate_vm` does first."""
    node, target = text(params, "node"), text(params, "target")
    ctx.state.node(node)
    if target == node:
        # Both handlers: raise_param_exc({ target => "target is local node." }).
        raise param_error({"target": "target is local node."})
    if target not in ctx.state.nodes:
        raise failure(f"no such cluster node '{target}'")  # PVE::Cluster::check_node_exists
    return node, target


def _storagemap(ctx: Context, guest: Guest, field: str, raw: Any, target: str) -> dict[str, str]:
    content = "images" if guest.kind == "qemu" else "rootdir"
    if raw is None:
        mapping: dict[str, str] = {}
    else:
        mapping = _parse_map(field, str(raw))
        for name in sorted(set(mapping.values())):
            _check_target_storage(ctx.state, name, target, content)
    # check_storage_availability: a volume's storage (mapped when local) is on the target.
    for volume in guest_volumes(guest):
        storage = _storage(ctx.state, volume.storage)
        name = _mapped(mapping, volume.storage) if _local(ctx.state, volume) else volume.storage
        if storage is not None and target not in (_storage(ctx.state, name) or storage).usage:
            raise failure(f"storage '{name}' is not available on node '{target}'")
    return mapping


def _post_qemu(ctx: Context, params: Params) -> Result:
    node, target = _target(ctx, params)
    vmid = integer(params, "vmid")
    guest = ctx.state.require_guest(node, "qemu", vmid)
    check_lock(guest)
    online = bool(params.get("online"))
    if guest.status == "running" and not online:
        raise failure("can't migrate running VM without --online")
    mapping = _storagemap(ctx, guest, "targetstorage", params.get("targetstorage"), target)
    if handed := ha.request_migration(ctx.state, "qemu", node, vmid, target, user=ctx.user):
        return Result(handed)
    request = _Request(
        "qemu", node, vmid, target, online and guest.status == "running", False,
        bool(params.get("with-local-disks")), mapping,
    )  # fmt: skip
    return Result(_start(ctx, request))


def _post_lxc(ctx: Context, params: Params) -> Result:
    node, target = _target(ctx, params)
    vmid = integer(params, "vmid")
    guest = ctx.state.require_guest(node, "lxc", vmid)
    online, restart = bool(params.get("online")), bool(params.get("restart"))
    if guest.status == "running" and not online and not restart:
        raise failure("can't migrate running container without --online or --restart")
    mapping = _storagemap(ctx, guest, "target-storage", params.get("target-storage"), target)
    if handed := ha.request_migration(ctx.state, "lxc", node, vmid, target, user=ctx.user):
        return Result(handed)
    request = _Request("lxc", node, vmid, target, online, restart, False, mapping)
    return Result(_start(ctx, request))


def _precondition(kind: GuestKind) -> Handler:
    """GET .../migrate: whether it runs, where it may go, and (QEMU) its local disks."""

    def handler(ctx: Context, params: Params) -> Result:
        node = text(params, "node")
        ctx.state.node(node)
        guest = ctx.state.require_guest(node, kind, integer(params, "vmid"))
        check_lock(guest)
        volumes = guest_volumes(guest)
        allowed, refused = [], {}
        for other in ctx.state.nodes:
            if other == node:
                continue
            missing = sorted({
                v.storage for v in volumes
                if (s := _storage(ctx.state, v.storage)) is not None and other not in s.usage
            })  # fmt: skip
            if missing and kind == "qemu":
                refused[other] = {"unavailable_storages": missing}
            else:
                allowed.append(other)
        running = 1 if guest.status == "running" else 0
        if kind == "lxc":
            return Result({"running": running, "allowed-nodes": allowed, "not-allowed-nodes": {}})
        local = []
        for volume in volumes:
            if _local(ctx.state, volume):
                entry: dict[str, Any] = {
                    "volid": volume.volid,
                    "size": volume.size,
                    "cdrom": 1 if volume.cdrom else 0,
                    "is_unused": 1 if volume.key.startswith("unused") else 0,
                }
                local.append(entry)
        return Result({
            "running": running,
            "allowed_nodes": allowed,
            "not_allowed_nodes": refused,
            "local_disks": local,
            "local_resources": [],
            "mapped-resources": [],
            "mapped-resource-info": {},
            "has-dbus-vmstate": 1,
        })  # fmt: skip

    return handler


ROUTES: tuple[Route, ...] = (
    *for_kinds("GET", "/nodes/{node}/{kind}/{vmid}/migrate", None, _precondition),
    # qemu-server Qemu.pm migrate_vm: "Only root may use this option." for these three.
    api(
        "POST",
        "/nodes/{node}/qemu/{vmid}/migrate",
        _post_qemu,
        root_only=("force", "migration_type", "migration_network"),
    ),
    api("POST", "/nodes/{node}/lxc/{vmid}/migrate", _post_lxc),
)
