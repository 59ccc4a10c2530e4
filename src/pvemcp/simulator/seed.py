"""The demo cluster `demo`: three nodes, fourteen guests, three storages and a task history.

Fixed on purpose where tests depend on it (vmids, names, nodes, run states: a stopped and
a running VM on pve1, a paused VM, a VM and a container that share the name `test`); the
seed only varies the figures a real cluster varies (MACs, UUIDs, usage, uptimes, PIDs).
Times are relative to the clock's value at creation, so an injected clock gives the same
cluster every time.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

from .model import ConfigValue, GiB, Guest, GuestKind, MiB, Node, Snapshot, Storage, TiB
from .tasks import Task, encode_upid

CLUSTER_NAME = "demo"
DAY = 86_400.0
HISTORY_USER = "root@pam"

_NODES = (
    # name, nodeid, ip, cpu model, sockets, cores, threads, memory GiB, uptime days
    ("pve1", 1, "10.10.10.11", "AMD EPYC 7313P 16-Core Processor", 1, 16, 32, 128, 41),
    ("pve2", 2, "10.10.10.12", "AMD EPYC 7313P 16-Core Processor", 1, 16, 32, 128, 41),
    ("pve3", 3, "10.10.10.13", "Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz", 1, 8, 16, 64, 12),
)


@dataclass(frozen=True)
class _GuestSpec:
    vmid: int
    kind: GuestKind
    node: str
    name: str
    state: Literal["running", "stopped", "paused"]
    cores: int
    memory_mib: int
    disk_gib: int
    tags: str | None = None
    pool: str | None = None
    ostype: str = ""
    template: bool = False


_GUESTS = (
    _GuestSpec(100, "qemu", "pve1", "web01", "running", 2, 4096, 32, "prod;web", "prod", "l26"),
    _GuestSpec(101, "qemu", "pve1", "web02", "stopped", 2, 4096, 32, "prod;web", "prod", "l26"),
    _GuestSpec(102, "qemu", "pve1", "test", "running", 1, 2048, 16, "test", None, "l26"),
    _GuestSpec(103, "qemu", "pve1", "win11-build", "stopped", 4, 8192, 80, "ci", None, "win11"),
    _GuestSpec(200, "lxc", "pve1", "dns01", "running", 1, 512, 8, "infra;dns", None, "debian"),
    _GuestSpec(201, "lxc", "pve1", "proxy01", "stopped", 1, 1024, 8, "infra", None, "alpine"),
    _GuestSpec(104, "qemu", "pve2", "db01", "running", 4, 16384, 100, "prod;db", "prod", "l26"),
    _GuestSpec(105, "qemu", "pve2", "db02", "paused", 4, 16384, 100, "prod;db", "prod", "l26"),
    _GuestSpec(202, "lxc", "pve2", "monitoring", "running", 2, 2048, 20, "infra", None, "debian"),
    _GuestSpec(9000, "qemu", "pve2", "tmpl-deb12", "stopped", 2, 2048, 8, None, None, "l26", True),
    _GuestSpec(106, "qemu", "pve3", "gitlab", "running", 4, 8192, 120, "dev", "dev", "l26"),
    _GuestSpec(107, "qemu", "pve3", "ci-runner", "stopped", 2, 4096, 40, "dev;ci", "dev", "l26"),
    _GuestSpec(203, "lxc", "pve3", "test", "running", 1, 512, 8, "test", None, "ubuntu"),
    _GuestSpec(204, "lxc", "pve3", "nginx-dev", "stopped", 1, 512, 8, "dev", "dev", "debian"),
)  # fmt: skip

_SECURE_BOOT = frozenset({100, 101})
"""Linux VMs set up with UEFI secure boot and a TPM, like the Windows one."""

_ON_ZFS = frozenset({203, 204})
"""Containers whose root is on `local-zfs` (pve2 and pve3 only): 203 is HA-managed and
replicated to pve2 (`simulator/ha.py`, `replication.py`); 204 has no replication job yet."""

_SNAPSHOTS = {
    100: (("pre-upgrade", "before the Debian 13 upgrade", 20.0, False),
          ("after-upgrade", "upgrade done, services checked", 19.0, True)),
    104: (("before-migration", "schema migration 2025-03", 9.0, False),),
    202: (("pre-update", "", 45.0, False),),
}  # fmt: skip
"""Snapshots: (name, description, days ago, with RAM). 202's is old and forgotten, as
proxmox_diagnose_guests finds it."""

SILENT_AGENTS = frozenset({102})
"""VMs whose config enables the guest agent but whose agent does not answer (qemu-ga not
installed in the guest), as proxmox_diagnose_guests finds them."""


MEDIA: tuple[tuple[str, str, int], ...] = (
    ("local:iso/debian-12.9.0-amd64-netinst.iso", "iso", 632 * 1024 * 1024),
    ("local:iso/ubuntu-24.04.1-live-server-amd64.iso", "iso", 2_773 * 1024 * 1024),
    ("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "vztmpl", 123 * 1024 * 1024),
    ("local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz", "vztmpl", 3 * 1024 * 1024),
    ("local:snippets/web-user-data.yaml", "snippets", 1_337),
)
"""ISO images, container templates and a cloud-init snippet on each node's `local` storage:
(volid, content, size)."""


@dataclass
class Demo:
    """Everything the state starts from."""

    nodes: dict[str, Node]
    guests: dict[int, Guest]
    storages: list[Storage]
    pools: tuple[str, ...]
    history: list[Task]


def _mac(rng: random.Random) -> str:
    # BC:24:11 is Proxmox's own OUI, used for generated MACs since PVE 8.1.
    tail = ":".join(f"{rng.randrange(256):02X}" for _ in range(3))
    return f"BC:24:11:{tail}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _qemu_config(spec: _GuestSpec, rng: random.Random, ctime: int) -> dict[str, ConfigValue]:
    windows = spec.ostype.startswith("win")
    config: dict[str, ConfigValue] = {
        "name": spec.name,
        "cores": spec.cores,
        "sockets": 1,
        "memory": str(spec.memory_mib),
        "cpu": "x86-64-v2-AES" if not windows else "host",
        "ostype": spec.ostype,
        "scsihw": "virtio-scsi-single",
        "scsi0": f"local-lvm:vm-{spec.vmid}-disk-0,iothread=1,size={spec.disk_gib}G",
        "ide2": "none,media=cdrom",
        "net0": f"virtio={_mac(rng)},bridge=vmbr0,firewall=1",
        "boot": "order=scsi0;ide2;net0",
        "numa": 0,
        "onboot": 1 if spec.tags and "prod" in spec.tags else 0,
        "agent": "1",
        "smbios1": f"uuid={_uuid(rng)}",
        "vmgenid": _uuid(rng),
        "meta": f"creation-qemu=9.2.0,ctime={ctime}",
    }
    if windows or spec.vmid in _SECURE_BOOT:
        config["bios"] = "ovmf"
        config["machine"] = "pc-q35-9.2"
        config["efidisk0"] = (
            f"local-lvm:vm-{spec.vmid}-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M"
        )
        config["tpmstate0"] = f"local-lvm:vm-{spec.vmid}-disk-2,size=4M,version=v2.0"
    if spec.tags:
        config["tags"] = spec.tags
    if spec.template:
        config["template"] = 1
        # A template's disks are base volumes (pve-storage `create_base`), so it can be
        # cloned linked (simulator/clone.py).
        config["scsi0"] = f"local-lvm:base-{spec.vmid}-disk-0,iothread=1,size={spec.disk_gib}G"
        config["ide2"] = "local-lvm:vm-9000-cloudinit,media=cdrom"
        config["ciuser"] = "debian"
    return config


def _lxc_config(spec: _GuestSpec, rng: random.Random) -> dict[str, ConfigValue]:
    config: dict[str, ConfigValue] = {
        "hostname": spec.name,
        "arch": "amd64",
        "cores": spec.cores,
        "memory": spec.memory_mib,
        "swap": 512,
        "ostype": spec.ostype,
        "rootfs": f"local-lvm:vm-{spec.vmid}-disk-0,size={spec.disk_gib}G"
        if spec.vmid not in _ON_ZFS
        else f"local-zfs:subvol-{spec.vmid}-disk-0,size={spec.disk_gib}G",
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,hwaddr={_mac(rng)},ip=dhcp,type=veth",
        "features": "nesting=1",
        "unprivileged": 1,
        "onboot": 1 if spec.tags and "infra" in spec.tags else 0,
    }
    if spec.tags:
        config["tags"] = spec.tags
    return config


def _nodes(rng: random.Random, now: float) -> dict[str, Node]:
    nodes = {}
    for name, nodeid, ip, model, sockets, cores, threads, mem_gib, days in _NODES:
        rootfs_total = rng.randrange(94, 100) * GiB
        nodes[name] = Node(
            name=name,
            nodeid=nodeid,
            ip=ip,
            cpu_model=model,
            sockets=sockets,
            cores=cores,
            threads=threads,
            mem_total=mem_gib * GiB,
            swap_total=8 * GiB,
            rootfs_total=rootfs_total,
            rootfs_used=rng.randrange(9, 21) * GiB + rng.randrange(GiB),
            boot_time=now - days * DAY - rng.uniform(0, 6 * 3600),
            host_cpu=rng.uniform(0.004, 0.02),
            host_mem=rng.randrange(3, 6) * GiB + rng.randrange(GiB),
            next_pid=rng.randrange(0x1000, 0x3FFFFF),
        )
    return nodes


def _guest(spec: _GuestSpec, rng: random.Random, node: Node, now: float) -> Guest:
    ctime = int(node.boot_time - rng.uniform(30, 400) * DAY)
    config = _qemu_config(spec, rng, ctime) if spec.kind == "qemu" else _lxc_config(spec, rng)
    running = spec.state != "stopped"
    guest = Guest(
        vmid=spec.vmid,
        kind=spec.kind,
        node=spec.node,
        config=config,
        status="running" if running else "stopped",
        paused=spec.state == "paused",
        pool=spec.pool,
        maxdisk=spec.disk_gib * GiB,
        disk_used=int(spec.disk_gib * GiB * rng.uniform(0.15, 0.6)) if spec.kind == "lxc" else 0,
        cpu_load=rng.uniform(0.01, 0.25),
        mem_fraction=rng.uniform(0.35, 0.8),
        net_rate=rng.randrange(2_000, 400_000),
        io_rate=rng.randrange(5_000, 900_000),
    )
    if running:
        guest.started_at = max(node.boot_time + 60, now - rng.uniform(0.5, 30) * DAY)
        guest.pid = rng.randrange(1000, 4_000_000)
    for name, description, days_ago, vmstate in _SNAPSHOTS.get(spec.vmid, ()):
        guest.snapshots.append(
            Snapshot(
                name=name,
                description=description,
                snaptime=int(now - days_ago * DAY),
                parent=guest.parent,
                vmstate=vmstate and spec.kind == "qemu",
                config=dict(config),
            )
        )
        guest.parent = name
    return guest


def _storages(rng: random.Random, nodes: Iterable[str]) -> list[Storage]:
    names = list(nodes)
    nfs_total = 8 * TiB
    nfs_used = int(nfs_total * rng.uniform(0.3, 0.5))
    return [
        Storage(
            "local",
            "dir",
            ("backup", "images", "iso", "rootdir", "snippets", "vztmpl"),
            shared=False,
            usage={n: (96 * GiB, rng.randrange(12, 30) * GiB) for n in names},
        ),
        Storage(
            "local-lvm",
            "lvmthin",
            ("images", "rootdir"),
            shared=False,
            usage={n: (1_700 * GiB, rng.randrange(200, 900) * GiB) for n in names},
        ),
        # A ZFS pool on pve2 and pve3 only (no random figures: the seed's draws stay as
        # they were), the storage replication needs.
        Storage(
            "local-zfs",
            "zfspool",
            ("images", "rootdir"),
            shared=False,
            usage={n: (900 * GiB, 120 * GiB) for n in names if n != "pve1"},
        ),
        Storage(
            "nfs-backup",
            "nfs",
            ("backup",),
            shared=True,
            usage=dict.fromkeys(names, (nfs_total, nfs_used)),
        ),
    ]


class _History:
    """Collects the finished tasks a freshly seeded cluster shows in its task lists."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, str, str, str, float, str, tuple[str, ...]]] = []

    def add(
        self,
        node: str,
        type_: str,
        id_: str,
        start: float,
        seconds: float,
        *,
        exitstatus: str = "OK",
        lines: tuple[str, ...] = (),
    ) -> None:
        self._entries.append((start, node, type_, id_, seconds, exitstatus, lines))

    def tasks(self, nodes: dict[str, Node]) -> list[Task]:
        """The tasks in start order, with PIDs that grow with time on each node."""
        tasks = []
        for start, name, type_, id_, seconds, exitstatus, lines in sorted(self._entries):
            node = nodes[name]
            node.next_pid += 1 + (node.next_pid % 7)
            pstart = int((start - node.boot_time) * 100)
            upid = encode_upid(
                name, node.next_pid, pstart, int(start), type_=type_, id_=id_, user=HISTORY_USER
            )
            tasks.append(
                Task(
                    upid=upid,
                    node=name,
                    pid=node.next_pid,
                    pstart=pstart,
                    starttime=int(start),
                    type=type_,
                    id=id_,
                    user=HISTORY_USER,
                    created=start,
                    begin=start,
                    end=start + seconds,
                    exitstatus=exitstatus,
                    history_lines=lines,
                )
            )
        return tasks


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _vzdump_log(guests: list[Guest], start: float, rng: random.Random) -> tuple[str, ...]:
    """A nightly backup job's log, as vzdump writes it."""
    ids = " ".join(str(g.vmid) for g in guests)
    lines = [
        f"INFO: starting new backup job: vzdump {ids} --storage nfs-backup --mode snapshot "
        "--compress zstd --notes-template '{{guestname}}' --quiet 1"
    ]
    at = start + 2
    for guest in guests:
        took = rng.randrange(6, 50)
        day = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime(at))
        size = guest.maxdisk // GiB
        lines += [
            f"INFO: Starting Backup of VM {guest.vmid} ({guest.kind})",
            f"INFO: Backup started at {_stamp(at)}",
            f"INFO: status = {guest.status}",
        ]
        if guest.kind == "qemu":
            archive = f"vzdump-qemu-{guest.vmid}-{day}.vma.zst"
            lines += [
                f"INFO: VM Name: {guest.name}",
                f"INFO: include disk 'scsi0' 'local-lvm:vm-{guest.vmid}-disk-0' {size}G",
                "INFO: backup mode: snapshot",
                "INFO: ionice priority: 7",
                f"INFO: creating vzdump archive '/mnt/pve/nfs-backup/dump/{archive}'",
            ]
            if guest.status == "stopped":
                lines.append("INFO: starting kvm to execute backup task")
            lines += [
                f"INFO: started backup task '{_uuid(rng)}'",
                f"INFO:  {rng.randrange(8, 30)}% ({size * 0.2:.1f} GiB of {size:.1f} GiB) "
                f"in 3s, read: {rng.randrange(300, 900)}.0 MiB/s, write: 180.0 MiB/s",
                f"INFO: 100% ({size:.1f} GiB of {size:.1f} GiB) in {took - 2}s, read: "
                f"{rng.randrange(400, 1200)}.0 MiB/s, write: {rng.randrange(80, 300)}.0 MiB/s",
                f"INFO: backup is sparse: {size * 0.6:.2f} GiB (60%) total zero data",
                f"INFO: transferred {size:.2f} GiB in {took - 2} seconds",
                f"INFO: archive file size: {rng.randrange(400, 4000)}MB",
            ]
            if guest.status == "stopped":
                lines.append("INFO: stopping kvm after backup task")
        else:
            archive = f"vzdump-lxc-{guest.vmid}-{day}.tar.zst"
            lines += [
                f"INFO: CT Name: {guest.name}",
                "INFO: including mount point rootfs ('/') in backup",
                "INFO: backup mode: snapshot",
                "INFO: ionice priority: 7",
                "INFO: create storage snapshot 'vzdump'",
                f"INFO: creating vzdump archive '/mnt/pve/nfs-backup/dump/{archive}'",
                f"INFO: Total bytes written: {guest.disk_used} "
                f"({guest.disk_used / GiB:.1f}GiB, {rng.randrange(90, 300)}MiB/s)",
                f"INFO: archive file size: {rng.randrange(100, 900)}MB",
                "INFO: cleanup temporary 'vzdump' snapshot",
            ]
        lines += [
            "INFO: adding notes to backup",
            f"INFO: Finished Backup of VM {guest.vmid} (00:00:{took:02d})",
            f"INFO: Backup finished at {_stamp(at + took)}",
        ]
        at += took + 1
    lines.append("INFO: Backup job finished successfully")
    return tuple(lines)


