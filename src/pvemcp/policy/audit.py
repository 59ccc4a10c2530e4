"""The audit log: one JSON line per event, the system of record for every call.

A call above the `read` tier gets an *intent* record that is on disk (fsync'd) before the
backend is touched, and an *outcome* record after; a read gets one record. If the intent
cannot be written the call is refused: nothing risky runs unrecorded.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from pvemcp.policy.decision import Decision
from pvemcp.policy.principal import Principal

SCHEMA = "pvemcp.audit/1"


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


class AuditLog:
    """Appends records to a JSON-lines file opened with O_APPEND.

    `enabled=False` keeps nothing; the gateway then refuses every call that needs an intent
    record, so switching audit off can never make risky calls unrecorded.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path.expanduser() if path is not None else None
        self._fd: int | None = None
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        return self._path

    def _open(self) -> int:
        if self._path is None:
            raise AuditUnavailable("the audit log is disabled (audit.enabled = false)")
        if self._fd is None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._fd = os.open(
                    self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                raise AuditUnavailable(
                    f"cannot open the audit log {self._path}: {exc.strerror}"
                ) from None
        return self._fd

    def _append(self, record: dict[str, Any], *, durable: bool) -> None:
        if self._path is None and not durable:
            return  # disabled: reads go unrecorded, risky calls are refused by intent()
        with self._lock:
            fd = self._open()
            self._seq += 1
            record["seq"] = self._seq
            line = json.dumps(record, separators=(",", ":"), sort_keys=True, default=str) + "\n"
            try:
                os.write(fd, line.encode())
                if durable:
                    os.fsync(fd)
            except OSError as exc:
                raise AuditUnavailable(
                    f"cannot write the audit log {self._path}: {exc.strerror}"
                ) from None

    @staticmethod
    def _base(event_id: str, phase: str, principal: Principal) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "event_id": event_id,
            "phase": phase,
            "time": datetime.now(UTC).isoformat(timespec="microseconds"),
            "who": _who(principal),
        }

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
    ) -> None:
        """Durably record that a risky call is about to run; raises `AuditUnavailable`."""
        record = self._base(event_id, "intent", principal)
        record.update(
            what={"tool": tool, "tier": tier, "arguments": dict(arguments)},
            where={"cluster": cluster, "backend": backend},
            decision=_decision(decision),
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
        upids: list[str] | None = None,
        phase: str = "outcome",
    ) -> None:
        """Record how a call ended (`phase="outcome"`) or, for reads and refusals, the one
        record of it (`phase="record"`); raises `AuditUnavailable`.

        Not fsync'd: the intent already is, and a lost outcome shows as an intent without
        its pair, which is what verification looks for.
        """
        record = self._base(event_id, phase, principal)
        what: dict[str, Any] = {"tool": tool, "tier": tier}
        if arguments is not None:
            what["arguments"] = dict(arguments)
        record["what"] = what
        if cluster is not None:
            record["where"] = {"cluster": cluster}
        if decision is not None:
            record["decision"] = _decision(decision)
        result: dict[str, Any] = {"status": status, "duration_ms": round(duration_ms, 3)}
        if error_code is not None:
            result["error"] = error_code
        if upids:
            result["upids"] = upids
        record["outcome"] = result
        self._append(record, durable=False)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "effect": str(decision.effect),
        "rules": list(decision.rule_ids),
        "reason": decision.reason,
    }
