"""A fake PVE API over real HTTPS on 127.0.0.1, for testing the REST backend precisely.

The fake answers with canned PVE-like responses registered per test and records every
request it receives (headers included), so a test can prove what did or did not reach the
server. It is the edge of the unit; the full simulator is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pvemcp.simulator.certs import SelfSigned

TOKEN_ID = "pvemcp@pve!gateway"
SECRET = "5b0c6a1e-8d2f-4c3b-9a7e-0f1d2e3c4b5a"

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Recorded:
    """One request as the fake server saw it."""

    method: str
    path: str
    """Decoded, relative to /api2/json."""
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_port: int | None


def pve_json(data: Any = None, *, status: int = 200, **extra: Any) -> Response:
    """A PVE-style JSON answer: `{"data": ...}` plus `message`, `errors`, `total`."""
    return JSONResponse({"data": data, **extra}, status_code=status)


class FakePve:
    """A starlette app under uvicorn, in a thread with its own event loop."""

    def __init__(self, certs: SelfSigned, cert_dir: Path) -> None:
        self.certs = certs
        self._certfile = cert_dir / "cert.pem"
        self._keyfile = cert_dir / "key.pem"
        self._certfile.write_bytes(certs.cert_pem)
        self._keyfile.write_bytes(certs.key_pem)
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Recorded] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route(
                    "/api2/json/{path:path}",
                    self._dispatch,
                    methods=["GET", "POST", "PUT", "DELETE"],
                )
            ]
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, handler: Handler | Response) -> None:
        """Answer `method path` (relative to /api2/json) with a handler or a fixed response."""
        if isinstance(handler, Response):
            fixed = handler

            async def answer(_: Request) -> Response:
                return fixed

            self.routes[(method, path)] = answer
        else:
            self.routes[(method, path)] = handler

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()

    async def _dispatch(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.requests.append(
            Recorded(
                method=request.method,
                path=path,
                raw_path=request.scope["raw_path"].decode("ascii"),
                query=request.scope["query_string"].decode("ascii"),
                headers={key.lower(): value for key, value in request.headers.items()},
                body=await request.body(),
                client_port=request.client.port if request.client else None,
            )
        )
        handler = self.routes.get((request.method, path))
        if handler is None:
            return pve_json(status=501, message=f"Method '{request.method} {path}' not implemented")
        return await handler(request)

    def start(self, sock: socket.socket) -> None:
        """Serve on `sock` (bound, maybe not yet listening) and wait until it answers."""
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(self._certfile),
            ssl_keyfile=str(self._keyfile),
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake PVE server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port, not listening yet (connections are refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
