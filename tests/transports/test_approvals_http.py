"""The HTTP approval API on a real uvicorn on 127.0.0.1, with real signed JWTs.

The tokens come from the test issuer (`run_test_issuer`: discovery and a JWKS on loopback,
RS256 tokens it signs with the sub and groups a test asks for), verified by the same
`OidcVerifier` as the MCP endpoint. Alice's call is held; Bob (group `secops`, the named
approvers) decides it over HTTP; Alice herself, Carol (not named), an expired or already
decided request, a forged id, a wrong method, no token or a foreign origin are each a
structured error and an audit record.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pvemcp.config import HttpConfig
from pvemcp.gateway.approval_notify import ApprovalNotifier, WebhookTarget
from pvemcp.gateway.approvals import ApprovalRequest, ApprovalStore
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.loader import parse_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.edge import http_server, listen
from pvemcp.transports.http import build_http
from tests.conftest import cluster_for, read_audit
from tests.support.oidc import TestIssuer, _ServerThread, run_test_issuer, signing_key
from tests.transports.test_http_app import error_of, free_port, payload

pytestmark = pytest.mark.anyio

BINDING = "c" * 64
POLICY = """
[[rules]]
id = "agents"
effect = "allow"
subjects = ["sub:alice", "sub:mallory"]
tiers = ["read", "write", "destructive"]

[[rules]]
id = "four-eyes"
effect = "approve"
subjects = ["*"]
tools = ["proxmox_guest_stop"]
approvers = ["group:secops"]
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    with run_test_issuer() as running:
        running.reset([signing_key()])
        yield running


class Clock:
    """The store's wall clock, moved by the test to expire requests."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    """This module's own simulator: its guests are stopped here."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(
    sim: SimulatorHandle, audit_path: Path, tmp_path: Path, clock: Clock
) -> AsyncIterator[Gateway]:
    """Alice and Mallory may stop guests; a stop is held until group secops approves."""
    audit = AuditLog(audit_path)
    made = Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim)}, "demo"),
        policy=PolicyEngine(parse_policy(POLICY, source="test", known_tools=tier_map())),
        audit=audit,
        redactor=Redactor((sim.token_secret,)),
        approvals=ApprovalStore(tmp_path / "approvals", 600, audit, clock=clock),
    )
    try:
        yield made
    finally:
        await made.aclose()


@dataclass
class Api:
    """The served app: its base URL, the store behind it, and tokens for named people."""

    base: str
    resource: str
    issuer: TestIssuer
    store: ApprovalStore

    def token(self, sub: str, *groups: str, scope: str = "pvemcp pve.read") -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer.issuer,
            "sub": sub,
            "aud": self.resource,
            "client_id": f"{sub}-client",
            "scope": scope,
            "iat": now,
            "exp": now + 300,
            "groups": list(groups),
        }
        return self.issuer.mint(claims)

    def principal(self, sub: str) -> Principal:
        return Principal(subject=sub, transport="http", issuer=self.issuer.issuer)

    def hold(self, requester: str = "alice") -> ApprovalRequest:
        """A held shell call of `requester` that group `secops` may decide."""
        return self.store.create(
            tool="proxmox_shell_run",
            cluster="demo",
            binding=BINDING,
            plan={"summary": "run `uptime` on pve1", "target": {"node": "pve1"}},
            arguments={"node": "pve1", "command": "uptime"},
            requester=self.principal(requester),
            approvers=["group:secops"],
            rule_ids=["shell-approve"],
        )

    async def call(
        self, method: str, path: str, token: str | None, **kwargs: Any
    ) -> httpx2.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx2.AsyncClient() as http:
            return await http.request(method, self.base + path, headers=headers, **kwargs)


@asynccontextmanager
async def serving(gateway: Gateway, issuer: TestIssuer, **http: Any) -> AsyncIterator[Api]:
    """`build_http` for `gateway` (and its approval store), OIDC against `issuer`."""
    values: dict[str, Any] = {
        "auth": "oidc",
        "port": free_port(),
        "oidc": {"issuer": issuer.issuer, "required_scopes": ["pve.read"]},
    }
    values.update(http)
    sock, config = listen(HttpConfig(**values))
    frontend = build_http(gateway, config)
    server = http_server(frontend.app, config)
    store = gateway.approvals
    assert store is not None
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
                await anyio.sleep(0.01)
        base = frontend.resource.removesuffix(config.path)
        try:
            yield Api(base, frontend.resource, issuer, store)
        finally:
            server.should_exit = True


