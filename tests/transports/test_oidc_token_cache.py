"""The cache of successful bearer-token verifications: a repeat skips the signature check,
but never outlives `exp`, `TOKEN_CACHE_SECONDS` or the key that signed it, never remembers
a failure, and never grows past `TOKEN_CACHE_ENTRIES`."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc import jwt

from pvemcp.transports import oidc
from pvemcp.transports.claims import token_sha256
from pvemcp.transports.oidc import TOKEN_CACHE_SECONDS
from tests.support.oidc import TestIssuer
from tests.transports.test_auth_oidc import (
    LEEWAY,
    Harness,
    flip_signature,
    issuer,  # noqa: F401  (a fixture: these two and the `keys` it needs)
    issuer_server,  # noqa: F401
    keys,  # noqa: F401
    make_harness,
)

pytestmark = pytest.mark.anyio


class Decodes:
    """Counts signature checks: every `jwt.decode` call, delegated to the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._real = jwt.decode
        monkeypatch.setattr(jwt, "decode", self)  # the module oidc.py calls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real(*args, **kwargs)


@pytest.fixture
def h(issuer: TestIssuer) -> Harness:  # noqa: F811  (the imported fixture)
    return make_harness(issuer)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    return Decodes(monkeypatch)


async def test_a_repeat_skips_the_signature_check(h: Harness, decodes: Decodes) -> None:
    token = h.token()
    first = await h.verifier.verify_token(token)
    assert first is not None and decodes.calls == 1
    for _ in range(3):
        again = await h.verifier.verify_token(f"  {token}\n")  # the same token once stripped
        assert again == first
    assert decodes.calls == 1
    assert h.failures == []


async def test_a_cached_token_past_exp_is_refused_as_expired(h: Harness, decodes: Decodes) -> None:
    token = h.token(exp=int(h.clock.now) + 600)
    assert await h.verifier.verify_token(token) is not None
    h.clock.advance(30)  # a hit, so the refusal below comes from the cache entry's times
    assert await h.verifier.verify_token(token) is not None
    assert decodes.calls == 1
    h.clock.advance(600 - 30 + LEEWAY)
    assert await h.reason(token) == "expired"
    assert h.failures == [("expired", token_sha256(token))]
    assert await h.reason(token) == "expired"  # and reported every time after
    assert len(h.failures) == 2


async def test_a_cached_token_is_never_trusted_past_exp(h: Harness, decodes: Decodes) -> None:
    """Within the leeway after `exp` a token still passes, but by a full check each time."""
    token = h.token(exp=int(h.clock.now) + 10)
    assert await h.verifier.verify_token(token) is not None
    h.clock.advance(10 + LEEWAY - 1)
    assert await h.verifier.verify_token(token) is not None
    assert await h.verifier.verify_token(token) is not None
    assert decodes.calls == 3
    h.clock.advance(1)
    assert await h.reason(token) == "expired"


async def test_the_signature_is_checked_again_after_the_cache_period(
    h: Harness, decodes: Decodes
) -> None:
    token = h.token(exp=int(h.clock.now) + 10 * int(TOKEN_CACHE_SECONDS))
    assert await h.verifier.verify_token(token) is not None
    h.clock.advance(TOKEN_CACHE_SECONDS - 1)
    assert await h.verifier.verify_token(token) is not None
    assert decodes.calls == 1
    h.clock.advance(1)
    assert await h.verifier.verify_token(token) is not None
    assert decodes.calls == 2
    assert await h.verifier.verify_token(token) is not None  # and cached afresh
    assert decodes.calls == 2


async def test_failures_are_never_cached(h: Harness, decodes: Decodes) -> None:
    bad = flip_signature(h.token())
    assert await h.reason(bad) == "bad_signature"
    assert await h.reason(bad) == "bad_signature"
    assert decodes.calls == 2
    assert [reason for reason, _ in h.failures] == ["bad_signature", "bad_signature"]


async def test_a_key_gone_from_the_jwks_ends_its_cached_tokens(h: Harness) -> None:
    ec = h.issuer.keys[1]
    token = h.token()
    assert await h.verifier.verify_token(token) is not None
    h.issuer.reset([ec])  # the provider retires the RSA key
    h.clock.mono += 10_000  # the JWKS cache refetches; the token is still fresh on the wall
    assert await h.reason(token) == "unknown_kid"


async def test_the_cache_is_bounded_and_evicts_the_oldest(
    h: Harness, decodes: Decodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "TOKEN_CACHE_ENTRIES", 3)
    tokens = [h.token(jti=f"j{index}") for index in range(5)]
    for token in tokens:
        assert await h.verifier.verify_token(token) is not None
        assert len(h.verifier._verified) <= 3
    assert decodes.calls == 5
    for token in reversed(tokens[2:]):  # the newest three are still cached
        assert await h.verifier.verify_token(token) is not None
    assert decodes.calls == 5
    for expected, token in enumerate(tokens[:2], start=6):  # the oldest two were evicted
        assert await h.verifier.verify_token(token) is not None
        assert decodes.calls == expected
    assert len(h.verifier._verified) == 3
    assert h.failures == []
