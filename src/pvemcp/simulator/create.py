"""Creating and destroying VMs and containers.

POST `/nodes/{node}/qemu` and `/nodes/{node}/lxc` take the guest's config keys (those of a
config update, `confkeys`) plus the create-only parameters; new disks given as
`storage:size` are allocated through `volumes.attach_new`, which frees what it made when
one allocation fails, so a failed create leaves no orphan volume. DELETE
`/nodes/{node}/qemu|lxc/{vmid}` frees the guest's volumes. The checks and their wording
follow qemu-server's `src/PVE/API2/Qemu.pm` (`create_vm`, `destroy_vm`) and
pve-container's `src/PVE/API2/LXC.pm` (`create_vm`, `destroy_vm`); where the simulator is
not sure of the exact text, the comment says so.

A restore from a backup archive (`archive`, or `restore` with `force` over an existing
guest) is `backups.restore`. A guest under HA or with replication jobs is destroyed only
with `purge`, which removes those too (`ha.py`, `replication.py`); backup jobs are not
modelled yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .clone import base_in_use
from .confkeys import COUNTS, config_keys
from .errors import ApiError, failure
from .guestconfig import _with_mac
from .locks import check_lock
from .model import ConfigValue, Guest, GuestKind, MiB
from .params import Param, SchemaParams
from .power import request_power_action
from .router import Context, Handler, Params, Result, Route, integer, text
from .tasks import Plan, fail
from .volumes import BLOCK_TYPES, Volume, attach_new, drive_file, is_cdrom, is_disk_key

CREATE_SECONDS = 2.0
"""How long a create worker runs, before the time scale."""
DESTROY_SECONDS = 1.0
"""How long a destroy worker runs, before the time scale."""


def _word(kind: GuestKind) -> str:
    return "VM" if kind == "qemu" else "CT"


def check_vmid_unused(ctx: Context, vmid: int) -> None:
    """pve-cluster's `PVE::Cluster::check_vmid_unused` wording (`CT 108 already exists on
    node 'proxmox'`)."""
    existing = ctx.state.guests.get(vmid)
    if existing is not None:
        raise failure(f"{_word(existing.kind)} {vmid} already exists on node '{existing.node}'")


def _check_pool(ctx: Context, params: Params) -> str | None:
    pool = params.get("pool")
    if pool is None:
        return None
    if str(pool) not in ctx.state.pools:
        # PVE::RPCEnvironment `check_pool_exist`: raise_perm_exc("pool '$pool' does not exist")
        raise ApiError(403, f"Permission check failed (pool '{pool}' does not exist)")
    return str(pool)


def _check_existing_volume(ctx: Context, node: str, volid: str) -> None:
    """A referenced volume (an ISO, a container template) must be in the storage's content;
    `PVE::Storage` answers an unknown one like this (wording not verified for every path)."""
    storage = volid.split(":", 1)[0]
    ctx.state.volumes.storage_on(storage, node)
    if ctx.state.volumes.find(node, volid) is None:
        raise failure(f"volume '{volid}' does not exist")


def _config_values(kind: GuestKind, params: Params) -> dict[str, ConfigValue]:
    """The parameters that are config keys (`net0` for `net[n]`), booleans as PVE writes
    them (0/1)."""
    keys = config_keys(kind)
    values: dict[str, ConfigValue] = {}
    for name, value in params.items():
        indexed = name.rstrip("0123456789")
        if isinstance(value, list) or not (name in keys or f"{indexed}[n]" in keys):
            continue
        values[name] = int(value) if isinstance(value, bool) else value
    return values


CLOUDINIT_SIZE = 4 * MiB
"""qemu-server's `CLOUDINIT_DISK_SIZE`."""


def _cloudinit_drives(ctx: Context, guest: Guest, config: dict[str, ConfigValue]) -> list[Volume]:
    """A `storage:cloudinit` drive becomes the guest's cloud-init volume, `vm-N-cloudinit`
    (qemu-server `create_disks`: `$name = "vm-$vmid-cloudinit"`, `.qcow2` in the guest's
    directory on a file storage), a CD-ROM of 4 MiB."""
    made = []
    for key, value in list(config.items()):
        storage_name, _, rest = drive_file(value).partition(":")
        if guest.kind != "qemu" or rest != "cloudinit" or not is_disk_key("qemu", key):
            continue
        volumes = ctx.state.volumes
        storage = volumes.storage_on(storage_name, guest.node)
        if "images" not in storage.content:
            raise failure(f"storage '{storage_name}' does not support vm images")
        total, used = volumes.usage(storage, guest.node)
        if total - used < CLOUDINIT_SIZE:
            raise failure(f"not enough free space ({total - used} < {CLOUDINIT_SIZE})")
        block = storage.type in BLOCK_TYPES
        name = f"vm-{guest.vmid}-cloudinit"
        volname = name if block else f"{guest.vmid}/{name}.qcow2"
        fmt = "raw" if block else "qcow2"
        volume = Volume(storage_name, "", volname, guest.vmid, CLOUDINIT_SIZE, fmt, "images",
                        int(ctx.now))  # fmt: skip
        made.append(volumes.add(guest.node, volume))
        config[key] = f"{volume.volid},media=cdrom"
    return made


def _qemu_identity(config: dict[str, ConfigValue], vmid: int, at: float) -> None:
    """What qemu-server adds to a new VM's config: an SMBIOS UUID, a VM generation id and
    the `meta` line (creation QEMU version and time)."""
    seed = hashlib.sha1(f"{vmid}/{at}".encode(), usedforsecurity=False).hexdigest()
    uuid = f"{seed[:8]}-{seed[8:12]}-{seed[12:16]}-{seed[16:20]}-{seed[20:32]}"
    config.setdefault("smbios1", f"uuid={uuid}")
    config.setdefault("vmgenid", seed[::-1][:8] + "-0000-4000-8000-" + seed[:12])
    config["meta"] = f"creation-qemu=9.2.0,ctime={int(at)}"


def _maxdisk(volumes: list[Volume]) -> int:
    return volumes[0].size if volumes else 0


def _create(kind: GuestKind) -> Handler:
    word = _word(kind)
    type_ = "qmcreate" if kind == "qemu" else "vzcreate"

    def handler(ctx: Context, params: Params) -> Result:
        node, vmid = text(params, "node"), integer(params, "vmid")
        ctx.state.node(node)
        if (kind == "lxc" and params.get("restore")) or (kind == "qemu" and "archive" in params):
            from .backups import restore  # noqa: PLC0415 - backups imports this module

            return restore(ctx, kind, params)
        check_vmid_unused(ctx, vmid)  # without `restore`, `force` overwrites nothing
        pool = _check_pool(ctx, params)
        values = _config_values(kind, params)
        if kind == "lxc":
            ostemplate = text(params, "ostemplate")
            _check_existing_volume(ctx, node, ostemplate)
            # LXC.pm: `$param->{rootfs} = "$storage:4"; # defaults to 4GB`
            values.setdefault("rootfs", f"{params.get('storage', 'local')}:4")
            values.setdefault("hostname", f"CT{vmid}")
            values.setdefault("ostype", ostemplate.split("/")[-1].split("-")[0])
            values.setdefault("arch", "amd64")
        for key, value in values.items():
            if is_disk_key(kind, key) and is_cdrom(value):
                volid = drive_file(value)
                if ":" in volid and volid.split(":", 1)[1] not in ("cloudinit",):
                    _check_existing_volume(ctx, node, volid)

        def job(_begin: float) -> Plan:
            try:
                check_vmid_unused(ctx, vmid)  # again under the lock
            except ApiError as err:
                return fail(err.reason)
            guest = Guest(vmid, kind, node, {}, "stopped", pool=pool)
            config = dict(values)
            made: list[Volume] = []
            try:
                made += attach_new(ctx, guest, config)
                made += _cloudinit_drives(ctx, guest, config)
            except ApiError as err:
                for volume in made:
                    ctx.state.volumes.free(node, volume.volid)
                # Qemu.pm/LXC.pm: `die "$emsg $err"` after cleaning up what was allocated
                return fail(f"unable to create {word} {vmid} - {err.reason}")
            for key, value in list(config.items()):
                if key.startswith("net"):
                    config[key] = _with_mac(guest, key, str(value))
            if kind == "qemu":
                _qemu_identity(config, vmid, _begin)
            config["lock"] = "create"
            guest.config = config
            guest.maxdisk = _maxdisk(made)
            ctx.state.guests[vmid] = guest
            lines = tuple((0.5, f'  Logical volume "{v.volname}" created.') for v in made)

            def finish(_at: float) -> None:
                guest.config.pop("lock", None)

            return Plan(CREATE_SECONDS, lines=lines, apply=finish)

        upid = ctx.state.start_task(node, type_, vmid, ctx.user, job).upid
        if params.get("start"):
            # PVE forks the start from the create worker once it succeeded; here it is
            # queued behind the create's flock now (after a failed create it fails too).
            request_power_action(ctx.state, kind, node, vmid, "start", params={}, user=ctx.user)
        return Result(upid)

    return handler


