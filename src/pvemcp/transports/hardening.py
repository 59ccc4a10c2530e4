"""Plain ASGI middlewares that guard the HTTP app before any MCP or auth code runs.

They wrap the whole Starlette app, outermost first: Host/Origin (DNS rebinding), a
per-caller rate limit, a body limit, a timeout until the response starts. Plain ASGI (not
Starlette's `BaseHTTPMiddleware`) so SSE streams pass through untouched and the request
context (the caller's token) is not copied into another task.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
import structlog
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

MAX_BUCKETS = 10_000
"""Rate-limit buckets kept at once; the least recently used go first, so random keys
(a flood of made-up tokens) cost bounded memory."""


def jsonrpc_error(status: int, message: str, *, code: int = -32000) -> JSONResponse:
    """An HTTP error with a JSON-RPC error body (no request id), as the SDK answers its own
    transport errors, so MCP clients show the message."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status)


def client_ip(scope: Scope) -> str:
    """The peer address; behind a trusted proxy uvicorn has already put the forwarded one."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class HostOriginGuard:
    """Rejects a foreign `Host` (421) or `Origin` (403) before anything else runs.

    The SDK checks the same settings on the MCP endpoint, but only after authentication,
    so a rebinding page would learn that the endpoint exists (401 instead of 421).
    `exempt` paths (probes, metrics, public metadata) are called by address or cross-origin.
    """

    def __init__(
        self, app: ASGIApp, settings: TransportSecuritySettings, exempt: Collection[str]
    ) -> None:
        self.app = app
        self._checker = TransportSecurityMiddleware(settings)
        self._exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self._exempt:
            refused = await self._checker.validate_request(Request(scope), is_post=False)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimit:
    """A token bucket per caller: `burst` requests at once, refilled at `per_minute`.

    The caller is the bearer token (by its SHA-256, so one subject's token is one bucket)
    or, without one, the client address. It runs before authentication, so a flood of bad
    tokens is limited too, and nothing is spent verifying what will be refused anyway.
    Refusals are 429 with `Retry-After` (whole seconds) and counted by `on_limited`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        burst: int,
        exempt: Collection[str],
        on_limited: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._exempt = frozenset(exempt)
        self._on_limited = on_limited
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @staticmethod
    def caller_key(scope: Scope) -> str:
        authorization = Headers(scope=scope).get("authorization")
        if authorization:
            return "token:" + hashlib.sha256(authorization.encode()).hexdigest()
        return "ip:" + client_ip(scope)

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket; 0 when allowed, else seconds until one is back."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            while len(self._buckets) >= MAX_BUCKETS:
                self._buckets.popitem(last=False)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt or self._rate <= 0:
            await self.app(scope, receive, send)
            return
        wait = self.take(self.caller_key(scope))
        if wait == 0:
            await self.app(scope, receive, send)
            return
        self._on_limited()
        retry_after = max(1, math.ceil(wait))
        log.warning("rate_limited", source_ip=client_ip(scope), retry_after=retry_after)
        response = jsonrpc_error(429, f"rate limit exceeded; retry in {retry_after} s")
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)


class ResponseStartTimeout:
    """504 when the app has not started its response within `seconds`.

    Only the wait for the first byte is bounded: once a response has started (an SSE
    stream carrying progress of a long task, which the SDK opens within seconds) it may
    run as long as the work takes; the client's own timeout and cancellation end it.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.deadline = math.inf
            await send(message)

        with anyio.move_on_after(self._seconds) as deadline:
            await self.app(scope, receive, watch)
        if deadline.cancelled_caught and not started:
            log.warning("request_timeout", path=scope["path"], seconds=self._seconds)
            response = jsonrpc_error(504, f"no response within {self._seconds:g} s")
            await response(scope, receive, send)


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """One refused request, for audit, metrics and the log; never the token itself."""

    reason: str
    status: int
    source_ip: str
    token_sha256: str | None
    subject: str | None = None
    issuer: str | None = None
    client_id: str | None = None


_REPORTS: ContextVar[list[tuple[str, str | None]] | None] = ContextVar(
    "pvemcp_auth_reports", default=None
)
"""The verifier's reports for the request in progress (one list per request)."""


