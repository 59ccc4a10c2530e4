"""One pooled SSH connection per node, with a channel cap, reconnects and idle eviction.

A handshake and login cost far more than a command (tens of milliseconds on loopback,
more across a WAN), so each node keeps one authenticated connection and runs commands on
channels of it, at most `max_channels` at a time (below sshd's MaxSessions, 10 by
default; beyond it sshd refuses channels). A connection that died (keepalive, sshd
restart, network) is replaced by the next call; one whose credentials were rotated is
retired once its running commands finish; one unused for `idle_timeout` is closed.

Connections are opened by `connect.py` (explicit key, pinned host keys, nothing ambient);
commands never get a PTY or forwarding. Only the cluster's own nodes are dialled: those
under `ssh.nodes`, the cluster's default node, and the names the cluster itself reports.
Any other name, a numeric alias of a node's address (`2130706435`) or `localhost`
included, is refused before anything connects, so node rules cannot be walked past.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import asyncssh
import structlog

from pvemcp.config import SshConfig
from pvemcp.proxmox.errors import SshAuthError, SshError, SshTimeout, SshUnknownNode
from pvemcp.proxmox.ssh.command import KILL_AFTER, TIMEOUT_EXIT_CODES, wire_command
from pvemcp.proxmox.ssh.connect import SshCredentials, Target, load_client_key, open_connection
from pvemcp.proxmox.ssh.hostkeys import PinningClient
from pvemcp.proxmox.ssh.result import CommandResult

log = structlog.get_logger(__name__)


CredentialSource = Callable[[], SshCredentials | None]
"""The cluster's SSH credentials now (read at every call, so rotations apply); None when
the cluster has none. May raise a `ProxmoxError` (`CredentialsUnavailable`)."""
NodeLister = Callable[[], Awaitable[Collection[str]]]
"""The names of the cluster's nodes as the cluster reports them (`GET /nodes`); asked only
for a name that is not configured. May raise a `ProxmoxError`."""

IDLE_TIMEOUT = 300.0
LOCAL_GRACE = 2.0
"""Seconds the local deadline waits beyond the remote `timeout` and its kill delay, so the
node normally reports the timeout itself (exit 124) before the channel is dropped."""
_READ_CHUNK = 64 * 1024
_NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_connection_ids = itertools.count(1)
_ChannelT = TypeVar("_ChannelT")


def node_address(config: SshConfig, node: str) -> tuple[str, int]:
    """Where `node` is reached: its `ssh.nodes` entry (`host`, `host:port`, `[v6]:port`),
    else its own name on `ssh.port` (for a node the pool accepted as the cluster's)."""
    address = config.nodes.get(node)
    if address is None:
        return node, config.port
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else config.port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port)
    return address, config.port


@dataclass(eq=False)
class _Connection:
    """A live connection and what the pool needs to know about it."""

    conn: asyncssh.SSHClientConnection
    client: PinningClient
    id: int
    fingerprint: str
    credentials: SshCredentials
    in_flight: int = 0
    retired: bool = False
    idle_timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.conn.close()


@dataclass(eq=False)
class _Node:
    name: str
    host: str
    port: int
    channels: anyio.Semaphore
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    live: _Connection | None = None


