"""Forwarding audit records to syslog, so a copy leaves the host as soon as it is written.

The file is the system of record: a risky call waits for its intent record to be on disk,
never for syslog. Records are queued and sent by one background thread, so a slow or dead
collector cannot block a call; when the queue is full or the collector is down, messages
are dropped and counted, and the collector sees the gap in `seq`.

Formats: RFC 5424 over UDP (one datagram per record) and TCP (RFC 6587 octet counting);
the local `/dev/log` socket gets the `<PRI>TAG[PID]: MSG` form that journald and rsyslog
both parse. The message is the record's canonical JSON line, hash included, so a collector
can verify the chain on its side too.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

FACILITY_AUTHPRIV = 10
"""Audit goes where security messages go (`/var/log/auth.log`, `secure`), not `user`."""

_SEVERITY_ERR = 3
_SEVERITY_NOTICE = 5
_SEVERITY_INFO = 6
_QUEUE_SIZE = 10_000
_CONNECT_TIMEOUT = 5.0
_MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where syslog messages go: a unix socket path, or a host and port over UDP/TCP."""

    kind: Literal["unix", "udp", "tcp"]
    address: str
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.address}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.kind}:{host}:{self.port}"


def parse_syslog_target(spec: str) -> SyslogTarget:
    """Parse `unix:/dev/log`, `udp:HOST:PORT` or `tcp:HOST:PORT` (IPv6 hosts in brackets);
    raises ValueError with the accepted forms."""
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest.startswith("/"):
        return SyslogTarget("unix", rest)
    if kind in ("udp", "tcp"):
        host, _, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return SyslogTarget(kind, host, int(port))  # type: ignore[arg-type]
    raise ValueError(
        f"bad syslog target {spec!r}: use unix:/dev/log, udp:HOST:PORT or tcp:HOST:PORT"
    )


def severity(record: Mapping[str, Any]) -> int:
    """A chain break is an error, refusals and auth failures are notices, the rest info."""
    phase = record.get("phase")
    if phase == "chain_break":
        return _SEVERITY_ERR
    outcome = record.get("outcome")
    status = outcome.get("status") if isinstance(outcome, Mapping) else None
    if phase == "auth_failure" or status in ("denied", "rejected"):
        return _SEVERITY_NOTICE
    return _SEVERITY_INFO


class SyslogSink:
    """Sends each record as one syslog message from a background thread."""

    def __init__(self, target: SyslogTarget, *, app: str = "pvemcp") -> None:
        self.target = target
        self._app = app
        self._host = socket.gethostname().split(".")[0] or "-"
        self._queue: queue.Queue[tuple[int, str, str, bytes] | None] = queue.Queue(_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._addr: Any = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._failing = False
        self.dropped = 0
        """Messages not delivered since start (queue full or collector unreachable)."""

    def send(self, record: Mapping[str, Any], line: bytes) -> None:
        """Queue one record (its canonical line) for delivery; never blocks."""
        self._ensure_thread()
        item = (
            FACILITY_AUTHPRIV * 8 + severity(record),
            str(record.get("time", "-")),
            str(record.get("phase", "-")),
            line.rstrip(b"\n"),
        )
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (waiting at most `timeout` seconds), then stop."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pvemcp-audit-syslog", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._deliver(*item)
        self._disconnect()

    def _deliver(self, pri: int, when: str, phase: str, body: bytes) -> None:
        if self._failing and time.monotonic() < self._retry_at:
            self.dropped += 1
            return
        try:
            self._transmit(self._frame(pri, when, phase, body))
        except OSError as exc:
            self._disconnect()
            self.dropped += 1
            if not self._failing:
                log.warning("audit_syslog_unavailable", target=str(self.target), error=str(exc))
            self._failing = True
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            return
        if self._failing:
            log.warning("audit_syslog_restored", target=str(self.target), dropped=self.dropped)
        self._failing = False
        self._backoff = 1.0

    def _frame(self, pri: int, when: str, phase: str, body: bytes) -> bytes:
        if self.target.kind == "unix":
            return f"<{pri}>{self._app}[{os.getpid()}]: ".encode() + body
        header = f"<{pri}>1 {when} {self._host} {self._app} {os.getpid()} {phase} - ".encode()
        message = header + body
        if self.target.kind == "tcp":
            return f"{len(message)} ".encode() + message
        return message

    def _transmit(self, data: bytes) -> None:
        sock = self._sock or self._connect()
        if self.target.kind == "udp":
            sock.sendto(data, self._addr)
        elif sock.type == socket.SOCK_STREAM and self.target.kind == "unix":
            sock.sendall(data + b"\0")  # stream /dev/log frames messages with NUL
        else:
            sock.sendall(data)

    def _connect(self) -> socket.socket:
        target = self.target
        if target.kind == "unix":
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.connect(target.address)
            except OSError:
                sock.close()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(target.address)
                except OSError:
                    sock.close()
                    raise
        else:
            kind = socket.SOCK_DGRAM if target.kind == "udp" else socket.SOCK_STREAM
            family, socktype, proto, _, addr = socket.getaddrinfo(
                target.address, target.port, type=kind
            )[0]
            sock = socket.socket(family, socktype, proto)
            if target.kind == "tcp":
                sock.settimeout(_CONNECT_TIMEOUT)
                try:
                    sock.connect(addr)
                except OSError:
                    sock.close()
                    raise
            self._addr = addr
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
