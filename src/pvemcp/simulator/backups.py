"""Backups: vzdump archives as volumes in a storage's content, and restores from them.

POST `/nodes/{node}/vzdump` forks one `vzdump` worker for the node's guests it names
(pve-manager `PVE/API2/VZDump.pm`, `PVE/VZDump.pm`). Each guest's archive becomes a volume
`<storage>:backup/vzdump-<qemu|lxc>-<vmid>-<YYYY_MM_DD-HH_MM_SS>.<vma|tar>[.zst|.gz|.lzo]`
that takes space on the storage (a full storage fails that guest's backup), lists in GET
`.../storage/{storage}/content` with pve-storage's backup fields (`subtype`, `notes`,
`protected`) and keeps the guest's config and disk sizes, so a restore recreates it.
POST `/nodes/{node}/qemu` with `archive` and `/nodes/{node}/lxc` with `restore=1` come
here from `create.py` (qemu-server `API2/Qemu.pm` `create_vm`, `restore_vma_archive`;
pve-container `API2/LXC.pm` `create_vm`). GET `/nodes/{node}/vzdump/extractconfig` shows
an archive's config; GET `.../storage/{storage}/content/{volume}` one volume.

Where the simulator is simpler than PVE (said here once):
- vzdump plans its whole run when the worker starts (the checks, the log, how long each
  guest takes); each guest's part then happens at its own time (`Plan.steps`): the guest
  holds `lock: backup` (and in `stop` mode is stopped) only during its part, and its
  archive appears when its part ends. The node's one-vzdump-at-a-time lock
  (`/var/run/vzdump.lock`) is a task lock key: a second job queues behind the first.
- An archive's size is a fixed fraction of the backed-up disks' sizes per compressor (a
  real archive holds the used blocks, compressed).
- A restore checks the target storages' room before it touches anything, so a failed
  restore changes nothing: PVE frees an existing guest's disks first and would leave it
  with `memory: 128`, and leaves a new VM's empty config behind ("VM 120 state is NOT
  cleaned up"). Prune settings, the protected-backup limit, HA and the vzdump.conf
  defaults (storage `local`, as `get_storage_param` falls back to) are not modelled.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .create import (
    _check_pool,
    _cloudinit_drives,
    _config_values,
    _qemu_identity,
    check_vmid_unused,
)
from .errors import ApiError, failure, param_error
from .guestconfig import _with_mac
from .locks import locked_message, remove_lock, set_lock
from .model import ConfigValue, GiB, Guest, GuestKind, Storage
from .params import SchemaParams
from .power import halt, request_power_action, start_running
from .router import Context, Params, Result, Route, integer, text
from .tasks import Plan, Task, fail
from .volumes import (
    BLOCK_TYPES,
    Volume,
    Volumes,
    drive_file,
    is_cdrom,
    is_disk_key,
    size_option,
    with_size,
)

SECONDS_PER_GUEST = 2.0
"""How long vzdump spends on one guest besides its data, before the time scale."""
SECONDS_PER_GIB = 0.05
"""How long vzdump or a restore takes per GiB of disk, before the time scale."""
RESTORE_SECONDS = 2.0
"""How long a restore worker runs besides its data, before the time scale."""

COMPRESSORS: dict[str, tuple[str, float]] = {
    "0": ("", 1.0),
    "1": (".lzo", 0.6),
    "lzo": (".lzo", 0.6),
    "gzip": (".gz", 0.5),
    "zstd": (".zst", 0.45),
}
"""vzdump's `compress` values: the archive's extension (`compressor_info`) and the share
of the disks' sizes the simulated archive takes."""

_NOTES_VARS = ("cluster", "guestname", "node", "vmid")
_LIST_SPLIT_RE = re.compile(r"[;,\s]+")


