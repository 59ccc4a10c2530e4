"""Worker tasks: UPIDs, the lock queues, logs and the task lists.

PVE answers an async call with a UPID at once and runs the work in a forked worker that
holds the guest's config lock; errors found by the worker (`VM 100 already running`) end
the task, not the HTTP call. The simulator keeps the same shape without threads: a task
is a record with a `Plan` made when it gets its locks, and `TaskTable.advance` moves every
task forward to the current (injectable) clock time whenever the state is read.

A task names the locks it holds for its whole run (`LockKey`s: a guest's config flock
today; a storage, a node or a second guest for clone, migrate and backup later). It
queues behind the previous holder of every one of them and starts when the last of those
ends. This is the flock that PVE's workers take around their work; the config `lock`
property that makes other calls fail at once (`VM is locked (snapshot)`) is `locks.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

UPID_RE = re.compile(
    r"UPID:(?P<node>[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):"
    r"(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s]+):"
    r"(?P<id>[^:\s]*):(?P<user>[^:\s]+):"
)

FAILURE_SECONDS = 0.2
"""How long a task that fails its first check runs (real workers die within a moment)."""
INTERRUPTED = "received interrupt"


def encode_upid(
    node: str, pid: int, pstart: int, starttime: int, *, type_: str, id_: str, user: str
) -> str:
    """PVE's UPID text: upper-case hex fields and a trailing colon."""
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type_}:{id_}:{user}:"


def is_upid(text: str) -> bool:
    """Whether `text` parses as a UPID (PVE's `upid_decode`)."""
    return UPID_RE.fullmatch(text) is not None


LockKey = tuple[str, str]
"""What a task locks: (scope, id), e.g. ("guest", "100")."""


def guest_lock(vmid: int) -> LockKey:
    """The flock on one guest's config (PVE's `lock_config`), held by its workers."""
    return ("guest", str(vmid))


@dataclass(frozen=True)
class Plan:
    """What a worker does once it holds its locks."""

    seconds: float
    """Realistic duration, before the time scale."""
    error: str | None = None
    """The task's error (`TASK ERROR: ...`), or None for `TASK OK`."""
    lines: tuple[tuple[float, str], ...] = ()
    """Log lines before the final one: (fraction of the duration when written, text)."""
    apply: Callable[[float], None] | None = None
    """The state change, called with the completion time when the task ends OK."""
    steps: tuple[tuple[float, Callable[[float], None]], ...] = ()
    """What the worker changes as it goes, whatever its outcome: (fraction of the
    duration, change called with its time), e.g. vzdump locking each guest in turn and
    keeping the archives made before a later guest failed. Due steps run when the state
    is read; the rest run at the end, before `apply`; none after an interrupt."""


def fail(message: str) -> Plan:
    """A worker that dies at its first check."""
    return Plan(FAILURE_SECONDS, error=message)


@dataclass(eq=False)
class Task:
    """One worker task, live or from the seeded history."""

    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    created: float
    job: Callable[[float], Plan] | None = None
    """Makes the plan when the task gets its locks (called with that time); None for
    seeded history."""
    after: tuple[Task, ...] = ()
    """The running tasks this one queues behind (the previous holders of its locks)."""
    begin: float | None = None
    end: float | None = None
    plan: Plan | None = None
    exitstatus: str | None = None
    """`OK`, `WARNINGS: n` or the error text, once the task has stopped."""
    history_lines: tuple[str, ...] = ()
    """The full log of a seeded task, final line excluded."""
    lines_at: list[tuple[float, str]] = field(default_factory=list)
    """(clock time, text) of the live log lines, filled from the plan."""
    steps_at: list[tuple[float, Callable[[float], None]]] = field(default_factory=list)
    """(clock time, change) of the plan's steps not made yet, in time order."""

    @property
    def running(self) -> bool:
        """True until the task has stopped (queued tasks count as running, as in PVE)."""
        return self.exitstatus is None

    @property
    def tokenid(self) -> str | None:
        """The token name when a token started the task (`user@realm!token`)."""
        return self.user.split("!", 1)[1] if "!" in self.user else None

    @property
    def owner(self) -> str:
        """The user part of `user`, as the task APIs report it."""
        return self.user.split("!", 1)[0]

    def log(self, now: float) -> list[str]:
        """The lines written so far; the last is `TASK OK`/`TASK ERROR: ...` once stopped."""
        if self.job is None:
            lines = list(self.history_lines)
        else:
            lines = [text for at, text in self.lines_at if at <= now]
        if self.exitstatus is not None:
            lines.append(final_line(self.exitstatus))
        return lines


