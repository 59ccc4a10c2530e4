"""Settings from env and TOML, their errors, `config show`, and the generated reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvemcp.cli import main
from pvemcp.config import ConfigError, TlsMode, load_settings
from pvemcp.configdoc import render

ROOT = Path(__file__).resolve().parents[1]
SECRET = "5f1a8f8e-1111-2222-3333-444455556666"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PVEMCP_"):
            monkeypatch.delenv(key)


def test_no_cluster_is_refused_unless_simulated() -> None:
    settings = load_settings()
    assert settings.uses_simulator()
    assert settings.audit.enabled
    with pytest.raises(ConfigError, match="PVEMCP_API_URL is not set"):
        settings.require_cluster()


def test_env_describes_the_default_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVEMCP_API_URL", "https://pve1.example:8006/api2/json/")
    monkeypatch.setenv("PVEMCP_TOKEN_ID", "pvemcp@pve!gw")
    monkeypatch.setenv("PVEMCP_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("PVEMCP_TLS", "fingerprint")
    monkeypatch.setenv("PVEMCP_FINGERPRINT", ":".join(["AB"] * 32))
    cluster = load_settings().all_clusters()["default"]
    assert cluster.api_url == "https://pve1.example:8006"
    assert cluster.tls is TlsMode.FINGERPRINT
    assert cluster.fingerprint == "ab" * 32
    assert cluster.token_secret is not None
    assert cluster.token_secret.get_secret_value() == SECRET


def test_toml_clusters_with_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pvemcp.toml"
    path.write_text(
        """
default_cluster = "lab"
[clusters.lab]
api_url = "https://lab:8006"
tls = "insecure"
[clusters.prod]
api_url = "https://prod:8006"
token_id = "pvemcp@pve!gw"
token_secret = "from-file-secret"
[audit]
path = "/tmp/x.jsonl"
"""
    )
    monkeypatch.setenv("PVEMCP_CLUSTERS__PROD__TOKEN_SECRET", SECRET)
    monkeypatch.setenv("PVEMCP_LOG_LEVEL", "DEBUG")
    settings = load_settings(path)
    assert sorted(settings.all_clusters()) == ["lab", "prod"]
    assert settings.default_cluster == "lab"
    assert settings.log_level == "DEBUG"
    assert settings.audit.path == Path("/tmp/x.jsonl")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[clusters.a]\napi_url = "ftp://x"', "clusters.a.api_url"),
        ('[clusters.a]\napi_url = "https://x"\ntoken_id = "bad"\ntoken_secret = "s"', "token_id"),
        ('[clusters.a]\napi_url = "https://x"\ntls = "fingerprint"', "needs fingerprint"),
        ('[clusters.a]\napi_url = "https://x"\ncolour = "red"', "clusters.a.colour"),
        ('[clusters.Bad]\napi_url = "https://x"', "clusters.Bad"),
        ('default_cluster = "zzz"\n[clusters.a]\napi_url = "https://x"', "default_cluster"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_config_names_the_setting(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected in str(info.value)


def test_errors_never_echo_secret_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[clusters.a]\napi_url = "https://x"\ntoken_secret = "{SECRET}"')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "token_id and token_secret go together" in str(info.value)
    assert SECRET not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_config_show_has_every_section_and_redacts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, hmac_key = "static-key-0123456789", "hmac-key-0123456789"
    monkeypatch.setenv("PVEMCP_API_URL", "https://pve1:8006")
    monkeypatch.setenv("PVEMCP_TOKEN_ID", "pvemcp@pve!gw")
    monkeypatch.setenv("PVEMCP_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("PVEMCP_HTTP__STATIC_KEYS__ME", key)
    monkeypatch.setenv("PVEMCP_HTTP__PORT", "9090")
    monkeypatch.setenv("PVEMCP_AUDIT__HMAC_KEY", hmac_key)
    monkeypatch.setenv("PVEMCP_POLICY__PROFILE", "admin")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and key not in out and hmac_key not in out
    shown = json.loads(out)
    assert shown["clusters"]["default"]["token_secret"] == "[REDACTED]"
    assert shown["clusters"]["default"]["tls"] == "system"
    assert shown["http"]["port"] == 9090
    assert shown["http"]["static_keys"] == {"me": "[REDACTED]"}
    assert shown["audit"]["hmac_key"] == "[REDACTED]"
    assert shown["policy"]["profile"] == "admin"
    assert shown["policy"]["profile_subjects"] == ["local"]


def test_bad_env_is_a_clean_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PVEMCP_TLS", "sometimes")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "tls" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"PVEMCP_TOKEN_ID": "pvemcp@pve!gw"},
            "PVEMCP_TOKEN_ID and PVEMCP_TOKEN_SECRET go together",
        ),
        ({"PVEMCP_TOKEN_SECRET": SECRET}, "PVEMCP_TOKEN_ID and PVEMCP_TOKEN_SECRET go together"),
        ({"PVEMCP_TOKEN_ID": "gw", "PVEMCP_TOKEN_SECRET": SECRET}, "PVEMCP_TOKEN_ID: must look"),
        ({"PVEMCP_TLS": "fingerprint"}, "PVEMCP_TLS = 'fingerprint' needs PVEMCP_FINGERPRINT"),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["secrets", "check"], ["config", "show"]])
def test_a_bad_one_cluster_env_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
    command: list[str],
) -> None:
    """The `default` cluster from PVEMCP_API_URL and friends was validated only when first
    used, outside the error handling: a traceback instead of the setting's name."""
    monkeypatch.setenv("PVEMCP_API_URL", "https://pve1:8006")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pvemcp: invalid configuration (env): {expected}")
    assert err.count("\n") == 1 and SECRET not in err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PVEMCP_HTTP__STATIC_KEYS", "change-me-0123456789"),
        ("PVEMCP_POLICY__PROFILE_SUBJECTS", "local"),
        ("PVEMCP_HTTP", "{port = 1}"),
    ],
)
def test_env_that_is_not_json_where_json_is_needed_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["demo", "--mode", "http"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pvemcp: invalid configuration (env): {name} is not valid JSON")
    assert err.count("\n") == 1 and value not in err


def test_configuration_reference_is_current() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), "docs/configuration.md is stale: run `pvemcp config docs`"


