"""Reading the audit log back: verify its chain, and show records people can read.

`verify_files` walks the files in chain order and checks every line on its own (JSON,
canonical bytes, own hash, schema) and against its predecessor (`seq` + 1, `prev_hash` =
previous `hash`, across file boundaries), plus every in-log checkpoint against the record
before it, and optionally an off-host checkpoint against the log. It keeps going after a
problem (re-anchoring on the faulty record) so one report lists every damaged place, the
first one first.

Given the evidence store's directory, it also checks every blob an outcome record lists
(`outcome.evidence`): a blob that is missing, whose content no longer hashes to its name,
or whose size differs from the record is a problem like a broken record, unless a later
`evidence_pruned` record says retention removed it.

It also cross-checks every four-eyes run against the log's own `approval` records
(`ApprovalLedger`): the approval store is a directory of files, and whoever can write it
can mark a request approved without going through `pvemcp approvals` or the API. The run
then names the approver the file claims, but the log holds no `approved` step by them; a
run without its recorded approval and use, or a second run of one approval, is a problem
(`approval_unrecorded`, `approval_reused`), unless the log given starts after the request
was made (then it is only noted as not covered).

What a chain cannot show by itself: records cut from the end of the log (or the newest
files deleted) leave a shorter, still valid chain. Only a checkpoint stored elsewhere
catches that; the report says how many records lie past the last checkpoint it checked.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pvemcp.policy.audit_chain import GENESIS, inspect_line, line_hash, record_hash
from pvemcp.policy.evidence import blob_path

MAX_PROBLEMS = 100
"""A log damaged everywhere still gives a readable report; the first problem is the one
that matters."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken place: where (file, 1-based line, seq if readable), what, and why."""

    file: Path | None
    line: int | None
    seq: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        # A problem of the whole file (unreadable, cut after its last line) has no line.
        where = "checkpoint" if self.file is None else str(self.file)
        if self.file is not None and self.line is not None:
            where += f":{self.line}"
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{where}{seq}: {self.kind}: {self.message}"


