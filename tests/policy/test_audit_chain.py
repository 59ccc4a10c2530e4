"""The chain's building blocks: the golden canonical form, hashing, safe values, file layout."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvemcp.policy.audit_chain import (
    GENESIS,
    GENESIS_HEAD,
    SCHEMA,
    canonical,
    inspect_line,
    jsonable,
    line_hash,
    load_head,
    log_files,
    next_rotation,
    record_hash,
    seal,
)

GOLDEN_RECORD = {
    "schema": SCHEMA,
    "event_id": "01900000-0000-7000-8000-000000000001",
    "phase": "intent",
    "time": "2025-01-02T03:04:05.000006Z",
    "who": {"sub": "alice", "transport": "http", "scopes": ["pve.write"]},
    "what": {
        "tool": "proxmox_guest_power",
        "tier": "write",
        "arguments": {"vmid": 100, "action": "start", "note": 'café\n"q"', "ratio": 0.5},
    },
    "where": {"cluster": "prod", "node": "pve1", "vmid": 100, "backend": "rest"},
    "decision": {"effect": "allow", "rules": ["ops.write"], "reason": "ops may write"},
}
# Sorted keys, no whitespace, UTF-8 as is, only the required escapes: RFC 8785.
GOLDEN_BODY = (
    b'{"decision":{"effect":"allow","reason":"ops may write","rules":["ops.write"]},'
    b'"event_id":"01900000-0000-7000-8000-000000000001","phase":"intent",'
    b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"schema":"pvemcp.audit/1","seq":1,"time":"2025-01-02T03:04:05.000006Z",'
    b'"what":{"arguments":{"action":"start","note":"caf\xc3\xa9\\n\\"q\\"","ratio":0.5,'
    b'"vmid":100},"tier":"write","tool":"proxmox_guest_power"},'
    b'"where":{"backend":"rest","cluster":"prod","node":"pve1","vmid":100},'
    b'"who":{"scopes":["pve.write"],"sub":"alice","transport":"http"}}'
)
GOLDEN_HASH = "43803b804ed8d48de2c6fe60d9800b2754f58f07ab40ca39bec0a263017ba2ed"


def test_golden_canonical_form_and_hash() -> None:
    assert hashlib.sha256(GOLDEN_BODY).hexdigest() == GOLDEN_HASH
    record = dict(GOLDEN_RECORD)
    line = seal(record, seq=1, prev_hash=GENESIS)
    assert record["hash"] == GOLDEN_HASH
    # The written line is the canonical record with `hash`, which sorts before `phase`.
    cut = GOLDEN_BODY.index(b'"phase"')
    assert (
        line == GOLDEN_BODY[:cut] + f'"hash":"{GOLDEN_HASH}",'.encode() + GOLDEN_BODY[cut:] + b"\n"
    )
    assert inspect_line(line[:-1]) == (record, None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(), JSON, max_size=6), st.floats(allow_nan=False, allow_infinity=False)
)
def test_sealed_line_is_exactly_the_canonical_record(record: dict[str, Any], number: float) -> None:
    record["number"] = number
    line = seal(record, seq=7, prev_hash=GENESIS)
    assert line == canonical(record) + b"\n"
    assert record["hash"] == record_hash(record)
    assert inspect_line(line[:-1])[0] == json.loads(line)


def test_hash_ignores_only_the_hash_field() -> None:
    record = dict(GOLDEN_RECORD, seq=1, prev_hash=GENESIS)
    assert record_hash(record) == record_hash({**record, "hash": "anything"})
    assert record_hash(record) != record_hash({**record, "seq": 2})


class _Color(str, Enum):  # noqa: UP042 - a str mixin, whose str() is not its value
    RED = "red"


def test_jsonable_keeps_odd_arguments_as_text_instead_of_failing() -> None:
    value = {
        "big": 2**60,
        "nan": float("nan"),
        "surrogate": "\ud800x",
        1: "int key",
        "set": {"b", "a"},
        "enum": _Color.RED,
        "path": Path("/x"),
        "tuple": (1, 2.5, None, True),
    }
    safe = jsonable(value)
    assert safe == {
        "big": str(2**60),
        "nan": "nan",
        "surrogate": "\\ud800x",
        "1": "int key",
        "set": ["a", "b"],
        "enum": "red",
        "path": "/x",
        "tuple": [1, 2.5, None, True],
    }
    canonical(safe)  # does not raise


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty_line"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1,2]", "malformed"),
        (b'{"seq":"1","hash":"x","prev_hash":"y"}', "malformed"),
        (b'{"hash":"x","prev_hash":"y","seq":true}', "malformed"),
    ],
)
def test_inspect_line_faults(raw: bytes, kind: str) -> None:
    _, fault = inspect_line(raw)
    assert fault is not None
    assert fault[0] == kind


def test_reencoded_line_with_same_content_is_not_canonical() -> None:
    record = dict(GOLDEN_RECORD)
    line = seal(record, seq=1, prev_hash=GENESIS)[:-1]
    spaced = json.dumps(json.loads(line)).encode()  # same value, with spaces and \u escapes
    assert inspect_line(spaced)[1] == (
        "not_canonical",
        "same content as hashed, but not written in canonical form (line re-encoded)",
    )
    duplicate_key = line[:-1] + b',"phase":"intent"}'
    assert inspect_line(duplicate_key)[1] is not None


def test_foreign_schema_is_a_fault() -> None:
    record = dict(GOLDEN_RECORD, schema="other/2")
    line = seal(record, seq=1, prev_hash=GENESIS)[:-1]
    fault = inspect_line(line)[1]
    assert fault is not None
    assert fault[0] == "schema"


def test_rotated_files_sort_numerically_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    for name in ("audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl", "x.1"):
        (tmp_path / name).write_text("")
    (tmp_path / "audit.jsonl.bak").write_text("")
    assert [p.name for p in log_files(log)] == [
        "audit.jsonl.1",
        "audit.jsonl.2",
        "audit.jsonl.10",
        "audit.jsonl",
    ]
    assert next_rotation(log).name == "audit.jsonl.11"
    assert next_rotation(tmp_path / "new.jsonl").name == "new.jsonl.1"
    assert log_files(tmp_path / "missing" / "audit.jsonl") == []


def test_head_of_an_empty_or_missing_log_is_genesis(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    assert load_head(log) == GENESIS_HEAD
    log.write_bytes(b"")
    assert load_head(log) == GENESIS_HEAD


def test_head_reads_only_the_tail_of_a_long_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    prev, lines = GENESIS, []
    record: dict[str, object] = {}
    for seq in range(1, 401):  # ~150 KiB: more than one backwards block
        record = dict(GOLDEN_RECORD, event_id=f"e{seq}", padding="x" * 300)
        lines.append(seal(record, seq=seq, prev_hash=prev))
        prev = str(record["hash"])
    log.write_bytes(b"".join(lines))
    head = load_head(log)
    assert (head.seq, head.hash, head.phase, head.broken) == (400, prev, "intent", None)


def test_head_of_a_torn_tail_points_at_its_raw_bytes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    record = dict(GOLDEN_RECORD)
    log.write_bytes(seal(record, seq=1, prev_hash=GENESIS) + b'{"seq":2,"half')
    head = load_head(log)
    assert head.broken is not None
    assert head.broken.startswith("invalid_json")
    assert head.dangling
    assert head.seq == 1
    assert head.hash == line_hash(b'{"seq":2,"half')
