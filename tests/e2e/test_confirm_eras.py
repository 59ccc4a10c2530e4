"""A person confirms a destructive call in each MCP protocol era, in memory and over HTTP.

2026-07-28 clients (the SDK client's default) are asked through the input-required flow:
the call answers the question, the client's elicitation callback answers it and the
client retries with the sealed `requestState`; handshake-era clients get the pushed
elicitation where a back channel exists, and the token flow where none does (JSON-response
and stateless HTTP). The guest's power state says whether the call ran.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from textwrap import dedent
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CallToolResult,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    InputRequiredResult,
)

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.confirmation import QUESTION_KEY
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, read_audit
from tests.e2e.test_mcp_tasks import CreatedTask, TasksClient, until_done
from tests.transports.test_http_app import KEYS, bearer, error_of, payload, served

pytestmark = pytest.mark.anyio

STOP = "proxmox_guest_stop"
ERAS = {"2025-11-25": "legacy", "2026-07-28": "auto"}
"""Protocol version → the SDK `Client` mode that negotiates it."""

# Both bearer keys' holders may hard-stop guests; the builtin rule confirms every
# destructive call.
STOP_POLICY = dedent(
    """
    version = 1

    [[rules]]
    id = "static-stop"
    effect = "allow"
    subjects = ["sub:static:0", "sub:static:1"]
    tools = ["proxmox_guest_stop"]
    """
)


@pytest.fixture
def own_sim() -> Iterator[SimulatorHandle]:
    """A private simulator: these tests stop guests."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@asynccontextmanager
async def gateway_for(
    sim: SimulatorHandle, audit_path: Path, tmp_path: Path, *, token_confirmation: bool = True
) -> AsyncIterator[Gateway]:
    policy = tmp_path / "policy.toml"
    policy.write_text(STOP_POLICY)
    gateway = Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=policy, known_tools=tier_map()
        ),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
        token_confirmation=token_confirmation,
    )
    try:
        yield gateway
    finally:
        await gateway.aclose()


