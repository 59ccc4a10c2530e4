"""What a tool handler gets: the target cluster's API, its nodes over SSH, task waiting,
artifacts and progress.

Every backend call a tool makes goes through here, so the gateway sees the task UPIDs a
call started and the command it ran on a node (for audit), and the tool never holds a
credential or a connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx2
import structlog

from pvemcp.config import ClusterConfig, SshConfig
from pvemcp.gateway.artifacts import ArtifactStore
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import Plan
from pvemcp.gateway.readcache import ReadCache
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ApiResult, Method, Params, ProxmoxBackend
from pvemcp.proxmox.errors import ProxmoxError, SshTimeout
from pvemcp.proxmox.ssh import CommandResult, printable, wire_command
from pvemcp.proxmox.ssh.fileops import (
    NodeFiles,
    RemoteFileNotFound,
    ResolvedPath,
    Unresolvable,
    Written,
)
from pvemcp.proxmox.tasks import TaskStatus, get_task_log, get_task_status, wait_for_task
from pvemcp.proxmox.upid import is_upid
from pvemcp.pveapi import Index, RouteError, check_request, load_index, schema_index
from pvemcp.pveapi.index import MAX_SCHEMA_BYTES
from pvemcp.pveapi.node import (
    ApidocError,
    NodeSchema,
    cache_file,
    fetch_apidoc,
    node_index,
    read_cached,
    write_cached,
)
from pvemcp.secrets.redaction import Redactor

if TYPE_CHECKING:
    from pvemcp.gateway.approvals import ApprovalStore
    from pvemcp.gateway.registry import AnySpec
    from pvemcp.gateway.taskowners import TaskDesk
    from pvemcp.gateway.toolsets import Catalogue, SessionToolsets
    from pvemcp.gateway.undo import UndoDesk
    from pvemcp.policy.decision import Decision
    from pvemcp.policy.engine import PolicyRequest
    from pvemcp.proxmox.ssh import SshPool

log = structlog.get_logger(__name__)

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
Authorizer = Callable[[str | None, tuple[str, ...]], None]
ReadCheck = Callable[[str | None, tuple[str, ...]], bool]
"""Policy on (node, canonical paths) before a planner touches a file's content; raises
the `denied` ToolFailure."""


@dataclass
class CommandRecord:
    """What a command (or file operation) a call ran on a node or guest did, for the
    audit outcome: status, sizes and hashes, never the output itself."""

    node: str | None = None
    ssh_user: str | None = None
    host_key: str | None = None
    argv: tuple[str, ...] | None = None
    command: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    timed_out: bool | None = None
    out: bytes | None = field(default=None, repr=False)
    err: bytes | None = field(default=None, repr=False)
    truncated: bool | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    """Other facts for the record's `where.target`: path, artifact ids, durations."""
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)
    """A file write's `before` and `after` content and their `diff`, for the evidence
    store only (the record keeps their hashes)."""

    def evidence(self) -> dict[str, bytes]:
        """What the evidence store keeps of this operation, by kind (`policy/evidence.py`):
        a command's `stdout` and `stderr`, a file read's `content`, a write's contents."""
        blobs: dict[str, bytes] = {}
        if self.out is not None:
            blobs["content" if self.facts.get("operation") == "read" else "stdout"] = self.out
        if self.err is not None:
            blobs["stderr"] = self.err
        return blobs | self.contents

    @classmethod
    def from_result(cls, result: CommandResult) -> CommandRecord:
        return cls(
            node=result.node,
            ssh_user=result.user,
            host_key=result.host_key_fingerprint,
            argv=result.argv,
            command=result.command,
            exit_code=result.exit_code,
            signal=result.signal,
            timed_out=result.timed_out,
            out=result.stdout,
            err=result.stderr,
            truncated=result.truncated,
            facts={"ssh_duration_ms": round(result.duration * 1000, 3)},
        )

    @classmethod
    def from_file_helper(cls, result: CommandResult, **facts: Any) -> CommandRecord:
        """A file operation: who did it where, and `facts` (path, operation), not the
        helper program's text, which is the same for every call."""
        return cls(
            node=result.node,
            ssh_user=result.user,
            host_key=result.host_key_fingerprint,
            facts=dict(facts),
        )

    def audit_fields(self) -> dict[str, Any]:
        """Keyword arguments for `AuditLog.outcome` (None values are left out)."""
        fields: dict[str, Any] = {
            "node": self.node,
            "ssh_user": self.ssh_user,
            "host_key": self.host_key,
            "argv": list(self.argv) if self.argv is not None else None,
            "command": self.command,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "truncated": self.truncated,
            "target": self.facts or None,
        }
        for name, data in (("out", self.out), ("err", self.err)):
            if data is not None:
                fields[f"{name}_bytes"] = len(data)
                fields[f"{name}_sha256"] = hashlib.sha256(data).hexdigest()
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class ShapedOutput:
    """Command output fit for a model: at most `output_cap` bytes per stream as clean
    text, the whole capture of a longer stream as an artifact, and stdout parsed when it
    is complete JSON (an object or array, as `--output-format json` prints)."""

    stdout: str
    stderr: str
    truncated: bool
    stdout_artifact: str | None = None
    stderr_artifact: str | None = None
    parsed: Any = None


