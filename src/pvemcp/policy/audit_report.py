"""`pvemcp audit report`: what a reviewer reads in the morning.

From the audit log it lists every risky call (`write`, `destructive`, `escape`) in a time
window, its intent and outcome joined by `event_id`: who asked, what exactly ran (the
shell string, the argv, the file, the API calls), where, who approved it and how, how it
ended (status, exit code, duration) and the evidence blobs of its output, each with the
command that prints it. Then every refusal a reviewer should see: policy denials, failed
or declined confirmations, and approval steps that refused, denied or expired.

The approval is read generically from `decision.approval` (method, by, and whatever else
the method records), so new approval methods show up without changes here. A four-eyes
run is also checked against the log's own `approval` records (`ApprovalLedger`, the check
`audit verify` makes): a run whose approval the log does not record (the approval store
was edited by hand) or that ran twice on one approval is listed first, as unmatched.

Text goes to a terminal; `render_html` makes one self-contained file (inline style, no
script, no external asset) in which every value is escaped: a shell string is the
caller's text and may well hold `<script>`.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pvemcp.policy.audit_verify import (
    NOT_COVERED,
    ApprovalCheck,
    ApprovalLedger,
    iter_records,
    record_section,
    record_time,
)

RISKY_TIERS = frozenset({"write", "destructive", "escape"})

_FAILED_WORDS = (
    "denied",
    "declined",
    "failed",
    "invalid",
    "expired",
    "unavailable",
    "refused",
    "unsupported",
    "not_your_task",
)
"""A refusal status or error code holding one of these is a denial or failed confirmation
(`confirmation_required` alone is a plan handed back for approval, not a failure);
`unsupported` is also what a generic API call reaching for a credential (a ticket, a token
secret) gets whatever policy says, `not_your_task` a call on another caller's task."""


