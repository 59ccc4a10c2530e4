"""The audit writer: records and their fields, durability, the chain across restarts,
rotation, checkpoints, several writers, and what must never be stored."""

from __future__ import annotations

import functools
import itertools
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from pvemcp.config import AuditConfig
from pvemcp.policy.audit import AuditLog, AuditUnavailable, args_hmac, new_event_id
from pvemcp.policy.audit_chain import GENESIS, line_hash, log_files
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.principal import Principal

ALICE = Principal(
    subject="alice",
    transport="http",
    client_id="agent-7",
    issuer="https://idp.example",
    scopes=frozenset({"pve.write", "pve.read"}),
    token_sha256="ab" * 32,
    session="s-1",
)
LOCAL = Principal.local("stdio")
ALLOW = Decision(Effect.ALLOW, ("ops.write",), "ops may write")
DENY = Decision(Effect.DENY, ("builtin.default-deny",), "no rule allows it")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def intent(audit: AuditLog, event_id: str, **extra: Any) -> None:
    """Write one intent record from sync test code (it is async in the gateway)."""
    values: dict[str, Any] = {
        "tool": "proxmox_guest_power",
        "tier": "write",
        "cluster": "prod",
        "arguments": {"vmid": 100, "action": "start"},
        "decision": ALLOW,
        "backend": "rest",
    }
    principal = extra.pop("principal", ALICE)
    values.update(extra)
    anyio.run(functools.partial(audit.intent, event_id, principal, **values))


def read_call(audit: AuditLog, principal: Principal = LOCAL, **extra: Any) -> None:
    values: dict[str, Any] = {
        "tool": "proxmox_node_list",
        "tier": "read",
        "cluster": "prod",
        "arguments": {},
        "decision": ALLOW,
        "status": "ok",
        "duration_ms": 3.25,
        "phase": "record",
    }
    values.update(extra)
    audit.outcome(new_event_id(), principal, **values)


def write_sample_log(path: Path, *, checkpoint_every: int = 6, rotate_bytes: int = 0) -> AuditLog:
    """A realistic log of about 20 records using every phase; returns the closed writer."""
    audit = AuditLog(
        path, checkpoint_every=checkpoint_every, rotate_bytes=rotate_bytes, hmac_key=b"k" * 32
    )
    for round_ in range(3):
        read_call(audit, tool="proxmox_guest_list", arguments={"limit": round_ + 1})
        event = new_event_id()
        intent(
            audit,
            event,
            node="pve1",
            vmid=100 + round_,
            argv=["qm", "start", str(100 + round_)],
            command=f"qm start {100 + round_}",
            raw_arguments={"vmid": 100 + round_, "action": "start"},
            policy_hash="p" * 64,
        )
        audit.outcome(
            event,
            ALICE,
            tool="proxmox_guest_power",
            tier="write",
            cluster="prod",
            arguments=None,
            decision=None,
            status="ok",
            duration_ms=120.5,
            upids=[f"UPID:pve1:0000{round_}:qmstart:100:root@pam:"],
            exitstatus="OK",
            exit_code=0,
            out_bytes=12,
            out_sha256="c" * 64,
            truncated=False,
        )
        read_call(
            audit,
            ALICE,
            tool="proxmox_guest_delete",
            tier="destructive",
            decision=DENY,
            status="denied",
            error_code="denied",
        )
    audit.auth_failure("expired token", source_ip="192.0.2.7", token_sha256="d" * 64)
    audit.secret_rotated("cluster:prod/token", source="vault:kv/pve/prod", version="7")
    read_call(audit, tool="proxmox_nope", tier="unknown", status="rejected", error_code="x")
    audit.close()
    return audit


# -- records -------------------------------------------------------------------------------


def test_sample_log_has_every_phase_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_sample_log(path)
    records = read(path)
    assert 18 <= len(records) <= 24
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    phases = {r["phase"] for r in records}
    assert phases == {"record", "intent", "outcome", "auth_failure", "rotation", "checkpoint"}
    assert records[-1]["phase"] == "checkpoint"  # written on close
    assert verify_files([path]).ok


