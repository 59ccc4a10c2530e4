"""Verification: the tamper matrix on a real log, truncation against checkpoints, rotated
files, and `show` with its filters and commands."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvemcp.config import AuditConfig
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_chain import canonical, log_files, record_hash, seal
from pvemcp.policy.audit_commands import (
    checkpoint_command,
    load_checkpoint,
    parse_when,
    show_command,
    verify_command,
)
from pvemcp.policy.audit_verify import VerifyReport, format_line, show, verify_files
from pvemcp.policy.principal import Principal
from tests.policy.test_audit_log import ALICE, intent, read, read_call, write_sample_log


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a ~20-record log with every phase, and its last checkpoint."""
    path = tmp_path_factory.mktemp("sample") / "audit.jsonl"
    audit = write_sample_log(path)
    assert audit.last_checkpoint is not None
    return path.read_bytes(), audit.last_checkpoint


def lines_of(data: bytes) -> list[bytes]:
    return data.rstrip(b"\n").split(b"\n")


def verify_bytes(
    tmp_path: Path, data: bytes, checkpoint: dict[str, Any] | None = None
) -> VerifyReport:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(data)
    return verify_files([path], checkpoint=checkpoint)


def join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every scalar in a record with the keys/indices leading to it."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if value is None:
        return 0
    text = str(value)
    return text[:-1] + ("X" if text[-1:] != "X" else "Y") if text else "X"


