"""Four-eyes approval: a risky call held until a second person approves it.

A policy rule with `effect = "approve"` (docs/policy.md) makes the gateway hold the call
as a pending *approval request*: the exact call (a binding hash of tool, arguments, target
and caller, as for confirmation tokens), its redacted plan, who asked and who may approve.
An approver named by the rule, never the requester, approves or denies it with a reason,
through `pvemcp approvals` (another process on the gateway's machine) or the HTTP approval
API; the requester's re-sent call with `approval_id` then runs once (`consume`), and only
if nothing about it changed.

The store is a directory of one JSON file per request, because the approving process is
usually not the gateway: every change is made under an exclusive `flock` on the
directory's lock file and written atomically (temporary file, fsync, rename, fsync of the
directory), so concurrent approvers, the gateway and several replicas on one machine see
one state. Files are 0600 in a 0700 directory. Ids are 144 random bits, never derived
from anything, and an id that is not well-formed is refused before the file system is
touched. Every step, and every refused attempt, is an audit record naming who
(`AuditLog.approval`).

Expiry is lazy: a request past its TTL becomes `expired` (and is audited as such) the first
time anyone looks at it or acts on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import structlog

from pvemcp.config import Settings
from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.audit import AuditLog, AuditUnavailable
from pvemcp.policy.principal import Principal
from pvemcp.policy.rules import Selector

log = structlog.get_logger(__name__)

Status = Literal["pending", "approved", "denied", "expired", "used"]
STATUSES: tuple[str, ...] = get_args(Status)
_ID = re.compile(r"^[A-Za-z0-9_-]{24}$")
"""`secrets.token_urlsafe(18)`: 24 characters, 144 random bits."""
_LOCK_NAME = ".lock"
MAX_REASON = 1000
_SHOWN_ID = 64
"""How much of an ill-formed id a refusal and its audit record repeat."""
MAX_OPEN_PER_REQUESTER = 25
"""Open requests (pending, or approved and not yet used) one requester may have: a model
re-sending a held call in a loop must not flood the store and the approvers' webhook."""
SETTLED_KEPT = 7 * 86400
"""Seconds a settled request (denied, used, expired) stays in the store after its expiry,
for `list` and the APIs to show; then `list` removes it (its steps stay in the audit log)."""


def requester_of(principal: Principal) -> dict[str, Any]:
    """Who asked, as a request stores it: enough to tell them apart from an approver."""
    who: dict[str, Any] = {"sub": principal.subject, "transport": principal.transport}
    if principal.issuer is not None:
        who["iss"] = principal.issuer
    if principal.client_id is not None:
        who["client_id"] = principal.client_id
    if principal.groups:
        who["groups"] = sorted(principal.groups)
    return who