@pytest.mark.anyio
async def test_intent_record_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    await audit.intent(
        "e-1",
        ALICE,
        tool="proxmox_node_exec",
        tier="escape",
        cluster="prod",
        arguments={"node": "pve1", "argv": ["uptime"]},
        decision=Decision(Effect.ALLOW, ("ops.exec",), "named", frozenset({"pool"})),
        backend="ssh",
        node="pve1",
        vmid=101,
        target={"pool": "web"},
        argv=["uptime"],
        command="uptime",
        ssh_user="pvemcp",
        host_key="SHA256:abc",
        schema_sha256="s" * 64,
        rpc_id=7,
        source_ip="192.0.2.1",
        client="claude-code/1.0",
        stated_reason="check load",
        approval={"id": "c-1", "approver": "bob"},
        policy_hash="p" * 64,
    )
    audit.close()
    (record,) = read(path)
    assert record["schema"] == "pvemcp.audit/1"
    assert record["phase"] == "intent"
    assert record["event_id"] == "e-1"
    assert record["time"].endswith("Z")
    assert set(record["gateway"]) == {"host", "pid", "version"}
    assert record["who"] == {
        "sub": "alice",
        "transport": "http",
        "iss": "https://idp.example",
        "client_id": "agent-7",
        "token_sha256": "ab" * 32,
        "session": "s-1",
        "scopes": ["pve.read", "pve.write"],
        "source_ip": "192.0.2.1",
        "client": "claude-code/1.0",
        "stated_reason": "check load",
    }
    assert record["what"] == {
        "tool": "proxmox_node_exec",
        "tier": "escape",
        "arguments": {"node": "pve1", "argv": ["uptime"]},
        "schema_sha256": "s" * 64,
        "rpc_id": 7,
    }
    assert record["where"] == {
        "cluster": "prod",
        "backend": "ssh",
        "node": "pve1",
        "vmid": 101,
        "target": {"pool": "web"},
        "argv": ["uptime"],
        "command": "uptime",
        "ssh_user": "pvemcp",
        "host_key": "SHA256:abc",
    }
    assert record["decision"] == {
        "effect": "allow",
        "rules": ["ops.exec"],
        "reason": "named",
        "unresolved": ["pool"],
        "approval": {"id": "c-1", "approver": "bob"},
    }
    assert record["policy_hash"] == "p" * 64


def test_outcome_record_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.outcome(
        "e-1",
        LOCAL,
        tool="proxmox_node_exec",
        tier="escape",
        cluster="prod",
        arguments=None,
        decision=None,
        status="error",
        duration_ms=1.23456,
        error_code="command_failed",
        upids=["UPID:x"],
        backend="ssh",
        exitstatus="command 'x' failed",
        exit_code=2,
        signal="TERM",
        timed_out=True,
        out_bytes=10,
        out_sha256="a" * 64,
        err_bytes=3,
        err_sha256="b" * 64,
        truncated=True,
        argv=["false"],
    )
    audit.close()
    (record,) = read(path)
    assert record["phase"] == "outcome"
    assert record["who"] == {"sub": "local", "transport": "stdio"}
    assert record["what"] == {"tool": "proxmox_node_exec", "tier": "escape"}
    assert record["where"] == {"cluster": "prod", "backend": "ssh", "argv": ["false"]}
    assert "decision" not in record
    assert record["outcome"] == {
        "status": "error",
        "duration_ms": 1.235,
        "error": "command_failed",
        "upids": ["UPID:x"],
        "exitstatus": "command 'x' failed",
        "exit_code": 2,
        "signal": "TERM",
        "timed_out": True,
        "out_bytes": 10,
        "out_sha256": "a" * 64,
        "err_bytes": 3,
        "err_sha256": "b" * 64,
        "truncated": True,
    }


def test_auth_failure_and_secret_rotation_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.auth_failure(
        "token audience mismatch",
        source_ip="198.51.100.4",
        token_sha256="e" * 64,
        issuer="https://idp.example",
        error_code="invalid_token",
    )
    audit.secret_rotated("cluster:prod/token", source="vault:kv/pve/prod", principal=LOCAL)
    audit.close()
    failure, rotation = read(path)
    assert failure["phase"] == "auth_failure"
    assert failure["who"] == {
        "transport": "http",
        "source_ip": "198.51.100.4",
        "token_sha256": "e" * 64,
        "iss": "https://idp.example",
    }
    assert failure["outcome"] == {
        "status": "rejected",
        "error": "invalid_token",
        "reason": "token audience mismatch",
    }
    assert rotation["phase"] == "rotation"
    assert rotation["what"] == {"secret": "cluster:prod/token", "source": "vault:kv/pve/prod"}
    assert rotation["who"] == {"sub": "local", "transport": "stdio"}


