"""The evidence store: the full output of escape calls, kept beside the audit log.

The audit record of a shell, CLI, file or guest-exec call holds sizes and hashes; a
reviewer needs what the command actually printed, and the diff a write made, long after
the in-memory artifacts (`gateway/artifacts.py`) expired. Each piece is kept here as one
blob, named by the SHA-256 of its bytes (`ab/abcdef…`, sharded by the first two hex
digits), and the call's outcome record lists it (`outcome.evidence`: kind, sha256, bytes,
truncated). So the audit chain vouches for the blob: `pvemcp audit verify` recomputes
every referenced blob's hash and size, and a deleted or altered blob is reported like an
edited record.

Blobs are redacted with the gateway's redaction set *before* they are hashed and written:
a secret a command printed never reaches the disk. Each blob is capped
(`max_blob_bytes`, the rest is cut and the reference says `truncated`), the store is
capped (`max_total_bytes`), and a store that is full, short of disk space or unwritable
makes the gateway refuse escape calls before they run (`check`), as an unwritable audit
log does. Retention: blobs unused for `retention_days` are pruned (`prune`), and the
gateway writes the pruned hashes to the audit log first, so `verify` can tell a pruned
blob from a deleted one.

Files are 0600 in 0700 directories, written to a temporary name and renamed, so a blob
under its final name is always whole. Identical content is stored once; storing it again
refreshes its time, so a blob still in use is not pruned.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BLOB_ID = re.compile(r"[0-9a-f]{64}")
DAY = 86400.0
PRUNE_INTERVAL = 3600.0
"""How often a running gateway looks for blobs past their retention."""

KINDS = ("stdout", "stderr", "content", "before", "after", "diff")
"""What a blob holds: a command's streams, a file read's content, a write's old and new
content and their unified diff."""


class EvidenceUnavailable(Exception):
    """The store cannot take evidence now (full, short of disk, unwritable)."""


def blob_path(root: Path, sha256: str) -> Path:
    """Where the blob `sha256` lives under `root`; raises ValueError for anything but 64
    lowercase hex digits, so an id can never name a path outside the store."""
    if not BLOB_ID.fullmatch(sha256):
        raise ValueError("an evidence id is the blob's SHA-256: 64 lowercase hex digits")
    return root / sha256[:2] / sha256


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    """One blob as the audit outcome lists it."""

    kind: str
    sha256: str
    bytes: int
    truncated: bool

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "truncated": self.truncated,
        }


@dataclass(frozen=True, slots=True)
class Pruned:
    """A blob past its retention: removed after the audit log says so."""

    sha256: str
    bytes: int


class EvidenceSettings(Protocol):
    """What `EvidenceStore.from_config` reads (`pvemcp.config.AuditConfig` fits)."""

    @property
    def path(self) -> Path: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def evidence(self) -> bool: ...
    @property
    def evidence_dir(self) -> Path | None: ...
    @property
    def evidence_max_blob_bytes(self) -> int: ...
    @property
    def evidence_max_total_bytes(self) -> int: ...
    @property
    def evidence_min_free_bytes(self) -> int: ...
    @property
    def evidence_retention_days(self) -> float: ...


def evidence_root(config: EvidenceSettings) -> Path:
    """The store's directory: `evidence_dir`, or `evidence/` beside the audit log."""
    if config.evidence_dir is not None:
        return config.evidence_dir.expanduser()
    return config.path.expanduser().parent / "evidence"


