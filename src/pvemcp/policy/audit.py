"""The audit log: one hash-chained JSON line per event, the system of record for every call.

A call above the `read` tier gets an *intent* record that is on disk (fsync'd) before the
backend is touched, and an *outcome* record after; a read or a refused call gets one
*record*. If the intent cannot be written the call is refused: nothing risky runs
unrecorded. Authentication failures, secret rotations and periodic *checkpoints* are
records of the same chain. docs/audit.md describes every field.

Records are chained (see `audit_chain`): each holds `seq`, the previous record's hash and
its own, so `pvemcp audit verify` finds any edited, inserted, deleted or reordered record.
The writer continues the chain from the file's actual tail on every append, under an
exclusive `flock` on the log's directory: a restart, a second gateway process on the same
log (a desktop client starting several stdio servers) or `pvemcp audit checkpoint` run
from cron all extend one chain instead of forking it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, Unpack

import anyio.to_thread
import structlog

from pvemcp import __version__
from pvemcp.policy.audit_chain import (
    SCHEMA,
    Head,
    canonical,
    jsonable,
    load_head,
    next_rotation,
    seal,
)
from pvemcp.policy.audit_sinks import SyslogSink, parse_syslog_target
from pvemcp.policy.decision import Decision
from pvemcp.policy.principal import Principal

log = structlog.get_logger(__name__)


class AuditUnavailable(Exception):
    """The audit log cannot be written; risky calls must be refused."""


def new_event_id() -> str:
    """A UUIDv7 string: time-ordered, so records sort by creation even across files."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    hexed = f"{value:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def args_hmac(key: bytes, raw_arguments: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of the RFC 8785 canonical raw arguments: `what.args_hmac`.

    Whoever holds the key can later test whether a call carried a known value (recompute
    with the suspected arguments and compare) without the log ever storing that value.
    """
    return hmac.new(key, canonical(jsonable(raw_arguments)), hashlib.sha256).hexdigest()


class CallDetails(TypedDict, total=False):
    """Optional facts about a call, for `intent` and `outcome`; absent ones are left out.

    where: `node`, `vmid`, `target` (other target facts: pool, storage, path, …), `argv`
    and `command` (the exact wire string sent over SSH), `ssh_user`, `host_key` (the
    pinned host-key fingerprint), `pve_token_id` (the PVE API token id the call's requests
    were sent with: the gateway's, or the caller's own from an identity mapping; never the
    secret). what: `raw_arguments` (only hashed into `args_hmac`,
    never stored), `schema_sha256` (the tool's input schema), `rpc_id`. who: `source_ip`,
    `client` (MCP client name/version), `stated_reason`. decision: `approval` (how a confirmed
    call was approved: method `elicitation`, `input_required` or `token`, by, at, and the
    token's id and hash or the approval state's id). envelope: `policy_hash` (the
    policy bundle that decided). `undoes`: the event id of the call this one undoes
    (`proxmox_call_undo`).
    """

    node: str
    vmid: int
    target: Mapping[str, Any]
    argv: Sequence[str]
    command: str
    ssh_user: str
    host_key: str
    pve_token_id: str | None
    raw_arguments: Mapping[str, Any]
    schema_sha256: str
    rpc_id: str | int
    source_ip: str
    client: str
    stated_reason: str
    approval: Mapping[str, Any]
    policy_hash: str
    undoes: str


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class AuditSettings(Protocol):
    """What `AuditLog.from_config` reads: `pvemcp.config.AuditConfig` fits (policy does not
    import config, so the type is structural)."""

    @property
    def path(self) -> Path: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def rotate_bytes(self) -> int: ...
    @property
    def checkpoint_every(self) -> int: ...
    @property
    def hmac_key(self) -> _Secret | None: ...
    @property
    def syslog(self) -> str | None: ...
    @property
    def require_for_reads(self) -> bool: ...


def utc_now() -> str:
    """The current UTC time as every audit timestamp is written (microseconds, `Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _compact(section: Mapping[str, Any]) -> dict[str, Any]:
    """`section` without unset values: absent means "not applicable", never null."""
    return {key: value for key, value in section.items() if value is not None}


class AuditLog:
    """Appends hash-chained records to a JSON-lines file opened with O_APPEND.

    `path=None` (audit disabled) keeps nothing; the gateway then refuses every call that
    needs an intent record, so switching audit off can never make risky calls unrecorded.
    `rotate_bytes` > 0 rotates the live file before a write would take it past that size;
    `checkpoint_every` > 0 appends a checkpoint after every record whose `seq` is a
    multiple of it, and on `close()` when records were written since the last one;
    `hmac_key` adds `args_hmac`; `syslog` (`unix:PATH`, `udp:HOST:PORT`, `tcp:HOST:PORT`)
    also forwards every record. `require_for_reads` tells the gateway to withhold any answer
    whose record cannot be written, reads included; failed writes are counted by phase in
    `write_failures`.

    Thread-safe: `intent` writes from a worker thread, `outcome` from the event loop.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        rotate_bytes: int = 0,
        checkpoint_every: int = 0,
        hmac_key: bytes | None = None,
        syslog: str | None = None,
        require_for_reads: bool = False,
    ) -> None:
        self._path = path.expanduser() if path is not None else None
        self.require_for_reads = require_for_reads
        self.write_failures: dict[str, int] = {}
        """Records that could not be written, by phase, since the process started."""
        self._rotate_bytes = rotate_bytes
        self._checkpoint_every = checkpoint_every
        self._hmac_key = hmac_key
        self._sink = SyslogSink(parse_syslog_target(syslog)) if syslog else None
        self._gateway = {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._dirfd: int | None = None
        self._size = -1
        self._head: Head | None = None
        self._since_checkpoint = 0
        self._last_checkpoint: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: AuditSettings) -> AuditLog:
        """The log `[audit]` describes; raises ValueError for a bad `syslog` target."""
        key = config.hmac_key.get_secret_value().encode() if config.hmac_key else None
        return cls(
            config.path if config.enabled else None,
            rotate_bytes=config.rotate_bytes,
            checkpoint_every=config.checkpoint_every,
            hmac_key=key,
            syslog=config.syslog,
            require_for_reads=config.require_for_reads,
        )

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint this process wrote, to store off-host (JSON-ready)."""
        return dict(self._last_checkpoint) if self._last_checkpoint else None

    # -- records --------------------------------------------------------------------------

    async def intent(
        self,
        event_id: str,
        principal: Principal,
        *,
        tool: str,
        tier: str,
        cluster: str,
        arguments: Mapping[str, Any],
        decision: Decision,
        backend: str,
        **details: Unpack[CallDetails],
    ) -> None:
        """Durably record that a risky call is about to run; raises `AuditUnavailable`.

        `arguments` must already be redacted; pass `raw_arguments` for `args_hmac`.
        """
        record = self._call_record(
            event_id,
            "intent",
            principal,
            tool=tool,
            tier=tier,
            cluster=cluster,
            arguments=arguments,
            decision=decision,
            backend=backend,
            details=details,
        )
        await anyio.to_thread.run_sync(lambda: self._append(record, durable=True))

    def outcome(
        self,
        event_id: str,
        principal: Principal,
        *,
        tool: str,
        tier: str,
        cluster: str | None,
        arguments: Mapping[str, Any] | None,
        decision: Decision | None,
        status: str,
        duration_ms: float,
        error_code: str | None = None,
        upids: Sequence[str] | None = None,
        phase: Literal["outcome", "record"] = "outcome",
        backend: str | None = None,
        exitstatus: str | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        timed_out: bool | None = None,
        out_bytes: int | None = None,
        out_sha256: str | None = None,
        err_bytes: int | None = None,
        err_sha256: str | None = None,
        truncated: bool | None = None,
        undo: Mapping[str, Any] | None = None,
        evidence: Sequence[Mapping[str, Any]] | None = None,
        evidence_error: Mapping[str, Any] | None = None,
        **details: Unpack[CallDetails],
    ) -> None:
        """Record how a call ended (`phase="outcome"`) or, for reads and refusals, the one
        record of it (`phase="record"`); raises `AuditUnavailable`.

        Not fsync'd: the intent already is, and a lost outcome shows as an intent without
        its pair, which `audit verify` lists. `undo` is the call that reverses this one
        (tool, arguments, expect: `gateway/undo.py`), for `proxmox_call_undo`. `evidence`
        lists the blobs of its output in the evidence store (`policy/evidence.py`: kind,
        sha256, bytes, truncated), `evidence_error` why they could not be kept.
        """
        record = self._call_record(
            event_id,
            phase,
            principal,
            tool=tool,
            tier=tier,
            cluster=cluster,
            arguments=arguments,
            decision=decision,
            backend=backend,
            details=details,
        )
        record["outcome"] = _compact(
            {
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "error": error_code,
                "upids": list(upids) if upids else None,
                "exitstatus": exitstatus,
                "exit_code": exit_code,
                "signal": signal,
                "timed_out": timed_out,
                "out_bytes": out_bytes,
                "out_sha256": out_sha256,
                "err_bytes": err_bytes,
                "err_sha256": err_sha256,
                "truncated": truncated,
                "undo": jsonable(undo) if undo is not None else None,
                "evidence": jsonable(list(evidence)) if evidence else None,
                "evidence_error": jsonable(evidence_error) if evidence_error else None,
            }
        )
        self._append(record, durable=False)

    def auth_failure(
        self,
        reason: str,
        *,
        source_ip: str | None,
        token_sha256: str | None,
        transport: str = "http",
        subject: str | None = None,
        issuer: str | None = None,
        client_id: str | None = None,
        error_code: str = "unauthenticated",
    ) -> None:
        """Record a rejected authentication (bad, expired or foreign token); raises
        `AuditUnavailable`. Not fsync'd, so a flood of bad tokens cannot become an fsync
        storm; the token itself is never passed, only its SHA-256."""
        record = self._envelope("auth_failure")
        record["who"] = _compact(
            {
                "sub": subject,
                "iss": issuer,
                "client_id": client_id,
                "transport": transport,
                "source_ip": source_ip,
                "token_sha256": token_sha256,
            }
        )
        record["outcome"] = {"status": "rejected", "error": error_code, "reason": reason}
        self._append(record, durable=False)

    def auth_failures_summary(
        self,
        counts: Mapping[str, int],
        *,
        source_ip: str,
        window_seconds: float,
        transport: str = "http",
    ) -> None:
        """Record how many more refused authentications (by reason) came from `source_ip`
        within one window after the first, which was recorded in full: a flood of bad
        tokens costs one line per source and window, yet every refusal is counted. Raises
        `AuditUnavailable`; not fsync'd."""
        record = self._envelope("auth_failure")
        record["who"] = {"transport": transport, "source_ip": source_ip}
        record["outcome"] = {
            "status": "rejected",
            "error": "unauthenticated",
            "reason": "repeated",
            "count": sum(counts.values()),
            "reasons": dict(sorted(counts.items())),
            "window_seconds": window_seconds,
        }
        self._append(record, durable=False)

    def secret_rotated(
        self,
        secret: str,
        *,
        source: str,
        principal: Principal | None = None,
        version: str | None = None,
    ) -> None:
        """Record that a secret was rotated: its name (`cluster:prod/token`) and where the
        new one came from (`vault:kv/pve/prod`, `file:/etc/...`) — never a value. fsync'd
        (rare and important); raises `AuditUnavailable`."""
        record = self._envelope("rotation")
        if principal is not None:
            record["who"] = _who(principal)
        record["what"] = _compact({"secret": secret, "source": source, "version": version})
        self._append(record, durable=True)

    def approval(
        self,
        action: str,
        approval_id: str,
        *,
        actor: Principal | None,
        status: str,
        request: Mapping[str, Any] | None = None,
        error_code: str | None = None,
        reason: str | None = None,
        os_user: str | None = None,
    ) -> None:
        """Record one step of a four-eyes approval (`gateway/approvals.py`): `action` is
        `requested`, `approved`, `denied`, `expired`, `used` or `refused`; `actor` who did
        it (None for an expiry, which nobody does); `request` the request's tool, cluster,
        requester and approvers, so every record names whose call it is; `os_user` the OS
        account behind a `local` actor (the CLI). Raises `AuditUnavailable`; fsync'd except
        for refusals, so a flood of bad attempts cannot become an fsync storm."""
        record = self._envelope("approval")
        if actor is not None:
            record["who"] = _who(actor) | _compact({"os_user": os_user})
        about = dict(request or {})
        record["what"] = _compact(
            {
                "approval_id": jsonable(approval_id),
                "action": action,
                "tool": about.get("tool"),
                "requester": jsonable(about["requester"]) if "requester" in about else None,
                "approvers": jsonable(about["approvers"]) if "approvers" in about else None,
                "rules": jsonable(about["rule_ids"]) if "rule_ids" in about else None,
                "binding": about.get("binding"),
            }
        )
        if about.get("cluster") is not None:
            record["where"] = {"cluster": about["cluster"]}
        record["outcome"] = _compact({"status": status, "error": error_code, "reason": reason})
        self._append(record, durable=action != "refused")

    def evidence_pruned(self, store: str, pruned: Sequence[tuple[str, int]]) -> None:
        """Record that evidence blobs past their retention are about to be deleted from
        `store`: their (sha256, bytes), so `audit verify` tells a pruned blob from a
        deleted one. Written (fsync'd) before the deletion; raises `AuditUnavailable`."""
        record = self._envelope("evidence_pruned")
        record["what"] = {
            "store": store,
            "blobs": [{"sha256": sha, "bytes": size} for sha, size in pruned],
        }
        self._append(record, durable=True)

    def checkpoint(self) -> dict[str, Any]:
        """Append a checkpoint now (fsync'd) and return it, to store off-host; raises
        `AuditUnavailable`. `pvemcp audit verify --checkpoint` then proves the log still
        holds that record, which catches truncation of everything up to it."""
        record = self._append(self._envelope("checkpoint"), durable=True)
        assert record is not None  # a disabled log raises above
        return record

    def close(self) -> None:
        """Write a final checkpoint if records were added since the last one, then release
        the files and flush syslog."""
        if self._checkpoint_every and self._since_checkpoint and self._fd is not None:
            try:
                self.checkpoint()
            except AuditUnavailable as exc:
                log.error("audit_checkpoint_failed", error=str(exc))
        with self._lock:
            for fd in (self._fd, self._dirfd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._dirfd = None
            self._head = None
        if self._sink is not None:
            self._sink.close()

    # -- building records -----------------------------------------------------------------

    def _envelope(self, phase: str, event_id: str | None = None) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "event_id": event_id or new_event_id(),
            "phase": phase,
            "time": utc_now(),
            "gateway": dict(self._gateway),
        }

    def _call_record(
        self,
        event_id: str,
        phase: str,
        principal: Principal,
        *,
        tool: str,
        tier: str,
        cluster: str | None,
        arguments: Mapping[str, Any] | None,
        decision: Decision | None,
        backend: str | None,
        details: CallDetails,
    ) -> dict[str, Any]:
        record = self._envelope(phase, event_id)
        record["who"] = _who(principal) | _compact(
            {
                "source_ip": details.get("source_ip"),
                "client": details.get("client"),
                "stated_reason": details.get("stated_reason"),
            }
        )
        raw = details.get("raw_arguments")
        record["what"] = _compact(
            {
                "tool": jsonable(tool),  # an unknown tool's name is the caller's text
                "tier": jsonable(tier),
                "arguments": jsonable(arguments) if arguments is not None else None,
                "args_hmac": (
                    args_hmac(self._hmac_key, raw) if self._hmac_key and raw is not None else None
                ),
                "schema_sha256": details.get("schema_sha256"),
                "rpc_id": details.get("rpc_id"),
                "undoes": details.get("undoes"),
            }
        )
        argv = details.get("argv")
        target = details.get("target")
        where = _compact(
            {
                "cluster": cluster,
                "backend": backend,
                "pve_token_id": details.get("pve_token_id"),
                "node": details.get("node"),
                "vmid": details.get("vmid"),
                "target": jsonable(target) if target is not None else None,
                "argv": jsonable(list(argv)) if argv is not None else None,
                "command": details.get("command"),
                "ssh_user": details.get("ssh_user"),
                "host_key": details.get("host_key"),
            }
        )
        if where:
            record["where"] = where
        verdict = _decision(decision) if decision is not None else {}
        approval = details.get("approval")
        if approval is not None:
            verdict["approval"] = jsonable(approval)
        if verdict:
            record["decision"] = verdict
        if "policy_hash" in details:
            record["policy_hash"] = details["policy_hash"]
        return record

    # -- writing --------------------------------------------------------------------------

    def _append(self, record: dict[str, Any], *, durable: bool) -> dict[str, Any] | None:
        """Seal `record` into the chain and append it (with any chain-break note before it
        and checkpoint after it); returns the record as written."""
        if self._path is None:
            if durable or self.require_for_reads:
                raise AuditUnavailable("the audit log is disabled (audit.enabled = false)")
            return None  # disabled: reads go unrecorded, risky calls are refused
        try:
            return self._append_now(record, durable=durable)
        except AuditUnavailable:
            phase = str(record["phase"])
            with self._lock:
                self.write_failures[phase] = self.write_failures.get(phase, 0) + 1
            raise

    def _append_now(self, record: dict[str, Any], *, durable: bool) -> dict[str, Any]:
        with self._lock:
            self._open()
            assert self._dirfd is not None
            try:
                fcntl.flock(self._dirfd, fcntl.LOCK_EX)
            except OSError as exc:
                raise self._unavailable("lock", exc) from None
            try:
                written = self._append_locked(record, durable=durable)
            finally:
                fcntl.flock(self._dirfd, fcntl.LOCK_UN)
            if self._sink is not None:  # under the lock, so syslog gets them in seq order
                for item, line in written:
                    self._sink.send(item, line)
        return record

    def _append_locked(
        self, record: dict[str, Any], *, durable: bool
    ) -> list[tuple[dict[str, Any], bytes]]:
        head = self._sync_head()
        batch: list[tuple[dict[str, Any], bytes]] = []
        prefix = b""
        if head.broken is not None:
            log.error("audit_chain_break", path=str(self._path), reason=head.broken)
            prefix = b"\n" if head.dangling else b""
            note = self._envelope("chain_break")
            note["reason"] = head.broken
            head = self._add(batch, note, head)
        if record["phase"] == "checkpoint":
            record.update(head_seq=head.seq, head_hash=head.hash)
        head = self._add(batch, record, head)
        every = self._checkpoint_every
        if every and record["phase"] != "checkpoint" and head.seq % every == 0:
            mark = self._envelope("checkpoint")
            mark.update(head_seq=head.seq, head_hash=head.hash)
            head = self._add(batch, mark, head)
        data = b"".join(line for _, line in batch)
        if self._rotate_bytes and self._size > 0 and self._size + len(data) > self._rotate_bytes:
            self._rotate()
            prefix = b""  # the torn line stays, unterminated, at the end of the old file
        assert self._fd is not None
        try:
            view = memoryview(prefix + data)
            while view:
                view = view[os.write(self._fd, view) :]
            if durable or head.phase == "checkpoint":
                os.fsync(self._fd)
        except OSError as exc:
            self._head, self._size = None, -1  # re-read the tail: it may hold a partial line
            raise self._unavailable("write", exc) from None
        self._size += len(prefix) + len(data)
        self._head = head
        for item, _ in batch:
            if item["phase"] == "checkpoint":
                self._last_checkpoint = item
                self._since_checkpoint = 0
            else:
                self._since_checkpoint += 1
        return batch

    @staticmethod
    def _add(batch: list[tuple[dict[str, Any], bytes]], record: dict[str, Any], head: Head) -> Head:
        line = seal(record, seq=head.seq + 1, prev_hash=head.hash)
        batch.append((record, line))
        return Head(record["seq"], record["hash"], record["phase"])

    def _sync_head(self) -> Head:
        """The chain's head as the file now stands: re-read when another writer appended,
        rotated or removed the file since this process last wrote."""
        assert self._path is not None
        assert self._fd is not None
        try:
            opened = os.fstat(self._fd)
            current = os.stat(self._path)
            moved = (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino)
        except FileNotFoundError:
            moved = True
        except OSError as exc:
            raise self._unavailable("stat", exc) from None
        if moved:  # rotated, replaced or removed under us: continue in the file at the path
            os.close(self._fd)
            self._fd = None
            try:
                opened = os.fstat(self._open())
            except OSError as exc:
                raise self._unavailable("stat", exc) from None
        if self._head is None or opened.st_size != self._size:
            try:
                self._head = load_head(self._path)
            except OSError as exc:
                raise self._unavailable("read", exc) from None
            self._size = opened.st_size
        return self._head

    def _open(self) -> int:
        """The live file's descriptor, opening it (and the directory) when needed."""
        assert self._path is not None
        try:
            if self._dirfd is None:
                self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._dirfd = os.open(
                    self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                )
            if self._fd is None:
                self._fd = os.open(
                    self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                os.fsync(self._dirfd)  # the new file's name is durable with its first record
                self._head, self._size = None, -1
        except OSError as exc:
            raise self._unavailable("open", exc) from None
        return self._fd

    def _rotate(self) -> None:
        """Rename the live file to the next `NAME.N` and continue in a fresh one."""
        assert self._path is not None
        assert self._fd is not None
        target = next_rotation(self._path)
        try:
            os.rename(self._path, target)
        except OSError as exc:
            raise self._unavailable("rotate", exc) from None
        os.close(self._fd)
        self._fd = None
        self._open()
        self._size = 0
        log.info("audit_rotated", path=str(self._path), rotated_to=str(target))

    def _unavailable(self, action: str, exc: OSError) -> AuditUnavailable:
        reason = exc.strerror or str(exc)
        return AuditUnavailable(f"cannot {action} the audit log {self._path}: {reason}")


def _who(principal: Principal) -> dict[str, Any]:
    who: dict[str, Any] = {"sub": principal.subject, "transport": principal.transport}
    for key, value in (
        ("iss", principal.issuer),
        ("client_id", principal.client_id),
        ("token_sha256", principal.token_sha256),
        ("session", principal.session),
    ):
        if value is not None:
            who[key] = value
    if principal.scopes:
        who["scopes"] = sorted(principal.scopes)
    return who


def _decision(decision: Decision) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        "effect": str(decision.effect),
        "rules": list(decision.rule_ids),
        "reason": decision.reason,
    }
    if decision.unresolved:
        verdict["unresolved"] = sorted(decision.unresolved)
    return verdict