def test_redacted_arguments_are_stored_and_raw_ones_never(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, hmac_key=b"key")
    secret = "hunter2-very-secret"
    raw = {"user": "root", "password": secret, "nested": {"token": secret}}
    redacted = {"user": "root", "password": "***", "nested": {"token": "***"}}
    intent(audit, "e-1", arguments=redacted, raw_arguments=raw)
    read_call(audit, arguments=redacted, raw_arguments=raw)
    audit.close()
    text = path.read_text()
    assert secret not in text
    assert all(r["what"]["arguments"] == redacted for r in read(path))


def test_args_hmac_present_with_a_key_equal_for_equal_raw_arguments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, hmac_key=b"secret-key")
    raw = {"vmid": 100, "password": "pw1"}
    intent(audit, "a", raw_arguments=raw)
    intent(audit, "b", raw_arguments={"password": "pw1", "vmid": 100})  # other key order
    intent(audit, "c", raw_arguments={"vmid": 100, "password": "pw2"})
    intent(audit, "d")  # no raw arguments: nothing to HMAC
    audit.close()
    a, b, c, d = (r["what"].get("args_hmac") for r in read(path))
    assert a == b == args_hmac(b"secret-key", raw)
    assert len(a) == 64
    assert c not in (None, a)
    assert d is None
    assert args_hmac(b"other-key", raw) != a


def test_no_args_hmac_without_a_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    intent(audit, "a", raw_arguments={"vmid": 100})
    audit.close()
    assert "args_hmac" not in read(path)[0]["what"]


# -- durability and failure -----------------------------------------------------------------


def test_intent_and_checkpoints_are_fsynced_outcomes_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    audit = AuditLog(tmp_path / "audit.jsonl")
    read_call(audit)  # first open: the directory is fsync'd once for the new file name
    synced.clear()
    read_call(audit)
    assert synced == []
    intent(audit, "e")
    assert len(synced) == 1
    audit.checkpoint()
    assert len(synced) == 2
    audit.close()


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit" / "audit.jsonl"
    audit = AuditLog(path)
    read_call(audit)
    audit.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_unwritable_log_makes_intent_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created under it, even by root")
    audit = AuditLog(blocker / "audit.jsonl")
    with pytest.raises(AuditUnavailable, match="cannot open the audit log"):
        intent(audit, "e")
    with pytest.raises(AuditUnavailable):
        read_call(audit)
    with pytest.raises(AuditUnavailable):
        audit.checkpoint()
    # Counted by phase, for /metrics: an operator sees what went unrecorded.
    assert audit.write_failures == {"intent": 1, "record": 1, "checkpoint": 1}
    audit.close()


def test_disabled_log_refuses_intents_and_drops_reads() -> None:
    audit = AuditLog(None)
    with pytest.raises(AuditUnavailable, match="disabled"):
        intent(audit, "e")
    read_call(audit)  # no error, nothing kept
    audit.auth_failure("bad", source_ip=None, token_sha256=None)
    assert audit.write_failures == {}, "a disabled log is not failing"
    audit.close()


def test_disabled_log_that_must_record_reads_refuses_them() -> None:
    audit = AuditLog(None, require_for_reads=True)
    with pytest.raises(AuditUnavailable, match="disabled"):
        read_call(audit)
    audit.close()


def test_from_config_maps_every_setting(tmp_path: Path) -> None:
    config = AuditConfig(
        path=tmp_path / "a.jsonl",
        rotate_bytes=1234,
        checkpoint_every=3,
        hmac_key=SecretStr("k"),
        syslog="udp:127.0.0.1:5514",
        require_for_reads=True,
    )
    audit = AuditLog.from_config(config)
    assert audit.path == tmp_path / "a.jsonl"
    assert audit.require_for_reads
    intent(audit, "e", raw_arguments={"a": 1})
    audit.close()
    first, *_ = (r for f in log_files(tmp_path / "a.jsonl") for r in read(f))
    assert first["what"]["args_hmac"] == args_hmac(b"k", {"a": 1})
    assert AuditLog.from_config(AuditConfig(enabled=False)).path is None
    with pytest.raises(ValueError, match="bad syslog target"):
        AuditLog.from_config(AuditConfig(syslog="smtp:x"))


# -- the chain across restarts, rotation and writers --------------------------------------------


