"""A node's own system: services, APT, disks (SMART, ZFS, LVM), certificates, DNS, time,
hosts, subscription, the reboot/shutdown command, and the cluster's join information.

Each node gets a `NodeSystem`, seeded from its name (no random draws), so the same node
always has the same disks and packages. Behaviour and words follow PVE's handlers:

- services: pve-manager `PVE/API2/Services.pm`. The list is its fixed `$service_name_list`;
  start/stop/restart/reload fork `srvstart`/`srvstop`/`srvrestart`/`srvreload` workers,
  and the refusal to stop an essential service (pveproxy, pvedaemon, pve-cluster) is
  raised inside the worker, so the POST answers a UPID and the task fails. Reload runs
  `systemctl try-reload-or-restart`, which leaves a stopped service stopped. A unit that is
  not installed fails as `systemctl` does (exit code 5; the words are systemd's).
- APT: pve-manager `PVE/API2/APT.pm`. GET update lists the package cache of the last
  refresh; POST update forks `aptupdate`, after which the list shows every update the
  (simulated) repositories offer. changelog answers `apt-get changelog` output, and for a
  package apt does not know, its error plus `RC: 100` in a 200 answer, as PVE does.
- disks: pve-storage `PVE/API2/Disks.pm`, `Disks/ZFS.pm`, `Disks/LVM.pm`, `Disks/LVMThin.pm`
  and `PVE/Diskmanage.pm` (`not a valid block device` for a path that is none; ATA SMART
  as attributes, NVMe as text with the wearout). The thin pool's usage is local-lvm's.
- certificates: pve-manager `PVE/API2/Certificates.pm` `info`: facts and no key (PVE never
  returns one there); the local node's pve-ssl.pem has the simulator's real fingerprint.
- join information: pve-cluster `PVE/API2/ClusterConfig.pm` `join_info`: the node list
  with addresses and fingerprints, the totem section (which holds no key here; the auth
  key only travels in the answer of POST /cluster/config/nodes/{node}, not simulated).
- POST /nodes/{node}/status (pve-manager `PVE/API2/Nodes.pm` `node_cmd`) answers null and
  the node goes down: pve-guests.service runs the `stopall` worker first (`Stopping VM
  100 (timeout = 180 seconds)`), then the node is offline (its API answers 595 through
  the proxy, its guests show as `unknown` in /cluster/resources). After a reboot it comes
  back `BOOT_SECONDS` later (scaled like tasks), its services as enabled, and runs
  `startall` for the guests with `onboot` set. A shut-down node stays off (PVE has no API
  to power a node on but wake-on-LAN, which is not simulated).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ApiError, failure
from .model import GiB, Guest, Node
from .power import halt, start_running
from .router import Context, Handler, Params, Result, Route, api, text
from .tasks import Plan, fail
from .views import KERNEL_RELEASE, PVE_VERSION

if TYPE_CHECKING:
    from .state import ClusterState

BOOT_SECONDS = 40.0
"""From the end of the stopall worker to the node answering again after a reboot."""
STOP_TIMEOUT = 180
"""stopall's default timeout per guest (Nodes.pm)."""
OFFLINE_MESSAGE = "No route to host"
"""What pveproxy answers (HTTP 595) for a request it proxies to a node that is down: the
reason AnyEvent::HTTP gives for the connection (a guess between this and `Connection
timed out`, which depends on the network)."""