@dataclass
class Backup(Volume):
    """A vzdump archive on a backup storage, with what a restore needs: the guest's
    config as it was (disk values carry their sizes) and the archive's attributes."""

    kind: GuestKind = "qemu"
    config: dict[str, ConfigValue] = field(default_factory=dict)
    notes: str = ""
    protected: bool = False

    def item(self) -> dict[str, Any]:
        """pve-storage's `get_subdir_files` backup item: no `used`, a `subtype`, the
        notes' first line and the protection flag."""
        item = super().item()
        del item["used"]
        item["subtype"] = self.kind
        if self.notes:
            item["notes"] = self.notes.split("\n", 1)[0]
        if self.protected:
            item["protected"] = 1
        return item

    def disks(self) -> dict[str, tuple[str, int]]:
        """The archived volumes: config key -> (storage they were on, size in bytes)."""
        found = {}
        for key, value in self.config.items():
            if backed_up(self.kind, key, value):
                found[key] = (drive_file(value).split(":", 1)[0], size_option(value))
        return found


def backed_up(kind: GuestKind, key: str, value: ConfigValue) -> bool:
    """Whether vzdump archives this config key's volume: a VM's disks but not CD-ROMs,
    unused volumes or `backup=0` (qemu-server `VZDump/QemuServer.pm`), a container's
    rootfs and the mount points with `backup=1` (pve-container `VZDump/LXC.pm`)."""
    if not is_disk_key(kind, key) or key.startswith("unused") or is_cdrom(value):
        return False
    options = str(value).split(",")[1:]
    if kind == "qemu":
        return "backup=0" not in options
    return key == "rootfs" or "backup=1" in options


def dump_dir(storage: Storage) -> str:
    """Where a storage keeps its archives: `local` at /var/lib/vz, a network storage
    where PVE mounts it (pve-storage `get_backup_dir`, with the default paths)."""
    base = "/var/lib/vz" if storage.name == "local" else f"/mnt/pve/{storage.name}"
    return f"{base}/dump"


def volume_path(storage: Storage, volname: str) -> str:
    """A volume's path on the node, as `PVE::Storage::path` gives it for the simulated
    storage types (block storages: LVM's volume group `pve`, ZFS's `rpool/data`)."""
    if storage.type == "zfspool":
        return f"/dev/zvol/rpool/data/{volname}"
    if storage.type in BLOCK_TYPES:
        return f"/dev/pve/{volname}"
    kind, _, rest = volname.partition("/")
    base = dump_dir(storage).removesuffix("/dump")
    subdir = {"backup": "dump", "iso": "template/iso", "vztmpl": "template/cache",
              "snippets": "snippets", "import": "import"}  # fmt: skip
    if kind in subdir:
        return f"{base}/{subdir[kind]}/{rest}"
    return f"{base}/images/{volname}"


def archive_volname(kind: GuestKind, vmid: int, at: float, compress: str) -> tuple[str, str]:
    """(volname, format) of a new archive (`exec_backup_task`: `vzdump-$vmtype-$vmid` and
    the start time; the simulated nodes keep UTC)."""
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime(at))
    fmt = ("vma" if kind == "qemu" else "tar") + COMPRESSORS[compress][0]
    return f"backup/vzdump-{kind}-{vmid}-{stamp}.{fmt}", fmt


def _archive_size(guest: Guest, compress: str) -> int:
    disks = sum(size_option(v) for k, v in guest.config.items() if backed_up(guest.kind, k, v))
    return max(int(disks * COMPRESSORS[compress][1]), 1024 * 1024)


def _new_backup(guest: Guest, storage: str, at: float, compress: str, notes: str) -> Backup:
    volname, fmt = archive_volname(guest.kind, guest.vmid, at, compress)
    config = {k: v for k, v in guest.config.items() if k != "lock"}
    size = _archive_size(guest, compress)
    return Backup(storage, "", volname, guest.vmid, size, fmt, "backup", int(at),
                  kind=guest.kind, config=config, notes=notes)  # fmt: skip


SEEDED = ((101, "2026_11_30-23_00_02"), (201, "2026_11_30-23_01_40"))
"""Monthly archives kept protected on `nfs-backup` (fixed names, so tests and examples
can name them): (vmid, time stamp)."""