@dataclass
class _Capture:
    """Bytes read from one stream, up to `cap`."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False


class SshPool:
    """SSH connections to the nodes of one cluster; `run` executes an argv on a node.

    `cluster_nodes` reports the cluster's members, for nodes not under `ssh.nodes` (they
    are dialled by their own name); without it only `ssh.nodes` and `default_node` are
    reachable.
    """

    def __init__(
        self,
        cluster: str,
        config: SshConfig,
        credentials: CredentialSource,
        *,
        cluster_nodes: NodeLister | None = None,
        default_node: str | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self._credentials = credentials
        self._cluster_nodes = cluster_nodes
        self._configured = frozenset(config.nodes) | (
            {default_node} if default_node is not None else frozenset()
        )
        self._idle_timeout = idle_timeout
        self._nodes: dict[str, _Node] = {}
        self._key: tuple[SshCredentials, asyncssh.SSHKey] | None = None
        self._retired: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"SshPool(cluster={self.cluster!r}, nodes={sorted(self._nodes)!r})"

    async def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run `argv` on `node` and return what it did; a non-zero exit is not an error.

        The command is `timeout --kill-after=5s <N>s <argv>` (see `wire_command`), with
        `timeout` defaulting to `command_timeout`; locally the call gives up
        `KILL_AFTER + LOCAL_GRACE` seconds later. `stdin` is sent and closed (secrets go
        there, never in argv). Raises `SshTimeout` (with the partial result) when the
        command was killed for its timeout, `ValueError` for an unusable argv, and the
        other `SshError` subclasses when the node cannot be reached or logged into.
        """
        seconds = self.config.command_timeout if timeout is None else timeout
        command = wire_command(argv, seconds)
        target = await self._node(node)
        credentials = self._current_credentials(node)
        async with target.channels:
            live, process = await self._start(target, credentials, command)
            try:
                result = await self._collect(
                    node=target,
                    live=live,
                    credentials=credentials,
                    argv=argv,
                    command=command,
                    timeout=seconds,
                    process=process,
                    stdin=stdin,
                )
            except (asyncssh.Error, OSError) as exc:
                raise SshError(
                    f"node {node}: the SSH connection broke while {argv[0]} ran ({exc}); it "
                    "may or may not have completed on the node",
                    node=node,
                ) from None
            finally:
                self._release(target, live)
        if result.timed_out:
            raise SshTimeout(
                f"node {node}: {argv[0]} ran past its {seconds:g} s timeout and was killed on "
                f"the node (after {result.duration:.1f} s)",
                node=node,
                result=result,
            )
        return result

    async def aclose(self) -> None:
        """Close every connection (commands still running are cut off)."""
        connections = [n.live for n in self._nodes.values() if n.live is not None]
        connections.extend(self._retired)
        for node in self._nodes.values():
            node.live = None
        self._retired.clear()
        for live in connections:
            live.close()
        for live in connections:
            await live.conn.wait_closed()

    # -- connections ---------------------------------------------------------------------

    async def _node(self, name: str) -> _Node:
        """The pool's entry for `name`, once `name` is known to be one of the cluster's nodes
        (a plain DNS label, configured or reported by the cluster): nothing is dialled for
        any other name. Raises `SshUnknownNode` (`not_found`) listing the nodes."""
        node = self._nodes.get(name)
        if node is not None:
            return node
        if not _NODE_RE.match(name):
            raise SshError(f"{name[:64]!r} is not a node name", node=None)
        if name not in self._configured:
            reported = (
                frozenset(await self._cluster_nodes()) if self._cluster_nodes else frozenset()
            )
            if name not in reported:
                raise SshUnknownNode(
                    f"{name!r} is not a node of cluster {self.cluster}; nothing was sent to it "
                    "(only the cluster's own nodes are reached over SSH, by their configured "
                    "address or name)",
                    node=name,
                    nodes=sorted(self._configured | reported),
                )
        host, port = node_address(self.config, name)
        # Another call may have added it while the cluster was asked: keep the first.
        return self._nodes.setdefault(
            name, _Node(name, host, port, anyio.Semaphore(self.config.max_channels))
        )

    def _current_credentials(self, node: str) -> SshCredentials:
        credentials = self._credentials()
        if credentials is None:
            raise SshAuthError(
                f"cluster {self.cluster} has no SSH credentials, so node {node} cannot be "
                "reached: set ssh_user and ssh_private_key (or ssh_key_path) in the cluster's "
                "credentials source",
                node=node,
            )
        return credentials

    async def _acquire(self, node: _Node, credentials: SshCredentials) -> _Connection:
        """The node's live connection (made now if needed), marked as in use."""
        async with node.lock:
            live = node.live
            if live is not None and (live.client.lost or live.credentials != credentials):
                self._retire(node, live)
                live = None
            if live is None:
                live = await self._connect(node, credentials)
                node.live = live
            if live.idle_timer is not None:
                live.idle_timer.cancel()
                live.idle_timer = None
            live.in_flight += 1
            return live

    def _release(self, node: _Node, live: _Connection, *, broken: bool = False) -> None:
        """Called once per `_acquire`; `broken` marks a connection that failed a channel."""
        if broken:
            live.client.lost = True
        live.in_flight -= 1
        if live.in_flight:
            return
        if live.retired or live.client.lost:
            self._retire(node, live)
        elif self._idle_timeout <= 0:
            self._evict(node, live)
        else:
            live.idle_timer = asyncio.get_running_loop().call_later(
                self._idle_timeout, self._evict, node, live
            )

    def _retire(self, node: _Node, live: _Connection) -> None:
        """Stop handing out `live`; close it once its running commands are done."""
        if node.live is live:
            node.live = None
        live.retired = True
        if live.in_flight:
            self._retired.add(live)
        else:
            self._retired.discard(live)
            live.close()

    def _evict(self, node: _Node, live: _Connection) -> None:
        if live.in_flight == 0 and node.live is live:
            log.debug("ssh_idle_close", cluster=self.cluster, node=node.name, connection=live.id)
            self._retire(node, live)

    async def _connect(self, node: _Node, credentials: SshCredentials) -> _Connection:
        target = Target(self.cluster, node.name, node.host, node.port)
        # Decrypting a key is slow (bcrypt): once per credentials, not per connection.
        if self._key is None or self._key[0] != credentials:
            self._key = (credentials, load_client_key(target, credentials))
        conn, client = await open_connection(target, self.config, credentials, self._key[1])
        server_key = conn.get_server_host_key()
        live = _Connection(
            conn=conn,
            client=client,
            id=next(_connection_ids),
            fingerprint=str(server_key.get_fingerprint("sha256")) if server_key else "",
            credentials=credentials,
        )
        log.info(
            "ssh_connected",
            cluster=self.cluster,
            node=node.name,
            address=target.where,
            user=credentials.user,
            host_key=live.fingerprint,
            connection=live.id,
        )
        return live

    # -- commands ------------------------------------------------------------------------

    async def _start(
        self, node: _Node, credentials: SshCredentials, command: str
    ) -> tuple[_Connection, asyncssh.SSHClientProcess[bytes]]:
        """Open a session running `command` (see `_open_channel`)."""

        async def start(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[bytes]:
            process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
                command, encoding=None, request_pty=False
            )
            return process

        return await self._open_channel(node, credentials, start, "starting the command")

    async def _open_channel(
        self,
        node: _Node,
        credentials: SshCredentials,
        opener: Callable[[asyncssh.SSHClientConnection], Awaitable[_ChannelT]],
        doing: str,
    ) -> tuple[_Connection, _ChannelT]:
        """Open a channel with `opener`, on a fresh connection if the pooled one turns out
        to be dead. Only a channel that never opened is retried: then nothing can have
        started. The connection stays in use (`_release` it) when this returns."""
        reason = ""
        for _ in range(2):
            live = await self._acquire(node, credentials)
            try:
                channel = await opener(live.conn)
            except asyncssh.ChannelOpenError as exc:
                self._release(node, live, broken=True)
                reason = exc.reason
                log.info(
                    "ssh_channel_refused",
                    cluster=self.cluster,
                    node=node.name,
                    connection=live.id,
                    why=reason,
                )
                continue
            except (asyncssh.Error, OSError) as exc:
                self._release(node, live, broken=True)
                raise SshError(
                    f"node {node.name}: the SSH connection broke while {doing} ({exc}); it "
                    "did not run, or ended at once",
                    node=node.name,
                ) from None
            except BaseException:
                self._release(node, live)
                raise
            return live, channel
        raise SshError(
            f"node {node.name}: no SSH channel could be opened ({reason})", node=node.name
        )

    async def _collect(
        self,
        *,
        node: _Node,
        live: _Connection,
        credentials: SshCredentials,
        argv: Sequence[str],
        command: str,
        timeout: float,
        process: asyncssh.SSHClientProcess[bytes],
        stdin: bytes | None,
    ) -> CommandResult:
        cap = self.config.artifact_max_bytes
        out, err = _Capture(cap), _Capture(cap)
        started = anyio.current_time()
        cut_locally = False
        try:
            with anyio.move_on_after(timeout + KILL_AFTER + LOCAL_GRACE) as scope:
                if stdin:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, process.stdout, out, process)
                    tg.start_soon(_drain, process.stderr, err, process)
                await process.wait_closed()
            cut_locally = scope.cancelled_caught
        finally:
            process.close()
        duration = anyio.current_time() - started
        exit_signal = process.exit_signal
        exit_code = process.exit_status if exit_signal is None else None
        timed_out = cut_locally or (exit_code in TIMEOUT_EXIT_CODES and duration >= timeout - 0.05)
        # No status, yet neither our deadline nor a cap cut it: the connection went away.
        ended_unseen = exit_code is None and exit_signal is None
        if ended_unseen and not (cut_locally or out.overflow or err.overflow):
            raise SshError(
                f"node {node.name}: the SSH connection closed before {argv[0]} reported an "
                "exit status; it may or may not have completed on the node",
                node=node.name,
            )
        return CommandResult(
            node=node.name,
            user=credentials.user,
            host_key_fingerprint=live.fingerprint,
            connection_id=live.id,
            argv=tuple(argv),
            command=command,
            timeout=timeout,
            output_cap=self.config.output_cap,
            exit_code=exit_code,
            signal=exit_signal[0] if exit_signal else None,
            timed_out=timed_out,
            stdout=bytes(out.data),
            stderr=bytes(err.data),
            stdout_overflow=out.overflow,
            stderr_overflow=err.overflow,
            duration=duration,
        )


async def _drain(
    stream: asyncssh.SSHReader[bytes],
    capture: _Capture,
    process: asyncssh.SSHClientProcess[bytes],
) -> None:
    """Read `stream` to its end or to the cap; past the cap, close the channel (the other
    stream then ends too, and the remote program gets a broken pipe). A lost connection
    ends the stream too; the missing exit status then tells the caller."""
    while True:
        try:
            chunk = await stream.read(_READ_CHUNK)
        except (asyncssh.Error, OSError):
            return
        if not chunk:
            return
        room = capture.cap - len(capture.data)
        if len(chunk) > room:
            capture.data += chunk[:room]
            capture.overflow = True
            process.close()
            return
        capture.data += chunk
