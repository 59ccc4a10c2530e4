"""A node's system log (GET /nodes/{node}/syslog and /journal) and the cluster's recent
task list (GET /cluster/tasks).

Each node's journal is computed, not stored: a fixed pattern of the lines a quiet PVE node
writes (cron, pmxcfs, pveproxy's worker recycling, logrotate, logins), placed on the
clock's hour grid with offsets from a hash of (node, hour), so the same clock gives the
same log; plus two lines for every task of the node, live or seeded, as PVE's
`log_cluster_msg` writes them (pve-common `PVE/RESTEnvironment.pm`): `<user> starting task
UPID...` when it is forked and `<user> end task UPID... STATUS` when it ends. The journal
keeps the last two days (older lines are rotated away).

- syslog follows `PVE::Tools::dump_journal` (pve-common `src/PVE/Tools.pm`): `journalctl
  -o short` lines, oldest first, as `{n, t}` from `start` (default 0) for `limit` lines
  (0 or absent: 50), `total` the number of lines matched, `service` as `--unit`
  (pve-manager `PVE/API2/Nodes.pm` maps `sshd` to `ssh` and `postfix` to `postfix@-`),
  `since`/`until` as node-local date-times (the simulated nodes run on UTC); no match is
  journalctl's one line `-- No entries --`.
- journal follows `mini-journalreader` as the 9.2 handler runs it: the cursor of the first
  line, the lines, then the cursor of the last one; `since`/`until` in epoch seconds
  (until exclusive), `startcursor` starts after that line, `endcursor` stops before it,
  `lastentries` keeps the last lines and conflicts with `since`/`startcursor` (the tool's
  usage error ends the command; PVE's exact wording of that failure is a guess here).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import failure
from .model import Node
from .router import Context, Params, Result, Route, api, integer, text
from .state import ClusterState
from .tasks import Task
from .views import task_entry

RETENTION = 2 * 86_400
"""Seconds of journal a node keeps."""
_HOUR = 3600
_SERVICE_ALIASES = {"postfix": "postfix@-", "sshd": "ssh"}
_CRON_SECRET = "5f0b8e3c-91d2-4a7e-b6c4-2d9e7a10c3f4"  # noqa: S105 - seeded demo data
"""The token secret a careless cron job on pve1 puts on its command line (the journal logs
it; the gateway's redaction must remove it from every answer)."""
_MAX_FINISHED = 25
"""Running plus recent finished tasks a node broadcasts (`active_workers`)."""


@dataclass(frozen=True)
class Entry:
    """One journal entry."""

    usec: int
    ident: str
    pid: int | None
    unit: str
    """The systemd unit it belongs to (what `journalctl --unit` matches)."""
    message: str


def _hash(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def _pid(node: str, what: str, hour: int) -> int:
    return 1000 + _hash(node, what, hour) % 3_000_000


def _hourly(node: Node, hour: int) -> Iterator[tuple[float, str, int | None, str, str]]:
    """The lines a quiet node writes in the hour starting at epoch `hour` (a multiple of
    3600): (time, identifier, pid, unit, message)."""
    name = node.name
    cron = _pid(name, "cron", hour)
    at = hour + 17 * 60 + 1
    yield (
        at,
        "CRON",
        cron,
        "cron.service",
        ("pam_unix(cron:session): session opened for user root(uid=0) by root(uid=0)"),
    )
    yield (
        at + 0.001,
        "CRON",
        cron,
        "cron.service",
        ("(root) CMD (cd / && run-parts --report /etc/cron.hourly)"),
    )
    yield (
        at + 0.002,
        "CRON",
        cron,
        "cron.service",
        "pam_unix(cron:session): session closed for user root",
    )
    pmxcfs = _pid(name, "pmxcfs", 0)
    yield (
        hour + 60 * (_hash(name, hour, "dcdb") % 60),
        "pmxcfs",
        pmxcfs,
        "pve-cluster.service",
        ("[dcdb] notice: data verification successful"),
    )
    day, in_day = divmod(hour, 86_400)
    if in_day // _HOUR % 3 == 1:
        proxy = _pid(name, "pveproxy", 0)
        at = hour + 60 * (_hash(name, hour, "proxy") % 50)
        worker = _pid(name, "pveproxy-worker", hour)
        yield at, "pveproxy", proxy, "pveproxy.service", f"worker {worker - 7} finished"
        yield at + 0.001, "pveproxy", proxy, "pveproxy.service", "starting 1 worker(s)"
        yield at + 0.002, "pveproxy", proxy, "pveproxy.service", f"worker {worker} started"
    if in_day == 0:
        for offset, message in (
            (0.0, "Starting logrotate.service - Rotate log files..."),
            (1.2, "logrotate.service: Deactivated successfully."),
            (1.201, "Finished logrotate.service - Rotate log files."),
        ):
            yield hour + offset, "systemd", 1, "logrotate.service", message
    if in_day == 8 * _HOUR:
        sshd = _pid(name, "sshd", day)
        at = hour + 60 * (_hash(name, day, "ssh") % 40)
        yield (
            at,
            "sshd",
            sshd,
            "ssh.service",
            (
                f"Accepted publickey for root from 10.10.10.5 port {40000 + sshd % 20000} ssh2: "
                "ED25519 SHA256:q3Hc1mVw8cN0Q4rXh2k9bJ5sZ7tP1uYd6eGfA0lKxMo"
            ),
        )
        yield (
            at + 0.01,
            "sshd",
            sshd,
            "ssh.service",
            ("pam_unix(sshd:session): session opened for user root(uid=0) by root(uid=0)"),
        )
        daemon = _pid(name, "pvedaemon-worker", day)
        yield (
            at + 5,
            "pvedaemon",
            daemon,
            "pvedaemon.service",
            ("<root@pam> successful auth for user 'root@pam'"),
        )
    if name == "pve1" and in_day == 2 * _HOUR:
        cron = _pid(name, "cron-scrape", day)
        at = hour + 30 * 60 + 1
        yield (
            at,
            "CRON",
            cron,
            "cron.service",
            (
                "(root) CMD (curl -fsS -H 'Authorization: PVEAPIToken=monitor@pve!scrape="
                f"{_CRON_SECRET}' https://127.0.0.1:8006/api2/json/cluster/resources >/dev/null)"
            ),
        )


def _daemon(task: Task) -> tuple[str, str]:
    """The daemon that forked the task and its unit: the scheduler runs backup jobs,
    pve-daily-update the package refresh, pvedaemon the API's workers."""
    if task.type == "vzdump" and not task.id:
        return "pvescheduler", "pvescheduler.service"
    if task.type == "aptupdate":
        return "pveupdate", "pve-daily-update.service"
    return "pvedaemon", "pvedaemon.service"


def _task_lines(task: Task, now: float) -> Iterator[tuple[float, str, int | None, str, str]]:
    ident, unit = _daemon(task)
    pid = _pid(task.node, ident, int(task.created) // 86_400)
    yield task.created, ident, pid, unit, f"<{task.user}> starting task {task.upid}"
    if task.exitstatus is not None and task.end is not None and task.end <= now:
        message = f"<{task.user}> end task {task.upid} {task.exitstatus}"
        yield task.end, ident, pid, unit, message


def journal(state: ClusterState, node: Node, now: float) -> list[Entry]:
    """The node's journal at `now`, oldest first."""
    first = max(int(now) - RETENTION, int(node.boot_time))
    raw: list[tuple[float, str, int | None, str, str]] = []
    for hour in range(first - first % _HOUR, int(now) + 1, _HOUR):
        raw += _hourly(node, hour)
    for task in state.tasks:
        if task.node == node.name:
            raw += _task_lines(task, now)
    # A stable sort by time: a task's start stays before its end when both fall together.
    raw = sorted((line for line in raw if first <= line[0] <= now), key=lambda line: line[0])
    entries: list[Entry] = []
    last = 0
    for at, ident, pid, unit, message in raw:
        usec = max(int(at * 1_000_000), last + 1)
        last = usec
        entries.append(Entry(usec, ident, pid, unit, message))
    return entries


def line(node: str, entry: Entry) -> str:
    """The entry as `journalctl -o short` prints it."""
    stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(entry.usec // 1_000_000))
    pid = f"[{entry.pid}]" if entry.pid is not None else ""
    return f"{stamp} {node} {entry.ident}{pid}: {entry.message}"


def _boot_id(node: str) -> str:
    return f"{_hash(node, 'boot'):08x}" * 4


def cursor(node: str, index: int, entry: Entry) -> str:
    """A journald-style cursor for the entry (`t=` is what the simulator seeks by)."""
    boot = _boot_id(node)
    return (
        f"s={boot};i={index + 1:x};b={boot};m={entry.usec % 10**12:x};t={entry.usec:x};"
        f"x={_hash(node, entry.usec):x}"
    )


_CURSOR_TIME = re.compile(r"(?:^|;)t=([0-9a-f]+)(?:;|$)")


def _epoch(value: str) -> float:
    """A syslog date-time parameter (already checked against its pattern) as epoch
    seconds, read as the node's local time (UTC on the simulated nodes)."""
    layout = {10: "%Y-%m-%d", 16: "%Y-%m-%d %H:%M"}.get(len(value), "%Y-%m-%d %H:%M:%S")
    return float(time.mktime(time.strptime(value, layout)) - time.timezone)


def _syslog(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node"))
    entries = journal(ctx.state, node, ctx.now)
    if "service" in params:
        service = text(params, "service")
        unit = _SERVICE_ALIASES.get(service, service)
        unit = unit if "." in unit else f"{unit}.service"
        entries = [e for e in entries if e.unit == unit]
    if "since" in params:
        since = _epoch(text(params, "since")) * 1_000_000
        entries = [e for e in entries if e.usec >= since]
    if "until" in params:
        until = _epoch(text(params, "until")) * 1_000_000
        entries = [e for e in entries if e.usec <= until]
    texts = [line(node.name, e) for e in entries] or ["-- No entries --"]
    start = integer(params, "start") if "start" in params else 0
    limit = (integer(params, "limit") if "limit" in params else 0) or 50
    page = texts[start : start + limit]
    return Result([{"n": start + i + 1, "t": t} for i, t in enumerate(page)], len(texts))


def _seek(entries: list[Entry], value: str) -> int:
    """The index of the entry a cursor names (the first at or after its time)."""
    match = _CURSOR_TIME.search(value)
    if match is None:
        raise failure(
            "command '/usr/bin/mini-journalreader' failed: exit code 1\n"
            "Failed to seek to begin/cursor: Invalid argument"
        )
    usec = int(match.group(1), 16)
    return next((i for i, e in enumerate(entries) if e.usec >= usec), len(entries))


def _journal(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node"))
    for a, b in (("lastentries", "since"), ("lastentries", "startcursor")):
        if params.get(a) and params.get(b):
            raise failure(
                "command '/usr/bin/mini-journalreader' failed: exit code 1\n"
                "ERROR: -n conflicts with -b and/or -f"
            )
    for a, b in (("since", "startcursor"), ("until", "endcursor")):
        if params.get(a) and params.get(b):
            raise failure(
                "command '/usr/bin/mini-journalreader' failed: exit code 1\n"
                f"ERROR: -{'b' if a == 'since' else 'e'} and -{'f' if a == 'since' else 't'} "
                "conflict"
            )
    entries = journal(ctx.state, node, ctx.now)
    end = len(entries)
    if params.get("until"):
        until = integer(params, "until") * 1_000_000
        end = next((i for i, e in enumerate(entries) if e.usec >= until), end)
    if params.get("endcursor"):
        end = min(end, _seek(entries, text(params, "endcursor")))
    begin = 0
    if params.get("lastentries"):
        begin = max(0, end - integer(params, "lastentries"))
    elif params.get("since"):
        since = integer(params, "since") * 1_000_000
        begin = next((i for i, e in enumerate(entries) if e.usec >= since), len(entries))
    elif params.get("startcursor"):
        # Seek to the cursor's line, then skip it: the lines after it.
        begin = min(_seek(entries, text(params, "startcursor")) + 1, len(entries))
    shown = list(range(begin, max(begin, end)))
    data: list[str] = []
    if shown:
        data.append(cursor(node.name, shown[0], entries[shown[0]]))
        data += [line(node.name, entries[i]) for i in shown]
    if entries:
        # The final cursor: where the reader stopped (the last line shown, else the tail).
        last = shown[-1] if shown else len(entries) - 1
        data.append(cursor(node.name, last, entries[last]))
    return Result(data)


def _cluster_tasks(ctx: Context, params: Params) -> Result:
    """Each node's broadcast task list, node after node (`PVE::Cluster::get_tasklist`):
    its running tasks, then its most recent finished ones by start time, 25 in all
    (`active_workers`). The list drops `pstart`, and `pid` of finished tasks; archived
    ones carry `saved`."""
    items: list[dict[str, Any]] = []
    for node in ctx.state.nodes:
        on_node = [task for task in ctx.state.tasks if task.node == node]
        running = [t for t in on_node if t.running]
        done = sorted((t for t in on_node if not t.running), key=lambda t: -t.starttime)
        for task in running + done[: max(0, _MAX_FINISHED - len(running))]:
            entry = task_entry(task)
            entry.pop("pstart")
            if not task.running:
                entry.pop("pid")
                entry["saved"] = "1"
            items.append(entry)
    return Result(items)


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/tasks", _cluster_tasks),
    api("GET", "/nodes/{node}/syslog", _syslog),
    api("GET", "/nodes/{node}/journal", _journal),
)