def check_api_request(
    method: Method, path: str, params: Params | None, *, index: Index | None = None
) -> None:
    """Refuse a request the PVE API would refuse, with `invalid_argument` naming the PVE
    parameter (`scsi0.discrad`) or `path`/`method`, and the closest valid names.

    Typed tools validate their own arguments first, in words for a model; this is the
    second line, for what they pass through to PVE (config keys, property strings) and for
    their own mistakes. The index (`index`, default the shipped one) is loaded on the
    first request, not at import."""
    try:
        endpoint, problems = check_request(index or schema_index(None), method, path, params)
    except RouteError as exc:
        hint = f"Closest valid: {', '.join(exc.closest)}." if exc.closest else None
        raise ToolFailure("invalid_argument", exc.message, field=exc.field, hint=hint) from None
    if not problems:
        return
    first = problems[0]
    hint = (
        f"Closest valid: {', '.join(first.closest)}."
        if first.closest
        else "See the PVE API's rule for this parameter."
    )
    raise ToolFailure(
        "invalid_argument",
        f"{method} {endpoint.template}: {first.field}: {first.message}",
        field=first.field,
        hint=hint,
        details={
            "problems": [
                {"field": p.field, "message": p.message, "closest": list(p.closest)}
                for p in problems
            ]
        }
        if len(problems) > 1
        else None,
    )


@dataclass(frozen=True, slots=True)
class PolicyView:
    """The caller's policy as proxmox_capabilities_list asks it (set by the gateway; the CLI's
    `policy explain --capabilities` builds its own): decide an imagined call without
    making it, whether policy could allow a tool at all, and the tools."""

    decide: Callable[[PolicyRequest], Decision]
    could_allow: Callable[[AnySpec], bool]
    catalogue: Catalogue
    enabled: frozenset[str]
    """The caller's enabled toolsets."""


class SecretSink(Protocol):
    """Where a secret that the model must never see goes: to the person at the caller's
    client (MCP elicitation, `transports/mcp_app.py`). A PVE API token's secret is shown
    by PVE once, when it is created, so the tool that creates one hands it over here."""

    @property
    def available(self) -> bool:
        """Whether this client can show the person a secret at all (asked before any
        change is made, so a call that could not hand it over changes nothing)."""
        ...

    async def hand_over(self, message: str, secret: str) -> bool:
        """Show `message` and `secret` to the person; True once they confirmed they have
        stored it, False when they declined, cancelled or could not be asked."""
        ...


def cluster_index(name: str, cluster: ClusterConfig, node: NodeSchema | None = None) -> Index:
    """The PVE API index a cluster's requests are checked against: its configured
    `api_schema` file; else the node's own once `cluster_schema` resolved it into `node`;
    else the shipped one (read once, on first use). A file that cannot be read refuses
    every request of the cluster, naming the setting."""
    if cluster.api_schema is None and node is not None and node.index is not None:
        return node.index
    try:
        return schema_index(cluster.api_schema)
    except (OSError, ValueError) as exc:
        raise ToolFailure(
            "schema_unavailable",
            f"cluster {name}: api_schema {cluster.api_schema} cannot be used: {exc}",
            hint="An operator fixes or removes api_schema in the cluster's configuration.",
        ) from None


