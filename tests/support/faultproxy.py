"""A fault-injecting HTTPS proxy between the gateway and the simulator, for tests.

The gateway talks to the proxy exactly as to a PVE node: TLS with the proxy's own
throwaway certificate, pinned by fingerprint. The proxy forwards every request to the
simulator over HTTPS, unless a fault injected at run time matches the request's method and
path; then it answers (or fails to answer) the way a broken node, a proxy in front of it
or a network would: an error status with a PVE or HTML body, an odd body, a hang, a slow
trickle, a reset or a clean close in the middle of the body, a huge body, a redirect, or
the real answer altered. It runs in the test's own event loop.

`plain_http_server` is the other half of "wrong port": a plain HTTP server that answers a
TLS client the way any HTTP server does, with a 400 in clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx2

from pvemcp.simulator.certs import SelfSigned, make_self_signed

_API = "/api2/json"
_CHUNK = b"x" * 65536


@dataclass(frozen=True)
class Respond:
    """Answer with this status and body instead of forwarding (PVE errors, HTML pages,
    non-JSON, `{"data": null}`, wrong types, redirects with a `location` header)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json;charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, **kwargs: Any) -> Respond:
        return cls(status, json.dumps(payload).encode(), **kwargs)


@dataclass(frozen=True)
class Hang:
    """Read the request, then never answer (until the client gives up)."""


@dataclass(frozen=True)
class Trickle:
    """Send a valid answer one byte every `interval` seconds."""

    body: bytes = b'{"data":null}'
    interval: float = 0.5


@dataclass(frozen=True)
class Cut:
    """Forward, then send the head and `keep` bytes of the real body and drop the
    connection: with a TCP reset (`reset`) or a clean close (a truncated body)."""

    keep: int = 10
    reset: bool = True


@dataclass(frozen=True)
class Huge:
    """A `{"data": "xxx..."}` body of about `size` bytes, made as it is sent; chunked
    (no declared length) unless `declare_length`. Bytes sent land in `FaultProxy.sent`."""

    size: int
    status: int = 200
    declare_length: bool = False


@dataclass(frozen=True)
class Mutate:
    """Forward, then replace the real JSON answer with `change(answer)`."""

    change: Callable[[Any], Any]


Action = Respond | Hang | Trickle | Cut | Huge | Mutate


@dataclass
class Fault:
    """`action` for requests whose method and API path (after /api2/json, without the
    query) match; `times` left (None = every time)."""

    method: str
    path: re.Pattern[str]
    action: Action
    times: int | None = None
    hits: int = 0


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0].removeprefix(_API)


@dataclass
class FaultProxy:
    """The proxy; use `async with FaultProxy(upstream_url, upstream_cert) as proxy`."""

    upstream: str
    upstream_cert: bytes
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request received, faulted or not."""
    sent: list[int] = field(default_factory=list)
    """Body bytes written for each `Huge` answer, in order of completion."""
    certs: SelfSigned = field(default_factory=make_self_signed)
    port: int = 0
    _server: asyncio.Server | None = None
    _client: httpx2.AsyncClient | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def fingerprint(self) -> str:
        return self.certs.fingerprint

    def inject(self, method: str, path: str, action: Action, *, times: int | None = None) -> Fault:
        """Apply `action` to `method` requests whose path fully matches the regex `path`;
        the newest matching fault wins."""
        fault = Fault(method, re.compile(path), action, times)
        self.faults.insert(0, fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    async def __aenter__(self) -> FaultProxy:
        upstream_tls = ssl.create_default_context(cadata=self.upstream_cert.decode())
        self._client = httpx2.AsyncClient(
            base_url=self.upstream, verify=upstream_tls, trust_env=False, timeout=30
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self.certs.cert_pem)
            key.write_bytes(self.certs.key_pem)
            context.load_cert_chain(cert, key)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._client is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._client.aclose()

    def _fault_for(self, request: _Request) -> Action | None:
        for fault in self.faults:
            if fault.method == request.method and fault.path.fullmatch(request.path):
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                fault.hits += 1
                return fault.action
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while (request := await _read_request(reader)) is not None:
                self.seen.append((request.method, request.path))
                if not await self._answer(request, self._fault_for(request), writer):
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only `__aexit__` cancels a connection (a hang, a trickle): ending quietly
            # keeps asyncio's server from logging the cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    async def _answer(
        self, request: _Request, action: Action | None, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must end."""
        if isinstance(action, Respond):
            headers = [("Content-Type", action.content_type), *action.headers]
            await _write(writer, action.status, headers, action.body, action.reason)
            return True
        if isinstance(action, Hang):
            await asyncio.sleep(3600)
            return False
        if isinstance(action, Trickle):
            head = [("Content-Type", "application/json"), ("Content-Length", str(len(action.body)))]
            writer.write(_head(200, head))
            for byte in action.body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(action.interval)
            return True
        if isinstance(action, Huge):
            await self._huge(action, writer)
            return False
        status, headers, body = await self._forward(request)
        if isinstance(action, Mutate):
            body = json.dumps(action.change(json.loads(body))).encode()
        if isinstance(action, Cut):
            writer.write(_head(status, [*headers, ("Content-Length", str(len(body)))]))
            writer.write(body[: action.keep])
            await writer.drain()
            if action.reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            return False
        await _write(writer, status, headers, body)
        return True

    async def _huge(self, action: Huge, writer: asyncio.StreamWriter) -> None:
        prefix, suffix = b'{"data":"', b'"}'
        count = max(0, action.size - len(prefix) - len(suffix))
        headers = [("Content-Type", "application/json")]
        if action.declare_length:
            headers.append(("Content-Length", str(len(prefix) + count + len(suffix))))
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        writer.write(_head(action.status, headers))
        sent = 0
        try:
            for piece in _pieces(prefix, count, suffix):
                writer.write(piece if action.declare_length else _chunk(piece))
                await writer.drain()
                sent += len(piece)
            if not action.declare_length:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        finally:
            self.sent.append(sent)

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        keep = {"authorization", "content-type", "accept"}
        response = await self._client.request(
            request.method,
            _API + request.target.removeprefix(_API),
            headers=[(k, v) for k, v in request.headers if k.lower() in keep],
            content=request.body,
        )
        headers = [
            (k, v) for k, v in response.headers.items() if k.lower() in {"content-type", "date"}
        ]
        return response.status_code, headers, response.content


def _pieces(prefix: bytes, count: int, suffix: bytes) -> list[bytes]:
    """The body in pieces that share one 64 KiB buffer, so a huge body costs no memory."""
    full, rest = divmod(count, len(_CHUNK))
    return [prefix, *([_CHUNK] * full), _CHUNK[:rest], suffix]


def _chunk(piece: bytes) -> bytes:
    return f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if piece else b""


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    method, target, _ = line.split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (f.partition(":") for f in fields)]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = await reader.readexactly(length) if length else b""
    return _Request(method, target, headers, body)


def _head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    phrase = reason if reason is not None else HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _write(
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    reason: str | None = None,
) -> None:
    writer.write(_head(status, [*headers, ("Content-Length", str(len(body)))], reason) + body)
    await writer.drain()


@contextlib.asynccontextmanager
async def plain_http_server() -> AsyncIterator[str]:
    """A plain HTTP server on 127.0.0.1 that answers anything, a TLS hello included, with
    `400 Bad Request` in clear text; yields its `https://` URL (the wrong scheme)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(1024)
            body = b"<html><body><h1>400 Bad Request</h1></body></html>"
            await _write(writer, 400, [("Content-Type", "text/html")], body)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