def _pinned_base(ctx: Context, guest: Guest) -> str | None:
    """A base volume of the template that a linked clone still uses, or None: qemu-server's
    `destroy_vm` checks every drive of a template with `volume_is_base_and_used` first
    (`clone.base_in_use`, which finds none on LVM-thin, as pve-storage does)."""
    for key, value in guest.config.items():
        if is_disk_key(guest.kind, key) and not is_cdrom(value):
            volid = drive_file(value)
            if base_in_use(ctx.state, volid):
                return volid
    return None


def _destroy_checks(ctx: Context, guest: Guest, params: Params) -> None:
    """qemu-server `destroy_vm` / pve-container `destroy_vm`, in their order and words."""
    if guest.kind == "lxc" or not params.get("skiplock"):
        check_lock(guest)
    if guest.config.get("protection"):
        # AbstractConfig.pm check_protection: "$err_prefix - protection mode enabled"
        raise failure(f"can't remove {_word(guest.kind)} {guest.vmid} - protection mode enabled")
    if not params.get("purge"):
        label = "VM" if guest.kind == "qemu" else "CT"
        if ctx.state.ha.service_of(guest.vmid) is not None:
            raise failure(f"unable to remove {label} {guest.vmid} - used in HA resources and "
                          "purge parameter not set.")  # fmt: skip
        # ReplicationConfig.pm check_for_existing_jobs
        if jobs := ctx.state.replication.of_guest(guest.vmid):
            raise failure(f"There is a replication job '{jobs[0].id}' for guest "
                          f"'{guest.vmid}' - Please remove that first.")  # fmt: skip
    if guest.status == "running":
        if guest.kind == "qemu":
            raise failure(f"VM {guest.vmid} is running - destroy failed")
        if not params.get("force"):
            raise failure(f"unable to destroy CT {guest.vmid} - container is running")


