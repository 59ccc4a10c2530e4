"""Bad input over real HTTP: each gets its status and message, and the server keeps serving.

DNS rebinding (Host, Origin), content types, malformed JSON-RPC, oversized bodies, unknown
and foreign sessions, rate limits, the response-start timeout, and the bind rules.
"""

from __future__ import annotations

import json
import math
import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from mcp_types import REQUEST_TIMEOUT
from starlette.types import Receive, Scope, Send

from pvemcp.config import ConfigError, HttpConfig
from pvemcp.gateway.invoke import Gateway
from pvemcp.simulator.certs import make_self_signed
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.transports.hardening import (
    AuthFailure,
    FailureDigest,
    FailureLimit,
    RateLimit,
    RequestTimeout,
)
from pvemcp.transports.http import check_http_config, transport_security
from tests.conftest import cluster_for, read_audit
from tests.transports.test_http_app import (
    KEYS,
    Served,
    bearer,
    payload,
    policy_gateway,
    served,
)

pytestmark = pytest.mark.anyio

LEGACY = "2025-11-25"
JSON_AND_SSE = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


async def open_session(http: httpx2.AsyncClient, app: Served, key: str) -> str:
    """A legacy session opened with `key`; returns its id."""
    response = await http.post(app.url, json=INITIALIZE, headers={**bearer(key), **JSON_AND_SSE})
    assert response.status_code == 200, response.text
    session: str = response.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = {
        **bearer(key),
        **JSON_AND_SSE,
        "mcp-session-id": session,
        "mcp-protocol-version": LEGACY,
    }
    assert (await http.post(app.url, json=initialized, headers=headers)).status_code == 202
    return session


async def ping(http: httpx2.AsyncClient, app: Served, key: str, session: str) -> httpx2.Response:
    headers = {
        **bearer(key),
        **JSON_AND_SSE,
        "mcp-session-id": session,
        "mcp-protocol-version": LEGACY,
    }
    return await http.post(
        app.url, json={"jsonrpc": "2.0", "id": 7, "method": "ping"}, headers=headers
    )