_SERVICES: tuple[tuple[str, str, str], ...] = (
    # name, description (systemd's), unit state; every one of Services.pm's list
    ("chrony", "chrony, an NTP client/server", "enabled"),
    ("corosync", "Corosync Cluster Engine", "enabled"),
    ("cron", "Regular background program processing daemon", "enabled"),
    ("ksmtuned", "Kernel Samepage Merging (KSM) Tuning Daemon", "enabled"),
    ("lxcfs", "FUSE filesystem for LXC", "enabled"),
    ("postfix", "Postfix Mail Transport Agent", "enabled"),
    ("proxmox-firewall", "Proxmox nftables firewall", "disabled"),
    ("pve-cluster", "The Proxmox VE cluster filesystem", "enabled"),
    ("pve-firewall", "Proxmox VE firewall", "enabled"),
    ("pve-ha-crm", "PVE Cluster HA Resource Manager Daemon", "enabled"),
    ("pve-ha-lrm", "PVE Local HA Resource Manager Daemon", "enabled"),
    ("pve-lxc-syscalld", "Proxmox VE LXC Syscall Daemon", "enabled"),
    ("pvedaemon", "PVE API Daemon", "enabled"),
    ("pvefw-logger", "Proxmox VE firewall logger", "static"),
    ("pveproxy", "PVE API Proxy Server", "enabled"),
    ("pvescheduler", "Proxmox VE scheduler", "enabled"),
    ("pvestatd", "PVE Status Daemon", "enabled"),
    ("qmeventd", "PVE Qemu Event Daemon", "enabled"),
    ("spiceproxy", "PVE SPICE Proxy Server", "enabled"),
    ("sshd", "OpenBSD Secure Shell server", "enabled"),
    ("syslog", "syslog.service", "not-found"),
    ("systemd-journald", "Journal Service", "static"),
    ("systemd-timesyncd", "systemd-timesyncd.service", "not-found"),
)
"""PVE 9 nodes log to the journal only (no rsyslog) and keep time with chrony."""
_ONESHOT = frozenset({"postfix"})
"""Since postfix 3.1 its unit only manages instances: `exited` while active."""
ESSENTIAL = frozenset({"pveproxy", "pvedaemon", "pve-cluster"})
"""Services.pm's `$essential_services`: never stopped."""


@dataclass
class Service:
    """One systemd unit of Services.pm's list."""

    name: str
    desc: str
    unit_state: str
    running: bool

    def view(self) -> dict[str, Any]:
        """The item of GET .../services (and .../state): systemd's SubState/ActiveState."""
        if self.unit_state == "not-found" or not self.running:
            state, active = "dead", "inactive"
        else:
            state, active = ("exited" if self.name in _ONESHOT else "running"), "active"
        return {
            "service": self.name,
            "name": self.name,
            "desc": self.desc,
            "state": state,
            "active-state": active,
            "unit-state": self.unit_state,
        }


@dataclass(frozen=True)
class Package:
    """An installed package and the version the repositories offer (None: current)."""

    name: str
    installed: str
    offered: str | None
    origin: str
    section: str
    title: str


_PACKAGES = (
    Package("pve-manager", PVE_VERSION, "9.2.1", "Proxmox", "admin",
            "Proxmox Virtual Environment Management Tools"),
    Package("qemu-server", "9.1.3", "9.1.4", "Proxmox", "admin",
            "Qemu Server Tools"),
    Package("proxmox-kernel-6.17", "6.17.4-2", "6.17.4-3", "Proxmox", "admin",
            "Latest Proxmox Kernel Image"),
    Package("openssl", "3.5.1-1", "3.5.1-1+deb13u1", "Debian", "utils",
            "Secure Sockets Layer toolkit - cryptographic utility"),
    Package("libpve-common-perl", "9.0.11", None, "Proxmox", "perl",
            "Proxmox VE base library"),
    Package("pve-container", "6.0.13", None, "Proxmox", "admin",
            "Proxmox VE Container management tool"),
    Package("proxmox-ve", "9.2.0", None, "Proxmox", "admin",
            "Proxmox Virtual Environment"),
)  # fmt: skip
_CACHED = frozenset({"openssl"})
"""The updates the last refresh before the simulator started had seen."""


@dataclass(frozen=True)
class Disk:
    """A block device: its facts for disks/list and its SMART data."""

    devpath: str
    model: str
    serial: str
    size: int
    kind: str
    """`nvme`, `ssd` or `hdd` (disks/list `type`)."""
    used: str | None
    health: str
    wearout: int
    smart: dict[str, Any]


@dataclass
class NodeSystem:
    """What one node's system answers besides guests, storage and network."""

    services: dict[str, Service]
    disks: dict[str, Disk]
    zpool: dict[str, Any] | None
    """The pool's `zpool status` tree (name, state, children...), or None without ZFS."""
    refreshed: bool = False
    """Whether POST apt/update ran: the cache then knows every offered update."""
    back_at: float | None = None
    """When a rebooting node answers again (None: not rebooting)."""
    going_down: bool = False


