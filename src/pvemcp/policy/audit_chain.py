"""The audit log's hash chain: canonical form, record hashes, and where the files are.

Every record is written as its RFC 8785 canonical JSON and carries `seq` (1, 2, 3, … across
every file of the log), `prev_hash` (the previous record's `hash`, `GENESIS` for the first)
and `hash` (SHA-256 of the canonical record without `hash`). Editing, inserting, deleting or
reordering a record therefore breaks a link that `audit_verify` can point at, and writing
the canonical bytes themselves means there is exactly one valid encoding of each record:
re-encoding a line (whitespace, escapes, duplicate keys) is caught even when the parsed
value is unchanged.

Rotated files sit next to the live one as `NAME.1`, `NAME.2`, … — oldest first, renamed
once and never renumbered, so the order of the chain is the order of the numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

SCHEMA = "pvemcp.audit/1"
GENESIS = "0" * 64
"""`prev_hash` of the very first record of a log."""

Fault = tuple[str, str]
"""A problem with one line: a short kind (`hash_mismatch`, …) and a sentence for people."""

_TAIL_BLOCK = 64 * 1024
_SAFE_INT = 2**53 - 1


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data that RFC 8785 accepts, whatever a caller passed.

    Arguments come from clients: an integer beyond 2^53, a NaN, a lone surrogate or a
    non-string key would make canonicalisation fail, and a failing audit write refuses the
    call. Such values are kept as text instead, so an odd argument is recorded, not fatal.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _utf8_safe(value[:])  # a plain str, also for str enums (whose str() differs)
    if isinstance(value, Mapping):
        return {_utf8_safe(str(key)): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(item) for item in items]
    return _utf8_safe(str(value))


def _utf8_safe(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def canonical(record: Mapping[str, Any]) -> bytes:
    """The RFC 8785 (JCS) bytes of `record`: sorted keys, no whitespace, one encoding."""
    return canonical_value(record)


_JSON = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, sort_keys=True, separators=(",", ":")
)
_ASTRAL_OR_SURROGATE = re.compile(r"[\ud800-\udfff\U00010000-\U0010ffff]")


def canonical_value(value: Any) -> bytes:
    r"""`rfc8785.dumps(value)`, byte for byte and error for error, mostly at C speed.

    `rfc8785` is pure Python and was a measurable share of every call's CPU. For values
    `_plain` accepts, the standard library's C encoder with sorted keys, no whitespace and
    `ensure_ascii=False` already writes the RFC 8785 form:

    - strings (section 3.2.2.2): both escape exactly `"`, `\`, \b \f \n \r \t in short
      form and the rest of U+0000 to U+001F as lower-case \u00xx, and write everything else
      as is (U+007F, U+2028, "</" included), then UTF-8 (3.2.4). A lone surrogate, which
      RFC 8785 rejects (3.1: input is I-JSON), makes `.encode()` fail: the fallback runs;
    - literals and integers (3.2.2.1, 3.2.2.3): `null`, `true`, `false`, and integers
      within +/-(2**53 - 1), where the ES6 number form is the plain decimal;
    - floats (3.2.2.3): both start from `repr` (the shortest round trip); `rfc8785` only
      rewrites zeros, integral values (`1.0`) and exponent forms, which `_plain` refuses;
    - object keys (3.2.3): RFC 8785 sorts by UTF-16 code units, Python by code points; the
      orders differ only for characters above U+FFFF (their surrogate pairs sort before
      U+E000 to U+FFFF in UTF-16), so keys holding one are refused.

    Everything else (those values, other types, subclasses, very deep nesting) is left to
    `rfc8785` itself, so its output and its exceptions stay the reference.
    """
    try:
        if _plain(value):
            return _JSON.encode(value).encode()
    except (RecursionError, UnicodeEncodeError):
        pass
    return rfc8785.dumps(value)


def _plain(value: Any) -> bool:
    """Whether the C encoder's output for `value` is its RFC 8785 form (one walk, exact
    types only: subclasses may serialise differently, see `canonical_value`)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        number: int = value
        return -_SAFE_INT <= number <= _SAFE_INT
    if kind is float:
        text = repr(value)
        return "e" not in text and text[-2:] != ".0" and math.isfinite(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _plain(item):
                return False
            if not key.isascii() and _ASTRAL_OR_SURROGATE.search(key):
                return False
        return True
    if kind is list or kind is tuple:
        return all(map(_plain, value))
    return False


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical record without its own `hash` field."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def line_hash(raw: bytes) -> str:
    """SHA-256 hex of a raw line: how a `chain_break` record points at a line that is not a
    valid record, so the bytes it found stay pinned."""
    return hashlib.sha256(raw).hexdigest()


def seal(record: dict[str, Any], *, seq: int, prev_hash: str) -> bytes:
    """Link `record` into the chain (sets `seq`, `prev_hash`, `hash`); returns its line.

    This runs on every call, so it avoids pure-Python canonicalisation where it can. A
    record `_plain` accepts whole is encoded by the C encoder twice (without, then with
    `hash`; see `canonical_value` for why those are the RFC 8785 bytes). Otherwise each
    member is canonicalised once and the object assembled twice, as RFC 8785 defines an
    object from its members (§3.2.3), so one odd member costs only itself.
    """
    record.pop("hash", None)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    body: bytes | None = None
    try:
        if _plain(record):
            body = _JSON.encode(record).encode()
    except (RecursionError, UnicodeEncodeError):
        pass
    if body is not None:
        record["hash"] = hashlib.sha256(body).hexdigest()
        return _JSON.encode(record).encode() + b"\n"
    members = {key: canonical_value(value) for key, value in record.items()}
    record["hash"] = hashlib.sha256(_object(members)).hexdigest()
    members["hash"] = canonical_value(record["hash"])
    return _object(members) + b"\n"


def _object(members: Mapping[str, bytes]) -> bytes:
    """The canonical object from canonical member values: keys in UTF-16 order (§3.2.3),
    each written as a canonical string (§3.2.2.2)."""
    keys = sorted(members, key=lambda key: key.encode("utf-16be"))
    return b"{" + b",".join(canonical_value(key) + b":" + members[key] for key in keys) + b"}"


def inspect_line(raw: bytes) -> tuple[dict[str, Any] | None, Fault | None]:
    """Check one line on its own: JSON, shape, own hash, canonical bytes, schema.

    Returns the record when it parses as one (even if faulty, so the caller can still
    follow `seq`) and the first fault found. Links to neighbours are the caller's job.
    """
    if not raw:
        return None, ("empty_line", "an empty line")
    try:
        record = json.loads(raw)
    except ValueError as exc:  # includes UnicodeDecodeError
        return None, ("invalid_json", f"not valid JSON ({exc})")
    if (
        not isinstance(record, dict)
        or type(record.get("seq")) is not int
        or not isinstance(record.get("hash"), str)
        or not isinstance(record.get("prev_hash"), str)
    ):
        return None, ("malformed", "not an audit record (needs integer seq, prev_hash, hash)")
    try:
        computed = record_hash(record)
        encoded = canonical(record)
    except rfc8785.CanonicalizationError as exc:
        return record, ("not_canonical", f"holds a value JSON canonicalisation rejects ({exc})")
    if computed != record["hash"]:
        return record, (
            "hash_mismatch",
            f"content does not match its hash (record modified): computed {computed[:16]}…, "
            f"stored {record['hash'][:16]}…",
        )
    if encoded != raw:
        return record, (
            "not_canonical",
            "same content as hashed, but not written in canonical form (line re-encoded)",
        )
    if record.get("schema") != SCHEMA:
        return record, ("schema", f"schema is {record.get('schema')!r}, expected {SCHEMA!r}")
    return record, None


@dataclass(frozen=True, slots=True)
class Head:
    """The end of the chain a writer continues from.

    `broken` says why the last line is not a valid record (torn write, edit); the writer
    then appends a `chain_break` record whose `prev_hash` is `hash` = the SHA-256 of that
    line's raw bytes. `dangling` means the live file ends without a newline, which the
    writer adds first so its record is not glued onto the torn one.
    """

    seq: int
    hash: str
    phase: str | None
    broken: str | None = None
    dangling: bool = False


GENESIS_HEAD = Head(0, GENESIS, None)


def load_head(path: Path) -> Head:
    """The chain's head from the last non-empty file of the log at `path`."""
    for file in reversed(log_files(path)):
        lines, terminated = _last_lines(file, 2)
        if not lines:
            continue
        record, fault = inspect_line(lines[-1])
        if record is not None and fault is None and terminated:
            return Head(record["seq"], record["hash"], str(record.get("phase")))
        if fault is None:
            fault = ("torn_line", "the last line has no newline (a torn or truncated write)")
        return Head(
            _last_seq(lines),
            line_hash(lines[-1]),
            None,
            broken=f"{fault[0]}: {fault[1]}",
            dangling=not terminated and file == path,
        )
    return GENESIS_HEAD


def _last_seq(lines: list[bytes]) -> int:
    """The highest-placed `seq` readable in `lines`, so a `chain_break` continues counting."""
    for raw in reversed(lines):
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and type(value.get("seq")) is int:
            seq: int = value["seq"]
            return seq
    return 0


def _last_lines(path: Path, count: int) -> tuple[list[bytes], bool]:
    """Up to `count` last lines of `path` (without newlines) and whether it ends with one.

    Reads backwards in blocks, so restarting on a large log costs one block, not the file.
    """
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return [], True
    with fh:
        pos = end = fh.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            if buf.rstrip(b"\n").count(b"\n") >= count:
                break
    if end == 0:
        return [], True
    terminated = buf.endswith(b"\n")
    lines = (buf[:-1] if terminated else buf).split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-count:], terminated


_ROTATED = re.compile(r"\.(\d+)")


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated siblings `NAME.N` of the log at `path`, by N (oldest first)."""
    if not path.parent.is_dir():
        return []
    found = []
    prefix = path.name
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix):
            match = _ROTATED.fullmatch(entry.name, len(prefix))
            if match is not None and entry.is_file():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def log_files(path: Path) -> list[Path]:
    """Every file of the log at `path` in chain order: rotated ones oldest first, then the
    live file (if it exists). The default file list of `audit verify` and `audit show`."""
    files = [file for _, file in rotated_files(path)]
    if path.is_file():
        files.append(path)
    return files


def next_rotation(path: Path) -> Path:
    """The name the live file gets when it is rotated: one past the highest `NAME.N`."""
    existing = rotated_files(path)
    return path.with_name(f"{path.name}.{existing[-1][0] + 1 if existing else 1}")
