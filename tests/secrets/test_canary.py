"""Canary: credentials loaded from Vault hold marked values; an end-to-end run through the
MCP server (successes, failures, a wrong token, an unreachable Vault, a rotation) must not
let any of them, nor their base64 or URL-encoded forms, into logs, audit or tool results."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from mcp import Client

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.logsetup import configure_logging
from pvemcp.policy.audit import AuditLog
from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import VaultAppRoleAuth, VaultCredentials
from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.vault import VaultSource
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, operator_policy

from .baoserver import Bao, free_port_pair
from .conftest import approle, put, unique

pytestmark = pytest.mark.anyio

CANARY_TOKEN = "canary01-7e57-4c0d-9a11-5ec12e7c0ffe"
CANARY_WRONG = "canary02-7e57-4c0d-9a11-5ec12e7c0ffe"
CANARY_SECRET_ID = "canary03-7e57-4c0d-9a11-5ec12e7c0ffe"
CANARY_PASSPHRASE = "canary04-passphrase-of-the-ssh-key"
CANARY_PASSPHRASE_2 = "canary05-passphrase-after-rotation"
CANARY_KEY_LINE = "Y2FuYXJ5MDYta2V5LWJvZHktbGluZS1vbmUtZm9yLXRoZS10ZXN0"
CANARY_KEY = (
    f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY_KEY_LINE}\n-----END OPENSSH PRIVATE KEY-----\n"
)


def forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        urllib.parse.quote(value, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A buffer for the real logging setup (see `capture_logs`); restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def capture_logs(stream: io.StringIO, redactor: Redactor) -> None:
    """`configure_logging` as `pvemcp serve` runs it, with stderr being `stream`. (Done in
    the test itself: pytest re-installs its own sys.stderr between setup and call.)"""
    saved = sys.stderr
    sys.stderr = stream
    try:
        configure_logging("DEBUG", redactor)
    finally:
        sys.stderr = saved


async def test_no_canary_escapes(
    bao: Bao, tmp_path: Path, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    redactor = Redactor()
    capture_logs(log_stream, redactor)
    good, bad = unique("pvemcp/canary-good-"), unique("pvemcp/canary-bad-")
    role_name, role_id = approle(bao, good, bad, token_ttl="60s")
    bao.root.auth.approle.create_custom_secret_id(role_name, secret_id=CANARY_SECRET_ID)
    monkeypatch.setenv("CANARY_SECRET_ID", CANARY_SECRET_ID)
    auth = VaultAppRoleAuth(role_id=role_id, secret_id_env="CANARY_SECRET_ID")
    audit_path = tmp_path / "audit.jsonl"
    results: list[str] = []

    with simulator_in_thread(SimulatorOptions(token_secret=CANARY_TOKEN, time_scale=0)) as sim:
        ssh = {
            "ssh_user": "pvemcp",
            "ssh_private_key": CANARY_KEY,
            "ssh_host_keys": '{"pve1": ["pve1 ssh-ed25519 AAAA"]}',
        }
        put(bao, good, token_id=sim.token_id, token_secret=CANARY_TOKEN, **ssh,
            ssh_passphrase=CANARY_PASSPHRASE)  # fmt: skip
        put(bao, bad, token_id=sim.token_id, token_secret=CANARY_WRONG)

        def vault(path: str, url: str = bao.url) -> VaultCredentials:
            return VaultCredentials(url=url, path=path, auth=auth, connect_timeout=1)

        clusters = {
            "good": cluster_for(sim, token_secret=None, credentials=vault(good)),
            "bad": cluster_for(sim, token_secret=None, credentials=vault(bad)),
            "down": cluster_for(
                sim,
                token_secret=None,
                credentials=vault(good, url=f"http://127.0.0.1:{free_port_pair()}"),
            ),
        }
        async with SecretsManager(clusters, redactor, retry_initial=30) as manager:
            gateway = Gateway(
                tools=all_tools(),
                clusters=ClusterPool(clusters, "good", secrets=manager),
                policy=operator_policy(),
                audit=AuditLog(audit_path),
                redactor=redactor,
            )
            vault_tokens = [
                source._client.token
                for name in ("good", "bad")
                if isinstance(source := manager.source(name), VaultSource)
                and source._client is not None
            ]
            assert len(vault_tokens) == 2
            try:
                server = build_mcp_server(gateway, local_principal)
                async with Client(server) as client:
                    calls: list[tuple[str, dict[str, Any]]] = [
                        ("proxmox_cluster_status", {}),
                        ("proxmox_node_list", {}),
                        ("proxmox_guest_list", {}),
                        ("proxmox_guest_get", {"vmid": 999_999}),
                        ("proxmox_node_status", {"node": "pve1", "cluster": "bad"}),
                        ("proxmox_node_list", {"cluster": "down"}),
                        ("proxmox_guest_power", {"vmid": 100, "action": "start"}),
                    ]
                    outcomes = {}
                    for tool, args in calls:
                        result = await client.call_tool(tool, args)
                        text = " ".join(getattr(item, "text", "") for item in result.content)
                        results.append(text)
                        results.append(json.dumps(result.structured_content))
                        outcomes[(tool, args.get("cluster"))] = (
                            json.loads(text)["error"]["code"] if result.is_error else "ok"
                        )
                    # A rotation while serving (logged and reported, values never).
                    put(bao, good, token_id=sim.token_id, token_secret=CANARY_TOKEN, **ssh,
                        ssh_passphrase=CANARY_PASSPHRASE_2)  # fmt: skip
                    assert await manager.refresh("good", "test")
                    result = await client.call_tool("proxmox_node_list", {})
                    results.append(" ".join(getattr(i, "text", "") for i in result.content))
                    assert not result.is_error
            finally:
                await gateway.aclose()

    assert outcomes[("proxmox_cluster_status", None)] == "ok"
    assert outcomes[("proxmox_guest_get", None)] == "not_found"
    assert outcomes[("proxmox_node_status", "bad")] == "authentication_failed"
    assert outcomes[("proxmox_node_list", "down")] == "credentials_unavailable"

    logs = log_stream.getvalue()
    audit = audit_path.read_text()
    assert "secret_rotated" in logs and "ssh_passphrase" in logs
    assert "credentials_load_failed" in logs
    assert audit.count("\n") >= len(results) // 2
    haystacks = {"logs": logs, "audit": audit, "results": "\n".join(results)}
    canaries = [
        CANARY_TOKEN,
        CANARY_WRONG,
        CANARY_SECRET_ID,
        CANARY_PASSPHRASE,
        CANARY_PASSPHRASE_2,
        CANARY_KEY_LINE,
        CANARY_KEY,
        *vault_tokens,
    ]
    for canary in canaries:
        for form in forms(canary):
            for where, text in haystacks.items():
                assert form not in text, f"a canary ({canary[:8]}...) leaked into {where}"
    assert "canary0" not in logs + audit
