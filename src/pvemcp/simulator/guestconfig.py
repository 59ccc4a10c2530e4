"""Guest configuration: read (current or with pending changes), update, pending, revert.

Follows qemu-server's `$update_vm_api` (`PVE/API2/Qemu.pm`) and pve-container's
`update_vm` (`PVE/API2/LXC/Config.pm`): parameter checks first (400, PVE's texts), then
the config's `digest` and `lock`, then every change is written to the `[PENDING]`
section, values equal to the current ones are dropped (`cleanup_pending`), and the rest is
applied at once for a stopped guest or, for a running one, as far as PVE hotplugs it.

What the hotplug model keeps (`vmconfig_hotplug_pending` in qemu-server's
`PVE/QemuServer.pm` and pve-container's `PVE/LXC/Config.pm`, simplified): QEMU applies
the "fast plug" options (name, description, tags, onboot, protection, startup, shares...,
and the cloud-init keys), cpuunits, cpulimit, agent, balloon (unless it switches the
balloon device on or off), NICs, and SCSI/VirtIO disks at once when the VM's `hotplug`
list (default `network,disk,usb`) allows them; memory and vcpus only with `memory`/`cpu`
in that list; everything else (cores, sockets, cpu, bios, machine, ostype, IDE/SATA, EFI
and TPM disks...) stays pending until the next start. A container applies its fast plug
options, cores, cpulimit, cpuunits, memory, swap, NICs and new mount points or devices at
once; with `memory` hotplug a VM's memory grows at once but a shrink waits (unplugging
DIMMs is not modelled). A NIC given without a MAC gets one, as on PVE. A disk given as
`storage:size` is allocated on the storage first (`volumes.attach_new`); a disk that
leaves the config, at once or at the next start (IDE/SATA on a running VM), becomes
`unusedN`, or with `force` is freed (`volumes.detach`).

Not modelled: a running VM's NIC hotplug onto a bridge the node does not run, which PVE
fails (`net1: hotplug problem - bridge 'vmbr9' does not exist`, the value kept pending;
`vmconfig_hotplug_pending`, then `raise_param_exc` in PVE/API2/Qemu.pm): the tools refuse
such a NIC first (`planners.NodeBridges`), and a start with it fails (`power.py`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from .cloudinit import record_changes, tracked_values
from .confkeys import option_exists, update_params
from .errors import MODIFIED, ApiError, failure, param_error
from .locks import check_lock
from .model import ConfigValue, Guest, GuestKind
from .params import Value
from .router import Context, Handler, Params, Result, Route, for_kinds, integer, text
from .snapshots import snapshot_config
from .state import qemu_config_missing
from .tasks import Plan, fail
from .volumes import Volumes, attach_new, detach_removed

CONFIG_SECONDS = 0.5
"""How long a `qmconfig` worker runs, before the time scale."""
HIDDEN = "*" * 10
"""What PVE shows instead of the cloud-init password."""

_CONTROL = frozenset(
    {"node", "vmid", "digest", "skiplock", "delete", "revert", "force", "background_delay",
     "import-working-storage"}
)  # fmt: skip
_QEMU_FAST = frozenset(
    {"description", "hookscript", "lock", "migrate_downtime", "migrate_speed", "name",
     "onboot", "protection", "shares", "startup", "tags", "vmstatestorage",
     # confdesc_cloudinit: applied at once, used at the next cloud-init drive update
     "cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain",
     "sshkeys"}
)  # fmt: skip
_QEMU_LIVE = frozenset({"cpuunits", "cpulimit", "agent"})
_LXC_FAST = frozenset(
    {"description", "onboot", "startup", "protection", "hostname", "hookscript", "cores",
     "tags", "lock"}
)  # fmt: skip
_LXC_LIVE = frozenset({"cpulimit", "cpuunits", "memory", "swap"})
_LIST_SPLIT_RE = re.compile(r"[;,\s\0]+")
_KEY_RE = re.compile(r"([a-z]+)\d+")
_NET_RE = re.compile(r"net\d+")
_MEMORY_RE = re.compile(r"(?:current=)?(\d+)")


@dataclass
class Update:
    """One parsed config update: new values, keys to delete, keys to revert."""

    values: dict[str, ConfigValue]
    delete: list[str] = field(default_factory=list)
    revert: list[str] = field(default_factory=list)
    force: bool = False
    digest: str | None = None
    skiplock: bool = False


def _config_value(value: Value) -> ConfigValue:
    """A request value as the config file keeps it (booleans as 0/1)."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, list):
        return ",".join(value)
    return value


def _split(params: Params, name: str) -> list[str]:
    return [item for item in _LIST_SPLIT_RE.split(str(params.get(name, ""))) if item]