def _hex(*parts: object, length: int = 64) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:length]


def _fingerprint(*parts: object) -> str:
    digest = _hex(*parts).upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def _ata_smart(node: str, dev: str, reallocated: int) -> dict[str, Any]:
    hours = 9000 + zlib.crc32(f"{node}{dev}".encode()) % 20000
    rows = (
        ("1", "Raw_Read_Error_Rate", "POSR-K", 100, 100, 0, "0"),
        ("5", "Reallocated_Sector_Ct", "PO--CK", 100 - min(reallocated, 90), 100, 10,
         str(reallocated)),
        ("9", "Power_On_Hours", "-O--CK", 99, 99, 0, str(hours)),
        ("177", "Wear_Leveling_Count", "PO--C-", 97, 97, 0, "41"),
        ("194", "Temperature_Celsius", "-O---K", 66, 52, 0, "34"),
    )  # fmt: skip
    failing = reallocated > 50
    return {
        "type": "ata",
        "health": "FAILED" if failing else "PASSED",
        "attributes": [
            {
                "id": f"{id_:>3}",
                "name": name,
                "flags": flags,
                "value": value,
                "normalized": value,
                "worst": worst,
                "threshold": thresh,
                "fail": "NOW" if failing and name == "Reallocated_Sector_Ct" else "-",
                "raw": raw,
            }
            for id_, name, flags, value, worst, thresh, raw in rows
        ],
    }


def _nvme_smart(node: str) -> dict[str, Any]:
    used = 3 + zlib.crc32(node.encode()) % 7
    text = (
        "SMART/Health Information (NVMe Log 0x02)\n"
        "Critical Warning:                   0x00\n"
        "Temperature:                        38 Celsius\n"
        "Available Spare:                    100%\n"
        f"Percentage Used:                    {used}%\n"
        "Data Units Written:                 48,211,903 [24.6 TB]\n"
        "Power On Hours:                     9,874\n"
        "Media and Data Integrity Errors:    0\n"
    )
    return {"type": "text", "health": "PASSED", "text": text, "wearout": 100 - used}


def _disks(node: Node, index: int) -> dict[str, Disk]:
    name = node.name
    nvme_smart = _nvme_smart(name)
    disks = [
        Disk("/dev/nvme0n1", "SAMSUNG MZQL21T9HCJR-00A07", f"S64GNE0R{_hex(name, 'n')[:6]}",
             1_920_383_410_176, "nvme", "LVM", "PASSED", nvme_smart["wearout"], nvme_smart),
    ]  # fmt: skip
    if index == 0:
        # pve1: a fresh disk, not used yet.
        smart = _ata_smart(name, "sda", 0)
        disks.append(
            Disk("/dev/sda", "Micron_5400_MTFDDAK960TGA", f"2315{_hex(name, 'a')[:8]}",
                 960_197_124_096, "ssd", None, "PASSED", 100, smart)
        )  # fmt: skip
    else:
        # pve2/pve3: a mirror of two SSDs for ZFS; pve3's second one is failing.
        for dev in ("sda", "sdb"):
            bad = 120 if (index == 2 and dev == "sdb") else (8 if dev == "sdb" else 0)
            smart = _ata_smart(name, dev, bad)
            disks.append(
                Disk(f"/dev/{dev}", "Micron_5400_MTFDDAK960TGA", f"2315{_hex(name, dev)[:8]}",
                     960_197_124_096, "ssd", "ZFS", smart["health"], 97, smart)
            )  # fmt: skip
    return {disk.devpath: disk for disk in disks}


