"""Tell approvers that a call waits for them: an optional, signed webhook.

The notifier watches the approval store (`gateway/approvals.py`) rather than being called by
whoever changes it, because requests are decided in other processes too (`pvemcp approvals
approve` runs beside the gateway): every poll compares each request's status with the one
last announced, and posts `approval.pending` for a new request and `approval.approved`,
`approval.denied` or `approval.expired` once it is settled. Requests already in the store
when the gateway starts are taken as announced.

Delivery never touches the store and runs in its own task with a short timeout and a
bounded number of attempts, so an endpoint that hangs, fails or is down can delay only its
own notifications: the held call, its request and the wait on it go on unaffected. A
delivery that fails every attempt is logged and audited (an `approval` record with
action `notify_failed`, naming the request), then dropped.

The body is signed with HMAC-SHA256 over `<timestamp>.<body>` in
`X-Pvemcp-Signature: t=<unix seconds>,v1=<hex>`, so a receiver can check both origin and
freshness (`verify_signature` is the reference check). Payloads come in three shapes
(`generic`, `slack`, `teams`); all carry only the redacted plan the store holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import httpx2
import structlog
from anyio.abc import TaskStatus

from pvemcp.config import ConfigError, Settings, webhook_url_problem
from pvemcp.gateway.approvals import ApprovalRequest, ApprovalStore
from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.audit import AuditLog, AuditUnavailable
from pvemcp.secrets.file import read_private_file
from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.types import SecretSourceError

log = structlog.get_logger(__name__)

WebhookFormat = Literal["generic", "slack", "teams"]
SIGNATURE_HEADER = "X-Pvemcp-Signature"
EVENT_HEADER = "X-Pvemcp-Event"
SUMMARY_CHARS = 500
"""The plan summary is cut here in payloads: chat messages have length limits, and the
whole plan is one `GET /approvals/{id}` away."""
SIGNATURE_TOLERANCE = 300
"""Seconds a receiver should accept a signature's timestamp either side of its clock."""
ANNOUNCED = {"pending": "pending", "approved": "approved", "used": "approved"}
"""Status seen -> event announced; `used` implies an approval that may have come and gone
between two polls. `denied` and `expired` announce themselves."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Pvemcp-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver does: the header's MAC matches `body` and its time is recent.

    Constant-time comparison; a stale timestamp fails even with a good MAC (a replay).
    """
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where and how notifications go; built from `[approvals]` by `from_settings`.

    `attempts` bounds the tries per notification; `backoff` is the pause before the second
    try, doubled for each further one.
    """

    url: str
    secret: bytes | None
    format: WebhookFormat = "generic"
    timeout: float = 5.0
    attempts: int = 3
    backoff: float = 1.0

    def __post_init__(self) -> None:
        problem = webhook_url_problem(self.url)
        if problem is not None:
            raise ValueError(f"approvals.webhook_url {problem}")

    @property
    def host(self) -> str:
        """How logs and audit name the endpoint: never the whole URL, which for chat
        webhooks is itself the credential."""
        return urllib.parse.urlsplit(self.url).netloc.rpartition("@")[2]


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class WebhookSettings(Protocol):
    """The `[approvals]` webhook settings `webhook_target` reads (`ApprovalsConfig` fits)."""

    @property
    def webhook_url(self) -> _Secret | None: ...
    @property
    def webhook_secret(self) -> _Secret | None: ...
    @property
    def webhook_secret_file(self) -> Path | None: ...
    @property
    def webhook_format(self) -> WebhookFormat: ...
    @property
    def webhook_timeout(self) -> float: ...
    @property
    def webhook_attempts(self) -> int: ...


def webhook_target(settings: WebhookSettings) -> WebhookTarget | None:
    """The webhook `settings` describe (`None`: no webhook); raises `ConfigError`.

    The signing secret comes from `webhook_secret` (any settings source: env, file) or
    from `webhook_secret_file`, a 0600 file like other secret files. The `generic` format
    needs one: its receiver has nothing else to tell our posts from anyone's. Slack and
    Teams check no signature (their URL is the credential), so there it is optional.
    """
    if settings.webhook_url is None:
        return None
    if settings.webhook_secret is not None and settings.webhook_secret_file is not None:
        raise ConfigError(
            "approvals.webhook_secret and approvals.webhook_secret_file are both set: keep "
            "the secret in one place"
        )
    secret: bytes | None = None
    if settings.webhook_secret is not None:
        secret = settings.webhook_secret.get_secret_value().encode()
    elif settings.webhook_secret_file is not None:
        path = settings.webhook_secret_file.expanduser()
        try:
            secret = read_private_file(path, "approvals.webhook_secret_file").strip()
        except SecretSourceError as exc:
            raise ConfigError(str(exc)) from None
        if not secret:
            raise ConfigError(f"approvals.webhook_secret_file {path} is empty")
    if secret is None and settings.webhook_format == "generic":
        raise ConfigError(
            'approvals.webhook_format "generic" needs a signing secret: set '
            "approvals.webhook_secret (e.g. PVEMCP_APPROVALS__WEBHOOK_SECRET) or "
            "approvals.webhook_secret_file (mode 600)"
        )
    try:
        return WebhookTarget(
            url=settings.webhook_url.get_secret_value(),
            secret=secret,
            format=settings.webhook_format,
            timeout=settings.webhook_timeout,
            attempts=settings.webhook_attempts,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(plan: Mapping[str, Any]) -> str:
    summary = str(plan.get("summary") or "")
    return summary if len(summary) <= SUMMARY_CHARS else summary[: SUMMARY_CHARS - 1] + "…"


def generic_payload(event: str, request: ApprovalRequest, api_base: str | None) -> dict[str, Any]:
    """The `generic` JSON body: everything an approver needs to decide where to look."""
    links: dict[str, str] = {"cli": f"pvemcp approvals show {request.id}"}
    if api_base is not None:
        links["api"] = f"{api_base}/approvals/{request.id}"
        links["approve"] = f"{api_base}/approvals/{request.id}/approve"
        links["deny"] = f"{api_base}/approvals/{request.id}/deny"
    return {
        "event": f"approval.{event}",
        "id": request.id,
        "status": request.status,
        "tool": request.tool,
        "cluster": request.cluster,
        "target": request.plan.get("target"),
        "plan_summary": _summary(request.plan),
        "requester": request.requester,
        "approvers": list(request.approvers),
        "created": _iso(request.created),
        "expires": _iso(request.expires),
        "decided_by": request.decided_by,
        "reason": request.reason,
        "links": links,
    }


def _headline(generic: Mapping[str, Any], quote: Callable[[str], str] = str) -> str:
    """The one-line notice; `quote` shows the requester's name literally in a format whose
    markup would otherwise act on it (tool and cluster are the gateway's own names)."""
    who = quote(str((generic.get("requester") or {}).get("sub", "?")))
    verb = {
        "approval.pending": "waits for approval",
        "approval.approved": "was approved",
        "approval.denied": "was denied",
        "approval.expired": "expired unapproved",
    }[generic["event"]]
    return f"pvemcp: {generic['tool']} on {generic['cluster']} (asked by {who}) {verb}"


def _facts(generic: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [
        ("Request", str(generic["id"])),
        ("Plan", str(generic["plan_summary"]) or "-"),
        ("Approvers", ", ".join(generic["approvers"]) or "-"),
        ("Expires", str(generic["expires"])),
    ]
    if generic.get("decided_by"):
        facts.append(("Decided by", str(generic["decided_by"].get("sub", "?"))))
        facts.append(("Reason", str(generic.get("reason") or "-")))
    facts.append(("Look", " | ".join(generic["links"].values())))
    return facts


def _slack_text(text: str) -> str:
    """`text` as Slack shows it literally: its control characters escaped as Slack documents
    (`<url|label>` is a link, `<!channel>` a mass mention), since the plan summary repeats
    what the model asked for and must not become a link or a ping in the approvers' channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(generic: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook body: `text` (the notification line) plus Block Kit blocks."""
    headline = _slack_text(_headline(generic))
    lines = "\n".join(f"*{name}:* {_slack_text(value)}" for name, value in _facts(generic))
    return {
        "text": headline,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines}},
        ],
    }


