"""Soak in CI (issue 15): read calls over real HTTP from 64 sessions, then abandoned sessions.

The bounded setting of bench/soak.py (which runs 100,000 calls and prints RSS): here 640
read calls by default, `PVEMCP_SOAK_CALLS` for more. Every call must succeed. Sessions
opened and left without a DELETE must expire after the idle timeout: their ids answer
404 and the SDK's session table is back to what it held before, so abandoned sessions
cannot pile up in memory however many there were.
"""

from __future__ import annotations

import os

import anyio
import httpx2
import pytest

from pvemcp.gateway.invoke import Gateway
from tests.transports.test_http_app import KEYS, Served, bearer, served
from tests.transports.test_http_hardening import JSON_AND_SSE, LEGACY, open_session, ping

pytestmark = pytest.mark.anyio

SESSIONS = 64
CALLS = int(os.environ.get("PVEMCP_SOAK_CALLS", "640"))
ABANDONED = 200
IDLE = 0.5
READS: tuple[tuple[str, dict[str, str]], ...] = (
    ("proxmox_node_status", {"node": "pve2"}),
    ("proxmox_guest_list", {}),
)


async def reads(http: httpx2.AsyncClient, app: Served, session: str, count: int) -> list[str]:
    """`count` read calls in one session; what went wrong with each that failed."""
    headers = {
        **bearer(KEYS[0]),
        **JSON_AND_SSE,
        "mcp-session-id": session,
        "mcp-protocol-version": LEGACY,
    }
    failures = []
    for number in range(count):
        name, arguments = READS[number % len(READS)]
        call = {"name": name, "arguments": arguments}
        body = {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": call}
        response = await http.post(app.url, json=body, headers=headers)
        answer = response.json() if response.status_code == 200 else {}
        if response.status_code != 200 or "error" in answer or answer["result"].get("isError"):
            failures.append(f"{name}: HTTP {response.status_code} {response.text[:200]}")
    return failures


async def test_many_reads_from_64_sessions_all_succeed(gateway: Gateway) -> None:
    limits = {"rate_limit_per_minute": 0, "max_sessions_per_principal": SESSIONS}
    async with (
        served(gateway, **limits) as app,
        httpx2.AsyncClient(limits=httpx2.Limits(max_connections=SESSIONS), timeout=60) as http,
    ):
        sessions = [await open_session(http, app, KEYS[0]) for _ in range(SESSIONS)]
        failures: list[str] = []

        async def run(session: str, count: int) -> None:
            failures.extend(await reads(http, app, session, count))

        with anyio.fail_after(max(60, CALLS / 20)):
            async with anyio.create_task_group() as group:
                for index, session in enumerate(sessions):
                    group.start_soon(run, session, CALLS // SESSIONS + (index < CALLS % SESSIONS))
        assert not failures, failures[:3]


async def test_abandoned_sessions_expire_and_leave_nothing_behind(gateway: Gateway) -> None:
    limits = {
        "rate_limit_per_minute": 0,
        "max_sessions_per_principal": ABANDONED + 1,
        "session_idle_timeout": IDLE,
    }
    async with served(gateway, **limits) as app, httpx2.AsyncClient() as http:
        table = app.frontend.mcp.session_manager._server_instances
        before = len(table)
        abandoned = [await open_session(http, app, KEYS[0]) for _ in range(ABANDONED)]
        assert len(table) > before  # the first may have expired already: IDLE is short
        await anyio.sleep(IDLE + 1)
        assert len(table) == before
        for session in (abandoned[0], abandoned[-1]):
            assert (await ping(http, app, KEYS[0], session)).status_code == 404
        # The server still opens and serves a new session.
        fresh = await open_session(http, app, KEYS[0])
        assert (await ping(http, app, KEYS[0], fresh)).status_code == 200
