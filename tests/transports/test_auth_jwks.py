"""The JWKS cache: rotation with one fetch, no fetch storms, last good keys through an outage,
and a provider that answers badly (500, huge, slow, not JSON, redirects elsewhere)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from joserfc.jwk import Key

from pvemcp.config import ConfigError, OidcConfig
from pvemcp.transports.jwks import JwksCache
from pvemcp.transports.oidc import OidcVerifier
from tests.support.oidc import FakeClock, TestIssuer, run_test_issuer, signing_key

pytestmark = pytest.mark.anyio

RESOURCE = "https://gw.example/mcp"
COOLDOWN = 30
TTL = 600


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"old": signing_key(), "new": signing_key(), "ec": signing_key("ES256")}


@pytest.fixture(scope="module")
def issuer_server() -> Iterator[TestIssuer]:
    with run_test_issuer() as issuer:
        yield issuer


@pytest.fixture
def issuer(issuer_server: TestIssuer, keys: dict[str, Key]) -> TestIssuer:
    issuer_server.reset([keys["old"]])
    return issuer_server


class Rig:
    """A verifier on a fake clock, with every failure reason recorded."""

    def __init__(self, issuer: TestIssuer, *, timeout: float = 5.0, **config: Any) -> None:
        self.issuer = issuer
        self.clock = FakeClock()
        self.config = OidcConfig(
            issuer=issuer.issuer, jwks_ttl=TTL, jwks_refresh_cooldown=COOLDOWN, **config
        )
        self.jwks = JwksCache(self.config, timeout=timeout, clock=self.clock.monotonic)
        self.failures: list[str] = []
        self.verifier = OidcVerifier(
            self.config,
            resource=RESOURCE,
            jwks=self.jwks,
            on_failure=lambda reason, _digest: self.failures.append(reason),
            clock=self.clock.wall,
        )

    def token(self, key: Key, header: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(self.clock.now)
        base = {"iss": self.issuer.issuer, "sub": "svc", "aud": RESOURCE, "client_id": "c"}
        return self.issuer.mint(
            {**base, "iat": now, "exp": now + 3600, "scope": "pvemcp", **claims},
            key=key,
            header=header,
        )

    async def accepts(self, token: str) -> bool:
        return await self.verifier.verify_token(token) is not None


@pytest.fixture
def rig(issuer: TestIssuer) -> Rig:
    return Rig(issuer)


async def test_rotation_new_kid_with_one_fetch_retired_key_gone_after_ttl(
    rig: Rig, keys: dict[str, Key]
) -> None:
    assert await rig.jwks.prefetch()
    old_token = rig.token(keys["old"])
    assert await rig.accepts(old_token)
    assert rig.issuer.jwks_fetches == 1

    rig.issuer.keys = [keys["new"], keys["old"]]  # the provider rotates
    rig.clock.advance(COOLDOWN + 1)
    new_token = rig.token(keys["new"])
    results: list[bool] = []

    async def attempt() -> None:
        results.append(await rig.accepts(new_token))

    rig.issuer.fault, rig.issuer.slow_seconds = "slow", 0.3
    async with anyio.create_task_group() as group:  # a burst of callers with the new kid,
        group.start_soon(attempt)
        await anyio.sleep(0.1)  # most of them arriving while the first one's fetch runs
        for _ in range(19):
            group.start_soon(attempt)
    rig.issuer.fault = "none"
    assert results == [True] * 20
    assert rig.issuer.jwks_fetches == 2

    rig.issuer.keys = [keys["new"]]  # and retires the old key
    assert await rig.accepts(old_token)  # still cached until the TTL runs out
    rig.clock.advance(TTL)
    assert not await rig.accepts(rig.token(keys["old"]))
    assert rig.failures == ["unknown_kid"]
    assert rig.issuer.jwks_fetches == 3


async def test_a_new_kid_within_the_cooldown_waits(rig: Rig, keys: dict[str, Key]) -> None:
    assert await rig.jwks.prefetch()
    rig.issuer.keys = [keys["new"], keys["old"]]
    assert not await rig.accepts(rig.token(keys["new"]))
    assert rig.failures == ["unknown_kid"]
    assert rig.issuer.jwks_fetches == 1


async def test_a_flood_of_random_kids_costs_at_most_one_fetch_per_cooldown(
    rig: Rig, keys: dict[str, Key]
) -> None:
    assert await rig.jwks.prefetch()
    rig.clock.advance(COOLDOWN + 1)
    template = rig.token(keys["old"])
    flood = [rig.token(keys["old"], header={"kid": uuid.uuid4().hex}) for _ in range(50)]
    results: list[bool] = []

    async def attempt(token: str) -> None:
        results.append(await rig.accepts(token))

    async with anyio.create_task_group() as group:
        for token in flood:
            group.start_soon(attempt, token)
    for token in flood:  # and once more, one after the other
        results.append(await rig.accepts(token))
    assert results == [False] * 100
    assert set(rig.failures) == {"unknown_kid"}
    assert rig.issuer.jwks_fetches == 2  # the prefetch and one shared refetch
    assert await rig.accepts(template)  # real tokens still pass


async def test_cached_keys_keep_working_while_the_provider_is_down(keys: dict[str, Key]) -> None:
    with run_test_issuer() as issuer:
        issuer.reset([keys["old"]])
        rig = Rig(issuer)
        assert await rig.jwks.prefetch()
    rig.clock.advance(TTL + COOLDOWN)  # expired, and the refresh fails
    assert await rig.accepts(rig.token(keys["old"]))
    status = rig.jwks.status
    assert status.ready and status.stale and status.key_count == 1
    assert status.last_error is not None and "failed" in status.last_error
    rig.clock.advance(24 * 3600)  # past the hard stale limit
    assert not await rig.accepts(rig.token(keys["old"]))
    assert rig.failures == ["jwks_unavailable"]
    assert not rig.jwks.status.ready


async def test_a_dead_jwks_at_start_is_not_fatal(rig: Rig, keys: dict[str, Key]) -> None:
    rig.issuer.fault = "error"
    assert not await rig.jwks.prefetch()
    assert rig.jwks.status.ready is False
    assert rig.jwks.status.last_error is not None and "HTTP 500" in rig.jwks.status.last_error
    token = rig.token(keys["old"])
    assert not await rig.accepts(token)  # within the cooldown: no new fetch, refused
    assert rig.failures == ["jwks_unavailable"]
    assert rig.issuer.jwks_fetches == 1
    rig.issuer.fault = "none"
    rig.clock.advance(COOLDOWN)
    assert await rig.accepts(token)
    assert rig.jwks.status.ready and rig.jwks.status.last_error is None


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("error", "HTTP 500"),
        ("huge", "larger than 65536 bytes"),
        ("huge_chunked", "larger than 65536 bytes"),
        ("not_json", "did not return JSON"),
        ("empty_set", "no usable signature key"),
        ("redirect_cross", "redirects to another host"),
    ],
)
async def test_bad_jwks_answers_are_refused(rig: Rig, fault: Any, message: str) -> None:
    rig.issuer.fault = fault
    assert not await rig.jwks.prefetch()
    assert message in (rig.jwks.status.last_error or "")


async def test_a_slow_jwks_times_out(issuer: TestIssuer) -> None:
    rig = Rig(issuer, timeout=0.3)
    issuer.fault = "slow"
    issuer.slow_seconds = 1.0
    started = time.monotonic()
    assert not await rig.jwks.prefetch()
    assert time.monotonic() - started < 0.9
    assert "did not answer within 0.3 s" in (rig.jwks.status.last_error or "")


async def test_a_same_host_redirect_is_followed(rig: Rig, keys: dict[str, Key]) -> None:
    rig.issuer.fault = "redirect_same"
    assert await rig.jwks.prefetch()
    assert rig.issuer.requests["/jwks-moved"] == 1
    assert await rig.accepts(rig.token(keys["old"]))


async def test_symmetric_encryption_and_weak_keys_are_never_loaded(
    rig: Rig, keys: dict[str, Key]
) -> None:
    weak = {"kty": "RSA", "kid": "weak", "n": "sXch", "e": "AQAB"}
    secret = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
    encryption = {**keys["new"].as_dict(private=False), "use": "enc"}
    rig.issuer.document = {"keys": [weak, secret, encryption, {"kty": "PQ"}, "junk"]}
    assert not await rig.jwks.prefetch()
    rig.issuer.document = {"keys": [weak, secret, keys["old"].as_dict(private=False)]}
    rig.clock.advance(COOLDOWN)
    assert await rig.jwks.prefetch()
    assert rig.jwks.status.key_count == 1


async def test_cache_control_max_age_shortens_the_ttl(rig: Rig, keys: dict[str, Key]) -> None:
    rig.issuer.cache_control = "public, max-age=60"
    assert await rig.jwks.prefetch()
    rig.clock.advance(59)
    assert await rig.accepts(rig.token(keys["old"]))
    assert rig.issuer.jwks_fetches == 1
    rig.clock.advance(2)
    assert await rig.accepts(rig.token(keys["old"]))
    assert rig.issuer.jwks_fetches == 2


async def test_no_store_still_fetches_at_most_once_per_cooldown(
    rig: Rig, keys: dict[str, Key]
) -> None:
    rig.issuer.cache_control = "no-store"
    token = rig.token(keys["old"])
    for _ in range(5):
        assert await rig.accepts(token)
    assert rig.issuer.jwks_fetches == 1
    rig.clock.advance(COOLDOWN)
    assert await rig.accepts(token)
    assert rig.issuer.jwks_fetches == 2


async def test_discovery_for_another_issuer_is_refused(rig: Rig) -> None:
    rig.issuer.metadata_issuer = rig.issuer.issuer + "/other"
    assert not await rig.jwks.prefetch()
    assert "another issuer" in (rig.jwks.status.last_error or "")
    assert rig.issuer.jwks_fetches == 0


async def test_an_explicit_jwks_url_skips_discovery(
    issuer: TestIssuer, keys: dict[str, Key]
) -> None:
    rig = Rig(issuer, jwks_url=issuer.jwks_url)
    assert await rig.accepts(rig.token(keys["old"]))
    assert issuer.requests["/.well-known/openid-configuration"] == 0


@pytest.mark.parametrize(
    "config",
    [
        {"issuer": "http://idp.example"},
        {"issuer": "https://idp.example", "jwks_url": "http://idp.example/jwks"},
        {"issuer": "https://user:pw@idp.example"},
        {"issuer": "ftp://idp.example"},
        {"jwks_url": None, "issuer": None},
    ],
)
def test_insecure_or_missing_urls_are_configuration_errors(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        JwksCache(OidcConfig(**config))


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        JwksCache(OidcConfig(issuer="https://idp.example", ca_file=tmp_path / "none.pem"))


def test_https_and_loopback_http_are_accepted() -> None:
    JwksCache(OidcConfig(issuer="https://idp.example/realms/x"))
    JwksCache(OidcConfig(issuer="http://localhost:8080", jwks_url="http://[::1]:9/jwks"))
