"""The same Vault source against the official HashiCorp Vault image (testcontainers).

OpenBao covers the protocol in every run; this checks the real Vault too (its `hvs.`
tokens, its KV v2) wherever a Docker daemon is available, and skips elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import VaultAppRoleAuth
from pvemcp.secrets.redaction import MASK, Redactor

from .conftest import TOKEN_ID, vault_cluster, write_private

pytestmark = pytest.mark.anyio

IMAGE = "hashicorp/vault:1.18"
SECRET = "d0c4e5e5-0000-4000-8000-00000000c0de"


def docker_unavailable() -> str | None:
    """Why Docker cannot be used here, or None when a daemon answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH"
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        return f"no Docker daemon (`docker info`: {first})"
    return None


@pytest.fixture(scope="module")
def vault_url() -> Iterator[tuple[str, str]]:
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(f"testcontainers Vault test skipped: {reason}")
    from testcontainers.community.vault import VaultContainer

    with VaultContainer(IMAGE, root_token="ROOT") as container:
        url = container.get_connection_url()
        host = urllib.parse.urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            pytest.skip(f"the Docker host {host} is not loopback; plain http would be refused")
        yield url, container.root_token


async def test_official_vault_image_approle_kv2(vault_url: tuple[str, str], tmp_path: Path) -> None:
    import hvac

    url, root_token = vault_url
    root = hvac.Client(url=url, token=root_token)
    root.secrets.kv.v2.create_or_update_secret(
        path="pvemcp/prod", secret={"token_id": TOKEN_ID, "token_secret": SECRET}
    )
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "pvemcp-read", 'path "secret/data/pvemcp/prod" { capabilities = ["read"] }'
    )
    root.auth.approle.create_or_update_approle(
        "pvemcp", token_policies=["pvemcp-read"], token_ttl="5m", token_max_ttl="1h"
    )
    role_id = root.auth.approle.read_role_id("pvemcp")["data"]["role_id"]
    wrapped = root.auth.approle.generate_secret_id("pvemcp", wrap_ttl="60s")["wrap_info"]["token"]
    auth = VaultAppRoleAuth(
        role_id=role_id,
        secret_id_file=write_private(tmp_path / "wrapped", wrapped),
        secret_id_wrapped=True,
    )
    redactor = Redactor()
    cluster = vault_cluster(url, "pvemcp/prod", auth=auth)
    async with SecretsManager({"prod": cluster}, redactor) as manager:
        token = manager.token("prod")
        assert token is not None and token.secret.get_secret_value() == SECRET
        assert redactor.text(f"x {SECRET} y") == f"x {MASK} y"
        assert redactor.text("hvs.CAESIJ" + "a" * 80) == MASK