_APT_LINES = (
    "starting apt-get update",
    "Hit:1 http://deb.debian.org/debian trixie InRelease",
    "Hit:2 http://deb.debian.org/debian trixie-updates InRelease",
    "Hit:3 http://security.debian.org/debian-security trixie-security InRelease",
    "Get:4 http://download.proxmox.com/debian/pve trixie InRelease [2,771 B]",
    "Get:5 http://download.proxmox.com/debian/pve trixie/pve-no-subscription amd64 "
    "Packages [412 kB]",
    "Fetched 415 kB in 1s (402 kB/s)",
    "Reading package lists...",
)


def _history(
    nodes: dict[str, Node], guests: dict[int, Guest], rng: random.Random, now: float
) -> list[Task]:
    history = _History()
    night = now - (now % DAY) - DAY + 3600  # 01:00 UTC yesterday
    for node in nodes.values():
        on_node = [g for g in guests.values() if g.node == node.name and not g.template]
        job_start = night + rng.uniform(0, 120)
        lines = _vzdump_log(on_node, job_start, rng)
        history.add(node.name, "vzdump", "", job_start, 15 + 30 * len(on_node), lines=lines)
        apt_start = now - 2 * DAY + rng.uniform(0, 3600)
        history.add(node.name, "aptupdate", "", apt_start, 4, lines=_APT_LINES)
    for guest in guests.values():
        if guest.started_at is not None:
            type_ = "qmstart" if guest.kind == "qemu" else "vzstart"
            history.add(guest.node, type_, str(guest.vmid), guest.started_at - 2, 2)
        if guest.paused:
            history.add(guest.node, "qmpause", str(guest.vmid), now - 3 * 3600, 1)
    history.add(
        "pve1", "qmstart", "103", now - 5 * 3600, 3,
        exitstatus="start failed: QEMU exited with code 1",
    )  # fmt: skip
    history.add(
        "pve3", "aptupdate", "", now - 6 * 3600, 5, exitstatus="WARNINGS: 1",
        lines=(*_APT_LINES, "W: Some index files failed to download. They have been ignored, "
               "or old ones used instead."),
    )  # fmt: skip
    return history.tasks(nodes)


