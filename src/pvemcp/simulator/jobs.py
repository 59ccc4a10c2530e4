"""Cluster backup jobs: the `vzdump` sections of `/etc/pve/jobs.cfg`.

Follows pve-manager `PVE/API2/Backup.pm` (list, create, read, update, delete, the
included volumes and the guests no job backs up) and `PVE/VZDump.pm`
(`verify_vzdump_parameters`, `get_included_guests`, reused from `backups.py`). A job is
its vzdump options plus `schedule` (a systemd-like calendar event), `enabled` and
`comment`; GET adds `next-run`. "Run now" has no API method: the web UI
(`www/manager6/dc/Backup.js` `run_backup`) POSTs the job's options to
`/nodes/{node}/vzdump` of each node, which `backups.py` carries out.

Where the simulator is simpler than PVE (said here once):
- pvescheduler does not run the jobs at their time here; only a "run now" backs up.
- Calendar events are parsed as a pragmatic subset: weekdays (`mon`, `mon..fri`,
  `sat,sun`), then `HOUR:MINUTE` or a lone minute spec, each `*`, `N`, `N..M`, `N/R`,
  `*/R` or a comma list of those, and `minutely`, `hourly`, `daily`, `weekly`. Dates
  (`2026-12-24`, `monthly`, `yearly`), seconds and `~` are refused as not simulated.
  The refusal's words follow pve-common's `pve-calendar-event` format check ("invalid
  calendar event '...'"); the parser's own detail after it is the simulator's (unsure:
  proxmox-time's messages differ).
- The legacy `starttime`/`dow` pair is not converted to a schedule: a job needs
  `schedule`.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .backups import _included, _verify, backed_up
from .errors import failure, param_error
from .router import Context, Params, Result, Route, api, deleted_keys, text
from .volumes import drive_file, is_cdrom, is_disk_key

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAMED = {"minutely": "*:*", "hourly": "*:00", "daily": "00:00", "weekly": "mon 00:00"}
_NOT_SIMULATED = re.compile(r"^(monthly|yearly|annually|quarterly|semiannually)$|\d-|~|:.*:")
_VALUE = re.compile(r"^(\*|\d+)(?:\.\.(\d+))?(?:/(\d+))?$")
NOT_JOB_OPTIONS = ("id", "delete")
"""Parameters of POST/PUT that are not stored in the job's section."""


