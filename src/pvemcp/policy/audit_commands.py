"""`pvemcp audit verify|show|checkpoint|report`: plain functions the CLI calls with parsed values.

Each prints to the given streams and returns the process exit code: 0 when all is well,
1 when verification found a problem, 2 for a usage problem (no files, an unreadable
checkpoint, a time that does not parse).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pvemcp.policy.audit import AuditLog, AuditSettings, AuditUnavailable
from pvemcp.policy.audit_chain import canonical, log_files
from pvemcp.policy.audit_report import load_report, render_html, render_text
from pvemcp.policy.audit_verify import format_line, show, verify_files
from pvemcp.policy.evidence import blob_path

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _files(files: Sequence[Path], default_log: Path | None, err: TextIO) -> list[Path] | None:
    """The files given, or else the configured log and its rotated siblings."""
    if files:
        return list(files)
    found = log_files(default_log.expanduser()) if default_log is not None else []
    if not found:
        print(f"no audit log files found at {default_log}", file=err)
        return None
    return found


def _window(
    files: Sequence[Path],
    default_log: Path | None,
    since: str | None,
    until: str | None,
    err: TextIO,
) -> tuple[list[Path], datetime | None, datetime | None] | None:
    """The files to read and the time window `show` and `report` share; None (after
    saying why on `err`) when there are no files or a time does not parse."""
    paths = _files(files, default_log, err)
    if paths is None:
        return None
    try:
        start = parse_when(since) if since else None
        end = parse_when(until) if until else None
    except ValueError as exc:
        print(f"bad time: {exc} (use ISO 8601 or an age like 30m, 2h, 7d)", file=err)
        return None
    return paths, start, end


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint in `path`: one JSON object, or JSON lines (as appended by a shipping
    job), of which the last one, the newest, counts. Raises ValueError."""
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds no checkpoint")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: neither JSON nor JSON lines ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: a checkpoint is a JSON object")
    return value


def verify_command(
    files: Sequence[Path],
    *,
    default_log: Path | None,
    checkpoint_file: Path | None = None,
    partial: bool = False,
    evidence_root: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`pvemcp audit verify [FILES] [--checkpoint FILE] [--partial]`: 0 only if the chain
    is intact (`--partial`: the oldest files were pruned, check from the first given) and
    every evidence blob the records list is in `evidence_root` as recorded."""
    out, err = out or sys.stdout, err or sys.stderr
    paths = _files(files, default_log, err)
    if paths is None:
        return EXIT_USAGE
    checkpoint = None
    if checkpoint_file is not None:
        try:
            checkpoint = load_checkpoint(checkpoint_file)
        except (OSError, ValueError) as exc:
            print(f"cannot read the checkpoint: {exc}", file=err)
            return EXIT_USAGE
    report = verify_files(
        paths, checkpoint=checkpoint, partial=partial, evidence_root=evidence_root
    )
    for line in report.summary():
        print(line, file=out if report.ok else err)
    return EXIT_OK if report.ok else EXIT_PROBLEM


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC if it names no zone) or an age like `30m`, `2h`, `7d`.
    Raises ValueError."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        try:
            delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            return (now or datetime.now(UTC)) - delta
        except OverflowError:
            raise ValueError(f"{text.strip()} reaches before year 1") from None
    when = datetime.fromisoformat(text.strip())
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def show_command(
    files: Sequence[Path],
    *,
    default_log: Path | None,
    since: str | None = None,
    until: str | None = None,
    subject: str | None = None,
    tool: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    phase: str | None = None,
    limit: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`pvemcp audit show [FILES] --since --until --subject --tool --tier --status --phase
    --limit --json`: matching records, one per line (compact text, or the JSON lines)."""
    out, err = out or sys.stdout, err or sys.stderr
    window = _window(files, default_log, since, until, err)
    if window is None:
        return EXIT_USAGE
    paths, start, end = window
    records = show(
        paths,
        since=start,
        until=end,
        subject=subject,
        tool=tool,
        tier=tier,
        status=status,
        phase=phase,
        limit=limit,
    )
    for record in records:
        print(_as_json(record) if as_json else format_line(record), file=out)
    return EXIT_OK


def report_command(
    files: Sequence[Path],
    *,
    default_log: Path | None,
    since: str | None = "24h",
    until: str | None = None,
    html_file: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`pvemcp audit report [FILES] --since 24h [--until T] [--html FILE]`: the review
    report (`audit_report.py`) as a terminal table, and as an HTML file when asked."""
    out, err = out or sys.stdout, err or sys.stderr
    window = _window(files, default_log, since, until, err)
    if window is None:
        return EXIT_USAGE
    paths, start, end = window
    report = load_report(paths, since=start, until=end)
    print(render_text(report), end="", file=out)
    if html_file is not None:
        try:
            html_file.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            print(f"cannot write {html_file}: {exc.strerror or exc}", file=err)
            return EXIT_USAGE
        print(f"HTML report written to {html_file}", file=err)
    return EXIT_OK


def show_evidence_command(
    sha256: str,
    *,
    evidence_root: Path,
    raw: bool = False,
    out: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`pvemcp audit show --evidence SHA256`: the blob's bytes as stored (redacted), after
    checking they still hash to their name. The id must be 64 hex digits, so it can only
    name a file inside the store. A blob is what a command on a node printed, so on a
    terminal its control characters are shown escaped (an escape sequence would otherwise
    act on the reviewer's terminal); `raw`, or any `out` that is not a terminal (a file,
    a pipe to sha256sum), gets the exact bytes."""
    out, err = out or sys.stdout.buffer, err or sys.stderr
    sha = sha256.strip().lower()
    try:
        path = blob_path(evidence_root, sha)
    except ValueError as exc:
        print(f"bad evidence id {sha256[:80]!r}: {exc}", file=err)
        return EXIT_USAGE
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"no evidence blob {sha} in {evidence_root}: {exc.strerror or exc}", file=err)
        return EXIT_PROBLEM
    shown = data if raw or not out.isatty() else visible_controls(data)
    out.write(shown)
    out.flush()
    if shown != data:
        print("(control characters shown escaped; --raw writes the exact bytes)", file=err)
    if hashlib.sha256(data).hexdigest() != sha:
        print(f"evidence blob {sha} was altered: its content no longer matches its id", file=err)
        return EXIT_PROBLEM
    return EXIT_OK


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls but newline and tab, DEL, and C1 controls (U+009B is a CSI of its own)."""


def visible_controls(data: bytes) -> bytes:
    """`data` as UTF-8 with each control character but newline and tab written `\\xNN`,
    and each byte that is not UTF-8 too, so nothing in it can drive a terminal."""
    text = data.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text).encode()


def _as_json(record: Mapping[str, Any]) -> str:
    return canonical(record).decode()


def checkpoint_command(
    config: AuditSettings, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """`pvemcp audit checkpoint`: append a checkpoint to the configured log (safe while the
    gateway runs) and print it as one JSON line, for a cron job to store off-host."""
    out, err = out or sys.stdout, err or sys.stderr
    audit = AuditLog.from_config(config)
    try:
        record = audit.checkpoint()
    except AuditUnavailable as exc:
        print(str(exc), file=err)
        return EXIT_PROBLEM
    finally:
        audit.close()
    print(_as_json(record), file=out)
    return EXIT_OK