@pytest.fixture
async def gw(own_sim: SimulatorHandle, audit_path: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway_for(own_sim, audit_path, tmp_path) as gateway:
        yield gateway


class Person:
    """The human at the client: answers every confirmation question with `answer`."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def on_elicit(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        self.asked.append(params.message)
        if self.answer == "decline":
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content={"approve": self.answer == "accept"})


async def power(gateway: Gateway, vmid: int) -> str:
    result = await gateway.invoke(
        Principal.local("memory"), "proxmox_guest_get", {"vmid": vmid, "include_config": False}
    )
    assert result.data is not None
    return str(result.data["status"])


def stop_records(audit_path: Path) -> list[tuple[str, str | None, str | None]]:
    """(phase, outcome status, approval method) of each record of a guest stop."""
    return [
        (
            r["phase"],
            r.get("outcome", {}).get("status"),
            (r.get("decision", {}).get("approval") or {}).get("method"),
        )
        for r in read_audit(audit_path)
        if r.get("what", {}).get("tool") == STOP
    ]


def refusal(result: CallToolResult | InputRequiredResult) -> dict[str, Any]:
    assert isinstance(result, CallToolResult)
    return error_of(result)


@pytest.mark.parametrize("version", ERAS)
@pytest.mark.parametrize("answer", ["accept", "refuse", "decline"])
async def test_in_memory_the_call_runs_only_after_the_person_accepts(
    gw: Gateway, audit_path: Path, version: str, answer: str
) -> None:
    person = Person(answer)
    server = build_mcp_server(gw, local_principal)
    async with Client(server, mode=ERAS[version], elicitation_callback=person.on_elicit) as client:
        assert client.session.protocol_version == version
        result = await client.call_tool(STOP, {"vmid": 100})
    assert len(person.asked) == 1
    assert "stop qemu 100 (web01) on pve1" in person.asked[0]
    method = "input_required" if version == "2026-07-28" else "elicitation"
    asked = [("record", "confirmation_required", None)] if method == "input_required" else []
    if answer == "accept":
        assert payload(result)["guest_status"] == "stopped"
        assert await power(gw, 100) == "stopped"
        assert stop_records(audit_path) == [
            *asked,
            ("intent", None, method),
            ("outcome", "ok", method),
        ]
    else:
        assert error_of(result)["code"] == "confirmation_declined"
        assert await power(gw, 100) == "running"
        assert stop_records(audit_path) == [*asked, ("record", "confirmation_declined", None)]


async def test_a_2026_client_without_elicitation_gets_the_token_or_a_refusal(
    own_sim: SimulatorHandle, audit_path: Path, tmp_path: Path
) -> None:
    async with (
        gateway_for(own_sim, audit_path, tmp_path) as gateway,
        Client(build_mcp_server(gateway, local_principal)) as client,
    ):
        first = error_of(await client.call_tool(STOP, {"vmid": 102}))
        assert first["code"] == "confirmation_required"
        token = first["details"]["confirm_token"]
        done = await client.call_tool(STOP, {"vmid": 102, "confirm_token": token})
        assert payload(done)["guest_status"] == "stopped"
        assert await power(gateway, 102) == "stopped"
    async with (
        gateway_for(own_sim, audit_path, tmp_path, token_confirmation=False) as gateway,
        Client(build_mcp_server(gateway, local_principal)) as client,
    ):
        refused = error_of(await client.call_tool(STOP, {"vmid": 100}))
        assert refused["code"] == "confirmation_unavailable"
        assert await power(gateway, 100) == "running"


@pytest.mark.slow
@pytest.mark.parametrize("version", ERAS)
async def test_over_stdio_the_person_decides(tmp_path: Path, version: str) -> None:
    """`pvemcp demo` as a real subprocess: a declined stop leaves the guest running, an
    accepted one stops it."""
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0",
        "PVEMCP_POLICY__TOKEN_CONFIRMATION": "false",
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "pvemcp", "demo"], env=env)
    people = {100: Person("decline"), 102: Person("accept")}
    results: dict[int, CallToolResult] = {}
    power_after: dict[int, str] = {}
    for vmid, person in people.items():
        async with Client(params, mode=ERAS[version], elicitation_callback=person.on_elicit) as c:
            results[vmid] = await c.call_tool(STOP, {"vmid": vmid})
            guest = await c.call_tool("proxmox_guest_get", {"vmid": vmid, "include_config": False})
            power_after[vmid] = payload(guest)["status"]
    assert [len(person.asked) for person in people.values()] == [1, 1]
    assert error_of(results[100])["code"] == "confirmation_declined"
    assert payload(results[102])["guest_status"] == "stopped"
    assert power_after == {100: "running", 102: "stopped"}
    assert stop_records(tmp_path / "audit.jsonl")[-2:] == [
        ("intent", None, "input_required" if version == "2026-07-28" else "elicitation"),
        ("outcome", "ok", "input_required" if version == "2026-07-28" else "elicitation"),
    ]


def accepted(approve: bool = True) -> dict[str, Any]:
    return {QUESTION_KEY: ElicitResult(action="accept", content={"approve": approve})}


async def test_an_answer_is_used_once_for_the_call_and_caller_it_was_asked_for(
    gw: Gateway, audit_path: Path
) -> None:
    """The model cannot replay, alter, carry over or forge a person's accept."""
    callers = {"now": "alice"}

    def caller(_: object) -> Principal:
        return Principal(subject=callers["now"], transport="memory")

    server = build_mcp_server(gw, caller)
    # Both may stop guests (the operator profile's subjects).
    gw.policy = load_policy(
        profile="operator",
        profile_subjects=["sub:alice", "sub:bob"],
        file=None,
        known_tools=tier_map(),
    )
    person = Person("accept")  # declares elicitation; the test answers in its place
    async with Client(server, elicitation_callback=person.on_elicit) as client:
        session: Any = client.session
        asked = await session.call_tool(STOP, {"vmid": 100}, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult)
        assert list(asked.input_requests or {}) == [QUESTION_KEY]
        state = asked.request_state
        assert state is not None and "pva1" not in state, "the state is sealed"

        altered = state[:-2] + ("AA" if state[-2:] != "AA" else "BB")
        bad = await client.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=altered
        )
        assert refusal(bad)["code"] == "confirmation_invalid"
        assert "requestState was not accepted" in refusal(bad)["message"]

        other = await client.call_tool(
            STOP, {"vmid": 102}, input_responses=accepted(), request_state=state
        )
        assert refusal(other)["code"] == "confirmation_invalid"

        callers["now"] = "bob"
        stolen = await client.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=state
        )
        assert "different call" in refusal(stolen)["message"]
        callers["now"] = "alice"

        no_answer = await client.call_tool(STOP, {"vmid": 100}, request_state=state)
        assert "no answer" in refusal(no_answer)["message"]
        assert await power(gw, 100) == "running"
        assert await power(gw, 102) == "running"

        asked = await session.call_tool(STOP, {"vmid": 100}, allow_input_required=True)
        state = asked.request_state
        done = await client.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=state
        )
        assert payload(done)["guest_status"] == "stopped"
        replay = await client.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=state
        )
        assert "already used" in refusal(replay)["message"]
    assert person.asked == [], "no refusal asked again"

    assert [status for _, status, _ in stop_records(audit_path)] == [
        "confirmation_required",
        "confirmation_failed",  # altered
        "confirmation_failed",  # other arguments
        "confirmation_failed",  # other caller
        "confirmation_failed",  # no answer (the state is spent)
        "confirmation_required",
        None,
        "ok",
        "confirmation_failed",  # replayed
    ]


