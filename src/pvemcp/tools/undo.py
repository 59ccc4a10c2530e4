"""proxmox_call_undo: list the caller's undoable calls, or undo one as a new call.

Listing only reads the audit log; undoing runs the inverse tool through the gateway's
whole pipeline (its own tier, policy, dry run, confirmation and audit: `gateway/undo.py`),
so this tool is read tier and grants nothing the inverse tool would not.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from pvemcp.tools.kit import Tier, ToolContext, ToolFailure, ToolInput, ToolOutput, matching, tool

EventId = Annotated[
    str,
    matching(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "an audit event id"),
]


class UndoArgs(ToolInput):
    # The same meaning as every write's: passed on to the inverse call.
    advertised_bare: ClassVar[tuple[str, ...]] = ("dry_run", "confirm_token")

    event_id: Annotated[EventId | None, Field(description="Call to undo; omit to list.")] = None
    dry_run: bool = False
    confirm_token: Annotated[str | None, Field(max_length=512)] = None


class Undoable(ToolOutput):
    event_id: str
    time: str
    tool: str
    undo: str
    """The inverse tool and its arguments, as one line."""


class UndoResult(ToolOutput):
    calls: list[Undoable] | None = None
    event_id: str | None = None
    """The undo's own audit event."""
    result: dict[str, Any] | None = None


def _line(tool_name: str, arguments: dict[str, Any]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in arguments.items() if k != "cluster" and v != [])
    return f"{tool_name} {shown}"


@tool(
    "proxmox_call_undo",
    title="Undo a recent write",
    tier=Tier.READ,
    toolset="core",
    input=UndoArgs,
    output=UndoResult,
    examples=[{}],
    rejects=[
        ({"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}, "not_found"),
        ({"event_id": "yesterday"}, "invalid_argument"),
    ],
)
async def undo_call(ctx: ToolContext, args: UndoArgs) -> UndoResult:
    """Without event_id: your recent undoable writes, newest first. With one: undo that
    write by its inverse call, planned and confirmed like any write; refused once undone or
    if the guest changed since."""
    if ctx.undo is None:
        raise ToolFailure("internal_error", "this gateway records no undo")
    if args.event_id is None:
        calls = await ctx.undo.listing()
        return UndoResult(
            calls=[
                Undoable(
                    event_id=call.event_id,
                    time=call.time,
                    tool=call.tool,
                    undo=_line(call.undo.tool, call.undo.arguments),
                )
                for call in calls
            ]
        )
    passed: dict[str, Any] = {"dry_run": True} if args.dry_run else {}
    if args.confirm_token is not None:
        passed["confirm_token"] = args.confirm_token
    event_id, result = await ctx.undo.undo(args.event_id, passed)
    return UndoResult(event_id=event_id, result=result)


TOOLS = (undo_call,)