@dataclass(slots=True)
class VerifyReport:
    """The result of `verify_files`; `ok` is true only when no problem was found."""

    files: list[Path]
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    last_checkpoint_seq: int | None = None
    """The newest checkpoint the log was checked against (in the log or given)."""
    problems: list[Problem] = field(default_factory=list)
    unpaired_intents: list[str] = field(default_factory=list)
    """Event ids of intents without an outcome: calls in flight, or a crash mid-call."""
    blobs: int = 0
    """Evidence blobs checked (each distinct one once)."""
    pruned_blobs: int = 0
    """Referenced blobs absent because an `evidence_pruned` record says retention removed
    them."""
    approvals_matched: int = 0
    """Four-eyes runs whose approval and use the log records."""
    approvals_not_covered: list[str] = field(default_factory=list)
    """Approval ids of four-eyes runs whose request was made before the first record
    given: their approval steps may lie in older files, so they are neither matched nor
    problems."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> list[str]:
        """Lines for people: the verdict, the problems, and what was not covered."""
        names = ", ".join(str(file) for file in self.files)
        if self.records == 0:
            lines = [f"no records in {names or '(no files)'}"]
        else:
            lines = [
                f"{self.records} records, seq {self.first_seq}..{self.last_seq}, "
                f"head {self.last_hash} in {names}"
            ]
        if self.first_seq not in (None, 1) and self.ok:
            lines.append(
                f"note: the chain starts at seq {self.first_seq}; earlier records (older "
                "files) were not given and are not checked"
            )
        if self.problems:
            lines.append(f"FAILED: {len(self.problems)} problem(s); the first broken link is:")
            lines += [f"  {problem}" for problem in self.problems]
        else:
            lines.append("OK: every record and link verifies")
        if self.last_seq is not None:
            covered = self.last_checkpoint_seq or 0
            if covered < self.last_seq:
                lines.append(
                    f"note: {self.last_seq - covered} record(s) after seq {covered} are "
                    "covered by no checkpoint: cutting them off would go unnoticed; verify "
                    "against a checkpoint stored off-host (--checkpoint)"
                )
        if self.blobs or self.pruned_blobs:
            lines.append(
                f"evidence: {self.blobs} blob(s) checked"
                + (f", {self.pruned_blobs} pruned by retention" if self.pruned_blobs else "")
            )
        if self.approvals_matched or self.approvals_not_covered:
            lines.append(
                f"approvals: {self.approvals_matched} four-eyes run(s) match the log's "
                "approval records"
                + (
                    f"; {len(self.approvals_not_covered)} not covered (requested before the "
                    f"first record given): {', '.join(self.approvals_not_covered[:5])}"
                    if self.approvals_not_covered
                    else ""
                )
            )
        if self.unpaired_intents:
            lines.append(
                f"note: {len(self.unpaired_intents)} intent(s) without an outcome "
                f"(in flight or interrupted): {', '.join(self.unpaired_intents[:5])}"
            )
        return lines


NOT_COVERED = "not_covered"
"""`ApprovalCheck.kind` of a run whose request predates the records given."""


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """A four-eyes run checked against the approval records before it: `kind` None when
    they record its approval by the approver it names and its use, else
    `approval_unrecorded`, `approval_reused` or `NOT_COVERED`; `message` says what is
    missing, for people."""

    approval_id: str
    event_id: str
    kind: str | None
    message: str


@dataclass(slots=True)
class _Steps:
    """What the log recorded of one approval request so far."""

    requested: bool = False
    approved_by: list[tuple[Any, Any]] = field(default_factory=list)
    """(sub, iss) of each `approved` step."""
    used: int = 0
    runs: list[str] = field(default_factory=list)
    """Event ids of the four-eyes runs that named this request."""


class ApprovalLedger:
    """Cross-checks four-eyes runs against the log's `approval` records, fed every record
    in log order (`see`).

    A run (an intent whose `decision.approval.method` is `four_eyes`) matches when, before
    it, the log records an `approved` step of its approval id taken by the approver the
    run names (same `sub` and `iss`), and a `used` step for each run of that id. Its
    `requested` step must be there too when the records start at seq 1; records that start
    later may have left the request's steps in older files, so a run that does not match
    without its `requested` step in sight is only `NOT_COVERED`."""

    def __init__(self) -> None:
        self._steps: dict[str, _Steps] = {}
        self._first_seq: Any = None

    def see(self, record: Mapping[str, Any]) -> ApprovalCheck | None:
        """Take in one record; for a four-eyes run, its check."""
        if self._first_seq is None and "seq" in record:
            self._first_seq = record["seq"]
        phase = record.get("phase")
        if phase == "approval":
            self._step(record)
            return None
        approval = record_section(record, "decision").get("approval")
        if phase != "intent" or not isinstance(approval, Mapping):
            return None
        if approval.get("method") != "four_eyes":
            return None
        return self._check(record, approval)

    def _step(self, record: Mapping[str, Any]) -> None:
        what = record_section(record, "what")
        steps = self._steps.setdefault(str(what.get("approval_id", "")), _Steps())
        action = what.get("action")
        if action == "requested":
            steps.requested = True
        elif action == "approved":
            who = record_section(record, "who")
            steps.approved_by.append((who.get("sub"), who.get("iss")))
        elif action == "used":
            steps.used += 1

    def _check(self, intent: Mapping[str, Any], approval: Mapping[str, Any]) -> ApprovalCheck:
        approval_id = str(approval.get("approval_id", ""))
        event_id = str(intent.get("event_id", ""))
        steps = self._steps.setdefault(approval_id, _Steps())
        steps.runs.append(event_id)
        by = approval.get("by")
        by = by if isinstance(by, Mapping) else {}
        named = (by.get("sub"), by.get("iss"))
        approver = f"{named[0]}" + (f" ({named[1]})" if named[1] is not None else "")
        head = f"four-eyes run {event_id} names approval {approval_id} approved by {approver}"
        if len(steps.runs) > 1:
            return ApprovalCheck(
                approval_id,
                event_id,
                "approval_reused",
                f"{head}, which already ran as {steps.runs[0]}: an approval runs its call once",
            )
        missing = []
        if self._first_seq == 1 and not steps.requested:
            missing.append("no `requested` step")
        if named not in steps.approved_by:
            others = ", ".join(str(sub) for sub, _ in steps.approved_by)
            missing.append(
                "no `approved` step by them" + (f" (only by {others})" if others else "")
            )
        if steps.used < len(steps.runs):
            missing.append("no `used` step")
        if not missing:
            return ApprovalCheck(approval_id, event_id, None, f"{head}: recorded")
        if not steps.requested and self._first_seq != 1:
            return ApprovalCheck(
                approval_id,
                event_id,
                NOT_COVERED,
                f"{head}: the request was made before the first record given "
                f"(seq {self._first_seq}); its approval steps are not covered",
            )
        return ApprovalCheck(
            approval_id,
            event_id,
            "approval_unrecorded",
            f"{head}, but the log before it holds {' and '.join(missing)} for that approval: "
            "the approval store was changed outside pvemcp approvals and the approval API",
        )


@dataclass(slots=True)
class _Walk:
    """The verifier's state between lines: what the next record must link to."""

    report: VerifyReport
    checkpoint: Mapping[str, Any] | None
    partial: bool
    expected_seq: int | None = None
    expected_prev: str | None = None
    prev_raw: bytes | None = None
    checkpoint_found: bool = False
    intents: dict[str, None] = field(default_factory=dict)
    evidence: dict[str, tuple[Path, int, int, int]] = field(default_factory=dict)
    """Each referenced blob's newest reference: file, line, seq, size recorded."""
    pruned: dict[str, int] = field(default_factory=dict)
    """Blobs an `evidence_pruned` record names, with that record's seq."""
    ledger: ApprovalLedger = field(default_factory=ApprovalLedger)

    def problem(
        self, file: Path | None, line: int | None, seq: int | None, kind: str, msg: str
    ) -> None:
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Problem(file, line, seq, kind, msg))


