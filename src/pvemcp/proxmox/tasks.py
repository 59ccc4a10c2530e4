"""Proxmox tasks (UPIDs): status, log pages and waiting with progress.

Most PVE write calls answer at once with a UPID and fail later, inside the task (`VM 100
already running` is a failed exitstatus, not an HTTP error), so a tool that wants the real
outcome waits here. Task calls always go to the node named in the UPID.

Once a task exists the action has happened, so a wait must not end on one bad poll: a
5xx, a broken or timed-out connection or a malformed answer is retried with backoff
within the wait's budget (and at most `POLL_FAILURES_MAX` times in a row); only then does
the wait end, with `TaskStatusUnknown` carrying the UPID.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pvemcp.proxmox.backend import ApiResult, ProxmoxBackend
from pvemcp.proxmox.errors import (
    MalformedAnswer,
    NotFound,
    ParameterError,
    ProxmoxError,
    ProxmoxTimeout,
    ProxmoxUnreachable,
    ServerError,
    TaskFailed,
    TaskStatusUnknown,
    TaskTimeout,
)
from pvemcp.proxmox.upid import Upid, parse_upid

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
"""`(progress, total, message)`, as MCP progress notifications take them."""

POLL_INITIAL = 0.15
POLL_FACTOR = 1.5
POLL_MAX = 2.0
POLL_FAILURES_MAX = 10
"""Failed status polls in a row before a wait gives up (about a minute of backoff)."""
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0


class TaskStatus(BaseModel):
    """PVE's answer to GET `/nodes/{node}/tasks/{upid}/status`."""

    # Unknown fields are ignored (newer PVE versions add some); a numeric `id` is accepted.
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    upid: str
    node: str
    type: str
    id: str = ""
    user: str
    tokenid: str | None = None
    status: Literal["running", "stopped"]
    exitstatus: str | None = None
    """`OK`, `WARNINGS: n` or the error text; only once the task has stopped."""
    starttime: int
    endtime: int | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _lower_status(cls, value: object) -> object:
        # Task lists say RUNNING; the status endpoint says running.
        return value.lower() if isinstance(value, str) else value

    @property
    def ok(self) -> bool:
        """True when the task stopped successfully (warnings count as success, as in PVE)."""
        return self.exitstatus is not None and (
            self.exitstatus == "OK" or self.exitstatus.startswith("WARNINGS")
        )


_MISSING_LOG = "unable to open file - No such file or directory"
"""PVE's whole answer for the log of a task it does not know: one line, not an error."""

TaskLogLine = tuple[int, str]
"""`(n, t)`: PVE's 1-based line number and the line's text."""


def _as_upid(upid: str | Upid) -> Upid:
    if isinstance(upid, Upid):
        return upid
    try:
        return parse_upid(upid)
    except ValueError as exc:
        raise ParameterError(str(exc), errors={"upid": str(exc)}) from None


def _describe(upid: Upid) -> str:
    """`qmstart 100 on pve1`: how messages name a task."""
    subject = f"{upid.type} {upid.id}" if upid.id else upid.type
    return f"{subject} on {upid.node}"


async def _get(
    backend: ProxmoxBackend, upid: Upid, path: str, params: dict[str, int] | None = None
) -> ApiResult:
    """GET a task endpoint; PVE's "no such task" becomes a `NotFound` that says so."""
    try:
        return await backend.call("GET", path, params)
    except NotFound as exc:
        raise NotFound(
            f"node {upid.node} knows no task {upid} ({exc.message})",
            status=exc.status,
            errors={"upid": "no such task"},
            method="GET",
            path=path,
        ) from None


async def get_task_status(backend: ProxmoxBackend, upid: str | Upid) -> TaskStatus:
    """The task's current status, asked of the node that runs it."""
    parsed = _as_upid(upid)
    path = f"/nodes/{parsed.node}/tasks/{parsed}/status"
    result = await _get(backend, parsed, path)
    if not isinstance(result.data, dict):
        raise MalformedAnswer(
            f"the status of task {parsed} is not an object", method="GET", path=path, status=200
        )
    # The UPID itself supplies fields an older or partial answer may leave out.
    fields: dict[str, Any] = {
        "upid": str(parsed),
        "node": parsed.node,
        "type": parsed.type,
        "id": parsed.id,
        "user": parsed.user,
        "tokenid": parsed.tokenid,
        "starttime": parsed.starttime,
    }
    fields.update({key: value for key, value in result.data.items() if value is not None})
    try:
        return TaskStatus.model_validate(fields)
    except ValidationError as exc:
        raise MalformedAnswer(
            f"unexpected task status for {parsed}: {exc.error_count()} invalid field(s) "
            f"({', '.join(str(err['loc'][0]) for err in exc.errors() if err['loc'])})",
            method="GET",
            path=path,
            status=200,
        ) from None