def test_example_config_in_deploy_is_valid() -> None:
    settings = load_settings(ROOT / "deploy" / "pvemcp.example.toml")
    assert sorted(settings.all_clusters()) == ["lab", "prod"]
    assert settings.all_clusters()["lab"].tls is TlsMode.FINGERPRINT


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[clusters.a]\napi_url = "http://pve1.example:8006"')
    with pytest.raises(ConfigError, match="cleartext"):
        load_settings(path)
    path.write_text('[clusters.a]\napi_url = "http://127.0.0.1:8006"')
    assert load_settings(path).all_clusters()["a"].api_url == "http://127.0.0.1:8006"


@pytest.mark.parametrize("named_by", ["PVEMCP_CONFIG", "--config"])
def test_env_completes_a_file_cluster_whichever_way_the_file_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    named_by: str,
) -> None:
    """The documented way of keeping a token secret out of the TOML: the file names the
    cluster, `PVEMCP_CLUSTERS__<NAME>__TOKEN_SECRET` adds the secret. The env variable must
    merge into the file's cluster, not be validated on its own as a cluster without a URL."""
    path = tmp_path / "pvemcp.toml"
    path.write_text('[clusters.prod]\napi_url = "https://pve1:8006"\ntoken_id = "pvemcp@pve!gw"\n')
    monkeypatch.setenv("PVEMCP_CLUSTERS__PROD__TOKEN_SECRET", SECRET)
    argv = ["config", "show"]
    if named_by == "PVEMCP_CONFIG":
        monkeypatch.setenv("PVEMCP_CONFIG", str(path))
    else:
        argv += ["--config", str(path)]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["clusters"]["prod"]["api_url"] == "https://pve1:8006"
    assert shown["clusters"]["prod"]["token_secret"] == "[REDACTED]"
    settings = load_settings(path if named_by == "--config" else None)
    secret = settings.all_clusters()["prod"].token_secret
    assert secret is not None and secret.get_secret_value() == SECRET
