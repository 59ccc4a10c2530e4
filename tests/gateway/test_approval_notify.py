"""The approval webhook against real HTTP servers on 127.0.0.1: one that records (and
checks the signature), one that hangs, one that answers 500, one that answers 404.

A failing endpoint must cost only its own notifications: the request stays pending and can
be decided while deliveries time out, and every failed delivery is logged and audited.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pvemcp.config import ApprovalsConfig, ConfigError, Settings
from pvemcp.gateway.approval_notify import (
    SIGNATURE_HEADER,
    ApprovalNotifier,
    WebhookFormat,
    WebhookTarget,
    sign,
    verify_signature,
    webhook_target,
)
from pvemcp.gateway.approvals import ApprovalRequest, ApprovalStore
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.principal import Principal
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor
from tests.conftest import read_audit
from tests.support.oidc import _ServerThread

pytestmark = pytest.mark.anyio

SECRET = b"webhook-secret-for-tests"
ISSUER = "https://idp.example"
ALICE = Principal(subject="alice", transport="http", issuer=ISSUER)
BOB = Principal(subject="bob", transport="http", issuer=ISSUER, groups=frozenset({"secops"}))


@dataclass
class Endpoint:
    """What the webhook servers saw: every post by path, with headers and raw body."""

    url: str = ""
    posts: dict[str, list[tuple[dict[str, str], bytes]]] = field(default_factory=dict)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts.get(path, [])]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    seen = Endpoint()

    async def receive(request: Request) -> Response:
        body = await request.body()
        seen.posts.setdefault(request.url.path, []).append((dict(request.headers), body))
        if request.url.path == "/hang":
            await anyio.sleep(30)
        if request.url.path == "/fail":
            return JSONResponse({"error": "boom"}, status_code=500)
        if request.url.path == "/gone":
            return JSONResponse({"error": "no such hook"}, status_code=404)
        return Response(status_code=204)

    paths = ("/record", "/hang", "/fail", "/gone")
    server = _ServerThread(Starlette(routes=[Route(p, receive, methods=["POST"]) for p in paths]))
    seen.url = f"http://127.0.0.1:{server.start()}"
    try:
        yield seen
    finally:
        server.stop()


@pytest.fixture
def endpoint_clean(endpoint: Endpoint) -> Endpoint:
    endpoint.posts.clear()
    return endpoint


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore(tmp_path / "approvals", ttl=600, audit=AuditLog(tmp_path / "audit.jsonl"))


def hold(store: ApprovalStore) -> ApprovalRequest:
    """A pending request from alice that bob (group secops) may decide."""
    return store.create(
        tool="proxmox_shell_run",
        cluster="demo",
        binding="b" * 64,
        plan={"summary": "run `systemctl restart pveproxy` on pve1", "target": {"node": "pve1"}},
        arguments={"node": "pve1", "command": "systemctl restart pveproxy"},
        requester=ALICE,
        approvers=["group:secops"],
        rule_ids=["shell-needs-approval"],
    )


@asynccontextmanager
async def notifying(
    store: ApprovalStore, url: str, *, fmt: WebhookFormat = "generic", **target: Any
) -> AsyncIterator[ApprovalNotifier]:
    """A notifier running (polling every 20 ms) until the block ends."""
    assert store.audit is not None
    values: dict[str, Any] = {"timeout": 0.5, "attempts": 2, "backoff": 0.05}
    values.update(target)
    notifier = ApprovalNotifier(
        WebhookTarget(url=url, secret=SECRET, format=fmt, **values),
        store,
        store.audit,
        api_base="https://pvemcp.example:8443/",
        poll_interval=0.02,
    )
    async with anyio.create_task_group() as group:
        await group.start(notifier.run)
        try:
            yield notifier
        finally:
            group.cancel_scope.cancel()


async def until(condition: Any, seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - polling what another thread records
            await anyio.sleep(0.01)


def notify_failures(store: ApprovalStore) -> list[dict[str, Any]]:
    assert store.audit is not None and store.audit.path is not None
    return [
        record
        for record in read_audit(store.audit.path)
        if record["phase"] == "approval" and record["what"]["action"] == "notify_failed"
    ]


async def test_a_new_request_and_its_decision_are_posted_signed(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    before = hold(store)  # already in the store at start: taken as announced
    async with notifying(store, f"{endpoint_clean.url}/record"):
        request = hold(store)
        await until(lambda: len(endpoint_clean.posts.get("/record", [])) == 1)
        store.approve(request.id, BOB, "change ticket 42")
        await until(lambda: len(endpoint_clean.posts.get("/record", [])) == 2)
        await anyio.sleep(0.1)  # nothing more: a consumed (used) request was announced

    posts = endpoint_clean.posts["/record"]
    for headers, body in posts:
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)
        assert not verify_signature(b"another secret", headers[SIGNATURE_HEADER.lower()], body)
        assert not verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body + b" ")
    pending, approved = endpoint_clean.bodies("/record")
    assert [posts[0][0]["x-pvemcp-event"], posts[1][0]["x-pvemcp-event"]] == [
        "approval.pending",
        "approval.approved",
    ]
    assert pending["id"] == request.id != before.id
    assert pending["tool"] == "proxmox_shell_run"
    assert pending["cluster"] == "demo"
    assert pending["target"] == {"node": "pve1"}
    assert pending["plan_summary"] == "run `systemctl restart pveproxy` on pve1"
    assert pending["requester"]["sub"] == "alice"
    assert pending["approvers"] == ["group:secops"]
    assert pending["expires"].endswith("Z")
    assert pending["links"]["api"] == f"https://pvemcp.example:8443/approvals/{request.id}"
    assert pending["links"]["cli"] == f"pvemcp approvals show {request.id}"
    assert approved["decided_by"]["sub"] == "bob"
    assert approved["reason"] == "change ticket 42"


def test_the_reference_check_refuses_replays_and_malformed_headers() -> None:
    body = b'{"event":"approval.pending"}'
    good = sign(SECRET, 1000, body)
    assert verify_signature(SECRET, good, body, now=1100)
    assert not verify_signature(SECRET, good, body, now=1000 + 301), "a replay, 5 min late"
    assert not verify_signature(SECRET, "t=1000,v1=00", body, now=1000)
    assert not verify_signature(SECRET, "v1=abc", body)
    assert not verify_signature(SECRET, "garbage", body)


async def test_a_hanging_endpoint_delays_nothing_and_its_failure_is_audited(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    async with notifying(store, f"{endpoint_clean.url}/hang", timeout=0.3, attempts=2):
        request = hold(store)
        await until(lambda: len(endpoint_clean.posts.get("/hang", [])) == 1)
        # While the delivery hangs, the request is there and can be decided at once.
        started = time.monotonic()
        assert store.get(request.id).status == "pending"
        store.approve(request.id, BOB, "ok")
        assert time.monotonic() - started < 0.2
        await until(lambda: len(notify_failures(store)) == 2)

    assert len(endpoint_clean.posts["/hang"]) == 4  # two events, two attempts each
    failures = notify_failures(store)
    assert {f["what"]["approval_id"] for f in failures} == {request.id}
    assert all(f["outcome"]["error"] == "webhook_failed" for f in failures)
    reasons = sorted(f["outcome"]["reason"] for f in failures)
    host = endpoint_clean.url.removeprefix("http://")
    assert reasons == [
        f"approval.approved to {host}: timeout, timeout",
        f"approval.pending to {host}: timeout, timeout",
    ]
    assert store.get(request.id).status == "approved", "the webhook never changes a request"


async def test_a_failing_endpoint_is_retried_within_bounds_then_audited(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    async with notifying(store, f"{endpoint_clean.url}/fail", attempts=3):
        request = hold(store)
        await until(lambda: len(notify_failures(store)) == 1)
    assert len(endpoint_clean.posts["/fail"]) == 3
    (failure,) = notify_failures(store)
    assert failure["what"]["approval_id"] == request.id
    assert failure["what"]["requester"]["sub"] == "alice"
    assert failure["outcome"]["reason"].endswith("http_500, http_500, http_500")
    assert store.get(request.id).status == "pending"


async def test_a_refusing_endpoint_is_not_retried(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    async with notifying(store, f"{endpoint_clean.url}/gone", attempts=3):
        hold(store)
        await until(lambda: len(notify_failures(store)) == 1)
    assert len(endpoint_clean.posts["/gone"]) == 1
    assert notify_failures(store)[0]["outcome"]["reason"].endswith(": http_404")


async def test_an_endpoint_that_is_down_is_audited(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    from tests.transports.test_http_app import free_port

    async with notifying(store, f"http://127.0.0.1:{free_port()}/hook"):
        hold(store)
        await until(lambda: len(notify_failures(store)) == 1)
    assert "unreachable: ConnectError" in notify_failures(store)[0]["outcome"]["reason"]


@pytest.mark.parametrize("fmt", ["slack", "teams"])
async def test_chat_formats_are_posted(
    store: ApprovalStore, endpoint_clean: Endpoint, fmt: WebhookFormat
) -> None:
    async with notifying(store, f"{endpoint_clean.url}/record", fmt=fmt):
        request = hold(store)
        await until(lambda: len(endpoint_clean.posts.get("/record", [])) == 1)
    (body,) = endpoint_clean.bodies("/record")
    headline = "pvemcp: proxmox_shell_run on demo (asked by alice) waits for approval"
    if fmt == "slack":
        assert body["text"] == headline
        assert [block["type"] for block in body["blocks"]] == ["section", "section"]
        assert f"*Request:* {request.id}" in body["blocks"][1]["text"]["text"]
    else:
        (attachment,) = body["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard"
        assert card["body"][0]["text"] == headline
        facts = {fact["title"]: fact["value"] for fact in card["body"][1]["facts"]}
        assert facts["Request"] == request.id
        assert facts["Approvers"] == "group:secops"


async def posted_shell_request(
    store: ApprovalStore, endpoint: Endpoint, fmt: WebhookFormat, command: str, summary: str
) -> tuple[ApprovalRequest, dict[str, Any]]:
    """A held shell call whose command is `command`, announced in `fmt`: the request and
    the one body the endpoint received."""
    async with notifying(store, f"{endpoint.url}/record", fmt=fmt):
        request = store.create(
            tool="proxmox_shell_run",
            cluster="demo",
            binding="b" * 64,
            plan={"summary": summary},
            arguments={"node": "pve1", "command": command},
            requester=ALICE,
            approvers=["group:secops"],
            rule_ids=["shell-needs-approval"],
        )
        await until(lambda: len(endpoint.posts.get("/record", [])) == 1)
    (body,) = endpoint.bodies("/record")
    return request, body


async def test_a_slack_post_shows_what_the_model_wrote_as_text_never_as_markup(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    """The plan summary repeats what the model asked for (a command line); in Slack's mrkdwn
    `<url|label>` is a link and `<!channel>` pings everyone, so unescaped the model could
    put an "Approve here" link to a page of its choice, or a mass mention, into what the
    approvers read. Escaped as Slack documents (&, <, >), it shows as the text it is
    (it was posted as live markup before)."""
    bait = "echo <https://evil.example/approve|Approve here> <!channel> & done"
    _, body = await posted_shell_request(
        store, endpoint_clean, "slack", bait, f"run `{bait}` on pve1"
    )
    texts = [body["text"]] + [block["text"]["text"] for block in body["blocks"]]
    assert not any("<" in text or ">" in text for text in texts), texts
    shown = "echo &lt;https://evil.example/approve|Approve here&gt; &lt;!channel&gt; &amp; done"
    assert f"*Plan:* run `{shown}` on pve1" in body["blocks"][1]["text"]["text"]


async def test_a_teams_post_shows_what_the_model_wrote_as_text_never_as_a_link(
    store: ApprovalStore, endpoint_clean: Endpoint
) -> None:
    """Adaptive Cards render markdown in TextBlocks and fact values: `[label](url)` is a
    link, so the model could put an "Approve" link to a page of its choice into what the
    approvers read. Backslash-escaped, it shows as the text it is (it was posted as live
    markdown before); the gateway's own links are left as they are."""
    bait = "echo [Approve](https://evil.example/approve) **now** `x` # 1. !"
    request, body = await posted_shell_request(
        store, endpoint_clean, "teams", bait, f"run {bait} on pve1"
    )
    card = body["attachments"][0]["content"]
    facts = {fact["title"]: fact["value"] for fact in card["body"][1]["facts"]}
    assert facts["Plan"] == (
        r"run echo \[Approve\]\(https://evil\.example/approve\) \*\*now\*\* \`x\` \# 1\. \! on pve1"
    )
    assert "](" not in json.dumps(body)
    assert card["body"][0]["text"].endswith("(asked by alice) waits for approval")
    assert facts["Request"] == request.id
    assert facts["Look"].endswith(f"https://pvemcp.example:8443/approvals/{request.id}/deny")


