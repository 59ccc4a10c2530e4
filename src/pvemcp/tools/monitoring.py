"""Monitoring tools: RRD metrics summarised per series, task lists, a node's system log.

Read tier only. A metric answer is one line per series (min/avg/max/last with its unit),
not the hundreds of rows PVE sends, unless the caller asks for rows. The task list is
here rather than in `tasks` (status/log/wait of one task the caller already has): listing
and filtering history is what an operator does while watching the cluster, and a toolset
that is enabled for that should bring it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    Answer,
    GuestName,
    NodeName,
    ProxmoxError,
    StorageId,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    answer_as,
    matching,
    node_or_default,
    node_statuses,
    planners,
    read_as,
    tool,
    utc_time,
)

GIB = 1024**3

_UNITS: dict[str, tuple[str, float]] = {
    # series -> (unit, factor from PVE's value)
    "cpu": ("%", 100.0),
    "iowait": ("%", 100.0),
    "loadavg": ("load", 1.0),
    "maxcpu": ("cpus", 1.0),
    "netin": ("B/s", 1.0),
    "netout": ("B/s", 1.0),
    "diskread": ("B/s", 1.0),
    "diskwrite": ("B/s", 1.0),
}
"""Every other series is bytes shown in GiB (memory, disk, swap, root, storage), except
the pressure stall figures, which PVE already gives in %."""


def _unit(series: str) -> tuple[str, float]:
    if series in _UNITS:
        return _UNITS[series]
    if series.startswith("pressure"):
        return "%", 1.0
    return "GiB", 1.0 / GIB


_ROWS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])


async def _known_node(ctx: ToolContext, node: str) -> str:
    """`node` when the cluster has it, else `not_found` naming the field and the nodes."""
    names = sorted(await node_statuses(ctx))
    if node not in names:
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no node {node!r}",
            field="node",
            hint=f"Use one of its nodes: {', '.join(names)}.",
        )
    return node


# --- metrics -------------------------------------------------------------------------

MAX_ROWS = 120


class MetricsArgs(ToolInput):
    node: NodeName | None = None
    vmid: Vmid | None = None
    name: GuestName | None = None
    storage: StorageId | None = None
    timeframe: Literal["hour", "day", "week", "month", "year", "decade"] = "hour"
    cf: Annotated[Literal["AVERAGE", "MAX"], Field(description="Rows: mean or peak.")] = "AVERAGE"
    series: Annotated[
        list[Annotated[str, matching(r"[a-z]{2,24}", "a series name")]] | None,
        Field(max_length=20, description="Only these (e.g. cpu, mem)."),
    ] = None
    points: Annotated[bool, Field(description=f"Also return rows (newest {MAX_ROWS}).")] = False

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if self.vmid is not None and self.name is not None:
            raise ValueError("give vmid or name, not both")
        if self.storage is not None and (self.vmid is not None or self.name is not None):
            raise ValueError("give a guest (vmid or name) or a storage, not both")
        return self


class Series(ToolOutput):
    name: str
    unit: str
    min: float | None = None
    avg: float | None = None
    max: float | None = None
    last: float
    """min/avg/max are left out when the series is constant."""


class Metrics(ToolOutput):
    target: str
    step_s: int
    points: int
    start: str | None = None
    end: str | None = None
    series: list[Series]
    rows: list[dict[str, float]] | None = None


def _summary(name: str, values: list[float]) -> Series:
    unit, factor = _unit(name)
    scaled = [v * factor for v in values]
    low, high = min(scaled), max(scaled)
    series = Series(name=name, unit=unit, last=round(scaled[-1], 2))
    if high != low:
        series.min = round(low, 2)
        series.avg = round(sum(scaled) / len(scaled), 2)
        series.max = round(high, 2)
    return series


async def _metrics_target(ctx: ToolContext, args: MetricsArgs) -> tuple[str, str]:
    """(API path, description) of the RRD the arguments name."""
    if args.vmid is not None or args.name is not None:
        row = await planners.resolve_guest(ctx, args)
        where = f"/nodes/{row['node']}/{row['type']}/{row['vmid']}"
        return where, f"{row['type']} {row['vmid']} ({row.get('name', '')}) on {row['node']}"
    node = await _known_node(ctx, node_or_default(ctx, args.node))
    if args.storage is None:
        return f"/nodes/{node}", f"node {node}"
    await planners.storage_status(ctx, node, args.storage, field="storage")
    return f"/nodes/{node}/storage/{args.storage}", f"storage {args.storage} on {node}"


@tool(
    "proxmox_metrics_get",
    title="Metrics over time",
    tier=Tier.READ,
    toolset="monitoring",
    api=(
        "GET /nodes/{node}/rrddata",
        "GET /nodes/{node}/{type}/{vmid}/rrddata",
        "GET /nodes/{node}/storage/{storage}/rrddata",
    ),
    input=MetricsArgs,
    output=Metrics,
    idempotent=True,
    examples=[
        {"node": "pve1"},
        {"vmid": 100, "timeframe": "day", "cf": "MAX"},
        {"node": "pve2", "storage": "local-lvm", "timeframe": "week", "points": True},
        {"name": "web01", "series": ["cpu", "mem"], "points": True},
    ],
    rejects=[
        ({"vmid": 999}, "not_found"),
        ({"node": "pve9"}, "not_found"),
        ({"node": "pve1", "storage": "nope"}, "not_found"),
        ({"timeframe": "minute"}, "invalid_argument"),
        ({"vmid": 100, "timeframe": "decade"}, "invalid_argument"),
    ],
)
async def metrics(ctx: ToolContext, args: MetricsArgs) -> Metrics:
    """A node's, guest's (vmid/name) or storage's CPU, memory, disk and network over a
    timeframe, as min/avg/max/last per series; raw rows only with points."""
    if args.timeframe == "decade" and (args.vmid or args.name or args.storage):
        raise ToolFailure(
            "invalid_argument",
            "timeframe 'decade' exists for nodes only",
            field="timeframe",
            hint="Use year for a guest or a storage.",
        )
    base, target = await _metrics_target(ctx, args)
    path = f"{base}/rrddata"
    rows = await read_as(ctx, _ROWS, path, {"timeframe": args.timeframe, "cf": args.cf})
    known = {key for row in rows for key in row if key != "time"}
    wanted = set(args.series) if args.series else known
    if rows and wanted - known:
        raise ToolFailure(
            "invalid_argument",
            f"no series {', '.join(sorted(wanted - known))} in this RRD",
            field="series",
            hint=f"Its series: {', '.join(sorted(known))}.",
        )
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key in wanted and isinstance(value, int | float):
                columns.setdefault(key, []).append(float(value))
    times = [int(row["time"]) for row in rows if isinstance(row.get("time"), int | float)]
    step = times[1] - times[0] if len(times) > 1 else 0
    result = Metrics(
        target=target,
        step_s=step,
        points=len(rows),
        start=utc_time(times[0]) if times else None,
        end=utc_time(times[-1]) if times else None,
        series=[_summary(name, values) for name, values in sorted(columns.items())],
    )
    if args.points:
        result.rows = [
            {"time": float(row["time"])}
            | {
                key: round(float(value) * _unit(key)[1], 2)
                for key, value in row.items()
                if key in columns and isinstance(value, int | float)
            }
            for row in rows[-MAX_ROWS:]
        ]
    return result


# --- task list -----------------------------------------------------------------------


def _instant(value: str | None) -> str | None:
    if value is None:  # null means unset
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    return value


class TaskListArgs(ToolInput):
    node: Annotated[NodeName | None, Field(description="One node; default: every node.")] = None
    type: Annotated[
        str | None,
        matching(r"[a-z][a-z0-9_-]{1,30}", "a task type"),
        Field(description="Task type, e.g. qmstart, vzdump."),
    ] = None
    vmid: Vmid | None = None
    user: Annotated[str | None, Field(max_length=128, description="User (substring).")] = None
    status: Literal["ok", "warning", "error", "running"] | None = None
    since: Annotated[
        str | None,
        AfterValidator(_instant),
        Field(description="ISO 8601 (UTC if no zone)."),
    ] = None
    offset: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=200)] = 20


class TaskRow(ToolOutput):
    upid: str
    node: str
    type: str
    id: str | None = None
    user: str
    start: str
    end: str | None = None
    status: str
    """`running`, or the exit status (`OK`, `WARNINGS: n`, the error)."""


class TaskList(ToolOutput):
    tasks: list[TaskRow]
    total: int
    next_offset: int | None = None


class _Task(Answer):
    upid: str
    node: str
    type: str
    id: str | None = None
    user: str
    tokenid: str | None = None
    starttime: int
    endtime: int | None = None
    status: str | None = None


_TASKS = TypeAdapter(list[_Task])


def _task_params(args: TaskListArgs, wanted: int) -> dict[str, Any]:
    params: dict[str, Any] = {"start": 0, "limit": wanted}
    if args.status == "running":
        params["source"] = "active"
    else:
        params["source"] = "all"
        if args.status is not None:
            params["statusfilter"] = args.status
    if args.type is not None:
        params["typefilter"] = args.type
    if args.vmid is not None:
        params["vmid"] = args.vmid
    if args.user is not None:
        params["userfilter"] = args.user
    if args.since is not None:
        since = datetime.fromisoformat(args.since)
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        params["since"] = int(since.timestamp())
    return params


@tool(
    "proxmox_task_list",
    title="List tasks",
    tier=Tier.READ,
    toolset="monitoring",
    api=("GET /nodes/{node}/tasks",),
    input=TaskListArgs,
    output=TaskList,
    idempotent=True,
    examples=[{}, {"node": "pve3", "status": "warning"}, {"type": "vzdump", "limit": 5}],
    rejects=[({"node": "pve9"}, "not_found"), ({"status": "failed"}, "invalid_argument")],
)
async def task_list(ctx: ToolContext, args: TaskListArgs) -> TaskList:
    """Recent tasks, newest first, cluster-wide or of one node, filtered by type, vmid,
    user, status or start; paged. One task's output: proxmox_task_log."""
    if args.node is not None:
        nodes = [await _known_node(ctx, args.node)]
    else:
        nodes = sorted(await node_statuses(ctx))
    params = _task_params(args, args.offset + args.limit)
    rows: list[_Task] = []
    total = 0
    for node in nodes:
        path = f"/nodes/{node}/tasks"
        try:
            answer = await ctx.call("GET", path, params)
        except ProxmoxError:
            if args.node is not None:
                raise
            continue  # an offline node's tasks cannot be read; the others still can
        found: list[_Task] = answer_as(_TASKS, answer.data, method="GET", path=path)
        rows += found
        total += answer.total if answer.total is not None else len(answer.data)
    rows.sort(key=lambda task: task.starttime, reverse=True)
    page = rows[args.offset : args.offset + args.limit]
    end = args.offset + len(page)
    return TaskList(
        tasks=[
            TaskRow(
                upid=task.upid,
                node=task.node,
                type=task.type,
                id=task.id or None,
                user=f"{task.user}!{task.tokenid}" if task.tokenid else task.user,
                start=utc_time(task.starttime),
                end=utc_time(task.endtime) if task.endtime else None,
                status="running" if task.status in (None, "RUNNING") else str(task.status),
            )
            for task in page
        ],
        total=total,
        next_offset=end if end < total else None,
    )


