"""The file and env sources, the config models, and their error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pvemcp.config import ClusterConfig, ConfigError, load_settings
from pvemcp.secrets.env import EnvSource
from pvemcp.secrets.file import FileSource
from pvemcp.secrets.models import (
    EnvCredentials,
    FileCredentials,
    InlineCredentials,
    VaultAppRoleAuth,
    VaultCredentials,
    VaultKubernetesAuth,
)
from pvemcp.secrets.redaction import MASK, Redactor
from pvemcp.secrets.source import InlineSource, build_source
from pvemcp.secrets.types import SecretSourceError

from .conftest import TOKEN_ID, write_private

pytestmark = pytest.mark.anyio

SECRET = "5f1a8f8e-aaaa-bbbb-cccc-444455556666"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
API = "https://pve.example:8006"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("PVEMCP_", "LAB_")):
            monkeypatch.delenv(key)


def file_source(path: Path, **kw: object) -> FileSource:
    cluster = ClusterConfig(api_url=API, credentials=FileCredentials(path=path, **kw))
    source = build_source("lab", cluster)
    assert isinstance(source, FileSource)
    return source


async def file_error(path: Path, **kw: object) -> str:
    with pytest.raises(SecretSourceError) as info:
        await file_source(path, **kw).load()
    assert SECRET not in info.value.message
    return info.value.message


async def test_toml_file_with_an_ssh_table(tmp_path: Path) -> None:
    path = write_private(
        tmp_path / "lab.toml",
        f"""