async def test_bad_requests_get_their_status_and_the_server_keeps_serving(
    gateway: Gateway,
) -> None:
    async with served(gateway, max_body_bytes=4096) as app, httpx2.AsyncClient() as http:
        session = await open_session(http, app, KEYS[0])
        auth = {**bearer(KEYS[0]), **JSON_AND_SSE}

        rebinding = await http.post(
            app.url, json=INITIALIZE, headers={**auth, "Host": "attacker.example"}
        )
        assert rebinding.status_code == 421
        no_token_rebinding = await http.post(
            app.url, json=INITIALIZE, headers={**JSON_AND_SSE, "Host": "attacker.example"}
        )
        assert no_token_rebinding.status_code == 421, "checked before auth"
        probe = await http.get(f"{app.base}/healthz", headers={"Host": "10.1.2.3:8080"})
        assert probe.status_code == 200, "probes are called by address"
        foreign = await http.post(
            app.url, json=INITIALIZE, headers={**auth, "Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        own_origin = await http.post(app.url, json=INITIALIZE, headers={**auth, "Origin": app.base})
        assert own_origin.status_code == 200

        wrong_type = await http.post(
            app.url,
            content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
            headers={**auth, "Content-Type": "text/plain", "mcp-session-id": session},
        )
        assert wrong_type.status_code == 400
        malformed = await http.post(
            app.url,
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json", "mcp-session-id": session},
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == -32700
        not_jsonrpc = await http.post(
            app.url, json={"hello": "world"}, headers={**auth, "mcp-session-id": session}
        )
        assert not_jsonrpc.status_code == 400
        oversized = await http.post(
            app.url,
            json={**INITIALIZE, "padding": "x" * 5000},
            headers={**auth, "mcp-session-id": session},
        )
        assert oversized.status_code == 413

        unknown = await ping(http, app, KEYS[0], "0" * 32)
        assert unknown.status_code == 404
        stolen = await ping(http, app, KEYS[1], session)
        assert stolen.status_code == 404, "a session belongs to the subject that opened it"

        assert (await ping(http, app, KEYS[0], session)).status_code == 200
        other = await open_session(http, app, KEYS[1])
        assert (await ping(http, app, KEYS[1], other)).status_code == 200


async def test_rate_limit_answers_429_with_retry_after(gateway: Gateway) -> None:
    async with (
        served(gateway, rate_limit_per_minute=6, rate_limit_burst=3) as app,
        httpx2.AsyncClient() as http,
    ):
        session = await open_session(http, app, KEYS[0])  # two requests of the burst
        assert (await ping(http, app, KEYS[0], session)).status_code == 200
        limited = await ping(http, app, KEYS[0], session)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "10"
        assert "rate limit" in limited.json()["error"]["message"]
        # Another caller has its own bucket; probes and metrics are never limited.
        other = await open_session(http, app, KEYS[1])
        assert (await ping(http, app, KEYS[1], other)).status_code == 200
        assert (await http.get(f"{app.base}/healthz")).status_code == 200
        metrics = (await http.get(f"{app.base}/metrics")).text
        assert "pvemcp_rate_limited_total 1.0" in metrics


async def raw_status(app: Served, request: bytes) -> int:
    """Send `request` as written on its own connection (no client library tidies its
    headers); the status code of the answer."""
    port = int(app.base.rsplit(":", 1)[1])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        answer = b""
        while b"\r\n" not in answer:
            answer += await stream.receive()
    return int(answer.split(b" ", 2)[1])


def post_with(
    app: Served, authorization: bytes, body: bytes = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
) -> bytes:
    path = app.url.removeprefix(app.base).encode()
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + authorization + b"\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def test_spelling_the_token_differently_spends_the_same_bucket(gateway: Gateway) -> None:
    """Issue 10 item 12: `Bearer T`, `bearer  T`, ... each had a bucket of their own."""
    async with (
        served(gateway, rate_limit_per_minute=6, rate_limit_burst=3) as app,
        httpx2.AsyncClient() as http,
    ):
        session = await open_session(http, app, KEYS[0])
        assert (await ping(http, app, KEYS[0], session)).status_code == 200
        key = KEYS[0].encode()
        variants = [
            b"Bearer " + key,
            b"bearer " + key,
            b"BEARER " + key,
            b"BeArEr " + key,
            b"Bearer  " + key,
            b"Bearer   " + key,
            b"Bearer\t" + key,
            b"bearer \t" + key,
            b"Bearer " + key + b" ",
            b"Bearer " + key + b"\t",
            b"BEARER\t\t" + key + b"  ",
        ]
        statuses = [await raw_status(app, post_with(app, variant)) for variant in variants]
        assert statuses == [429] * len(variants)
        # The other key is another caller, with its own bucket.
        initialize = json.dumps(INITIALIZE).encode()
        other = post_with(app, b"Bearer " + KEYS[1].encode(), initialize)
        assert await raw_status(app, other) == 200


async def test_a_flood_of_bad_tokens_is_limited_and_summarised(
    gateway: Gateway, audit_path: Path
) -> None:
    """Issue 10 item 13: distinct bad tokens were never limited, each wrote a record."""
    flood = 60
    async with (
        served(gateway, auth_failures_per_minute=6, auth_failures_burst=5) as app,
        httpx2.AsyncClient() as http,
    ):
        session = await open_session(http, app, KEYS[0])  # a token known to be good
        statuses = []
        for n in range(flood):
            response = await http.post(app.url, json=INITIALIZE, headers=bearer(f"forged-{n}"))
            statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429] * (flood - 5)
        assert "failed authentications" in response.json()["error"]["message"]
        assert int(response.headers["retry-after"]) >= 1
        # The verified caller from the same address keeps working through the flood.
        assert (await ping(http, app, KEYS[0], session)).status_code == 200
        metrics = (await http.get(f"{app.base}/metrics")).text
    assert 'pvemcp_auth_failures_total{reason="unknown_key"} 5.0' in metrics
    assert f"pvemcp_rate_limited_total {flood - 5:.1f}" in metrics
    failures = [r for r in read_audit(audit_path) if r["phase"] == "auth_failure"]
    assert len(failures) == 6, "five in full, then one summary for the window"
    assert all(r["outcome"]["reason"] == "unknown_key" for r in failures[:5])
    summary = failures[5]["outcome"]
    assert summary["reason"] == "repeated"
    assert summary["reasons"] == {"rate_limited": flood - 5}
    assert failures[5]["who"]["source_ip"] == "127.0.0.1"
    assert 5 + summary["count"] == flood


def test_failure_limit_per_source_and_in_total() -> None:
    """A flood spread over many addresses meets the total limit; each address its own."""
    now = [0.0]
    limit = FailureLimit(per_minute=60, burst=3, total_per_minute=60, clock=lambda: now[0])
    for _ in range(3):
        assert limit.wait("192.0.2.1") == 0
        limit.failed("192.0.2.1")
    assert math.isclose(limit.wait("192.0.2.1"), 1.0), "this address is spent"
    for n in range(2, 9):  # the total allows ten seconds' worth at once: 10
        source = f"192.0.2.{n}"
        assert limit.wait(source) == 0
        limit.failed(source)
    assert limit.wait("192.0.2.100") > 0, "a fresh address meets the total limit"
    now[0] = 2.0
    assert limit.wait("192.0.2.100") == 0, "both refill"
    assert limit.wait("192.0.2.1") == 0


def test_failure_digest_bounds_records_per_source_and_window() -> None:
    now = [0.0]
    written: list[AuthFailure] = []
    summaries: list[tuple[str, dict[str, int]]] = []
    digest = FailureDigest(
        write=written.append,
        summarise=lambda source, counts, _: summaries.append((source, dict(counts))),
        window=60,
        full=2,
        max_sources=2,
        clock=lambda: now[0],
    )
    for source in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        for _ in range(10):
            digest.failed(AuthFailure("unknown_key", 401, source, None))
    # Past max_sources, new sources share the window "*".
    assert [f.source_ip for f in written] == [
        *["192.0.2.1"] * 2,
        *["192.0.2.2"] * 2,
        *["192.0.2.3"] * 2,
    ]
    assert summaries == []
    now[0] = 61.0
    digest.limited("192.0.2.1")  # a new window opens; the ended ones are summarised
    assert summaries == [
        ("192.0.2.1", {"unknown_key": 8}),
        ("192.0.2.2", {"unknown_key": 8}),
        ("*", {"unknown_key": 18}),
    ]
    assert len(written) == 7 and written[-1].reason == "rate_limited"
    digest.flush(everything=True)
    assert len(summaries) == 3, "the new window's one refusal was written in full"
    total = len(written) + sum(sum(counts.values()) for _, counts in summaries)
    assert total == 41


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = RateLimit(
        _never_called,
        per_minute=60,
        burst=2,
        exempt=(),
        on_limited=lambda: None,
        clock=lambda: now[0],
    )
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert math.isclose(limiter.take("a"), 1.0)
    assert limiter.take("b") == 0, "buckets are per caller"
    now[0] = 1.0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not reached")


async def test_a_response_not_started_in_time_is_504() -> None:
    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(5)

    transport = httpx2.ASGITransport(app=RequestTimeout(stuck, 0.1))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.get("/stuck")
        assert answer.status_code == 504
        assert answer.json()["error"]["message"] == "no response within 0.1 s"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_stream_longer_than_the_request_timeout_ends_with_an_error(
    tmp_path: Path, mode: str
) -> None:
    """Issue 10 item 21: a streamed answer ran as long as the work took, whatever
    http.request_timeout said. A reboot takes 8 s at real speed; waiting for it with
    progress streams, and the stream must end at the 1 s timeout with an error."""
    with simulator_in_thread(SimulatorOptions(time_scale=1.0)) as slow_sim:
        gateway = policy_gateway(
            {"demo": cluster_for(slow_sim)}, tmp_path / "audit.jsonl", tmp_path / "policy.toml"
        )
        try:
            async with (
                served(gateway, request_timeout=1.0) as app,
                httpx2.AsyncClient(headers=bearer(KEYS[1])) as http,
                Client(streamable_http_client(app.url, http_client=http), mode=mode) as client,
            ):
                rebooting = await client.call_tool(
                    "proxmox_guest_power", {"vmid": 100, "action": "reboot", "wait": False}
                )
                upid = payload(rebooting)["upid"]
                seen: list[float] = []

                async def on_progress(
                    progress: float, total: float | None, message: str | None
                ) -> None:
                    seen.append(progress)

                started = anyio.current_time()
                with anyio.fail_after(5), pytest.raises(MCPError) as cut:
                    await client.call_tool(
                        "proxmox_task_wait", {"upid": upid}, progress_callback=on_progress
                    )
                assert anyio.current_time() - started < 3
                assert cut.value.error.code == REQUEST_TIMEOUT
                assert "http.request_timeout" in cut.value.error.message
                assert seen, "it was a stream: progress arrived before the cut"
                # The session is still usable.
                assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
        finally:
            await gateway.aclose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"host": "0.0.0.0", "auth": "static", "static_keys": ["k"]}, 'must be "oidc"'),
        ({"host": "192.0.2.7", "auth": "none", "allow_unauthenticated": True}, 'must be "oidc"'),
        ({"auth": "none"}, "allow_unauthenticated"),
        ({"auth": "static", "tls_cert_file": "/x.pem"}, "go together"),
        ({"host": "::", "oidc": {"issuer": "https://idp.example"}}, "public_url"),
    ],
)
def test_exposing_configurations_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_http_config(HttpConfig(**settings))


