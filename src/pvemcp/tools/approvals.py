"""`proxmox_approval_status`: where a call held for four-eyes approval stands, and a bounded
wait for its decision.

A call an `approve` rule holds answers `approval_pending` with an `approval_id`; a person
other than the caller decides it outside MCP (`pvemcp approvals`, the HTTP approval API).
This tool lets the agent check or wait (with MCP progress) and tells it what to do next;
it never approves anything. A caller sees only requests it made or may decide: any other
id is `approval_not_found`, like one that never existed.
"""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from pydantic import Field

from pvemcp.gateway.approvals import ApprovalRequest, ApprovalStore, same_person
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.registry import ToolInput, ToolOutput, tool
from pvemcp.policy.tiers import Tier

POLL_SECONDS = 1.0
"""How often a wait looks at the store (another process decides; there is no signal)."""
MAX_WAIT = 600
DEFAULT_WAIT = 60


class StatusArgs(ToolInput):
    approval_id: Annotated[
        str | None,
        Field(max_length=64, description="From approval_pending; omitted: your open requests."),
    ] = None
    wait: Annotated[bool, Field(description="Wait until it is decided or expires.")] = False
    timeout: Annotated[float, Field(gt=0, le=MAX_WAIT, description="Seconds to wait at most.")] = (
        DEFAULT_WAIT
    )


class Approval(ToolOutput):
    approval_id: str
    tool: str
    status: str
    approvers: list[str]
    expires_in: int
    decided_by: str | None = None
    reason: str | None = None
    next: str
    """What the caller should do now."""


class ApprovalStatus(ToolOutput):
    approvals: list[Approval]
    waited: float | None = None


_NEXT = {
    "pending": "Wait (wait=true) or check later; an approver decides outside this session.",
    "approved": "Call the same tool again with the same arguments plus approval_id; it runs once.",
    "denied": "Do not retry; tell the user the reason.",
    "expired": "Call the tool again without approval_id to make a new request, if still wanted.",
    "used": "Nothing: the approved call already ran.",
}


def _shown(request: ApprovalRequest, now: float) -> Approval:
    decider = request.decided_by or {}
    by = decider.get("sub")
    if by is not None and "os_user" in decider:
        by = f"{by} ({decider['os_user']})"
    return Approval(
        approval_id=request.id,
        tool=request.tool,
        status=request.status,
        approvers=list(request.approvers),
        expires_in=max(0, int(request.expires - now)) if request.status == "pending" else 0,
        decided_by=by,
        reason=request.reason,
        next=_NEXT[request.status],
    )


async def _wait(
    ctx: ToolContext, store: ApprovalStore, approval_id: str, timeout: float
) -> tuple[ApprovalRequest, float]:
    """Poll until the request leaves `pending` or `timeout` passes, with MCP progress."""
    started = time.monotonic()
    while True:
        request = await anyio.to_thread.run_sync(lambda: store.get(approval_id, ctx.principal))
        waited = time.monotonic() - started
        if request.status != "pending" or waited >= timeout:
            return request, round(waited, 1)
        await ctx.report_progress(
            round(waited, 1), timeout, f"waiting for {', '.join(request.approvers)}"
        )
        await anyio.sleep(min(POLL_SECONDS, timeout - waited))


@tool(
    "proxmox_approval_status",
    title="Approval status",
    tier=Tier.READ,
    toolset="core",
    input=StatusArgs,
    output=ApprovalStatus,
    examples=[{}],
    rejects=[({"approval_id": "A" * 24}, "approval_not_found")],
    idempotent=True,
)
async def approval_status(ctx: ToolContext, args: StatusArgs) -> ApprovalStatus:
    """Status of a call held for another person's approval (approval_pending); wait=true
    waits for the decision. Without approval_id: your open requests. It cannot approve."""
    store = ctx.approvals
    now = time.time()
    if args.approval_id is None:
        if store is None:
            return ApprovalStatus(approvals=[])
        requests = await anyio.to_thread.run_sync(store.list)
        mine = [
            request
            for request in requests
            if request.status in ("pending", "approved")
            and same_person(request.requester, ctx.principal)
        ]
        return ApprovalStatus(approvals=[_shown(request, now) for request in mine])
    if store is None:
        raise ApprovalStore.unknown(args.approval_id)
    approval_id = args.approval_id
    if not args.wait:
        request = await anyio.to_thread.run_sync(lambda: store.get(approval_id, ctx.principal))
        return ApprovalStatus(approvals=[_shown(request, now)])
    request, waited = await _wait(ctx, store, approval_id, args.timeout)
    return ApprovalStatus(approvals=[_shown(request, time.time())], waited=waited)


TOOLS = [approval_status]