def verify_files(
    paths: Sequence[Path],
    *,
    checkpoint: Mapping[str, Any] | None = None,
    partial: bool = False,
    evidence_root: Path | None = None,
) -> VerifyReport:
    """Verify the chain through `paths` (in chain order, oldest first) and, if given, that
    the log still holds the record `checkpoint` vouches for (its `seq` and `hash`), and
    that every evidence blob the records list is in `evidence_root`, unaltered.

    The chain must start at seq 1 (genesis) unless `partial`: for a log whose oldest files
    were pruned on purpose, checking starts at the first record given.
    """
    walk = _Walk(VerifyReport(list(paths)), checkpoint, partial)
    if checkpoint is not None:
        _check_checkpoint_itself(walk, checkpoint)
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            walk.problem(path, None, None, "unreadable", exc.strerror or str(exc))
            walk.expected_seq = walk.expected_prev = None
            continue
        if not data:
            continue
        terminated = data.endswith(b"\n")
        lines = (data[:-1] if terminated else data).split(b"\n")
        for number, raw in enumerate(lines, 1):
            _check_line(walk, path, number, raw)
        if not terminated:
            walk.problem(
                path,
                len(lines),
                None,
                "torn_line",
                "the file does not end with a newline: the last record was cut "
                "(truncated, or a crash during a write)",
            )
    if checkpoint is not None:
        _check_checkpoint_reached(walk, checkpoint)
    if evidence_root is not None:
        _check_evidence(walk, evidence_root)
    walk.report.unpaired_intents = list(walk.intents)
    return walk.report


