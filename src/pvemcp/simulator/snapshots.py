"""Snapshots of VMs and containers: a tree of saved configs, taken, rolled back, deleted.

The tree is PVE's: each snapshot saves the config with the `parent` the guest had, and
the guest's `parent` then moves to it; a rollback makes the guest descend from the
snapshot it went back to, so the next snapshot starts a new branch. The workers follow
pve-guest-common's `snapshot_create`, `snapshot_rollback` and `snapshot_delete`
(`src/PVE/AbstractConfig.pm`): each takes the guest's flock only to start and guards its
run with the config `lock` (`snapshot`, `rollback`, `snapshot-delete`), so any call that
checks the lock meanwhile fails with `VM is locked (snapshot)`. The pre-fork checks and
task types are qemu-server's (`PVE/API2/Qemu.pm`) and pve-container's
(`src/PVE/API2/LXC/Snapshot.pm`). A rollback on storage that goes back only to a
volume's newest snapshot (ZFS, thick LVM) fails past a newer one, as pve-storage's
`volume_rollback_is_possible` does; the demo's storages are LVM-thin and directories, so
tests add such a storage to see it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from .errors import failure
from .locks import check_lock, locked_message, remove_lock, set_lock
from .model import ConfigValue, GiB, Guest, GuestKind, Snapshot
from .power import halt, start_running
from .router import Context, Handler, Params, Result, Route, for_kinds, integer, text
from .state import ClusterState, lxc_config_missing, qemu_config_missing
from .tasks import Plan, fail

SECONDS = {"snapshot": 2.0, "vmstate": 6.0, "rollback": 3.0, "delete": 2.0}
"""Realistic durations of the workers, before the time scale."""
_NOT_SAVED = re.compile(r"lock|digest|description|unused\d+")
"""Keys `__snapshot_copy_config` leaves out of a snapshot (and a rollback keeps)."""
_DISK_RE = re.compile(r"(?:scsi|virtio|sata|ide|efidisk|tpmstate)\d+|rootfs|mp\d+")
LATEST_ONLY = frozenset({"zfspool", "lvm"})
"""Storage types whose volumes roll back only to their most recent snapshot."""
SNAPSHOT_TYPES = frozenset({"lvmthin", "zfspool", "zfs", "rbd", "btrfs"})
"""Storage types that snapshot any volume; directories and LVM snapshot only qcow2
(pve-storage `volume_has_feature` of each plugin)."""


def _task_type(kind: GuestKind, action: str) -> str:
    prefix = "qm" if kind == "qemu" else "vz"
    return f"{prefix}{action}"


def _missing(kind: GuestKind, node: str, vmid: int) -> str:
    return (qemu_config_missing if kind == "qemu" else lxc_config_missing)(node, vmid)


def _find(guest: Guest, name: str) -> Snapshot | None:
    return next((snap for snap in guest.snapshots if snap.name == name), None)


def _volumes(config: dict[str, ConfigValue]) -> list[tuple[str, str]]:
    """(key, volume id) of a config's disks (CD-ROMs and the cloud-init drive have no
    snapshots)."""
    found = []
    for key, value in config.items():
        volid = str(value).split(",", 1)[0]
        cdrom = "media=cdrom" in str(value) or "cloudinit" in volid
        if _DISK_RE.fullmatch(key) and ":" in volid and not cdrom:
            found.append((key, volid))
    return found


def _cannot_snapshot(state: ClusterState, guest: Guest) -> str | None:
    """Why `__snapshot_prepare` (AbstractConfig.pm) refuses: `snapshot feature is not
    available` when a disk's storage cannot snapshot it (`has_feature('snapshot')`), or the
    error a test set in `volumes.faults[(storage, "snapshot")]`, the way a failing
    `volume_snapshot` (a full thin pool) fails the task; None when it can go ahead."""
    types = {storage.name: storage.type for storage in state.storages}
    for _key, volid in _volumes(guest.config):
        storage = volid.split(":", 1)[0]
        kind = types.get(storage)
        if kind not in SNAPSHOT_TYPES and not (kind and volid.endswith(".qcow2")):
            return "snapshot feature is not available"
    for _key, volid in _volumes(guest.config):
        if (fault := state.volumes.faults.get((volid.split(":", 1)[0], "snapshot"))) is not None:
            return fault
    return None


def _not_most_recent(state: ClusterState, guest: Guest, snap: Snapshot) -> str | None:
    """pve-storage's refusal to roll a volume back past a newer snapshot of it, on the
    storages that cannot (`ZFSPoolPlugin.pm` names the volume id, `LVMPlugin.pm` and
    `Plugin.pm` the volume name), or None when every volume can go back."""
    types = {storage.name: storage.type for storage in state.storages}
    newer = guest.snapshots[guest.snapshots.index(snap) + 1 :]
    for _key, volid in _volumes(snap.config):
        storage, _, volname = volid.partition(":")
        if types.get(storage) not in LATEST_ONLY:
            continue
        if any(volid in dict(_volumes(other.config)).values() for other in newer):
            shown = volid if types[storage] == "zfspool" else volname
            return f"can't rollback, '{snap.name}' is not most recent snapshot on '{shown}'"
    return None


def _attached_since(config: dict[str, ConfigValue], saved: dict[str, ConfigValue]) -> list[str]:
    """The volumes of the config that the snapshot's config does not hold (a disk added or
    moved since): `__snapshot_rollback_get_unused` (qemu-server QemuConfig.pm,
    pve-container LXC/Config.pm), which a rollback keeps as unusedN."""
    held = {volid for _key, volid in _volumes(saved)}
    return [volid for _key, volid in _volumes(config) if volid not in held]


def _add_unused(config: dict[str, ConfigValue], volid: str) -> None:
    """AbstractConfig.pm `add_unused_volume`: the lowest free unusedN, no duplicate."""
    if volid in config.values():
        return
    config[next(f"unused{n}" for n in range(256) if f"unused{n}" not in config)] = volid


def _create_lines(guest: Guest, with_ram: bool) -> tuple[tuple[float, str], ...]:
    """What a QEMU snapshot worker prints (qemu-server `PVE/QemuConfig.pm`: the savevm
    progress, then `__snapshot_create_vol_snapshot` per disk); a container's prints none."""
    if guest.kind != "qemu":
        return ()
    lines: list[tuple[float, str]] = []
    if with_ram:
        storage = guest.config.get("vmstatestorage", "local-lvm")
        saved = guest.maxmem * guest.mem_fraction / GiB
        lines += [
            (0.05, f"saving VM state and RAM using storage '{storage}'"),
            (0.3, f"{saved * 0.4:.2f} GiB in 1s"),
            (0.6, f"completed saving the VM state in 3s, saved {saved:.2f} GiB"),
        ]
    lines += [
        (0.8, f"snapshotting 'drive-{key}' ({volid})") for key, volid in _volumes(guest.config)
    ]
    return tuple(lines)