@dataclass(slots=True)
class CallRow:
    """One risky call: its intent and outcome records, joined."""

    event_id: str
    time: str
    who: str
    tool: str
    tier: str
    ran: str
    where: str
    approval: str
    status: str = "no outcome (in flight or interrupted)"
    exit_code: str = ""
    duration_ms: str = ""
    evidence: list[Mapping[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    check: ApprovalCheck | None = None
    """A four-eyes run's cross-check against the log's approval records; None for any
    other call."""

    @property
    def unmatched(self) -> bool:
        """Whether this four-eyes run's approval is not what the log records."""
        return self.check is not None and self.check.kind not in (None, NOT_COVERED)

    @property
    def check_text(self) -> str:
        """The cross-check for people: `recorded`, `not covered`, or what is wrong."""
        if self.check is None:
            return ""
        if self.check.kind is None:
            return "recorded"
        if self.check.kind == NOT_COVERED:
            return "not covered (requested before the log given)"
        return f"{self.check.kind.upper()}: {self.check.message}"


@dataclass(frozen=True, slots=True)
class RefusalRow:
    """A denial, failed confirmation or refused approval step."""

    event_id: str
    time: str
    who: str
    tool: str
    status: str
    ran: str
    where: str
    reason: str


@dataclass(slots=True)
class Report:
    since: datetime | None
    until: datetime | None
    calls: list[CallRow] = field(default_factory=list)
    refusals: list[RefusalRow] = field(default_factory=list)

    @property
    def unmatched(self) -> list[CallRow]:
        """The four-eyes runs whose approval the log does not record, or that ran twice."""
        return [row for row in self.calls if row.unmatched]

    @property
    def four_eyes(self) -> list[CallRow]:
        """The four-eyes runs in the window."""
        return [row for row in self.calls if row.check is not None]


def build_report(
    records: Iterable[Mapping[str, Any]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """The report of `records` (in log order) whose time lies in [since, until). Four-eyes
    runs are checked against every approval record before them, in the window or not (a
    request approved before `since` and run after it is still matched)."""
    report = Report(since, until)
    calls: dict[str, CallRow] = {}
    ledger = ApprovalLedger()
    for record in records:
        check = ledger.see(record)
        when = record_time(record)
        if (since is not None or until is not None) and when is None:
            continue
        if when is not None and (
            (since is not None and when < since) or (until is not None and when >= until)
        ):
            continue
        phase = record.get("phase")
        event_id = str(record.get("event_id", ""))
        if phase == "intent" and record_section(record, "what").get("tier") in RISKY_TIERS:
            calls[event_id] = _call_row(record)
            calls[event_id].check = check
            report.calls.append(calls[event_id])
        elif phase == "outcome" and event_id in calls:
            _add_outcome(calls[event_id], record)
        elif _is_refusal(record):
            report.refusals.append(_refusal_row(record))
    return report


def load_report(paths: Sequence[Any], **window: datetime | None) -> Report:
    """`build_report` over the records of the log files `paths`."""
    return build_report(iter_records(paths), **window)


# -- reading records --------------------------------------------------------------------


def _who(record: Mapping[str, Any]) -> str:
    who = record_section(record, "who")
    if not who:
        return "-"
    extra = [str(who[key]) for key in ("client_id", "transport", "source_ip") if who.get(key)]
    if who.get("os_user"):
        extra.append(f"os user {who['os_user']}")
    return f"{who.get('sub', '?')}" + (f" ({', '.join(extra)})" if extra else "")


def _ran(record: Mapping[str, Any]) -> str:
    """What exactly ran: the shell string, the argv, the file, the API calls, else the
    arguments."""
    where = record_section(record, "where")
    argv = where.get("argv")
    if isinstance(argv, list) and argv:
        words = [str(word) for word in argv]
        if len(words) == 3 and words[:2] == ["sh", "-c"]:
            return words[2]
        return shlex.join(words)
    target = record_section(where, "target")
    paths = target.get("paths") or ([target["path"]] if "path" in target else [])
    if paths:
        verb = str(target.get("operation", "file"))
        return f"{verb} {', '.join(map(str, paths))}"
    calls = target.get("calls")
    if isinstance(calls, list) and calls:
        return "; ".join(
            f"{call.get('method', '?')} {call.get('path', '?')}"
            for call in calls
            if isinstance(call, Mapping)
        )
    arguments = record_section(record, "what").get("arguments")
    return json.dumps(arguments, sort_keys=True, separators=(",", ":")) if arguments else ""


def _where(record: Mapping[str, Any]) -> str:
    where = record_section(record, "where")
    parts = [str(where[key]) for key in ("cluster", "node", "vmid") if where.get(key) is not None]
    return "/".join(parts) or "-"


def _approval(record: Mapping[str, Any]) -> str:
    """How the call was approved, from `decision.approval` whatever its method; without
    one, the policy rule that allowed it."""
    decision = record_section(record, "decision")
    approval = decision.get("approval")
    if isinstance(approval, Mapping):
        text = str(approval.get("method", "approved"))
        by = approval.get("by")
        if by is not None:
            text += f" by {_person(by)}"
        for key, value in sorted(approval.items()):
            if key not in ("method", "by", "at", "token_sha256") and value not in (None, ""):
                text += f", {key} {_person(value)}"
        return text
    rules = ",".join(map(str, decision.get("rules", [])))
    return f"{decision.get('effect', '?')} ({rules})" if rules else str(decision.get("effect", "-"))


def _person(value: Any) -> str:
    """A principal (`{sub, iss, ...}`) or a list of them, or any other value, as text."""
    if isinstance(value, Mapping) and "sub" in value:
        return str(value["sub"])
    if isinstance(value, list):
        return ", ".join(_person(item) for item in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _call_row(intent: Mapping[str, Any]) -> CallRow:
    what = record_section(intent, "what")
    return CallRow(
        event_id=str(intent.get("event_id", "")),
        time=str(intent.get("time", "?")),
        who=_who(intent),
        tool=str(what.get("tool", "?")),
        tier=str(what.get("tier", "?")),
        ran=_ran(intent),
        where=_where(intent),
        approval=_approval(intent),
    )


def _add_outcome(row: CallRow, record: Mapping[str, Any]) -> None:
    outcome = record_section(record, "outcome")
    status = str(outcome.get("status", "?"))
    row.status = f"{status}:{outcome['error']}" if outcome.get("error") else status
    if outcome.get("exit_code") is not None:
        row.exit_code = str(outcome["exit_code"])
    elif outcome.get("signal"):
        row.exit_code = f"signal {outcome['signal']}"
    if outcome.get("timed_out"):
        row.notes.append("timed out")
    if outcome.get("duration_ms") is not None:
        row.duration_ms = f"{outcome['duration_ms']:.0f}"
    evidence = outcome.get("evidence")
    row.evidence = [ref for ref in evidence or [] if isinstance(ref, Mapping)]
    error = outcome.get("evidence_error")
    if isinstance(error, Mapping):
        row.notes.append(f"evidence not kept: {error.get('message', '?')}")
    if outcome.get("exitstatus") not in (None, "OK"):
        row.notes.append(f"task: {outcome['exitstatus']}")


def _is_refusal(record: Mapping[str, Any]) -> bool:
    outcome = record_section(record, "outcome")
    if record.get("phase") == "approval":
        return str(record_section(record, "what").get("action")) in ("denied", "refused", "expired")
    if record.get("phase") != "record":
        return False
    words = f"{outcome.get('status', '')} {outcome.get('error', '')}"
    return any(word in words for word in _FAILED_WORDS)


def _refusal_row(record: Mapping[str, Any]) -> RefusalRow:
    what, outcome = record_section(record, "what"), record_section(record, "outcome")
    status = str(outcome.get("status", "?"))
    if record.get("phase") == "approval":
        status = f"approval {what.get('action', '?')}"
    if outcome.get("error") and outcome["error"] not in status:
        status += f":{outcome['error']}"
    decision = record_section(record, "decision")
    reason = str(outcome.get("reason") or decision.get("reason") or "")
    if decision.get("rules"):
        reason += f" (rules {', '.join(map(str, decision['rules']))})"
    return RefusalRow(
        event_id=str(record.get("event_id", "")),
        time=str(record.get("time", "?")),
        who=_who(record),
        tool=str(what.get("tool", "?")),
        status=status,
        ran=_ran(record),
        where=_where(record),
        reason=reason.strip(),
    )


# -- rendering ---------------------------------------------------------------------------


def show_evidence(sha256: str) -> str:
    """The command that prints a blob."""
    return f"pvemcp audit show --evidence {sha256}"


def _window(report: Report) -> str:
    start = report.since.isoformat() if report.since else "the start of the log"
    end = report.until.isoformat() if report.until else "now"
    return f"from {start} to {end}"


def _evidence_text(ref: Mapping[str, Any]) -> str:
    cut = ", truncated" if ref.get("truncated") else ""
    blob = show_evidence(str(ref.get("sha256")))
    return f"{ref.get('kind', '?')} ({ref.get('bytes', '?')} bytes{cut}): {blob}"


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_COLUMNS = (("TIME", 20), ("WHO", 22), ("TOOL", 26), ("WHERE", 16), ("APPROVED", 26))


def render_text(report: Report) -> str:
    """The report for a terminal: a table of calls, the full command and the evidence on
    indented lines under each (never cut), then the refusals."""
    lines = [
        *_unmatched_text(report),
        f"Risky and escape calls {_window(report)}: {len(report.calls)}",
        "",
    ]
    header = [name.ljust(width) for name, width in _COLUMNS]
    lines.append("  ".join([*header, "OUTCOME", "EXIT", "MS"]))
    for row in report.calls:
        cells = [row.time[:19], row.who, f"{row.tool}[{row.tier}]", row.where, row.approval]
        shown = [
            _cell(text, width).ljust(width)
            for text, (_, width) in zip(cells, _COLUMNS, strict=True)
        ]
        lines.append("  ".join([*shown, row.status, row.exit_code or "-", row.duration_ms or "-"]))
        lines.append(f"    ran:      {_one_line(row.ran)}")
        if len(row.approval) > _COLUMNS[4][1]:
            lines.append(f"    approved: {row.approval}")
        lines.extend(f"    evidence: {_evidence_text(ref)}" for ref in row.evidence)
        lines.extend(f"    note:     {note}" for note in row.notes)
        if row.check is not None:
            lines.append(f"    check:    {row.check_text}")
        lines.append(f"    event:    {row.event_id}")
    lines += ["", f"Denials and failed confirmations: {len(report.refusals)}"]
    for refusal in report.refusals:
        lines.append(
            f"{refusal.time[:19]}  {refusal.who}  {refusal.tool}  {refusal.where}  {refusal.status}"
        )
        if refusal.ran:
            lines.append(f"    asked:    {_one_line(refusal.ran)}")
        if refusal.reason:
            lines.append(f"    reason:   {refusal.reason}")
        lines.append(f"    event:    {refusal.event_id}")
    return "\n".join(lines) + "\n"


def _unmatched_text(report: Report) -> list[str]:
    """The first lines of the report when there were four-eyes runs: how many match the
    log's approval records, and every one that does not, in full."""
    runs = report.four_eyes
    if not runs:
        return []
    unmatched = report.unmatched
    head = (
        f"Four-eyes runs the log's approval records do not match: {len(unmatched)} of {len(runs)}"
    )
    lines = [("!! " if unmatched else "") + head]
    for row in unmatched:
        lines.append(f"!! {row.time[:19]}  {row.who}  {row.tool}  {row.where}")
        lines.append(f"    {row.check_text}")
    return [*lines, ""]


def _one_line(text: str) -> str:
    """A multi-line shell string on one terminal line, its line breaks visible."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#eee}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font-size:.9em}
code{font-size:.85em}
.bad{color:#a00;font-weight:bold}
"""


_BAD = ' class="bad"'


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _unmatched_html(report: Report) -> list[str]:
    """The unmatched four-eyes runs, above everything else (nothing when there were no
    four-eyes runs)."""
    runs, unmatched = report.four_eyes, report.unmatched
    if not runs:
        return []
    parts = [
        f"<h2{_BAD if unmatched else ''}>Unmatched approvals "
        f"({len(unmatched)} of {len(runs)} four-eyes runs)</h2>",
        "<p>Four-eyes runs whose approval the log does not record (the approval store was "
        "changed by hand), or that ran twice on one approval.</p>",
    ]
    if unmatched:
        parts.append("<ul>")
        parts += [
            f'<li class="bad">{_h(row.time)} {_h(row.who)} {_h(row.tool)} {_h(row.where)}: '
            f"{_h(row.check_text)}</li>"
            for row in unmatched
        ]
        parts.append("</ul>")
    return parts


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page: inline style, no script, no external
    asset, every value escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pvemcp audit report {_h(_window(report))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>pvemcp audit report</h1><p>{_h(_window(report))}</p>",
        *_unmatched_html(report),
        f"<h2>Risky and escape calls ({len(report.calls)})</h2>",
        "<table><tr><th>time</th><th>who</th><th>tool</th><th>what ran</th><th>where</th>"
        "<th>approved by</th><th>check</th><th>outcome</th><th>exit</th><th>ms</th>"
        "<th>evidence</th></tr>",
    ]
    for row in report.calls:
        bad = "" if row.status == "ok" else _BAD
        evidence = "".join(
            f"<div>{_h(ref.get('kind', '?'))} {_h(ref.get('bytes', '?'))} B"
            f"{' (truncated)' if ref.get('truncated') else ''}: "
            f"<code>{_h(show_evidence(str(ref.get('sha256'))))}</code></div>"
            for ref in row.evidence
        )
        notes = "".join(f"<div>{_h(note)}</div>" for note in row.notes)
        parts.append(
            f"<tr><td>{_h(row.time)}<br><small>{_h(row.event_id)}</small></td>"
            f"<td>{_h(row.who)}</td>"
            f"<td>{_h(row.tool)} [{_h(row.tier)}]</td><td><pre>{_h(row.ran)}</pre></td>"
            f"<td>{_h(row.where)}</td><td>{_h(row.approval)}</td>"
            f"<td{_BAD if row.unmatched else ''}>{_h(row.check_text)}</td>"
            f"<td{bad}>{_h(row.status)}{notes}</td><td>{_h(row.exit_code)}</td>"
            f"<td>{_h(row.duration_ms)}</td><td>{evidence}</td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<h2>Denials and failed confirmations ({len(report.refusals)})</h2>")
    parts.append(
        "<table><tr><th>time</th><th>who</th><th>tool</th><th>asked</th><th>where</th>"
        "<th>status</th><th>reason</th></tr>"
    )
    for refusal in report.refusals:
        parts.append(
            f"<tr><td>{_h(refusal.time)}<br><small>{_h(refusal.event_id)}</small></td>"
            f"<td>{_h(refusal.who)}</td><td>{_h(refusal.tool)}"
            f"</td><td><pre>{_h(refusal.ran)}</pre></td><td>{_h(refusal.where)}</td>"
            f'<td class="bad">{_h(refusal.status)}</td><td>{_h(refusal.reason)}</td></tr>'
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"