async def get_task_log(
    backend: ProxmoxBackend, upid: str | Upid, start: int = 0, limit: int = 50
) -> tuple[list[TaskLogLine], int | None]:
    """Up to `limit` log lines from offset `start` (0-based), and the total line count.

    The total is None when the server does not say (pvesh, some PVE-compatible servers):
    a full page may then be followed by more. The next page starts at the last line's `n`
    (PVE numbers lines from 1).
    """
    parsed = _as_upid(upid)
    path = f"/nodes/{parsed.node}/tasks/{parsed}/log"
    result = await _get(backend, parsed, path, {"start": start, "limit": limit})
    if not isinstance(result.data, list):
        raise MalformedAnswer(
            f"the log of task {parsed} is not a list", method="GET", path=path, status=200
        )
    lines: list[TaskLogLine] = []
    for item in result.data:
        n, text = (item.get("n"), item.get("t")) if isinstance(item, dict) else (None, None)
        if not isinstance(n, int) or isinstance(n, bool) or not isinstance(text, str):
            raise MalformedAnswer(
                f"the log of task {parsed} has a malformed line: {str(item)[:80]}",
                method="GET",
                path=path,
                status=200,
            )
        lines.append((n, text))
    if lines == [(1, _MISSING_LOG)]:
        raise NotFound(
            f"node {parsed.node} knows no task {parsed} (it has no log file)",
            errors={"upid": "no such task"},
            method="GET",
            path=path,
        )
    return lines, result.total


def _transient(exc: ProxmoxError) -> bool:
    """A poll failure the next poll may not see: the node or the way to it, not the
    request (a wrong token or an unknown task stays wrong)."""
    if isinstance(exc, ProxmoxUnreachable | ProxmoxTimeout | MalformedAnswer):
        return True
    return isinstance(exc, ServerError) and (exc.status is None or exc.status >= 500)


@dataclass
class _Polls:
    """How the polls of one wait went: the last failure and how many failed in a row."""

    failure: ProxmoxError | None = None
    failures: int = 0


async def wait_for_task(
    backend: ProxmoxBackend,
    upid: str | Upid,
    *,
    timeout: float,
    on_progress: ProgressCallback | None = None,
    raise_on_failure: bool = True,
) -> TaskStatus:
    """Poll until the task stops; return its final status.

    Polls start at `POLL_INITIAL` seconds and grow by `POLL_FACTOR` up to `POLL_MAX`, so
    short tasks answer fast and long ones cost few requests. `on_progress` gets the elapsed
    seconds (strictly increasing), no total, and a status line after every poll.
    `timeout` bounds the whole wait, an in-flight status request included: then
    `TaskTimeout`, while the task keeps running on the node. A poll that fails for a
    transient cause is retried with backoff (see the module); a wait that ends while polls
    fail raises `TaskStatusUnknown`. A stopped task whose exitstatus is not OK/WARNINGS
    raises `TaskFailed` unless `raise_on_failure` is False. Cancellation from outside
    propagates at once (the sleeps are anyio checkpoints).
    """
    parsed = _as_upid(upid)
    started = anyio.current_time()
    polls = _Polls()
    with anyio.move_on_after(timeout):
        status = await _poll_until_stopped(backend, parsed, started, on_progress, polls)
        if raise_on_failure and not status.ok:
            exitstatus = status.exitstatus or "no exit status"
            raise TaskFailed(
                f"task {_describe(parsed)} failed: {exitstatus} (UPID {parsed})",
                upid=str(parsed),
                exitstatus=exitstatus,
            )
        return status
    if polls.failure is not None:
        raise _status_unknown(parsed, polls, f"within the wait of {timeout:g} s")
    raise TaskTimeout(
        f"task {_describe(parsed)} is still running after waiting {timeout:g} s; it keeps "
        f"running on the node (UPID {parsed})",
        upid=str(parsed),
    )


def _status_unknown(upid: Upid, polls: _Polls, when: str) -> TaskStatusUnknown:
    assert polls.failure is not None
    return TaskStatusUnknown(
        f"task {_describe(upid)} was started, but its status could not be read {when}: "
        f"{polls.failures} poll(s) in a row failed, the last with {polls.failure.code} "
        f"({polls.failure.message}); it may still be running (UPID {upid})",
        upid=str(upid),
    )


async def _poll_until_stopped(
    backend: ProxmoxBackend,
    upid: Upid,
    started: float,
    on_progress: ProgressCallback | None,
    polls: _Polls,
) -> TaskStatus:
    interval = POLL_INITIAL
    last_progress = -1.0
    while True:
        try:
            status = await get_task_status(backend, upid)
        except ProxmoxError as exc:
            if not _transient(exc):
                raise
            polls.failure, polls.failures = exc, polls.failures + 1
            if polls.failures >= POLL_FAILURES_MAX:
                raise _status_unknown(upid, polls, "after retrying") from None
            delay = min(RETRY_MAX, RETRY_INITIAL * 2 ** (polls.failures - 1))
            logger.info(
                "task %s: status poll failed (%s: %s); retry %d/%d in %.1f s",
                upid,
                exc.code,
                exc.message,
                polls.failures,
                POLL_FAILURES_MAX - 1,
                delay,
            )
            await anyio.sleep(delay)
            continue
        polls.failure, polls.failures = None, 0
        elapsed = anyio.current_time() - started
        if on_progress is not None:
            # MCP requires strictly increasing progress; tenths of a second are enough.
            progress = max(round(elapsed, 1), round(last_progress + 0.1, 1))
            last_progress = progress
            state = "running" if status.status == "running" else f"stopped ({status.exitstatus})"
            await on_progress(progress, None, f"{_describe(upid)}: {state}, {elapsed:.1f} s")
        if status.status == "stopped":
            return status
        await anyio.sleep(interval)
        interval = min(interval * POLL_FACTOR, POLL_MAX)