_NIGHTLY_RE = re.compile(
    r"INFO: creating vzdump archive '/mnt/pve/([\w.-]+)/dump/"
    r"(vzdump-(?:qemu|lxc)-(\d+)-(\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d)\.([\w.]+))'"
)
_SIZE_LINE_RE = re.compile(r"INFO: archive file size: (\d+)MB")


def _stamp_time(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y_%m_%d-%H_%M_%S"))


def seed_backups(volumes: Volumes, guests: Iterable[Guest], history: Iterable[Task]) -> None:
    """Record the seeded archives with their guests' configs: the protected monthly ones,
    and those the seeded nightly vzdump jobs' logs say they made (with the size the log
    gives and the job's `{{guestname}}` notes), so the content agrees with the history."""
    by_vmid = {guest.vmid: guest for guest in guests}
    for vmid, stamp in SEEDED:
        guest = by_vmid[vmid]
        backup = _new_backup(guest, "nfs-backup", _stamp_time(stamp), "zstd",
                             f"monthly {guest.name}")  # fmt: skip
        backup.protected = True
        volumes.add(guest.node, backup)
    for task in history:
        lines = task.history_lines if task.type == "vzdump" else ()
        for index, line in enumerate(lines):
            found = _NIGHTLY_RE.fullmatch(line)
            owner = by_vmid.get(int(found.group(3))) if found else None
            if found is None or owner is None:
                continue
            storage, name, _vmid, stamp, fmt = found.groups()
            sizes = (m for m in map(_SIZE_LINE_RE.fullmatch, lines[index:]) if m)
            size = int(next(sizes).group(1)) * 1024 * 1024
            config = {k: v for k, v in owner.config.items() if k != "lock"}
            backup = Backup(storage, "", f"backup/{name}", owner.vmid, size, fmt, "backup",
                            _stamp_time(stamp), kind=owner.kind, config=config,
                            notes=owner.name)  # fmt: skip
            volumes.add(owner.node, backup)


# --- vzdump ----------------------------------------------------------------------------


def _notes_problems(template: str) -> str | None:
    """pve-manager `$verify_notes_template`, its words and its positions (`pos()` after
    the match, less 2 for an escape, less the name's length for a variable)."""
    if "\n" in template:
        return "contains a line feed"
    problems = [
        f"escape sequence '\\{m.group(1)}' at char {m.start()}"
        for m in re.finditer(r"\\(.)", template)
        if m.group(1) not in ("n", "\\")
    ]
    problems += [
        f"variable '{m.group(1)}' at char {m.end() - len(m.group(1))}"
        for m in re.finditer(r"\{\{([^\s{}]+)\}\}", template)
        if m.group(1) not in _NOTES_VARS
    ]
    return "found unknown: " + ", ".join(problems) if problems else None


def _notes(template: str, cluster: str, guest: Guest) -> str:
    """pve-manager `$generate_notes`: `\\n` and `\\\\` unescaped, the variables filled."""
    values = {"cluster": cluster, "guestname": guest.name, "node": guest.node,
              "vmid": str(guest.vmid)}  # fmt: skip
    text = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), template)
    return re.sub(r"\{\{(" + "|".join(_NOTES_VARS) + r")\}\}", lambda m: values[m.group(1)], text)


def _verify(params: Params) -> None:
    """`verify_vzdump_parameters` and the API's own refusals, before the fork."""
    if params.get("stdout"):
        raise param_error({"stdout": "option is only allowed on the command line interface."})
    for name in ("all", "exclude", "pool"):
        if params.get(name) and params.get("vmid"):
            raise param_error({name: "option conflicts with option 'vmid'"})
    template = params.get("notes-template")
    if template and (problem := _notes_problems(str(template))):
        raise param_error({"notes-template": problem})
    if not (params.get("all") or params.get("exclude") or params.get("pool")) and not (
        params.get("vmid") or params.get("stop")
    ):
        raise param_error({"vmid": "property is missing"})
    if "dumpdir" in params:
        raise failure("a dumpdir outside a storage is not simulated")