def _zpool(index: int) -> dict[str, Any] | None:
    if index == 0:
        return None
    degraded = index == 2
    vdevs = [
        {"name": "/dev/disk/by-id/ata-Micron_5400-part1", "state": "ONLINE",
         "read": 0, "write": 0, "cksum": 0, "msg": ""},
        {"name": "/dev/disk/by-id/ata-Micron_5400_2-part1",
         "state": "FAULTED" if degraded else "ONLINE", "read": 0,
         "write": 14 if degraded else 0, "cksum": 0,
         "msg": "too many errors" if degraded else ""},
    ]  # fmt: skip
    pool: dict[str, Any] = {
        "name": "rpool",
        "state": "DEGRADED" if degraded else "ONLINE",
        "scan": "scrub repaired 0B in 00:04:12 with 0 errors on Sun Nov  8 00:28:13 2026",
        "errors": "No known data errors",
        "children": [
            {"name": "rpool", "state": "DEGRADED" if degraded else "ONLINE", "read": 0,
             "write": 0, "cksum": 0, "msg": "", "children": [
                 {"name": "mirror-0", "state": "DEGRADED" if degraded else "ONLINE",
                  "read": 0, "write": 0, "cksum": 0, "msg": "", "children": vdevs}]}
        ],
    }  # fmt: skip
    if degraded:
        pool["status"] = (
            "One or more devices are faulted in response to persistent errors. Sufficient "
            "replicas exist for the pool to continue functioning in a degraded state."
        )
        pool["action"] = (
            "Replace the faulted device, or use 'zpool clear' to mark the device repaired."
        )
    return pool


@dataclass
class Systems:
    """Every node's system, and the time scale a reboot's boot time is scaled by."""

    by_node: dict[str, NodeSystem]
    time_scale: float


def demo_systems(nodes: Iterable[Node], time_scale: float) -> Systems:
    """Each node's seeded system (see the module docstring)."""
    systems = {}
    for index, node in enumerate(nodes):
        services = {
            name: Service(name, desc, unit, unit in ("enabled", "static"))
            for name, desc, unit in _SERVICES
        }
        systems[node.name] = NodeSystem(services, _disks(node, index), _zpool(index))
    return Systems(systems, time_scale)


# --- services --------------------------------------------------------------------------


def _system(ctx: Context, params: Params) -> tuple[Node, NodeSystem]:
    node = ctx.state.node(text(params, "node"))
    return node, ctx.state.systems.by_node[node.name]