def report_auth_failure(reason: str, token_sha256: str | None) -> None:
    """The verifiers' `on_failure`: keeps the reason for the request being verified.

    The SDK verifies inside `AuthChallenges`' call, so the list that middleware puts in a
    context variable for each request is where the report lands; it is read back when the
    401 goes out, with the client address the verifier never sees.
    """
    reports = _REPORTS.get()
    if reports is not None:
        reports.append((reason, token_sha256))


class AuthChallenges:
    """Rewrites the SDK's bearer challenges as MCP 2025-11-25 and RFC 6750 want them, and
    reports every refusal.

    401 without credentials: `Bearer resource_metadata=..., scope=...` (no `error`, RFC 6750
    §3.1); 401 with a token: `error="invalid_token"` added; 403: `error="insufficient_scope"`
    with the scopes needed. The reason comes from the verifier (through
    `report_auth_failure`) or, where the verifier never ran, from the request itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        resource_metadata_url: str,
        scopes: Collection[str],
        on_failure: Callable[[AuthFailure], None],
        token_hash: Callable[[str], str],
    ) -> None:
        self.app = app
        self._metadata = resource_metadata_url
        self._scope = " ".join(scopes)
        self._on_failure = on_failure
        self._token_hash = token_hash

    def challenge(self, status: int, *, token_sent: bool) -> str:
        parts: list[str] = []
        if status == 403:
            parts.append('error="insufficient_scope"')
        elif token_sent:
            parts.append('error="invalid_token"')
            parts.append('error_description="The access token is invalid or expired"')
        parts.append(f'resource_metadata="{self._metadata}"')
        if self._scope:
            parts.append(f'scope="{self._scope}"')
        return "Bearer " + ", ".join(parts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reports: list[tuple[str, str | None]] = []
        replaced = False

        async def rewrite(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start" and _is_bearer_refusal(message):
                replaced = True
                reported = reports[-1] if reports else None
                await self._refuse(scope, receive, send, message["status"], reported)
                return
            await send(message)

        context = _REPORTS.set(reports)
        try:
            await self.app(scope, receive, rewrite)
        finally:
            _REPORTS.reset(context)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        reported: tuple[str, str | None] | None,
    ) -> None:
        failure = self._failure(scope, status, reported)
        self._on_failure(failure)
        # RFC 6750 §3.1: no error code unless bearer credentials were actually presented.
        token_sent = failure.reason not in (
            "missing_token",
            "token_in_query",
            "malformed_authorization",
        )
        body = {
            "error": "insufficient_scope" if status == 403 else "invalid_token",
            "error_description": (
                f"this token lacks a required scope: {self._scope}"
                if status == 403
                else "a valid bearer token in the Authorization header is required"
            ),
        }
        if status == 401 and not token_sent:
            body = {"error_description": body["error_description"]}
        response = JSONResponse(
            body,
            status_code=status,
            headers={"WWW-Authenticate": self.challenge(status, token_sent=token_sent)},
        )
        await response(scope, receive, send)

    def _failure(
        self, scope: Scope, status: int, reported: tuple[str, str | None] | None
    ) -> AuthFailure:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization", "")
        source_ip = client_ip(scope)
        if status == 403:
            user = scope.get("user")
            access = user.access_token if isinstance(user, AuthenticatedUser) else None
            claims = (access.claims or {}) if access is not None else {}
            return AuthFailure(
                reason="insufficient_scope",
                status=status,
                source_ip=source_ip,
                token_sha256=self._token_hash(access.token) if access is not None else None,
                subject=access.subject if access is not None else None,
                issuer=str(claims["iss"]) if "iss" in claims else None,
                client_id=access.client_id if access is not None else None,
            )
        if reported is not None:
            return AuthFailure(reported[0], status, source_ip, reported[1])
        if not authorization:
            query = scope.get("query_string", b"")
            reason = "token_in_query" if b"access_token=" in query else "missing_token"
            return AuthFailure(reason, status, source_ip, None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return AuthFailure("malformed_authorization", status, source_ip, None)
        # The verifier accepted it but the SDK did not (expired by its clock, or issued for
        # another resource).
        return AuthFailure("rejected", status, source_ip, self._token_hash(token))


def _is_bearer_refusal(message: Message) -> bool:
    if message["status"] not in (401, 403):
        return False
    return any(
        name.lower() == b"www-authenticate" and value.lower().startswith(b"bearer")
        for name, value in message.get("headers", [])
    )