_TEAMS_MARKUP = re.compile(r"([\\`*_\[\]()#+\-.!<>~|])")
"""ASCII punctuation that Adaptive Cards' markdown (a CommonMark subset: bold, italic,
lists, `[label](url)` links) or the CommonMark parser under it can read as markup."""
_TEAMS_OWN = frozenset({"Request", "Look"})
"""Facts whose values the gateway itself makes (the request id, its own commands and URLs):
left as they are, so the URLs stay links."""


def _teams_text(text: str) -> str:
    """`text` as Teams shows it literally: markdown's punctuation backslash-escaped, since in
    a TextBlock or a fact value `[Approve](https://evil)` is a link and the plan summary
    repeats what the model asked for."""
    return _TEAMS_MARKUP.sub(r"\\\1", text)


def teams_payload(generic: Mapping[str, Any]) -> dict[str, Any]:
    """Teams (Workflows / incoming webhook) body: one Adaptive Card with a fact set. Teams
    renders markdown in TextBlocks and in fact values, so what others wrote is escaped."""
    facts = [
        {"title": name, "value": value if name in _TEAMS_OWN else _teams_text(value)}
        for name, value in _facts(generic)
    ]
    headline = _headline(generic, _teams_text)
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": headline, "weight": "Bolder", "wrap": True},
            {"type": "FactSet", "facts": facts},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def render(
    target: WebhookTarget, event: str, request: ApprovalRequest, api_base: str | None
) -> bytes:
    """The body posted for `event` on `request`, in the target's format."""
    generic = generic_payload(event, request, api_base)
    if target.format == "slack":
        document = slack_payload(generic)
    elif target.format == "teams":
        document = teams_payload(generic)
    else:
        document = generic
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class ApprovalNotifier:
    """Announces approval requests to one webhook; `run()` inside the gateway's lifetime.

    `api_base` is the HTTP app's public origin for links (`None` when only the CLI can
    decide). `poll_interval` is how stale an announcement may be.
    """

    def __init__(
        self,
        target: WebhookTarget,
        store: ApprovalStore,
        audit: AuditLog,
        *,
        api_base: str | None = None,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self._store = store
        self._audit = audit
        self._api_base = api_base.rstrip("/") if api_base else None
        self._poll_interval = poll_interval
        self._clock = clock
        self._announced: dict[str, str] | None = None
        self._deliveries = anyio.CapacityLimiter(4)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the store and deliver every change until cancelled. Started with
        `TaskGroup.start`, it reports started once it has taken stock of the store, so a
        request made after that is announced."""
        await self.changes()
        task_status.started()
        async with (
            httpx2.AsyncClient(timeout=self.target.timeout, follow_redirects=False) as client,
            anyio.create_task_group() as group,
        ):
            while True:
                for event, request in await self.changes():
                    group.start_soon(self._deliver_limited, client, event, request)
                await anyio.sleep(self._poll_interval)

    async def changes(self) -> list[tuple[str, ApprovalRequest]]:
        """The events to announce since the last call; the first call only takes stock."""
        try:
            requests = await anyio.to_thread.run_sync(self._store.list)
        except (OSError, ToolFailure) as exc:  # the store's trouble is not the webhook's
            log.warning("approval_notify_scan_failed", error=str(exc))
            return []
        current = {request.id: request for request in requests}
        if self._announced is None:
            self._announced = {rid: ANNOUNCED.get(r.status, r.status) for rid, r in current.items()}
            return []
        events: list[tuple[str, ApprovalRequest]] = []
        for rid, request in current.items():
            event = ANNOUNCED.get(request.status, request.status)
            if self._announced.get(rid) != event:
                events.append((event, request))
                self._announced[rid] = event
        for gone in set(self._announced) - set(current):
            del self._announced[gone]
        return events

    async def _deliver_limited(
        self, client: httpx2.AsyncClient, event: str, request: ApprovalRequest
    ) -> None:
        async with self._deliveries:
            try:
                await self.deliver(client, event, request)
            except Exception as exc:  # a notifier bug must not take the gateway down
                log.exception("approval_notify_crashed", request=request.id, error=str(exc))

    async def deliver(
        self, client: httpx2.AsyncClient, event: str, request: ApprovalRequest
    ) -> bool:
        """Post one notification, retrying within bounds; `False` (logged and audited)
        when every attempt failed. Never raises for the endpoint's faults."""
        body = render(self.target, event, request, self._api_base)
        errors: list[str] = []
        for attempt in range(1, self.target.attempts + 1):
            if attempt > 1:
                await anyio.sleep(self.target.backoff * 2 ** (attempt - 2))
            error = await self._post(client, event, body)
            if error is None:
                log.info("approval_notified", request=request.id, kind=event, attempt=attempt)
                return True
            errors.append(error)
            log.warning(
                "approval_notify_attempt_failed",
                request=request.id,
                kind=event,
                attempt=attempt,
                host=self.target.host,
                error=error,
            )
            if error.startswith("http_4") and error not in ("http_408", "http_429"):
                break  # the endpoint refuses this body: the same body will not fare better
        self._record_failure(event, request, errors)
        return False

    async def _post(self, client: httpx2.AsyncClient, event: str, body: bytes) -> str | None:
        """One attempt; the failure as a short code (`timeout`, `http_500`, ...) or `None`."""
        headers = {"Content-Type": "application/json", EVENT_HEADER: f"approval.{event}"}
        if self.target.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.target.secret, math.floor(self._clock()), body)
        try:
            # The whole exchange is bounded, not only each read: a server that trickles
            # bytes would otherwise hold the delivery for ever.
            with anyio.fail_after(self.target.timeout):
                response = await client.post(self.target.url, content=body, headers=headers)
        except (TimeoutError, httpx2.TimeoutException):
            return "timeout"
        except httpx2.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return None
        return f"http_{response.status_code}"

    def _record_failure(self, event: str, request: ApprovalRequest, errors: list[str]) -> None:
        log.error(
            "approval_notify_failed",
            request=request.id,
            kind=event,
            host=self.target.host,
            attempts=len(errors),
            errors=errors,
        )
        try:
            self._audit.approval(
                "notify_failed",
                request.id,
                actor=None,
                status=request.status,
                request=request.audit_view(),
                error_code="webhook_failed",
                reason=f"approval.{event} to {self.target.host}: {', '.join(errors)}",
            )
        except AuditUnavailable as exc:
            log.error("approval_notify_failure_not_audited", error=str(exc))


def approval_notifier(
    settings: Settings, store: ApprovalStore | None, audit: AuditLog, redactor: Redactor
) -> ApprovalNotifier | None:
    """The notifier `[approvals]` asks for, or `None` (no webhook, or no store to watch).

    The webhook URL and secret join the redaction set (a chat webhook URL is a credential).
    Links point at the HTTP approval API when `http.public_url` says where clients reach
    the app; otherwise only the CLI command is given.
    """
    target = webhook_target(settings.approvals)
    if target is None or store is None:
        return None
    redactor.add(target.url, target.secret.decode() if target.secret else "")
    public = settings.http.public_url
    parts = urllib.parse.urlsplit(public) if public else None
    api_base = f"{parts.scheme}://{parts.netloc}" if parts else None
    return ApprovalNotifier(target, store, audit, api_base=api_base)