def parse_update(kind: GuestKind, params: Params) -> Update:
    """The request's checks before the config is read, in PVE's order and wording."""
    values = {k: _config_value(v) for k, v in params.items() if k not in _CONTROL}
    update = Update(
        values,
        force=bool(params.get("force")),
        digest=str(params["digest"]) if "digest" in params else None,
        skiplock=bool(params.get("skiplock")),
    )
    delete, revert = _split(params, "delete"), _split(params, "revert")
    if not values and not delete and not revert:
        # Qemu.pm $update_vm_api and LXC/Config.pm update_vm: die "no options specified".
        raise failure("no options specified")
    if kind == "qemu":
        _resolve_cdrom_alias(values)
        _qemu_lists(update, delete, revert)
    else:
        _lxc_lists(update, delete, revert)
    return update


def _resolve_cdrom_alias(values: dict[str, ConfigValue]) -> None:
    """qemu-server's `$resolve_cdrom_alias`: `cdrom` is written as `ide2`, a CD-ROM."""
    value = values.pop("cdrom", None)
    if value:
        drive = str(value)
        values["ide2"] = drive if "media=" in drive else f"{drive},media=cdrom"


def _qemu_lists(update: Update, delete: list[str], revert: list[str]) -> None:
    # qemu-server PVE/API2/Qemu.pm $update_vm_api (the odd quoting is PVE's).
    for opt in revert:
        if not option_exists("qemu", opt):
            raise param_error({"revert": f"unknown option '{opt}'"})
        if opt in update.values:
            raise param_error(
                {"delete": f"you can't use '-{opt}' and -revert {opt}' at the same time"}
            )
        update.revert.append(opt)
    for name in delete:
        opt = "ide2" if name == "cdrom" else name
        if opt in update.values:
            raise param_error(
                {"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"}
            )
        if opt in update.revert:
            raise param_error(
                {"revert": f"you can't use '-delete {opt}' and -revert {opt}' at the same time"}
            )
        if not option_exists("qemu", opt):
            raise param_error({"delete": f"unknown option '{opt}'"})
        update.delete.append(opt)


def _lxc_lists(update: Update, delete: list[str], revert: list[str]) -> None:
    # pve-container src/PVE/API2/LXC/Config.pm update_vm.
    for opt in revert:
        if not option_exists("lxc", opt):
            raise param_error({"revert": f"unknown option '{opt}'"})
        if opt in update.values:
            raise param_error(
                {"revert": f"you can't use '-{opt}' and '-revert {opt}' at the same time"}
            )
        update.revert.append(opt)
    for opt in delete:
        if not option_exists("lxc", opt):
            raise param_error({"delete": f"unknown option '{opt}'"})
        if opt in update.values:
            raise param_error(
                {"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"}
            )
        if opt in update.revert:
            raise param_error(
                {"delete": f"you can't use '-delete {opt}' and '-revert {opt}' at the same time"}
            )
        update.delete.append(opt)


def check_update(guest: Guest, update: Update) -> None:
    """The checks on the loaded config (`$load_and_check_config`): digest, lock, balloon."""
    if guest.kind == "lxc":
        # pve-container: check_lock, then PVE::Tools::assert_if_modified (pve-common).
        check_lock(guest)
        if update.digest and update.digest != guest.digest():
            raise failure(MODIFIED)
        return
    if update.digest and update.digest != guest.digest():
        raise failure("checksum mismatch (file change by other user?)")
    if not update.skiplock:
        check_lock(guest)
    values = update.values
    if "memory" in values or "balloon" in values:
        memory = values.get("memory") or guest.pending.get("memory") or guest.config.get("memory")
        maxmem = _memory_mib(memory)
        balloon = values.get("balloon", guest.pending.get("balloon", guest.config.get("balloon")))
        if balloon and int(balloon) > maxmem:  # Qemu.pm $load_and_check_config
            raise failure("balloon value too large (must be smaller than assigned memory)")


def apply_update(guest: Guest, update: Update, volumes: Volumes) -> None:
    """Write the update to the pending section, then apply what the guest's state allows;
    a disk that leaves the config becomes `unusedN` or, forced, is freed (`volumes.detach`)."""
    before = dict(guest.config)
    values = dict(update.values)
    delete = list(update.delete)
    cloudinit_before = tracked_values(guest.config) if guest.kind == "qemu" else None
    for opt in update.revert:
        if opt in guest.config:
            values[opt] = guest.config[opt]
        elif opt in guest.pending:
            delete.append(opt)
    for opt in delete:
        if opt not in guest.config and opt not in guest.pending:
            continue  # PVE warns "cannot delete '...' - not set in current configuration!"
        guest.pending.pop(opt, None)
        if (guest.kind == "qemu" and opt in ("tags", "vmstate")) or opt.startswith("unused"):
            guest.config.pop(opt, None)
            continue
        guest.pending_delete[opt] = update.force
    for opt, given in values.items():
        value = _with_mac(guest, opt, str(given)) if _NET_RE.fullmatch(opt) else given
        if opt == "cipassword" and guest.kind == "qemu":
            # Written straight to the config, hashed (PVE::Tools::encrypt_pw).
            guest.config[opt] = "$5$" + hashlib.sha256(str(value).encode()).hexdigest()
        else:
            guest.pending[opt] = value
        guest.pending_delete.pop(opt, None)
    _cleanup_pending(guest)
    forced = dict(guest.pending_delete)
    if guest.status == "running":
        _hotplug(guest)
    else:
        guest.apply_pending()
    if cloudinit_before is not None:
        record_changes(guest, cloudinit_before)
    detach_removed(volumes, guest, before, forced, force=update.force)