def set_at(record: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        record = record[key]
    record[path[-1]] = value


def test_the_sample_log_verifies(tmp_path: Path, sample: tuple[bytes, dict[str, Any]]) -> None:
    data, mark = sample
    report = verify_bytes(tmp_path, data, mark)
    assert report.ok, report.summary()
    assert report.records == len(lines_of(data))
    assert report.last_checkpoint_seq == report.last_seq
    assert report.unpaired_intents == []


def test_every_field_of_every_record_changed_is_detected_at_its_line(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    data, _ = sample
    lines = lines_of(data)
    cases = 0
    for index, raw in enumerate(lines):
        record = json.loads(raw)
        for path, value in leaves(record):
            forged = json.loads(raw)
            set_at(forged, path, changed(value))
            tampered = [*lines[:index], canonical(forged), *lines[index + 1 :]]
            report = verify_bytes(tmp_path, join(tampered))
            first = report.first_problem
            assert first is not None, f"line {index + 1} field {path} change undetected"
            assert first.line == index + 1, (path, str(first))
            assert first.kind == "hash_mismatch", (path, str(first))
            cases += 1
    assert cases > 300


def test_a_flipped_byte_in_every_field_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    data, _ = sample
    lines = lines_of(data)
    for index, raw in enumerate(lines):
        for path, value in leaves(json.loads(raw)):
            token = json.dumps(value, ensure_ascii=False).encode()
            at = raw.find(b'"' + str(path[-1]).encode() + b'":' + token)
            if at < 0:
                at = raw.find(token)  # list items
            assert at >= 0, (path, value)
            at += len(token) // 2 + (0 if isinstance(path[-1], int) else len(str(path[-1])) + 3)
            flipped = raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]
            report = verify_bytes(tmp_path, join([*lines[:index], flipped, *lines[index + 1 :]]))
            assert report.first_problem is not None, (index, path)
            assert report.first_problem.line == index + 1


def test_deleted_record_is_detected(tmp_path: Path, sample: tuple[bytes, dict[str, Any]]) -> None:
    lines = lines_of(sample[0])
    for index in range(len(lines) - 1):  # deleting the last one is tail truncation (below)
        report = verify_bytes(tmp_path, join(lines[:index] + lines[index + 1 :]))
        first = report.first_problem
        assert first is not None
        assert (first.line, first.kind) == (index + 1, "seq_gap" if index else "missing_start")


def test_inserted_forged_record_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    lines = lines_of(sample[0])
    victim = json.loads(lines[4])
    # Own hash recomputed, but linked to the wrong record.
    forged = dict(victim, event_id="forged")
    wrong_link = seal(forged, seq=victim["seq"] + 1, prev_hash=json.loads(lines[2])["hash"])
    report = verify_bytes(tmp_path, join([*lines[:5], wrong_link.rstrip(), *lines[5:]]))
    assert report.first_problem is not None
    assert (report.first_problem.line, report.first_problem.kind) == (6, "prev_hash_mismatch")
    # Linked correctly: the record after it no longer links.
    forged = dict(victim, event_id="forged")
    right_link = seal(forged, seq=victim["seq"] + 1, prev_hash=victim["hash"])
    report = verify_bytes(tmp_path, join([*lines[:5], right_link.rstrip(), *lines[5:]]))
    assert report.first_problem is not None
    assert report.first_problem.line == 7
    assert {p.kind for p in report.problems} == {"seq_out_of_order", "prev_hash_mismatch"}


def test_duplicated_record_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    lines = lines_of(sample[0])
    report = verify_bytes(tmp_path, join([*lines[:8], lines[7], *lines[8:]]))
    assert [(p.line, p.kind) for p in report.problems] == [
        (9, "seq_out_of_order"),
        (9, "prev_hash_mismatch"),
    ]


def test_reordered_records_are_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    lines = lines_of(sample[0])
    for index in range(len(lines) - 1):
        swapped = [*lines[:index], lines[index + 1], lines[index], *lines[index + 2 :]]
        report = verify_bytes(tmp_path, join(swapped))
        assert report.first_problem is not None
        assert report.first_problem.line == index + 1


def test_seq_gap_with_a_valid_link_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    lines = lines_of(sample[0])
    record = json.loads(lines[10])
    record["seq"] += 5
    record["hash"] = record_hash(record)
    report = verify_bytes(tmp_path, join([*lines[:10], canonical(record), *lines[11:]]))
    assert report.first_problem is not None
    assert (report.first_problem.line, report.first_problem.kind) == (11, "seq_gap")


def test_tail_truncation_is_caught_by_an_off_host_checkpoint_only(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    data, mark = sample
    lines = lines_of(data)
    for keep in (len(lines) - 1, len(lines) - 5, 1):
        cut = join(lines[:keep])
        # Without a checkpoint a shorter chain is still a valid chain: this is the limit
        # of hash chains, and the report says how much no checkpoint covers.
        report = verify_bytes(tmp_path, cut)
        assert report.ok
        last_inside = max(
            (json.loads(line)["seq"] for line in lines[:keep] if b'"checkpoint"' in line),
            default=0,
        )
        assert report.last_checkpoint_seq == (last_inside or None)
        if last_inside < keep:
            assert any("covered by no checkpoint" in line for line in report.summary())
        # With the checkpoint shipped off-host before the cut, it is detected.
        report = verify_bytes(tmp_path, cut, mark)
        assert not report.ok
        assert report.problems[-1].kind == "truncated"
        assert f"ends at seq {keep}" in report.problems[-1].message


def test_cut_mid_record_is_detected_without_a_checkpoint(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    data = sample[0]
    report = verify_bytes(tmp_path, data[:-40])
    assert report.first_problem is not None
    assert report.first_problem.line == len(lines_of(data))
    assert "torn_line" in {p.kind for p in report.problems}
    assert verify_bytes(tmp_path, data[:-1]).problems[-1].kind == "torn_line"


def test_rewritten_log_is_caught_by_the_checkpoint(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    """An attacker who rewrites the whole chain consistently beats the chain, not the
    checkpoint stored elsewhere."""
    data, mark = sample
    prev, rewritten = "0" * 64, []
    for raw in lines_of(data):
        record = json.loads(raw)
        if record["phase"] == "auth_failure":
            record["who"]["source_ip"] = "10.0.0.1"
        if record["phase"] == "checkpoint":
            record["head_hash"] = prev
        rewritten.append(seal(record, seq=record["seq"], prev_hash=prev).rstrip())
        prev = record["hash"]
    assert verify_bytes(tmp_path, join(rewritten)).ok
    report = verify_bytes(tmp_path, join(rewritten), mark)
    assert [p.kind for p in report.problems] == ["checkpoint_mismatch"]


def test_forged_or_useless_checkpoints_are_reported(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    data, mark = sample
    forged = dict(mark, head_seq=1)
    report = verify_bytes(tmp_path, data, forged)
    assert report.problems[0].kind == "bad_checkpoint"
    assert verify_bytes(tmp_path, data, {"seq": "x"}).problems[0].kind == "bad_checkpoint"
    later = tmp_path / "later.jsonl"
    later.write_bytes(join(lines_of(data)[5:]))
    report = verify_files([later], checkpoint={"seq": 2, "hash": "0" * 64}, partial=True)
    assert report.problems[-1].kind == "checkpoint_not_covered"


def test_in_log_checkpoint_that_lies_about_its_head_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    lines = lines_of(sample[0])
    index = next(i for i, raw in enumerate(lines) if b'"checkpoint"' in raw)
    record = json.loads(lines[index])
    record["head_seq"] -= 1
    record["hash"] = record_hash(record)
    tampered = [*lines[:index], canonical(record), *lines[index + 1 :]]
    kinds = [(p.line, p.kind) for p in verify_bytes(tmp_path, join(tampered)).problems]
    assert kinds[0] == (index + 1, "checkpoint_mismatch")


def test_blank_line_is_detected(tmp_path: Path, sample: tuple[bytes, dict[str, Any]]) -> None:
    lines = lines_of(sample[0])
    report = verify_bytes(tmp_path, join([*lines[:3], b"", *lines[3:]]))
    assert report.first_problem is not None
    assert (report.first_problem.line, report.first_problem.kind) == (4, "empty_line")


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_single_byte_change_is_detected(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    log, mark = sample
    at = data.draw(st.integers(0, len(log) - 1), label="offset")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != log[at]), label="byte")
    tampered = log[:at] + bytes([byte]) + log[at + 1 :]
    assert not verify_bytes(tmp_path, tampered).ok or not verify_bytes(tmp_path, tampered, mark).ok


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_single_byte_change_is_detected_even_without_a_checkpoint(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]], data: st.DataObject
) -> None:
    log, _ = sample
    at = data.draw(st.integers(0, len(log) - 1), label="offset")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != log[at]), label="byte")
    assert not verify_bytes(tmp_path, log[:at] + bytes([byte]) + log[at + 1 :]).ok