def _check_line(walk: _Walk, path: Path, number: int, raw: bytes) -> None:
    report = walk.report
    record, fault = inspect_line(raw)
    if fault is not None:
        walk.problem(path, number, record["seq"] if record is not None else None, *fault)
    prev_raw, walk.prev_raw = walk.prev_raw, raw
    if record is None:
        walk.expected_seq = walk.expected_prev = None  # unknown until the next good record
        return
    seq: int = record["seq"]
    report.records += 1
    if report.first_seq is None:
        report.first_seq = seq
        if seq == 1 and record["prev_hash"] != GENESIS:
            walk.problem(path, number, seq, "prev_hash_mismatch", "seq 1 does not start at genesis")
        elif seq != 1 and not walk.partial:
            walk.problem(
                path,
                number,
                seq,
                "missing_start",
                f"the chain starts at seq {seq}, not 1: the first {seq - 1} record(s) are "
                "missing (deleted, or older files not given; if they were pruned on purpose, "
                "verify with --partial)",
            )
    _check_link(walk, path, number, record, prev_raw)
    report.last_seq, report.last_hash = record["seq"], record["hash"]
    walk.expected_seq, walk.expected_prev = record["seq"] + 1, record["hash"]
    _check_record_kind(walk, path, number, record)


def _check_link(
    walk: _Walk, path: Path, number: int, record: dict[str, Any], prev_raw: bytes | None
) -> None:
    seq = record["seq"]
    if record.get("phase") == "chain_break":
        pinned = prev_raw is not None and record["prev_hash"] == line_hash(prev_raw)
        walk.problem(
            path,
            number,
            seq,
            "chain_break",
            f"the writer found a broken tail on restart and restarted the chain: "
            f"{record.get('reason', '?')}"
            + ("" if pinned else " (and it does not point at the line before it)"),
        )
        return
    if walk.expected_seq is not None and seq != walk.expected_seq:
        if seq > walk.expected_seq:
            missing = seq - walk.expected_seq
            msg = f"seq jumps from {walk.expected_seq - 1} to {seq}: {missing} record(s) missing"
            walk.problem(path, number, seq, "seq_gap", msg + " (deleted, or a file left out)")
        else:
            msg = f"seq {seq} after {walk.expected_seq - 1}: duplicated or reordered record"
            walk.problem(path, number, seq, "seq_out_of_order", msg)
    if walk.expected_prev is not None and record["prev_hash"] != walk.expected_prev:
        walk.problem(
            path,
            number,
            seq,
            "prev_hash_mismatch",
            "does not link to the record before it: a record was inserted, deleted or "
            "reordered here (or a file is missing)",
        )


def _check_record_kind(walk: _Walk, path: Path, number: int, record: dict[str, Any]) -> None:
    phase = record.get("phase")
    seq = record["seq"]
    if phase == "checkpoint":
        if record.get("head_seq") != seq - 1 or record.get("head_hash") != record["prev_hash"]:
            walk.problem(
                path,
                number,
                seq,
                "checkpoint_mismatch",
                "this checkpoint does not describe the record before it",
            )
        walk.report.last_checkpoint_seq = seq
    elif phase == "intent":
        walk.intents[str(record.get("event_id"))] = None
    elif phase == "outcome":
        walk.intents.pop(str(record.get("event_id")), None)
        _note_evidence(walk, path, number, record)
    elif phase == "evidence_pruned":
        for blob in record_section(record, "what").get("blobs") or []:
            if isinstance(blob, Mapping) and isinstance(blob.get("sha256"), str):
                walk.pruned[blob["sha256"]] = seq
    _check_approval(walk, path, number, record)
    checkpoint = walk.checkpoint
    if checkpoint is not None and seq == checkpoint.get("seq"):
        walk.checkpoint_found = True
        if record["hash"] != checkpoint.get("hash"):
            walk.problem(
                path,
                number,
                seq,
                "checkpoint_mismatch",
                f"the record at seq {seq} is not the one the checkpoint vouches for "
                f"(hash {record['hash'][:16]}…, checkpoint {str(checkpoint.get('hash'))[:16]}…)"
                ": the log was rewritten",
            )
        else:
            walk.report.last_checkpoint_seq = max(walk.report.last_checkpoint_seq or 0, seq)


