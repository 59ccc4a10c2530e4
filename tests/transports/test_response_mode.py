"""`http.response_mode`: one JSON body or an SSE stream per request, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitRequestParams, ElicitResult

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.response_mode import PARSE_AT_MOST, answers_with_json
from tests.conftest import cluster_for
from tests.transports.test_http_app import KEYS, bearer, error_of, payload, served

pytestmark = pytest.mark.anyio

QUIET = ("proxmox_node_list", "proxmox_task_wait")

# static:1 may power guests, each call confirmed.
CONFIRM_POWER_POLICY = dedent(
    """
    version = 1

    [[rules]]
    id = "static-1-power"
    effect = "allow"
    subjects = ["sub:static:1"]
    tools = ["proxmox_guest_power"]

    [[rules]]
    id = "static-1-power-asks"
    effect = "confirm"
    subjects = ["sub:static:1"]
    tools = ["proxmox_guest_power"]
    """
)
HELLO = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def call(tool: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


@pytest.mark.parametrize(
    ("message", "json_body"),
    [
        (call("proxmox_node_list"), True),
        (call("proxmox_node_list", {"progressToken": "p1"}), False),
        (call("proxmox_node_list", {"progressToken": 0}), False),
        (call("proxmox_node_list", {"other": 1}), True),
        (call("proxmox_guest_power"), False),  # may ask for confirmation
        (call("proxmox_nope"), False),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, True),
        ({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, True),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}, False),
        ({"jsonrpc": "2.0", "id": 1, "result": {}}, False),
        ([call("proxmox_node_list")], False),
    ],
)
def test_which_requests_get_one_json_body(message: Any, json_body: bool) -> None:
    assert answers_with_json(json.dumps(message).encode(), QUIET) is json_body


def test_unreadable_bodies_get_a_stream() -> None:
    assert answers_with_json(b"{not json", QUIET) is False
    assert answers_with_json(b"", QUIET) is False


def test_large_bodies_get_a_stream_unparsed() -> None:
    """The choice runs before authentication: it parses small bodies only."""
    padded = call("proxmox_node_list", {"pad": ""})
    base = len(json.dumps(padded).encode())
    padded["params"]["_meta"]["pad"] = "x" * (PARSE_AT_MOST - base)
    assert answers_with_json(json.dumps(padded).encode(), QUIET) is True
    padded["params"]["_meta"]["pad"] += "x"
    assert answers_with_json(json.dumps(padded).encode(), QUIET) is False


class Person:
    """The client side's human: approves every question, and watches progress."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.seen: list[float] = []

    async def on_elicit(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append(progress)


def confirm_gateway(sim: SimulatorHandle, audit_path: Path, policy: Path) -> Gateway:
    policy.write_text(CONFIRM_POWER_POLICY)
    return Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=policy, known_tools=tier_map()
        ),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
    )


@pytest.fixture
async def power_gateway(
    sim: SimulatorHandle, audit_path: Path, tmp_path: Path
) -> AsyncIterator[Gateway]:
    gateway = confirm_gateway(sim, audit_path, tmp_path / "policy.toml")
    try:
        yield gateway
    finally:
        await gateway.aclose()


async def test_auto_answers_reads_with_json_and_streams_the_rest(power_gateway: Gateway) -> None:
    async with served(power_gateway) as app, httpx2.AsyncClient(headers=bearer(KEYS[0])) as http:
        hello = await http.post(app.url, json=HELLO, headers=ACCEPT)
        assert hello.headers["content-type"].startswith("application/json"), hello.text
        session = {
            **ACCEPT,
            "Mcp-Session-Id": hello.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        await http.post(
            app.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        plain = await http.post(app.url, json=call("proxmox_node_list"), headers=session)
        assert plain.headers["content-type"].startswith("application/json")
        assert plain.json()["result"]["structuredContent"]["nodes"]

        tracked = call("proxmox_node_list", {"progressToken": "t"})
        streamed = await http.post(app.url, json=tracked, headers=session)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert '"nodes"' in streamed.text

        risky = call("proxmox_guest_power")
        asked = await http.post(app.url, json=risky, headers=session)
        assert asked.headers["content-type"].startswith("text/event-stream")


async def test_auto_keeps_elicitation_and_progress_for_the_calls_that_need_them(
    power_gateway: Gateway,
) -> None:
    person = Person()

    async with (
        served(power_gateway) as app,
        httpx2.AsyncClient(headers=bearer(KEYS[1])) as http,
        Client(
            streamable_http_client(app.url, http_client=http),
            mode="legacy",
            elicitation_callback=person.on_elicit,
        ) as client,
    ):
        assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
        for action in ("start", "shutdown"):
            done = payload(
                await client.call_tool(
                    "proxmox_guest_power",
                    {"vmid": 204, "action": action, "wait": True},
                    progress_callback=person.on_progress,
                )
            )
            assert done["exitstatus"] == "OK"
    assert len(person.asked) == 2, "each power call was confirmed through elicitation"
    assert person.seen, "progress notifications arrive over the stream"


async def test_json_mode_answers_with_one_body_and_confirms_by_token(
    power_gateway: Gateway,
) -> None:
    person = Person()

    async def confirmed(client: Client, args: dict[str, Any]) -> dict[str, Any]:
        first = error_of(await client.call_tool("proxmox_guest_power", args))
        assert first["code"] == "confirmation_required"
        token = first["details"]["confirm_token"]
        return payload(
            await client.call_tool(
                "proxmox_guest_power",
                {**args, "confirm_token": token},
                progress_callback=person.on_progress,
            )
        )

    async with served(power_gateway, response_mode="json") as app:
        async with httpx2.AsyncClient(headers=bearer(KEYS[0])) as http:
            raw = await http.post(app.url, json=HELLO, headers=ACCEPT)
            assert raw.status_code == 200, raw.text
            assert raw.headers["content-type"].startswith("application/json")
            risky = call("proxmox_guest_power")
            session = {**ACCEPT, "Mcp-Session-Id": raw.headers["mcp-session-id"]}
            session["MCP-Protocol-Version"] = "2025-11-25"
            answer = await http.post(app.url, json=risky, headers=session)
            assert answer.headers["content-type"].startswith("application/json")
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as http,
            Client(
                streamable_http_client(app.url, http_client=http),
                mode="legacy",
                elicitation_callback=person.on_elicit,
            ) as client,
        ):
            for action in ("start", "shutdown"):
                done = await confirmed(client, {"vmid": 204, "action": action, "wait": True})
                assert done["exitstatus"] == "OK"
    assert person.asked == [], "confirmation fell back to the two-step token"
    assert person.seen == [], "progress notifications have no wire in JSON-response mode"