@dataclass(frozen=True)
class Scale:
    """A larger cluster than the demo's: `guests` guests in all on `nodes` nodes.

    The demo's three nodes and fourteen guests stay as they are (every store seeded
    around them, HA, replication, backups, keeps working); nodes pve4.. and generated
    guests fill up to the counts. Generated guests have no task history, snapshots or
    backups: a big cluster is for listing and searching at scale, not for a story."""

    guests: int
    nodes: int

    MIN_GUESTS: ClassVar[int] = len(_GUESTS)
    MIN_NODES: ClassVar[int] = len(_NODES)
    MAX_GUESTS: ClassVar[int] = 100_000
    MAX_NODES: ClassVar[int] = 200

    @classmethod
    def of(cls, guests: int | None, nodes: int | None) -> Scale | None:
        """The scale asked for by a guest count, a node count or both (the demo's count
        for the one not given); None when neither is, for the demo as it is."""
        if guests is None and nodes is None:
            return None
        return cls(
            cls.MIN_GUESTS if guests is None else guests, cls.MIN_NODES if nodes is None else nodes
        )

    def __post_init__(self) -> None:
        if not self.MIN_GUESTS <= self.guests <= self.MAX_GUESTS:
            raise ValueError(f"guests must be {self.MIN_GUESTS} to {self.MAX_GUESTS}")
        if not self.MIN_NODES <= self.nodes <= self.MAX_NODES:
            raise ValueError(f"nodes must be {self.MIN_NODES} to {self.MAX_NODES}")


