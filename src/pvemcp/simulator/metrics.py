"""RRD statistics: GET .../rrddata of nodes, guests and storages.

PVE's pmxcfs writes one RRD per node, guest and storage every minute (pve-cluster
`src/pmxcfs/status.c`, the `rrd_def_*_pve9_0` definitions: a 60 s step, AVERAGE and MAX
archives of 1440 rows at 1 min, 30 min and 6 h, 570 rows at 1 week), and
`PVE::RRD::create_rrd_data` (pve-cluster `src/PVE/RRD.pm`) fetches a timeframe as
`[resolution, count]`: hour 60 x 60 s, day 1440 x 60 s, week 336 x 30 min, month
1440 x 30 min, year 1440 x 6 h, decade 570 x 1 week (nodes only). Each row is
`{time, <data source>: value...}`; a row where the RRD has no value carries only `time`.

The simulator keeps no RRD: it computes each row from the object's seeded rates and its
history, so the series agree with the rest of the API. A guest's run state at any time
comes from its finished power tasks (a guest is stopped before the start that started
it, running after), so a stopped guest's cpu, memory use and traffic are 0 and a running
guest's memory sits near its configured size times its seeded use; a node sums its host
load and its running guests; a storage's `used` ends at its current usage. On top, a
smooth daily wave and a per-row jitter from a hash of (object, time), never a random
generator, so the same clock gives the same rows. With one primary data point per row
(the 60 s timeframes) MAX equals AVERAGE, as in a real RRD; coarser rows have MAX above.

The handlers follow the real ones: the guest methods read `pve-vm-9.0/{vmid}` whatever
node and type the path names (qemu-server's and pve-container's `rrddata` check neither),
the node method reads `pve-node-9.0/{node}` without proxying, the storage method proxies
to the node and reads `pve-storage-9.0/{node}/{storage}`. A missing file is RRDs' error
(`RRD error: opening '...': No such file or directory`; through rrdcached the text may
differ, unsure).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from typing import Any

from .errors import failure
from .model import Guest, Node, Storage
from .router import Context, Params, Result, Route, api, for_kinds, integer, text
from .state import ClusterState
from .tasks import Task

TIMEFRAMES: dict[str, tuple[int, int]] = {
    "hour": (60, 60),
    "day": (60, 1440),
    "week": (1800, 336),
    "month": (1800, 1440),
    "year": (21_600, 1440),
    "decade": (604_800, 570),
}
"""Timeframe -> (seconds per row, rows), PVE 9's `$setup` in `PVE::RRD::create_rrd_data`."""

_RRD_DIR = "/var/lib/rrdcached/db"
_DAY = 86_400.0
_NODE_HISTORY = 2 * 365 * _DAY
"""How far back a node's RRD reaches before its boot (an install two years ago)."""

_STARTS = frozenset({"qmstart", "vzstart", "qmresume", "vzresume"})
_STOPS = frozenset({"qmstop", "qmshutdown", "qmsuspend", "vzstop", "vzshutdown"})
_PAUSES = frozenset({"qmpause", "vzsuspend"})
_CREATES = frozenset({"qmcreate", "vzcreate", "qmrestore", "vzrestore"})

Row = dict[str, Any]


def _noise(key: str, bucket: int) -> float:
    """A value in [0, 1) fixed by (key, bucket): the jitter of one row."""
    return zlib.crc32(f"{key}:{bucket}".encode()) / 2**32


def _wave(key: str, at: float) -> float:
    """A daily swing in [0.6, 1.4], its phase fixed by `key`: busier by day than by night."""
    phase = zlib.crc32(key.encode()) / 2**32 * 2 * math.pi
    return 1.0 + 0.4 * math.sin(2 * math.pi * at / _DAY + phase)