def refusals(audit_path: Path) -> list[tuple[str, str, str | None]]:
    """(error code, approval id, who) of every refused approval attempt, in order."""
    return [
        (r["outcome"]["error"], r["what"]["approval_id"], r.get("who", {}).get("sub"))
        for r in read_audit(audit_path)
        if r["phase"] == "approval" and r["what"]["action"] == "refused"
    ]


def error(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["message"]
    return body


async def test_a_named_approver_decides_and_everyone_else_is_refused(
    gateway: Gateway, audit_path: Path, issuer: TestIssuer
) -> None:
    async with serving(gateway, issuer) as api:
        held = api.hold()
        alice, bob = api.token("alice"), api.token("bob", "secops")
        carol = api.token("carol", "dev")

        listed = await api.call("GET", "/approvals", bob)
        assert [item["id"] for item in listed.json()["approvals"]] == [held.id]
        assert listed.json()["approvals"][0]["plan"]["summary"] == "run `uptime` on pve1"
        assert (await api.call("GET", "/approvals", carol)).json() == {"approvals": []}
        shown = await api.call("GET", f"/approvals/{held.id}", alice)
        assert shown.json()["approval"]["status"] == "pending"
        hidden = await api.call("GET", f"/approvals/{held.id}", carol)
        assert error(hidden, 404)["code"] == "approval_not_found"

        own = await api.call("POST", f"/approvals/{held.id}/approve", alice, json={"reason": "me"})
        assert error(own, 403)["code"] == "approval_self"
        other = await api.call("POST", f"/approvals/{held.id}/approve", carol, json={"reason": "x"})
        assert error(other, 403)["code"] == "approval_not_approver"
        no_reason = await api.call("POST", f"/approvals/{held.id}/approve", bob, content=b"yes")
        assert error(no_reason, 400) == {
            "code": "invalid_argument",
            "field": "reason",
            "message": 'the body must be a JSON object {"reason": "..."} with a string reason',
            "hint": "Say why you approve or deny it; the reason is kept in the audit log.",
        }

        approved = await api.call(
            "POST", f"/approvals/{held.id}/approve", bob, json={"reason": "change 42"}
        )
        assert approved.status_code == 200, approved.text
        decision = approved.json()["approval"]
        assert decision["status"] == "approved"
        assert decision["decided_by"]["sub"] == "bob"
        assert decision["decided_by"]["groups"] == ["secops"]
        assert decision["reason"] == "change 42"

        again = await api.call("POST", f"/approvals/{held.id}/deny", bob, json={"reason": "no"})
        assert error(again, 409)["code"] == "approval_decided"

        # The requester's re-sent call runs once: the first consume succeeds, a second not.
        assert api.store.consume(held.id, BINDING, api.principal("alice")).status == "used"
        with pytest.raises(ToolFailure) as reused:
            api.store.consume(held.id, BINDING, api.principal("alice"))
        assert reused.value.code == "approval_decided"
        used = await api.call("POST", f"/approvals/{held.id}/approve", bob, json={"reason": "r"})
        assert error(used, 409)["code"] == "approval_decided"

    assert refusals(audit_path) == [
        ("approval_not_found", held.id, "carol"),  # not theirs to see
        ("approval_self", held.id, "alice"),
        ("approval_not_approver", held.id, "carol"),
        ("invalid_argument", held.id, "bob"),
        ("approval_decided", held.id, "bob"),
        ("approval_decided", held.id, "alice"),
        ("approval_decided", held.id, "bob"),
    ]
    decided = [
        r
        for r in read_audit(audit_path)
        if r["phase"] == "approval" and r["what"]["action"] == "approved"
    ]
    assert [(r["who"]["sub"], r["who"]["iss"], r["outcome"]["reason"]) for r in decided] == [
        ("bob", issuer.issuer, "change 42")
    ]


async def test_expired_forged_and_denied_requests(
    gateway: Gateway, audit_path: Path, issuer: TestIssuer, clock: Clock
) -> None:
    async with serving(gateway, issuer) as api:
        bob = api.token("bob", "secops")
        late, denied = api.hold(), api.hold()
        clock.now += 300
        refused = await api.call(
            "POST", f"/approvals/{denied.id}/deny", bob, json={"reason": "not today"}
        )
        assert refused.json()["approval"]["status"] == "denied"
        clock.now += 301  # past the 600 s TTL of `late`
        expired = await api.call("POST", f"/approvals/{late.id}/approve", bob, json={"reason": "r"})
        assert error(expired, 409)["code"] == "approval_expired"
        assert (await api.call("GET", "/approvals", bob)).json() == {"approvals": []}
        everything = await api.call("GET", "/approvals?status=all", bob)
        statuses = {item["id"]: item["status"] for item in everything.json()["approvals"]}
        assert statuses == {late.id: "expired", denied.id: "denied"}
        bad_filter = await api.call("GET", "/approvals?status=bogus", bob)
        assert error(bad_filter, 400)["field"] == "status"

        forged = "A" * 24
        missing = await api.call("POST", f"/approvals/{forged}/approve", bob, json={"reason": "r"})
        assert error(missing, 404)["code"] == "approval_not_found"
        traversal = await api.call("GET", "/approvals/..%2F..%2Faudit", bob)
        assert error(traversal, 404)["code"] == "approval_not_found"

    assert refusals(audit_path) == [
        ("approval_expired", late.id, "bob"),
        ("approval_not_found", forged, "bob"),
    ]
    actions = [r["what"]["action"] for r in read_audit(audit_path) if r["phase"] == "approval"]
    assert actions.count("expired") == 1 and actions.count("denied") == 1


async def test_a_body_nested_too_deep_is_a_bad_request(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    """A decision body of 100,000 nested arrays (under the 1 MiB body limit) made the JSON
    parser raise RecursionError, which `_reason` did not catch: a bare 500 with a
    traceback in the log. It is a 400 `invalid_argument` like any other bad body."""
    async with serving(gateway, issuer) as api:
        held = api.hold()
        bob = api.token("bob", "secops")
        deep = await api.call("POST", f"/approvals/{held.id}/approve", bob, content=b"[" * 100_000)
        assert error(deep, 400)["code"] == "invalid_argument"
        assert api.store.get(held.id).status == "pending"


async def test_wrong_method_no_token_and_foreign_origin(
    gateway: Gateway, audit_path: Path, issuer: TestIssuer
) -> None:
    async with serving(gateway, issuer) as api:
        held = api.hold()
        bob = api.token("bob", "secops")

        wrong = await api.call("GET", f"/approvals/{held.id}/approve", bob)
        assert error(wrong, 405)["code"] == "method_not_allowed"
        assert wrong.headers["allow"] == "POST"
        deleting = await api.call("DELETE", f"/approvals/{held.id}", bob)
        assert error(deleting, 405)["hint"] == "Use GET, HEAD."
        unknown = await api.call("GET", f"/approvals/{held.id}/approve/now", bob)
        assert error(unknown, 404)["code"] == "approval_not_found"

        anonymous = await api.call("POST", f"/approvals/{held.id}/approve", None, json={})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer resource_metadata=")
        forged_token = bob[:-4] + "AAAA"
        invalid = await api.call("GET", "/approvals", forged_token)
        assert invalid.status_code == 401
        assert invalid.json()["error"] == "invalid_token"
        narrow = api.token("bob", "secops", scope="pvemcp")
        scoped = await api.call("GET", "/approvals", narrow)
        assert scoped.status_code == 403
        assert scoped.json()["error"] == "insufficient_scope"
        foreign = await api.call(
            "POST",
            f"/approvals/{held.id}/approve",
            bob,
            json={"reason": "r"},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert api.store.get(held.id).status == "pending", "nothing got through"

    assert refusals(audit_path) == [
        ("method_not_allowed", held.id, "bob"),
        ("method_not_allowed", held.id, "bob"),
    ]
    failures = [
        r["outcome"]["reason"] for r in read_audit(audit_path) if r["phase"] == "auth_failure"
    ]
    assert failures == ["missing_token", "bad_signature", "insufficient_scope"]


async def test_without_authentication_there_is_no_approval_api(
    gateway: Gateway, issuer: TestIssuer
) -> None:
    async with serving(gateway, issuer, auth="none", allow_unauthenticated=True) as api:
        api.hold()
        listed = await api.call("GET", "/approvals", None)
        assert listed.status_code == 404


async def test_a_held_stop_runs_once_after_a_second_person_approves_over_http(
    gateway: Gateway, audit_path: Path, issuer: TestIssuer
) -> None:
    """The issue's "done when", over HTTP: Alice's stop is held; she waits on it while the
    webhook endpoint hangs; Bob approves through the API; her re-sent call runs once."""
    store = gateway.approvals
    assert store is not None and store.audit is not None
    hanging = _ServerThread(Starlette(routes=[Route("/hook", _hang, methods=["POST"])]))
    hook = f"http://127.0.0.1:{hanging.start()}/hook"
    notifier = ApprovalNotifier(
        WebhookTarget(url=hook, secret=b"k", timeout=0.5, attempts=2, backoff=0.1),
        store,
        store.audit,
        poll_interval=0.05,
    )
    try:
        async with serving(gateway, issuer) as api, anyio.create_task_group() as background:
            await background.start(notifier.run)
            bob = api.token("bob", "secops")
            headers = {"Authorization": f"Bearer {api.token('alice')}"}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(api.resource, http_client=http)) as alice,
            ):
                pending = error_of(await alice.call_tool("proxmox_guest_stop", {"vmid": 100}))
                assert pending["code"] == "approval_pending"
                approval_id = pending["details"]["approval_id"]
                waited: dict[str, Any] = {}

                async def wait() -> None:
                    waited.update(
                        payload(
                            await alice.call_tool(
                                "proxmox_approval_status",
                                {"approval_id": approval_id, "wait": True, "timeout": 20},
                            )
                        )
                    )

                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    await anyio.sleep(0.5)
                    decided = await api.call(
                        "POST", f"/approvals/{approval_id}/approve", bob, json={"reason": "ok"}
                    )
                    assert decided.status_code == 200, decided.text
                assert waited["approvals"][0]["status"] == "approved"

                args = {"vmid": 100, "approval_id": approval_id}
                payload(await alice.call_tool("proxmox_guest_stop", args))
                guest = payload(await alice.call_tool("proxmox_guest_get", {"vmid": 100}))
                assert guest["status"] == "stopped"
                again = error_of(await alice.call_tool("proxmox_guest_stop", args))
                assert again["code"] == "approval_decided"
            # The hanging hook's two attempts take about 1.1 s; on a quiet machine the flow
            # above can end sooner, and cancelling the notifier then drops the record.
            for _ in range(200):  # at most 10 s
                if any(
                    r["phase"] == "approval" and r["what"]["action"] == "notify_failed"
                    for r in read_audit(audit_path)
                ):
                    break
                await anyio.sleep(0.05)
            background.cancel_scope.cancel()
    finally:
        hanging.stop()

    records = read_audit(audit_path)
    stops = [
        r["phase"]
        for r in records
        if r.get("what", {}).get("tool") == "proxmox_guest_stop" and r["phase"] != "approval"
    ]
    assert stops.count("intent") == 1 and stops.count("outcome") == 1, "ran exactly once"
    intent = next(r for r in records if r["phase"] == "intent")
    assert intent["decision"]["approval"]["by"]["sub"] == "bob"
    failed = [
        r for r in records if r["phase"] == "approval" and r["what"]["action"] == "notify_failed"
    ]
    assert failed and all(r["what"]["approval_id"] == approval_id for r in failed)


async def _hang(_: Request) -> Response:
    await anyio.sleep(30)
    return Response(status_code=204)


async def test_a_decision_that_cannot_be_audited_is_not_taken(
    gateway: Gateway, issuer: TestIssuer, tmp_path: Path
) -> None:
    async with serving(gateway, issuer) as api:
        held = api.hold()
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        api.store.audit = AuditLog(blocker / "audit.jsonl")  # every append fails
        refused = await api.call(
            "POST",
            f"/approvals/{held.id}/approve",
            api.token("bob", "secops"),
            json={"reason": "r"},
        )
        assert error(refused, 503)["code"] == "audit_unavailable"
        assert api.store.get(held.id).status == "pending"
