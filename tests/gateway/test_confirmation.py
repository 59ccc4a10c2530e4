"""Dry runs, two-step confirmation tokens and elicitation for risky calls, end to end."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from pvemcp.gateway.confirm import ApprovalStates, ConfirmationTokens, binding
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway, read_audit

pytestmark = pytest.mark.anyio

LOCAL = Principal.local("memory")


@pytest.fixture
def own_sim() -> Iterator[SimulatorHandle]:
    """A private simulator: these tests change guests' power state."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@pytest.fixture
async def gw(own_sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Gateway]:
    gateway = make_gateway({"demo": cluster_for(own_sim)}, audit_path)
    try:
        yield gateway
    finally:
        await gateway.aclose()


async def status_of(gateway: Gateway, vmid: int) -> str:
    result = await gateway.invoke(
        LOCAL, "proxmox_guest_get", {"vmid": vmid, "include_config": False}
    )
    assert result.data is not None
    return str(result.data["status"])


async def test_dry_run_returns_the_plan_and_changes_nothing(gw: Gateway, audit_path: Path) -> None:
    result = await gw.invoke(
        LOCAL, "proxmox_guest_power", {"vmid": 101, "action": "start", "dry_run": True}
    )
    assert result.data is not None
    plan = result.data["plan"]
    assert result.data["dry_run"] is True
    assert plan["summary"] == "start qemu 101 (web02) on pve1"
    assert plan["changes"] == [{"field": "status", "before": "stopped", "after": "running"}]
    assert plan["target"]["node"] == "pve1"
    assert await status_of(gw, 101) == "stopped"
    records = [r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_guest_power"]
    assert [(r["phase"], r["outcome"]["status"]) for r in records] == [("record", "dry_run")]


async def test_plan_warns_when_the_state_does_not_fit(gw: Gateway) -> None:
    result = await gw.invoke(
        LOCAL, "proxmox_guest_power", {"vmid": 100, "action": "start", "dry_run": True}
    )
    assert result.data is not None
    assert "the guest is running, not stopped" in result.data["plan"]["warnings"][0]


async def test_destructive_call_needs_a_token_then_runs_once(gw: Gateway, audit_path: Path) -> None:
    first = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100})
    assert first.error is not None
    assert first.error["code"] == "confirmation_required"
    details = first.error["details"]
    assert details["plan"]["summary"] == "stop qemu 100 (web01) on pve1"
    assert any("pulling the plug" in w for w in details["plan"]["warnings"])
    assert await status_of(gw, 100) == "running"

    token = details["confirm_token"]
    other = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 102, "confirm_token": token})
    assert other.error is not None
    assert other.error["code"] == "confirmation_invalid"
    assert "different call" in other.error["message"]
    assert await status_of(gw, 102) == "running"

    done = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100, "confirm_token": token})
    assert done.ok, done.error
    assert await status_of(gw, 100) == "stopped"

    again = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100, "confirm_token": token})
    assert again.error is not None
    assert "already used" in again.error["message"]

    statuses = [
        (r["phase"], r["outcome"]["status"] if "outcome" in r else None)
        for r in read_audit(audit_path)
        if r["what"]["tool"] == "proxmox_guest_stop"
    ]
    assert statuses == [
        ("record", "confirmation_required"),
        ("record", "confirmation_failed"),
        ("intent", None),
        ("outcome", "ok"),
        ("record", "confirmation_failed"),
    ]


