"""Plain ASGI middlewares that guard the HTTP app before any MCP or auth code runs.

They wrap the whole Starlette app, outermost first: Host/Origin (DNS rebinding), a
per-caller rate limit, a body limit, a timeout on the whole response; `SessionQuota`
sits further in, on the SDK's session manager. Plain ASGI (not
Starlette's `BaseHTTPMiddleware`) so SSE streams pass through untouched and the request
context (the caller's token) is not copied into another task.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio
import structlog
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types import REQUEST_TIMEOUT
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
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


class TokenBuckets:
    """A token bucket per key: `burst` at once, refilled at `per_minute`; the least recently
    used of more than `MAX_BUCKETS` keys are forgotten (a forgotten key starts full)."""

    def __init__(
        self, per_minute: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            while len(self._buckets) >= MAX_BUCKETS:
                self._buckets.popitem(last=False)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[key] = bucket
        return bucket

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket; 0 when allowed, else seconds until one is back."""
        bucket = self._refilled(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token again (0 if it has one now), spending nothing."""
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def spend(self, key: str) -> None:
        """Spend one token even if that leaves the bucket in debt (up to one burst), so a
        failure found only after the fact still counts."""
        bucket = self._refilled(key)
        bucket.tokens = max(bucket.tokens - 1, -self._burst)


class FailureLimit:
    """Failed authentications allowed per source address, and from all sources together.

    A failure is known only once the verifier has refused the token, so it is spent after
    the fact (`failed`); while a source's bucket (or the total one) is empty, requests from
    it that carry no token known to be good are refused before verification (`wait`).
    Callers whose tokens were verified keep working through a flood from elsewhere.
    """

    def __init__(
        self,
        *,
        per_minute: int,
        burst: int,
        total_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_source = TokenBuckets(per_minute, burst, clock)
        # Ten seconds' worth of the total rate at once.
        self._total = TokenBuckets(total_per_minute, max(1, total_per_minute // 6), clock)

    def wait(self, source_ip: str) -> float:
        waits = [
            buckets.wait(key)
            for buckets, key in ((self._per_source, source_ip), (self._total, "*"))
            if buckets.rate > 0
        ]
        return max(waits, default=0.0)

    def failed(self, source_ip: str) -> None:
        for buckets, key in ((self._per_source, source_ip), (self._total, "*")):
            if buckets.rate > 0:
                buckets.spend(key)


def caller_key(scope: Scope) -> str:
    """Who a request counts against before verification: the hash of its normalised
    `Authorization` value (scheme case-folded, whitespace collapsed, so `Bearer T`,
    `bearer  T` and `BEARER\tT` are one caller), or without one the client address."""
    authorization = Headers(scope=scope).get("authorization")
    words = authorization.split() if authorization is not None else []
    if not words:
        return "ip:" + client_ip(scope)
    normalised = " ".join([words[0].casefold(), *words[1:]])
    return "token:" + hashlib.sha256(normalised.encode("utf-8", "surrogateescape")).hexdigest()


def principal_key(user: AuthenticatedUser) -> str:
    """The verified caller a rate-limit bucket belongs to: issuer and subject (else client
    id), so every token of one subject shares one bucket."""
    context = authorization_context(user)
    return f"principal:{context['issuer']}|{context['subject'] or context['client_id']}"


class RateLimit:
    """A token bucket per caller: `burst` requests at once, refilled at `per_minute`.

    Before a token is verified the caller is the token itself (`caller_key`); once the SDK
    has verified it, the token is remembered as standing for its principal
    (`principal_key`), whose one bucket all its tokens then spend. Without a token the
    caller is the client address. It runs before authentication, so nothing is spent
    verifying what will be refused anyway. With `failures`, refused authentications are
    counted per source and a source (or everyone) that failed too often gets 429 for any
    request whose token is not known to be good (`on_auth_limited(source_ip)`).
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
        failures: FailureLimit | None = None,
        on_auth_limited: Callable[[str], None] = lambda source_ip: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._buckets = TokenBuckets(per_minute, burst, clock)
        self._exempt = frozenset(exempt)
        self._on_limited = on_limited
        self._failures = failures
        self._on_auth_limited = on_auth_limited
        self._principals: OrderedDict[str, str] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket; 0 when allowed, else seconds until one is back."""
        return self._buckets.take(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        key = caller_key(scope)
        principal = self._principals.get(key)
        source_ip = client_ip(scope)
        if principal is None and self._failures is not None:
            wait = self._failures.wait(source_ip)
            if wait > 0:
                self._on_auth_limited(source_ip)
                await self._refuse(scope, receive, send, wait, "too many failed authentications")
                return
        if self._buckets.rate > 0:
            wait = self._buckets.take(principal or key)
            if wait > 0:
                await self._refuse(scope, receive, send, wait, "rate limit exceeded")
                return

        async def learn(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._learn(scope, key, message)
            await send(message)

        await self.app(scope, receive, learn)

    def _learn(self, scope: Scope, key: str, start: Message) -> None:
        """After verification: remember which principal a token stands for, forget it when
        it is refused (expired, revoked), and count the refusal against its source."""
        if _is_bearer_refusal(start):
            self._principals.pop(key, None)
            if self._failures is not None:
                self._failures.failed(client_ip(scope))
            return
        user = scope.get("user")
        if key.startswith("token:") and isinstance(user, AuthenticatedUser):
            principal = principal_key(user)
            if self._principals.pop(key, None) != principal and self._buckets.rate > 0:
                self._buckets.spend(principal)  # this request, charged to the token so far
            self._principals[key] = principal
            while len(self._principals) > MAX_BUCKETS:
                self._principals.popitem(last=False)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, wait: float, what: str
    ) -> None:
        self._on_limited()
        retry_after = max(1, math.ceil(wait))
        log.warning("rate_limited", source_ip=client_ip(scope), retry_after=retry_after, why=what)
        response = jsonrpc_error(429, f"{what}; retry in {retry_after} s")
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)


PARSE_ID_AT_MOST = 64 * 1024
"""Request bytes kept to find the JSON-RPC id a cut stream's last event answers."""


class RequestTimeout:
    """Bounds a whole response to `seconds`.

    Not started by then: 504. The answer to a POST that is still streaming (progress of
    a long task) is ended with a last event: a JSON-RPC error (`REQUEST_TIMEOUT`) for the
    request's id, so the client gets an answer rather than a stream that may run for as
    long as the work takes; any other POST response still open is cut off. The handler is
    cancelled either way; what it started on Proxmox (a task) keeps running and can be
    followed by its UPID. A GET's stream (the session's channel for server messages, which
    answers no request) is bounded only until it starts, as before.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = streaming = ended = False
        body = bytearray()

        async def reading() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < PARSE_ID_AT_MOST:
                body.extend(message.get("body", b"")[: PARSE_ID_AT_MOST - len(body)])
            return message

        async def watch(message: Message) -> None:
            nonlocal started, streaming, ended
            if message["type"] == "http.response.start":
                started = True
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                streaming = content_type.startswith("text/event-stream")
                if scope["method"] != "POST":
                    deadline.deadline = math.inf
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        with anyio.move_on_after(self._seconds) as deadline:
            await self.app(scope, reading, watch)
        if not deadline.cancelled_caught or ended:
            return
        log.warning("request_timeout", path=scope["path"], seconds=self._seconds, started=started)
        message = f"no complete response within {self._seconds:g} s (http.request_timeout)"
        if not started:
            await jsonrpc_error(504, f"no response within {self._seconds:g} s")(
                scope, receive, send
            )
        elif streaming:
            error = {
                "jsonrpc": "2.0",
                "id": _request_id(bytes(body)),
                "error": {"code": REQUEST_TIMEOUT, "message": message},
            }
            event = b"event: message\ndata: " + json.dumps(error).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": False})


def _request_id(body: bytes) -> str | int | None:
    """The JSON-RPC id of the request in `body`, if it is one that can be read."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    identifier = message.get("id") if isinstance(message, dict) else None
    return identifier if isinstance(identifier, str | int) else None


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


AUTH_FAILURE_WINDOW = 60.0
"""Seconds of one source's failures the audit log summarises in one record."""
FULL_PER_WINDOW = 5
"""Refusals per source and window the audit log keeps in full (token hash, reason, ...)
before it only counts: an ordinary misconfigured client is fully visible, a flood is not
written out."""
MAX_FAILURE_SOURCES = 1000
"""Sources with a window open at once; failures from further ones share the window `*`."""


@dataclass(slots=True)
class _Window:
    opened: float
    written: int = 0
    counts: Counter[str] = field(default_factory=Counter)


class FailureDigest:
    """Refused authentications for the audit log, summarised per source and window.

    The first `full` refusals from a source in a window of `window` seconds are written
    in full (`write`); the rest, and the requests refused because the source failed too
    often, are only counted, by reason, and written as one summary (`summarise`) when the
    window ends (`flush`, called periodically and at shutdown). So a flood of bad tokens
    costs at most `full` + 1 records per source per window, and the counts still add up
    to every refusal.
    """

    def __init__(
        self,
        *,
        write: Callable[[AuthFailure], None],
        summarise: Callable[[str, Mapping[str, int], float], None],
        window: float = AUTH_FAILURE_WINDOW,
        full: int = FULL_PER_WINDOW,
        max_sources: int = MAX_FAILURE_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._summarise = summarise
        self._window = window
        self._full = full
        self._max_sources = max_sources
        self._clock = clock
        # Oldest window first: windows open in time order, so the ended ones lead.
        self._open: OrderedDict[str, _Window] = OrderedDict()

    def failed(self, failure: AuthFailure) -> None:
        """Count one refused authentication (written in full while the window allows)."""
        if self._count(failure.source_ip, failure.reason):
            self._write(failure)

    def limited(self, source_ip: str) -> None:
        """Count one request refused because its source failed authentication too often."""
        if self._count(source_ip, "rate_limited"):
            self._write(AuthFailure("rate_limited", 429, source_ip, None))

    def _count(self, source_ip: str, reason: str) -> bool:
        """Count in `source_ip`'s window; `True` when it is to be written in full."""
        self.flush()
        if source_ip not in self._open and len(self._open) >= self._max_sources:
            source_ip = "*"
        window = self._open.get(source_ip)
        if window is None:
            window = self._open[source_ip] = _Window(self._clock())
        if window.written < self._full:
            window.written += 1
            return True
        window.counts[reason] += 1
        return False

    def flush(self, *, everything: bool = False) -> None:
        """Write the summaries of the windows that have ended (all of them at shutdown)."""
        now = self._clock()
        while self._open:
            source_ip, window = next(iter(self._open.items()))
            if not everything and now - window.opened < self._window:
                return
            del self._open[source_ip]
            if window.counts:
                self._summarise(source_ip, window.counts, self._window)


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


class SessionQuota:
    """At most `per_principal` open MCP sessions (stateful mode) per caller.

    The SDK caps sessions only in total, so one key could fill the table and every other
    client would get 503. A request that would open a session (no `Mcp-Session-Id`) from a
    caller at the cap first closes that caller's longest idle session; if all of them
    have a request in flight, it gets 429 and nobody else is affected. Anonymous callers
    (`auth = "none"`) are one caller. It wraps the session manager's `asgi_app`, so it
    runs after authentication (the caller is known) and reads four SDK internals (mcp is
    pinned; the session tests fail if any moves): the manager's `_server_instances` and
    `_session_owners` and `_discard_session`, and a transport's `_requests_in_flight`.
    """

    def __init__(self, manager: StreamableHTTPSessionManager, per_principal: int) -> None:
        self.app = manager.asgi_app
        self._manager = manager
        self._per_principal = per_principal
        self._lock = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only a POST of the handshake era without a session id can open a session.
        headers = Headers(scope=scope)
        version = headers.get("mcp-protocol-version")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or self._manager.stateless
            or "mcp-session-id" in headers
            or (version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS)
        ):
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        owner = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with self._lock:
            room = await self._make_room(owner)
        if not room:
            log.warning("session_quota_refused", source_ip=client_ip(scope))
            message = (
                f"this caller already has {self._per_principal} sessions with requests in "
                "flight; end one (DELETE) or retry when one is idle"
            )
            await jsonrpc_error(429, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _make_room(self, owner: AuthorizationContext | None) -> bool:
        """Close `owner`'s longest idle sessions until a new one fits; `False` if it cannot."""
        manager = self._manager
        owners = manager._session_owners
        mine = [
            (session_id, transport)
            for session_id, transport in manager._server_instances.items()
            if owners.get(session_id) == owner
        ]
        excess = len(mine) - self._per_principal + 1
        if excess <= 0:
            return True
        idle = sorted(
            (transport.idle_scope.deadline, session_id, transport)
            for session_id, transport in mine
            if transport.idle_scope is not None and transport._requests_in_flight == 0
        )
        if len(idle) < excess:
            return False
        for _, session_id, transport in idle[:excess]:
            log.info("session_evicted", session=session_id[:8], why="per-caller session cap")
            assert transport.idle_scope is not None
            transport.idle_scope.cancel()
            await manager._discard_session(session_id, transport)
        return True