# --- node log ------------------------------------------------------------------------

_LOCAL_TIME = r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?"
LocalTime = Annotated[str, matching(_LOCAL_TIME, "a time as YYYY-MM-DD[ HH:MM[:SS]]")]


class NodeLogArgs(ToolInput):
    node: NodeName | None = None
    source: Annotated[
        Literal["syslog", "journal"],
        Field(description="syslog: paged by start; journal: by cursor."),
    ] = "syslog"
    service: Annotated[
        str | None,
        matching(r"[\w.@-]{1,128}", "a systemd unit name"),
        Field(description="syslog only: one unit, e.g. pvedaemon."),
    ] = None
    since: Annotated[LocalTime | None, Field(description="Node time, YYYY-MM-DD[ HH:MM[:SS]].")] = (
        None
    )
    until: Annotated[LocalTime | None, Field(description="As since.")] = None
    start: Annotated[int, Field(ge=0, description="syslog: line offset.")] = 0
    cursor: Annotated[
        str | None, Field(max_length=256, description="journal: lines after this cursor.")
    ] = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class NodeLog(ToolOutput):
    node: str
    lines: list[str]
    total: int | None = None
    next_start: int | None = None
    next_cursor: str | None = None
    """journal: pass as cursor to read the lines written after these."""
    truncated: bool | None = None


