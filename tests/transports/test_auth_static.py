"""`build_verifier` per auth mode, and shared static bearer keys."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from pvemcp.config import ConfigError, HttpConfig, OidcConfig
from pvemcp.transports.auth import (
    OidcVerifier,
    StaticKeyVerifier,
    build_verifier,
    groups_from_claims,
    token_sha256,
)

pytestmark = pytest.mark.anyio

RESOURCE = "http://127.0.0.1:8080/mcp"
KEYS = [SecretStr("first-key-0123456789"), SecretStr("second-key-9876543210")]


def static(failures: list[tuple[str, str | None]] | None = None, **changes: Any) -> Any:
    config = HttpConfig(auth="static", static_keys=KEYS, **changes)
    hook = None if failures is None else lambda r, d: failures.append((r, d))
    return build_verifier(config, resource=RESOURCE, on_failure=hook)


async def test_each_key_is_its_own_subject_and_never_the_key() -> None:
    verifier = static(oidc=OidcConfig(required_scopes=["pvemcp"]))
    assert isinstance(verifier, StaticKeyVerifier)
    access = await verifier.verify_token("second-key-9876543210")
    assert access is not None
    assert (access.subject, access.client_id, access.scopes) == ("static:1", "static", ["pvemcp"])
    assert access.resource == RESOURCE and access.expires_at is None
    first = await verifier.verify_token(" first-key-0123456789 ")
    assert first is not None and first.subject == "static:0"


@pytest.mark.parametrize(
    "token",
    ["", "first-key", "first-key-01234567890", "FIRST-KEY-0123456789", "second-key-9876543210x"],
)
async def test_anything_but_an_exact_key_is_refused(token: str) -> None:
    failures: list[tuple[str, str | None]] = []
    assert await static(failures).verify_token(token) is None
    assert failures == [("unknown_key", token_sha256(token))]


@pytest.mark.parametrize("keys", [[], [SecretStr("")]])
def test_static_without_usable_keys_is_refused_at_build(keys: list[SecretStr]) -> None:
    with pytest.raises(ConfigError, match="static_keys"):
        build_verifier(HttpConfig(auth="static", static_keys=keys), resource=RESOURCE)


def test_modes() -> None:
    assert build_verifier(HttpConfig(auth="none"), resource=RESOURCE) is None
    oidc = build_verifier(
        HttpConfig(auth="oidc", oidc=OidcConfig(issuer="https://idp.example")), resource=RESOURCE
    )
    assert isinstance(oidc, OidcVerifier)
    assert not oidc.jwks.status.ready  # nothing fetched at build time
    with pytest.raises(ConfigError, match="issuer"):
        build_verifier(HttpConfig(auth="oidc"), resource=RESOURCE)


def test_token_sha256_and_groups() -> None:
    assert token_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert groups_from_claims({"g": ["a", 1, "b"]}, "g") == {"a", "b"}
    assert groups_from_claims({"g": "admins"}, "g") == {"admins"}
    assert groups_from_claims({"g": {"a": 1}}, "g") == frozenset()
    assert groups_from_claims(None, "g") == frozenset()
