"""MCP over stdio: the caller is the local operator who started the process."""

from __future__ import annotations

from typing import Any

from mcp.server.context import ServerRequestContext

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal
from pvemcp.transports.mcp_app import build_mcp_server

_LOCAL = Principal.local("stdio")


def local_principal(_: ServerRequestContext[Any, Any] | None) -> Principal:
    return _LOCAL


async def serve_stdio(gateway: Gateway) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    await build_mcp_server(gateway, local_principal).run_stdio_async()
