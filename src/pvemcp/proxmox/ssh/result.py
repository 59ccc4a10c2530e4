"""What one remote command did: the exact command, its status and its output, as captured.

The bytes are kept raw (binary output is not altered) and hashed for the audit log; text
for people or models comes from `stdout_text`/`stderr_text`, cut at the inline cap and
stripped of control characters. Two caps apply: `output_cap` bytes per stream are shown
inline (`truncated` when a stream had more) and up to the pool's capture cap
(`artifact_max_bytes`) are read, so the gateway can keep the rest as an artifact
(`capture_truncated` when even that was not enough: reading stopped and the channel was
closed, so the remote program saw a broken pipe).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pvemcp.proxmox.ssh.command import printable


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One command run on a node over SSH."""

    node: str
    user: str
    host_key_fingerprint: str
    """`SHA256:...` of the host key the connection verified."""
    connection_id: int
    """Serial number of the pooled connection that ran it (reuse and reconnects show here)."""
    argv: tuple[str, ...]
    command: str
    """The exact string sent over SSH (`timeout --kill-after=5s 60s pvesh get /version`)."""
    timeout: float
    output_cap: int
    exit_code: int | None
    """None when the command was cut off (timeout, capture cap) before it reported one."""
    signal: str | None
    """The signal that ended the remote process, as sshd reports it (`KILL`)."""
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_overflow: bool
    """stdout had more than the capture cap; `stdout` holds the first capture-cap bytes."""
    stderr_overflow: bool
    duration: float
    """Seconds from opening the channel to its close."""

    @property
    def truncated(self) -> bool:
        """A stream had more than `output_cap` bytes: the inline text is cut."""
        return (
            self.capture_truncated
            or len(self.stdout) > self.output_cap
            or len(self.stderr) > self.output_cap
        )

    @property
    def capture_truncated(self) -> bool:
        """A stream had more than the capture cap: bytes beyond it were never read."""
        return self.stdout_overflow or self.stderr_overflow

    @property
    def stdout_sha256(self) -> str:
        return hashlib.sha256(self.stdout).hexdigest()

    @property
    def stderr_sha256(self) -> str:
        return hashlib.sha256(self.stderr).hexdigest()

    @property
    def stdout_text(self) -> str:
        """The inline part of stdout as safe text."""
        return printable(self.stdout[: self.output_cap])

    @property
    def stderr_text(self) -> str:
        return printable(self.stderr[: self.output_cap])

    def audit_fields(self) -> dict[str, Any]:
        """The fields the audit record needs (no output, only its size and hashes)."""
        return {
            "node": self.node,
            "user": self.user,
            "host_key_fingerprint": self.host_key_fingerprint,
            "argv": list(self.argv),
            "command": self.command,
            "timeout": self.timeout,
            "output_cap": self.output_cap,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "duration": round(self.duration, 6),
            "stdout_bytes": len(self.stdout),
            "stderr_bytes": len(self.stderr),
            "stdout_sha256": self.stdout_sha256,
            "stderr_sha256": self.stderr_sha256,
            "truncated": self.truncated,
            "capture_truncated": self.capture_truncated,
        }