def _level(key: str, at: float, step: int, peak: bool) -> float:
    """The factor a base figure is multiplied by in the row at `at`: the wave and jitter,
    and for MAX of a coarse row the highest minute in it."""
    factor = _wave(key, at) * (0.85 + 0.3 * _noise(key, int(at) // step))
    if peak and step > 60:
        factor *= 1.15 + 0.35 * _noise(key + "/max", int(at) // step)
    return factor


class _RunState:
    """A guest's run state over time, from its finished power tasks: stopped before the
    task that started it, running after, and so on. When the tasks do not end in the
    guest's current state (a state the seed or a test set directly), the current state is
    taken as its state all along."""

    def __init__(self, guest: Guest, tasks: list[Task]) -> None:
        changes: list[tuple[float, str]] = []
        for task in tasks:
            if task.exitstatus != "OK" or task.end is None:
                continue
            if task.type in _STARTS:
                changes.append((task.end, "running"))
            elif task.type in _STOPS:
                changes.append((task.end, "stopped"))
            elif task.type in _PAUSES:
                changes.append((task.end, "paused"))
        changes.sort()
        current: str = "paused" if guest.paused else guest.status
        if not changes or changes[-1][1] != current:
            changes = []
        self._changes = changes
        self._before: str = (
            ("stopped" if changes[0][1] == "running" else "running") if changes else current
        )

    def at(self, moment: float) -> str:
        state = self._before
        for at, new in self._changes:
            if at > moment:
                break
            state = new
        return state


def _rows(timeframe: str, now: float, sample: Callable[[float, int], Row | None]) -> list[Row]:
    """The fetched rows, oldest first: `sample(time, step)` gives a row's values or None
    where the RRD has none (rrdtool may return one row more at the edges; unsure, the
    simulator returns exactly `count`)."""
    step, count = TIMEFRAMES[timeframe]
    end = step * int(now // step)
    rows = []
    for index in range(count):
        at = end - step * (count - index)
        values = sample(at, step)
        rows.append({"time": at, **(values or {})})
    # create_rrd_data drops a newest row that has only `time`.
    if rows and len(rows[-1]) == 1:
        rows.pop()
    return rows


def _missing(name: str) -> Exception:
    return failure(f"RRD error: opening '{_RRD_DIR}/{name}': No such file or directory")


def _guest_tasks(state: ClusterState, vmid: int) -> list[Task]:
    return [task for task in state.tasks if task.id == str(vmid)]


def _born(guest: Guest, tasks: list[Task]) -> float | None:
    """When the guest's RRD began: its creation time (qemu's `meta` ctime, else the task
    that created or restored it); None for a seeded guest without either (always there)."""
    match = re.search(r"ctime=(\d+)", str(guest.config.get("meta", "")))
    if match:
        return float(match.group(1))
    created = [task.created for task in tasks if task.type in _CREATES]
    return min(created) if created else None


def guest_sampler(
    state: ClusterState, guest: Guest, peak: bool
) -> Callable[[float, int], Row | None]:
    """The values of `pve-vm-9.0/{vmid}` at a time (see the module docstring)."""
    tasks = _guest_tasks(state, guest.vmid)
    run = _RunState(guest, tasks)
    born = _born(guest, tasks)
    key = f"vm/{guest.vmid}"
    maxmem = guest.maxmem

    def sample(at: float, step: int) -> Row | None:
        if born is not None and at + step <= born:
            return None
        status = run.at(at)
        row: Row = {"maxcpu": guest.cores, "maxmem": maxmem, "maxdisk": guest.maxdisk}
        if status == "stopped":
            return row | dict.fromkeys(
                ("cpu", "mem", "memhost", "disk", "netin", "netout", "diskread", "diskwrite",
                 "pressurecpusome", "pressurecpufull", "pressureiosome", "pressureiofull",
                 "pressurememorysome", "pressurememoryfull"),
                0,
            )  # fmt: skip
        level = _level(key, at, step, peak)
        mem = min(maxmem, int(maxmem * guest.mem_fraction * (0.9 + 0.1 * level)))
        busy = 0.0 if status == "paused" else min(1.0, guest.cpu_load * level)
        net = 0.0 if status == "paused" else guest.net_rate * level
        io = 0.0 if status == "paused" else guest.io_rate * level
        return row | {
            "cpu": round(busy, 6),
            "mem": mem,
            "memhost": mem + mem // 20,
            "disk": guest.disk_used if guest.kind == "lxc" else 0,
            "netin": round(net, 2),
            "netout": round(net * 0.3, 2),
            "diskread": round(io, 2),
            "diskwrite": round(io * 0.4, 2),
            "pressurecpusome": round(busy * 2, 2),
            "pressurecpufull": round(busy, 2),
            "pressureiosome": round(min(io / 2e6, 5.0), 2),
            "pressureiofull": round(min(io / 4e6, 3.0), 2),
            "pressurememorysome": 0,
            "pressurememoryfull": 0,
        }

    return sample


def node_sampler(state: ClusterState, node: Node, peak: bool) -> Callable[[float, int], Row | None]:
    """The values of `pve-node-9.0/{node}` at a time: the host plus the guests that ran
    on the node then (a guest's history is counted on the node it is on now)."""
    guests = [g for g in state.guests.values() if g.node == node.name and not g.template]
    samplers = [guest_sampler(state, guest, peak) for guest in guests]
    key = f"node/{node.name}"
    born = node.boot_time - _NODE_HISTORY

    def sample(at: float, step: int) -> Row | None:
        if at + step <= born:
            return None
        level = _level(key, at, step, peak)
        cpu = node.host_cpu * level
        mem = int(node.host_mem * (0.95 + 0.05 * level))
        net = 20_000.0 * level
        for guest, guest_sample in zip(guests, samplers, strict=True):
            row = guest_sample(at, step)
            if row is None:
                continue
            cpu += float(row["cpu"]) * guest.cores / node.threads
            mem += int(row["mem"])
            net += float(row["netin"])
        cpu = min(cpu, 1.0)
        mem = min(mem, node.mem_total)
        return {
            "loadavg": round(cpu * node.threads, 2),
            "maxcpu": node.threads,
            "cpu": round(cpu, 6),
            "iowait": round(cpu / 40, 6),
            "memtotal": node.mem_total,
            "memused": mem,
            "memavailable": node.mem_total - mem,
            "swaptotal": node.swap_total,
            "swapused": node.swap_used,
            "roottotal": node.rootfs_total,
            "rootused": node.rootfs_used,
            "netin": round(net, 2),
            "netout": round(net * 0.3, 2),
            "arcsize": 0,
            "pressurecpusome": round(cpu * 3, 2),
            "pressureiosome": round(cpu, 2),
            "pressureiofull": round(cpu / 2, 2),
            "pressurememorysome": 0,
            "pressurememoryfull": 0,
        }

    return sample


def storage_sampler(
    storage: Storage, node: str, usage: tuple[int, int], now: float, peak: bool
) -> Callable[[float, int], Row | None]:
    """The values of `pve-storage-9.0/{node}/{storage}` at a time: `used` grows slowly to
    its current value (about 2 % a month back), with a little jitter; `total` is fixed."""
    total, used = usage
    key = f"storage/{node}/{storage.name}"

    def sample(at: float, step: int) -> Row | None:
        age_days = max(0.0, (now - at) / _DAY)
        shrink = 1.0 - min(0.5, 0.02 * age_days / 30)
        wobble = 0.004 * _noise(key, int(at) // step) * (2 if peak and step > 60 else 1)
        return {"total": total, "used": min(total, int(used * (shrink - 0.004 + wobble)))}

    return sample


def _timeframe(params: Params) -> tuple[str, bool]:
    return text(params, "timeframe"), params.get("cf", "AVERAGE") == "MAX"


def _node_rrd(ctx: Context, params: Params) -> Result:
    name = text(params, "node")
    node = ctx.state.nodes.get(name)
    if node is None:
        raise _missing(f"pve-node-9.0/{name}")
    timeframe, peak = _timeframe(params)
    return Result(_rows(timeframe, ctx.now, node_sampler(ctx.state, node, peak)))


def _guest_rrd(ctx: Context, params: Params) -> Result:
    vmid = integer(params, "vmid")
    guest = ctx.state.guests.get(vmid)
    if guest is None:
        raise _missing(f"pve-vm-9.0/{vmid}")
    timeframe, peak = _timeframe(params)
    return Result(_rows(timeframe, ctx.now, guest_sampler(ctx.state, guest, peak)))


def _storage_rrd(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node")).name
    name = text(params, "storage")
    storage = ctx.state.volumes.storages.get(name)
    if storage is None or node not in storage.usage:
        raise _missing(f"pve-storage-9.0/{node}/{name}")
    timeframe, peak = _timeframe(params)
    usage = ctx.state.volumes.usage(storage, node)
    return Result(_rows(timeframe, ctx.now, storage_sampler(storage, node, usage, ctx.now, peak)))


ROUTES: tuple[Route, ...] = (
    api("GET", "/nodes/{node}/rrddata", _node_rrd),
    *for_kinds("GET", "/nodes/{node}/{kind}/{vmid}/rrddata", None, lambda kind: _guest_rrd),
    api("GET", "/nodes/{node}/storage/{storage}/rrddata", _storage_rrd),
)