class EvidenceStore:
    """Content-addressed blobs under `root`. Thread-safe within a process; several
    processes may share one store (names are content hashes, writes are renames), their
    size accounting then being per process."""

    def __init__(
        self,
        root: Path,
        *,
        max_blob_bytes: int = 16 * 1024 * 1024,
        max_total_bytes: int = 1024 * 1024 * 1024,
        min_free_bytes: int = 256 * 1024 * 1024,
        retention_days: float = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root.expanduser()
        self.max_blob_bytes = max_blob_bytes
        self.max_total_bytes = max_total_bytes
        self.min_free_bytes = min_free_bytes
        self.retention_days = retention_days
        self._clock = clock
        self._lock = threading.RLock()
        """Held by `keep` and through all of `prune` (re-entered by `remove`)."""
        self._total: int | None = None
        self._next_prune = 0.0

    @classmethod
    def from_config(cls, config: EvidenceSettings) -> EvidenceStore | None:
        """The store `[audit]` describes; None when `evidence = false` or the audit log
        itself is off (evidence without its records would prove nothing)."""
        if not config.evidence or not config.enabled:
            return None
        return cls(
            evidence_root(config),
            max_blob_bytes=config.evidence_max_blob_bytes,
            max_total_bytes=config.evidence_max_total_bytes,
            min_free_bytes=config.evidence_min_free_bytes,
            retention_days=config.evidence_retention_days,
        )

    # -- before a call -------------------------------------------------------------------

    def check(self) -> None:
        """Raise `EvidenceUnavailable` unless a blob can be written now: the directory
        exists or can be made, a file can be created in it, the disk has `min_free_bytes`
        free and the store is below `max_total_bytes`. Called before an escape call runs,
        so a call whose evidence could not be kept is refused instead."""
        probe = self.root / f".probe-{secrets.token_hex(8)}"
        try:
            self._mkdir(self.root)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
            stats = os.statvfs(self.root)
            total = self.total_bytes()
        except OSError as exc:
            raise self._unavailable("write to", exc) from None
        free = stats.f_bavail * stats.f_frsize
        if free < self.min_free_bytes:
            raise EvidenceUnavailable(
                f"the evidence store {self.root} has {free} bytes of disk free, less than "
                f"evidence_min_free_bytes ({self.min_free_bytes})"
            )
        if total >= self.max_total_bytes:
            raise EvidenceUnavailable(
                f"the evidence store {self.root} is full: it holds {total} bytes, "
                f"evidence_max_total_bytes is {self.max_total_bytes}"
            )

    # -- after a call --------------------------------------------------------------------

    def keep(self, kind: str, data: bytes, redact: Callable[[bytes], bytes]) -> EvidenceRef:
        """Store `data` (redacted with `redact` first, then cut at `max_blob_bytes`, and at
        the room left below `max_total_bytes`) and return its reference; raises
        `EvidenceUnavailable`."""
        data = redact(data)
        truncated = len(data) > self.max_blob_bytes
        if truncated:
            data = data[: self.max_blob_bytes]
        digest = hashlib.sha256(data).hexdigest()
        path = blob_path(self.root, digest)
        with self._lock:
            try:
                if path.is_file() and path.stat().st_size == len(data):
                    os.utime(path)  # in use again: restarts its retention
                else:
                    room = self.max_total_bytes - self.total_bytes()
                    if 0 < room < len(data):
                        # `check` saw room before the call, not this much: what fits is
                        # kept, not nothing, once the command has run.
                        data, truncated = data[:room], True
                        digest = hashlib.sha256(data).hexdigest()
                        path = blob_path(self.root, digest)
                    self._write(path, data)
            except OSError as exc:
                raise self._unavailable("write to", exc) from None
        return EvidenceRef(kind, digest, len(data), truncated)

    def keep_all(
        self, blobs: Mapping[str, bytes], redact: Callable[[bytes], bytes]
    ) -> tuple[list[EvidenceRef], EvidenceUnavailable | None]:
        """`keep` for each (kind, data), in order: the references of those kept, and the
        first failure (None when all were kept); a blob that fails does not lose the
        others'."""
        refs: list[EvidenceRef] = []
        failure: EvidenceUnavailable | None = None
        for kind, data in blobs.items():
            try:
                refs.append(self.keep(kind, data, redact))
            except EvidenceUnavailable as exc:
                failure = failure or exc
        return refs, failure

    def _write(self, path: Path, data: bytes) -> None:
        total = self.total_bytes()
        if total + len(data) > self.max_total_bytes:
            raise EvidenceUnavailable(
                f"the evidence store {self.root} is full: {total} + {len(data)} bytes would "
                f"pass evidence_max_total_bytes ({self.max_total_bytes})"
            )
        self._mkdir(path.parent)
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        os.rename(temporary, path)
        self._total = total + len(data)

    # -- reading -------------------------------------------------------------------------

    def blobs(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every blob file under the store (name = hash), with its stat. A shard or blob
        that vanishes while it is listed (another process sharing the store pruned it) is
        passed over, not an error."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if not (len(shard.name) == 2 and shard.is_dir()):
                continue
            try:
                names = sorted(shard.iterdir())
            except FileNotFoundError:
                continue
            for blob in names:
                if not BLOB_ID.fullmatch(blob.name):
                    continue
                try:
                    stat = blob.stat()
                except FileNotFoundError:
                    continue
                yield blob, stat

    def total_bytes(self) -> int:
        """What the blobs take, counted once per process and kept up to date after."""
        if self._total is None:
            self._total = sum(stat.st_size for _, stat in self.blobs())
        return self._total

    # -- retention -----------------------------------------------------------------------

    def prune_due(self) -> bool:
        """Whether a running gateway should prune now (at most every `PRUNE_INTERVAL`)."""
        if self.retention_days <= 0:
            return False
        now = self._clock()
        with self._lock:
            if now < self._next_prune:
                return False
            self._next_prune = now + PRUNE_INTERVAL
        return True

    def expired(self) -> list[Pruned]:
        """The blobs unused for `retention_days` (none when retention is 0: keep all)."""
        if self.retention_days <= 0:
            return []
        cutoff = self._clock() - self.retention_days * DAY
        try:
            return [
                Pruned(path.name, stat.st_size)
                for path, stat in self.blobs()
                if stat.st_mtime < cutoff
            ]
        except OSError:
            return []  # an unreadable store: `check` reports it

    def prune(self, record: Callable[[list[Pruned]], None]) -> list[Pruned]:
        """Remove the blobs past their retention once `record` put them on the audit log
        (if it raises, nothing is removed); returns them. All under the store's lock: a
        call keeping the same content meanwhile waits, then writes it anew, so its outcome
        record comes after the pruning record and `verify` wants the blob there. Listed
        and recorded without it, a blob re-used in between stayed, named as pruned after
        its newest reference: deleting it later passed `verify` as retention."""
        with self._lock:
            expired = self.expired()
            if expired:
                record(expired)
                self.remove(expired)
            return expired

    def remove(self, pruned: list[Pruned]) -> None:
        """Delete `pruned` (after the audit log recorded them); a blob already gone or
        re-used since (newer time) stays as it is."""
        cutoff = self._clock() - self.retention_days * DAY
        with self._lock:
            for item in pruned:
                path = blob_path(self.root, item.sha256)
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        if self._total is not None:
                            self._total -= item.bytes
                except OSError:
                    continue

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _mkdir(path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _unavailable(self, action: str, exc: OSError) -> EvidenceUnavailable:
        reason = exc.strerror or str(exc)
        return EvidenceUnavailable(f"cannot {action} the evidence store {self.root}: {reason}")
