"""Undo: a reversible write records its inverse call with its outcome, and `proxmox_call_undo`
lists a caller's undoable calls and applies one as a new call.

A tool declares its inverse (`ToolSpec.inverse`): given the call's context, its confirmed
plan and its result, the `Undo` (tool, arguments, and the guest facts the inverse relies
on), or None when the call left nothing to undo. The gateway writes it into the audit
outcome record (`outcome.undo`), so the log, not process memory, is the system of record:
undo survives a restart. Applying an undo is an ordinary `Gateway.invoke` of the inverse
tool (its own tier, policy, confirmation and audit) whose records carry `what.undoes`, the
undone call's event id; a second undo of the same call is refused from that record, and a
guest that is no longer where and how the call left it (`Undoing.check`) refuses it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict

from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import GuestTarget, Plan
from pvemcp.gateway.planners import read_config
from pvemcp.gateway.run import TaskOutcome
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import MASK

if TYPE_CHECKING:
    from pvemcp.gateway.context import ToolContext
    from pvemcp.gateway.registry import ToolOutput

TAIL_BYTES = 4 * 1024 * 1024
"""How much of the audit log's live file the undo tool reads (its newest records): a
bound on the work one listing costs, whatever the log's size."""

LISTED = 20
"""How many undoable calls a listing shows, newest first."""

CANNOT_UNDO = "cannot be undone"
"""The words an irreversible write's plan warns with (`irreversible`)."""


class Undo(BaseModel):
    """The call that reverses another: `tool` with `arguments`, valid while the guest is
    still as the reversed call left it (`expect`: its node, and its status for power)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str
    arguments: dict[str, Any]
    expect: dict[str, Any] = {}


Inverse = Callable[["ToolContext", Plan, "ToolOutput"], Awaitable[Undo | None]]
"""A tool's inverse: what undoes a successful call (None: nothing to undo)."""


def irreversible(what: str) -> str:
    """The warning of a write that no undo can reverse, for its plan."""
    return f"{what}: this {CANNOT_UNDO}"


@dataclass(frozen=True, slots=True)
class Undoing:
    """An undo being applied: the call it reverses and what the guest must still be."""

    event_id: str
    expect: Mapping[str, Any]

    def check(self, plan: Plan) -> None:
        """Refuse the inverse's plan when the guest moved on since the undone call: it is
        on another node (migrated) or in another state (started or stopped by someone)."""
        node = self.expect.get("node")
        if node is not None and plan.target.node != node:
            raise ToolFailure(
                "state_changed",
                f"the guest is on {plan.target.node} now, not {node} where call "
                f"{self.event_id} left it: undoing it would act on what changed since",
                field="event_id",
                hint="Read the guest's state and decide on a new call instead.",
            )
        status = self.expect.get("status")
        before = next((c.before for c in plan.changes if c.field == "status"), None)
        if status is not None and before != status:
            raise ToolFailure(
                "state_changed",
                f"the guest is {before} now, not {status} as call {self.event_id} left it",
                field="event_id",
                hint="Read the guest's state and decide on a new call instead.",
            )