def _included(ctx: Context, params: Params) -> list[int]:
    """`get_included_guests`: the vmids of a pool, a list, or all but `exclude`."""
    if params.get("pool"):
        return sorted(g.vmid for g in ctx.state.guests.values() if g.pool == params["pool"])
    if params.get("vmid"):
        return sorted({int(v) for v in _LIST_SPLIT_RE.split(str(params["vmid"])) if v})
    exclude = {int(v) for v in _LIST_SPLIT_RE.split(str(params.get("exclude", ""))) if v}
    return sorted(vmid for vmid in ctx.state.guests if vmid not in exclude)


def _storage_error(ctx: Context, node: str, name: str) -> str | None:
    """What `PVE::VZDump->new` dies with for the job's storage (the first of its errors)."""
    storage = ctx.state.volumes.storages.get(name)
    if storage is None or node not in storage.usage:
        return f"could not activate storage '{name}': storage '{name}' does not exist"
    if "backup" not in storage.content:
        return (
            f"could not get storage information for '{name}': "
            f"can't use storage '{name}' for backups - wrong content type"
        )
    return None


def _command_line(vmids: list[int], params: Params) -> str:
    """`PVE::VZDump::Common::command_line`, simplified: the ids, then each option."""
    options = " ".join(f"--{k} {v}" for k, v in sorted(params.items()) if k not in ("node",
                       "vmid"))  # fmt: skip
    return " ".join(["vzdump", *(str(v) for v in vmids), options]).strip()


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


Step = Callable[[float], None]


@dataclass
class _Job:
    """One vzdump worker's run, planned when it starts: its log and what it changes as
    it goes (each guest's part at its own time)."""

    node: str
    storage: str
    lines: list[tuple[float, str]] = field(default_factory=list)
    """(seconds after the start, text)."""
    steps: list[tuple[float, Step]] = field(default_factory=list)
    """(seconds after the start, change)."""
    planned: int = 0
    """Bytes of the archives the job makes before the guest being planned."""
    errors: int = 0
    elapsed: float = 0.0

    def log(self, text: str) -> None:
        self.lines.append((self.elapsed, text))


def _guest_part(
    ctx: Context, job: _Job, guest: Guest, backup: Backup | None, *, stop: bool, began: float
) -> None:
    """The guest's part of the job, from `began` to now (seconds into the job): locked
    (`lock_vm`) and, in stop mode, stopped when it begins; the archive kept, the guest
    unlocked and started again when it ends. A guest that another task locked meanwhile
    is left alone (the log, planned when the job started, does not say so)."""
    mine: list[bool] = []

    def begin(_at: float) -> None:
        if guest.lock is None:
            set_lock(guest, "backup")
            mine.append(True)
            if stop:
                halt(guest)

    def end(at: float) -> None:
        if not mine:
            return
        if backup is not None:
            ctx.state.volumes.add(job.node, backup)
        remove_lock(guest)
        if stop and guest.status == "stopped":
            start_running(ctx.state, guest, at)  # "restarting vm"

    job.steps += [(began, begin), (job.elapsed, end)]


