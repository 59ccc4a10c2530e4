"""The HTTP edge: uvicorn with the limits it lacks, bound before anything else starts.

Kept out of `serve` so that a stdio-only process never imports uvicorn, Starlette or the
HTTP app (the cold start of a stdio server is paid by every local client launch).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from pvemcp.config import ConfigError, HttpConfig
from pvemcp.transports.http import check_http_config

log = structlog.get_logger(__name__)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop reading a request head that broke a limit."""


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one connection may cost before the app sees a request (`http.*` settings)."""

    max_head_bytes: int
    max_headers: int
    head_timeout: float
    max_connections: int


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks before a request reaches the app.

    httptools buffers a header of any size (one unfinished 200 MB header grew the gateway
    by 400 MB), and uvicorn times out only idle keep-alive connections, never one that was
    opened and left silent or that trickles its head. So: a request head (request line and
    headers) larger than `max_head_bytes` or with more than `max_headers` fields gets 431;
    a head not complete within `head_timeout` of the connection's opening (or of its first
    byte, for later requests on a keep-alive connection) gets 408 (or, if nothing was sent
    at all, a plain close); beyond `max_connections` open connections a new one gets 503.
    Each of these closes the connection. Memory per connection stays below the limit plus
    one read (256 KiB).
    """

    limits: ClassVar[EdgeLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    # Typed as uvicorn types it: uvloop's TCPTransport is no asyncio.Transport subclass.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # connection_lost closes it again
            log.warning("connection_refused", open_connections=len(self.connections))
            self._close_with(503, "too many connections")
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._close_with(431, f"request head larger than {self.limits.max_head_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} header fields")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when a limit stopped the parser."""
        if self._refusal is not None:
            self._close_with(*self._refusal)
        else:
            super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still running; the next head waits for it
        if self._head_bytes:
            self._close_with(
                408, f"request head not complete within {self.limits.head_timeout:g} s"
            )
        else:
            self.transport.close()

    def _close_with(self, status: int, message: str) -> None:
        """Answer `status` with `message` (plain text) and close the connection."""
        self._refusal = (status, message)
        if self.transport.is_closing():
            return
        body = message.encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()


def edge_protocol(config: HttpConfig) -> type[GuardedHttpTools]:
    """The connection protocol with `config`'s limits."""
    limits = EdgeLimits(
        max_head_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        head_timeout=config.head_timeout,
        max_connections=config.max_connections,
    )
    return type("GuardedHttpTools", (GuardedHttpTools,), {"limits": limits})


class EdgeServer(uvicorn.Server):
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


def http_server(app: ASGIApp, config: HttpConfig) -> EdgeServer:
    """uvicorn for `app` as `config` says: TLS from files, forwarded headers only from
    `trusted_proxies`, our logging."""
    trusted = list(config.trusted_proxies)
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # httptools parses HTTP/1.1 in C; our subclass adds the limits it lacks.
        http=edge_protocol(config),
        timeout_keep_alive=config.keep_alive_timeout,
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
    return EdgeServer(settings)