def test_rotated_files_verify_together_and_a_missing_middle_file_is_detected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    write_sample_log(path, rotate_bytes=4000)
    files = log_files(path)
    assert len(files) >= 3
    assert verify_files(files).ok
    report = verify_files([files[0], *files[2:]])
    assert report.first_problem is not None
    assert report.first_problem.file == files[2]
    assert report.first_problem.line == 1
    assert {p.kind for p in report.problems} == {"seq_gap", "prev_hash_mismatch"}
    shuffled = verify_files([files[1], files[0], *files[2:]])
    assert not shuffled.ok
    assert verify_files(files[1:]).problems[0].kind == "missing_start"
    newest_only = verify_files(files[-1:], partial=True)
    assert newest_only.ok  # old files pruned: the chain is checked from where they start
    assert any("earlier records" in line for line in newest_only.summary())


def test_intents_without_outcome_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    intent(audit, "in-flight")
    audit.close()
    report = verify_files([path])
    assert report.ok
    assert report.unpaired_intents == ["in-flight"]


# -- show -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    path = tmp_path_factory.mktemp("show") / "audit.jsonl"
    write_sample_log(path, rotate_bytes=5000)
    return log_files(path)


def test_show_filters(sample_files: list[Path]) -> None:
    everything = show(sample_files)
    assert len(everything) == sum(len(read(f)) for f in sample_files)
    assert {r["who"]["sub"] for r in show(sample_files, subject="alice")} == {"alice"}
    assert len(show(sample_files, subject="alice")) == 9  # 3 x (intent, outcome, denial)
    assert {r["what"]["tool"] for r in show(sample_files, tool="proxmox_guest_*")} == {
        "proxmox_guest_list",
        "proxmox_guest_power",
        "proxmox_guest_delete",
    }
    assert len(show(sample_files, tier="destructive")) == 3
    assert len(show(sample_files, status="denied")) == 3
    assert [r["phase"] for r in show(sample_files, phase="auth_failure")] == ["auth_failure"]
    last_two = show(sample_files, limit=2)
    assert last_two == everything[-2:]
    assert show(sample_files, tool="proxmox_guest_power", phase="intent", status="ok") == []


def test_show_time_window(sample_files: list[Path]) -> None:
    everything = show(sample_files)
    middle = datetime.fromisoformat(everything[10]["time"])
    assert show(sample_files, since=middle) == [
        r for r in everything if datetime.fromisoformat(r["time"]) >= middle
    ]
    assert show(sample_files, until=middle) == [
        r for r in everything if datetime.fromisoformat(r["time"]) < middle
    ]
    future = datetime.now(UTC) + timedelta(days=1)
    assert show(sample_files, since=future) == []


