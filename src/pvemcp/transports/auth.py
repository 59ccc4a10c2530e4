"""Bearer authentication for the HTTP transport: one verifier per `http.auth` mode.

The HTTP app hands the result to the SDK (`MCPServer(token_verifier=..., auth=...)`), which
takes tokens only from the `Authorization` header, answers 401 when the verifier returns
`None`, and enforces the global scopes. `on_failure(reason, token_sha256)` lets the app
count and audit every refused token without ever seeing it.
"""

from __future__ import annotations

from mcp.server.auth.provider import TokenVerifier

from pvemcp.config import HttpConfig
from pvemcp.transports.claims import groups_from_claims, token_sha256
from pvemcp.transports.jwks import JwksCache
from pvemcp.transports.oidc import FailureHook, OidcVerifier
from pvemcp.transports.static_keys import StaticKeyVerifier

__all__ = [
    "FailureHook",
    "OidcVerifier",
    "StaticKeyVerifier",
    "build_verifier",
    "groups_from_claims",
    "token_sha256",
]


def build_verifier(
    config: HttpConfig,
    *,
    resource: str,
    on_failure: FailureHook | None = None,
) -> TokenVerifier | None:
    """The verifier for `config.auth`, or `None` for `auth = "none"` (the caller checks
    that `none` is allowed on this bind).

    `resource` is this server's resource URI (the URL clients use for the MCP endpoint):
    the default audience, and the `AccessToken.resource` the SDK compares with its own.
    Raises `ConfigError` for an unusable configuration (no issuer, no static keys, a bad
    URL or CA file). Nothing is fetched here: call `verifier.jwks.prefetch()` at start.
    """
    if config.auth == "oidc":
        return OidcVerifier(
            config.oidc,
            resource=resource,
            jwks=JwksCache(config.oidc),
            on_failure=on_failure,
        )
    if config.auth == "static":
        return StaticKeyVerifier(
            config.static_keys,
            resource=resource,
            scopes=config.oidc.required_scopes,
            on_failure=on_failure,
        )
    return None
