"""Proxmox tasks (UPIDs): status, log pages and waiting with progress.

Most PVE write calls answer at once with a UPID and fail later, inside the task (`VM 100
already running` is a failed exitstatus, not an HTTP error), so a tool that wants the real
outcome waits here. Task calls always go to the node named in the UPID.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pvemcp.proxmox.backend import ProxmoxBackend
from pvemcp.proxmox.errors import ParameterError, ServerError, TaskFailed, TaskTimeout
from pvemcp.proxmox.upid import Upid, parse_upid

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
"""`(progress, total, message)`, as MCP progress notifications take them."""

POLL_INITIAL = 0.15
POLL_FACTOR = 1.5
POLL_MAX = 2.0


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


async def get_task_status(backend: ProxmoxBackend, upid: str | Upid) -> TaskStatus:
    """The task's current status, asked of the node that runs it."""
    parsed = _as_upid(upid)
    path = f"/nodes/{parsed.node}/tasks/{parsed}/status"
    result = await backend.call("GET", path)
    if not isinstance(result.data, dict):
        raise ServerError(
            f"task status of {parsed} is not an object", method="GET", path=path, status=200
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
        raise ServerError(
            f"unexpected task status for {parsed}: {exc.error_count()} invalid field(s) "
            f"({', '.join(str(err['loc'][0]) for err in exc.errors() if err['loc'])})",
            method="GET",
            path=path,
            status=200,
        ) from None


async def get_task_log(
    backend: ProxmoxBackend, upid: str | Upid, start: int = 0, limit: int = 50
) -> tuple[list[TaskLogLine], int]:
    """Up to `limit` log lines from offset `start` (0-based), and the total line count.

    The next page starts at the last line's `n` (PVE numbers lines from 1).
    """
    parsed = _as_upid(upid)
    path = f"/nodes/{parsed.node}/tasks/{parsed}/log"
    result = await backend.call("GET", path, {"start": start, "limit": limit})
    if not isinstance(result.data, list):
        raise ServerError(
            f"task log of {parsed} is not a list", method="GET", path=path, status=200
        )
    lines: list[TaskLogLine] = []
    for item in result.data:
        n, text = (item.get("n"), item.get("t")) if isinstance(item, dict) else (None, None)
        if not isinstance(n, int) or isinstance(n, bool) or not isinstance(text, str):
            raise ServerError(
                f"task log of {parsed} has a malformed line: {str(item)[:80]}",
                method="GET",
                path=path,
                status=200,
            )
        lines.append((n, text))
    return lines, result.total if result.total is not None else len(lines)


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
    `TaskTimeout`, while the task keeps running on the node. A stopped task whose
    exitstatus is not OK/WARNINGS raises `TaskFailed` unless `raise_on_failure` is False.
    Cancellation from outside propagates at once (the sleeps are anyio checkpoints).
    """
    parsed = _as_upid(upid)
    started = anyio.current_time()
    with anyio.move_on_after(timeout):
        status = await _poll_until_stopped(backend, parsed, started, on_progress)
        if raise_on_failure and not status.ok:
            exitstatus = status.exitstatus or "no exit status"
            raise TaskFailed(
                f"task {_describe(parsed)} failed: {exitstatus} (UPID {parsed})",
                upid=str(parsed),
                exitstatus=exitstatus,
            )
        return status
    raise TaskTimeout(
        f"task {_describe(parsed)} is still running after waiting {timeout:g} s; it keeps "
        f"running on the node (UPID {parsed})",
        upid=str(parsed),
    )


async def _poll_until_stopped(
    backend: ProxmoxBackend,
    upid: Upid,
    started: float,
    on_progress: ProgressCallback | None,
) -> TaskStatus:
    interval = POLL_INITIAL
    last_progress = -1.0
    while True:
        status = await get_task_status(backend, upid)
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
