"""A caller's own token (an identity mapping) from Vault, rotated in a running gateway: the
audit's rotation record names the mapping's secret and the version of *its* source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pvemcp.config import load_settings
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor
from tests.conftest import read_audit

from .baoserver import ROOT_TOKEN, Bao
from .conftest import put, unique

pytestmark = pytest.mark.anyio

SECRET_1 = "1d1d1d1d-1234-4abc-9def-0123456789ab"
SECRET_2 = "2d2d2d2d-1234-4abc-9def-0123456789ab"


async def test_a_mapping_rotation_is_audited_with_its_own_version(
    bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("IDENTITY_VAULT_TOKEN", ROOT_TOKEN)
    path = unique("pvemcp/alice-")
    put(bao, path, token_id="alice@pve!mcp", token_secret=SECRET_1)
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "pvemcp.toml"
    config.write_text(
        '[clusters.prod]\napi_url = "https://127.0.0.1:9"\ntoken_id = "gw@pve!gw"\n'
        'token_secret = "0e0e0e0e-1234-4abc-9def-0123456789ab"\n'
        "[[clusters.prod.identities]]\n"
        'name = "alice"\nprincipal = "sub:alice"\n'
        "[clusters.prod.identities.credentials]\n"
        f'source = "vault"\nurl = "{bao.url}"\npath = "{path}"\nrefresh_interval = 0\n'
        'auth = { method = "token", token_env = "IDENTITY_VAULT_TOKEN" }\n'
        f'[audit]\npath = "{audit}"\n'
    )
    async with open_gateway(load_settings(config), Redactor()) as gateway:
        manager = gateway.clusters.secrets
        assert manager is not None
        loaded = manager.identity("prod", "alice")
        assert loaded is not None and loaded.version == "1"
        put(bao, path, token_id="alice@pve!mcp", token_secret=SECRET_2)
        assert await manager.refresh_identity("prod", "alice", "SIGHUP") is True
    rotations = [r for r in read_audit(audit) if r["phase"] == "rotation"]
    assert [r["what"] for r in rotations] == [
        {
            "secret": "cluster:prod/identities.alice.token_secret",
            "source": f"vault {bao.url} secret/{path} (kv v2, auth token)",
            "version": "2",
        }
    ]
    assert SECRET_1 not in audit.read_text() and SECRET_2 not in audit.read_text()


async def test_a_mapping_whose_name_extends_another_is_audited_with_its_own_version(
    bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mapping names may hold dots: `ops.alice`'s rotation is not given `ops`'s version
    (its secret name `identities.ops.alice.token_secret` starts with `identities.ops.`)."""
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("IDENTITY_VAULT_TOKEN", ROOT_TOKEN)
    ops, alice = unique("pvemcp/ops-"), unique("pvemcp/ops-alice-")
    put(bao, ops, token_id="ops@pve!mcp", token_secret=SECRET_1)
    put(bao, alice, token_id="alice@pve!mcp", token_secret=SECRET_1)
    put(bao, alice, token_id="alice@pve!mcp", token_secret=SECRET_2)
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "pvemcp.toml"
    mappings = "".join(
        "[[clusters.prod.identities]]\n"
        f'name = "{name}"\nprincipal = "sub:{name}"\n'
        "[clusters.prod.identities.credentials]\n"
        f'source = "vault"\nurl = "{bao.url}"\npath = "{path}"\nrefresh_interval = 0\n'
        'auth = { method = "token", token_env = "IDENTITY_VAULT_TOKEN" }\n'
        for name, path in (("ops", ops), ("ops.alice", alice))
    )
    config.write_text(
        '[clusters.prod]\napi_url = "https://127.0.0.1:9"\ntoken_id = "gw@pve!gw"\n'
        'token_secret = "0e0e0e0e-1234-4abc-9def-0123456789ab"\n'
        f'{mappings}[audit]\npath = "{audit}"\n'
    )
    async with open_gateway(load_settings(config), Redactor()) as gateway:
        manager = gateway.clusters.secrets
        assert manager is not None
        put(bao, alice, token_id="alice@pve!mcp", token_secret=SECRET_1)
        assert await manager.refresh_identity("prod", "ops.alice", "SIGHUP") is True
    rotations = [r["what"] for r in read_audit(audit) if r["phase"] == "rotation"]
    assert [(r["secret"], r["version"]) for r in rotations] == [
        ("cluster:prod/identities.ops.alice.token_secret", "3")
    ], rotations
