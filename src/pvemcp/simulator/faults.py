"""Fault injection inside the simulator: answers a broken node, a proxy or a network give.

A fault matches requests by method (None = any) and API path (a regex that must match
the whole path after `/api2/json`, without the query; `.*` = every request) and replaces
the answer with one `Action`, for the next `times` matching requests or until cleared.
Faults are set and cleared at run time from any thread through `SimulatorHandle.faults`,
or over HTTP at `ADMIN_PATH` when the simulator runs with `--faults` (off by default: a
demo cluster must not be breakable by whoever holds its token unless asked for).

The vocabulary is the one of the test proxy (tests/support/faultproxy.py), which sits
in front of a simulator and also alters real answers; here the faults live in the
simulator itself, so any client (`pvemcp simulate --faults`, another process) meets them
without a proxy. Clearing a fault also ends the hangs and trickles it holds open, so
a test never waits on a connection it has finished with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http11 import REASON_HEADER, ReasonPhraseH11Protocol, reason_header_value

API_PREFIX = "/api2/json"
ADMIN_PATH = "/pvemcp-simulator/faults"
"""GET lists the faults, POST adds one (a JSON object, see `parse`), DELETE clears all.
Outside `/api2/json`, so no PVE path can collide with it."""
CONNECTION_KEY = "pvemcp.connection"
"""The ASGI scope extension where `FaultH11Protocol` puts the request's `Connection`."""
_CHUNK = b"x" * 65536
_POLL = 0.05
"""Seconds between checks of a held connection (cleared? client gone?)."""


@dataclass(frozen=True)
class Respond:
    """Answer with this status and body instead of the real answer."""

    status: int
    body: bytes = b""
    content_type: str = "application/json;charset=UTF-8"
    reason: str | None = None
    """The status line's phrase (PVE puts its error's first line there)."""

    @classmethod
    def pve_error(cls, status: int = 500, message: str = "internal error") -> Respond:
        """An error as pveproxy sends it: `{"data":null,"message":...}`, message as reason."""
        body = json.dumps({"data": None, "message": message + "\n"}).encode()
        return cls(status, body, reason=message)

    @classmethod
    def html(cls, status: int = 502) -> Respond:
        """An error page, as a reverse proxy in front of the node sends it."""
        page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
        return cls(status, page.encode(), "text/html")

    @classmethod
    def not_json(cls) -> Respond:
        return cls(200, b"this is not JSON", "text/plain")


@dataclass(frozen=True)
class Hang:
    """Read the request, then never answer (until the client gives up or it is cleared)."""


@dataclass(frozen=True)
class Trickle:
    """Send the answer one byte every `interval` seconds: `body`, or the real one (None)."""

    body: bytes | None = None
    interval: float = 0.5


@dataclass(frozen=True)
class Cut:
    """Send the real answer's head and its first `keep` body bytes, then drop the
    connection: a TCP reset (`reset`) or a clean close (a truncated body)."""

    keep: int = 10
    reset: bool = True


@dataclass(frozen=True)
class Huge:
    """A 200 `{"data":"xxx..."}` of about `size` bytes, made as it is sent (64 KiB of
    memory whatever the size); chunked unless `declare_length`."""

    size: int = 50_000_000
    declare_length: bool = False


Action = Respond | Hang | Trickle | Cut | Huge


@dataclass
class Fault:
    """`action` for matching requests; `times` left to serve (None = until cleared)."""

    path: re.Pattern[str]
    action: Action
    method: str | None = None
    times: int | None = None
    hits: int = 0
    active: bool = True
    """False once cleared: the hangs and trickles it holds end."""

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path.pattern,
            "action": type(self.action).__name__.lower(),
            "times": self.times,
            "hits": self.hits,
        }