async def cluster_schema(
    name: str, cluster: ClusterConfig, backend: ProxmoxBackend, node: NodeSchema
) -> Index:
    """`cluster_index`, after resolving the node's own schema into `node` (the cluster
    pool's, `ClusterPool.node_schema`) on the cluster's first use: a configured
    `api_schema` file wins; else (`api_schema_fetch`, REST clusters) the schema of the
    node's PVE version, from the cache or fetched through `backend`; else the shipped one."""
    if cluster.api_schema is not None or not cluster.api_schema_fetch or backend.name != "rest":
        return cluster_index(name, cluster)
    if node.index is None:  # resolved once: later calls skip the lock and its checkpoint
        async with node.lock:
            if node.index is None:
                node.index = await _node_schema(name, cluster, backend)
    return cluster_index(name, cluster, node)


async def _node_schema(name: str, cluster: ClusterConfig, backend: ProxmoxBackend) -> Index | None:
    """The index of the node's PVE version: cached, or fetched and cached. A fetch that
    fails, is too big or does not parse gives the shipped index and one warning (kept for
    this gateway's life); None when the version cannot be read now (asked again on the
    next call, which meets the same problem on its own request)."""
    try:
        answer = (await backend.call("GET", "/version")).data
    except ProxmoxError:
        return None
    version = answer.get("version") if isinstance(answer, dict) else None
    shipped = load_index()
    if not isinstance(version, str) or not version:
        log.warning("api_schema_fallback", cluster=name, reason="no version in GET /version",
                    using=shipped.source)  # fmt: skip
        return shipped
    directory = cluster.api_schema_cache_dir.expanduser()
    cached = await anyio.to_thread.run_sync(read_cached, directory, version, MAX_SCHEMA_BYTES)
    if cached is not None:
        return cached
    from pvemcp.proxmox.tls import CertificatePinError, build_transport  # noqa: PLC0415

    transport = build_transport(cluster, limits=httpx2.Limits(max_connections=1))
    try:
        with anyio.fail_after(cluster.api_schema_timeout):
            raw = await fetch_apidoc(
                cluster.api_url,
                transport,
                max_bytes=cluster.api_schema_max_bytes,
                timeout=cluster.api_schema_timeout,
            )
        index, encoded = await anyio.to_thread.run_sync(node_index, raw, version)
    except TimeoutError:  # before OSError, of which it is a subclass
        reason = f"no complete answer within api_schema_timeout ({cluster.api_schema_timeout:g} s)"
    except (ApidocError, httpx2.HTTPError, CertificatePinError, ssl.SSLError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    else:
        try:
            write_cached(cache_file(directory, version, raw), encoded)
        except OSError as exc:
            log.warning("api_schema_not_cached", cluster=name, directory=str(directory),
                        reason=str(exc))  # fmt: skip
        return index
    log.warning("api_schema_fallback", cluster=name, version=version,
                url=cluster.api_url + "/pve-docs/api-viewer/apidoc.js", reason=reason,
                using=shipped.source)  # fmt: skip
    return shipped


GUEST_SECRET_PREFIX = "PVEMCP_GUEST_SECRET_"  # noqa: S105 - a name prefix, not a secret
"""Environment variables that hold secrets a tool may put into a guest (`guest_secret`)."""


class ToolContext:
    """Per-call handle a tool uses to reach Proxmox."""

    def __init__(
        self,
        *,
        principal: Principal,
        cluster_name: str,
        cluster: ClusterConfig,
        backend: ProxmoxBackend,
        read_cache: ReadCache,
        cached_reads: bool,
        progress: ProgressFn | None,
        ssh: Callable[[], SshPool],
        artifacts: ArtifactStore,
        redactor: Redactor,
        authorize: Authorizer,
        may_read: ReadCheck,
        pve_token: Callable[[], str | None] | None = None,
        pve_identity: str | None = None,
        node_schema: NodeSchema | None = None,
    ) -> None:
        self.principal = principal
        self.cluster_name = cluster_name
        self.cluster = cluster
        self._backend = backend
        self._read_cache = read_cache
        self._cached_reads = cached_reads
        """Whether `get` may use the read cache: for read-tier tools only."""
        self._progress = progress
        self._last_progress: float | None = None
        self.upids: list[str] = []
        self.task: TaskStatus | None = None
        """The last task status this call learnt (waited for or read): the gateway records
        its exit status in the audit outcome, whatever the tool's result looks like."""
        self.plan: Plan | None = None
        """The plan the gateway confirmed for this call (risky tools only)."""
        self._ssh = ssh
        """The cluster's SSH pool, made on first use (a tool failure without `[ssh]`)."""
        self._artifacts = artifacts
        self._redactor = redactor
        self._authorize = authorize
        self._may_read = may_read
        self._node_schema = node_schema or NodeSchema()
        """The cluster's node schema in this gateway (`cluster_schema`); a context made
        without one resolves its own."""
        self._pve_token = pve_token
        self.pve_identity = pve_identity
        """The identity mapping whose token that is; None for the gateway token."""
        self.command: CommandRecord | None = None
        """The command this call ran on a node or guest, for the audit outcome."""
        self.toolsets: SessionToolsets | None = None
        """The caller's session toolsets, set by the gateway (for the toolset tool)."""
        self.undo: UndoDesk | None = None
        """The caller's undoable calls and the pipeline to undo one (for proxmox_call_undo)."""
        self.endpoint_tools: Callable[[str, str], tuple[AnySpec, ...]] = lambda m, t: ()
        """The typed tools that send `method template`, set by the gateway (for the
        generic API tools: which tool covers an endpoint, and so its least tier)."""
        self.secret_sink: SecretSink | None = None
        """How this caller's client shows a secret to its person (None: it cannot)."""
        self.tasks: TaskDesk | None = None
        """The caller's tasks and the ownership check, set by the gateway (task tools)."""
        self.policy_view: PolicyView | None = None
        """The caller's policy and the catalogue, set by the gateway (proxmox_capabilities_list)."""
        self.task_started: Callable[[str], None] = lambda upid: None
        """Called with each UPID this call starts, set by the gateway: the task's owner is
        known at once, before the call's audit outcome records it."""
        self.approvals: ApprovalStore | None = None
        """The four-eyes approval store, set by the gateway (proxmox_approval_status)."""

    @property
    def pve_token_id(self) -> str | None:
        """The PVE API token id this call's requests are sent with now (the caller's own,
        from an identity mapping, or the gateway's; never the secret), asked each time so a
        rotation during the call shows: for the audit record, capabilities, the read cache."""
        return self._pve_token() if self._pve_token is not None else None

    @property
    def api_index(self) -> Index:
        """The PVE API index this cluster's requests are checked against (`cluster_index`):
        the node's own only once resolved; `schema()` resolves it."""
        return cluster_index(self.cluster_name, self.cluster, self._node_schema)

    async def schema(self) -> Index:
        """The PVE API index this cluster's requests are checked against, the node's own
        schema resolved on the cluster's first use (`cluster_schema`)."""
        return await cluster_schema(
            self.cluster_name, self.cluster, self._backend, self._node_schema
        )

    @property
    def backend_name(self) -> str:
        return self._backend.name

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        """Send one API request, after checking it against the PVE API's index (see
        `check_api_request`): what PVE would refuse is refused here, before any request."""
        check_api_request(method, path, params, index=await self.schema())
        if method == "GET" and self._cached_reads:
            return await self._read_cache.get(
                path,
                params,
                lambda: self._backend.call("GET", path, params),
                # Never shared across tokens: a mapped caller's token may see less.
                scope=f"{self.pve_identity or ''}|{self.pve_token_id or ''}",
            )
        result = await self._backend.call(method, path, params)
        if method != "GET" and isinstance(result.data, str) and is_upid(result.data):
            self.upids.append(result.data)
            self.task_started(result.data)
        return result

    def guest_secret(self, name: str, *, field: str) -> str:
        """The secret a call names for a guest (a cloud-init or container password): the
        gateway's environment variable `PVEMCP_GUEST_SECRET_<NAME>`, which an operator
        set, so the model names a secret and never sees or sends its value. The value
        joins the redaction set before it is used: no result, log or audit shows it."""
        variable = GUEST_SECRET_PREFIX + name.upper().replace("-", "_")
        value = os.environ.get(variable)
        if not value:
            raise ToolFailure(
                "secret_not_found",
                f"no guest secret named {name!r}",
                field=field,
                hint=f"An operator provides it as {variable} in the gateway's environment.",
            )
        self._redactor.add(value)
        return value

    @property
    def can_hand_over_secret(self) -> bool:
        """Whether `hand_over_secret` can reach the person at this caller's client."""
        return self.secret_sink is not None and self.secret_sink.available

    async def hand_over_secret(self, message: str, secret: str) -> bool:
        """Give `secret` to the person at the client, never to the model: it joins the
        redaction set first, so no result, log line or audit record of this process can
        show it, then goes to the client's person only. True once they stored it."""
        self._redactor.add(secret)
        if self.secret_sink is None or not self.secret_sink.available:
            return False
        return await self.secret_sink.hand_over(message, secret)

    async def get(self, path: str, params: Params | None = None) -> Any:
        """`GET path`'s data. For a read tool it may come from the cluster's read cache and
        be shared with other calls: never modify it in place."""
        return (await self.call("GET", path, params)).data

    async def post(self, path: str, params: Params | None = None) -> Any:
        return (await self.call("POST", path, params)).data

    async def get_many(self, *requests: str | tuple[str, Params]) -> list[Any]:
        """The data of several GETs (a path, or a path and its parameters) sent at once,
        in the order asked. A failed read fails the call with its own error (the others
        are cancelled), not with an exception group."""
        answers: list[Any] = [None] * len(requests)

        async def fetch(index: int, request: str | tuple[str, Params]) -> None:
            path, params = (request, None) if isinstance(request, str) else request
            answers[index] = await self.get(path, params)

        try:
            async with anyio.create_task_group() as group:
                for index, request in enumerate(requests):
                    group.start_soon(fetch, index, request)
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return answers

    async def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        """Send MCP progress. MCP wants each value of a call greater than the last, and a
        second wait in the same call (the next task, or an HA guest's state after its
        task) counts again from zero: such a value is moved just past the last one."""
        if self._progress is None:
            return
        if self._last_progress is not None and progress <= self._last_progress:
            progress = round(self._last_progress + 0.1, 1)
        self._last_progress = progress
        await self._progress(progress, total, message)

    async def wait_task(self, upid: str, timeout: float | None = None) -> TaskStatus:
        """Wait for a task, reporting MCP progress; raises TaskFailed / TaskTimeout.

        However the wait ends, the task may have changed the cluster: the read cache is
        emptied so the next read shows its effect."""
        try:
            self.task = await wait_for_task(
                self._backend,
                upid,
                timeout=timeout if timeout is not None else self.cluster.task_timeout,
                on_progress=self.report_progress if self._progress is not None else None,
            )
            return self.task
        finally:
            self._read_cache.invalidate()

    async def task_status(self, upid: str) -> TaskStatus:
        self.task = await get_task_status(self._backend, upid)
        return self.task

    async def task_log(
        self, upid: str, start: int, limit: int
    ) -> tuple[list[tuple[int, str]], int | None]:
        """A page of a task's log as `(n, text)` lines, and the log's total line count
        (None when the server does not say)."""
        return await get_task_log(self._backend, upid, start=start, limit=limit)

    # -- nodes over SSH --------------------------------------------------------------------

    @property
    def ssh_config(self) -> SshConfig:
        """The cluster's `[ssh]` settings; a cluster without them is a tool failure."""
        return self._ssh().config

    @property
    def output_limits(self) -> SshConfig:
        """Output caps and artifact TTL for command output (the SSH settings' defaults
        when the cluster has none, as for guest-agent exec over REST)."""
        return self.cluster.ssh or SshConfig()

    def wire_command(self, argv: Sequence[str], timeout: float | None = None) -> str:
        """The exact string `ssh_run(node, argv, timeout=timeout)` will send, for the plan."""
        config = self.ssh_config
        return wire_command(argv, config.command_timeout if timeout is None else timeout)

    async def ssh_run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run `argv` on `node` (see `SshPool.run`) and record it for the audit outcome,
        a command killed for its timeout included."""
        try:
            result = await self._ssh().run(node, argv, timeout=timeout, stdin=stdin)
        except SshTimeout as exc:
            if exc.result is not None:
                self.command = CommandRecord.from_result(exc.result)
            raise
        self.command = CommandRecord.from_result(result)
        return result

    def keep_artifact(self, data: bytes) -> str | None:
        """Keep `data` (redacted) for this caller only; its `pvemcp://artifacts/...` URI,
        or None when the store cannot take it. The id goes into the audit outcome."""
        # surrogateescape keeps non-UTF-8 bytes as they were while the text is redacted.
        text = data.decode("utf-8", errors="surrogateescape")
        data = self._redactor.text(text).encode("utf-8", errors="surrogateescape")
        artifact = self._artifacts.put(self.principal, data, ttl=self.output_limits.artifact_ttl)
        if artifact is None:
            return None
        if self.command is None:
            self.command = CommandRecord()
        self.command.facts.setdefault("artifacts", []).append(artifact.id)
        return artifact.uri

    def shape_output(self, out: bytes, err: bytes, *, cut_at_source: bool = False) -> ShapedOutput:
        """`out` and `err` as a model should see them (see `ShapedOutput`); `cut_at_source`
        says the producer already dropped bytes beyond what was captured."""
        cap = self.output_limits.output_cap
        uris = [self.keep_artifact(data) if len(data) > cap else None for data in (out, err)]
        parsed: Any = None
        if len(out) <= cap and not cut_at_source and out.lstrip()[:1] in (b"{", b"["):
            try:
                parsed = json.loads(out)
            except ValueError:
                parsed = None
        return ShapedOutput(
            stdout=printable(out[:cap]),
            stderr=printable(err[:cap]),
            truncated=cut_at_source or len(out) > cap or len(err) > cap,
            stdout_artifact=uris[0],
            stderr_artifact=uris[1],
            parsed=parsed,
        )

    def may_read(self, node: str | None, paths: Sequence[str]) -> bool:
        """Whether policy lets this caller read `paths` outright (no confirmation)."""
        return self._may_read(node, tuple(paths))

    def authorize(self, node: str | None, paths: Sequence[str]) -> None:
        """Ask policy now whether this call may touch `paths` (canonical) on `node`, for a
        planner that would otherwise read a file before the gateway decides."""
        self._authorize(node, tuple(paths))

    def _files(self, node: str) -> NodeFiles:
        return NodeFiles(self._ssh(), node, self.ssh_config.file_max_bytes)

    def _record_file(self, files: NodeFiles, **facts: Any) -> CommandRecord | None:
        """Record the file operation `files` ran for the audit outcome (none when the node
        was never reached)."""
        if files.last is not None:
            self.command = CommandRecord.from_file_helper(files.last, **facts)
        return self.command

    async def resolve_path(self, node: str, path: str) -> ResolvedPath:
        """`path` canonicalised on the node (see `pvemcp.proxmox.ssh.fileops`).

        When the node cannot say where `path` leads, policy is asked about `path` as given
        before the reason is told: a caller it denies learns only that it is denied."""
        try:
            return await self._files(node).resolve(path)
        except Unresolvable:
            self.authorize(node, [path])
            raise

    async def read_file(self, node: str, path: str, *, canonical: str) -> bytes:
        """The content of `path`, which must still resolve to `canonical` (what policy
        allowed); recorded for the audit outcome by size and hash."""
        files = self._files(node)
        try:
            data = await files.read(path, canonical)
        finally:
            record = self._record_file(files, path=canonical, operation="read")
        if record is not None:
            record.out = data
        return data

    async def read_current(self, node: str, path: str, *, canonical: str) -> bytes | None:
        """The content a write to `path` (leading to `canonical`) would replace, or None
        when there is no file there (for a plan's diff and its hashes); not recorded as a
        read of its own."""
        try:
            return await self._files(node).read(path, canonical)
        except RemoteFileNotFound:
            return None

    async def write_file(
        self,
        node: str,
        path: str,
        data: bytes,
        *,
        canonical: str,
        mode: int | None,
        before_sha256: str | None,
    ) -> Written:
        """Atomically replace `path`, which must still resolve to `canonical` and hold the
        content hashed `before_sha256` (None: no file), see `NodeFiles.write`; recorded
        for the audit outcome."""
        files = self._files(node)
        try:
            written = await files.write(
                path, canonical, data, mode=mode, before_sha256=before_sha256
            )
        finally:
            record = self._record_file(files, path=canonical, operation="write")
        if record is not None:
            record.contents["after"] = data
            record.facts.update(
                bytes=written.size,
                sha256=written.sha256,
                before_sha256=written.before_sha256,
                mode=f"{written.mode:04o}",
                created=written.created,
            )
        return written
