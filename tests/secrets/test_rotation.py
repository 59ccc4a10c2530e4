"""Rotation without restart (interval, SIGHUP, a 401 from the real simulator) and the
degraded start that recovers by itself when Vault comes up."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.proxmox.errors import AuthenticationError, CredentialsUnavailable
from pvemcp.secrets.manager import SecretsManager, install_sighup
from pvemcp.secrets.models import FileCredentials, VaultCredentials, VaultTokenAuth
from pvemcp.secrets.redaction import MASK, Redactor
from pvemcp.secrets.source import SecretSource, build_source
from pvemcp.secrets.types import ClusterCredentials
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import cluster_for

from .baoserver import ROOT_TOKEN, Bao, free_port_pair, running_bao
from .conftest import TOKEN_ID, put, unique, vault_cluster

pytestmark = pytest.mark.anyio

OLD = "11111111-aaaa-4bbb-8ccc-000000000001"
NEW = "22222222-aaaa-4bbb-8ccc-000000000002"
WRONG = "33333333-aaaa-4bbb-8ccc-000000000003"


@pytest.fixture(autouse=True)
def root_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VAULT_TOKEN", ROOT_TOKEN)


Rotations = list[tuple[str, str, str]]


def recorder() -> tuple[Rotations, Callable[[str, str, str], None]]:
    seen: Rotations = []
    return seen, lambda cluster, name, source: seen.append((cluster, name, source))


class Counting(SecretSource):
    """Wraps a source and counts its loads."""

    def __init__(self, inner: SecretSource) -> None:
        self.inner = inner
        self.loads = 0
        self.kind = inner.kind
        self.refreshable = inner.refreshable
        self.refresh_interval = inner.refresh_interval

    def describe(self) -> str:
        return self.inner.describe()

    async def load(self) -> ClusterCredentials:
        self.loads += 1
        return await self.inner.load()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - polls state another task or process changes
            await anyio.sleep(0.02)


def secret_of(manager: SecretsManager, name: str) -> str | None:
    token = manager.token(name)
    return token.secret.get_secret_value() if token else None


async def test_interval_rotation_and_sighup_without_restart(bao: Bao) -> None:
    path = unique("pvemcp/rotate-")
    put(bao, path, token_id=TOKEN_ID, token_secret=OLD)
    redactor = Redactor()
    rotations, on_rotation = recorder()
    cluster = vault_cluster(bao.url, path, refresh_interval=0.3)
    async with SecretsManager({"c": cluster}, redactor, on_rotation=on_rotation) as manager:
        assert manager.ready("c") and manager.ready()
        held = manager.token("c")  # a call in flight keeps the object it took
        put(bao, path, token_id=TOKEN_ID, token_secret=NEW)
        await wait_for(lambda: secret_of(manager, "c") == NEW)
        assert held is not None and held.secret.get_secret_value() == OLD
        assert rotations == [("c", "token_secret", manager.describe("c"))]
        assert f"secret/{path}" in rotations[0][2]
        current = manager.current("c")
        assert current is not None and current.version == "2"
        # Old and new values are both redacted from now on.
        assert redactor.text(f"{OLD} {NEW}") == f"{MASK} {MASK}"

        assert await install_sighup(manager)
        third = "44444444-aaaa-4bbb-8ccc-000000000004"
        put(bao, path, token_id=TOKEN_ID, token_secret=third, ssh_user="pvemcp")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: secret_of(manager, "c") == third)
        await wait_for(lambda: len(rotations) == 3)
        assert {name for _, name, _ in rotations[1:]} == {"token_secret", "ssh_user"}


async def test_a_401_rereads_vault_once_and_retries(sim: SimulatorHandle, bao: Bao) -> None:
    path = unique("pvemcp/on401-")
    put(bao, path, token_id=sim.token_id, token_secret=WRONG)
    credentials = VaultCredentials(
        url=bao.url,
        path=path,
        auth=VaultTokenAuth(token_env="TEST_VAULT_TOKEN"),
        refresh_interval=0,
    )
    cluster = cluster_for(sim, token_secret=None, credentials=credentials)
    counting = Counting(build_source("lab", cluster))
    rotations, on_rotation = recorder()
    async with SecretsManager(
        {"lab": cluster},
        Redactor(),
        on_rotation=on_rotation,
        unauthorized_cooldown=0,
        sources={"lab": counting},
    ) as manager:
        pool = ClusterPool({"lab": cluster}, secrets=manager)
        backend = pool.backend("lab")
        try:
            # Vault still holds the wrong token: one re-read, no change, no retry loop.
            with pytest.raises(AuthenticationError) as info:
                await backend.call("GET", "/version")
            assert counting.loads == 2
            assert "re-read" in info.value.message and WRONG not in info.value.message

            # The right token lands in Vault: the next call succeeds after one re-read.
            put(bao, path, token_id=sim.token_id, token_secret=sim.token_secret)
            result = await backend.call("GET", "/version")
            assert isinstance(result.data, dict) and "version" in result.data
            assert counting.loads == 3
            assert [name for _, name, _ in rotations] == ["token_secret"]
            await backend.call("GET", "/version")
            assert counting.loads == 3  # no 401, no re-read
        finally:
            await pool.aclose()


async def test_vault_down_at_start_then_recovered(
    sim: SimulatorHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port_pair()
    url = f"http://127.0.0.1:{port}"
    credentials = VaultCredentials(
        url=url,
        path="pvemcp/late",
        auth=VaultTokenAuth(token_env="TEST_VAULT_TOKEN"),
        connect_timeout=1,
    )
    cluster = cluster_for(sim, token_secret=None, credentials=credentials)
    async with SecretsManager(
        {"late": cluster}, Redactor(), retry_initial=0.1, retry_max=0.3
    ) as manager:
        assert not manager.ready("late") and not manager.ready()
        problem = manager.problem("late")
        assert problem is not None and "cannot connect to vault" in problem
        pool = ClusterPool({"late": cluster}, secrets=manager)
        try:
            with pytest.raises(CredentialsUnavailable) as info:
                await pool.backend("late").call("GET", "/version")
            assert info.value.code == "credentials_unavailable"
            assert "cluster late" in info.value.message and "cannot connect" in info.value.message
            assert (info.value.method, info.value.path) == ("GET", "/version")
            assert not pool.ready("late")

            with running_bao(port, tmp_path / "late.log") as late:
                put(late, "pvemcp/late", token_id=sim.token_id, token_secret=sim.token_secret)
                await wait_for(lambda: manager.ready("late"))
                result = await pool.backend("late").call("GET", "/version")
                assert isinstance(result.data, dict)
                assert manager.status()["late"] == {
                    "ready": True,
                    "source": manager.describe("late"),
                    "problem": None,
                }
        finally:
            await pool.aclose()


async def test_a_failed_reload_keeps_the_last_good_credentials(tmp_path: Path) -> None:
    path = tmp_path / "creds.toml"
    path.write_text(f'token_id = "{TOKEN_ID}"\ntoken_secret = "{OLD}"\n')
    path.chmod(0o600)
    cluster = cluster_for_file(path)
    async with SecretsManager({"f": cluster}, Redactor()) as manager:
        assert secret_of(manager, "f") == OLD
        path.chmod(0o644)
        assert await manager.refresh("f", "test") is False
        assert secret_of(manager, "f") == OLD and manager.ready("f")
        problem = manager.problem("f")
        assert problem is not None and f"chmod 600 {path}" in problem
        path.write_text(f'token_id = "{TOKEN_ID}"\ntoken_secret = "{NEW}"\n')
        path.chmod(0o600)
        results = await manager.refresh_all("test")
        assert results == {"f": True}
        assert secret_of(manager, "f") == NEW and manager.problem("f") is None


def cluster_for_file(path: Path) -> ClusterConfig:
    return ClusterConfig(api_url="https://pve.example:8006", credentials=FileCredentials(path=path))
