"""The simulated objects rendered as PVE's JSON, field for field.

Kept apart from the handlers so every answer that shows a guest (the node list, the
cluster resources, `status/current`) computes its live figures the same way. Booleans
are 0/1 as PVE's Perl encodes them; optional fields are left out rather than null.
"""

from __future__ import annotations

from typing import Any

from .model import Guest, MiB, Node, Storage
from .state import ClusterState
from .tasks import Task
from .volumes import storage_status

JsonObject = dict[str, Any]

PVE_VERSION = "9.2.0"
PVE_RELEASE = "9.2"
PVE_REPOID = "5c2b7e9d1a4f6b38"
KERNEL_RELEASE = "6.17.4-2-pve"
KERNEL_VERSION = "#1 SMP PREEMPT_DYNAMIC PMX 6.17.4-2 (2026-04-21T09:12Z)"
QEMU_VERSION = "9.2.0"
QEMU_MACHINE = "pc-i440fx-9.2+pve0"
FORMATS = {"dir": "qcow2", "nfs": "qcow2", "lvmthin": "raw", "zfspool": "raw", "rbd": "raw"}


def _guest_live(guest: Guest, now: float) -> JsonObject:
    """The run-time figures PVE reads from the guest's cgroup and QEMU."""
    if guest.status != "running" or guest.started_at is None:
        return dict.fromkeys(
            ("cpu", "mem", "uptime", "netin", "netout", "diskread", "diskwrite"), 0
        )
    uptime = max(0, int(now - guest.started_at))
    netin = guest.net_rate * uptime
    diskread = guest.io_rate * uptime
    return {
        "cpu": 0 if guest.paused else round(guest.cpu_load, 4),
        "mem": int(guest.maxmem * guest.mem_fraction),
        "uptime": uptime,
        "netin": netin,
        "netout": netin * 3 // 10,
        "diskread": diskread,
        "diskwrite": diskread * 2 // 5,
    }


def _guest_common(guest: Guest, now: float) -> JsonObject:
    entry: JsonObject = {
        "vmid": guest.vmid,
        "name": guest.name,
        "status": guest.status,
        "cpus": guest.cores,
        "maxmem": guest.maxmem,
        "maxdisk": guest.maxdisk,
        "disk": guest.disk_used if guest.kind == "lxc" and guest.status == "running" else 0,
        **_guest_live(guest, now),
    }
    if guest.kind == "lxc":
        entry["type"] = "lxc"
        entry["maxswap"] = int(guest.config.get("swap", 0)) * MiB
        entry["swap"] = 0
    if guest.pid is not None and guest.status == "running":
        entry["pid"] = guest.pid
    if guest.tags is not None:
        entry["tags"] = guest.tags
    if guest.template:
        entry["template"] = 1
    if guest.lock is not None:
        entry["lock"] = guest.lock
    return entry


def qmpstatus(guest: Guest) -> str:
    """QEMU's run state as `query-status` reports it."""
    if guest.status != "running":
        return "stopped"
    return "paused" if guest.paused else "running"


def guest_list_entry(guest: Guest, now: float, full: bool) -> JsonObject:
    """One item of GET /nodes/{node}/qemu or /lxc."""
    entry = _guest_common(guest, now)
    if full and guest.kind == "qemu" and guest.status == "running":
        entry["qmpstatus"] = qmpstatus(guest)
        entry["running-machine"] = QEMU_MACHINE
        entry["running-qemu"] = QEMU_VERSION
    return entry


def guest_status(guest: Guest, now: float) -> JsonObject:
    """GET .../status/current: the list entry plus HA state and QEMU details."""
    entry = _guest_common(guest, now)
    entry["ha"] = {"managed": 0}
    if guest.kind == "qemu":
        entry["qmpstatus"] = qmpstatus(guest)
        if guest.config.get("agent") == "1":
            entry["agent"] = 1
        if guest.status == "running":
            entry["running-machine"] = QEMU_MACHINE
            entry["running-qemu"] = QEMU_VERSION
    return entry