_ROLES = ("web", "app", "api", "db", "cache", "queue", "worker", "build", "mon", "proxy")
_TAGS = ("prod", "dev", "test", "ci", "infra", "web", "db", "batch")
_MEMORY_MIB = (512, 1024, 1024, 2048, 2048, 4096)
_BIG_NODE = ("AMD EPYC 9554 64-Core Processor", 2, 128, 256, 1024)
"""A generated node: cpu model, sockets, cores, threads, memory GiB (grown to fit)."""


def _generated_spec(vmid: int, index: int, node: str, rng: random.Random) -> _GuestSpec:
    """Guest number `index` of a scaled cluster: 70 % VMs, most of them running."""
    kind: GuestKind = "qemu" if rng.random() < 0.7 else "lxc"
    roll = rng.random()
    state: Literal["running", "stopped", "paused"] = (
        "running" if roll < 0.72 else "paused" if kind == "qemu" and roll < 0.74 else "stopped"
    )
    role = _ROLES[index % len(_ROLES)]
    tags = ";".join(sorted(set(rng.sample(_TAGS, rng.randrange(0, 3))))) or None
    return _GuestSpec(
        vmid=vmid,
        kind=kind,
        node=node,
        name=f"{role}-{index:05d}",
        state=state,
        cores=rng.choice((1, 1, 2, 2, 4)),
        memory_mib=rng.choice(_MEMORY_MIB),
        disk_gib=rng.choice((8, 16, 32)),
        tags=tags,
        pool=rng.choice(("prod", "dev", None, None)),
        ostype="l26" if kind == "qemu" else "debian",
    )