@contextmanager
def secret_file(tmp_path: Path, mode: int, text: str = "s3cret\n") -> Iterator[Path]:
    path = tmp_path / "webhook.secret"
    path.write_text(text)
    os.chmod(path, mode)
    yield path


def test_webhook_settings(tmp_path: Path) -> None:
    url = "https://hooks.example/approvals"
    assert webhook_target(ApprovalsConfig()) is None
    target = webhook_target(ApprovalsConfig(webhook_url=url, webhook_secret="k"))
    assert target is not None and target.secret == b"k" and target.host == "hooks.example"
    with secret_file(tmp_path, 0o600) as path:
        target = webhook_target(ApprovalsConfig(webhook_url=url, webhook_secret_file=path))
        assert target is not None and target.secret == b"s3cret"
        with pytest.raises(ConfigError, match="keep the secret in one place"):
            webhook_target(
                ApprovalsConfig(webhook_url=url, webhook_secret="k", webhook_secret_file=path)
            )
    with secret_file(tmp_path, 0o644) as path, pytest.raises(ConfigError, match="chmod 600"):
        webhook_target(ApprovalsConfig(webhook_url=url, webhook_secret_file=path))
    with pytest.raises(ConfigError, match="needs a signing secret"):
        webhook_target(ApprovalsConfig(webhook_url=url))
    slack = webhook_target(ApprovalsConfig(webhook_url=url, webhook_format="slack"))
    assert slack is not None and slack.secret is None
    for bad in ("file:///etc/passwd", "ftp://hooks.example/x", "https:///nohost", "hooks.ex"):
        with pytest.raises(ValidationError, match="webhook URL must"):
            ApprovalsConfig(webhook_url=bad, webhook_secret="k")
        with pytest.raises(ValueError, match="webhook_url must"):
            WebhookTarget(url=bad, secret=b"k")