token_id = "{TOKEN_ID}"
token_secret = "{SECRET}"
[ssh]
user = "pvemcp"
private_key = '''{KEY}'''
passphrase = "open sesame"
[ssh.host_keys]
pve1 = ["pve1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne"]
pve2 = "pve2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo\\n# a comment\\n"
""",
    )
    credentials = await file_source(path).load()
    assert credentials.token is not None
    assert credentials.token.secret.get_secret_value() == SECRET
    assert credentials.ssh is not None
    assert credentials.ssh.host_keys == {
        "pve1": ("pve1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne",),
        "pve2": ("pve2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo",),
    }
    redactor = Redactor(credentials.secret_values())
    # Whole key, one line of it, the passphrase: all masked.
    assert redactor.text("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=") == MASK
    assert redactor.text("open sesame") == MASK


async def test_json_file_flat_keys_and_token_id_fallback(tmp_path: Path) -> None:
    path = write_private(
        tmp_path / "lab.json",
        json.dumps({"token_secret": SECRET, "ssh_user": "root", "ssh_key_path": "/k"}),
        mode=0o400,
    )
    cluster = ClusterConfig(api_url=API, token_id=TOKEN_ID, credentials=FileCredentials(path=path))
    credentials = await build_source("lab", cluster).load()
    assert credentials.token is not None and credentials.token.token_id == TOKEN_ID
    assert credentials.ssh is not None and credentials.ssh.key_path == Path("/k")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
async def test_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = write_private(tmp_path / "lab.toml", f'token_secret = "{SECRET}"', mode=mode)
    message = await file_error(path)
    assert f"mode {mode:04o}" in message
    assert message.endswith(f"chmod 600 {path}")


async def test_malformed_missing_and_odd_files(tmp_path: Path) -> None:
    bad_toml = write_private(tmp_path / "a.toml", f'token_secret = "{SECRET}\n')
    message = await file_error(bad_toml)
    assert "is not valid TOML" in message and str(bad_toml) in message
    bad_json = write_private(tmp_path / "a.json", f'{{"token_secret": "{SECRET}",}}')
    message = await file_error(bad_json)
    assert "is not valid JSON" in message and "line 1" in message
    not_object = write_private(tmp_path / "b.json", f'["{SECRET}"]')
    assert "must hold a JSON object" in await file_error(not_object)
    json_text = write_private(tmp_path / "c.conf", f'{{"token_secret": "{SECRET}"}}')
    assert "is not valid TOML" in await file_error(json_text)  # auto: not .json -> TOML
    assert "token_id is missing" in await file_error(json_text, format="json")
    missing = tmp_path / "absent.toml"
    message = await file_error(missing)
    assert f"credentials file {missing} does not exist" in message
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    assert "not a regular file" in await file_error(directory)
    empty = write_private(tmp_path / "empty.toml", "")
    assert "token_secret is missing" in await file_error(empty)
    bad_id = write_private(tmp_path / "id.toml", f'token_id = "nope"\ntoken_secret = "{SECRET}"')
    assert "user@realm!tokenid" in await file_error(bad_id)
    bad_key = write_private(
        tmp_path / "k.toml",
        f'token_id = "{TOKEN_ID}"\ntoken_secret = "{SECRET}"\nssh_user = "u"\n'
        f'ssh_private_key = "{SECRET}"',
    )
    assert "not a PEM or OpenSSH private key" in await file_error(bad_key)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file, so EACCES cannot happen")
async def test_unreadable_file(tmp_path: Path) -> None:
    path = write_private(tmp_path / "lab.toml", f'token_secret = "{SECRET}"', mode=0o000)
    assert "cannot be read by this process" in await file_error(path)


async def test_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = ClusterConfig(api_url=API, credentials=EnvCredentials(prefix="LAB_"))
    source = build_source("lab", cluster)
    assert isinstance(source, EnvSource)
    with pytest.raises(SecretSourceError) as info:
        await source.load()
    assert "LAB_TOKEN_SECRET is not set" in info.value.message
    monkeypatch.setenv("LAB_TOKEN_SECRET", SECRET)
    with pytest.raises(SecretSourceError) as info:
        await source.load()
    assert "LAB_TOKEN_ID is missing" in info.value.message
    monkeypatch.setenv("LAB_TOKEN_ID", "bad id")
    with pytest.raises(SecretSourceError) as info:
        await source.load()
    assert "LAB_TOKEN_ID must look like" in info.value.message
    monkeypatch.setenv("LAB_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("LAB_SSH_USER", "pvemcp")
    monkeypatch.setenv("LAB_SSH_HOST_KEYS", '{"pve1": ["pve1 ssh-ed25519 AAAA"]}')
    credentials = await source.load()
    assert credentials.token is not None
    assert credentials.token.secret.get_secret_value() == SECRET
    assert credentials.ssh is not None and credentials.ssh.host_keys["pve1"]
    assert "LAB_TOKEN_SECRET" in source.describe()


async def test_inline_source() -> None:
    cluster = ClusterConfig(api_url=API, token_id=TOKEN_ID, token_secret=SecretStr(SECRET))
    source = build_source("lab", cluster)
    assert isinstance(source, InlineSource) and not source.refreshable
    credentials = await source.load()
    assert credentials.token is not None and credentials.token.token_id == TOKEN_ID
    with pytest.raises(SecretSourceError, match="no token_id / token_secret"):
        await build_source("lab", ClusterConfig(api_url=API)).load()


def test_models_refuse_unsafe_or_ambiguous_settings() -> None:
    with pytest.raises(ValidationError, match="cleartext"):
        VaultCredentials(url="http://vault.example:8200", path="p")
    with pytest.raises(ValidationError, match="credentials"):
        VaultCredentials(url="https://user:pw@vault.example:8200", path="p")
    with pytest.raises(ValidationError, match="outside allowed_paths"):
        VaultCredentials(url="https://v:8200", path="other/x", allowed_paths=["secret/pvemcp"])
    VaultCredentials(url="https://v:8200", path="pvemcp/prod", allowed_paths=["secret/pvemcp"])
    with pytest.raises(ValidationError, match="outside allowed_paths"):
        VaultCredentials(url="https://v:8200", path="pvemcp-evil", allowed_paths=["secret/pvemcp"])
    with pytest.raises(ValidationError, match=r"no '\.\.'"):
        VaultCredentials(url="https://v:8200", path="pvemcp/../other")
    with pytest.raises(ValidationError, match="exactly one of role_id"):
        VaultAppRoleAuth(secret_id_env="SID")
    with pytest.raises(ValidationError, match="exactly one of secret_id_file"):
        VaultAppRoleAuth(role_id="r")
    with pytest.raises(ValidationError, match="environment variable name"):
        VaultAppRoleAuth(role_id="r", secret_id_env="not a name")
    assert VaultKubernetesAuth(role="pvemcp").jwt_file.name == "token"
    with pytest.raises(ValidationError, match="keep the secret in one place"):
        ClusterConfig(
            api_url=API,
            token_id=TOKEN_ID,
            token_secret=SecretStr(SECRET),
            credentials=EnvCredentials(),
        )
    # token_id alone is fine with a source (it is the default token id).
    assert ClusterConfig(api_url=API, token_id=TOKEN_ID, credentials=EnvCredentials())
    assert ClusterConfig(api_url=API).credentials == InlineCredentials()


def test_settings_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pvemcp.toml"
    path.write_text(
        """