def _back_up(ctx: Context, job: _Job, vmid: int, params: Params, begin: float) -> None:
    """One guest of the job (`exec_backup_task`): lock, archive, notes, protection."""
    state = ctx.state
    guest = state.guests.get(vmid)
    kind = guest.kind if guest is not None else "qemu"
    job.log(f"INFO: Starting Backup of VM {vmid} ({kind})")
    job.log(f"INFO: Backup started at {_stamp(begin + job.elapsed)}")
    error: str | None = None
    if guest is None or guest.node != job.node:
        job.elapsed += SECONDS_PER_GUEST
        error = f"unable to find VM '{vmid}'"
    elif message := locked_message(guest):
        job.elapsed += SECONDS_PER_GUEST
        error = message  # the plugin's `lock_vm` is AbstractConfig `set_lock`: check_lock
    else:
        compress = str(params.get("compress", "0"))
        storage = state.volumes.storages[job.storage]
        total, used = state.volumes.usage(storage, job.node)
        mode = str(params.get("mode", "snapshot")) if guest.status == "running" else "stop"
        job.log(f"INFO: status = {guest.status}")
        job.log(f"INFO: backup mode: {mode}")
        job.log(f"INFO: ionice priority: {params.get('ionice', 7)}")
        stop, began = mode == "stop" and guest.status == "running", job.elapsed
        if stop:
            job.log("INFO: stopping virtual guest")
        notes = params.get("notes-template")
        backup = _new_backup(guest, job.storage, begin + job.elapsed, compress,
                             _notes(str(notes), state.name, guest) if notes else "")  # fmt: skip
        backup.protected = bool(params.get("protected"))
        path = f"{dump_dir(storage)}/{backup.volname.removeprefix('backup/')}"
        job.log(f"INFO: creating vzdump archive '{path}'")
        job.elapsed += SECONDS_PER_GUEST + SECONDS_PER_GIB * backup.size / GiB
        if backup.size > total - used - job.planned:
            # The tool that meets the full disk fails the guest's backup: vma for a VM, tar
            # for a container (the words are theirs; not verified on a node).
            error = (
                "vma_queue_write: write error - No space left on device"
                if guest.kind == "qemu"
                else "tar: -: Cannot write: No space left on device"
            )
            _guest_part(ctx, job, guest, None, stop=stop, began=began)
        else:
            job.log(f"INFO: archive file size: {backup.size // (1024 * 1024)}MB")
            if notes:
                job.log("INFO: adding notes to backup")
            if backup.protected:
                job.log("INFO: marking backup as protected")
            job.planned += backup.size
            _guest_part(ctx, job, guest, backup, stop=stop, began=began)
    if error is not None:
        job.errors += 1
        job.log(f"ERROR: Backup of VM {vmid} failed - {error}")
    else:
        job.log(f"INFO: Finished Backup of VM {vmid} (00:00:{int(SECONDS_PER_GUEST):02d})")