def _check_approval(walk: _Walk, path: Path, number: int, record: dict[str, Any]) -> None:
    """Feed the ledger; a four-eyes run it cannot match is a problem of the run's intent."""
    check = walk.ledger.see(record)
    if check is None:
        return
    if check.kind is None:
        walk.report.approvals_matched += 1
    elif check.kind == NOT_COVERED:
        walk.report.approvals_not_covered.append(check.approval_id)
    else:
        walk.problem(path, number, record["seq"], check.kind, check.message)


def _note_evidence(walk: _Walk, path: Path, number: int, record: dict[str, Any]) -> None:
    """Remember the blobs an outcome lists, to check once the whole log is read."""
    for ref in record_section(record, "outcome").get("evidence") or []:
        sha = ref.get("sha256") if isinstance(ref, Mapping) else None
        size = ref.get("bytes") if isinstance(ref, Mapping) else None
        if not isinstance(sha, str) or type(size) is not int:
            walk.problem(path, number, record["seq"], "evidence_ref", "a malformed evidence entry")
            continue
        # The newest reference counts: a blob pruned and listed again must be there again.
        walk.evidence[sha] = (path, number, record["seq"], size)


def _check_evidence(walk: _Walk, root: Path) -> None:
    """Every referenced blob: present (or pruned by a later record), hashing to its name,
    of the size recorded."""
    for sha, (path, number, seq, size) in walk.evidence.items():
        try:
            blob = blob_path(root, sha)
        except ValueError:
            walk.problem(
                path, number, seq, "evidence_ref", f"evidence id {sha[:80]!r} is no SHA-256"
            )
            continue
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            if walk.pruned.get(sha, 0) > seq:
                walk.report.pruned_blobs += 1
            else:
                walk.problem(
                    path,
                    number,
                    seq,
                    "evidence_missing",
                    f"evidence blob {sha} is missing ({blob})",
                )
            continue
        except OSError as exc:
            walk.problem(path, number, seq, "evidence_missing", f"{blob}: {exc.strerror or exc}")
            continue
        walk.report.blobs += 1
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            walk.problem(
                path,
                number,
                seq,
                "evidence_altered",
                f"evidence blob {sha} was altered: its content hashes to {actual[:16]}… ({blob})",
            )
        elif len(data) != size:
            walk.problem(
                path,
                number,
                seq,
                "evidence_size_mismatch",
                f"evidence blob {sha} has {len(data)} bytes, the record says {size} ({blob})",
            )


def _check_checkpoint_itself(walk: _Walk, checkpoint: Mapping[str, Any]) -> None:
    seq, hash_ = checkpoint.get("seq"), checkpoint.get("hash")
    if type(seq) is not int or not isinstance(hash_, str):
        walk.problem(None, None, None, "bad_checkpoint", "the checkpoint needs `seq` and `hash`")
    elif "schema" in checkpoint and record_hash(checkpoint) != hash_:
        walk.problem(
            None, None, seq, "bad_checkpoint", "the checkpoint's own hash does not match (forged?)"
        )


def _check_checkpoint_reached(walk: _Walk, checkpoint: Mapping[str, Any]) -> None:
    seq, report = checkpoint.get("seq"), walk.report
    if walk.checkpoint_found or type(seq) is not int:
        return
    if report.last_seq is None or seq > report.last_seq:
        end = report.last_seq or 0
        walk.problem(
            report.files[-1] if report.files else None,
            None,
            end or None,
            "truncated",
            f"the log ends at seq {end} but the checkpoint vouches for seq {seq}: at least "
            f"{seq - end} record(s) were cut from the end (or the newest files are missing)",
        )
    elif report.first_seq is not None and seq < report.first_seq:
        walk.problem(
            None,
            None,
            seq,
            "checkpoint_not_covered",
            f"the checkpoint's seq {seq} precedes the first record given (seq "
            f"{report.first_seq}): pass the older files, or a newer checkpoint",
        )
    else:
        walk.problem(None, None, seq, "truncated", f"no record with seq {seq} in the log")


# -- show -----------------------------------------------------------------------------------