[clusters.prod]
api_url = "https://prod:8006"
token_id = "pvemcp@pve!gateway"
[clusters.prod.credentials]
source = "vault"
url = "https://vault.example:8200"
path = "pvemcp/prod"
auth = { method = "approle", role_id = "r-1", secret_id_file = "/run/s", secret_id_wrapped = true }

[clusters.lab]
api_url = "https://lab:8006"
[clusters.lab.credentials]
source = "file"
path = "/etc/pvemcp/lab.toml"

[clusters.edge]
api_url = "https://edge:8006"
credentials = { source = "env", prefix = "EDGE_" }

[clusters.k8s]
api_url = "https://k8s:8006"
[clusters.k8s.credentials]
source = "vault"
url = "https://vault.example:8200"
path = "pvemcp/k8s"
[clusters.k8s.credentials.auth]
method = "kubernetes"
role = "pvemcp"
"""
    )
    settings = load_settings(path)
    clusters = settings.all_clusters()
    prod = clusters["prod"].credentials
    assert isinstance(prod, VaultCredentials) and isinstance(prod.auth, VaultAppRoleAuth)
    assert prod.auth.secret_id_wrapped
    assert isinstance(clusters["lab"].credentials, FileCredentials)
    assert isinstance(clusters["edge"].credentials, EnvCredentials)
    k8s = clusters["k8s"].credentials
    assert isinstance(k8s, VaultCredentials) and isinstance(k8s.auth, VaultKubernetesAuth)

    path.write_text('[clusters.x]\napi_url = "https://x:8006"\ncredentials = { source = "s3" }')
    with pytest.raises(ConfigError, match="credentials"):
        load_settings(path)


def test_one_cluster_env_shortcut_with_a_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVEMCP_API_URL", API)
    monkeypatch.setenv("PVEMCP_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("PVEMCP_TOKEN_SECRET", SECRET)
    # Without a source: today's behaviour, the inline token.
    cluster = load_settings().all_clusters()["default"]
    assert cluster.credentials == InlineCredentials()
    assert cluster.token_secret is not None
    # With one: the secret is the source's business, token_id stays the default.
    monkeypatch.setenv("PVEMCP_CREDENTIALS__SOURCE", "file")
    monkeypatch.setenv("PVEMCP_CREDENTIALS__PATH", "/etc/pvemcp/creds.toml")
    cluster = load_settings().all_clusters()["default"]
    assert isinstance(cluster.credentials, FileCredentials)
    assert cluster.token_secret is None and cluster.token_id == TOKEN_ID
    monkeypatch.delenv("PVEMCP_API_URL")
    with pytest.raises(ConfigError, match="needs api_url"):
        load_settings()
