"""Diagnostics (issue 12): what needs attention on the cluster, measured and ranked.

Read tier only. Each finding cites the number measured, the threshold it passed and the
call that acts on it (a tool and its arguments), so an agent can go from "what is wrong"
to the fix without another search. Severity is `critical` from 95 % (or the threshold,
if set higher), else `warning`; findings are ranked critical first, then by how far past
the threshold.

The reads are bounded and cluster-wide where PVE allows: `/cluster/resources` once (nodes,
guests with their live memory and container disk figures, storages with usage), then
per node its status and last hour of rrddata (2 calls), and per guest at most 3 calls:
its config (onboot, agent, whether it has snapshots: the `parent` key), its snapshot list
only when it has snapshots, and the agent's filesystems only for a running VM whose
config enables the agent. Backups are listed once per backup storage (a shared one once,
a local one once per node), never per guest. At most `CONCURRENCY` reads run at once, and
at most `MAX_GUESTS` guests are read one by one in a call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from pydantic import AfterValidator, Field

from pvemcp.tools.kit import (
    NodeName,
    ProxmoxError,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    as_float,
    as_int,
    matching,
    tag_list,
    tool,
)

CONCURRENCY = 6
"""Reads in flight at once: enough to hide latency, few enough not to load pveproxy."""

MAX_GUESTS = 300
"""Guests one call reads one by one (at most 3 reads each); more must be narrowed by a
filter, or checked only for what `/cluster/resources` and the backup lists answer."""

CRITICAL_PCT = 95.0
DAY = 86_400


def _percent(value: float) -> float:
    if not 1 <= value <= 100:
        raise ValueError("is not a percentage from 1 to 100")
    return value


Pct = Annotated[float, AfterValidator(_percent)]
"""A threshold in %, checked in code: its range in every schema would cost bytes."""
Severity = Literal["critical", "warning"]


class Finding(ToolOutput):
    severity: Severity
    kind: str
    target: str
    value: float | None = None
    """The measured figure (None: there is none, e.g. never backed up)."""
    threshold: float | None = None
    unit: str | None = None
    detail: str
    action: str
    tool: str | None = None
    args: dict[str, Any] | None = None


def _finding(
    kind: str,
    target: str,
    detail: str,
    action: str,
    *,
    value: float | None = None,
    threshold: float | None = None,
    unit: str | None = None,
    severity: Severity | None = None,
    call: tuple[str, dict[str, Any]] | None = None,
) -> Finding:
    if severity is None:
        high = value is not None and value >= max(CRITICAL_PCT, threshold or 0)
        severity = "critical" if high else "warning"
    return Finding(
        severity=severity,
        kind=kind,
        target=target,
        value=None if value is None else round(value, 1),
        threshold=threshold,
        unit=unit,
        detail=detail,
        action=action,
        tool=call[0] if call else None,
        args=call[1] if call else None,
    )


def _ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Critical first, then the furthest past its threshold (no figure: first of its
    severity, as "never" is past any number of days)."""

    def key(found: Finding) -> tuple[int, float, str]:
        past = math.inf
        if found.value is not None and found.threshold is not None:
            past = found.value - found.threshold
        return (found.severity != "critical", -past, found.target)

    return sorted(findings, key=key)


def _pct(used: Any, total: Any) -> float | None:
    high, low = as_float(total), as_float(used)
    if not high or low is None:
        return None
    return round(100 * low / high, 1)


def _gib(value: Any) -> float:
    return round((as_float(value) or 0.0) / 1024**3, 1)


class _Reader:
    """The tool call's reads, at most `CONCURRENCY` at once, counted."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.calls = 0
        self._limit = anyio.CapacityLimiter(CONCURRENCY)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        async with self._limit:
            self.calls += 1
            return await self.ctx.get(path, params)

    @staticmethod
    async def each(jobs: Iterable[Callable[[], Coroutine[Any, Any, None]]]) -> None:
        """Run `jobs` concurrently (the limiter bounds their reads); the first failure
        fails the call with its own error."""
        try:
            async with anyio.create_task_group() as group:
                for job in jobs:
                    group.start_soon(job)
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None


def _rows(data: Any, kind: str) -> list[dict[str, Any]]:
    return [r for r in data if isinstance(r, dict) and r.get("type") == kind]


def _holds(storage: dict[str, Any], content: str) -> bool:
    """Whether a storage resource's `content` list has `content` (e.g. backup)."""
    return content in str(storage.get("content", "")).split(",")


