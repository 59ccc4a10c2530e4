"""Who is calling: the principal policy and audit see for a request, on any transport.

One resolver serves one `MCPServer` that may face stdio and HTTP at once (`both` mode).
The SDK hands every request its transport's request object: a Starlette `Request` on HTTP,
nothing on stdio. That, not the presence of a token, tells the two apart, since "no token"
on HTTP (auth `none`) is an anonymous remote caller, never the local operator.
"""

from __future__ import annotations

from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from starlette.requests import Request

from pvemcp.policy.principal import Principal
from pvemcp.transports.claims import groups_from_claims, token_sha256
from pvemcp.transports.mcp_app import PrincipalResolver
from pvemcp.transports.stdio import local_principal

ANONYMOUS = "anonymous"
"""The subject of HTTP callers when auth is `none` (loopback, explicitly allowed)."""

SESSION_HEADER = "mcp-session-id"


def token_principal(token: AccessToken, groups_claim: str, session: str | None) -> Principal:
    """The principal a verified token stands for: `sub` (else the client id), `iss`,
    `client_id`, scopes, groups from `groups_claim`, and the token's SHA-256 for audit."""
    claims = token.claims or {}
    issuer = claims.get("iss")
    return Principal(
        subject=token.subject or token.client_id,
        transport="http",
        client_id=token.client_id,
        issuer=str(issuer) if issuer is not None else None,
        scopes=frozenset(token.scopes),
        groups=groups_from_claims(claims, groups_claim),
        token_sha256=token_sha256(token.token),
        session=session,
    )


def http_principal(request: Request, groups_claim: str) -> Principal:
    """The caller of one HTTP request: its verified token's principal, else anonymous.

    The identity comes from the request's own ASGI scope, where the SDK's authentication
    middleware put it, so it is exactly the token this request carried.
    """
    session = request.headers.get(SESSION_HEADER)
    user = request.scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return token_principal(user.access_token, groups_claim, session)
    return Principal(subject=ANONYMOUS, transport="http", session=session)


def principal_resolver(groups_claim: str = "groups") -> PrincipalResolver:
    """A resolver for a server that may face stdio and HTTP at once."""

    def resolve(ctx: ServerRequestContext[Any, Any] | None) -> Principal:
        request = ctx.request if ctx is not None else None
        if isinstance(request, Request):
            return http_principal(request, groups_claim)
        return local_principal(ctx)

    return resolve
