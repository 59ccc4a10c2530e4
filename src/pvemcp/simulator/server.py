"""Running the simulator: in the current event loop, in a background thread, or as a CLI.

Always over HTTPS with a fresh self-signed certificate, like a new PVE node, so clients
exercise their real TLS path (fingerprint pinning or a CA file). The socket is bound here
rather than by uvicorn so that port 0 works and the caller learns the port before the
first request. The simulator never touches process signals unless run as the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette

from .apidoc import add_apidoc_route
from .app import create_app
from .certs import SelfSigned, make_self_signed
from .faults import ADMIN_PATH, FaultH11Protocol, Faults
from .seed import Scale
from .state import Clock, ClusterState

DEFAULT_TOKEN_ID = "root@pam!pvemcp"  # noqa: S105 - a token id names a user, it is no secret
STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class SimulatorOptions:
    """How to run the simulator; the defaults suit tests (any free loopback port)."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    time_scale: float = 1.0
    """Multiplier on realistic task durations; 0 finishes tasks at once."""
    seed: int = 1
    apidoc: Path | None = None
    """A schema file (the JSON array of PVE's API tree) to serve as
    `/pve-docs/api-viewer/apidoc.js`; None answers as a node without pve-docs (`apidoc.py`)."""
    token_id: str = DEFAULT_TOKEN_ID
    token_secret: str | None = None
    """None generates a random UUID, like PVE when it creates a token."""
    auth_fail_delay: float = 0.0
    """Seconds to wait before a 401 (real PVE waits about 3)."""
    clock: Clock | None = None
    """Seconds since the epoch; inject one to make task timing deterministic."""
    ceph: bool = False
    """Give the demo cluster Ceph (monitors, OSDs, pools, a CephFS and an RBD storage)."""
    scale: Scale | None = None
    """Grow the demo cluster to this many guests and nodes (`seed.Scale`); None: the
    demo's 14 guests on 3 nodes."""
    fault_admin: bool = False
    """Serve the fault admin endpoint (`faults.ADMIN_PATH`) to the holder of the token;
    `SimulatorHandle.faults` works either way."""


@dataclass(frozen=True)
class SimulatorHandle:
    """A started simulator: where it listens, how to trust and authenticate, its state."""

    url: str
    """`https://HOST:PORT`, without `/api2/json`."""
    port: int
    fingerprint: str
    """SHA-256 of the certificate, lower-case hex without separators."""
    fingerprint_colons: str
    """The same as PVE shows it: `AA:BB:...`."""
    cert_pem: bytes
    token_id: str
    token_secret: str
    state: ClusterState
    faults: Faults
    """Faults to inject into its answers, settable from any thread (`faults.py`)."""
    _http: _Http = field(repr=False)

    async def stop_http(self) -> None:
        """Stop serving HTTP (connections dropped, the port closed), keeping the state,
        the certificate and the token: a node whose pveproxy restarts. Callable from any
        event loop."""
        await self._http.call(self._http.drop)

    async def start_http(self) -> None:
        """Serve again on the same port after `stop_http`."""
        await self._http.call(self._http.start)

    @property
    def authorization(self) -> str:
        """The `Authorization` header value for the simulator's token."""
        return f"PVEAPIToken={self.token_id}={self.token_secret}"

    def environment(self) -> dict[str, str]:
        """The `PVEMCP_*` settings that point the gateway at this simulator."""
        return {
            "PVEMCP_API_URL": self.url,
            "PVEMCP_TOKEN_ID": self.token_id,
            "PVEMCP_TOKEN_SECRET": self.token_secret,
            "PVEMCP_TLS": "fingerprint",
            "PVEMCP_FINGERPRINT": self.fingerprint_colons,
        }


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the embedding program owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")  # noqa: S104 - recognising, not binding