def test_default_host_and_origin_allowlists() -> None:
    config = HttpConfig(port=8080)
    security = transport_security(config, "http://127.0.0.1:8080/mcp")
    assert set(security.allowed_hosts) == {
        "127.0.0.1",
        "127.0.0.1:8080",
        "localhost",
        "localhost:8080",
        "[::1]",
        "[::1]:8080",
    }
    assert "http://localhost:8080" in security.allowed_origins
    remote = HttpConfig(host="10.0.0.5", port=443, public_url="https://gw.example/mcp")
    security = transport_security(remote, "https://gw.example/mcp")
    assert set(security.allowed_hosts) == {"10.0.0.5", "10.0.0.5:443", "gw.example"}
    assert "https://gw.example" in security.allowed_origins
    assert not any("localhost" in origin for origin in security.allowed_origins)


async def test_tls_from_cert_and_key_files(gateway: Gateway, tmp_path: Path) -> None:
    material = make_self_signed()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(material.cert_pem)
    key.write_bytes(material.key_pem)
    trust = ssl.create_default_context(cadata=material.cert_pem.decode())
    async with (
        served(gateway, tls_cert_file=cert, tls_key_file=key) as app,
        httpx2.AsyncClient(verify=trust) as http,
    ):
        assert app.url.startswith("https://127.0.0.1:")
        assert (await http.get(f"{app.base}/healthz")).status_code == 200
        document = (await http.get(f"{app.base}/.well-known/oauth-protected-resource")).json()
        assert document["resource"] == app.url