def _destroy(kind: GuestKind) -> Handler:
    type_ = "qmdestroy" if kind == "qemu" else "vzdestroy"

    def handler(ctx: Context, params: Params) -> Result:
        node, vmid = text(params, "node"), integer(params, "vmid")
        ctx.state.node(node)
        guest = ctx.state.require_guest(node, kind, vmid)
        _destroy_checks(ctx, guest, params)  # early checks, repeated after locking

        def job(_begin: float) -> Plan:
            if ctx.state.guest_on(node, kind, vmid) is not guest:
                return fail(f"Configuration file of {vmid} does not exist")
            try:
                _destroy_checks(ctx, guest, params)
            except ApiError as err:
                return fail(err.reason)
            if guest.template and (pinned := _pinned_base(ctx, guest)):
                # QemuServer.pm destroy_vm (pve-container's goes through vdisk_free's check)
                return fail(f"base volume '{pinned}' is still in use by linked cloned")
            volumes = ctx.state.volumes
            owned = [
                drive_file(value)
                for config in (guest.config, guest.pending)
                for key, value in config.items()
                if is_disk_key(kind, key) and not is_cdrom(value)
            ]
            # Off unless asked, as qemu-server's schema default (0) says; pve-container's
            # declares no default, and the simulator assumes the same there. The guest's
            # images only (`vdisk_list`): its backups stay.
            if params.get("destroy-unreferenced-disks"):
                owned += [
                    v.volid
                    for storage in volumes.storages.values()
                    if node in storage.usage
                    for v in volumes.on(storage, node)
                    if v.vmid == vmid and v.content in ("images", "rootdir")
                ]
            lines = tuple((0.5, f'  Logical volume "{v.split(":")[-1]}" successfully removed.')
                          for v in sorted(set(owned)) if volumes.find(node, v))  # fmt: skip

            def finish(_at: float) -> None:
                for volid in set(owned):
                    volumes.free(node, volid)
                del ctx.state.guests[vmid]
                ctx.state.firewall.forget_guest(vmid)
                ctx.state.access.forget_guest(vmid)
                if params.get("purge"):
                    # purge: the HA resource (and its place in rules) and replication jobs
                    ctx.state.ha.drop(vmid)
                    for job in ctx.state.replication.of_guest(vmid):
                        del ctx.state.replication.jobs[job.id]

            return Plan(DESTROY_SECONDS, lines=lines, apply=finish)

        return Result(ctx.state.start_task(node, type_, vmid, ctx.user, job).upid)

    return handler


def _create_params(kind: GuestKind) -> Mapping[str, Param]:
    """The config keys plus the create-only parameters, as PVE's schema declares them."""
    return SchemaParams("POST", f"/nodes/{{node}}/{kind}", counts=COUNTS[kind])


def _destroy_params(kind: GuestKind) -> Mapping[str, Param]:
    root_only = ("skiplock",) if kind == "qemu" else ()
    return SchemaParams("DELETE", f"/nodes/{{node}}/{kind}/{{vmid}}", root_only=root_only)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/nodes/{node}/qemu", _create_params("qemu"), _create("qemu")),
    Route("POST", "/nodes/{node}/lxc", _create_params("lxc"), _create("lxc")),
    Route("DELETE", "/nodes/{node}/qemu/{vmid}", _destroy_params("qemu"), _destroy("qemu")),
    Route("DELETE", "/nodes/{node}/lxc/{vmid}", _destroy_params("lxc"), _destroy("lxc")),
)
