"""The demo stack's own files (deploy/compose/): its gateway config and policy load, and the
provider configuration its init step writes is one the real OpenID provider serves tokens
from. The containers themselves need Docker, which these machines do not run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from pvemcp.cli import main
from pvemcp.config import load_settings
from tests.support.oidc import oidc_provider_missing

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose"


def test_gateway_config_and_policy_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    settings = load_settings(COMPOSE / "pvemcp.toml")
    settings.require_cluster()  # the gateway container runs `serve`, which needs one
    demo = settings.all_clusters()["demo"]
    assert demo.credentials.source == "vault"
    assert settings.http.auth == "oidc"
    assert main(["policy", "check", str(COMPOSE / "policy.toml")]) == 0
    assert "ok: 1 rules" in capsys.readouterr().out


def test_generated_provider_config_issues_tokens_for_the_gateway(tmp_path: Path) -> None:
    reason = oidc_provider_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "oidc.json"
    env = {**os.environ, "OIDC_PORT": str(port), "PVEMCP_DEMO_CLIENT_SECRET": "demo-secret-1"}
    subprocess.run(
        [sys.executable, str(COMPOSE / "oidc_config.py"), str(config)],
        env=env,
        check=True,
        timeout=60,
    )
    assert json.loads(config.read_text())["port"] == port
    with config.open("rb") as stdin:
        provider = subprocess.Popen(
            ["node", str(ROOT / "tests" / "support" / "oidc_provider.mjs")],
            cwd=ROOT / "tests" / "support",
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    try:
        assert provider.stdout is not None
        issuer = json.loads(provider.stdout.readline())["issuer"]
        response = httpx2.post(
            f"{issuer}/token",
            auth=("agent", "demo-secret-1"),
            data={
                "grant_type": "client_credentials",
                "scope": "pvemcp pve.read",
                "resource": "http://127.0.0.1:8080/mcp",
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["token_type"].lower() == "bearer"
    finally:
        provider.terminate()
        provider.wait(10)