@pytest.mark.parametrize(("trusted", "seen"), [([], "127.0.0.1"), (["127.0.0.1"], "203.0.113.9")])
async def test_forwarded_headers_only_from_trusted_proxies(
    gateway: Gateway, audit_path: Path, trusted: list[str], seen: str
) -> None:
    async with served(gateway, trusted_proxies=trusted) as app, httpx2.AsyncClient() as http:
        response = await http.post(app.url, json={}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert response.status_code == 401
    failure = next(r for r in read_audit(audit_path) if r["phase"] == "auth_failure")
    assert failure["who"]["source_ip"] == seen


async def connect(app: Served) -> anyio.abc.SocketStream:
    return await anyio.connect_tcp("127.0.0.1", int(app.base.rsplit(":", 1)[1]))


async def until_closed(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    try:
        while True:
            answer += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return answer


async def test_a_huge_unfinished_header_is_cut_off(gateway: Gateway) -> None:
    """Issue 10 item 14: one unfinished 200 MB header grew the gateway by 400 MB."""
    async with served(gateway, max_header_bytes=16 * 1024) as app, await connect(app) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sent = 0
        with anyio.fail_after(10):
            try:
                while sent < 200 * 1024 * 1024:
                    await stream.send(b"a" * 65536)
                    sent += 65536
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
        # The kernel's socket buffers take a few MB before the server's close shows.
        assert sent < 16 * 1024 * 1024, f"still accepted after {sent} bytes"
        answer = await until_closed(stream)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]


async def test_too_many_header_fields_get_431(gateway: Gateway) -> None:
    async with served(gateway, max_headers=8) as app, await connect(app) as stream:
        fields = b"".join(b"X-F%d: v\r\n" % n for n in range(9))
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n")
        with anyio.fail_after(5):
            answer = await until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert answer.endswith(b"more than 8 header fields")


async def test_slow_and_silent_connections_are_closed(gateway: Gateway) -> None:
    """Issue 10 item 14: idle and trickling connections stayed open after 30 and 75 s."""
    async with served(gateway, head_timeout=1.0, keep_alive_timeout=1) as app:
        async with await connect(app) as trickle:
            started = anyio.current_time()
            await trickle.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = b""
            with anyio.fail_after(5):
                try:
                    while True:  # a slowloris: one header byte every 0.2 s, never the end
                        await trickle.send(b"X")
                        await anyio.sleep(0.2)
                except (anyio.BrokenResourceError, OSError):
                    answer = await until_closed(trickle)
            assert 0.9 < anyio.current_time() - started < 3
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:80]

        async with await connect(app) as silent:
            started = anyio.current_time()
            with anyio.fail_after(5):
                assert await until_closed(silent) == b""
            assert 0.9 < anyio.current_time() - started < 3

        async with await connect(app) as kept:
            await kept.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            started = anyio.current_time()
            with anyio.fail_after(5):
                answer = await until_closed(kept)
            assert answer.startswith(b"HTTP/1.1 200 "), "answered, then idle until closed"
            assert anyio.current_time() - started < 3