def _vzdump(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    _verify(params)
    included = _included(ctx, params)
    guests = ctx.state.guests
    local = [v for v in included if v not in guests or guests[v].node == node]
    skipped = [v for v in included if v not in local]
    if not local:
        return Result("OK")  # "silent exit if specified VMs run on other nodes"
    storage = str(params.get("storage") or "local")

    def work(begin: float) -> Plan:
        if error := _storage_error(ctx, node, storage):
            return fail(error)
        job = _Job(node, storage)
        job.log(f"INFO: starting new backup job: {_command_line(local, params)}")
        if skipped:
            job.log("INFO: skip external VMs: " + ", ".join(str(v) for v in skipped))
        for vmid in local:
            _back_up(ctx, job, vmid, params, begin)
        job.log(f"INFO: Backup job finished {'with errors' if job.errors else 'successfully'}")
        seconds = max(job.elapsed, SECONDS_PER_GUEST)
        lines = tuple((at / seconds, line) for at, line in job.lines)
        steps = tuple((at / seconds, step) for at, step in job.steps)
        return Plan(seconds, error="job errors" if job.errors else None, lines=lines,
                    steps=steps)  # fmt: skip

    taskid = local[0] if len(local) == 1 else None
    task = ctx.state.start_task(node, "vzdump", taskid, ctx.user, work, locks=[("vzdump", node)])
    return Result(task.upid)


def find_backup(ctx: Context, node: str, volid: str, wanted: str = "backup") -> Backup:
    """The archive `volid` as `node` sees it, or PVE's refusal (`check_volume_access`,
    then `abs_filesystem_path`)."""
    storage, _, volname = volid.partition(":")
    if not volname:
        raise failure(f"can't find file '{volid}'")  # a path, which only root may pass
    ctx.state.volumes.storage_on(storage, node)
    head = volname.split("/", 1)[0]
    vtype = head if head in ("backup", "iso", "vztmpl", "snippets", "import") else "images"
    if vtype != wanted:
        raise failure(f"unable to use volume {volid} - content type needs to be '{wanted}'")
    found = ctx.state.volumes.find(node, volid)
    if not isinstance(found, Backup):
        raise failure(f"can't find file '{volid}'")
    return found


def _extractconfig(ctx: Context, params: Params) -> Result:
    """GET .../vzdump/extractconfig: the archive's guest config as its file text; a VM's
    with vzdump's `#qmdump#map` lines naming each disk's storage and format."""
    node = ctx.state.node(text(params, "node")).name
    backup = find_backup(ctx, node, text(params, "volume"))
    lines = [f"{key}: {value}" for key, value in sorted(backup.config.items())]
    if backup.kind == "qemu":
        for key, (storage, _size) in sorted(backup.disks().items()):
            fmt = "raw" if ctx.state.volumes.storages[storage].type in BLOCK_TYPES else "qcow2"
            lines.append(f"#qmdump#map:{key}:drive-{key}:{storage}:{fmt}:")
    return Result("\n".join(lines) + "\n")


def _volume_info(ctx: Context, params: Params) -> Result:
    """GET .../storage/{storage}/content/{volume} (pve-manager `API2/Storage/Content.pm`
    `info`): a volume given by its volid or by its name on that storage."""
    node = ctx.state.node(text(params, "node")).name
    name, volume = text(params, "storage"), text(params, "volume")
    storage = ctx.state.volumes.storage_on(name, node)
    volid = volume if volume.startswith(f"{name}:") else f"{name}:{volume}"
    found = ctx.state.volumes.find(node, volid)
    if found is None:
        # `volume_size_info` finds no file (wording from Content.pm, not seen on a node)
        raise failure(f"volume_size_info on '{volid}' failed - no format")
    info: dict[str, Any] = {
        "path": volume_path(storage, found.volname),
        "size": found.size,
        "used": 0 if found.base else found.size,
        "format": found.format,
    }
    if isinstance(found, Backup):
        info["notes"] = found.notes
        info["protected"] = 1 if found.protected else 0
    return Result(info)


# --- restore (POST /nodes/{node}/qemu with archive, /nodes/{node}/lxc with restore) -----


def _word(kind: GuestKind) -> str:
    return "VM" if kind == "qemu" else "CT"


def _restore_storage(ctx: Context, node: str, kind: GuestKind, name: str) -> None:
    """The target storage must hold the guest's volumes: qemu-server's `$check_storage`
    in the worker, pve-container's `$check_and_activate_storage` before it."""
    storage = ctx.state.volumes.storage_on(name, node)
    wanted = "images" if kind == "qemu" else "rootdir"
    if wanted in storage.content:
        return
    if kind == "qemu":
        raise failure(f"Content type 'images' is not available on storage '{name}'")
    raise param_error({"storage": f"storage '{name}' does not support container directories"})


def _existing(ctx: Context, node: str, kind: GuestKind, vmid: int, force: bool) -> Guest | None:
    """The guest a forced restore replaces, after `create_and_lock_config`'s checks."""
    emsg = f"unable to restore {_word(kind)} {vmid} -"
    existing = ctx.state.guests.get(vmid)
    if existing is None:
        return None
    if not force or existing.node != node or existing.kind != kind:
        # PVE checks only the local config file when forced; a vmid of another node or
        # kind is refused here as pmxcfs would refuse the second config (not verified).
        try:
            check_vmid_unused(ctx, vmid)
        except ApiError as err:
            raise failure(err.reason if kind == "lxc" else f"{emsg} {err.reason}") from None
    if kind == "lxc":
        if existing.status == "running":
            raise failure("can't overwrite running container")
        if existing.config.get("protection"):
            raise failure(f"{emsg} protection mode enabled")
    if message := locked_message(existing):
        raise failure(f"{emsg} {message}")
    return existing


def _targets(backup: Backup, storage: str | None) -> dict[str, str]:
    """Each archived disk's target storage: `storage` if given, else where it was (a
    container's all go to `storage`, which defaults to `local` in pve-container)."""
    if backup.kind == "lxc":
        return dict.fromkeys(backup.disks(), storage or "local")
    return {key: storage or was for key, (was, _size) in backup.disks().items()}


def _restored_config(
    ctx: Context, guest: Guest, backup: Backup, made: dict[str, Volume], params: Params
) -> dict[str, ConfigValue]:
    """The archived config with the new volumes, override values and, with `unique`, new
    MACs (and for a VM a new SMBIOS UUID and generation id: `restore_update_config_line`)."""
    config = {k: v for k, v in backup.config.items() if not k.startswith("unused")}
    for key, volume in made.items():
        rest = str(config[key]).split(",")[1:]
        config[key] = with_size(",".join([volume.volid, *rest]), volume.size)
    overrides = _config_values(guest.kind, params)
    config.update({k: v for k, v in overrides.items() if not is_disk_key(guest.kind, k)})
    if params.get("unique"):
        for key in [k for k in config if re.fullmatch(r"net\d+", k)]:
            parts = str(config[key]).split(",")
            if guest.kind == "qemu":
                parts[0] = parts[0].split("=", 1)[0]
            kept = ",".join(part for part in parts if not part.startswith("hwaddr="))
            config[key] = _with_mac(guest, key, kept)
        if guest.kind == "qemu":
            config.pop("smbios1", None)
            config.pop("vmgenid", None)
            _qemu_identity(config, guest.vmid, ctx.now)
    return config


def _restore_job(
    ctx: Context, guest: Guest, backup: Backup, params: Params, old: Guest | None
) -> Plan:
    """The restore worker: its checks, then the old disks swapped for new ones."""
    kind, vmid, node = guest.kind, guest.vmid, guest.node
    emsg = f"unable to restore {_word(kind)} {vmid} -"
    volumes = ctx.state.volumes
    if old is not None and kind == "qemu" and guest.config.get("protection"):
        raise failure(f"{emsg} protection mode enabled")
    if old is not None and guest.status == "running":
        raise failure(f"{emsg} vm is running" if kind == "qemu" else
                      f"{emsg} can't overwrite running container")  # fmt: skip
    if backup.kind != kind:
        if kind == "qemu":  # a .tar goes to `restore_tar_archive`, which looks for its config
            path = volume_path(volumes.storages[backup.storage], backup.volname)
            raise failure(f"ERROR: file '{path}' does not look like a QemuServer vzdump backup")
        # `recover_config_from_tar` on a VMA finds no pct.conf (wording not verified)
        raise failure(f"{emsg} ERROR: archive contains no configuration file")
    storage = str(params["storage"]) if "storage" in params else None
    targets = _targets(backup, storage)
    for name in sorted(set(targets.values())):
        _restore_storage(ctx, node, kind, name)
    owned = (volumes.find(node, drive_file(value)) for key, value in guest.config.items()
             if is_disk_key(kind, key))  # fmt: skip
    freed = [v for v in owned if v is not None and v.vmid == vmid]
    for volume in freed:  # PVE frees the old disks first (`$restore_cleanup_oldconf`)
        volumes.free(node, volume.volid)
    made: dict[str, Volume] = {}
    try:
        for key, name in sorted(targets.items()):
            size = backup.disks()[key][1]
            made[key] = volumes.allocate(node, name, vmid, size, kind=kind, at=ctx.now)
        config = _restored_config(ctx, guest, backup, made, params)
        cloudinit = {k: v for k, v in config.items() if kind == "qemu" and
                     drive_file(v).endswith("-cloudinit") and is_cdrom(v)}  # fmt: skip
        for key, value in cloudinit.items():
            target = storage or drive_file(value).split(":", 1)[0]
            config[key] = f"{target}:cloudinit,media=cdrom"
        made |= {f"ci-{v.volid}": v for v in _cloudinit_drives(ctx, guest, config)}
    except ApiError as err:
        for volume in made.values():
            volumes.free(node, volume.volid)
        for volume in freed:
            volumes.add(node, volume)
        raise failure(err.reason if kind == "qemu" else f"{emsg} {err.reason}") from None
    lines = [(0.0, f"restore vma archive: vma extract -v -r /var/tmp/vzdumptmp.fifo "
                   f"{volume_path(volumes.storages[backup.storage], backup.volname)}")
             if kind == "qemu" else
             (0.0, f"recovering backed-up configuration from '{backup.volid}'")]  # fmt: skip
    lines += [(0.1, f"new volume ID is '{v.volid}'") for v in made.values()]
    lines += [(0.5, f"restoring '{backup.volid}' now..")] if kind == "lxc" else []
    data = sum(v.size for v in made.values())

    def apply(_at: float) -> None:
        guest.config = config
        guest.pending.clear()
        guest.pending_delete.clear()
        guest.cloudinit.clear()
        guest.snapshots.clear()
        guest.parent = None
        guest.maxdisk = next((v.size for k, v in made.items() if k in ("scsi0", "virtio0",
                              "sata0", "ide0", "rootfs")), 0)  # fmt: skip
        if "pool" in params:
            guest.pool = str(params["pool"])

    return Plan(RESTORE_SECONDS + SECONDS_PER_GIB * data / GiB, lines=tuple(lines), apply=apply)


def restore(ctx: Context, kind: GuestKind, params: Params) -> Result:
    """POST /nodes/{node}/qemu with `archive`, or /nodes/{node}/lxc with `restore`."""
    node, vmid = ctx.state.node(text(params, "node")).name, integer(params, "vmid")
    archive = text(params, "archive" if kind == "qemu" else "ostemplate")
    if kind == "qemu":
        for key in sorted(params):
            if is_disk_key("qemu", key) and not key.startswith("unused"):
                raise param_error({key: "option conflicts with option 'archive'"})
    force = bool(params.get("force"))
    # In PVE's order: pve-container checks the existing guest first, qemu-server the
    # pool and the archive first (then `create_and_lock_config`).
    old = _existing(ctx, node, kind, vmid, force) if kind == "lxc" else None
    _check_pool(ctx, params)
    backup = find_backup(ctx, node, archive)
    if kind == "lxc":
        _restore_storage(ctx, node, kind, str(params.get("storage", "local")))
    else:
        old = _existing(ctx, node, kind, vmid, force)
    guest = old or Guest(vmid, kind, node, {}, "stopped")
    set_lock(guest, "create")
    ctx.state.guests[vmid] = guest

    def work(_begin: float) -> Plan:
        try:
            plan = _restore_job(ctx, guest, backup, params, old)
        except ApiError as err:
            plan = fail(err.reason)
        if plan.error is not None and old is None:
            del ctx.state.guests[vmid]  # pve-container destroys it; see the module's note
        unlock = ((1.0, lambda _at: remove_lock(guest)),)  # at the end, OK or not
        return Plan(plan.seconds, plan.error, plan.lines, plan.apply, steps=unlock)

    type_ = "qmrestore" if kind == "qemu" else "vzrestore"
    upid = ctx.state.start_task(node, type_, vmid, ctx.user, work).upid
    if params.get("start"):
        request_power_action(ctx.state, kind, node, vmid, "start", params={}, user=ctx.user)
    return Result(upid)


ROUTES: tuple[Route, ...] = (
    # The options PVE restricts to root@pam (API2/VZDump.pm's permissions).
    Route(
        "POST",
        "/nodes/{node}/vzdump",
        SchemaParams(
            "POST", "/nodes/{node}/vzdump", root_only=("dumpdir", "job-id", "script", "tmpdir")
        ),
        _vzdump,
    ),
    Route(
        "GET",
        "/nodes/{node}/vzdump/extractconfig",
        SchemaParams("GET", "/nodes/{node}/vzdump/extractconfig"),
        _extractconfig,
    ),
    Route(
        "GET",
        "/nodes/{node}/storage/{storage}/content/{volume}",
        SchemaParams("GET", "/nodes/{node}/storage/{storage}/content/{volume}"),
        _volume_info,
    ),
)