class Faults:
    """The simulator's current faults; safe to change from any thread while it serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def inject(
        self,
        action: Action,
        *,
        path: str = ".*",
        method: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Apply `action` to requests matching `method` (None = any) and the regex `path`
        (default: every request), for `times` requests or until cleared; the newest
        matching fault wins."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: until cleared)")
        fault = Fault(re.compile(path), action, method.upper() if method else None, times)
        with self._lock:
            self._faults.insert(0, fault)
        return fault

    def clear(self) -> None:
        """Remove every fault and release the connections they hold."""
        with self._lock:
            for fault in self._faults:
                fault.active = False
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, counting it as served (a used-up one is dropped)."""
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method) or not fault.path.fullmatch(path):
                    continue
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    self._faults.remove(fault)
                return fault
        return None


KINDS: dict[str, Callable[[Mapping[str, Any]], Action]] = {
    "pve_error": lambda p: Respond.pve_error(
        int(p.get("status", 500)), str(p.get("message", "internal error"))
    ),
    "html_error": lambda p: Respond.html(int(p.get("status", 502))),
    "not_json": lambda p: Respond.not_json(),
    "hang": lambda p: Hang(),
    "trickle": lambda p: Trickle(interval=float(p.get("interval", 0.5))),
    "reset": lambda p: Cut(int(p.get("keep", 10)), reset=True),
    "truncate": lambda p: Cut(int(p.get("keep", 10)), reset=False),
    "huge": lambda p: Huge(int(p.get("size", 50_000_000)), bool(p.get("declare_length", False))),
}
"""The fault kinds by name, as the admin endpoint takes them, with their parameters."""


def parse(spec: Mapping[str, Any], faults: Faults) -> Fault:
    """Inject the fault an admin request describes: `{"kind": "hang", "path": "/nodes",
    "method": "GET", "times": 1}` plus the kind's parameters (`status`, `message`,
    `interval`, `keep`, `size`, `declare_length`). ValueError names the bad field."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)}")
    try:
        action = KINDS[kind](spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameters of {kind}: {exc}") from exc
    path, method, times = spec.get("path", ".*"), spec.get("method"), spec.get("times")
    if not isinstance(path, str):
        raise ValueError("path: a regular expression (string)")
    if method is not None and not isinstance(method, str):
        raise ValueError("method: an HTTP method or null")
    if times is not None and (not isinstance(times, int) or isinstance(times, bool)):
        raise ValueError("times: an integer or null")
    try:
        return faults.inject(action, path=path, method=method, times=times)
    except re.error as exc:
        raise ValueError(f"path: {exc}") from exc


def admin_route(faults: Faults, allowed: Callable[[str | None], bool]) -> Route:
    """The admin endpoint; `allowed(authorization header)` says whether a caller may use it."""

    async def endpoint(request: Request) -> Response:
        if not allowed(request.headers.get("authorization")):
            return Response(b"", 401)
        if request.method == "POST":
            try:
                spec = json.loads(await request.body())
                if not isinstance(spec, dict):
                    raise ValueError("the body must be a JSON object")
                fault = parse(spec, faults)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            return JSONResponse(fault.describe(), 201)
        if request.method == "DELETE":
            faults.clear()
        return JSONResponse([fault.describe() for fault in faults.list()])

    return Route(ADMIN_PATH, endpoint, methods=["GET", "POST", "DELETE"])


@dataclass
class Connection:
    """The TCP connection a request came on, which ASGI does not expose: a reset needs
    its socket, and a held answer needs to know when the client has gone."""

    transport: asyncio.Transport
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the connection is closed, by either side."""


class FaultH11Protocol(ReasonPhraseH11Protocol):
    """The simulator's HTTP/1.1 protocol, which hands each request its `Connection`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._fault_connection = Connection(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fault_connection.gone.set()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # The scope of a new request is built above; its task has not started yet.
        if self.scope is not None:
            extensions = self.scope.setdefault("extensions", {})
            extensions[CONNECTION_KEY] = {"connection": self._fault_connection}


class FaultInjector:
    """ASGI middleware: a request a fault matches gets the fault's answer."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        fault = self.faults.take(scope["method"], path[len(API_PREFIX) :])
        if fault is None:
            await self.app(scope, receive, send)
            return
        connection: Connection = scope["extensions"][CONNECTION_KEY]["connection"]
        await _Answer(fault, connection, receive, send).run(lambda s: self.app(scope, receive, s))


