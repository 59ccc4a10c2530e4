"""Running the transports: stdio, HTTP, or both in one process over one gateway.

`both` runs one `MCPServer` on stdio and under uvicorn in one task group: stdin EOF stops
HTTP too (so no orphan keeps the port once its client is gone), and SIGINT/SIGTERM stop
both. Signals are ours, not uvicorn's: uvicorn re-raises a caught signal after its
shutdown, which would kill the process before the gateway closes its audit log.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog
from mcp.server.mcpserver import MCPServer

from pvemcp.config import HttpConfig
from pvemcp.gateway.invoke import Gateway
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.principals import principal_resolver
from pvemcp.transports.stdio import run_stdio

if TYPE_CHECKING:
    from pvemcp.transports.edge import EdgeServer

Mode = Literal["stdio", "http", "both"]
MODES: tuple[Mode, ...] = ("stdio", "http", "both")

log = structlog.get_logger(__name__)


async def serve(
    gateway: Gateway,
    mode: Mode,
    http: HttpConfig,
    listener: socket.socket | None = None,
) -> None:
    """Serve `gateway` over `mode` until stdin closes (stdio, both) or a signal arrives.

    `listener` is the socket `listen()` bound for `http` (made here when not given).
    """
    if mode == "stdio":
        await _run(build_mcp_server(gateway, principal_resolver()), None)
        return
    # The HTTP stack is imported only here: a stdio start never pays for it.
    from pvemcp.transports.edge import http_server, listen  # noqa: PLC0415
    from pvemcp.transports.http import build_http  # noqa: PLC0415

    if listener is None:
        listener, http = listen(http)
    frontend = build_http(gateway, http)
    server = http_server(frontend.app, http)
    log.info("http_listening", url=frontend.resource, auth=http.auth, mode=mode)
    await _run(frontend.mcp if mode == "both" else None, (server, listener))


async def _run(stdio: MCPServer[Any] | None, http: tuple[EdgeServer, socket.socket] | None) -> None:
    """Run stdio and/or HTTP until one ends (stdin EOF, or HTTP after a signal)."""
    server = http[0] if http is not None else None
    async with anyio.create_task_group() as group:

        def stop() -> None:
            if server is not None:
                server.should_exit = True
            else:
                group.cancel_scope.cancel()

        def force() -> None:
            if server is not None:
                server.force_exit = True
            group.cancel_scope.cancel()

        if threading.current_thread() is threading.main_thread():
            group.start_soon(_on_signals, stop, force)
        if stdio is not None:

            async def stdio_then_stop(mcp: MCPServer[Any]) -> None:
                await run_stdio(mcp)
                log.info("stdin_closed", why="the stdio client is gone; stopping")
                stop()

            group.start_soon(stdio_then_stop, stdio)
        if http is not None:
            await http[0].serve(sockets=[http[1]])
            group.cancel_scope.cancel()


async def _on_signals(stop: Callable[[], None], force: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM: stop gracefully; a second one: stop now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        first = True
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name, graceful=first)
            (stop if first else force)()
            first = False