Apply = Callable[[Undo, Undoing, Mapping[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]
"""Runs an inverse as a new call of the same caller (through `Gateway.invoke`): the undo,
what it must find, and the pass-through arguments (dry_run, confirm_token). Returns the
new call's event id and the inverse tool's result; raises its refusal as a `ToolFailure`."""


@dataclass(frozen=True, slots=True)
class UndoableCall:
    """One of the caller's calls that recorded an inverse, from its outcome record."""

    event_id: str
    time: str
    tool: str
    undo: Undo


def _records_newest_first(path: Path, limit: int) -> Iterator[dict[str, Any]]:
    """The call records in the last `limit` bytes of the log, newest first (a torn or
    foreign line is skipped: `pvemcp audit verify` is where the chain is judged)."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(size - limit, 0))
            data = handle.read(limit)
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if size > limit:
        lines = lines[1:]  # the first line is cut
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("phase") == "outcome":
            yield record


def _mine(record: Mapping[str, Any], principal: Principal) -> bool:
    who = record.get("who") or {}
    return (who.get("sub"), who.get("iss")) == principal.person


def read_undoable(path: Path | None, principal: Principal) -> tuple[list[UndoableCall], set[str]]:
    """The caller's calls in the log's newest `TAIL_BYTES` that recorded an inverse (newest
    first) and the event ids of those already undone (by anyone: the guest changed)."""
    if path is None:
        return [], set()
    found: list[UndoableCall] = []
    undone: set[str] = set()
    for record in _records_newest_first(path, TAIL_BYTES):
        outcome = record.get("outcome") or {}
        what = record.get("what") or {}
        if outcome.get("status") != "ok":
            continue
        if isinstance(what.get("undoes"), str):
            undone.add(what["undoes"])
        undo = outcome.get("undo")
        if undo is None or not _mine(record, principal):
            continue
        try:
            parsed = Undo.model_validate(undo)
        except ValueError:
            continue
        found.append(
            UndoableCall(
                event_id=str(record.get("event_id")),
                time=str(record.get("time")),
                tool=str(what.get("tool")),
                undo=parsed,
            )
        )
    return found, undone


@dataclass(frozen=True, slots=True)
class UndoDesk:
    """What the undo tool reaches through its context: the caller's undoable calls in the
    audit log, and the gateway's pipeline to apply one."""

    audit_path: Path | None
    principal: Principal
    apply: Apply

    async def undoable(self) -> tuple[list[UndoableCall], set[str]]:
        """`read_undoable` for this caller, off the event loop (it reads a file)."""
        return await anyio.to_thread.run_sync(read_undoable, self.audit_path, self.principal)

    async def listing(self) -> list[UndoableCall]:
        """The caller's newest `LISTED` calls that can still be undone."""
        calls, undone = await self.undoable()
        return [call for call in calls if call.event_id not in undone][:LISTED]

    async def undo(self, event_id: str, passed: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Apply the inverse of the caller's call `event_id` as a new call."""
        calls, undone = await self.undoable()
        found = next((call for call in calls if call.event_id == event_id), None)
        if found is None:
            raise ToolFailure(
                "not_found",
                f"no undoable call of yours with event id {event_id} in the recent audit log",
                field="event_id",
                hint="Call proxmox_call_undo without event_id to list your undoable calls.",
            )
        if event_id in undone:
            raise ToolFailure(
                "already_undone",
                f"call {event_id} ({found.tool}) was already undone",
                field="event_id",
                hint="Nothing to do; list the undoable calls with proxmox_call_undo.",
            )
        return await self.apply(found.undo, Undoing(event_id, found.undo.expect), passed)


def guest_undo(
    plan: Plan,
    output: ToolOutput,
    tool: str,
    arguments: Mapping[str, Any],
    *,
    status: bool = False,
) -> Undo | None:
    """The undo of a task on one guest (`TaskOutcome`): `tool` with `arguments` on the same
    vmid, expected on the node the task left it on (and, with `status`, in the state it
    left it in). None unless the task was waited for and ended OK in the planned state: a
    call that did not wait may still fail, and then there is nothing to undo."""
    target = plan.target
    if not isinstance(target, GuestTarget) or not isinstance(output, TaskOutcome):
        return None
    if output.task_status != "stopped" or output.exitstatus != "OK":
        return None
    expect: dict[str, Any] = {"node": output.node or target.node}
    if status:
        if output.guest_status is None or output.guest_status != plan.after("status"):
            return None
        expect["status"] = output.guest_status
    return Undo(tool=tool, arguments={"vmid": target.vmid, **arguments}, expect=expect)


async def config_inverse(ctx: ToolContext, plan: Plan, output: ToolOutput) -> Undo | None:
    """A config change's undo: each changed key set back to its value before (a key that
    was not set is deleted), with the digest the change left as the precondition, so any
    change made since refuses it (`config_changed`). None for a secret key's change (its
    old value is masked in the plan) and for a revert of pending changes (setting the
    value again may apply it at once instead of pending it)."""
    target = plan.target
    if not isinstance(target, GuestTarget) or not plan.calls:
        return None
    if isinstance(output, TaskOutcome) and output.exitstatus not in (None, "OK"):
        return None
    if "revert" in plan.calls[-1].params:
        return None
    values: dict[str, Any] = {}
    delete: list[str] = []
    for change in plan.changes:
        if MASK in (change.before, change.after):
            return None
        if change.before is None:
            delete.append(change.field)
        else:
            values[change.field] = change.before
    config = await read_config(ctx, target)
    arguments: dict[str, Any] = {"vmid": target.vmid, "values": values, "delete": delete}
    if config.digest is not None:
        arguments["digest"] = config.digest
    return Undo(
        tool="proxmox_guest_config_update", arguments=arguments, expect={"node": target.node}
    )
