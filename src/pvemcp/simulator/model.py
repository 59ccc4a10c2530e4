"""The objects of the simulated cluster: nodes, guests, snapshots and storages.

Plain mutable records. Static facts (sizes, names, configs) sit beside the few seeded
per-object rates that make the live figures (CPU, memory, traffic) look like a real,
idle-ish cluster; `views` turns them into PVE's JSON and `power` changes their run state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

GuestKind = Literal["qemu", "lxc"]
ConfigValue = str | int | float


@dataclass
class Node:
    """A cluster node; every node of the demo cluster starts online."""

    name: str
    nodeid: int
    ip: str
    cpu_model: str
    sockets: int
    cores: int
    """Physical cores over all sockets."""
    threads: int
    """Logical CPUs: PVE's `maxcpu`."""
    mem_total: int
    swap_total: int
    rootfs_total: int
    rootfs_used: int
    boot_time: float
    host_cpu: float
    """CPU fraction used by the host itself, before guests."""
    host_mem: int
    """Memory used by the host itself, before guests."""
    next_pid: int
    """The next worker PID; task UPIDs carry it."""
    online: bool = True
    """False for a node that has left the quorum: listed as offline, and a migration to it
    cannot reach it (tests switch it off)."""
    swap_used: int = 0
    """Swap in use: none on the demo's nodes (tests set it to see a node under pressure)."""


@dataclass
class Snapshot:
    """A guest snapshot: its metadata and a copy of the config it saved."""

    name: str
    description: str
    snaptime: int
    parent: str | None
    vmstate: bool
    config: dict[str, ConfigValue]
    snapstate: str | None = None
    """`prepare` while being taken, `delete` while being removed (PVE shows both)."""


@dataclass
class Guest:
    """A QEMU VM or an LXC container, with its config as PVE returns it."""

    vmid: int
    kind: GuestKind
    node: str
    config: dict[str, ConfigValue]
    """Keys and value types as GET .../config returns them (`memory` is a string for QEMU)."""
    status: Literal["running", "stopped"]
    pending: dict[str, ConfigValue] = field(default_factory=dict)
    """The `[PENDING]` section: values that apply at the next start (or hotplug)."""
    pending_delete: dict[str, bool] = field(default_factory=dict)
    """Keys pending deletion, with their `force` flag (`delete: !key` in the file)."""
    parent: str | None = None
    """The snapshot the current state descends from (the config's `parent`)."""
    cloudinit: dict[str, ConfigValue] = field(default_factory=dict)
    """The `[special:cloudinit]` section: cloud-init values changed since the drive was
    generated, with their old values (see `simulator/cloudinit.py`)."""
    paused: bool = False
    """QEMU only: running but paused (`qmpstatus: paused`)."""
    checkpointed: bool = False
    """LXC only: suspended by `lxc-checkpoint`, so `resume` can restore it."""
    started_at: float | None = None
    pid: int | None = None
    pool: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    maxdisk: int = 0
    disk_used: int = 0
    """Bytes used in the root volume; PVE reports it for containers only."""
    cpu_load: float = 0.0
    """Fraction of its CPUs a running guest uses."""
    mem_fraction: float = 0.0
    """Fraction of its memory a running guest uses."""
    net_rate: int = 0
    """Bytes per second of inbound traffic while running; outbound is a fraction of it."""
    io_rate: int = 0
    """Bytes per second read from disk while running; writes are a fraction of it."""

    @property
    def name(self) -> str:
        """The VM name or the container hostname."""
        key = "name" if self.kind == "qemu" else "hostname"
        return str(self.config.get(key, f"{'VM' if self.kind == 'qemu' else 'CT'} {self.vmid}"))

    @property
    def cores(self) -> int:
        """Virtual CPUs: sockets x cores for QEMU, cores for LXC."""
        cores = int(self.config.get("cores", 1))
        return cores * int(self.config.get("sockets", 1)) if self.kind == "qemu" else cores

    @property
    def maxmem(self) -> int:
        """Configured memory in bytes."""
        return int(self.config.get("memory", 512)) * MiB

    @property
    def template(self) -> bool:
        """Whether the guest is a template (which cannot be started)."""
        return bool(self.config.get("template", 0))

    @property
    def lock(self) -> str | None:
        """The config lock (`suspended` after a QEMU hibernation), if any."""
        lock = self.config.get("lock")
        return str(lock) if lock is not None else None

    @property
    def tags(self) -> str | None:
        """PVE's `;`-separated tag list, if the guest has tags."""
        tags = self.config.get("tags")
        return str(tags) if tags is not None else None

    def apply_pending(self) -> None:
        """Make every pending change current (`vmconfig_apply_pending`: at a start, or at
        once for a stopped guest)."""
        for key in self.pending_delete:
            self.config.pop(key, None)
        self.config.update(self.pending)
        self.pending.clear()
        self.pending_delete.clear()

    def digest(self) -> str:
        """SHA1 over the whole config file text (pending and snapshot sections included),
        as PVE computes its `digest`: any change to the file changes it."""
        current = dict(self.config)
        if self.parent is not None:
            current["parent"] = self.parent
        text = _section(current)
        if self.pending or self.pending_delete:
            marked = [("!" if force else "") + key for key, force in self.pending_delete.items()]
            pending = {**self.pending, "delete": ",".join(sorted(marked))}
            text += "\n[PENDING]\n" + _section(pending)
        if self.cloudinit:
            text += "\n[special:cloudinit]\n" + _section(self.cloudinit)
        for snap in self.snapshots:
            saved: dict[str, ConfigValue] = {**snap.config, "snaptime": snap.snaptime}
            saved.update(parent=snap.parent or "", description=snap.description)
            saved["snapstate"] = snap.snapstate or ""
            text += f"\n[{snap.name}]\n" + _section(saved)
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _section(values: dict[str, ConfigValue]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in sorted(values.items()) if value != "")


@dataclass
class Storage:
    """A storage definition and its usage on each node that has it."""

    name: str
    type: str
    content: tuple[str, ...]
    shared: bool
    usage: dict[str, tuple[int, int]]
    """Node name -> (total bytes, bytes used by other things than the guests' volumes, which
    `volumes.Volumes` adds); a shared storage shows the same on every node."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further storage.cfg keys of this storage (an RBD storage's `pool`)."""