def test_format_line_is_compact_and_says_who_what_where(sample_files: list[Path]) -> None:
    (record,) = show(sample_files, phase="intent", limit=1)
    line = format_line(record)
    assert "\n" not in line
    assert f"#{record['seq']} intent" in line
    assert "alice/http" in line
    assert "proxmox_guest_power[write]" in line
    assert "@prod/pve1/102" in line
    assert "allow(ops.write)" in line
    assert record["event_id"] in line
    denied = format_line(show(sample_files, status="denied", limit=1)[0])
    assert "deny(builtin.default-deny) denied:denied" in denied
    auth = format_line(show(sample_files, phase="auth_failure")[0])
    assert "@192.0.2.7" in auth
    assert "(expired token)" in auth
    checkpoint = format_line(show(sample_files, phase="checkpoint")[-1])
    assert " head #" in checkpoint


# -- commands -------------------------------------------------------------------------------


def test_verify_command_exit_codes(tmp_path: Path, sample: tuple[bytes, dict[str, Any]]) -> None:
    data, mark = sample
    path = tmp_path / "audit.jsonl"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    assert verify_command([], default_log=path, out=out, err=err) == 0
    assert "OK" in out.getvalue()
    shipped = tmp_path / "checkpoints.jsonl"
    shipped.write_text(json.dumps({"seq": 1, "hash": "x"}) + "\n" + json.dumps(mark) + "\n")
    assert verify_command([path], default_log=None, checkpoint_file=shipped, out=out) == 0
    path.write_bytes(join(lines_of(data)[:-3]))
    err = io.StringIO()
    code = verify_command([path], default_log=None, checkpoint_file=shipped, err=err)
    assert code == 1
    assert "truncated" in err.getvalue()
    assert "FAILED" in err.getvalue()
    err = io.StringIO()
    assert verify_command([], default_log=tmp_path / "none.jsonl", err=err) == 2
    assert verify_command([path], default_log=None, checkpoint_file=tmp_path / "no", err=err) == 2


def test_load_checkpoint_accepts_one_object_or_json_lines(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"seq": 3, "hash": "h"}, indent=2))
    assert load_checkpoint(single) == {"seq": 3, "hash": "h"}
    lines = tmp_path / "many.jsonl"
    lines.write_text('{"seq": 1, "hash": "a"}\n{"seq": 2, "hash": "b"}\n')
    assert load_checkpoint(lines) == {"seq": 2, "hash": "b"}
    lines.write_text("")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(lines)


def test_show_command_text_and_json(sample_files: list[Path]) -> None:
    out = io.StringIO()
    assert show_command(sample_files, default_log=None, subject="alice", tier="write", out=out) == 0
    text = out.getvalue().splitlines()
    assert len(text) == 6
    assert all("alice/http" in line for line in text)
    out = io.StringIO()
    show_command(sample_files, default_log=None, phase="rotation", as_json=True, out=out)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["what"]["secret"] == "cluster:prod/token"
    err = io.StringIO()
    assert show_command(sample_files, default_log=None, since="yesterday", err=err) == 2
    assert "bad time" in err.getvalue()


def test_parse_when() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_when("30m", now) == now - timedelta(minutes=30)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("2025-05-01T10:00:00") == datetime(2025, 5, 1, 10, tzinfo=UTC)
    assert parse_when("2025-05-01T10:00:00+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_when("soon")


def test_checkpoint_command_appends_and_prints_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    read_call(audit, Principal.local())
    out = io.StringIO()
    # Appended while the gateway's writer is still open: one chain, not two.
    assert checkpoint_command(AuditConfig(path=path), out=out) == 0
    read_call(audit, ALICE)
    audit.close()
    mark = json.loads(out.getvalue())
    assert (mark["phase"], mark["seq"], mark["head_seq"]) == ("checkpoint", 2, 1)
    assert verify_files([path], checkpoint=mark).ok
    assert [r["seq"] for r in read(path)] == [1, 2, 3]
    err = io.StringIO()
    assert checkpoint_command(AuditConfig(enabled=False), err=err) == 1
    assert "disabled" in err.getvalue()


def test_a_cut_tail_is_reported_at_the_file_without_a_line(
    tmp_path: Path, sample: tuple[bytes, dict[str, Any]]
) -> None:
    """The problem has no line (it is after the last one): the report names the file and
    the last seq, never `file:None`."""
    data, mark = sample
    log = tmp_path / "audit.jsonl"
    log.write_bytes(join(lines_of(data)[:-3]))
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text(json.dumps(mark))
    err = io.StringIO()
    assert verify_command([log], default_log=None, checkpoint_file=checkpoint, err=err) == 1
    end = len(lines_of(data)) - 3
    assert f"  {log} (seq {end}): truncated: the log ends at seq {end}" in err.getvalue()
    assert "None" not in err.getvalue()
