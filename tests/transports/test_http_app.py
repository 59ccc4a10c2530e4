"""The HTTP app on a real uvicorn on 127.0.0.1, driven by the SDK's streamable-HTTP client
and by plain HTTP: tools end to end with static bearer keys, the challenges and metadata,
the probes and the metrics.

`served()` is the harness the other HTTP test modules share.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken
from mcp.types import CallToolResult

from pvemcp.config import ClusterConfig, HttpConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.auth import token_sha256
from pvemcp.transports.edge import http_server, listen
from pvemcp.transports.http import HttpFrontend, build_http
from pvemcp.transports.metrics import PVE_ERROR_CODES
from pvemcp.transports.principals import token_principal
from tests.conftest import cluster_for, make_gateway, read_audit

pytestmark = pytest.mark.anyio

METADATA = "/.well-known/oauth-protected-resource"
KEYS = ("key-zero-for-http-tests", "key-one-for-http-tests")
"""Static bearer keys: holders are subjects `static:0` and `static:1`."""

# static:1 may power guests (the default policy gives remote callers reads only).
POWER_POLICY = dedent(
    """
    version = 1

    [[rules]]
    id = "static-1-power"
    effect = "allow"
    description = "The second test key may power guests"
    subjects = ["sub:static:1"]
    tools = ["proxmox_guest_power"]
    """
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Served:
    base: str
    url: str
    frontend: HttpFrontend


@asynccontextmanager
async def served(gateway: Gateway, **http: Any) -> AsyncIterator[Served]:
    """`build_http` under uvicorn on a free loopback port until the block ends."""
    values: dict[str, Any] = {"auth": "static", "static_keys": list(KEYS), "port": 0}
    values.update(http)
    sock, config = listen(HttpConfig(**values))
    frontend = build_http(gateway, config)
    server = http_server(frontend.app, config)
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
                await anyio.sleep(0.01)
        base = frontend.resource.removesuffix(config.path)
        try:
            yield Served(base=base, url=frontend.resource, frontend=frontend)
        finally:
            server.should_exit = True


def policy_gateway(
    clusters: dict[str, ClusterConfig], audit_path: Path, policy_file: Path
) -> Gateway:
    policy_file.write_text(POWER_POLICY)
    return Gateway(
        tools=all_tools(),
        clusters=ClusterPool(clusters, next(iter(clusters))),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=policy_file, known_tools=tier_map()
        ),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
    )


@pytest.fixture
async def power_gateway(
    sim: SimulatorHandle, audit_path: Path, tmp_path: Path
) -> AsyncIterator[Gateway]:
    gateway = policy_gateway({"demo": cluster_for(sim)}, audit_path, tmp_path / "policy.toml")
    try:
        yield gateway
    finally:
        await gateway.aclose()


def payload(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    error: dict[str, Any] = json.loads(text)["error"]
    return error


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_over_http_with_static_keys(
    power_gateway: Gateway, audit_path: Path, mode: str
) -> None:
    async with served(power_gateway) as app:
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as reader_http,
            Client(streamable_http_client(app.url, http_client=reader_http), mode=mode) as reader,
        ):
            assert reader.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            names = {tool.name for tool in (await reader.list_tools()).tools}
            assert "proxmox_node_list" in names
            assert "proxmox_guest_power" not in names, "tools/list hides what policy denies"
            assert payload(await reader.call_tool("proxmox_node_list", {}))["nodes"]
            guests = payload(
                await reader.call_tool(
                    "proxmox_guest_list",
                    {"status": "stopped", "type": "qemu", "limit": 500, "fields": ["template"]},
                )
            )["guests"]
            denied = await reader.call_tool(
                "proxmox_guest_power", {"vmid": guests[0]["vmid"], "action": "start"}
            )
            assert error_of(denied)["code"] == "denied"

        startable = [guest for guest in guests if not guest.get("template")]
        vmid = startable[-1 if mode == "auto" else -2]["vmid"]
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[1])) as operator_http,
            Client(streamable_http_client(app.url, http_client=operator_http), mode=mode) as op,
        ):
            started = payload(
                await op.call_tool(
                    "proxmox_guest_power",
                    {"vmid": vmid, "action": "start", "wait": True},
                    progress_callback=on_progress,
                )
            )
            assert started["exitstatus"] == "OK"
            assert seen, "progress notifications arrive over SSE"

    calls = [r for r in read_audit(audit_path) if r["phase"] in ("record", "intent", "outcome")]
    who = {(r["who"]["sub"], r["who"]["transport"]) for r in calls}
    assert who == {("static:0", "http"), ("static:1", "http")}
    assert all(r["who"].get("token_sha256") for r in calls), "audit names the token by hash"
    assert all(KEYS[0] not in json.dumps(r) and KEYS[1] not in json.dumps(r) for r in calls)


async def test_challenges_and_protected_resource_metadata(
    gateway: Gateway, audit_path: Path
) -> None:
    async with (
        served(gateway, oidc={"required_scopes": ["pvemcp"]}) as app,
        httpx2.AsyncClient() as http,
    ):
        metadata_url = f"{app.base}{METADATA}/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}

        missing = await http.post(app.url, json=body)
        assert missing.status_code == 401
        challenge = missing.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{metadata_url}"' in challenge
        assert 'scope="pvemcp"' in challenge
        assert "error=" not in challenge, "no error code when no credentials were sent"

        bad = await http.post(app.url, json=body, headers=bearer("not-a-key"))
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        assert f'resource_metadata="{metadata_url}"' in bad.headers["www-authenticate"]
        assert 'scope="pvemcp"' in bad.headers["www-authenticate"]

        in_query = await http.post(f"{app.url}?access_token={KEYS[0]}", json=body)
        assert in_query.status_code == 401, "a token in the query string never authenticates"

        basic = await http.post(app.url, json=body, headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert "error=" not in basic.headers["www-authenticate"], "no bearer token was sent"

        for path in (
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
        ):
            document = (await http.get(app.base + path)).json()
            assert document["resource"] == app.url, path
            assert document["authorization_servers"] == [app.base], path
            assert document["scopes_supported"] == ["pvemcp"]
            assert document["bearer_methods_supported"] == ["header"]

        metrics = (await http.get(f"{app.base}/metrics")).text

    failures = [r for r in read_audit(audit_path) if r["phase"] == "auth_failure"]
    reasons = [r["outcome"]["reason"] for r in failures]
    assert reasons == ["missing_token", "unknown_key", "token_in_query", "malformed_authorization"]
    for reason in set(reasons):
        assert f'pvemcp_auth_failures_total{{reason="{reason}"}} 1.0' in metrics
    assert failures[1]["who"]["token_sha256"] == token_sha256("not-a-key")
    assert failures[1]["who"]["source_ip"] == "127.0.0.1"


async def test_auth_none_is_anonymous_not_local(gateway: Gateway, audit_path: Path) -> None:
    async with (
        served(gateway, auth="none", allow_unauthenticated=True) as app,
        Client(app.url, mode="legacy") as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "proxmox_guest_power" not in names, "anonymous is no operator"
        assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
    records = [r for r in read_audit(audit_path) if r["phase"] == "record"]
    assert records
    for record in records:
        assert (record["who"]["sub"], record["who"]["transport"]) == ("anonymous", "http")
        assert record["who"]["session"], "a legacy session id is recorded"


async def test_stateless_mode_serves_legacy_and_modern_clients(gateway: Gateway) -> None:
    async with served(gateway, stateless=True) as app:
        for mode in ("auto", "legacy"):
            async with (
                httpx2.AsyncClient(headers=bearer(KEYS[0])) as http,
                Client(streamable_http_client(app.url, http_client=http), mode=mode) as client,
            ):
                assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]


async def test_probes_and_metrics(gateway: Gateway) -> None:
    async with served(gateway) as app, httpx2.AsyncClient() as http:
        assert (await http.get(f"{app.base}/healthz")).json() == {"status": "ok"}
        ready = await http.get(f"{app.base}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "clusters": {"demo": {"credentials": "loaded", "proxmox": "reachable"}},
            "ready": True,
        }
        async with (
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as auth_http,
            Client(streamable_http_client(app.url, http_client=auth_http)) as client,
        ):
            payload(await client.call_tool("proxmox_node_list", {}))
            error_of(await client.call_tool("proxmox_guest_get", {"vmid": 999_999}))
        scrape = await http.get(f"{app.base}/metrics")
        assert scrape.headers["content-type"].startswith("text/plain")
        text = scrape.text
        assert 'pvemcp_tool_calls_total{outcome="ok",tool="proxmox_node_list"} 1.0' in text
        assert 'pvemcp_tool_calls_total{outcome="not_found",tool="proxmox_guest_get"} 1.0' in text
        assert 'pvemcp_pve_errors_total{code="not_found"} 1.0' in text
        assert 'pvemcp_tool_call_duration_seconds_count{tool="proxmox_node_list"} 1.0' in text


async def test_not_ready_when_proxmox_is_unreachable(
    audit_path: Path, sim: SimulatorHandle
) -> None:
    dead = cluster_for(sim, api_url=f"https://127.0.0.1:{free_port()}", retries=0)
    gateway = Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"dead": dead}, "dead"),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=None, known_tools=tier_map()
        ),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
    )
    try:
        async with served(gateway) as app, httpx2.AsyncClient() as http:
            assert (await http.get(f"{app.base}/healthz")).status_code == 200
            ready = await http.get(f"{app.base}/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "clusters": {"dead": {"credentials": "loaded", "proxmox": "unreachable"}},
                "ready": False,
            }
            assert "127.0.0.1" not in ready.text, "an unauthenticated probe shows no addresses"
    finally:
        await gateway.aclose()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_pve_error_codes_match_the_proxmox_errors() -> None:
    """The metrics' list of Proxmox-caused codes is every `ProxmoxError` subclass' code."""
    from pvemcp.proxmox.errors import ProxmoxError

    def codes(cls: type[ProxmoxError]) -> set[str]:
        return {cls.code}.union(*(codes(sub) for sub in cls.__subclasses__()))

    assert codes(ProxmoxError) == PVE_ERROR_CODES


def test_token_claims_become_the_principal() -> None:
    token = AccessToken(
        token="raw-token",
        client_id="agent-7",
        scopes=["pve.read"],
        subject=None,
        claims={"iss": "https://idp.example", "roles": ["pve-ops", "dba"]},
    )
    principal = token_principal(token, "roles", session="s1")
    assert principal == Principal(
        subject="agent-7",
        transport="http",
        client_id="agent-7",
        issuer="https://idp.example",
        scopes=frozenset({"pve.read"}),
        groups=frozenset({"pve-ops", "dba"}),
        token_sha256=token_sha256("raw-token"),
        session="s1",
    )
    assert not principal.is_local


async def test_read_cache_counters_in_metrics(sim: SimulatorHandle, audit_path: Path) -> None:
    gateway = make_gateway({"demo": cluster_for(sim, read_cache_ttl=60.0)}, audit_path)
    try:
        async with (
            served(gateway) as app,
            httpx2.AsyncClient(headers=bearer(KEYS[0])) as http,
            Client(streamable_http_client(app.url, http_client=http)) as client,
        ):
            for _ in range(3):
                payload(await client.call_tool("proxmox_node_list", {}))
            text = (await http.get(f"{app.base}/metrics")).text
    finally:
        await gateway.aclose()
    assert 'pvemcp_read_cache_misses_total{cluster="demo"} 1.0' in text
    assert 'pvemcp_read_cache_hits_total{cluster="demo"} 2.0' in text
