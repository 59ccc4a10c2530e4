"""The streamable-HTTP face of the gateway: a Starlette app for uvicorn.

Routes: MCP at `http.path` (the SDK's streamable-HTTP app, stateful unless
`http.stateless`), `/healthz`, `/readyz` and `/metrics` outside authentication, and the RFC
9728 metadata at `/.well-known/oauth-protected-resource` (plus the path-suffixed form the
SDK serves), and with authentication and an approval store the approval API under
`/approvals` (`approvals_http.py`). Around it the hardening middlewares (`hardening.py`)
run before any MCP or auth code. The app is built around one `MCPServer`, which `both`
mode also serves on stdio.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import cors_middleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import RequestBodyLimitMiddleware, TransportSecuritySettings
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from pvemcp.config import ConfigError, HttpConfig, is_loopback_host
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditUnavailable
from pvemcp.policy.tiers import Tier
from pvemcp.transports.approvals_http import approval_routes
from pvemcp.transports.approvals_page import page_routes
from pvemcp.transports.auth import OidcVerifier, build_verifier, token_sha256
from pvemcp.transports.hardening import (
    AuthChallenges,
    AuthFailure,
    FailureDigest,
    FailureLimit,
    HostOriginGuard,
    RateLimit,
    RequestTimeout,
    SessionQuota,
    report_auth_failure,
)
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.metrics import CONTENT_TYPE, Metrics
from pvemcp.transports.principals import principal_resolver
from pvemcp.transports.response_mode import ResponseModeChooser, install_choosing_transport

log = structlog.get_logger(__name__)

INFRASTRUCTURE = ("/healthz", "/readyz", "/metrics")
"""Called by load balancers, kubelets and Prometheus by pod IP: no auth, no rate limit, no
Host check (they hold nothing a rebinding page could not read from the port directly)."""
Endpoint = Callable[[Request], Awaitable[Response]]
METADATA_PATH = "/.well-known/oauth-protected-resource"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def public_url(config: HttpConfig) -> str:
    """The MCP endpoint's URL as clients use it: the OAuth resource URI (no trailing slash)."""
    if config.public_url is not None:
        return config.public_url.rstrip("/")
    scheme = "https" if config.tls_cert_file is not None else "http"
    return f"{scheme}://{_bracketed(config.host)}:{config.port}{config.path}"


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known prefix goes between the host and the resource's path."""
    parts = urllib.parse.urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path.rstrip('/')}"


def check_http_config(config: HttpConfig) -> None:
    """Refuse the set-ups that would expose the gateway: raises `ConfigError` with the fix."""
    loopback = is_loopback_host(config.host)
    if not loopback and config.auth != "oidc":
        raise ConfigError(
            f"http.host {config.host!r} is not a loopback address, so http.auth must be "
            f'"oidc" (it is "{config.auth}"; static keys and no auth are for 127.0.0.1 only)'
        )
    if config.auth == "none" and not config.allow_unauthenticated:
        raise ConfigError(
            'http.auth = "none" lets anyone who can reach the port call tools as '
            '"anonymous"; set http.allow_unauthenticated = true to confirm (loopback binds '
            'only), or use auth = "static" or "oidc"'
        )
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        raise ConfigError("http.tls_cert_file and http.tls_key_file go together: set both")
    if config.public_url is None and config.host in ("0.0.0.0", "::"):  # noqa: S104
        raise ConfigError(
            f"http.host {config.host!r} listens on every interface: set http.public_url to "
            "the URL clients use (it is the OAuth resource URI tokens are issued for)"
        )