# --- views ---------------------------------------------------------------------------


def snapshot_list(guest: Guest) -> list[dict[str, Any]]:
    """GET .../snapshot: every snapshot plus the `current` pseudo-entry."""
    entries: list[dict[str, Any]] = []
    for snap in guest.snapshots:
        entry: dict[str, Any] = {
            "name": snap.name,
            "description": snap.description,
            "snaptime": snap.snaptime,
        }
        if guest.kind == "qemu":
            entry["vmstate"] = 1 if snap.vmstate else 0
        if snap.parent is not None:
            entry["parent"] = snap.parent
        if snap.snapstate is not None:
            entry["snapstate"] = snap.snapstate
        entries.append(entry)
    current: dict[str, Any] = {
        "name": "current",
        "description": "You are here!",
        "digest": guest.digest(),
        "running": 1 if guest.status == "running" else 0,
    }
    if guest.parent is not None:
        current["parent"] = guest.parent
    entries.append(current)
    return entries


def snapshot_config(guest: Guest, snap: Snapshot) -> dict[str, Any]:
    """GET .../snapshot/{snapname}/config: the snapshot's section of the config file."""
    saved: dict[str, Any] = {**snap.config, "snaptime": snap.snaptime}
    if snap.description:
        saved["description"] = snap.description
    if snap.parent is not None:
        saved["parent"] = snap.parent
    if snap.vmstate:
        storage = guest.config.get("vmstatestorage", "local-lvm")
        saved["vmstate"] = f"{storage}:vm-{guest.vmid}-state-{snap.name}"
    if snap.snapstate is not None:
        saved["snapstate"] = snap.snapstate
    return saved