def _known_node(ctx: ToolContext, resources: Any, node: str | None) -> None:
    """`not_found` naming the field when the cluster has no node `node` (None: any)."""
    if node is not None and node not in {r["node"] for r in _rows(resources, "node")}:
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no node {node!r}",
            field="node",
            hint="Omit node to cover every node (proxmox_node_list lists them).",
        )


# --- nodes -----------------------------------------------------------------------------


class NodesArgs(ToolInput):
    node: Annotated[NodeName | None, Field(description="Only this node.")] = None
    cpu_pct: Annotated[Pct, Field(description="CPU, last hour's average.")] = 85
    mem_pct: Pct = 90
    rootfs_pct: Pct = 85
    swap_pct: Pct = 50
    storage_pct: Pct = 85


class NodePressure(ToolOutput):
    node: str
    status: str
    cpu_pct: float | None = None
    cpu_avg_pct: float | None = None
    cpu_max_pct: float | None = None
    """Last hour: mean and highest of the minute averages."""
    mem_pct: float | None = None
    rootfs_pct: float | None = None
    swap_pct: float | None = None
    storages: dict[str, float] | None = None
    """Used % of each storage seen from this node (a shared one under its first node)."""


class NodesDiagnosis(ToolOutput):
    nodes: list[NodePressure]
    findings: list[Finding]
    calls: int


def _node_findings(row: NodePressure, args: NodesArgs) -> list[Finding]:
    node = row.node
    busy = ("proxmox_guest_list", {"node": node, "fields": ["cpu", "mem"]})
    move = "Find its busiest guests and migrate some (proxmox_guest_migrate) or shrink them."
    found = []
    if row.cpu_avg_pct is not None and row.cpu_avg_pct >= args.cpu_pct:
        detail = f"CPU averaged {row.cpu_avg_pct} % over the last hour (peak {row.cpu_max_pct} %"
        found.append(
            _finding(
                "cpu",
                f"node {node}",
                f"{detail}, now {row.cpu_pct} %)",
                move,
                value=row.cpu_avg_pct,
                threshold=args.cpu_pct,
                unit="%",
                call=busy,
            )
        )
    for kind, value, limit, what, action, call in (
        ("memory", row.mem_pct, args.mem_pct, "memory", move, busy),
        ("swap", row.swap_pct, args.swap_pct, "swap", move, busy),
        (
            "rootfs",
            row.rootfs_pct,
            args.rootfs_pct,
            "root filesystem",
            "Free space on the root filesystem: old ISOs, templates and backups on local.",
            ("proxmox_storage_content", {"storage": "local", "node": node}),
        ),
    ):
        if value is not None and value >= limit:
            found.append(
                _finding(
                    kind,
                    f"node {node}",
                    f"{what} {value} % used",
                    action,
                    value=value,
                    threshold=limit,
                    unit="%",
                    call=call,
                )
            )
    return found


def _storage_finding(
    entry: dict[str, Any], used: float, limit: float, room: dict[str, list[tuple[float, str]]]
) -> Finding:
    name, node = str(entry["storage"]), str(entry["node"])
    shared = bool(entry.get("shared"))
    target = f"storage {name}" + (" (shared)" if shared else f" on {node}")
    free = round(_gib(entry.get("maxdisk")) - _gib(entry.get("disk")), 1)
    detail = f"{used} % used, {free} GiB free of {_gib(entry.get('maxdisk'))} GiB"
    if _holds(entry, "backup"):
        action = "Delete old, unprotected backups (proxmox_storage_volume_delete)."
        call = ("proxmox_backup_list", {"storage": name, "node": node})
    else:
        other = next(((gib, s) for gib, s in room.get(node, []) if s != name), None)
        where = f" to {other[1]} ({other[0]} GiB free)" if other else ""
        action = f"Move guest disks{where} with proxmox_disk_move, or delete unused volumes."
        call = ("proxmox_storage_content", {"storage": name, "node": node, "content": "images"})
    return _finding(
        "storage", target, detail, action, value=used, threshold=limit, unit="%", call=call
    )