def _with_mac(guest: Guest, opt: str, value: str) -> str:
    """A NIC with a MAC: PVE fills one in from its own prefix when none is given
    (qemu-server `parse_net`/`print_net`, pve-container `parse_lxc_network`)."""
    seed = hashlib.sha1(f"{guest.vmid}/{opt}/{guest.digest()}".encode(), usedforsecurity=False)
    mac = "BC:24:11:" + ":".join(f"{byte:02X}" for byte in seed.digest()[:3])
    parts = value.split(",")
    if guest.kind == "qemu":
        if "=" not in parts[0]:  # `virtio` rather than `virtio=BC:24:11:...`
            parts[0] = f"{parts[0]}={mac}"
        return ",".join(parts)
    if not any(part.startswith("hwaddr=") for part in parts):
        parts.append(f"hwaddr={mac}")
    if not any(part.startswith("type=") for part in parts):
        parts.append("type=veth")
    return ",".join(parts)


def _cleanup_pending(guest: Guest) -> None:
    """PVE's `cleanup_pending`: drop values equal to the current ones, deletes of unset keys."""
    for opt, value in list(guest.pending.items()):
        if opt in guest.config and str(guest.config[opt]) == str(value):
            del guest.pending[opt]
    for opt in list(guest.pending_delete):
        if opt not in guest.config:
            del guest.pending_delete[opt]


def _hotplug_features(guest: Guest) -> set[str]:
    value = str(guest.config.get("hotplug", "network,disk,usb"))
    if value == "1":
        return {"network", "disk", "usb"}
    return set() if value == "0" else set(_LIST_SPLIT_RE.split(value))


def _live(guest: Guest, opt: str, deleting: bool) -> bool:
    """Whether a running guest takes this change now (see the module docstring)."""
    family = found.group(1) if (found := _KEY_RE.fullmatch(opt)) else opt
    if guest.kind == "lxc":
        if opt in _LXC_FAST or opt in _LXC_LIVE or family == "net":
            return True
        if deleting:
            return family == "unused"
        return family in ("mp", "dev") and opt not in guest.config
    features = _hotplug_features(guest)
    if opt in _QEMU_FAST or family == "ipconfig" or opt in _QEMU_LIVE:
        return True
    if opt == "balloon":
        before = int(guest.config.get("balloon", 1)) != 0
        after = deleting or int(guest.pending.get("balloon", 1)) != 0
        return before == after
    if family == "net":
        return "network" in features
    if family in ("scsi", "virtio"):
        return "disk" in features
    if family == "usb" or opt == "tablet":
        return "usb" in features
    if opt == "memory" and "memory" in features and not deleting:
        # DIMMs are plugged at once; unplugging them is not modelled, so a shrink waits.
        return _memory_mib(guest.pending[opt]) >= _memory_mib(guest.config.get(opt))
    return opt == "vcpus" and "cpu" in features


def _memory_mib(value: ConfigValue | None) -> int:
    """MiB of a `memory` value: a number or the property string `current=N,...`."""
    found = _MEMORY_RE.match(str(value if value is not None else 512))
    return int(found.group(1)) if found else 512


def _hotplug(guest: Guest) -> None:
    for opt in list(guest.pending_delete):
        if _live(guest, opt, deleting=True):
            guest.config.pop(opt, None)
            del guest.pending_delete[opt]
    for opt, value in list(guest.pending.items()):
        if _live(guest, opt, deleting=False):
            guest.config[opt] = value
            del guest.pending[opt]


# --- views ---------------------------------------------------------------------------


def config_view(guest: Guest, *, current: bool) -> dict[str, Any]:
    """GET .../config: the config with pending changes in (PVE's `load_current_config`),
    or without them when `current`, plus `parent` and `digest`."""
    config: dict[str, Any] = dict(guest.config)
    if not current:
        config.update(guest.pending)
        for opt in guest.pending_delete:
            config.pop(opt, None)
    if guest.parent is not None:
        config["parent"] = guest.parent
    if config.get("cipassword"):
        config["cipassword"] = HIDDEN
    config["digest"] = guest.digest()
    return config