def transport_security(config: HttpConfig, resource: str) -> TransportSecuritySettings:
    """Host and Origin allowlists, always explicit (CVE-2025-66416: never left to defaults).

    Defaults: the bind address (with `localhost`/`127.0.0.1`/`[::1]` on loopback) with and
    without the port, and the public URL's host; origins are the same hosts over the
    public URL's scheme. Requests without an Origin (every non-browser client) pass.
    """
    public = urllib.parse.urlsplit(resource)
    names = {_bracketed(config.host)}
    if is_loopback_host(config.host):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    hosts = list(config.allowed_hosts)
    if not hosts:
        for name in sorted(names):
            hosts += [name, f"{name}:{config.port}"]
        hosts.append(public.netloc)
    origins = list(config.allowed_origins)
    if not origins:
        origins = [f"{public.scheme}://{name}:{config.port}" for name in sorted(names)]
        origins.append(f"{public.scheme}://{public.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


class Readiness:
    """`/readyz`: every cluster has credentials and answers `GET /version`, and with OIDC
    the provider's signing keys are loaded (missing keys are refetched here, within the
    JWKS cooldown, so a provider that comes back makes the replica ready on its own).

    Probe results are cached for `ttl` seconds and one round runs at a time, so a busy
    prober never turns into load on Proxmox. The answer names only states and error codes:
    the endpoint is unauthenticated, so no URL or message from a failure is shown.
    """

    def __init__(
        self,
        gateway: Gateway,
        verifier: TokenVerifier | None,
        *,
        ttl: float = 5.0,
        timeout: float = 3.0,
    ) -> None:
        self._gateway = gateway
        self._verifier = verifier
        self._ttl = ttl
        self._timeout = timeout
        self._checked: dict[str, tuple[float, str | None]] = {}
        self._lock = anyio.Lock()

    async def report(self) -> tuple[bool, dict[str, Any]]:
        clusters = self._gateway.clusters
        loaded = {name: clusters.ready(name) for name in clusters.names}
        async with self._lock:
            now = time.monotonic()
            due = [
                name
                for name, ready in loaded.items()
                if ready and now - self._checked.get(name, (-math.inf, None))[0] > self._ttl
            ]
            async with anyio.create_task_group() as group:
                for name in due:
                    group.start_soon(self._probe, name)
        entries: dict[str, dict[str, str]] = {}
        for name, ready in loaded.items():
            if ready:
                error = self._checked[name][1]
                entries[name] = {"credentials": "loaded", "proxmox": error or "reachable"}
            else:
                entries[name] = {"credentials": "unavailable"}
        all_ready = all(entry.get("proxmox") == "reachable" for entry in entries.values())
        body: dict[str, Any] = {"clusters": entries}
        if isinstance(self._verifier, OidcVerifier):
            keys_ready = False
            with anyio.move_on_after(self._timeout):
                keys_ready = await self._verifier.jwks.recheck()
            body["oidc_keys"] = "loaded" if keys_ready else "unavailable"
            all_ready = all_ready and keys_ready
        body["ready"] = all_ready
        return all_ready, body

    async def _probe(self, name: str) -> None:
        error: str | None = None
        try:
            with anyio.fail_after(self._timeout):
                await self._gateway.clusters.backend(name).call("GET", "/version")
        except TimeoutError:
            error = "timeout"
        except Exception as exc:  # a ProxmoxError (or worse): not ready, say which
            error = str(getattr(exc, "code", "error"))
            log.warning("readiness_probe_failed", cluster=name, code=error, error=str(exc))
        self._checked[name] = (time.monotonic(), error)


@dataclass(frozen=True, slots=True)
class HttpFrontend:
    """The HTTP app and the one MCP server behind it (which `both` mode also runs on stdio)."""

    mcp: MCPServer[Any]
    app: ASGIApp
    resource: str


def build_http(gateway: Gateway, config: HttpConfig) -> HttpFrontend:
    """Assemble the HTTP app for `config` (checked with `check_http_config` first).

    With the gateway's approval store and an authenticating `config.auth`, the approval
    API (`approvals_http.py`) is served under `/approvals`, and its web page at
    `/approvals/ui` (`approvals_page.py`); without auth neither is served at all, since an
    anonymous caller can approve nothing.
    """
    check_http_config(config)
    resource = public_url(config)
    metrics = Metrics(gateway.clusters.read_caches, gateway.audit.write_failures)
    verifier = build_verifier(config, resource=resource, on_failure=report_auth_failure)
    scopes = list(config.oidc.required_scopes)
    auth = _auth_settings(config, resource) if verifier is not None else None
    mcp = build_mcp_server(
        gateway,
        principal_resolver(config.oidc.groups_claim),
        observer=metrics.tool_call,
        token_verifier=verifier,
        auth=auth,
    )
    security = transport_security(config, resource)
    mcp_app: ASGIApp = mcp.streamable_http_app(
        streamable_http_path=config.path,
        stateless_http=config.stateless,
        json_response=config.response_mode == "json",
        max_request_body_size=config.max_body_bytes,
        session_idle_timeout=config.session_idle_timeout,
        max_sessions=config.max_sessions,
        transport_security=security,
        host=config.host,
    )
    if not config.stateless:
        manager = mcp.session_manager
        manager.asgi_app = SessionQuota(manager, config.max_sessions_per_principal)  # type: ignore[assignment]
    if config.response_mode == "auto":
        install_choosing_transport()
        quiet = [spec.name for spec in gateway.specs() if spec.tier is Tier.READ]
        mcp_app = ResponseModeChooser(mcp_app, quiet)
    readiness = Readiness(gateway, verifier)
    digest = _failure_digest(gateway)
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz(readiness), methods=["GET"]),
        Route("/metrics", _metrics(metrics), methods=["GET"]),
    ]
    if auth is not None:
        routes.append(_root_metadata_route(auth))
    if gateway.approvals is not None and verifier is not None:
        routes += page_routes()  # first: the API's /approvals/{path} would take them
        routes += approval_routes(
            gateway.approvals,
            verifier,
            resource=resource,
            required_scopes=scopes,
            metadata_url=metadata_url(resource),
            groups_claim=config.oidc.groups_claim,
        )
    routes.append(Mount("/", app=mcp_app))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app's own lifespan never runs: start the session manager here, once.
        if isinstance(verifier, OidcVerifier):
            await verifier.jwks.prefetch()
        async with mcp.session_manager.run(), anyio.create_task_group() as group:
            group.start_soon(_flush_every_second, digest)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                digest.flush(everything=True)

    app: ASGIApp = Starlette(routes=routes, lifespan=lifespan)
    if auth is not None:
        app = AuthChallenges(
            app,
            resource_metadata_url=metadata_url(resource),
            scopes=scopes,
            on_failure=_auth_failure_reporter(metrics, digest),
            token_hash=token_sha256,
        )
    app = RequestTimeout(app, config.request_timeout)
    app = RequestBodyLimitMiddleware(app, config.max_body_bytes)
    app = RateLimit(
        app,
        per_minute=config.rate_limit_per_minute,
        burst=config.rate_limit_burst,
        exempt=INFRASTRUCTURE,
        on_limited=metrics.rate_limited,
        failures=FailureLimit(
            per_minute=config.auth_failures_per_minute,
            burst=config.auth_failures_burst,
            total_per_minute=config.auth_failures_total_per_minute,
        )
        if auth is not None
        else None,
        on_auth_limited=digest.limited,
    )
    # The RFC 9728 documents are public and fetched cross-origin by browser-based clients.
    metadata = (METADATA_PATH, METADATA_PATH + urllib.parse.urlsplit(resource).path)
    app = HostOriginGuard(app, security, exempt=(*INFRASTRUCTURE, *metadata))
    return HttpFrontend(mcp=mcp, app=app, resource=resource)


