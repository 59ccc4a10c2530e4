"""`pvemcp secrets check`: source and status per cluster, never a value."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from pvemcp.config import load_settings
from pvemcp.secrets.commands import check

from .baoserver import ROOT_TOKEN, Bao
from .conftest import TOKEN_ID, put, unique, write_private

SECRET = "9d9d9d9d-1234-4abc-9def-0123456789ab"
FILE_SECRET = "8e8e8e8e-1234-4abc-9def-0123456789ab"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "ZmFrZSBrZXkgYm9keSBmb3IgdGVzdHM=\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PVEMCP_"):
            monkeypatch.delenv(key)


def test_check_reports_each_cluster(
    bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unique("pvemcp/check-")
    put(
        bao,
        path,
        token_id=TOKEN_ID,
        token_secret=SECRET,
        ssh_user="pvemcp",
        ssh_private_key=KEY,
        ssh_host_keys='{"pve1": ["pve1 ssh-ed25519 AAAA"]}',
    )
    monkeypatch.setenv("CHECK_VAULT_TOKEN", ROOT_TOKEN)
    good_file = write_private(
        tmp_path / "good.toml", f'token_id = "{TOKEN_ID}"\ntoken_secret = "{FILE_SECRET}"'
    )
    loose = write_private(tmp_path / "loose.toml", f'token_secret = "{FILE_SECRET}"', 0o644)
    config = tmp_path / "pvemcp.toml"
    config.write_text(
        f"""
[clusters.a-vault]
api_url = "https://a:8006"
[clusters.a-vault.credentials]
source = "vault"
url = "{bao.url}"
path = "{path}"
auth = {{ method = "token", token_env = "CHECK_VAULT_TOKEN" }}
[clusters.b-file]
api_url = "https://b:8006"
credentials = {{ source = "file", path = "{good_file}" }}
[clusters.c-loose]
api_url = "https://c:8006"
credentials = {{ source = "file", path = "{loose}" }}
[clusters.d-env]
api_url = "https://d:8006"
credentials = {{ source = "env", prefix = "CHECK_D_" }}
[clusters.e-inline]
api_url = "https://e:8006"
token_id = "{TOKEN_ID}"
token_secret = "{SECRET}"
"""
    )
    out = io.StringIO()
    assert check(load_settings(config), out=out) == 1
    text = out.getvalue()
    assert SECRET not in text and FILE_SECRET not in text and "ZmFrZSBr" not in text
    assert ROOT_TOKEN not in text.replace("CHECK_VAULT_TOKEN", "")
    blocks = {b.split(":", 1)[0]: b for b in re.split(r"^cluster ", text, flags=re.M)[1:]}
    assert f"vault {bao.url} secret/{path}" in blocks["a-vault"]
    assert f"api token: OK ({TOKEN_ID}, secret loaded, version 1)" in blocks["a-vault"]
    assert "ssh: OK (user pvemcp, private key loaded, host keys pve1: 1)" in blocks["a-vault"]
    assert "api token: OK" in blocks["b-file"] and "ssh: not configured" in blocks["b-file"]
    assert f"FAILED: credentials file {loose}" in blocks["c-loose"]
    assert f"chmod 600 {loose}" in blocks["c-loose"]
    assert "FAILED: env: variable CHECK_D_TOKEN_SECRET is not set" in blocks["d-env"]
    assert "inline settings" in blocks["e-inline"] and "api token: OK" in blocks["e-inline"]
    assert text.rstrip().endswith("3 of 5 cluster(s) OK")


def test_check_without_clusters() -> None:
    out = io.StringIO()
    assert check(load_settings(), out=out) == 1  # nothing to check is not a pass
    assert "no cluster is configured" in out.getvalue()