def os_user() -> str:
    """The OS account this process runs as, from its effective uid: `getpass.getuser()`
    believes `LOGNAME`/`USER`, which whoever runs `pvemcp approvals` sets at will."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (some containers)
        return str(os.geteuid())


def _decider(principal: Principal) -> dict[str, Any]:
    """Who decided: the requester form, plus the OS account behind a `local` approver (the
    CLI runs as some user on the gateway's machine; `local` alone would not say which)."""
    who = requester_of(principal)
    if principal.is_local:
        who["os_user"] = os_user()
    return who


def same_person(requester: Mapping[str, Any], principal: Principal) -> bool:
    """Whether `principal` is the requester: the same subject from the same issuer (another
    client of the same person is still that person; `local` is one person)."""
    return (requester.get("sub"), requester.get("iss")) == principal.person


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One held call. `binding` is the SHA-256 the re-sent call must reproduce; `plan` and
    `arguments` are redacted (they are shown to approvers); `approvers` are policy subject
    selectors (`sub:alice`, `group:secops`, `local`)."""

    id: str
    tool: str
    cluster: str
    binding: str
    plan: dict[str, Any]
    arguments: dict[str, Any]
    requester: dict[str, Any]
    approvers: tuple[str, ...]
    rule_ids: tuple[str, ...]
    created: float
    expires: float
    status: Status = "pending"
    decided_by: dict[str, Any] | None = None
    reason: str | None = None
    decided_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The request as JSON-ready data (what the store writes and the APIs show)."""
        data = asdict(self)
        data["approvers"] = list(self.approvers)
        data["rule_ids"] = list(self.rule_ids)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovalRequest:
        """The request `to_json` wrote; ValueError if it is not one."""
        try:
            status = data["status"]
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            return cls(
                id=str(data["id"]),
                tool=str(data["tool"]),
                cluster=str(data["cluster"]),
                binding=str(data["binding"]),
                plan=dict(data["plan"]),
                arguments=dict(data["arguments"]),
                requester=dict(data["requester"]),
                approvers=tuple(str(item) for item in data["approvers"]),
                rule_ids=tuple(str(item) for item in data["rule_ids"]),
                created=float(data["created"]),
                expires=float(data["expires"]),
                status=cast(Status, status),
                decided_by=None if data.get("decided_by") is None else dict(data["decided_by"]),
                reason=None if data.get("reason") is None else str(data["reason"]),
                decided_at=None if data.get("decided_at") is None else float(data["decided_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an approval request: {exc}") from None

    def audit_view(self) -> dict[str, Any]:
        """What every audit record of this request repeats: whose call, what, who may decide."""
        return {
            "tool": self.tool,
            "cluster": self.cluster,
            "requester": self.requester,
            "approvers": list(self.approvers),
            "rule_ids": list(self.rule_ids),
            "binding": self.binding,
        }

    def may_approve(self, principal: Principal) -> bool:
        """Whether `principal` is named among the approvers and is not the requester."""
        if same_person(self.requester, principal):
            return False
        return any(Selector.parse(text).matches(principal) for text in self.approvers)


def _refusal(code: str, message: str, hint: str, *, field: str = "approval_id") -> ToolFailure:
    return ToolFailure(code, message, field=field, hint=hint)


class ApprovalStore:
    """Approval requests on disk, shared by every process that opens the same directory."""

    def __init__(
        self,
        directory: Path,
        ttl: float,
        audit: AuditLog | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory.expanduser()
        self.ttl = ttl
        self.audit = audit
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, audit: AuditLog | None) -> ApprovalStore:
        """The store `[approvals]` describes (beside the audit log unless set), as the
        gateway and `pvemcp approvals` must both open it."""
        directory = settings.approvals.store_directory(settings.audit)
        return cls(directory, settings.approvals.ttl, audit)

    # -- reading --------------------------------------------------------------------------

    def get(self, request_id: str, viewer: Principal | None = None) -> ApprovalRequest:
        """The request with this id (expired first if its TTL has passed);
        `approval_not_found` for an id that is unknown or not even well-formed.

        With `viewer` (a caller asking, not the store's operator), a request that is not
        theirs to see (they neither asked for it nor may decide it) is `approval_not_found`
        too, exactly like an unknown id, and each such refusal is audited."""
        with self._locked():
            request = self._expired(self._load(request_id, actor=viewer))
        if viewer is not None and not self.visible_to(request, viewer):
            failure = self.unknown(request_id)
            self.refuse(failure, request, viewer)
            raise failure
        return request

    @staticmethod
    def visible_to(request: ApprovalRequest, viewer: Principal) -> bool:
        """Whether `viewer` may see `request`: its requester, or one of its approvers."""
        return same_person(request.requester, viewer) or request.may_approve(viewer)

    def list(self, status: str | None = None) -> list[ApprovalRequest]:
        """Every request (or those with `status`), oldest first; due expiries are applied,
        and requests settled more than `SETTLED_KEPT` ago are removed (a scan of the whole
        store, run each second by the webhook notifier, must not grow for ever)."""
        if status is not None and status not in STATUSES:
            raise ToolFailure(
                "invalid_argument",
                f"status {status!r} is not one of {', '.join(STATUSES)}",
                field="status",
            )
        if not self.directory.is_dir():
            return []
        found: list[ApprovalRequest] = []
        with self._locked():
            for path in sorted(self.directory.glob("*.json")):
                try:
                    request = self._expired(self._read(path))
                except (OSError, ValueError) as exc:
                    log.warning("approval_unreadable", path=str(path), error=str(exc))
                    continue
                if self._prunable(request):
                    with contextlib.suppress(OSError):  # tried again at the next scan
                        path.unlink()
                    continue
                if status is None or request.status == status:
                    found.append(request)
        return sorted(found, key=lambda request: (request.created, request.id))

    def _prunable(self, request: ApprovalRequest) -> bool:
        """Whether `request` is settled and past `SETTLED_KEPT` after its expiry."""
        settled = request.status in ("denied", "used", "expired")
        return settled and self._clock() >= request.expires + SETTLED_KEPT

    # -- changing -------------------------------------------------------------------------

    def create(
        self,
        *,
        tool: str,
        cluster: str,
        binding: str,
        plan: Mapping[str, Any],
        arguments: Mapping[str, Any],
        requester: Principal,
        approvers: Sequence[str],
        rule_ids: Sequence[str],
    ) -> ApprovalRequest:
        """Hold a call: a new pending request, audited before it exists (an audit log that
        cannot be written means no request, `audit_unavailable`)."""
        self._within_limit(requester)
        now = self._clock()
        request = ApprovalRequest(
            id=secrets.token_urlsafe(18),
            tool=tool,
            cluster=cluster,
            binding=binding,
            plan=dict(plan),
            arguments=dict(arguments),
            requester=requester_of(requester),
            approvers=tuple(approvers),
            rule_ids=tuple(rule_ids),
            created=now,
            expires=now + self.ttl,
        )
        self._prepare_directory()
        with self._locked():
            self._write(request)
            try:
                self._audit_step("requested", request, requester)
            except ToolFailure:
                (self.directory / f"{request.id}.json").unlink(missing_ok=True)
                raise
        return request

    def _within_limit(self, requester: Principal) -> None:
        """Refuse (audited) a new request from a requester with `MAX_OPEN_PER_REQUESTER` open
        ones. Counted before the lock is taken (`list` takes it), so concurrent requests may
        pass it by a few: it bounds a loop, it is not a quota."""
        count = sum(
            1
            for held in self.list()
            if held.status in ("pending", "approved") and same_person(held.requester, requester)
        )
        if count < MAX_OPEN_PER_REQUESTER:
            return
        failure = ToolFailure(
            "approval_limit",
            f"you already have {count} calls waiting for approval or to be re-sent (at most "
            f"{MAX_OPEN_PER_REQUESTER}); nothing was held or run",
            hint="Wait for them (proxmox_approval_status), re-send an approved call with its "
            "approval_id, and do not repeat a held call without it.",
        )
        self.refuse(failure, None, requester)
        raise failure

    def approve(self, request_id: str, approver: Principal, reason: str) -> ApprovalRequest:
        """Approve a pending request as `approver`, who must be named and not the requester."""
        return self._decide(request_id, approver, reason, "approved")

    def deny(self, request_id: str, approver: Principal, reason: str) -> ApprovalRequest:
        """Deny a pending request; the same people who may approve it may deny it."""
        return self._decide(request_id, approver, reason, "denied")

    def consume(
        self, request_id: str, binding: str, caller: Principal | None = None
    ) -> ApprovalRequest:
        """Use an approved request for the call that re-sent it, once: its binding (tool,
        arguments, target, caller) must be the request's. Returns it as `used`. A `caller`
        who may not see the request gets `approval_not_found`, as for an unknown id."""
        with self._locked():
            request = self._expired(self._load(request_id, actor=caller))
            failure = None
            if caller is not None and not self.visible_to(request, caller):
                failure = self.unknown(request_id)  # not theirs: exactly like no such id
            elif request.binding != binding:
                failure = _refusal(
                    "approval_mismatch",
                    f"approval {request.id} was given for a different call (tool, arguments, "
                    "target or caller changed); nothing was run",
                    "Re-send exactly the call that was approved, or make a new request by "
                    "calling without approval_id.",
                )
            elif request.status != "approved":
                failure = self._not_usable(request)
            if failure is not None:
                self.refuse(failure, request, caller)
                raise failure
            used = replace(request, status="used")
            self._audit_step("used", used, caller)
            self._write(used)
        return used

    def _decide(
        self, request_id: str, approver: Principal, reason: str, status: Status
    ) -> ApprovalRequest:
        text = reason.strip()
        if not text or len(text) > MAX_REASON or not text.isprintable():
            bad_reason = ToolFailure(
                "invalid_argument",
                f"a reason is required: one line of printable text, at most {MAX_REASON} "
                "characters",
                field="reason",
                hint="Say why you approve or deny it; the reason is kept in the audit log.",
            )
            self.refuse(bad_reason, None, approver, request_id=request_id)
            raise bad_reason
        with self._locked():
            request = self._expired(self._load(request_id, actor=approver))
            failure: ToolFailure | None = None
            if same_person(request.requester, approver):
                failure = _refusal(
                    "approval_self",
                    f"approval {request.id} was requested by you: the requester may not "
                    "approve or deny their own call",
                    f"Ask one of the approvers ({', '.join(request.approvers)}) to decide.",
                )
            elif not request.may_approve(approver):
                failure = _refusal(
                    "approval_not_approver",
                    f"you are not among the approvers of approval {request.id} "
                    f"({', '.join(request.approvers)})",
                    "Ask one of the named approvers to decide.",
                )
            elif request.status == "expired":
                failure = self._not_usable(request)
            elif request.status != "pending":
                failure = _refusal(
                    "approval_decided",
                    f"approval {request.id} is already {request.status}",
                    "A request is decided once; the requester can make a new one.",
                )
            if failure is not None:
                self.refuse(failure, request, approver)
                raise failure
            decided = replace(
                request,
                status=status,
                decided_by=_decider(approver),
                reason=text,
                decided_at=self._clock(),
            )
            self._audit_step(status, decided, approver, reason=text)
            self._write(decided)
        return decided

    def _not_usable(self, request: ApprovalRequest) -> ToolFailure:
        """Why a request that is not `approved` cannot run its call."""
        if request.status == "pending":
            return _refusal(
                "approval_pending",
                f"approval {request.id} is still waiting for an approver; nothing was run",
                "Wait with proxmox_approval_status(approval_id, wait=true), then call again.",
            )
        if request.status == "expired":
            return _refusal(
                "approval_expired",
                f"approval {request.id} expired before it was used; nothing was run",
                "Call again without approval_id to make a new request.",
            )
        if request.status == "denied":
            reason = f": {request.reason}" if request.reason else ""
            return _refusal(
                "approval_denied",
                f"approval {request.id} was denied{reason}; nothing was run",
                "Do not retry unless the approver's concern is addressed.",
            )
        return _refusal(
            "approval_decided",
            f"approval {request.id} was already used; it runs its call once",
            "Call again without approval_id to make a new request.",
        )

    # -- expiry, audit ----------------------------------------------------------------------

    def _expired(self, request: ApprovalRequest) -> ApprovalRequest:
        """`request`, turned `expired` (written and audited) if its TTL has passed while it
        was still pending or approved-but-unused. Called under the lock."""
        if request.status not in ("pending", "approved") or self._clock() < request.expires:
            return request
        expired = replace(request, status="expired")
        try:
            self._audit_step("expired", expired, None)
        except ToolFailure:
            return expired  # shown as expired; recorded by whoever looks next
        self._write(expired)
        return expired

    def _audit_step(
        self,
        action: str,
        request: ApprovalRequest,
        actor: Principal | None,
        *,
        reason: str | None = None,
    ) -> None:
        """Record one step; the step is not taken unless it is on record."""
        if self.audit is None:
            return
        try:
            self.audit.approval(
                action,
                request.id,
                actor=actor,
                status=request.status,
                request=request.audit_view(),
                reason=reason,
                os_user=os_user() if actor is not None and actor.is_local else None,
            )
        except AuditUnavailable as exc:
            log.error("approval_audit_failed", action=action, approval_id=request.id)
            raise ToolFailure(
                "audit_unavailable",
                f"the approval step was refused because its audit record cannot be written: {exc}",
                hint="An operator must fix the audit log (disk, permissions).",
            ) from None

    def refuse(
        self,
        failure: ToolFailure,
        request: ApprovalRequest | None,
        actor: Principal | None,
        *,
        request_id: str | None = None,
    ) -> None:
        """Record a refused attempt (here, or by a front end before the store saw it: the
        HTTP API's bad body or method); a record that cannot be written is logged, and the
        refusal stands either way."""
        if self.audit is None:
            return
        shown = request.id if request is not None else (request_id or "")[:_SHOWN_ID]
        try:
            self.audit.approval(
                "refused",
                shown,
                actor=actor,
                status=request.status if request is not None else "unknown",
                request=request.audit_view() if request is not None else None,
                error_code=failure.code,
                os_user=os_user() if actor is not None and actor.is_local else None,
            )
        except AuditUnavailable as exc:
            log.error("approval_audit_failed", action="refused", error=str(exc))

    # -- files ------------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.directory.stat().st_mode & 0o077:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise self._unavailable(exc) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's exclusive lock, across processes (a no-op before the directory
        exists: there is nothing to read or change yet, and `create` makes it first)."""
        if not self.directory.is_dir():
            yield
            return
        try:
            fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unavailable(exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise self._unavailable(exc) from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load(self, request_id: str, *, actor: Principal | None) -> ApprovalRequest:
        """The stored request, or `approval_not_found` (audited when someone asked)."""
        path = self.directory / f"{request_id}.json" if _ID.match(request_id) else None
        try:
            if path is None:
                raise FileNotFoundError(request_id)
            return self._read(path)
        except (OSError, ValueError):
            failure = self.unknown(request_id)
            if actor is not None:
                self.refuse(failure, None, actor, request_id=request_id)
            raise failure from None

    @staticmethod
    def unknown(request_id: str) -> ToolFailure:
        """The refusal of an id that is unknown, ill-formed or not the asker's to see."""
        return _refusal(
            "approval_not_found",
            f"there is no approval request {request_id[:_SHOWN_ID]!r}",
            "Use the approval_id of an approval_pending answer (pvemcp approvals list "
            "shows them all).",
        )

    @staticmethod
    def _read(path: Path) -> ApprovalRequest:
        return ApprovalRequest.from_json(json.loads(path.read_text(encoding="utf-8")))

    def _write(self, request: ApprovalRequest) -> None:
        """Replace the request's file atomically and durably (under the lock);
        `approval_unavailable` if the disk refuses."""
        try:
            self._write_file(request)
        except OSError as exc:
            log.error("approval_write_failed", approval_id=request.id, error=str(exc))
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: OSError) -> ToolFailure:
        """The refusal of a step the store's directory, lock or files do not allow."""
        return ToolFailure(
            "approval_unavailable",
            f"the approval store {self.directory} cannot be written: "
            f"{exc.strerror or exc}; nothing was changed",
            hint="An operator must fix the approval store (disk, permissions).",
        )

    def _write_file(self, request: ApprovalRequest) -> None:
        target = self.directory / f"{request.id}.json"
        temporary = self.directory / f".{request.id}.{secrets.token_hex(4)}.tmp"
        data = json.dumps(request.to_json(), sort_keys=True, indent=1).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