def test_logs_name_the_host_never_the_url() -> None:
    target = WebhookTarget(
        url="https://user:pw@hooks.slack.example/services/T0/B0/XXXX", secret=None, format="slack"
    )
    assert target.host == "hooks.slack.example"


async def test_the_gateway_runs_the_configured_webhook(
    tmp_path: Path, endpoint_clean: Endpoint
) -> None:
    """`open_gateway` (what `pvemcp serve` runs) starts the notifier for its lifetime, with
    links to the HTTP API at `http.public_url`, and redacts the webhook URL and secret."""
    url = f"{endpoint_clean.url}/record"
    settings = Settings(
        audit={"path": tmp_path / "audit.jsonl"},
        approvals={"webhook_url": url, "webhook_secret": "webhook-secret-0123"},
        http={"public_url": "https://pvemcp.example:8443/mcp"},
    )
    redactor = Redactor()
    async with open_gateway(settings, redactor, simulate=True) as gateway:
        assert gateway.approvals is not None
        request = hold(gateway.approvals)
        await until(lambda: len(endpoint_clean.posts.get("/record", [])) == 1)
    (body,) = endpoint_clean.bodies("/record")
    assert body["id"] == request.id
    assert body["links"]["api"] == f"https://pvemcp.example:8443/approvals/{request.id}"
    assert url not in redactor.text(f"posting to {url}")
    assert "webhook-secret-0123" not in redactor.text("key webhook-secret-0123")