Usage = dict[str, tuple[float, int]]
"""Node name -> (CPU fraction, memory bytes) in use."""


def node_usage(state: ClusterState, only: Node | None = None) -> Usage:
    """What every node (or `only` that one) uses: the host plus its running guests, in
    one pass over the guests (a list of nodes must not walk every guest once per node:
    32 nodes with 10,000 guests made GET /nodes take over 100 ms)."""
    nodes = state.nodes if only is None else {only.name: only}
    cpu = {name: node.host_cpu for name, node in nodes.items()}
    mem = {name: node.host_mem for name, node in nodes.items()}
    for guest in state.guests.values():
        if guest.status == "running" and guest.node in mem:
            mem[guest.node] += int(guest.maxmem * guest.mem_fraction)
            if not guest.paused:
                cpu[guest.node] += guest.cpu_load * guest.cores / state.nodes[guest.node].threads
    return {name: (round(min(cpu[name], 1.0), 4), mem[name]) for name in nodes}


def node_list_entry(
    state: ClusterState, node: Node, now: float, usage: Usage | None = None
) -> JsonObject:
    """One item of GET /nodes; `usage` is `node_usage(state)` when listing several."""
    cpu, mem = (usage or node_usage(state, node))[node.name]
    entry: JsonObject = {
        "node": node.name,
        "id": f"node/{node.name}",
        "type": "node",
        "status": "online" if node.online else "offline",
        "cpu": cpu,
        "maxcpu": node.threads,
        "mem": mem,
        "maxmem": node.mem_total,
        "disk": node.rootfs_used,
        "maxdisk": node.rootfs_total,
        "uptime": int(now - node.boot_time),
        "level": "",
    }
    if state.ssl_fingerprint:
        entry["ssl_fingerprint"] = state.ssl_fingerprint
    return entry


def node_status(state: ClusterState, node: Node, now: float) -> JsonObject:
    """GET /nodes/{node}/status."""
    cpu, mem = node_usage(state, node)[node.name]
    load = cpu * node.threads
    rootfs_free = node.rootfs_total - node.rootfs_used
    return {
        "uptime": int(now - node.boot_time),
        "cpu": cpu,
        "wait": round(cpu / 40, 4),
        "idle": 0,
        "loadavg": [f"{load:.2f}", f"{load * 0.93:.2f}", f"{load * 0.88:.2f}"],
        "cpuinfo": {
            "model": node.cpu_model,
            "sockets": node.sockets,
            "cores": node.cores,
            "cpus": node.threads,
            "mhz": "3000.000",
            "hvm": "1",
            "user_hz": 100,
            "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat "
            "pse36 clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl "
            "pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx "
            "f16c rdrand hypervisor lahf_lm abm avx2 bmi1 bmi2 svm vmx",
        },
        "memory": {
            "total": node.mem_total,
            "used": mem,
            "free": node.mem_total - mem,
            "available": node.mem_total - mem,
        },
        "swap": {
            "total": node.swap_total,
            "used": node.swap_used,
            "free": node.swap_total - node.swap_used,
        },
        "rootfs": {
            "total": node.rootfs_total,
            "used": node.rootfs_used,
            "free": rootfs_free,
            "avail": rootfs_free,
        },
        "ksm": {"shared": 0},
        "kversion": f"Linux {KERNEL_RELEASE} {KERNEL_VERSION}",
        "pveversion": f"pve-manager/{PVE_VERSION}/{PVE_REPOID}",
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {
            "sysname": "Linux",
            "release": KERNEL_RELEASE,
            "version": KERNEL_VERSION,
            "machine": "x86_64",
        },
    }


def cluster_status(state: ClusterState, local_node: str) -> list[JsonObject]:
    """GET /cluster/status: the cluster entry, then one entry per node."""
    entries: list[JsonObject] = [
        {
            "type": "cluster",
            "id": "cluster",
            "name": state.name,
            "nodes": len(state.nodes),
            "quorate": 1,
            "version": len(state.nodes),
        }
    ]
    for node in state.nodes.values():
        entries.append(
            {
                "type": "node",
                "id": f"node/{node.name}",
                "name": node.name,
                "nodeid": node.nodeid,
                "ip": node.ip,
                "online": 1 if node.online else 0,
                "local": 1 if node.name == local_node else 0,
                "level": "",
            }
        )
    return entries