def _services(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    return Result([system.services[name].view() for name in sorted(system.services)])


def _service_index(ctx: Context, params: Params) -> Result:
    _system(ctx, params)
    return Result([{"subdir": sub} for sub in ("state", "start", "stop", "restart", "reload")])


def _service_state(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    return Result(system.services[text(params, "service")].view())


def _service_plan(service: Service, command: str) -> Plan:
    """The worker's `systemctl <command> <unit>` (Services.pm `$service_cmd`)."""
    systemctl = "try-reload-or-restart" if command == "reload" else command
    if service.name in ESSENTIAL and command == "stop":
        return fail(
            f"invalid service cmd '{service.name} stop': refusing to stop essential service!"
        )
    unit = service.name
    if service.unit_state == "not-found" and command != "stop":
        # systemd's words for a unit that is not installed; exit code 5 (not loaded)
        return Plan(
            1.0,
            error=f"command 'systemctl {systemctl} {unit}' failed: exit code 5",
            lines=((0.5, f"Failed to {command} {unit}.service: Unit {unit}.service not found."),),
        )

    def apply(at: float) -> None:
        if command in ("start", "restart"):
            service.running = True
        elif command == "stop":
            service.running = False

    return Plan(2.0 if command == "restart" else 1.0, apply=apply)


def _service_command(command: str) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        node, system = _system(ctx, params)
        service = system.services[text(params, "service")]
        task = ctx.state.start_task(
            node.name,
            f"srv{command}",
            service.name,
            ctx.user,
            lambda at: _service_plan(service, command),
            locks=(("service", f"{node.name}/{service.name}"),),
        )
        return Result(task.upid)

    return handler


# --- APT -------------------------------------------------------------------------------


def _apt_item(package: Package, version: str) -> dict[str, Any]:
    return {
        "Package": package.name,
        "Title": package.title,
        "Description": package.title,
        "Origin": package.origin,
        "Priority": "optional",
        "Section": package.section,
        "Arch": "amd64",
        "OldVersion": package.installed,
        "Version": version,
    }


def _apt_updates(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    return Result(
        [
            _apt_item(p, p.offered)
            for p in _PACKAGES
            if p.offered is not None and (system.refreshed or p.name in _CACHED)
        ]
    )


def _apt_refresh(ctx: Context, params: Params) -> Result:
    node, system = _system(ctx, params)

    def job(at: float) -> Plan:
        def apply(done: float) -> None:
            system.refreshed = True

        lines: tuple[tuple[float, str], ...] = ()
        if not params.get("quiet"):
            lines = ((0.05, "starting apt-get update"),)
        lines += (
            (0.3, "Hit:1 http://deb.debian.org/debian trixie InRelease"),
            (0.5, "Get:2 http://download.proxmox.com/debian/pve trixie InRelease [2,771 B]"),
            (0.8, "Reading package lists..."),
        )
        return Plan(4.0, lines=lines, apply=apply)

    task = ctx.state.start_task(
        node.name, "aptupdate", None, ctx.user, job, locks=(("apt", node.name),)
    )
    return Result(task.upid)


def _apt_versions(ctx: Context, params: Params) -> Result:
    _system(ctx, params)
    items = []
    for package in _PACKAGES:
        item = _apt_item(package, package.installed)
        item.pop("OldVersion")
        item["CurrentState"] = "Installed"
        if package.name == "pve-manager":
            item["ManagerVersion"] = PVE_VERSION
        if package.name.startswith("proxmox-kernel"):
            item["RunningKernel"] = KERNEL_RELEASE
        items.append(item)
    return Result(items)


def _changelog(ctx: Context, params: Params) -> Result:
    _system(ctx, params)
    name = text(params, "name")
    package = next((p for p in _PACKAGES if p.name == name), None)
    if package is None:
        return Result(f"E: Unable to locate package {name}\nRC: 100")
    versions = [package.installed] + ([package.offered] if package.offered else [])
    wanted = str(params.get("version") or versions[-1])
    if wanted not in versions:
        return Result(f"E: Version '{wanted}' for '{name}' was not found\nRC: 100")
    entries = []
    for version in reversed(versions[: versions.index(wanted) + 1]):
        entries.append(
            f"{name} ({version}) trixie; urgency=medium\n\n"
            f"  * {'fix issues found since ' if version != versions[0] else 'release '}"
            f"{version}\n\n"
            " -- Proxmox Support Team <support@proxmox.com>  Tue, 01 Dec 2026 10:00:00 +0100\n"
        )
    return Result("\n".join(entries))


# --- disks -----------------------------------------------------------------------------


def _disk_list(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    items = []
    for disk in system.disks.values():
        # `unused` and `journal_disks` both leave out disks in use (PVE also offers a
        # used SSD with room as a journal disk; no simulated disk has any)
        if params.get("type") and disk.used is not None:
            continue
        item: dict[str, Any] = {
            "devpath": disk.devpath,
            "model": disk.model,
            "serial": disk.serial,
            "size": disk.size,
            "type": disk.kind,
            "gpt": 1,
            "mounted": 0,
            "osdid": -1,
            "osdid-list": [],
            "rpm": 0,
            "vendor": "unknown" if disk.kind == "nvme" else "ATA     ",
            "wwn": "eui." + _hex(disk.serial, length=16),
            "by_id_link": f"/dev/disk/by-id/{disk.model.replace(' ', '_')}_{disk.serial}",
        }
        if disk.used is not None:
            item["used"] = disk.used
        if not params.get("skipsmart"):
            item["health"] = disk.health
            item["wearout"] = disk.wearout
        items.append(item)
    return Result(items)


def _smart(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    path = text(params, "disk")
    if not path.startswith("/dev/"):
        raise failure(f"got unusual device path '{path}'")
    disk = system.disks.get(path)
    if disk is None:
        raise failure("not a valid block device")
    if params.get("healthonly"):
        return Result({"health": disk.smart["health"]})
    return Result(dict(disk.smart))  # with `wearout` for NVMe, as get_smart_data adds it


def _zfs_usage(ctx: Context, node: str) -> tuple[int, int]:
    """(size, allocated) of the node's pool: its zfspool storage's usage, or a mirror of
    two 960 GB disks a tenth full when no storage is defined on it."""
    storage = next((s for s in ctx.state.storages if s.type == "zfspool" and node in s.usage), None)
    if storage is None:
        return 894 * GiB, 89 * GiB
    return ctx.state.volumes.usage(storage, node)


def _zfs_list(ctx: Context, params: Params) -> Result:
    node, system = _system(ctx, params)
    if system.zpool is None:
        return Result([])
    size, alloc = _zfs_usage(ctx, node.name)
    return Result(
        [
            {
                "name": system.zpool["name"],
                "size": size,
                "alloc": alloc,
                "free": size - alloc,
                "frag": 7,
                "dedup": 1.0,
                "health": system.zpool["state"],
            }
        ]
    )


def _leaves(tree: dict[str, Any]) -> dict[str, Any]:
    """`preparetree` of ZFS.pm: `leaf` on every vdev, children kept."""
    out = dict(tree)
    children = tree.get("children")
    out["leaf"] = 0 if children else 1
    if children:
        out["children"] = [_leaves(child) for child in children]
    return out


def _zfs_detail(ctx: Context, params: Params) -> Result:
    _, system = _system(ctx, params)
    name = text(params, "name")
    if system.zpool is None or system.zpool["name"] != name:
        raise failure(f"command '/sbin/zpool status -P {name}' failed: exit code 1")
    return Result(_leaves(system.zpool))


def _lvm(ctx: Context, params: Params) -> Result:
    node, system = _system(ctx, params)
    disk = system.disks["/dev/nvme0n1"]
    size = disk.size - 2 * GiB
    storage = next(s for s in ctx.state.storages if s.name == "local-lvm")
    thin_total, _ = storage.usage[node.name]
    free = max(size - thin_total - node.rootfs_total - 8 * GiB, 0)
    pv = {"name": "/dev/nvme0n1p3", "size": size, "free": free, "leaf": 1}
    return Result(
        {"leaf": 0, "children": [{"name": "pve", "size": size, "free": free, "leaf": 0,
                                  "children": [pv]}]}
    )  # fmt: skip


def _lvmthin(ctx: Context, params: Params) -> Result:
    node, _ = _system(ctx, params)
    storage = next(s for s in ctx.state.storages if s.name == "local-lvm")
    total, used = ctx.state.volumes.usage(storage, node.name)
    meta = 16 * GiB
    return Result(
        [
            {
                "lv": "data",
                "vg": "pve",
                "lv_size": total,
                "used": used,
                "metadata_size": meta,
                "metadata_used": int(meta * used / total / 20),
            }
        ]
    )


# --- certificates, DNS, time, hosts, subscription ---------------------------------------

_DOMAIN = "demo.lan"
_NODE_SUBJECT = "/OU=PVE Cluster Node/O=Proxmox Virtual Environment"
_CA_SUBJECT = "/CN=Proxmox Virtual Environment/OU=6f1c2e1f-bd4a-4e58-9a1f-2c6c2b07f9a1/O=PVE Cluster Manager CA"  # noqa: E501


def node_fingerprint(state: ClusterState, node: str, local: str) -> str:
    """The SHA-256 fingerprint of a node's pve-ssl.pem; the local node's is the one the
    simulator really serves (when it has a certificate)."""
    if node == local and state.ssl_fingerprint:
        return state.ssl_fingerprint
    return _fingerprint("pve-ssl", node)


def _certificates(ctx: Context, params: Params) -> Result:
    from .endpoints import LOCAL_NODE  # noqa: PLC0415 - endpoints imports this module

    node, _ = _system(ctx, params)
    issued = int(node.boot_time) - 400 * 86_400
    return Result(
        [
            {
                "filename": "pve-root-ca.pem",
                "fingerprint": _fingerprint("pve-root-ca", ctx.state.name),
                "subject": _CA_SUBJECT,
                "issuer": _CA_SUBJECT,
                "notbefore": issued,
                "notafter": issued + 10 * 365 * 86_400,
                "public-key-type": "rsaEncryption",
                "public-key-bits": 4096,
                "san": [],
            },
            {
                "filename": "pve-ssl.pem",
                "fingerprint": node_fingerprint(ctx.state, node.name, LOCAL_NODE),
                "subject": f"{_NODE_SUBJECT}/CN={node.name}.{_DOMAIN}",
                "issuer": _CA_SUBJECT,
                "notbefore": issued,
                "notafter": issued + 2 * 365 * 86_400,
                "public-key-type": "rsaEncryption",
                "public-key-bits": 2048,
                "san": ["127.0.0.1", "0:0:0:0:0:0:0:1", "localhost", node.ip, node.name,
                        f"{node.name}.{_DOMAIN}"],
            },
        ]
    )  # fmt: skip


def _dns(ctx: Context, params: Params) -> Result:
    _system(ctx, params)
    return Result({"search": _DOMAIN, "dns1": "10.10.10.1", "dns2": "1.1.1.1"})


def _time(ctx: Context, params: Params) -> Result:
    _system(ctx, params)
    now = int(ctx.now)
    return Result({"timezone": "UTC", "time": now, "localtime": now})


def _hosts(ctx: Context, params: Params) -> Result:
    node, _ = _system(ctx, params)
    data = (
        "127.0.0.1 localhost.localdomain localhost\n"
        f"{node.ip} {node.name}.{_DOMAIN} {node.name}\n\n"
        "# The following lines are desirable for IPv6 capable hosts\n\n"
        "::1     ip6-localhost ip6-loopback\n"
        "fe00::0 ip6-localnet\n"
        "ff00::0 ip6-mcastprefix\n"
        "ff02::1 ip6-allnodes\n"
        "ff02::2 ip6-allrouters\n"
        "ff02::3 ip6-allhosts\n"
    )
    digest = hashlib.sha1(data.encode(), usedforsecurity=False).hexdigest()
    return Result({"data": data, "digest": digest})


def _subscription(ctx: Context, params: Params) -> Result:
    node, _ = _system(ctx, params)
    serverid = _hex("server", node.name, length=32).upper()
    if node.name == "pve3":
        return Result(
            {"status": "notfound", "message": "There is no subscription key", "serverid": serverid}
        )
    return Result(
        {
            "status": "active",
            "key": f"pve1c-{_hex('key', node.name, length=10)}",
            "level": "c",
            "productname": "Proxmox VE Community Subscription 1 CPU/year",
            "regdate": "2026-01-12 00:00:00",
            "nextduedate": "2027-01-12",
            "checktime": int(ctx.now) - 3 * 86_400,
            "serverid": serverid,
            "sockets": node.sockets,
            "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing",
        }
    )


# --- node power ------------------------------------------------------------------------


def _running_guests(state: ClusterState, node: str) -> list[Guest]:
    return sorted(
        (g for g in state.guests.values() if g.node == node and g.status == "running"),
        key=lambda g: g.vmid,
    )


def _node_command(ctx: Context, params: Params) -> Result:
    node, system = _system(ctx, params)
    if system.going_down:
        return Result(None)
    system.going_down = True
    reboot = text(params, "command") == "reboot"
    state = ctx.state
    guests = _running_guests(state, node.name)
    count = max(len(guests), 1)
    lines: list[tuple[float, str]] = []
    steps = []
    for index, guest in enumerate(guests):
        label = "VM" if guest.kind == "qemu" else "CT"
        at = index / count
        lines.append((at, f"Stopping {label} {guest.vmid} (timeout = {STOP_TIMEOUT} seconds)"))
        steps.append((at + 0.9 / count, _halter(guest)))

    def apply(at: float) -> None:
        node.online = False
        system.going_down = False
        for service in system.services.values():
            service.running = False
        system.back_at = at + BOOT_SECONDS * state.systems.time_scale if reboot else None

    plan = Plan(2.0 + 2.0 * len(guests), lines=tuple(lines), apply=apply, steps=tuple(steps))
    # pve-guests.service runs stopall as root@pam when systemd stops it (Nodes.pm).
    state.start_task(node.name, "stopall", None, "root@pam", _constant(plan), locks=())
    return Result(None)


def _halter(guest: Guest) -> Callable[[float], None]:
    def step(at: float) -> None:
        halt(guest)

    return step


def wake(state: ClusterState, now: float) -> None:
    """Bring back every rebooting node whose boot has finished: online with a new boot
    time, its enabled services running, and `startall` for its `onboot` guests."""
    for name, system in state.systems.by_node.items():
        if system.back_at is None or system.back_at > now:
            continue
        node = state.nodes[name]
        node.online, node.boot_time = True, system.back_at
        system.back_at = None
        for service in system.services.values():
            service.running = service.unit_state in ("enabled", "static")
        onboot = sorted(
            (g for g in state.guests.values()
             if g.node == name and g.config.get("onboot") and not g.template),
            key=lambda g: g.vmid,
        )  # fmt: skip
        count = max(len(onboot), 1)
        lines = tuple(
            (i / count, f"Starting {'VM' if g.kind == 'qemu' else 'CT'} {g.vmid}")
            for i, g in enumerate(onboot)
        )
        steps = tuple(((i + 0.9) / count, _starter(state, g)) for i, g in enumerate(onboot))
        # Forked when the state is next read after the boot (the simulator is lazy), so
        # the guests start a little later than a real node would start them.
        plan = Plan(1.0 + 3.0 * len(onboot), lines=lines, steps=steps)
        state.start_task(name, "startall", None, "root@pam", _constant(plan), locks=())


def _constant(plan: Plan) -> Callable[[float], Plan]:
    def job(at: float) -> Plan:
        return plan

    return job


def _starter(state: ClusterState, guest: Guest) -> Callable[[float], None]:
    def step(at: float) -> None:
        if guest.status != "running":
            start_running(state, guest, at)

    return step


def offline() -> ApiError:
    """What pveproxy answers for a request proxied to a node that is down."""
    return ApiError(595, OFFLINE_MESSAGE)


# --- join information ------------------------------------------------------------------


def _join_info(ctx: Context, params: Params) -> Result:
    from .endpoints import LOCAL_NODE  # noqa: PLC0415 - endpoints imports this module

    state = ctx.state
    preferred = str(params.get("node") or LOCAL_NODE)
    if preferred not in state.nodes:
        raise failure(f"unknown node '{preferred}'")
    nodelist = [
        {
            "name": node.name,
            "nodeid": node.nodeid,
            "quorum_votes": 1,
            "ring0_addr": node.ip,
            "pve_addr": node.ip,
            "pve_fp": node_fingerprint(state, node.name, LOCAL_NODE),
        }
        for node in state.nodes.values()
    ]
    totem = {
        "cluster_name": state.name,
        "config_version": len(state.nodes),
        "interface": {"0": {"linknumber": "0"}},
        "ip_version": "ipv4-6",
        "link_mode": "passive",
        "secauth": "on",
        "version": "2",
    }
    digest = _hex("corosync.conf", state.name, *state.nodes, length=40)
    return Result(
        {"nodelist": nodelist, "preferred_node": preferred, "totem": totem,
         "config_digest": digest}
    )  # fmt: skip


_BASE = "/nodes/{node}"

ROUTES: tuple[Route, ...] = (
    api("GET", f"{_BASE}/services", _services),
    api("GET", f"{_BASE}/services/{{service}}", _service_index),
    api("GET", f"{_BASE}/services/{{service}}/state", _service_state),
    *(
        api("POST", f"{_BASE}/services/{{service}}/{command}", _service_command(command))
        for command in ("start", "stop", "restart", "reload")
    ),
    api("GET", f"{_BASE}/apt/update", _apt_updates),
    api("POST", f"{_BASE}/apt/update", _apt_refresh),
    api("GET", f"{_BASE}/apt/changelog", _changelog),
    api("GET", f"{_BASE}/apt/versions", _apt_versions),
    api("GET", f"{_BASE}/disks/list", _disk_list),
    api("GET", f"{_BASE}/disks/smart", _smart),
    api("GET", f"{_BASE}/disks/zfs", _zfs_list),
    api("GET", f"{_BASE}/disks/zfs/{{name}}", _zfs_detail),
    api("GET", f"{_BASE}/disks/lvm", _lvm),
    api("GET", f"{_BASE}/disks/lvmthin", _lvmthin),
    api("GET", f"{_BASE}/certificates/info", _certificates),
    api("GET", f"{_BASE}/dns", _dns),
    api("GET", f"{_BASE}/time", _time),
    api("GET", f"{_BASE}/hosts", _hosts),
    api("GET", f"{_BASE}/subscription", _subscription),
    api("POST", f"{_BASE}/status", _node_command),
    api("GET", "/cluster/config/join", _join_info),
)