_Inner = Callable[[Send], Awaitable[None]]
"""The simulator's app on this request, with a `send` of our choosing."""


@dataclass
class _Answer:
    """One faulted answer."""

    fault: Fault
    connection: Connection
    receive: Receive
    send: Send

    def live(self) -> bool:
        return self.fault.active and not self.connection.gone.is_set()

    async def run(self, app: _Inner) -> None:
        action = self.fault.action
        if isinstance(action, Respond):
            headers = [(b"content-type", action.content_type.encode())]
            if action.reason is not None:
                phrase = reason_header_value(action.reason).encode()
                headers.append((REASON_HEADER.encode(), phrase))
            await self._start(action.status, headers)
            await self.send({"type": "http.response.body", "body": action.body})
            return
        real = None
        if isinstance(action, Cut) or (isinstance(action, Trickle) and action.body is None):
            real = await _real_answer(app)
        # Reading the rest of the request (or its absence) lets the server notice a
        # client that goes away while the answer is held.
        watcher = asyncio.ensure_future(self._until_disconnect())
        try:
            if isinstance(action, Hang):
                # Polled: `clear` runs in another thread, and the client may go meanwhile.
                while self.live():  # noqa: ASYNC110
                    await asyncio.sleep(_POLL)
            elif isinstance(action, Trickle):
                status, body = real or (200, action.body or b"")
                if await self._trickle(status, body, action.interval):
                    return
            elif isinstance(action, Cut):
                assert real is not None
                await self._cut(action, *real)
            elif await self._huge(action):
                return
            await self._drop()
        finally:
            watcher.cancel()

    async def _until_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _body(self, piece: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": piece, "more_body": more})

    async def _start_json(self, status: int, length: int | None) -> None:
        headers = [(b"content-type", b"application/json")]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await self._start(status, headers)

    async def _trickle(self, status: int, body: bytes, interval: float) -> bool:
        """True when the whole answer went out."""
        await self._start_json(status, len(body))
        for index in range(len(body)):
            if not self.live():
                return False
            await self._body(body[index : index + 1])
            await asyncio.sleep(interval)
        await self._body(b"", more=False)
        return True

    async def _cut(self, action: Cut, status: int, body: bytes) -> None:
        await self._start_json(status, len(body))
        await self._body(body[: action.keep])
        await asyncio.sleep(_POLL)  # let the head and the first bytes leave before the cut
        if action.reset:
            sock = self.connection.transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER on, 0 s: closing the socket sends a RST instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        else:
            self.connection.transport.close()  # a FIN after what was written

    async def _huge(self, action: Huge) -> bool:
        """True when the whole answer went out."""
        prefix, suffix = b'{"data":"', b'"}'
        count = max(0, action.size - len(prefix) - len(suffix))
        declared = len(prefix) + count + len(suffix) if action.declare_length else None
        await self._start_json(200, declared)
        full, rest = divmod(count, len(_CHUNK))
        for piece in [prefix, *([_CHUNK] * full), _CHUNK[:rest]]:
            if not self.live():
                return False
            await self._body(piece)
        await self._body(suffix, more=False)
        return True

    async def _drop(self) -> None:
        """End the connection (a clean close already under way is left to finish), then
        wait until the server has seen it go, so it does not log an unfinished answer as
        an application error."""
        if not self.connection.transport.is_closing():
            self.connection.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.connection.gone.wait()


async def _real_answer(app: _Inner) -> tuple[int, bytes]:
    """The status and body the simulator itself gives this request."""
    messages: list[Message] = []

    async def capture(message: Message) -> None:
        messages.append(message)

    await app(capture)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(
        m.get("body", b"") for m in messages if m["type"] == "http.response.body"
    )