def storage_resource(storage: Storage, node: str, usage: tuple[int, int]) -> JsonObject:
    """A `storage` item of GET /cluster/resources; `usage` is (total, used) bytes."""
    total, used = usage
    return {
        "id": f"storage/{node}/{storage.name}",
        "type": "storage",
        "storage": storage.name,
        "node": node,
        "status": "available",
        "plugintype": storage.type,
        "content": ",".join(storage.content),
        "shared": 1 if storage.shared else 0,
        "disk": used,
        "maxdisk": total,
    }


def node_storage_entry(storage: Storage, usage: tuple[int, int], with_formats: bool) -> JsonObject:
    """One item of GET /nodes/{node}/storage; `usage` is (total, used) bytes."""
    total, used = usage
    entry: JsonObject = {
        "storage": storage.name,
        **storage_status(storage, usage),
        "used_fraction": round(used / total, 6),
    }
    if with_formats and "images" in storage.content:
        default = FORMATS[storage.type]
        supported = ["raw"] if default == "raw" else ["qcow2", "raw", "vmdk"]
        entry["formats"] = {"default": default, "supported": supported}
    return entry


def guest_resource(guest: Guest, now: float) -> JsonObject:
    """A `qemu` or `lxc` item of GET /cluster/resources: the list entry's figures
    (`_guest_common`) built directly, since a big cluster lists thousands of them."""
    live = _guest_live(guest, now)
    entry: JsonObject = {
        "id": f"{guest.kind}/{guest.vmid}",
        "type": guest.kind,
        "node": guest.node,
        "vmid": guest.vmid,
        "name": guest.name,
        # pvestatd reports QEMU's qmpstatus, so a paused VM shows as `paused` here.
        "status": qmpstatus(guest) if guest.kind == "qemu" else guest.status,
        "maxcpu": guest.cores,
        "template": 1 if guest.template else 0,
        "cpu": live["cpu"],
        "mem": live["mem"],
        "maxmem": guest.maxmem,
        "disk": guest.disk_used if guest.kind == "lxc" and guest.status == "running" else 0,
        "maxdisk": guest.maxdisk,
        "uptime": live["uptime"],
        "netin": live["netin"],
        "netout": live["netout"],
        "diskread": live["diskread"],
        "diskwrite": live["diskwrite"],
    }
    if (tags := guest.tags) is not None:
        entry["tags"] = tags
    if (lock := guest.lock) is not None:
        entry["lock"] = lock
    if guest.pool is not None:
        entry["pool"] = guest.pool
    return entry


def node_resource(
    state: ClusterState, node: Node, now: float, usage: Usage | None = None
) -> JsonObject:
    """A `node` item of GET /cluster/resources."""
    entry = node_list_entry(state, node, now, usage)
    entry.pop("ssl_fingerprint", None)
    entry["cgroup-mode"] = 2
    return entry


def task_entry(task: Task) -> JsonObject:
    """One item of the task lists: the UPID's fields, plus end time and status when stopped."""
    entry: JsonObject = {
        "upid": task.upid,
        "node": task.node,
        "pid": task.pid,
        "pstart": task.pstart,
        "starttime": task.starttime,
        "type": task.type,
        "id": task.id,
        "user": task.owner,
    }
    if task.tokenid is not None:
        entry["tokenid"] = task.tokenid
    if task.exitstatus is not None and task.end is not None:
        entry["endtime"] = int(task.end)
        entry["status"] = task.exitstatus
    return entry


def task_status(task: Task) -> JsonObject:
    """GET /nodes/{node}/tasks/{upid}/status."""
    entry = task_entry(task)
    entry.pop("endtime", None)
    entry.pop("status", None)
    entry["status"] = "running" if task.running else "stopped"
    if task.exitstatus is not None:
        entry["exitstatus"] = task.exitstatus
    return entry
