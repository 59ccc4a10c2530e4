"""Asking the person at an MCP client to confirm a risky call, in each protocol era.

Handshake-era clients (2025-11-25 and older) get a pushed `elicitation/create` while the
call waits (it needs a back channel: none on stateless or JSON-response HTTP, where the
call falls back to the gateway's token flow). 2026-07-28 clients have no back channel at
all; they are asked through MCP's input-required flow instead: the tool call answers an
`InputRequiredResult` holding the question (the redacted plan, an approve field), the
client asks its person and retries the same call with the answer and the `requestState`
it was given. That retry is a new request, so it works on every HTTP mode.

The `requestState` is sealed twice. The SDK's boundary (`RequestStateBoundary`: AES-GCM
under a per-process key, 600 s, bound to the tool name, the arguments, the authenticated
principal and the server) refuses one that was altered, has expired or comes with other
arguments. Inside it is the gateway's own approval state (`ApprovalStates`): an HMAC over
the call's `binding` (tool, arguments, the target re-planned on the retry, caller) that is
single-use and expires with `confirm_ttl`, so an accept is never replayed, even within the
SDK's TTL, and never carried to a guest that changed between the rounds. A state the
SDK's boundary refuses does not end in its bare protocol error: `guard_request_state`
runs the call without it, and the gateway refuses it as `confirmation_invalid` with an
audit record naming the call.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation, render_elicitation_schema
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import RequestStateBoundary
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError

from pvemcp.gateway.confirm import Answer, ApprovalStates
from pvemcp.gateway.plan import Plan

QUESTION_KEY = "pvemcp.confirm"
"""The key of the confirmation question in `inputRequests` and of its answer in
`inputResponses`."""

_STATE_REFUSED: ContextVar[bool] = ContextVar("pvemcp_state_refused", default=False)
"""Set while a tools/call whose `requestState` the SDK refused runs without it."""


class Approval(BaseModel):
    """What the user answers when a risky call needs confirmation."""

    approve: bool = Field(description="Run it?")


def question(tool: str, plan: Plan) -> str:
    """The text the person reads, in both eras."""
    return f"pvemcp asks to run {tool}:\n{plan.describe()}"


def can_elicit(context: Context[Any, Any]) -> bool:
    """Whether the client declared form elicitation (a bare `elicitation: {}`, the only
    shape before modes existed, counts; URL-only does not), as the SDK's resolvers check."""
    capabilities = context.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


class Asker:
    """The confirmer of one tools/call (`Gateway.invoke`'s `confirmer`).

    After the call, `pending` holds the question to answer the call with when this round
    asked one (input-required); the gateway has recorded the round as
    `confirmation_required`."""

    def __init__(self, context: Context[Any, Any], states: ApprovalStates) -> None:
        self._context = context
        self._states = states
        self.pending: InputRequiredResult | None = None

    async def __call__(self, tool: str, plan: Plan, bound: str) -> Answer | None:
        if _STATE_REFUSED.get():
            raise self._states.invalid(
                "the requestState was not accepted: altered, expired, issued by another "
                "process, or sent with other arguments than the call it was issued for"
            )
        if self._context.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return self._input_required(tool, plan, bound)
        return await self._pushed(tool, plan)

    async def _pushed(self, tool: str, plan: Plan) -> Answer | None:
        """Handshake era: ask now over the session's back channel; None without one."""
        if not can_elicit(self._context):
            return None
        try:
            answer = await self._context.elicit(question(tool, plan), Approval)
        except NoBackChannelError:
            return None
        except (MCPError, ValueError):
            # The client answered with an error, or accepted with content that does not fit
            # (the SDK's ValueError): no one approved. Refused, so the call is on record.
            raise self._states.invalid(
                "the client did not answer the confirmation question (its elicitation "
                "failed or did not fit the question); nothing was changed"
            ) from None
        approved = isinstance(answer, AcceptedElicitation) and answer.data.approve
        return Answer("elicitation", approved)

    def _input_required(self, tool: str, plan: Plan, bound: str) -> Answer | None:
        """2026-07-28: the first round asks (the call answers `pending`), the retry brings
        the approval state back with the answer, redeemed here for this very call."""
        state = self._context.request_state
        if state is None:
            if not can_elicit(self._context):
                return None
            request = ElicitRequest(
                params=ElicitRequestFormParams(
                    message=question(tool, plan),
                    requested_schema=render_elicitation_schema(Approval),
                )
            )
            self.pending = InputRequiredResult(
                input_requests={QUESTION_KEY: request}, request_state=self._states.issue(bound)
            )
            return Answer("input_required", None)
        state_id = self._states.redeem(state, bound)
        response = (self._context.input_responses or {}).get(QUESTION_KEY)
        if not isinstance(response, ElicitResult):
            raise self._states.invalid("the retry carries no answer to the confirmation question")
        approved = False
        if response.action == "accept":
            try:
                approved = Approval.model_validate(response.content or {}).approve
            except ValidationError:
                raise self._states.invalid(
                    "the answer to the confirmation question does not fit its schema "
                    "(approve: boolean)"
                ) from None
        return Answer("input_required", approved, {"state_id": state_id})


def _refused_by_boundary(error: MCPError) -> bool:
    data = error.data
    return isinstance(data, dict) and data.get("reason") == "invalid_request_state"


async def _keep_refused_states(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    """Outside the SDK's boundary: a tools/call whose `requestState` it refused runs
    again without its state and answers, marked, so the gateway refuses and records it
    (the boundary refuses before any handler runs, so the call has not run)."""
    params = ctx.params or {}
    if ctx.method != "tools/call" or params.get("requestState") is None:
        return await call_next(ctx)
    try:
        return await call_next(ctx)
    except MCPError as error:
        if not _refused_by_boundary(error):
            raise
    bare = {k: v for k, v in params.items() if k not in ("requestState", "inputResponses")}
    token = _STATE_REFUSED.set(True)
    try:
        return await call_next(replace(ctx, params=bare))
    finally:
        _STATE_REFUSED.reset(token)


def guard_request_state(server: MCPServer[Any]) -> None:
    """Put `_keep_refused_states` right outside the SDK's `RequestStateBoundary` (which
    `MCPServer` installs ahead of user middleware, so user middleware never sees its
    refusals)."""
    chain = server.middleware
    at = next(i for i, m in enumerate(chain) if isinstance(m, RequestStateBoundary))
    chain.insert(at, _keep_refused_states)