def iter_records(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Every record that parses, in file order; damaged lines are skipped (verify finds
    them)."""
    for path in paths:
        with path.open("rb") as fh:
            for raw in fh:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record


def record_time(record: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None


def show(
    paths: Sequence[Path],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    subject: str | None = None,
    tool: str | None = None,
    tier: str | None = None,
    status: str | None = None,
    phase: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The records matching every given filter, oldest first; `limit` keeps the newest N.

    `tool` may be a glob (`proxmox_guest_*`); `since`/`until` must be timezone-aware;
    `status` matches `outcome.status` (`ok`, `error`, `denied`, `rejected`, …).
    """
    found = []
    for record in iter_records(paths):
        when = record_time(record)
        if (since or until) and when is None:
            continue
        if since is not None and when is not None and when < since:
            continue
        if until is not None and when is not None and when >= until:
            continue
        if subject is not None and _get(record, "who", "sub") != subject:
            continue
        if tool is not None and not fnmatch.fnmatchcase(str(_get(record, "what", "tool")), tool):
            continue
        if tier is not None and _get(record, "what", "tier") != tier:
            continue
        if status is not None and _get(record, "outcome", "status") != status:
            continue
        if phase is not None and record.get("phase") != phase:
            continue
        found.append(record)
    return found[-limit:] if limit else found


def _get(record: Mapping[str, Any], section: str, key: str) -> Any:
    return record_section(record, section).get(key)


def format_line(record: Mapping[str, Any]) -> str:
    """One record as one line for people: time, seq, phase, who, what, where, verdict."""
    head = f"{record.get('time', '?')} #{record.get('seq', '?')} {record.get('phase', '?'):<12}"
    phase = record.get("phase")
    if phase == "checkpoint":
        return f"{head} head #{record.get('head_seq')} {str(record.get('head_hash'))[:16]}"
    if phase == "chain_break":
        return f"{head} {record.get('reason', '')}"
    parts = [head, *_who_part(record), *_what_parts(record), *_where_parts(record)]
    parts += _verdict_parts(record)
    parts.append(str(record.get("event_id", "")))
    return " ".join(parts)


def record_section(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The mapping `record[name]` (`who`, `what`, `outcome`, ...), or an empty one when a
    record lacks it or holds something else there (a damaged log still reads)."""
    part = record.get(name)
    return part if isinstance(part, Mapping) else {}


def _who_part(record: Mapping[str, Any]) -> list[str]:
    who = record_section(record, "who")
    if not who:
        return []
    ident = f"{who.get('sub', '-')}/{who.get('transport', '-')}"
    return [ident + (f"@{who['source_ip']}" if "source_ip" in who else "")]


def _what_parts(record: Mapping[str, Any]) -> list[str]:
    what = record_section(record, "what")
    parts = []
    if "tool" in what:
        parts.append(f"{what['tool']}[{what.get('tier', '?')}]")
    if "secret" in what:
        parts.append(f"secret={what['secret']} from {what.get('source', '?')}")
    if "arguments" in what:
        parts.append(json.dumps(what["arguments"], separators=(",", ":"), sort_keys=True))
    return parts


def _where_parts(record: Mapping[str, Any]) -> list[str]:
    where = record_section(record, "where")
    target = "/".join(
        str(where[key]) for key in ("cluster", "node", "vmid") if where.get(key) is not None
    )
    parts = [f"@{target}"] if target else []
    if "argv" in where:
        parts.append("argv=" + json.dumps(where["argv"]))
    return parts


def _verdict_parts(record: Mapping[str, Any]) -> list[str]:
    parts = []
    decision = record_section(record, "decision")
    if "effect" in decision:
        parts.append(f"{decision['effect']}({','.join(map(str, decision.get('rules', [])))})")
    outcome = record_section(record, "outcome")
    if outcome:
        result = str(outcome.get("status", "?"))
        if "error" in outcome:
            result += f":{outcome['error']}"
        if "duration_ms" in outcome:
            result += f" {outcome['duration_ms']}ms"
        if "reason" in outcome:
            result += f" ({outcome['reason']})"
        parts.append(result)
    return parts