def approvals(audit_path: Path, tool: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(phase, decision.approval) of each record of `tool`."""
    return [
        (r["phase"], r.get("decision", {}).get("approval"))
        for r in read_audit(audit_path)
        if r["what"]["tool"] == tool
    ]


def assert_recent(stamp: str) -> None:
    at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - at).total_seconds()) < 60


async def test_token_approval_is_recorded_without_the_token(gw: Gateway, audit_path: Path) -> None:
    dry = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 103, "dry_run": True})
    assert dry.ok
    first = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 103})
    assert first.error is not None
    token: str = first.error["details"]["confirm_token"]
    done = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 103, "confirm_token": token})
    assert done.ok, done.error

    (_, none_dry), (_, none_asked), (intent, approval), (outcome, again) = approvals(
        audit_path, "proxmox_guest_stop"
    )
    assert (intent, outcome) == ("intent", "outcome")
    assert none_dry is None and none_asked is None, "a dry run and a refusal approve nothing"
    assert approval is not None
    assert again == approval, "the outcome repeats how its intent was approved"
    nonce = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["n"]
    assert approval["method"] == "token"
    assert approval["by"] == {"sub": "local"}
    assert approval["token_id"] == nonce
    assert approval["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert_recent(approval["at"])
    assert token not in audit_path.read_text()


async def test_elicitation_approval_is_recorded(gw: Gateway, audit_path: Path) -> None:
    async def on_elicit(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"approve": True})

    # The operator profile lets `local` stop guests; issuer and client are recorded too.
    caller = Principal(subject="local", transport="memory", issuer="https://idp", client_id="a7")
    server = build_mcp_server(gw, lambda _: caller)
    async with Client(server, mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("proxmox_guest_stop", {"vmid": 105})
    assert not result.is_error, result.content

    (intent, approval), (outcome, again) = approvals(audit_path, "proxmox_guest_stop")
    assert (intent, outcome) == ("intent", "outcome")
    assert approval is not None
    assert again == approval
    assert approval["method"] == "elicitation"
    assert approval["by"] == {"sub": "local", "iss": "https://idp", "client_id": "a7"}
    assert "token_id" not in approval
    assert_recent(approval["at"])


async def test_forged_and_garbage_tokens_are_refused(gw: Gateway) -> None:
    first = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100})
    assert first.error is not None
    token: str = first.error["details"]["confirm_token"]
    prefix, body, signature = token.split(".")
    forged = ".".join([prefix, body, ("A" if signature[0] != "A" else "B") + signature[1:]])
    for bad, reason in ((forged, "not issued by this gateway"), ("nonsense", "malformed")):
        result = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100, "confirm_token": bad})
        assert result.error is not None
        assert result.error["code"] == "confirmation_invalid"
        assert reason in result.error["message"]
    assert await status_of(gw, 100) == "running"


def test_tokens_expire_and_are_bound_to_the_caller() -> None:
    def bound(sub: str) -> str:
        return binding(tool="t", arguments={"vmid": 1}, cluster="c", target={}, caller={"sub": sub})

    assert bound("alice") != bound("bob")
    tokens = ConfirmationTokens(ttl=300)
    with pytest.raises(ToolFailure, match="different call"):
        tokens.redeem(tokens.issue(bound("alice")), bound("bob"))
    expired = ConfirmationTokens(ttl=-5)
    with pytest.raises(ToolFailure, match="expired"):
        expired.redeem(expired.issue(bound("alice")), bound("alice"))
    # The token itself and dry_run are not part of what is bound.
    assert binding(
        tool="t",
        arguments={"vmid": 1, "confirm_token": "x", "dry_run": False},
        cluster="c",
        target={},
        caller={},
    ) == binding(tool="t", arguments={"vmid": 1}, cluster="c", target={}, caller={})


def test_approval_states_and_tokens_never_stand_in_for_each_other() -> None:
    """An input-required approval state is no confirm_token, nor a token a state (their
    own keys and prefixes), and a state is single-use, expires and is bound like a token."""
    bound = binding(tool="t", arguments={"vmid": 1}, cluster="c", target={}, caller={})
    tokens, states = ConfirmationTokens(ttl=300), ApprovalStates(ttl=300)
    state, token = states.issue(bound), tokens.issue(bound)
    assert state.startswith("pva1.") and token.startswith("pvc1.")
    with pytest.raises(ToolFailure, match="not issued by this gateway"):
        tokens.redeem(state, bound)
    with pytest.raises(ToolFailure, match="not issued by this gateway") as refused:
        states.redeem(token, bound)
    assert refused.value.field is None, "a state refusal names no argument of the tool"
    states.redeem(state, bound)
    with pytest.raises(ToolFailure, match=r"approval \(requestState\) was already used"):
        states.redeem(state, bound)
    expired = ApprovalStates(ttl=-5)
    with pytest.raises(ToolFailure, match="expired"):
        expired.redeem(expired.issue(bound), bound)


def payload(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return error


@pytest.mark.parametrize("answer", ["approve", "refuse", "decline"])
async def test_elicitation_asks_the_user(gw: Gateway, answer: str) -> None:
    asked: list[str] = []

    async def on_elicit(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if answer == "decline":
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content={"approve": answer == "approve"})

    server = build_mcp_server(gw, local_principal)
    async with Client(server, mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("proxmox_guest_stop", {"vmid": 102})
    assert asked
    assert "stop qemu 102 (test) on pve1" in asked[0]
    if answer == "approve":
        assert not result.is_error, result.content
        assert await status_of(gw, 102) == "stopped"
    else:
        assert payload(result)["code"] == "confirmation_declined"
        assert await status_of(gw, 102) == "running"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_client_without_elicitation_gets_the_two_step_flow(gw: Gateway, mode: str) -> None:
    async with Client(build_mcp_server(gw, local_principal), mode=mode) as client:
        first = payload(await client.call_tool("proxmox_guest_stop", {"vmid": 104}))
        assert first["code"] == "confirmation_required"
        assert first["field"] == "confirm_token"
        token = first["details"]["confirm_token"]
        second = await client.call_tool("proxmox_guest_stop", {"vmid": 104, "confirm_token": token})
        assert not second.is_error, second.content
    assert await status_of(gw, 104) == "stopped"


async def test_without_token_confirmation_only_a_person_can_approve(gw: Gateway) -> None:
    gw.token_confirmation = False
    refused = await gw.invoke(LOCAL, "proxmox_guest_stop", {"vmid": 100})
    assert refused.error is not None
    assert refused.error["code"] == "confirmation_unavailable"
    assert "confirm_token" not in str(refused.error)
    assert await status_of(gw, 100) == "running"

    async def on_elicit(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"approve": True})

    server = build_mcp_server(gw, local_principal)
    async with Client(server, mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("proxmox_guest_stop", {"vmid": 100})
    assert not result.is_error, result.content
    assert await status_of(gw, 100) == "stopped"