# --- workers -------------------------------------------------------------------------


class _Worker:
    """The guest a snapshot call names, looked up again when its worker starts."""

    def __init__(self, state: ClusterState, kind: GuestKind, node: str, vmid: int) -> None:
        self.state, self.kind, self.node, self.vmid = state, kind, node, vmid

    def guest(self) -> Guest | None:
        return self.state.guest_on(self.node, self.kind, self.vmid)

    def start(self, action: str, user: str, job: Callable[[float], Plan]) -> str:
        # The worker takes the flock only to start; its `lock` guards the rest.
        task_type = _task_type(self.kind, action)
        return self.state.start_task(self.node, task_type, self.vmid, user, job, hold=False).upid

    def create(self, name: str, description: str, vmstate: bool, begin: float) -> Plan:
        # AbstractConfig.pm __snapshot_prepare, then __snapshot_commit at the end.
        guest = self.guest()
        if guest is None:
            return fail(_missing(self.kind, self.node, self.vmid))
        if guest.template:
            return fail("you can't take a snapshot if it's a template")
        if locked := locked_message(guest):
            return fail(locked)
        if _find(guest, name) is not None:
            return fail(f"snapshot name '{name}' already used")
        if refused := _cannot_snapshot(self.state, guest):
            return fail(refused)
        # RAM state only for a running VM (`__snapshot_prepare` ignores it otherwise).
        with_ram = vmstate and guest.kind == "qemu" and guest.status == "running"
        set_lock(guest, "snapshot")
        saved: dict[str, ConfigValue] = {
            k: v for k, v in guest.config.items() if not _NOT_SAVED.fullmatch(k)
        }
        snap = Snapshot(name, description, int(begin), guest.parent, with_ram, saved, "prepare")
        guest.snapshots.append(snap)
        lines = _create_lines(guest, with_ram)

        def commit(_at: float) -> None:
            snap.snapstate = None
            guest.parent = name
            remove_lock(guest)

        seconds = SECONDS["vmstate" if with_ram else "snapshot"]
        return Plan(seconds, lines=lines, apply=commit)

    def rollback(self, name: str, start: bool, _begin: float) -> Plan:
        # AbstractConfig.pm snapshot_rollback: its prepare pass, then the apply pass.
        guest = self.guest()
        if guest is None:
            return fail(_missing(self.kind, self.node, self.vmid))
        if guest.template:
            return fail("you can't rollback if vm is a template")
        snap = _find(guest, name)
        if snap is None:
            return fail(f"snapshot '{name}' does not exist")
        if blocked := _not_most_recent(self.state, guest, snap):
            return fail(blocked)  # __snapshot_rollback_vol_possible, before the checks below
        if snap.snapstate is not None:
            return fail(f"unable to rollback to incomplete snapshot (snapstate = {snap.snapstate})")
        if locked := locked_message(guest):
            return fail(locked)
        halt(guest)  # __snapshot_rollback_vm_stop
        set_lock(guest, "rollback")

        def finish(at: float) -> None:
            kept = {k: v for k, v in guest.config.items() if k.startswith("unused")}
            for volid in _attached_since(guest.config, snap.config):
                _add_unused(kept, volid)
            if "description" in guest.config:
                kept["description"] = guest.config["description"]
            guest.config = {**kept, **snap.config}
            guest.pending.clear()
            guest.pending_delete.clear()
            guest.parent = name
            if snap.vmstate or start:
                # RAM state resumes the VM (__snapshot_rollback_vm_start); `start` boots it.
                start_running(self.state, guest, at)

        return Plan(SECONDS["rollback"], apply=finish)

    def delete(self, name: str, _begin: float) -> Plan:
        # AbstractConfig.pm snapshot_delete (the template check runs before the lock is
        # set here, so a refused template is not left locked as on PVE).
        guest = self.guest()
        if guest is None:
            return fail(_missing(self.kind, self.node, self.vmid))
        snap = _find(guest, name)
        if snap is None:
            return fail(f"snapshot '{name}' does not exist")
        if locked := locked_message(guest):
            return fail(locked)  # set_lock's check_lock
        if guest.template:
            return fail("you can't delete a snapshot if vm is a template")
        set_lock(guest, "snapshot-delete")
        snap.snapstate = "delete"

        def finish(_at: float) -> None:
            if guest.parent == name:
                guest.parent = snap.parent
            for other in guest.snapshots:
                if other.parent == name:
                    other.parent = snap.parent
            guest.snapshots.remove(snap)
            remove_lock(guest)

        return Plan(SECONDS["delete"], apply=finish)