def pending_view(guest: Guest) -> list[dict[str, Any]]:
    """GET .../pending: PVE's `config_with_pending_array` (digest and parent included)."""
    config: dict[str, Any] = dict(guest.config)
    if guest.parent is not None:
        config["parent"] = guest.parent
    config["digest"] = guest.digest()
    if config.get("cipassword"):
        config["cipassword"] = HIDDEN
    # The schema types `value` and `pending` as strings, as the file holds them.
    items: list[dict[str, Any]] = []
    for opt, value in config.items():
        item: dict[str, Any] = {"key": opt, "value": str(value)}
        if opt in guest.pending:
            item["pending"] = str(guest.pending[opt])
        if opt in guest.pending_delete:
            item["delete"] = 2 if guest.pending_delete[opt] else 1
        items.append(item)
    items += [{"key": k, "pending": str(v)} for k, v in guest.pending.items() if k not in config]
    items += [
        {"key": k, "delete": 2 if force else 1}
        for k, force in guest.pending_delete.items()
        if k not in config
    ]
    return items


# --- handlers ------------------------------------------------------------------------


def _guest(ctx: Context, params: Params, kind: GuestKind) -> Guest:
    ctx.state.node(text(params, "node"))
    return ctx.state.require_guest(text(params, "node"), kind, integer(params, "vmid"))


def _get_config(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        if params.get("snapshot") and params.get("current"):
            # Qemu.pm vm_config and LXC/Config.pm vm_config: one raise_param_exc, two keys.
            both = "cannot use 'snapshot' parameter with 'current'"
            raise param_error({"snapshot": both, "current": both})
        guest = _guest(ctx, params, kind)
        if not params.get("snapshot"):
            return Result(config_view(guest, current=bool(params.get("current"))))
        name = text(params, "snapshot")
        snap = next((s for s in guest.snapshots if s.name == name), None)
        if snap is None:
            raise failure(f"snapshot '{name}' does not exist")
        # AbstractConfig.pm load_snapshot_config: the snapshot's section plus the digest.
        return Result({**snapshot_config(guest, snap), "digest": guest.digest()})

    return handler


def _get_pending(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        return Result(pending_view(_guest(ctx, params, kind)))

    return handler


def put_update(ctx: Context, kind: GuestKind, params: Params) -> None:
    """A synchronous config update (PUT .../config, and qemu's unlink): checks, new
    volumes allocated, then the change written."""
    ctx.state.node(text(params, "node"))  # the proxy to the node comes first
    update = parse_update(kind, params)
    guest = _guest(ctx, params, kind)
    check_update(guest, update)
    attach_new(ctx, guest, update.values)
    apply_update(guest, update, ctx.state.volumes)


def _put_config(kind: GuestKind) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        put_update(ctx, kind, params)
        return Result(None)

    return handler


def _post_config(ctx: Context, params: Params) -> Result:
    """POST .../qemu/{vmid}/config: the same update in a `qmconfig` worker."""
    ctx.state.node(text(params, "node"))
    update = parse_update("qemu", params)
    node, vmid = text(params, "node"), integer(params, "vmid")
    guest = _guest(ctx, params, "qemu")
    check_update(guest, update)  # "early checks before forking/locking"

    def job(_begin: float) -> Plan:
        current = ctx.state.guest_on(node, "qemu", vmid)
        if current is None:
            return fail(qemu_config_missing(node, vmid))
        try:
            check_update(current, update)  # the same checks again, under the flock
            attach_new(ctx, current, update.values)
        except ApiError as err:
            return fail(err.reason)
        volumes = ctx.state.volumes
        return Plan(CONFIG_SECONDS, apply=lambda _at: apply_update(current, update, volumes))

    task = ctx.state.start_task(node, "qmconfig", vmid, ctx.user, job)
    if "background_delay" in params and task.exitstatus is not None:
        # The worker ended within the delay (only when tasks take no time): PVE answers
        # null for success and dies with the status otherwise.
        if task.exitstatus == "OK":
            return Result(None)
        raise failure(f"failed to update VM {vmid}: {task.exitstatus}")
    return Result(task.upid)


ROUTES: tuple[Route, ...] = (
    *for_kinds("GET", "/nodes/{node}/{kind}/{vmid}/config", None, _get_config),
    *for_kinds("GET", "/nodes/{node}/{kind}/{vmid}/pending", None, _get_pending),
    *for_kinds("PUT", "/nodes/{node}/{kind}/{vmid}/config", update_params, _put_config),
    Route(
        "POST",
        "/nodes/{node}/qemu/{vmid}/config",
        update_params("qemu", asynchronous=True),
        _post_config,
    ),
)