def final_line(exitstatus: str) -> str:
    """The last log line PVE writes for an exit status."""
    if exitstatus == "OK" or exitstatus.startswith("WARNINGS: "):
        return f"TASK {exitstatus}"
    return f"TASK ERROR: {exitstatus}"


def status_kind(exitstatus: str | None) -> str:
    """PVE's normalised status type for `statusfilter`: ok, warning, error or unknown."""
    if exitstatus is None:
        return "unknown"
    if exitstatus == "OK":
        return "ok"
    if exitstatus.startswith("WARNINGS: "):
        return "warning"
    return "error"


class TaskTable:
    """All tasks of the cluster, in creation order, and the lock queues."""

    def __init__(self, time_scale: float) -> None:
        self._time_scale = time_scale
        self._tasks: list[Task] = []
        self._last_holder: dict[LockKey, Task] = {}

    def add_history(self, task: Task) -> None:
        """Record a finished task of the seeded history."""
        self._tasks.append(task)

    def add(self, task: Task, locks: Iterable[LockKey], *, hold: bool = True) -> Task:
        """Record a live task that queues behind the running holders of its `locks`.

        With `hold` it keeps them for its whole run, so later tasks queue behind it;
        without, it only takes them to start (as snapshot workers take the flock for a
        moment and guard the rest of their run with the config `lock` property).
        """
        after: list[Task] = []
        for key in locks:
            previous = self._last_holder.get(key)
            if previous is not None and previous.running and previous not in after:
                after.append(previous)
            if hold:
                self._last_holder[key] = task
        task.after = tuple(after)
        self._tasks.append(task)
        return task

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def find(self, node: str, upid: str) -> Task | None:
        """The task with this UPID whose log lives on `node`."""
        for task in self._tasks:
            if task.upid == upid and task.node == node:
                return task
        return None

    def advance(self, now: float) -> None:
        """Run every task forward to `now`: take locks, make plans, finish and apply."""
        for task in self._tasks:
            if task.exitstatus is not None or task.job is None:
                continue
            if task.begin is None:
                ends = [blocker.end for blocker in task.after]
                if any(end is None for end in ends):
                    continue
                task.begin = max([task.created, *(end for end in ends if end is not None)])
            if task.begin > now:
                continue
            if task.plan is None:
                self._start(task, task.begin)
            self._run_steps(task, now)
            if task.end is not None and task.end <= now:
                self._finish(task)

    def _start(self, task: Task, begin: float) -> None:
        assert task.job is not None
        plan = task.job(begin)
        duration = plan.seconds * self._time_scale
        task.plan = plan
        task.end = begin + duration
        task.lines_at = [(begin + fraction * duration, text) for fraction, text in plan.lines]
        steps = [(begin + fraction * duration, step) for fraction, step in plan.steps]
        task.steps_at = sorted(steps, key=lambda timed: timed[0])

    @staticmethod
    def _run_steps(task: Task, now: float) -> None:
        """Make the task's steps that are due by `now` (each at its own time)."""
        while task.steps_at and task.steps_at[0][0] <= now:
            at, step = task.steps_at.pop(0)
            step(at)

    def _finish(self, task: Task) -> None:
        assert task.plan is not None
        assert task.end is not None
        self._run_steps(task, task.end)
        if task.plan.error is None and task.plan.apply is not None:
            task.plan.apply(task.end)
        task.exitstatus = task.plan.error or "OK"

    def interrupt(self, task: Task, now: float) -> None:
        """DELETE .../tasks/{upid}: a running worker dies; its state change never happens."""
        if task.exitstatus is not None:
            return
        if task.begin is None:
            task.begin = now
        task.end = now
        task.lines_at = [(at, text) for at, text in task.lines_at if at <= now]
        task.steps_at.clear()
        task.exitstatus = INTERRUPTED