def _room(storages: list[dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """Per node, its disk-image storages by free GiB, roomiest first: where a move can go."""
    room: dict[str, list[tuple[float, str]]] = {}
    for entry in storages:
        if not _holds(entry, "images") or entry.get("status") != "available":
            continue
        free = round(_gib(entry.get("maxdisk")) - _gib(entry.get("disk")), 1)
        room.setdefault(str(entry["node"]), []).append((free, str(entry["storage"])))
    return {node: sorted(found, reverse=True) for node, found in room.items()}


@tool(
    "proxmox_diagnose_nodes",
    title="Diagnose node pressure",
    tier=Tier.READ,
    toolset="diagnostics",
    input=NodesArgs,
    output=NodesDiagnosis,
    idempotent=True,
    api=[
        "GET /cluster/resources",
        "GET /nodes/{node}/status",
        "GET /nodes/{node}/rrddata",
    ],
    examples=[{}, {"node": "pve2", "storage_pct": 10}, {"cpu_pct": 1, "mem_pct": 1}],
    rejects=[
        ({"node": "pve9"}, "not_found"),
        ({"storage_pct": 150}, "invalid_argument"),
        ({"cpu_pct": 0}, "invalid_argument"),
    ],
)
async def diagnose_nodes(ctx: ToolContext, args: NodesArgs) -> NodesDiagnosis:
    """Node pressure ranked across nodes: CPU (now, last hour avg/max), memory, swap, root
    filesystem, storages near full; each finding with its figure, threshold and the tool
    call to fix it. Thresholds are percent."""
    reader = _Reader(ctx)
    resources = await reader.get("/cluster/resources")
    _known_node(ctx, resources, args.node)
    nodes = sorted(_rows(resources, "node"), key=lambda r: str(r["node"]))
    nodes = [r for r in nodes if args.node in (None, r["node"])]
    storages = _rows(resources, "storage")
    rows = {
        str(r["node"]): NodePressure(node=str(r["node"]), status=str(r.get("status")))
        for r in nodes
    }

    async def measure(row: NodePressure) -> None:
        status = await reader.get(f"/nodes/{row.node}/status")
        rrd = await reader.get(f"/nodes/{row.node}/rrddata", {"timeframe": "hour", "cf": "AVERAGE"})
        row.cpu_pct = _pct(status.get("cpu"), 1)
        memory, swap = status.get("memory") or {}, status.get("swap") or {}
        row.mem_pct = _pct(memory.get("used"), memory.get("total"))
        row.swap_pct = _pct(swap.get("used"), swap.get("total"))
        row.rootfs_pct = _pct(
            (status.get("rootfs") or {}).get("used"), (status.get("rootfs") or {}).get("total")
        )
        cpu = [v for item in rrd if (v := as_float(item.get("cpu"))) is not None]
        if cpu:
            row.cpu_avg_pct = round(100 * sum(cpu) / len(cpu), 1)
            row.cpu_max_pct = round(100 * max(cpu), 1)

    online = [row for row in rows.values() if row.status == "online"]
    await reader.each([partial(measure, row) for row in online])
    findings = [
        _finding(
            "offline",
            f"node {row.node}",
            f"node is {row.status}",
            "Check the node's power and network; its guests are unreachable.",
            severity="critical",
            call=("proxmox_cluster_status", {}),
        )
        for row in rows.values()
        if row.status != "online"
    ]
    for row in online:
        findings += _node_findings(row, args)
    room = _room(storages)
    seen_shared: set[str] = set()
    for entry in sorted(storages, key=lambda e: (str(e["node"]), str(e["storage"]))):
        holder = rows.get(str(entry["node"]))
        used = _pct(entry.get("disk"), entry.get("maxdisk"))
        name = str(entry["storage"])
        if holder is None or used is None or (entry.get("shared") and name in seen_shared):
            continue
        if entry.get("shared"):
            seen_shared.add(name)
        holder.storages = {**(holder.storages or {}), name: used}
        if used >= args.storage_pct:
            findings.append(_storage_finding(entry, used, args.storage_pct, room))
    return NodesDiagnosis(nodes=list(rows.values()), findings=_ranked(findings), calls=reader.calls)


# --- guests ----------------------------------------------------------------------------

Check = Literal["stopped", "memory", "disk", "backup", "snapshot", "agent"]
CHECKS: tuple[Check, ...] = ("stopped", "memory", "disk", "backup", "snapshot", "agent")


class GuestsArgs(ToolInput):
    node: NodeName | None = None
    pool: Annotated[str | None, matching(r"[\w.-]{1,64}", "a pool id")] = None
    tag: Annotated[str | None, matching(r"[\w.+-]{1,64}", "a tag")] = None
    vmid: Vmid | None = None
    checks: Annotated[list[Check] | None, Field(description="Default: all.")] = None
    mem_pct: Pct = 90
    disk_pct: Pct = 90
    backup_days: Annotated[int, Field(ge=1, le=3650)] = 7
    snapshot_days: Annotated[int, Field(ge=1, le=3650)] = 30
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class GuestsDiagnosis(ToolOutput):
    guests: int
    findings: list[Finding]
    total: int
    """Findings in all; `findings` holds the first `limit` of them, ranked."""
    calls: int


def _label(row: dict[str, Any]) -> str:
    return f"{row['type']} {row['vmid']} ({row.get('name', '')}) on {row['node']}"


def _selected(guests: list[dict[str, Any]], args: GuestsArgs) -> list[dict[str, Any]]:
    chosen = [
        r
        for r in guests
        if not r.get("template")
        and (args.node is None or r.get("node") == args.node)
        and (args.pool is None or r.get("pool") == args.pool)
        and (args.tag is None or args.tag in (tag_list(r.get("tags")) or []))
        and (args.vmid is None or r.get("vmid") == args.vmid)
    ]
    if args.vmid is not None and not chosen:
        raise ToolFailure(
            "not_found",
            f"no guest {args.vmid} (or it is a template, or outside the other filters)",
            field="vmid",
            hint="proxmox_guest_list lists the guests.",
        )
    return sorted(chosen, key=lambda r: int(r["vmid"]))


def _enabled(value: Any) -> bool:
    """An `agent` property string's `enabled` (`1`, `enabled=1,fstrim_cloned_disks=1`)."""
    return str(value or "0").split(",")[0].removeprefix("enabled=") in ("1", "on", "yes", "true")


_BUSES = ("scsi", "virtio", "sata", "ide")


class _GuestCheck:
    """The per-guest reads and findings of one diagnose call."""

    def __init__(self, reader: _Reader, args: GuestsArgs, checks: set[Check], now: float):
        self.reader, self.args, self.checks, self.now = reader, args, checks, now
        self.findings: list[Finding] = []

    def add(self, kind: str, row: dict[str, Any], detail: str, action: str, **kw: Any) -> None:
        self.findings.append(_finding(kind, _label(row), detail, action, **kw))

    async def guest(self, row: dict[str, Any]) -> None:
        vmid, kind, node = int(row["vmid"]), str(row["type"]), str(row["node"])
        base = f"/nodes/{node}/{kind}/{vmid}"
        status = str(row.get("status"))
        self._live(row, vmid, status)
        vm_disks = "disk" in self.checks and kind == "qemu" and status == "running"
        if not (vm_disks or self.checks & {"stopped", "snapshot", "agent"}):
            return
        config = await self.reader.get(f"{base}/config")
        # PVE starts an HA-managed guest by its HA state, not onboot (`_live` checks it).
        onboot = as_int(config.get("onboot")) and not row.get("hastate")
        if "stopped" in self.checks and status == "stopped" and onboot:
            self.add(
                "stopped",
                row,
                "stopped although onboot=1",
                "Start it, or set onboot=0 if it should stay off.",
                severity="critical",
                call=("proxmox_guest_power", {"vmid": vmid, "action": "start"}),
            )
        if "snapshot" in self.checks and config.get("parent"):
            await self._snapshots(row, base)
        agent = kind == "qemu" and status == "running" and _enabled(config.get("agent"))
        if agent and self.checks & {"agent", "disk"}:
            await self._agent(row, base)

    def _live(self, row: dict[str, Any], vmid: int, status: str) -> None:
        """What `/cluster/resources` already says: HA's state, memory, a container's disk."""
        # `started`: the CRM has yet to start it (or cannot); `error`: it gave up.
        hastate = row.get("hastate")
        if "stopped" in self.checks and status == "stopped" and hastate in ("started", "error"):
            self.add(
                "stopped",
                row,
                f"stopped although its HA state is {hastate}",
                "See why HA cannot start it (proxmox_ha_status; an error state needs the "
                "resource disabled, fixed and requested started again).",
                severity="critical",
                call=("proxmox_ha_status", {}),
            )
        if status != "running":
            return
        mem = _pct(row.get("mem"), row.get("maxmem"))
        if "memory" in self.checks and mem is not None and mem >= self.args.mem_pct:
            mib = int(as_float(row.get("maxmem")) or 0) // 1024**2
            more = math.ceil(mib * 1.5 / 512) * 512
            self.add(
                "memory",
                row,
                f"memory {mem} % used of {mib} MiB",
                f"Give it more memory (e.g. {more} MiB; applies at next start if not hotplug).",
                value=mem,
                threshold=self.args.mem_pct,
                unit="%",
                call=("proxmox_guest_config_update", {"vmid": vmid, "values": {"memory": more}}),
            )
        disk = _pct(row.get("disk"), row.get("maxdisk"))
        if "disk" in self.checks and row.get("type") == "lxc" and disk is not None:
            self._disk(row, "/ (rootfs)", disk, as_float(row.get("maxdisk")) or 0.0, "rootfs")

    def _disk(
        self,
        row: dict[str, Any],
        what: str,
        used: float,
        total: float,
        key: str | None,
    ) -> None:
        if used < self.args.disk_pct:
            return
        size = math.ceil(total / 1024**3 * 1.5)
        args: dict[str, Any] = {"vmid": int(row["vmid"]), "size_gib": size}
        if key is not None:
            args["disk"] = key
        grow = "" if row["type"] == "lxc" else ", then grow the filesystem in the guest"
        self.add(
            "disk",
            row,
            f"{what} {used} % used of {_gib(total)} GiB",
            f"Grow the disk (e.g. to {size} GiB){grow}, or free space in the guest.",
            value=used,
            threshold=self.args.disk_pct,
            unit="%",
            call=("proxmox_disk_resize", args),
        )

    async def _snapshots(self, row: dict[str, Any], base: str) -> None:
        for snap in await self.reader.get(f"{base}/snapshot"):
            stamp = as_int(snap.get("snaptime"))
            if snap.get("name") == "current" or stamp is None:
                continue
            days = (self.now - stamp) / DAY
            if days >= self.args.snapshot_days:
                self.add(
                    "snapshot",
                    row,
                    f"snapshot {snap['name']} is {days:.0f} days old",
                    "Delete it if no longer needed: old snapshots grow and slow I/O.",
                    value=days,
                    threshold=self.args.snapshot_days,
                    unit="days",
                    severity="warning",
                    call=(
                        "proxmox_snapshot_delete",
                        {"vmid": int(row["vmid"]), "snapname": snap["name"]},
                    ),
                )

    async def _agent(self, row: dict[str, Any], base: str) -> None:
        try:
            answer = await self.reader.get(f"{base}/agent/get-fsinfo")
        except ProxmoxError as failed:
            if "agent" in self.checks:
                self.add(
                    "agent",
                    row,
                    f"agent=1 but the agent does not answer: {failed}",
                    "Install or start qemu-guest-agent in the guest, or set agent=0.",
                    severity="warning",
                    call=("proxmox_agent_info", {"vmid": int(row["vmid"]), "fields": ["ping"]}),
                )
            return
        if "disk" not in self.checks:
            return
        for fs in (answer or {}).get("result") or []:
            used = _pct(fs.get("used-bytes"), fs.get("total-bytes"))
            if used is None or fs.get("type") in ("squashfs", "iso9660", "tmpfs"):
                continue
            disk = (fs.get("disk") or [{}])[0]
            bus = disk.get("bus-type")
            # qga names the bus and unit; a PVE key is that pair for the common buses
            # (a guess for SCSI behind other controllers: the argument is then left out).
            key = f"{bus}{disk.get('unit')}" if bus in _BUSES and "unit" in disk else None
            self._disk(
                row,
                f"{fs.get('mountpoint')} ({fs.get('name')})",
                used,
                as_float(fs.get("total-bytes")) or 0.0,
                key,
            )


async def _last_backups(reader: _Reader, storages: list[dict[str, Any]]) -> dict[int, int]:
    """Each vmid's newest backup time, listing each backup storage once (a local one once
    per node that has it)."""
    places: dict[tuple[str, str], None] = {}
    shared: set[str] = set()
    for entry in sorted(storages, key=lambda e: (str(e["node"]), str(e["storage"]))):
        name = str(entry["storage"])
        if not _holds(entry, "backup"):
            continue
        if entry.get("status") != "available" or name in shared:
            continue
        if entry.get("shared"):
            shared.add(name)
        places[(str(entry["node"]), name)] = None
    newest: dict[int, int] = {}

    async def read(node: str, storage: str) -> None:
        path = f"/nodes/{node}/storage/{storage}/content"
        for item in await reader.get(path, {"content": "backup"}):
            vmid, ctime = as_int(item.get("vmid")), as_int(item.get("ctime"))
            if vmid is not None and ctime is not None:
                newest[vmid] = max(newest.get(vmid, 0), ctime)

    await reader.each([partial(read, *place) for place in places])
    return newest


def _backup_findings(
    check: _GuestCheck, guests: list[dict[str, Any]], newest: dict[int, int], storage: str | None
) -> None:
    limit = check.args.backup_days
    for row in guests:
        vmid = int(row["vmid"])
        args: dict[str, Any] = {"vmid": vmid} | ({"storage": storage} if storage else {})
        call = ("proxmox_backup_start", args)
        action = "Back it up now, and add it to a backup job (proxmox_backup_job)."
        if vmid not in newest:
            check.add(
                "backup",
                row,
                "no backup on any backup storage",
                action,
                threshold=limit,
                unit="days",
                severity="critical",
                call=call,
            )
            continue
        days = (check.now - newest[vmid]) / DAY
        if days >= limit:
            check.add(
                "backup",
                row,
                f"last backup {days:.1f} days ago",
                action,
                value=days,
                threshold=limit,
                unit="days",
                severity="warning",
                call=call,
            )


@tool(
    "proxmox_diagnose_guests",
    title="Diagnose guest health",
    tier=Tier.READ,
    toolset="diagnostics",
    input=GuestsArgs,
    output=GuestsDiagnosis,
    idempotent=True,
    api=[
        "GET /cluster/resources",
        "GET /nodes/{node}/{type}/{vmid}/config",
        "GET /nodes/{node}/{type}/{vmid}/snapshot",
        "GET /nodes/{node}/qemu/{vmid}/agent/get-fsinfo",
        "GET /nodes/{node}/storage/{storage}/content",
    ],
    examples=[
        {},
        {"node": "pve1", "checks": ["stopped", "backup"]},
        {"pool": "prod", "snapshot_days": 5, "limit": 3},
        {"vmid": 100, "mem_pct": 1, "disk_pct": 1},
    ],
    rejects=[
        ({"vmid": 999}, "not_found"),
        ({"vmid": 9000}, "not_found"),
        ({"node": "pve9"}, "not_found"),
        ({"backup_days": 0}, "invalid_argument"),
        ({"checks": ["cpu"]}, "invalid_argument"),
    ],
)
async def diagnose_guests(ctx: ToolContext, args: GuestsArgs) -> GuestsDiagnosis:
    """Guest health: stopped though onboot/HA wants it running, memory or disks near full,
    no backup in backup_days, snapshots older than snapshot_days, agent not answering;
    filter by node, pool, tag, vmid. Findings ranked, capped at limit."""
    reader = _Reader(ctx)
    resources = await reader.get("/cluster/resources")
    _known_node(ctx, resources, args.node)
    guests = _selected([r for r in resources if r.get("type") in ("qemu", "lxc")], args)
    checks = set(args.checks or CHECKS)
    check = _GuestCheck(reader, args, checks, time.time())
    # A guest on a node that is down shows as `unknown`: nothing of it can be read.
    reachable = [r for r in guests if r.get("status") != "unknown"]
    if checks & {"stopped", "snapshot", "agent", "disk"} and len(reachable) > MAX_GUESTS:
        raise ToolFailure(
            "invalid_argument",
            f"{len(reachable)} guests match; one call reads at most {MAX_GUESTS} one by one",
            field="node",
            hint="Filter by node, pool, tag or vmid, or pass checks memory and backup only.",
        )
    await reader.each([partial(check.guest, row) for row in reachable])
    if "backup" in checks and guests:
        storages = _rows(resources, "storage")
        newest = await _last_backups(reader, storages)
        shared = [str(e["storage"]) for e in storages if e.get("shared") and _holds(e, "backup")]
        _backup_findings(check, guests, newest, shared[0] if shared else None)
    ranked = _ranked(check.findings)
    return GuestsDiagnosis(
        guests=len(guests), findings=ranked[: args.limit], total=len(ranked), calls=reader.calls
    )


TOOLS = (diagnose_nodes, diagnose_guests)