# --- handlers ------------------------------------------------------------------------


def _existing(ctx: Context, params: Params, kind: GuestKind) -> tuple[_Worker, Guest]:
    """The worker's target, after the pre-fork `load_config` (a 500 when missing)."""
    node, vmid = text(params, "node"), integer(params, "vmid")
    ctx.state.node(node)
    return _Worker(ctx.state, kind, node, vmid), ctx.state.require_guest(node, kind, vmid)


def _list(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        return Result(snapshot_list(_existing(ctx, params, kind)[1]))

    return handler


def _create(kind: GuestKind) -> Handler:
    reserved = ("current", "pending") if kind == "qemu" else ("current", "vzdump")

    def handler(ctx: Context, params: Params) -> Result:
        name = text(params, "snapname")
        for word in reserved:
            # qemu-server compares 'pending' case-insensitively, pve-container 'vzdump' not.
            if name == word or (word == "pending" and name.lower() == word):
                raise failure(f"unable to use snapshot name '{word}' (reserved name)")
        worker, _guest = _existing(ctx, params, kind)
        description = str(params.get("description", ""))
        vmstate = bool(params.get("vmstate"))
        job = partial(worker.create, name, description, vmstate)
        return Result(worker.start("snapshot", ctx.user, job))

    return handler


def _commands(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        # A plain directory index: PVE does not even load the config here.
        return Result([{"cmd": "rollback"}, {"cmd": "config"}])

    return handler


def _get_config(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        guest = _existing(ctx, params, kind)[1]
        name = text(params, "snapname")
        snap = _find(guest, name)
        if snap is None:
            raise failure(f"snapshot '{name}' does not exist")
        return Result(snapshot_config(guest, snap))

    return handler


def _put_config(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        guest = _existing(ctx, params, kind)[1]
        if "description" not in params:
            return Result(None)
        check_lock(guest)  # Qemu.pm update_snapshot_config, LXC/Snapshot.pm the same
        name = text(params, "snapname")
        snap = _find(guest, name)
        if snap is None:
            raise failure(f"snapshot '{name}' does not exist")
        snap.description = str(params["description"])
        return Result(None)

    return handler


def _rollback(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        worker, _guest = _existing(ctx, params, kind)
        name, start = text(params, "snapname"), bool(params.get("start"))
        return Result(worker.start("rollback", ctx.user, partial(worker.rollback, name, start)))

    return handler


def _delete(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        worker, _guest = _existing(ctx, params, kind)
        name = text(params, "snapname")
        return Result(worker.start("delsnapshot", ctx.user, partial(worker.delete, name)))

    return handler


_BASE = "/nodes/{node}/{kind}/{vmid}/snapshot"
ROUTES: tuple[Route, ...] = (
    *for_kinds("GET", _BASE, None, _list),
    *for_kinds("POST", _BASE, None, _create),
    *for_kinds("GET", _BASE + "/{snapname}", None, _commands),
    *for_kinds("DELETE", _BASE + "/{snapname}", None, _delete),
    *for_kinds("GET", _BASE + "/{snapname}/config", None, _get_config),
    *for_kinds("PUT", _BASE + "/{snapname}/config", None, _put_config),
    *for_kinds("POST", _BASE + "/{snapname}/rollback", None, _rollback),
)