class _Line(Answer):
    t: str


_LINES = TypeAdapter(list[_Line])
_STRINGS = TypeAdapter(list[str])


def _epoch(local: str) -> int:
    """A node time as epoch seconds, read as UTC (PVE's journal takes epochs; its syslog
    takes the node's local time, which the tool cannot know)."""
    layout = {10: "%Y-%m-%d", 16: "%Y-%m-%d %H:%M"}.get(len(local), "%Y-%m-%d %H:%M:%S")
    return int(datetime.strptime(local, layout).replace(tzinfo=UTC).timestamp())


@tool(
    "proxmox_node_log",
    title="Node system log",
    tier=Tier.READ,
    toolset="monitoring",
    api=("GET /nodes/{node}/syslog", "GET /nodes/{node}/journal"),
    input=NodeLogArgs,
    output=NodeLog,
    idempotent=True,
    examples=[
        {"node": "pve1", "service": "pvedaemon"},
        {"node": "pve2", "source": "journal", "limit": 20},
    ],
    rejects=[
        ({"node": "pve9"}, "not_found"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "invalid_argument"),
        ({"source": "journal", "service": "ssh"}, "invalid_argument"),
    ],
)
async def node_log(ctx: ToolContext, args: NodeLogArgs) -> NodeLog:
    """A node's system log, oldest first: syslog by service and time, paged by start; or
    the journal's newest lines, then those after a cursor. A task's output:
    proxmox_task_log."""
    if (
        args.since is not None
        and args.until is not None
        and _epoch(args.since) > _epoch(args.until)
    ):
        raise ToolFailure(
            "invalid_argument",
            f"until {args.until!r} is before since {args.since!r}",
            field="until",
            hint="Give until at or after since.",
        )
    node = await _known_node(ctx, node_or_default(ctx, args.node))
    if args.source == "syslog":
        if args.cursor is not None:
            raise ToolFailure(
                "invalid_argument",
                "cursor pages the journal; syslog pages by start",
                field="cursor",
                hint="Pass source 'journal' with cursor, or start for syslog.",
            )
        params: dict[str, Any] = {"start": args.start, "limit": args.limit}
        for key in ("service", "since", "until"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        path = f"/nodes/{node}/syslog"
        answer = await ctx.call("GET", path, params)
        lines = [line.t for line in answer_as(_LINES, answer.data, method="GET", path=path)]
        total = answer.total
        end = args.start + len(lines)
        return NodeLog(
            node=node,
            lines=lines,
            total=total,
            next_start=end if total is not None and end < total else None,
        )
    if args.service is not None:
        raise ToolFailure(
            "invalid_argument",
            "PVE's journal call has no service filter",
            field="service",
            hint="Use source 'syslog' to filter by service.",
        )
    params = {}
    if args.cursor is not None:
        params["startcursor"] = args.cursor
    elif args.since is not None:
        params["since"] = _epoch(args.since)
    else:
        params["lastentries"] = args.limit
    if args.until is not None:
        params["until"] = _epoch(args.until)
    items = await read_as(ctx, _STRINGS, f"/nodes/{node}/journal", params)
    # mini-journalreader's answer: the first line's cursor, the lines, the last cursor.
    last_cursor = items[-1] if items else args.cursor
    lines = items[1:-1]
    truncated = len(lines) > args.limit
    return NodeLog(
        node=node,
        lines=lines[: args.limit],
        next_cursor=None if truncated else last_cursor,
        truncated=truncated or None,
    )


TOOLS = (metrics, task_list, node_log)
