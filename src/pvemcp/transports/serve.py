"""Running the transports: stdio, HTTP, or both in one process over one gateway.

`both` runs one `MCPServer` on stdio and under uvicorn in one task group: stdin EOF stops
HTTP too (so no orphan keeps the port once its client is gone), and SIGINT/SIGTERM stop
both. Signals are ours, not uvicorn's: uvicorn re-raises a caught signal after its
shutdown, which would kill the process before the gateway closes its audit log.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import anyio
import structlog
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from pvemcp.config import ConfigError, HttpConfig
from pvemcp.gateway.invoke import Gateway
from pvemcp.transports.http import build_http, check_http_config
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.principals import principal_resolver
from pvemcp.transports.stdio import run_stdio

Mode = Literal["stdio", "http", "both"]
MODES: tuple[Mode, ...] = ("stdio", "http", "both")

log = structlog.get_logger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers (see the module docstring)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(config: HttpConfig) -> tuple[socket.socket, HttpConfig]:
    """Bind the HTTP port before anything else starts, so a busy port is a clear error and
    port 0 is resolved: returns the socket and `config` with the real port."""
    check_http_config(config)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # An explicit IPPROTO_TCP: asyncio disables Nagle only on sockets that say so; without
    # it every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    return sock, config.model_copy(update={"port": sock.getsockname()[1]})


def http_server(app: ASGIApp, config: HttpConfig) -> _Uvicorn:
    """uvicorn for `app` as `config` says: TLS from files, forwarded headers only from
    `trusted_proxies`, our logging."""
    trusted = list(config.trusted_proxies)
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # httptools parses HTTP/1.1 in C where it is installed; h11 otherwise.
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,  # our structlog set-up already owns the handlers
        access_log=False,
        server_header=False,
        lifespan="on",
        # Forwarded headers only from the configured proxies; without any, none at all
        # (uvicorn's default would believe 127.0.0.1).
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        ssl_certfile=config.tls_cert_file,
        ssl_keyfile=config.tls_key_file,
        timeout_graceful_shutdown=5,
    )
    try:
        settings.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load http.tls_cert_file / tls_key_file: {exc}") from None
    return _Uvicorn(settings)


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
    if listener is None:
        listener, http = listen(http)
    frontend = build_http(gateway, http)
    server = http_server(frontend.app, http)
    log.info("http_listening", url=frontend.resource, auth=http.auth, mode=mode)
    await _run(frontend.mcp if mode == "both" else None, (server, listener))


async def _run(stdio: MCPServer[Any] | None, http: tuple[_Uvicorn, socket.socket] | None) -> None:
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
