"""The fast canonical form is `rfc8785` itself, byte for byte and exception for exception.

`canonical_value` hands plain values to the C JSON encoder and everything else to
`rfc8785`; these tests hold it to the library for every value, including the ones the
library refuses: whatever `rfc8785.dumps` raises, the fast path raises the same class (it
gets there by falling back to the library). `seal` is held to the member-by-member
implementation it replaced.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pvemcp.policy.audit_chain import SCHEMA, canonical, canonical_value, seal

# Characters where the two encoders or the two key orders could part: controls, escapes,
# DEL, line separators, the top of the BMP, above the BMP, and lone surrogates.
SPECIAL = [
    *map(chr, range(0x20)),
    '"',
    "\\",
    "/",
    "<",
    "\x7f",
    "\x80",
    "\u2028",
    "\u2029",
    "\ud7ff",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\ue000",
    "\uf8ff",
    "\ufeff",
    "\uffff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
]
CHARS = st.sampled_from(SPECIAL) | st.characters(codec=None, categories=None)
TEXT = st.text(CHARS, max_size=8)
# Mostly clean keys, as real records have, with the odd special one.
KEYS = st.text(st.sampled_from("abcz_-é") | CHARS, max_size=6)
INTS = (
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 2**64, -(2**70)])
    | st.integers()
)
FLOATS = st.floats() | st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 0.5, 1e21, 1e20, 1e16, 9007199254740993.0, 1e-6, 1e-7, 5e-324]
)
LEAVES = st.none() | st.booleans() | INTS | FLOATS | TEXT
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=20,
)


def outcome(function: Callable[[], bytes]) -> tuple[str, object]:
    """What calling `function` gives: its bytes, or the class of what it raised."""
    try:
        return "bytes", function()
    except (ValueError, AttributeError, RecursionError) as exc:
        return "raised", type(exc)


def assert_same_as_rfc8785(value: Any) -> None:
    """`canonical_value(value)` returns what `rfc8785.dumps` returns, or raises the same
    exception class (`CanonicalizationError` subclasses, `UnicodeEncodeError` for a lone
    surrogate in a key)."""
    assert outcome(lambda: canonical_value(value)) == outcome(lambda: rfc8785.dumps(value))


@settings(max_examples=1500, deadline=None)
@given(JSON_VALUES)
@example({"\ue000": 1, "\U0001f600": 2})
@example({"\ud800": 1})
@example(["\ud800"])
@example({"a": [1.0, 0.1, -0.0, 1e21, 2**53]})
def test_canonical_value_is_rfc8785(value: Any) -> None:
    assert_same_as_rfc8785(value)


@pytest.mark.parametrize(
    "value",
    [
        # RFC 8785 3.2.3: UTF-16 order puts the surrogate pair of U+1F600 before U+E000.
        {"\ue000": 1, "\U0001f600": 2},
        {"\uffff": "x", "\U00010000": "y", "a": "z"},
        {"\U0001f600": {"\ue000": [], "\U0010ffff": {}}},
        # Code-point and UTF-16 order agree below U+D800 and within U+E000 to U+FFFF.
        {"\ue000": 1, "\uffff": 2, "\u00e9": 3, "z": 4, "Z": 5, "": 6},
        # Non-BMP characters in values (not keys) change no order.
        ["\U0001f600", {"k": "\U0010ffff"}],
        # 3.2.2.2: every control character, DEL, line separators, "</".
        "".join(map(chr, range(0x20))),
        {"\x00\x1f": '"\\\b\f\n\r\t', "x": "\x7f\u2028\u2029</script>"},
        # 3.2.2.3: integers outside the IEEE 754 exact range are refused.
        2**53 - 1,
        -(2**53) + 1,
        2**53,
        -(2**53),
        {"n": [2**64]},
        # 3.2.2.3: the ES6 number form.
        1.0,
        -1.0,
        0.0,
        -0.0,
        0.5,
        -2.25,
        123.456,
        1e15 + 0.5,
        1e16,
        1e20,
        1e21,
        1.5e300,
        1e-6,
        1e-7,
        5e-324,
        float("inf"),
        float("nan"),
        # Lone surrogates: refused as values and as keys.
        "\udc00",
        {"\ud800": 1},
        # Types RFC 8785 does not know.
        {1: "x"},
        {"a": {1, 2}},
        b"bytes",
        True,
        None,
        (1, "t", [False]),
    ],
)
def test_explicit_cases(value: Any) -> None:
    assert_same_as_rfc8785(value)


def test_subclasses_fall_back_to_the_library() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Ordered(dict[str, Any]):
        pass

    for value in (Text("x"), Number(3), Ordered(b=1, a=2), {"k": [Text("v"), Number(2**60)]}):
        assert_same_as_rfc8785(value)


def test_deep_nesting_behaves_like_the_library() -> None:
    shallow: Any = "x"
    for _ in range(200):
        shallow = {"a": [shallow]}
    assert_same_as_rfc8785(shallow)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        rfc8785.dumps(deep)
    with pytest.raises(RecursionError):
        canonical_value(deep)


def old_seal(record: dict[str, Any], *, seq: int, prev_hash: str) -> bytes:
    """`seal` as it was: every member through `rfc8785`, keys sorted by UTF-16."""

    def assemble(members: dict[str, bytes]) -> bytes:
        keys = sorted(members, key=lambda key: key.encode("utf-16be"))
        return b"{" + b",".join(rfc8785.dumps(key) + b":" + members[key] for key in keys) + b"}"

    record.pop("hash", None)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    members = {key: rfc8785.dumps(value) for key, value in record.items()}
    record["hash"] = hashlib.sha256(assemble(members)).hexdigest()
    members["hash"] = rfc8785.dumps(record["hash"])
    return assemble(members) + b"\n"


def assert_seal_unchanged(record: dict[str, Any]) -> None:
    """Same line, same record afterwards, or the same exception class, as `old_seal`."""
    old_record, new_record = copy.deepcopy(record), copy.deepcopy(record)
    expected = outcome(lambda: old_seal(old_record, seq=7, prev_hash="ab" * 32))
    assert outcome(lambda: seal(new_record, seq=7, prev_hash="ab" * 32)) == expected
    assert new_record == old_record
    if expected[0] == "bytes":
        assert expected[1] == rfc8785.dumps(old_record) + b"\n"


INTENT: dict[str, Any] = {
    "schema": SCHEMA,
    "event_id": "01900000-0000-7000-8000-000000000001",
    "phase": "intent",
    "time": "2025-01-02T03:04:05.000006Z",
    "who": {"sub": "alice", "transport": "http", "scopes": ["pve.write"], "client": "agent-1"},
    "what": {
        "tool": "proxmox_guest_power",
        "tier": "write",
        "cluster": "demo",
        "arguments": {"vmid": 101, "action": "start", "wait": True, "note": 'café\n"q" 😀'},
        "args_hmac": "0f" * 32,
        "backend": "rest",
    },
    "where": {"node": "pve1", "vmid": 101},
    "decision": {"effect": "allow", "rules": ["team-3"], "reason": "team rule"},
    "policy_hash": "12" * 32,
    "hash": "stale",
}
OUTCOME: dict[str, Any] = {
    "schema": SCHEMA,
    "event_id": "01900000-0000-7000-8000-000000000001",
    "phase": "outcome",
    "time": "2025-01-02T03:04:05.120000Z",
    "who": {"sub": "local", "transport": "stdio"},
    "outcome": {
        "status": "ok",
        "duration_ms": 1.0,
        "upids": ["UPID:pve1:00001234:00005678:65000000:qmstart:101:root@pam:"],
    },
}


@pytest.mark.parametrize(
    "record",
    [
        INTENT,
        OUTCOME,
        {**OUTCOME, "outcome": {"status": "ok", "duration_ms": 12.345}},
        {**OUTCOME, "outcome": {"status": "error", "duration_ms": 0.0, "error": "E\x00\u2028"}},
        {**INTENT, "what": {"arguments": {"size": 2**60, "ratio": 1e21, "\U0001f600": 1}}},
        {**INTENT, "\U0001f600": "top-level key above the BMP", "\ue000": "and below"},
        {**INTENT, "what": {"arguments": {"bad": "\udc80"}}},
        {"phase": "checkpoint", "count": 1000, "hmac": "aa" * 32},
    ],
)
def test_seal_is_unchanged_for_realistic_records(record: dict[str, Any]) -> None:
    assert_seal_unchanged(record)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON_VALUES, max_size=6))
def test_seal_is_unchanged_for_any_record(record: dict[str, Any]) -> None:
    assert_seal_unchanged(record)


def test_plain_records_never_reach_the_pure_python_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The point of the fast path: the usual record costs no `rfc8785` call at all."""
    expected = old_seal(copy.deepcopy(INTENT), seq=1, prev_hash="0" * 64)
    expected_canonical = rfc8785.dumps(INTENT)

    def refuse(value: Any) -> bytes:
        raise AssertionError(f"rfc8785 called for {value!r}")

    monkeypatch.setattr(rfc8785, "dumps", refuse)
    assert seal(copy.deepcopy(INTENT), seq=1, prev_hash="0" * 64) == expected
    assert canonical(INTENT) == expected_canonical
