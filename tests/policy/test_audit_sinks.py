"""Syslog forwarding with real sockets: UDP and TCP collectors on 127.0.0.1, and a dead one."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_sinks import (
    SyslogSink,
    SyslogTarget,
    parse_syslog_target,
    severity,
)
from tests.policy.test_audit_log import ALICE, DENY, intent, read, read_call

RFC5424 = re.compile(
    rb"<(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) pvemcp (?P<pid>\d+) (?P<msgid>\S+) - "
    rb"(?P<msg>\{.*\})"
)


def parse(message: bytes) -> re.Match[bytes]:
    match = RFC5424.fullmatch(message)
    assert match is not None, message
    return match


@pytest.fixture
def udp_collector() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def test_udp_collector_receives_every_record(tmp_path: Path, udp_collector: socket.socket) -> None:
    port = udp_collector.getsockname()[1]
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, syslog=f"udp:127.0.0.1:{port}", checkpoint_every=3)
    read_call(audit)
    intent(audit, "e-1")
    read_call(audit, ALICE, decision=DENY, status="denied", error_code="denied")
    audit.close()
    written = path.read_bytes().splitlines()
    assert len(written) == 4  # 3 records and the checkpoint after seq 3 (none due on close)
    received = [udp_collector.recv(65535) for _ in written]
    for raw, line in zip(received, written, strict=True):
        match = parse(raw)
        assert match["msg"] == line  # the canonical line itself: verifiable downstream
        record = json.loads(line)
        assert match["msgid"].decode() == record["phase"]
        assert match["time"].decode() == record["time"]
        assert int(match["pri"]) == 10 * 8 + severity(record)
    assert [int(parse(r)["pri"]) for r in received[:3]] == [86, 86, 85]  # info, info, notice


def test_tcp_collector_gets_octet_counted_frames(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(5)
        chunks: list[bytes] = []

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(65536):
                    chunks.append(data)

        thread = threading.Thread(target=accept)
        thread.start()
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(path, syslog=f"tcp:127.0.0.1:{server.getsockname()[1]}")
        read_call(audit)
        read_call(audit)
        audit.close()
        thread.join(5)
    stream = b"".join(chunks)
    frames = []
    while stream:
        length, _, rest = stream.partition(b" ")
        frames.append(rest[: int(length)])
        stream = rest[int(length) :]
    assert [parse(f)["msg"] for f in frames] == path.read_bytes().splitlines()


def test_unix_socket_gets_the_local_syslog_form(tmp_path: Path) -> None:
    address = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        audit = AuditLog(tmp_path / "audit.jsonl", syslog=f"unix:{address}")
        read_call(audit)
        audit.close()
        message = sock.recv(65535)
    line = (tmp_path / "audit.jsonl").read_bytes().rstrip(b"\n")
    assert re.fullmatch(rb"<86>pvemcp\[\d+\]: " + re.escape(line), message)


def test_dead_collector_never_blocks_or_fails_a_call(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, syslog=f"tcp:127.0.0.1:{port}")
    started = time.monotonic()
    for _ in range(50):
        read_call(audit)
    intent(audit, "risky")  # the file write is what counts for a risky call
    elapsed = time.monotonic() - started
    audit.close()
    assert elapsed < 2
    assert len(read(path)) == 51
    sink = audit._sink  # the drop counter is what operators are told about
    assert sink is not None
    assert sink.dropped == 51


def test_full_queue_drops_instead_of_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pvemcp.policy.audit_sinks._QUEUE_SIZE", 2)
    sink = SyslogSink(SyslogTarget("udp", "127.0.0.1", 9))
    gate = threading.Event()
    monkeypatch.setattr(sink, "_deliver", lambda *_: gate.wait(5))
    for _ in range(10):
        sink.send({"phase": "record"}, b"{}")
    assert sink.dropped >= 7
    gate.set()
    sink.close()


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        ("unix:/dev/log", SyslogTarget("unix", "/dev/log")),
        ("udp:siem.example:514", SyslogTarget("udp", "siem.example", 514)),
        ("tcp:10.0.0.5:6514", SyslogTarget("tcp", "10.0.0.5", 6514)),
        ("udp:[::1]:514", SyslogTarget("udp", "::1", 514)),
    ],
)
def test_parse_syslog_target(spec: str, target: SyslogTarget) -> None:
    assert parse_syslog_target(spec) == target
    assert str(target) == spec


@pytest.mark.parametrize(
    "spec", ["syslog", "udp:host", "tcp::514", "udp:host:0", "udp:host:99999", "unix:dev/log"]
)
def test_parse_syslog_target_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="unix:/dev/log"):
        parse_syslog_target(spec)