async def test_an_accept_does_not_follow_a_guest_that_moved_between_the_rounds(
    gw: Gateway, audit_path: Path
) -> None:
    """The retry is planned again, and the approval is bound to the plan's target: a person
    who approved stopping VM 102 on pve1 did not approve stopping it on pve2."""
    person = Person("accept")
    async with Client(
        build_mcp_server(gw, local_principal), elicitation_callback=person.on_elicit
    ) as client:
        session: Any = client.session
        asked = await session.call_tool(STOP, {"vmid": 102}, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult)
        moved = await gw.invoke(
            Principal.local("memory"), "proxmox_guest_migrate", {"vmid": 102, "target": "pve2"}
        )
        assert moved.data is not None and moved.data["node"] == "pve2"
        retry = await client.call_tool(
            STOP, {"vmid": 102}, input_responses=accepted(), request_state=asked.request_state
        )
        assert "different call" in refusal(retry)["message"]
    assert await power(gw, 102) == "running"
    assert [status for _, status, _ in stop_records(audit_path)] == [
        "confirmation_required",
        "confirmation_failed",
    ]


async def test_a_confirmed_call_that_runs_as_an_mcp_task(gw: Gateway, audit_path: Path) -> None:
    """With the Tasks extension declared, the question comes first (nothing runs before
    the person answers), then the accepted stop runs as a task the client follows."""
    async with Client(
        build_mcp_server(gw, local_principal),
        extensions=[TasksClient()],
        elicitation_callback=Person("accept").on_elicit,
    ) as client:
        session: Any = client.session
        asked = await session.call_tool(
            STOP, {"vmid": 100}, allow_input_required=True, allow_claimed=True
        )
        assert isinstance(asked, InputRequiredResult)
        assert await power(gw, 100) == "running"
        task = await session.call_tool(
            STOP,
            {"vmid": 100},
            input_responses=accepted(),
            request_state=asked.request_state,
            allow_input_required=True,
            allow_claimed=True,
        )
        assert isinstance(task, CreatedTask)
        done = await until_done(client.session, task.task_id)
    assert done.status == "completed" and done.result is not None
    assert done.result["structuredContent"]["guest_status"] == "stopped"
    assert stop_records(audit_path)[-1] == ("outcome", "ok", "input_required")