def _auth_settings(config: HttpConfig, resource: str) -> AuthSettings:
    """The SDK's resource-server settings: the issuer clients get tokens from (for static
    keys, this server itself), our resource URI, and the scopes every token needs."""
    parts = urllib.parse.urlsplit(resource)
    issuer = config.oidc.issuer if config.auth == "oidc" else None
    return AuthSettings(
        # Plain strings: the SDK keeps them as given (no trailing slash added).
        issuer_url=issuer or f"{parts.scheme}://{parts.netloc}",
        resource_server_url=resource,
        required_scopes=list(config.oidc.required_scopes) or None,
        # Both verifiers report our resource URI once they have checked the audience.
        validate_token_resource=True,
    )


def _root_metadata_route(auth: AuthSettings) -> Route:
    """The RFC 9728 document also at the bare well-known path (the SDK serves only the
    path-suffixed one); both say `resource` = the exact public URL."""
    metadata = ProtectedResourceMetadata(
        resource=auth.resource_server_url,
        authorization_servers=[auth.issuer_url],
        scopes_supported=auth.required_scopes,
    )
    handler = ProtectedResourceMetadataHandler(metadata)
    return Route(
        METADATA_PATH,
        endpoint=cors_middleware(handler.handle, ["GET", "OPTIONS"]),
        methods=["GET", "OPTIONS"],
    )


def _auth_failure_reporter(
    metrics: Metrics, digest: FailureDigest
) -> Callable[[AuthFailure], None]:
    """Each refusal is counted exactly (metrics) and logged; the audit log gets it through
    `digest`, which summarises a source's repeated failures."""

    def report(failure: AuthFailure) -> None:
        metrics.auth_failure(failure.reason)
        log.warning(
            "auth_failure",
            reason=failure.reason,
            status=failure.status,
            source_ip=failure.source_ip,
            token_sha256=failure.token_sha256,
        )
        digest.failed(failure)

    return report


def _failure_digest(gateway: Gateway) -> FailureDigest:
    """Refused authentications into the audit log: the first of a window in full, the rest
    as one summary (see `FailureDigest`). An audit outage is logged, never raised: the
    refusal stands either way."""

    def write(failure: AuthFailure) -> None:
        try:
            gateway.audit.auth_failure(
                failure.reason,
                source_ip=failure.source_ip,
                token_sha256=failure.token_sha256,
                subject=failure.subject,
                issuer=failure.issuer,
                client_id=failure.client_id,
                error_code="insufficient_scope" if failure.status == 403 else "unauthenticated",
            )
        except AuditUnavailable as exc:
            log.error("auth_failure_not_audited", error=str(exc))

    def summarise(source_ip: str, counts: Mapping[str, int], window: float) -> None:
        try:
            gateway.audit.auth_failures_summary(counts, source_ip=source_ip, window_seconds=window)
        except AuditUnavailable as exc:
            log.error("auth_failure_not_audited", error=str(exc), count=sum(counts.values()))

    return FailureDigest(write=write, summarise=summarise)


async def _flush_every_second(digest: FailureDigest) -> None:
    """Write the audit summaries of ended failure windows even when no failure follows."""
    while True:
        await anyio.sleep(1)
        digest.flush()


async def _healthz(_: Request) -> Response:
    """The process is up and serving HTTP; says nothing about Proxmox (that is /readyz)."""
    return JSONResponse({"status": "ok"})


def _readyz(readiness: Readiness) -> Endpoint:
    async def readyz(_: Request) -> Response:
        ready, body = await readiness.report()
        return JSONResponse(body, status_code=200 if ready else 503)

    return readyz


def _metrics(metrics: Metrics) -> Endpoint:
    async def exposition(_: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return exposition
