"""The HTTP transport with a real OpenID provider (npm `oidc-provider` on 127.0.0.1).

The SDK's streamable-HTTP client presents RFC 9068 access tokens minted for our resource
URI: a read is allowed, a write is denied by policy (remote callers read by default), and a
token without a required scope is refused with 403 `insufficient_scope`.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from pvemcp.gateway.invoke import Gateway
from tests.conftest import read_audit
from tests.support.oidc import AGENT, oidc_provider_missing, run_oidc_provider
from tests.transports.test_http_app import error_of, free_port, payload, served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_provider() -> None:
    reason = oidc_provider_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_oidc_tokens_end_to_end(gateway: Gateway, audit_path: Path, mode: str) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with run_oidc_provider(resource) as provider:
        oidc = {"issuer": provider.issuer, "required_scopes": ["pve.read"]}
        async with served(gateway, auth="oidc", port=port, oidc=oidc) as app:
            assert app.url == resource
            token = provider.token(*AGENT, ["pvemcp", "pve.read", "pve.write"])
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
                Client(streamable_http_client(app.url, http_client=http), mode=mode) as client,
            ):
                assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
                denied = await client.call_tool(
                    "proxmox_guest_power", {"vmid": 100, "action": "start"}
                )
                assert error_of(denied)["code"] == "denied"

            narrow = provider.token(*AGENT, ["pvemcp"])
            async with httpx2.AsyncClient() as http:
                refused = await http.post(
                    app.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={"Authorization": f"Bearer {narrow}"},
                )
            assert refused.status_code == 403
            challenge = refused.headers["www-authenticate"]
            assert 'error="insufficient_scope"' in challenge
            assert 'scope="pve.read"' in challenge
            assert f'resource_metadata="{app.base}/.well-known/oauth-protected-resource/mcp"' in (
                challenge
            )

    records = read_audit(audit_path)
    read = next(r for r in records if r["phase"] == "record" and r["outcome"]["status"] == "ok")
    assert read["who"]["sub"] == "agent"
    assert read["who"]["iss"] == provider.issuer
    assert read["who"]["client_id"] == "agent"
    assert read["who"]["transport"] == "http"
    assert set(read["who"]["scopes"]) == {"pvemcp", "pve.read", "pve.write"}
    failure = next(r for r in records if r["phase"] == "auth_failure")
    assert failure["outcome"]["reason"] == "insufficient_scope"
    assert failure["who"]["sub"] == "agent"


async def test_readiness_follows_the_provider_without_any_token(gateway: Gateway) -> None:
    """Issue 10 item 10: keys missing at start were fetched only for a token, and a
    balancer sends none to an unready replica, so /readyz stayed 503 for good."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with run_oidc_provider(resource) as provider:
        provider.stop()  # down when the gateway starts; back later on the same issuer URL
        oidc = {"issuer": provider.issuer, "jwks_refresh_cooldown": 1}
        async with served(gateway, auth="oidc", port=port, oidc=oidc) as app:
            ready = f"{app.base}/readyz"
            async with httpx2.AsyncClient() as http:
                down = await http.get(ready)
                assert down.status_code == 503
                assert down.json()["oidc_keys"] == "unavailable"

                provider.start(port=provider.port)
                with anyio.fail_after(10):
                    while True:  # the probe itself refetches (no token is ever sent)
                        if (await http.get(ready)).status_code == 200:
                            break
                        await anyio.sleep(0.2)
                assert (await http.get(ready)).json()["oidc_keys"] == "loaded"

                provider.stop()  # keys already held stay usable through an outage
                assert (await http.get(ready)).status_code == 200
            provider.start(port=provider.port)
            token = provider.token(*AGENT, ["pvemcp", "pve.read"])
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
                Client(streamable_http_client(app.url, http_client=http)) as client,
            ):
                assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