def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for _ in range(3):
        audit = AuditLog(path)
        read_call(audit)
        intent(audit, "e")
        audit.close()
    records = read(path)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert verify_files([path]).ok


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, rotate_bytes=3000)
    for _ in range(20):
        read_call(audit)
    audit.close()
    files = log_files(path)
    assert len(files) >= 4
    assert [f.name for f in files[:2]] == ["audit.jsonl.1", "audit.jsonl.2"]
    assert all(f.stat().st_size <= 3000 for f in files)
    chained = [r for f in files for r in read(f)]
    assert [r["seq"] for r in chained] == list(range(1, 21))
    for older, newer in itertools.pairwise(files):
        assert read(newer)[0]["prev_hash"] == read(older)[-1]["hash"]
    assert verify_files(files).ok


def test_restart_after_rotation_continues_from_the_newest_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, rotate_bytes=3000)
    for _ in range(10):
        read_call(audit)
    audit.close()
    path.rename(path.with_name(path.name + ".99"))  # as if the process stopped right after
    audit = AuditLog(path, rotate_bytes=3000)
    read_call(audit)
    audit.close()
    assert read(path)[0]["seq"] == 11
    assert verify_files(log_files(path)).ok


def test_two_writers_on_one_log_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(path, rotate_bytes=2500), AuditLog(path, rotate_bytes=2500)
    for _ in range(8):
        read_call(first)
        read_call(second)
        intent(second, "e")
    first.close()
    second.close()
    files = log_files(path)
    assert len(files) > 2
    report = verify_files(files)
    assert report.ok, report.summary()
    assert (report.first_seq, report.last_seq) == (1, 24)


def test_concurrent_threads_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)

    def work() -> None:
        for _ in range(25):
            read_call(audit)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()
    report = verify_files([path])
    assert report.ok
    assert report.last_seq == 100


def test_torn_tail_on_restart_gets_a_chain_break_note(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    read_call(audit)
    read_call(audit)
    audit.close()
    with path.open("ab") as fh:
        fh.write(b'{"seq":3,"half a rec')  # a crash in the middle of a write
    audit = AuditLog(path)
    read_call(audit)
    audit.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[2] == b'{"seq":3,"half a rec'  # terminated, not glued to the next record
    note, after = json.loads(lines[3]), json.loads(lines[4])
    assert note["phase"] == "chain_break"
    assert note["reason"].startswith("invalid_json")
    assert note["prev_hash"] == line_hash(lines[2])
    assert note["seq"] == 3
    assert (after["seq"], after["prev_hash"]) == (4, note["hash"])
    report = verify_files([path])
    assert [(p.line, p.kind) for p in report.problems] == [(3, "invalid_json"), (4, "chain_break")]


def test_edited_tail_on_restart_gets_a_chain_break_note(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    read_call(audit)
    read_call(audit)
    audit.close()
    path.write_bytes(path.read_bytes().replace(b'"status":"ok"', b'"status":"OK"'))
    audit = AuditLog(path)
    read_call(audit)
    audit.close()
    records = read(path)
    assert records[2]["phase"] == "chain_break"
    assert records[2]["reason"].startswith("hash_mismatch")
    assert records[2]["seq"] == 3
    kinds = [p.kind for p in verify_files([path]).problems]
    assert kinds == ["hash_mismatch", "hash_mismatch", "chain_break"]


# -- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_every_n_records_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, checkpoint_every=4)
    for _ in range(9):
        read_call(audit)
    audit.close()
    records = read(path)
    marks = [(r["seq"], r["head_seq"]) for r in records if r["phase"] == "checkpoint"]
    assert marks == [(5, 4), (9, 8), (12, 11)]  # after seq 4 and 8, then on close
    for record in records:
        if record["phase"] == "checkpoint":
            assert record["head_hash"] == record["prev_hash"]
    assert audit.last_checkpoint is not None
    assert audit.last_checkpoint["seq"] == 12
    assert verify_files([path]).ok


def test_no_checkpoint_before_checkpoint_every_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)  # the gateway tests' writer: no checkpoints at all
    for _ in range(4):
        read_call(audit)
    audit.close()
    assert [r["seq"] for r in read(path)] == [1, 2, 3, 4]
    audit = AuditLog(path, checkpoint_every=1000)
    audit.close()  # nothing written by this writer: no closing checkpoint either
    assert len(read(path)) == 4


def test_checkpoint_on_demand_is_returned_for_shipping(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    read_call(audit)
    mark = audit.checkpoint()
    audit.close()
    assert mark == read(path)[-1]
    assert mark["head_seq"] == 1
    assert audit.last_checkpoint == mark
    assert verify_files([path], checkpoint=mark).ok