@dataclass(frozen=True)
class Schedule:
    """A parsed calendar event: the weekdays (0 = Monday), hours and minutes it fires."""

    days: frozenset[int]
    hours: frozenset[int]
    minutes: frozenset[int]

    def next_after(self, after: float) -> int | None:
        """The first matching minute after `after` (UTC: the simulated nodes keep UTC),
        within eight days (every event of the subset fires at least weekly)."""
        start = (int(after) // 60 + 1) * 60
        for step in range(8 * 24 * 60):
            at = start + 60 * step
            moment = time.gmtime(at)
            if (
                moment.tm_wday in self.days
                and moment.tm_hour in self.hours
                and moment.tm_min in self.minutes
            ):
                return at
        return None


def _values(spec: str, top: int, what: str) -> frozenset[int]:
    """One field's values: `*`, `N`, `N..M`, `N/R`, `*/R` and comma lists of them."""
    found: set[int] = set()
    for part in spec.split(","):
        match = _VALUE.match(part)
        if match is None:
            raise ValueError(f"unable to parse {what} '{part}'")
        first, last, repeat = match.groups()
        low = 0 if first == "*" else int(first)
        high = int(last) if last else (top if first == "*" or repeat else low)
        if low > top or high > top or low > high:
            raise ValueError(f"{what} '{part}' out of range")
        found.update(range(low, high + 1, int(repeat) if repeat else 1))
    return frozenset(found)


def _days(spec: str) -> frozenset[int]:
    found: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("..")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unable to parse weekday '{part}'")
        low, high = DAYS.index(first), DAYS.index(last or first)
        found.update(range(low, high + 1) if low <= high else [*range(low, 7), *range(high + 1)])
    return frozenset(found)


def parse_schedule(event: str) -> Schedule:
    """The subset of PVE's calendar events the simulator knows; ValueError with why."""
    raw = _NAMED.get(event.strip().lower(), event.strip().lower())
    if not raw or _NOT_SIMULATED.search(raw):
        raise ValueError("not simulated (dates, seconds, monthly/yearly and '~' are not)")
    words = raw.split()
    days = frozenset(range(7))
    if words and words[0][0].isalpha():
        days = _days(words.pop(0))
    if len(words) > 1:
        raise ValueError(f"unexpected '{words[1]}'")
    clock = words[0] if words else "0:0"
    hours_spec, sep, minutes_spec = clock.rpartition(":")
    hours = _values(hours_spec, 23, "hour") if sep else frozenset(range(24))
    return Schedule(days, hours, _values(minutes_spec, 59, "minute"))


def check_schedule(event: str) -> Schedule:
    try:
        return parse_schedule(event)
    except ValueError as err:
        raise param_error({"schedule": f"invalid calendar event '{event}' - {err}"}) from None


@dataclass
class BackupJobs:
    """The cluster's backup jobs by id, in creation order."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)


DEMO_JOB = "backup-nightly"
DEMO_OPTIONS: dict[str, Any] = {
    "schedule": "01:00",
    "enabled": 1,
    "all": 1,
    "exclude": "9000",
    "storage": "nfs-backup",
    "mode": "snapshot",
    "compress": "zstd",
    "notes-template": "{{guestname}}",
    "quiet": 1,
    "comment": "nightly",
}
"""The job whose runs the seeded nightly vzdump tasks log (`seed._vzdump_log`: every
guest but the template, `--storage nfs-backup --mode snapshot --compress zstd`)."""


def demo_jobs() -> BackupJobs:
    return BackupJobs({DEMO_JOB: dict(DEMO_OPTIONS)})


def _view(ctx: Context, jobid: str, options: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"id": jobid, "type": "vzdump", **options}
    if options.get("enabled", 1):
        try:
            upcoming = parse_schedule(str(options.get("schedule", ""))).next_after(ctx.now)
        except ValueError:
            upcoming = None
        if upcoming is not None:
            view["next-run"] = upcoming
    return view


def _job(ctx: Context, jobid: str) -> dict[str, Any]:
    found = ctx.state.backup_jobs.jobs.get(jobid)
    if found is None:
        raise param_error({"id": f"No such job '{jobid}'"})
    return found


def _check(options: dict[str, Any]) -> None:
    """`verify_vzdump_parameters($param, 1)` and the schedule's format, before writing."""
    _verify(options)
    if "schedule" not in options:
        raise param_error({"schedule": "property is missing"})
    check_schedule(str(options["schedule"]))


def _list(ctx: Context, params: Params) -> Result:
    jobs = ctx.state.backup_jobs.jobs
    return Result([_view(ctx, jobid, options) for jobid, options in jobs.items()])


def _read(ctx: Context, params: Params) -> Result:
    jobid = text(params, "id")
    return Result(_view(ctx, jobid, _job(ctx, jobid)))


def _new_id(ctx: Context) -> str:
    """`backup-` and a UUID's first two groups, as the web UI's jobs look."""
    seed = f"{len(ctx.state.backup_jobs.jobs)}/{ctx.now}".encode()
    digest = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
    return f"backup-{digest[:8]}-{digest[8:12]}"


def _create(ctx: Context, params: Params) -> Result:
    jobs = ctx.state.backup_jobs.jobs
    jobid = str(params.get("id") or _new_id(ctx))
    if jobid in jobs:
        raise failure(f"Job '{jobid}' already exists")
    options = {k: v for k, v in params.items() if k not in NOT_JOB_OPTIONS}
    options.setdefault("enabled", 1)
    _check(options)
    jobs[jobid] = options
    return Result(None)


def _update(ctx: Context, params: Params) -> Result:
    state = ctx.state
    jobid = text(params, "id")
    options = dict(_job(ctx, jobid))
    for key in deleted_keys(params):
        if key in params:
            raise param_error({"delete": f"cannot set and delete property '{key}' at once"})
        options.pop(key, None)
    changed = {k: v for k, v in params.items() if k not in NOT_JOB_OPTIONS}
    for name in ("all", "exclude", "pool"):  # checked on the parameters, then the merge
        if changed.get(name) and changed.get("vmid"):
            raise param_error({name: "option conflicts with option 'vmid'"})
    options.update(changed)
    # Backup.pm update_job: a new vmid drops all/exclude/pool, a new selection drops vmid.
    if "vmid" in changed:
        for key in ("all", "exclude", "pool"):
            options.pop(key, None)
    elif any(k in changed for k in ("all", "exclude", "pool")):
        options.pop("vmid", None)
    _check(options)
    state.backup_jobs.jobs[jobid] = options
    return Result(None)


def _delete(ctx: Context, params: Params) -> Result:
    jobid = text(params, "id")
    _job(ctx, jobid)
    del ctx.state.backup_jobs.jobs[jobid]
    return Result(None)


def _reason(kind: str, key: str, included: bool) -> str:
    """Why a volume is in or out (PVE's `get_backup_volumes` reasons; unsure of every
    word: the words for a VM disk, a CD-ROM and a container mount point are PVE's)."""
    if kind == "lxc":
        if key == "rootfs":
            return "rootfs"
        return "mountpoint" if included else "mountpoint without backup=1"
    return "disk" if included else "backup=no"


def _included_volumes(ctx: Context, params: Params) -> Result:
    options = _job(ctx, text(params, "id"))
    guests = ctx.state.guests
    children = []
    for vmid in _included(ctx, options):
        guest = guests.get(vmid)
        if guest is None:
            continue
        volumes = []
        for key, value in sorted(guest.config.items()):
            if not is_disk_key(guest.kind, key) or key.startswith("unused") or is_cdrom(value):
                continue
            included = backed_up(guest.kind, key, value)
            volumes.append({"id": key, "name": drive_file(value), "included": int(included),
                            "reason": _reason(guest.kind, key, included)})  # fmt: skip
        children.append({"id": vmid, "name": guest.name, "type": guest.kind,
                         "children": volumes})  # fmt: skip
    return Result({"children": children})


def _not_backed_up(ctx: Context, params: Params) -> Result:
    """The guests no job selects (Backup.pm `get_guest_list_not_backed_up`; unsure
    whether PVE counts a disabled job: here it does not)."""
    covered: set[int] = set()
    for options in ctx.state.backup_jobs.jobs.values():
        if options.get("enabled", 1):
            covered.update(_included(ctx, options))
    return Result([
        {"vmid": g.vmid, "type": g.kind, "name": g.name}
        for vmid, g in sorted(ctx.state.guests.items()) if vmid not in covered
    ])  # fmt: skip


def _info_index(ctx: Context, params: Params) -> Result:
    return Result([{"subdir": "not-backed-up"}])


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/backup", _list),
    api("POST", "/cluster/backup", _create),
    api("GET", "/cluster/backup/{id}", _read),
    api("PUT", "/cluster/backup/{id}", _update),
    api("DELETE", "/cluster/backup/{id}", _delete),
    api("GET", "/cluster/backup/{id}/included_volumes", _included_volumes),
    api("GET", "/cluster/backup-info", _info_index),
    api("GET", "/cluster/backup-info/not-backed-up", _not_backed_up),
)