HTTP_MODES: dict[str, dict[str, Any]] = {
    "sse": {"response_mode": "sse"},
    "auto": {},
    "json": {"response_mode": "json"},
    "stateless": {"stateless": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("http_mode", HTTP_MODES)
@pytest.mark.parametrize("version", ERAS)
async def test_over_http_each_era_and_mode_confirms_as_documented(
    own_sim: SimulatorHandle, audit_path: Path, tmp_path: Path, version: str, http_mode: str
) -> None:
    """2026-07-28: input-required in every mode. 2025-11-25: the pushed elicitation where
    the call's answer streams (sse, auto), else the token, or a refusal without tokens.
    Where a person can be asked, tokens are off: the person alone decides."""
    asks = version == "2026-07-28" or http_mode in ("sse", "auto")
    for token_confirmation in (False,) if asks else (True, False):
        async with (
            gateway_for(
                own_sim, audit_path, tmp_path, token_confirmation=token_confirmation
            ) as gateway,
            served(gateway, **HTTP_MODES[http_mode]) as app,
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as http,
        ):
            results: dict[int, CallToolResult] = {}
            people = {100: Person("decline"), 102: Person("accept")}
            for vmid, person in people.items():
                async with Client(
                    streamable_http_client(app.url, http_client=http),
                    mode=ERAS[version],
                    elicitation_callback=person.on_elicit,
                ) as client:
                    results[vmid] = await client.call_tool(STOP, {"vmid": vmid})
                    if not asks and token_confirmation:
                        token = error_of(results[vmid])["details"]["confirm_token"]
                        results[vmid] = await client.call_tool(
                            STOP, {"vmid": vmid, "confirm_token": token}
                        )
            asked = [len(person.asked) for person in people.values()]
            states = [await power(gateway, vmid) for vmid in people]
            if asks:
                assert asked == [1, 1]
                assert error_of(results[100])["code"] == "confirmation_declined"
                assert payload(results[102])["guest_status"] == "stopped"
                assert states == ["running", "stopped"]
            elif token_confirmation:
                assert asked == [0, 0], "no back channel: the token flow"
                assert states == ["stopped", "stopped"]
                await restart(gateway, 100)
                await restart(gateway, 102)
            else:
                assert asked == [0, 0]
                for result in results.values():
                    assert error_of(result)["code"] == "confirmation_unavailable"
                assert states == ["running", "running"]


async def restart(gateway: Gateway, vmid: int) -> None:
    started = await gateway.invoke(
        Principal.local("memory"), "proxmox_guest_power", {"vmid": vmid, "action": "start"}
    )
    assert started.ok, started.error


@pytest.mark.slow
async def test_over_http_a_state_is_not_replayed_altered_or_used_by_another_key(
    own_sim: SimulatorHandle, audit_path: Path, tmp_path: Path
) -> None:
    """JSON-response HTTP, bearer-authenticated: the SDK's seal binds the state to the key's
    principal, and the gateway's approval state makes it single-use."""
    async with (
        gateway_for(own_sim, audit_path, tmp_path, token_confirmation=False) as gateway,
        served(gateway, response_mode="json") as app,
        httpx2.AsyncClient(headers=bearer(KEYS[1])) as http1,
        httpx2.AsyncClient(headers=bearer(KEYS[0])) as http0,
        Client(
            streamable_http_client(app.url, http_client=http1),
            elicitation_callback=Person("accept").on_elicit,
        ) as holder,
        Client(
            streamable_http_client(app.url, http_client=http0),
            elicitation_callback=Person("accept").on_elicit,
        ) as other,
    ):
        session: Any = holder.session
        asked = await session.call_tool(STOP, {"vmid": 100}, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult)
        state = asked.request_state
        assert state is not None

        for client, sent, vmid in (
            (other, state, 100),  # another key's holder
            (holder, state[:-2] + ("AA" if state[-2:] != "AA" else "BB"), 100),  # altered
            (holder, state, 102),  # other arguments
        ):
            refused = await client.call_tool(
                STOP, {"vmid": vmid}, input_responses=accepted(), request_state=sent
            )
            assert refusal(refused)["code"] == "confirmation_invalid"
        assert [await power(gateway, vmid) for vmid in (100, 102)] == ["running", "running"]

        done = await holder.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=state
        )
        assert payload(done)["guest_status"] == "stopped"
        replay = await holder.call_tool(
            STOP, {"vmid": 100}, input_responses=accepted(), request_state=state
        )
        assert "already used" in refusal(replay)["message"]
    records = [r for r in read_audit(audit_path) if r.get("what", {}).get("tool") == STOP]
    refused_by = [
        r["who"]["sub"]
        for r in records
        if r.get("outcome", {}).get("status") == "confirmation_failed"
    ]
    assert refused_by == ["static:0", "static:1", "static:1", "static:1"]


@pytest.mark.parametrize("answer", ["error", "off_schema"])
async def test_a_pushed_confirmation_that_fails_is_a_recorded_refusal(
    gw: Gateway, audit_path: Path, answer: str
) -> None:
    """A handshake-era client whose elicitation answers a JSON-RPC error, or an accept that
    does not fit the question's schema: the call does not run, is refused as a structured
    `confirmation_invalid` and is on record as a failed confirmation (it was a bare
    protocol error or SDK text before, with no audit record at all)."""

    async def on_elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        if answer == "error":
            return ErrorData(code=-32603, message="the client's dialog crashed")
        return ElicitResult(action="accept", content={"approve": "maybe"})

    server = build_mcp_server(gw, local_principal)
    async with Client(server, mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool(STOP, {"vmid": 100})
    assert refusal(result)["code"] == "confirmation_invalid"
    assert await power(gw, 100) == "running"
    assert stop_records(audit_path) == [("record", "confirmation_failed", None)]
