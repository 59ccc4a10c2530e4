"""The Vault source against a real OpenBao server: KV v1/v2, token and AppRole logins
(with a wrapped secret_id), renewal and re-login, and the error messages."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import VaultAppRoleAuth, VaultKubernetesAuth, VaultTokenAuth
from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.source import build_source
from pvemcp.secrets.types import SecretSourceError
from pvemcp.secrets.vault import VaultSource

from .baoserver import ROOT_TOKEN, Bao, free_port_pair
from .conftest import TOKEN_ID, approle, put, read_policy, unique, vault_cluster, write_private

pytestmark = pytest.mark.anyio

SECRET = "c0ffee00-1111-2222-3333-444455556666"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture
def root_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VAULT_TOKEN", ROOT_TOKEN)


def vault_source(cluster_config: object, sink: list[str] | None = None) -> VaultSource:
    source = build_source(
        "c",
        cluster_config,  # type: ignore[arg-type]
        sink=(sink.append if sink is not None else None),
    )
    assert isinstance(source, VaultSource)
    return source


async def load_error(source: VaultSource) -> str:
    try:
        with pytest.raises(SecretSourceError) as info:
            await source.load()
    finally:
        await source.aclose()
    return info.value.message


@pytest.mark.usefixtures("root_token")
async def test_kv2_read_with_everything_a_cluster_needs(bao: Bao) -> None:
    path = unique("pvemcp/kv2-")
    put(
        bao,
        path,
        token_id=TOKEN_ID,
        token_secret=SECRET,
        ssh_user="pvemcp",
        ssh_private_key=KEY,
        ssh_passphrase="correct horse battery",
        ssh_host_keys='{"pve1": ["pve1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake"]}',
    )
    source = vault_source(vault_cluster(bao.url, path))
    try:
        credentials = await source.load()
    finally:
        await source.aclose()
    assert credentials.token is not None
    assert credentials.token.token_id == TOKEN_ID
    assert credentials.token.secret.get_secret_value() == SECRET
    assert credentials.version == "1"
    assert credentials.ssh is not None
    assert credentials.ssh.user == "pvemcp"
    assert credentials.ssh.private_key is not None
    assert credentials.ssh.private_key.get_secret_value() == KEY
    assert credentials.ssh.host_keys == {
        "pve1": ("pve1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake",)
    }
    assert f"secret/{path}" in credentials.origin and "version 1" in credentials.origin
    values = set(credentials.secret_values())
    assert {SECRET, KEY, "correct horse battery"} <= values
    assert SECRET not in repr(credentials)


@pytest.mark.usefixtures("root_token")
async def test_kv1_by_option_and_token_id_from_the_cluster(bao: Bao) -> None:
    path = unique("pvemcp/kv1-")
    bao.root.secrets.kv.v1.create_or_update_secret(
        path=path, secret={"token_secret": SECRET}, mount_point="kv1"
    )
    source = vault_source(
        vault_cluster(bao.url, path, mount="kv1", kv_version=1, cluster={"token_id": TOKEN_ID})
    )
    try:
        credentials = await source.load()
    finally:
        await source.aclose()
    assert credentials.token is not None
    assert credentials.token.token_id == TOKEN_ID
    assert credentials.version is None
    # The same path read as KV v2 names the likely mistake.
    message = await load_error(vault_source(vault_cluster(bao.url, path, mount="kv1")))
    assert "kv_version = 1" in message or "kv_version" in message


async def test_approle_login_and_least_privilege(bao: Bao, tmp_path: Path) -> None:
    path = unique("pvemcp/approle-")
    put(bao, path, token_id=TOKEN_ID, token_secret=SECRET)
    role_name, role_id = approle(bao, path, token_ttl="60s", token_max_ttl="120s")
    secret_id = bao.root.auth.approle.generate_secret_id(role_name)["data"]["secret_id"]
    secret_file = write_private(tmp_path / "secret-id", secret_id + "\n")
    auth = VaultAppRoleAuth(role_id=role_id, secret_id_file=secret_file)
    sink: list[str] = []
    source = vault_source(vault_cluster(bao.url, path, auth=auth), sink)
    try:
        credentials = await source.load()
    finally:
        await source.aclose()
    assert credentials.token is not None
    assert credentials.token.secret.get_secret_value() == SECRET
    assert source.logins == 1
    assert secret_id in sink  # the secret_id and the login token join the redaction set
    assert any(value.startswith("s.") for value in sink)

    # The same role may not read any other path: a clear error naming path and policy.
    other = unique("pvemcp/other-")
    put(bao, other, token_secret=SECRET)
    message = await load_error(vault_source(vault_cluster(bao.url, other, auth=auth)))
    assert "denied" in message
    assert f"'{other}'" in message
    assert f'read on "secret/data/{other}"' in message
    assert SECRET not in message and secret_id not in message


async def test_wrapped_secret_id_is_unwrapped_once(bao: Bao, tmp_path: Path) -> None:
    path = unique("pvemcp/wrapped-")
    put(bao, path, token_id=TOKEN_ID, token_secret=SECRET)
    role_name, role_id = approle(bao, path, token_ttl="60s")
    wrapped = bao.root.auth.approle.generate_secret_id(role_name, wrap_ttl="60s")
    wrapping_token = wrapped["wrap_info"]["token"]
    auth = VaultAppRoleAuth(
        role_id=role_id,
        secret_id_file=write_private(tmp_path / "wrapped", wrapping_token),
        secret_id_wrapped=True,
    )
    source = vault_source(vault_cluster(bao.url, path, auth=auth))
    try:
        await source.load()
        assert source.logins == 1
        # Revoke the login token behind the source's back: the next read gets a 403, logs
        # in again, and must reuse the unwrapped secret_id (the wrapping token is spent).
        token = source._client.token  # type: ignore[union-attr]
        bao.root.auth.token.revoke(token)
        credentials = await source.load()
        assert source.logins == 2
        assert credentials.token is not None
    finally:
        await source.aclose()

    # A wrapping token someone else already unwrapped: a clear error, never a value.
    message = await load_error(vault_source(vault_cluster(bao.url, path, auth=auth)))
    assert "cannot unwrap" in message and "single-use" in message
    assert wrapping_token not in message


async def test_token_renewal_and_fresh_login_at_max_ttl(bao: Bao, tmp_path: Path) -> None:
    """Short TTLs: A renews at ~2/3 of its TTL and keeps its login; B's renewal comes back
    capped by its max TTL, so B logs in again before the token expires."""
    path = unique("pvemcp/renew-")
    put(bao, path, token_id=TOKEN_ID, token_secret=SECRET)
    clusters = {}
    for name, max_ttl in (("a", "60s"), ("b", "2s")):
        role_name, role_id = approle(bao, path, token_ttl="2s", token_max_ttl=max_ttl)
        secret_id = bao.root.auth.approle.generate_secret_id(role_name)["data"]["secret_id"]
        auth = VaultAppRoleAuth(
            role_id=role_id, secret_id_file=write_private(tmp_path / name, secret_id)
        )
        clusters[name] = vault_cluster(bao.url, path, auth=auth, refresh_interval=0)
    async with SecretsManager(clusters, Redactor()) as manager:
        a, b = manager.source("a"), manager.source("b")
        assert isinstance(a, VaultSource) and isinstance(b, VaultSource)
        first_token = a._client.token  # type: ignore[union-attr]
        await anyio.sleep(2.6)
        # Past the original 2 s TTL: A's token is alive only because it was renewed.
        assert a.renewals >= 1 and a.logins == 1
        info = bao.root.auth.token.lookup(first_token)["data"]
        assert info["last_renewal_time"] > 0 and info["ttl"] > 0
        assert b.logins >= 2
        assert await manager.refresh("a", "test") is False  # reads still work, unchanged
        assert await manager.refresh("b", "test") is False
        assert manager.ready()


async def test_bad_path_and_bad_mount_name_both(bao: Bao, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VAULT_TOKEN", ROOT_TOKEN)
    message = await load_error(vault_source(vault_cluster(bao.url, "pvemcp/absent")))
    assert "no secret at mount 'secret' path 'pvemcp/absent'" in message
    assert "credentials.path" in message
    message = await load_error(vault_source(vault_cluster(bao.url, "x", mount="nomount")))
    assert "'nomount'" in message and "credentials.mount" in message


async def test_permission_denied_token(bao: Bao, monkeypatch: pytest.MonkeyPatch) -> None:
    path = unique("pvemcp/denied-")
    put(bao, path, token_secret=SECRET)
    token = bao.root.auth.token.create(
        policies=[read_policy(bao, "pvemcp/somewhere-else")], ttl="1h"
    )["auth"]["client_token"]
    monkeypatch.setenv("TEST_VAULT_TOKEN", token)
    message = await load_error(vault_source(vault_cluster(bao.url, path)))
    assert "denied reading" in message and f"'{path}'" in message
    assert "auth token" in message or "token login" in message
    assert token not in message and SECRET not in message


async def test_token_sources_fail_clearly(
    bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_VAULT_TOKEN", raising=False)
    message = await load_error(vault_source(vault_cluster(bao.url, "pvemcp/x")))
    assert "TEST_VAULT_TOKEN" in message and "not set" in message
    loose = tmp_path / "token"
    write_private(loose, ROOT_TOKEN, mode=0o644)
    auth = VaultTokenAuth(token_file=loose)
    message = await load_error(vault_source(vault_cluster(bao.url, "pvemcp/x", auth=auth)))
    assert f"chmod 600 {loose}" in message
    monkeypatch.setenv("TEST_VAULT_TOKEN", "s.notavalidtokenatall1234")
    message = await load_error(vault_source(vault_cluster(bao.url, "pvemcp/x")))
    assert "denied" in message and "s.notavalid" not in message


@pytest.mark.usefixtures("root_token")
async def test_unreachable_vault_is_transient() -> None:
    port = free_port_pair()
    source = vault_source(vault_cluster(f"http://127.0.0.1:{port}", "pvemcp/x"))
    with pytest.raises(SecretSourceError) as info:
        await source.load()
    await source.aclose()
    assert info.value.transient
    assert f"cannot connect to vault http://127.0.0.1:{port}" in info.value.message


class _Redirector(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012 - shared with the test on purpose

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(307)
        self.send_header("Location", "http://evil.example/v1/steal?x=1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Redirector.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("root_token")
async def test_redirects_are_refused_not_followed(redirector: str) -> None:
    message = await load_error(vault_source(vault_cluster(redirector, "pvemcp/x")))
    assert "redirect" in message and "http://evil.example/v1/steal" in message
    assert "x=1" not in message
    assert len(_Redirector.seen) == 1  # nothing went on to the target


async def test_kubernetes_login_rereads_the_jwt_and_fails_clearly(bao: Bao, tmp_path: Path) -> None:
    """No Kubernetes API here, so the login itself is refused: what matters is that each
    login reads the (rotated) token file anew and that the failure says what to check."""
    mount = unique("k8s-")
    bao.root.sys.enable_auth_method("kubernetes", path=mount)
    jwt_file = tmp_path / "token"
    auth = VaultKubernetesAuth(role="pvemcp", mount=mount, jwt_file=jwt_file)
    sink: list[str] = []
    missing = await load_error(vault_source(vault_cluster(bao.url, "pvemcp/x", auth=auth)))
    assert f"service-account token {jwt_file} does not exist" in missing
    source = vault_source(vault_cluster(bao.url, "pvemcp/x", auth=auth), sink)
    first, second = (
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvbmUifQ.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0d28ifQ.c2ln",
    )
    for jwt in (first, second):
        jwt_file.write_text(jwt + "\n")
        with pytest.raises(SecretSourceError) as info:
            await source.load()
        assert "kubernetes login" in info.value.message
        assert jwt not in info.value.message
    await source.aclose()
    assert sink == [first, second]