async def test_connections_beyond_the_cap_are_refused(gateway: Gateway) -> None:
    async with (
        served(gateway, max_connections=3, head_timeout=30) as app,
        await connect(app) as first,
        await connect(app) as _second,
        await connect(app) as _third,
    ):
        async with await connect(app) as fourth:
            with anyio.fail_after(5):
                assert (await until_closed(fourth)).startswith(b"HTTP/1.1 503 ")
        await first.aclose()
        with anyio.fail_after(5):
            while True:  # the server notices the close, then has room again
                async with await connect(app) as again:
                    await again.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    if (await again.receive()).startswith(b"HTTP/1.1 200 "):
                        break
                await anyio.sleep(0.05)


async def test_one_key_cannot_fill_the_session_table(gateway: Gateway) -> None:
    """Issue 10 item 25: at the SDK's cap every new client got 503, and one key could fill
    it. A caller at its own cap loses its longest idle session instead."""
    async with (
        served(gateway, max_sessions=3, max_sessions_per_principal=2) as app,
        httpx2.AsyncClient() as http,
    ):
        sessions = [await open_session(http, app, KEYS[0]) for _ in range(5)]
        statuses = [(await ping(http, app, KEYS[0], s)).status_code for s in sessions]
        assert statuses == [404, 404, 404, 200, 200], "the oldest idle ones were closed"
        other = await open_session(http, app, KEYS[1])
        assert (await ping(http, app, KEYS[1], other)).status_code == 200
        # A 2026-07-28 client has no session: its calls close none of the caller's.
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as modern_http,
            Client(streamable_http_client(app.url, http_client=modern_http)) as modern,
        ):
            assert modern.protocol_version == "2026-07-28"
            assert payload(await modern.call_tool("proxmox_node_list", {}))["nodes"]
        for session in sessions[-2:]:
            assert (await ping(http, app, KEYS[0], session)).status_code == 200


async def test_a_caller_whose_sessions_are_all_busy_gets_429(gateway: Gateway) -> None:
    async with (
        served(gateway, max_sessions_per_principal=1, request_timeout=0.5) as app,
        httpx2.AsyncClient() as http,
    ):
        session = await open_session(http, app, KEYS[0])
        headers = {
            **bearer(KEYS[0]),
            "Accept": "text/event-stream",
            "mcp-session-id": session,
            "mcp-protocol-version": LEGACY,
        }
        async with http.stream("GET", app.url, headers=headers) as listening:
            assert listening.status_code == 200  # a standalone stream: a request in flight
            refused = await http.post(
                app.url, json=INITIALIZE, headers={**bearer(KEYS[0]), **JSON_AND_SSE}
            )
            assert refused.status_code == 429
            assert "sessions" in refused.json()["error"]["message"]
            ended = False
            with anyio.move_on_after(1.0):
                async for _ in listening.aiter_bytes():
                    pass
                ended = True
            assert not ended, "a GET stream answers no request: request_timeout leaves it open"
        assert (await ping(http, app, KEYS[0], session)).status_code == 200


async def test_idle_sessions_expire(gateway: Gateway) -> None:
    async with (
        served(gateway, session_idle_timeout=0.5) as app,
        httpx2.AsyncClient() as http,
    ):
        session = await open_session(http, app, KEYS[0])
        assert (await ping(http, app, KEYS[0], session)).status_code == 200
        await anyio.sleep(1.2)
        assert (await ping(http, app, KEYS[0], session)).status_code == 404


async def test_default_rate_limit_fits_a_client_start_and_stops_a_flood(gateway: Gateway) -> None:
    """Issue 10 item 19: at the old default (60 at once, 10/s) a client's start
    (initialize, a list, a burst of calls; here 100, more than the ~30 the conformance
    suite sends) hit 429."""
    async with (
        served(gateway) as app,
        httpx2.AsyncClient(headers=bearer(KEYS[0])) as http,
        Client(streamable_http_client(app.url, http_client=http), mode="legacy") as client,
    ):
        assert (await client.list_tools()).tools
        results: list[CallToolResult] = []

        async def call() -> None:
            results.append(await client.call_tool("proxmox_node_list", {}))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(call)
        assert len(results) == 100, len(results)
        assert not any(result.is_error for result in results)

        session = await open_session(http, app, KEYS[1])
        statuses = [(await ping(http, app, KEYS[1], session)).status_code for _ in range(300)]
        assert statuses.count(429) > 100, "a flood still meets the limit"