def _grow(demo: Demo, scale: Scale, seed: int, now: float) -> None:
    """Add scale's nodes and guests to the demo: generated guests go round-robin on the
    added nodes (on the demo's when there are none), whose memory and `local-lvm` are
    sized to hold them, so the figures stay plausible (used below total)."""
    rng = random.Random(f"{seed}/{scale.guests}x{scale.nodes}")  # noqa: S311 - as above
    model, sockets, cores, threads, mem_gib = _BIG_NODE
    first = demo.nodes["pve1"]
    for number in range(len(demo.nodes) + 1, scale.nodes + 1):
        name = f"pve{number}"
        demo.nodes[name] = Node(
            name=name,
            nodeid=number,
            ip=f"10.10.{10 + number // 200}.{10 + number % 200}",
            cpu_model=model,
            sockets=sockets,
            cores=cores,
            threads=threads,
            mem_total=mem_gib * GiB,
            swap_total=8 * GiB,
            rootfs_total=first.rootfs_total,
            rootfs_used=rng.randrange(9, 21) * GiB,
            boot_time=now - rng.uniform(5, 90) * DAY,
            host_cpu=rng.uniform(0.004, 0.02),
            host_mem=rng.randrange(6, 12) * GiB,
            next_pid=rng.randrange(0x1000, 0x3FFFFF),
        )
    hosts = [demo.nodes[n] for n in list(demo.nodes)[len(_NODES) :]] or list(demo.nodes.values())
    vmids = (v for v in range(1000, 1_000_000_000) if v not in demo.guests)
    memory: dict[str, int] = dict.fromkeys((n.name for n in hosts), 0)
    disk: dict[str, int] = dict.fromkeys(memory, 0)
    for index in range(scale.guests - len(demo.guests)):
        node = hosts[index % len(hosts)]
        spec = _generated_spec(next(vmids), index, node.name, rng)
        demo.guests[spec.vmid] = _guest(spec, rng, node, now)
        memory[node.name] += spec.memory_mib * MiB
        disk[node.name] += spec.disk_gib * GiB
    for node in hosts:
        node.mem_total = max(
            node.mem_total, _round_up(memory[node.name] + node.host_mem, 256 * GiB)
        )
    for storage in demo.storages:
        for node in demo.nodes.values():
            if storage.shared or storage.name == "local":
                storage.usage.setdefault(node.name, storage.usage["pve1"])
        if storage.name == "local-lvm":
            for name, used in disk.items():
                total, other = storage.usage.get(name, (0, 200 * GiB))
                storage.usage[name] = (max(total, _round_up(2 * used + other, 1024 * GiB)), other)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def build_demo(seed: int, now: float, scale: Scale | None = None) -> Demo:
    """The demo cluster for `seed`, as it looks at clock time `now`; `scale` grows it."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not a secret
    nodes = _nodes(rng, now)
    guests = {spec.vmid: _guest(spec, rng, nodes[spec.node], now) for spec in _GUESTS}
    demo = Demo(
        nodes=nodes,
        guests=guests,
        storages=_storages(rng, nodes),
        pools=("dev", "prod"),
        history=_history(nodes, guests, rng, now),
    )
    if scale is not None:
        _grow(demo, scale, seed, now)
    return demo
