"""The HTTP approval API: approvers decide held calls from anywhere the HTTP app is reachable.

Mounted by `http.py` at `/approvals` when the app authenticates (`auth = "oidc"` or
`"static"`):

- `GET /approvals` — the requests the caller may decide or made (`?status=` picks another
  status than `pending`, or `all`);
- `GET /approvals/{id}` — one of them, with its redacted plan;
- `POST /approvals/{id}/approve` and `POST /approvals/{id}/deny` with `{"reason": "..."}`.

The caller is authenticated exactly as on the MCP endpoint: the same verifier, the same
resource check, the same scopes, and the same 401/403 challenges (rewritten and audited by
`AuthChallenges` around the whole app). The principal the token stands for, with its
groups, is the approver; `ApprovalStore` decides whether it may (never the requester, only
those the rule names) and audits every decision and refused attempt.

Cross-site requests: only a bearer token in the `Authorization` header authenticates (no
cookie, no query token), which a page on another origin cannot make a browser send, and
`HostOriginGuard` refuses a foreign `Origin` or `Host` before this code runs.

Errors are JSON `{"error": {code, message, field?, hint?}}` with the store's codes
(`approval_not_found` 404, `approval_self`/`approval_not_approver` 403,
`approval_expired`/`approval_decided` 409, `invalid_argument` 400, `method_not_allowed`
405, `audit_unavailable`/`approval_unavailable` 503).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import TokenVerifier
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pvemcp.gateway.approvals import STATUSES, ApprovalRequest, ApprovalStore
from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.principal import Principal
from pvemcp.transports.principals import http_principal

PREFIX = "/approvals"
STATUS_OF_CODE = {
    "approval_not_found": 404,
    "approval_self": 403,
    "approval_not_approver": 403,
    "approval_expired": 409,
    "approval_decided": 409,
    "invalid_argument": 400,
    "method_not_allowed": 405,
    "audit_unavailable": 503,
    "approval_unavailable": 503,
}


def error_response(failure: ToolFailure, headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal as the API answers it: the store's code, message, field and hint."""
    status = STATUS_OF_CODE.get(failure.code, 400)
    return JSONResponse({"error": failure.payload()}, status_code=status, headers=headers)


class ApprovalApi:
    """The endpoints, over one store; `principal_of` says who a request's token is."""

    def __init__(self, store: ApprovalStore, principal_of: Callable[[Request], Principal]):
        self._store = store
        self.principal_of = principal_of

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX, self.list, methods=["GET"]),
            Route(PREFIX + "/{approval_id}", self.show, methods=["GET"]),
            Route(PREFIX + "/{approval_id}/approve", self.approve, methods=["POST"]),
            Route(PREFIX + "/{approval_id}/deny", self.deny, methods=["POST"]),
        ]

    async def list(self, request: Request) -> Response:
        principal = self.principal_of(request)
        wanted = request.query_params.get("status", "pending")
        if wanted != "all" and wanted not in STATUSES:
            return error_response(
                ToolFailure(
                    "invalid_argument",
                    f"status {wanted!r} is not one of {', '.join(STATUSES)} or all",
                    field="status",
                )
            )
        status = None if wanted == "all" else wanted
        found = await anyio.to_thread.run_sync(lambda: self._store.list(status))
        shown = [item.to_json() for item in found if self._store.visible_to(item, principal)]
        return JSONResponse({"approvals": shown})

    async def show(self, request: Request) -> Response:
        principal = self.principal_of(request)
        approval_id = request.path_params["approval_id"]
        try:
            found = await anyio.to_thread.run_sync(
                lambda: self._store.get(approval_id, viewer=principal)
            )
        except ToolFailure as failure:  # unknown, or not theirs to see: audited by the store
            return error_response(failure)
        return JSONResponse({"approval": found.to_json()})

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, self._store.approve)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, self._store.deny)

    async def _decide(
        self,
        request: Request,
        decide: Callable[[str, Principal, str], ApprovalRequest],
    ) -> Response:
        principal = self.principal_of(request)
        approval_id = request.path_params["approval_id"]
        reason = await _reason(request)
        if reason is None:
            failure = ToolFailure(
                "invalid_argument",
                'the body must be a JSON object {"reason": "..."} with a string reason',
                field="reason",
                hint="Say why you approve or deny it; the reason is kept in the audit log.",
            )
            self.refused(approval_id, principal, failure)
            return error_response(failure)
        try:
            decided = await anyio.to_thread.run_sync(lambda: decide(approval_id, principal, reason))
        except ToolFailure as failure:  # audited by the store
            return error_response(failure)
        return JSONResponse({"approval": decided.to_json()})

    def refused(self, approval_id: str, principal: Principal, failure: ToolFailure) -> None:
        """Record an attempt refused here, before the store saw it (a bad body, a wrong
        method), as the store records its own refusals."""
        self._store.refuse(failure, None, principal, request_id=approval_id)


async def _reason(request: Request) -> str | None:
    """The `reason` of a decision's JSON body, or `None` if the body is not one."""
    try:
        body: Any = json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: arrays nested too deep
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


def _not_allowed(api: ApprovalApi) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's own 404/405 answers, as structured errors; a wrong method by an
    authenticated caller is also an audited refusal (it is someone probing the API)."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allowed = ", ".join(sorted(dict(exc.headers or {}).get("Allow", "").split(", ")))
            failure = ToolFailure(
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
                hint=f"Use {allowed}." if allowed else None,
            )
            path = request.url.path.removeprefix(PREFIX).strip("/")
            api.refused(path.partition("/")[0], api.principal_of(request), failure)
            return error_response(failure, headers={"Allow": allowed} if allowed else None)
        return error_response(
            ToolFailure(
                "approval_not_found",
                f"{request.url.path} is not part of the approval API",
                hint="GET /approvals, GET /approvals/{id}, POST /approvals/{id}/approve|deny.",
            )
        )

    return handle


def approval_routes(
    store: ApprovalStore,
    verifier: TokenVerifier,
    *,
    resource: str,
    required_scopes: Sequence[str],
    metadata_url: str,
    groups_claim: str,
) -> list[BaseRoute]:
    """The routes to add to the HTTP app (before its catch-all MCP mount): everything
    under `PREFIX`, behind the MCP endpoint's bearer check (the SDK's backend and
    `RequireAuthMiddleware`, so the token, its resource and scopes are checked exactly as
    there, and before any method or path is looked at)."""
    api = ApprovalApi(store, lambda request: http_principal(request, groups_claim))
    router = Starlette(routes=api.routes(), exception_handlers={HTTPException: _not_allowed(api)})
    protected = RequireAuthMiddleware(router, list(required_scopes), AnyHttpUrl(metadata_url))
    app = AuthenticationMiddleware(
        protected, backend=BearerAuthBackend(verifier, resource_server_url=AnyHttpUrl(resource))
    )
    # ASGI endpoints: no method filter here, and the inner router sees the full path.
    return [Route(PREFIX, app), Route(PREFIX + "/{path:path}", app)]