def _url_host(host: str) -> str:
    if _is_wildcard(host):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _cert_hosts(host: str) -> tuple[str, ...]:
    hosts = [host if not _is_wildcard(host) else socket.gethostname(), "localhost", "127.0.0.1"]
    return tuple(dict.fromkeys(hosts))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP: asyncio only disables Nagle on sockets that say so, and
    # with Nagle on, every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _write_private(directory: str, name: str, data: bytes) -> str:
    path = Path(directory) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def _uvicorn_config(app: Starlette, tmp: str, cert: SelfSigned) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        ssl_certfile=_write_private(tmp, "cert.pem", cert.cert_pem),
        ssl_keyfile=_write_private(tmp, "key.pem", cert.key_pem),
        log_config=None,
        log_level="warning",
        lifespan="off",
        access_log=False,
        http=FaultH11Protocol,
        ws="none",
        server_header=False,  # the app sends PVE's own `Server` header
        # Bounds a stop while answers are still running (a hang `stop_http` meets).
        timeout_graceful_shutdown=2,
    )


class _Http:
    """The simulator's HTTPS server, which can stop and serve again on the same port."""

    def __init__(self, config: uvicorn.Config, host: str, port: int) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    async def call(self, method: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `method` in the server's loop, awaited from this one."""
        if asyncio.get_running_loop() is self.loop:
            await method()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(method(), self.loop))

    async def start(self) -> None:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = _Server(self.config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serving.done():
                sock.close()
                self._serving.result()
                raise RuntimeError("the simulator stopped during startup")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop serving; uvicorn closes the socket and, after at most its graceful
        shutdown timeout, drops the connections still busy."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
            self._server = self._serving = None

    async def drop(self) -> None:
        """Stop at once, as a restarting pveproxy does: every connection is cut, the
        answers under way included (a graceful stop would wait for idle TLS clients).
        Cut until uvicorn has stopped: it closes its socket only at its next tick, and a
        connection accepted meanwhile would go on answering."""
        if self._server is None or self._serving is None:
            return
        self._server.should_exit = True
        while not self._serving.done():
            for connection in list(self._server.server_state.connections):
                if connection.transport is not None:
                    connection.transport.abort()
            await asyncio.sleep(0.01)
        await self.stop()


@contextlib.asynccontextmanager
async def serve_simulator(
    options: SimulatorOptions | None = None,
) -> AsyncIterator[SimulatorHandle]:
    """Serve the simulator over HTTPS in the running event loop until the block exits."""
    options = options or SimulatorOptions()
    secret = options.token_secret or str(uuid.uuid4())
    cert = make_self_signed(_cert_hosts(options.host))
    state = ClusterState(
        options.seed,
        clock=options.clock,
        time_scale=options.time_scale,
        ssl_fingerprint=cert.fingerprint_colons,
        ceph=options.ceph,
        scale=options.scale,
    )
    faults = Faults()
    app = create_app(
        state,
        options.token_id,
        secret,
        options.auth_fail_delay,
        faults=faults,
        fault_admin=options.fault_admin,
    )
    add_apidoc_route(app, options.apidoc)
    with tempfile.TemporaryDirectory(prefix="pvemcp-sim-") as tmp:
        http = _Http(_uvicorn_config(app, tmp, cert), options.host, options.port)
        await http.start()
        try:
            yield SimulatorHandle(
                url=f"https://{_url_host(options.host)}:{http.port}",
                port=http.port,
                fingerprint=cert.fingerprint,
                fingerprint_colons=cert.fingerprint_colons,
                cert_pem=cert.cert_pem,
                token_id=options.token_id,
                token_secret=secret,
                state=state,
                faults=faults,
                _http=http,
            )
        finally:
            faults.clear()  # ends the answers faults hold open, which would delay the stop
            await http.stop()


class _ThreadRun:
    """What the background thread hands back to the caller."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.simulator: SimulatorHandle | None = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None

    async def serve(self, options: SimulatorOptions | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with serve_simulator(options) as simulator:
            self.simulator = simulator
            self.ready.set()
            await self.stop.wait()

    def run(self, options: SimulatorOptions | None) -> None:
        try:
            asyncio.run(self.serve(options))
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.ready.set()


@contextlib.contextmanager
def simulator_in_thread(options: SimulatorOptions | None = None) -> Iterator[SimulatorHandle]:
    """Run the simulator in a daemon thread with its own loop; for sync code and fixtures."""
    run = _ThreadRun()
    thread = threading.Thread(target=run.run, args=(options,), name="pvemcp-simulator", daemon=True)
    thread.start()
    if not run.ready.wait(STARTUP_TIMEOUT):
        raise TimeoutError("the simulator did not start in time")
    if run.simulator is None:
        raise RuntimeError("the simulator failed to start") from run.error
    try:
        yield run.simulator
    finally:
        if run.loop is not None and run.stop is not None:
            run.loop.call_soon_threadsafe(run.stop.set)
        thread.join(STARTUP_TIMEOUT)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(simulator: SimulatorHandle) -> str:
    """The startup banner: where it listens, the credentials, and the lines to copy."""
    state = simulator.state
    lines = [
        f"Proxmox VE API simulator: cluster '{state.name}' with nodes "
        f"{', '.join(state.nodes)} and {len(state.guests)} guests",
        f"URL:          {simulator.url}",
        f"Token ID:     {simulator.token_id}",
        f"Token secret: {simulator.token_secret}",
        f"Fingerprint:  {simulator.fingerprint_colons}",
        "",
        "Point the gateway at it:",
        *(f"export {name}={shlex.quote(value)}" for name, value in simulator.environment().items()),
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def _foreground(options: SimulatorOptions, cert_out: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with serve_simulator(options) as simulator:
        if cert_out is not None:
            # Public material only: lets another process trust this run's certificate
            # (tls = "ca-file") instead of turning verification off.
            await anyio.Path(cert_out).write_bytes(simulator.cert_pem)
        print(describe(simulator), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """`pvemcp simulate`: run the simulator in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="pvemcp simulate",
        description="Serve a simulated Proxmox VE cluster (API over HTTPS) until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8006, help="port (0 = any free port)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="task duration multiplier, 0 = instant"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the demo cluster's data")
    parser.add_argument(
        "--apidoc", type=Path, help="serve this API schema (JSON) as /pve-docs/.../apidoc.js"
    )
    parser.add_argument("--ceph", action="store_true", help="give the demo cluster Ceph")
    parser.add_argument(
        "--guests",
        type=int,
        help=f"grow the cluster to this many guests ({Scale.MIN_GUESTS} to {Scale.MAX_GUESTS})",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        help=f"grow the cluster to this many nodes ({Scale.MIN_NODES} to {Scale.MAX_NODES})",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help=f"serve {ADMIN_PATH} (token required) to inject faults at run time",
    )
    parser.add_argument("--token-secret", help="the API token secret (default: a random UUID)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument(
        "--cert-out", type=Path, help="write the certificate (PEM, public) to this file"
    )
    args = parser.parse_args(argv)
    if args.time_scale < 0:
        parser.error("--time-scale must be >= 0")
    if args.apidoc is not None and not args.apidoc.is_file():
        parser.error(f"--apidoc {args.apidoc}: no such file")
    try:
        scale = Scale.of(args.guests, args.nodes)
    except ValueError as exc:
        parser.error(f"--guests/--nodes: {exc}")
    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"refusing to listen on {args.host}: the simulator answers anyone who has the "
            "printed token with a fake cluster, and is meant for this machine only; "
            "pass --allow-remote to expose it anyway",
            file=sys.stderr,
        )
        return 2
    options = SimulatorOptions(
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        seed=args.seed,
        apidoc=args.apidoc,
        token_secret=args.token_secret,
        ceph=args.ceph,
        fault_admin=args.faults,
        scale=scale,
    )
    try:
        asyncio.run(_foreground(options, args.cert_out))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
