"""The bad-token corpus: every way a JWT access token can be wrong is refused, for the right
reason, and a good one yields the caller's identity (security-requirements §3)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from joserfc import jwt
from joserfc.jwk import JWKRegistry, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from pvemcp.config import OidcConfig
from pvemcp.transports.auth import groups_from_claims, token_sha256
from pvemcp.transports.jwks import JwksCache
from pvemcp.transports.oidc import OidcVerifier
from tests.support.oidc import (
    FakeClock,
    TestIssuer,
    b64url,
    b64url_json,
    run_test_issuer,
    signing_key,
)

pytestmark = pytest.mark.anyio

RESOURCE = "https://gw.example/mcp"
LEEWAY = 30


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"rsa": signing_key("RS256"), "ec": signing_key("ES256"), "rogue": signing_key()}


@pytest.fixture(scope="module")
def issuer_server() -> Iterator[TestIssuer]:
    with run_test_issuer() as issuer:
        yield issuer


@pytest.fixture
def issuer(issuer_server: TestIssuer, keys: dict[str, Key]) -> TestIssuer:
    issuer_server.reset([keys["rsa"], keys["ec"]])
    return issuer_server


@dataclass
class Harness:
    issuer: TestIssuer
    clock: FakeClock
    verifier: OidcVerifier
    failures: list[tuple[str, str | None]] = field(default_factory=list)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Good access-token claims, with `changes` applied (`None` removes a claim)."""
        now = int(self.clock.now)
        claims: dict[str, Any] = {
            "iss": self.issuer.issuer,
            "sub": "alice",
            "aud": RESOURCE,
            "client_id": "agent",
            "scope": "pvemcp pve.read",
            "iat": now,
            "exp": now + 300,
            "jti": "j1",
            "groups": ["ops", "dev"],
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, **changes: Any) -> str:
        return self.issuer.mint(self.claims(**changes))

    async def reason(self, token: str) -> str:
        """The failure reason for a token that must be refused."""
        before = len(self.failures)
        assert await self.verifier.verify_token(token) is None
        assert len(self.failures) == before + 1
        reason, digest = self.failures[-1]
        assert digest == token_sha256(token.strip())
        return reason


def make_harness(issuer: TestIssuer, **config: Any) -> Harness:
    clock = FakeClock()
    oidc = OidcConfig(issuer=issuer.issuer, leeway=LEEWAY, **config)
    failures: list[tuple[str, str | None]] = []
    verifier = OidcVerifier(
        oidc,
        resource=RESOURCE,
        jwks=JwksCache(oidc, clock=clock.monotonic),
        on_failure=lambda reason, digest: failures.append((reason, digest)),
        clock=clock.wall,
    )
    return Harness(issuer, clock, verifier, failures)


@pytest.fixture
def h(issuer: TestIssuer) -> Harness:
    return make_harness(issuer)


def sign_raw(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """Sign with joserfc without `mint`'s defaults, whatever algorithm the key is marked for."""
    unbound = JWKRegistry.import_key(
        {name: value for name, value in key.as_dict(private=True).items() if name != "alg"}
    )
    return jwt.encode(header, claims, unbound, algorithms=[header["alg"]], default_type=None)


def forge(h: Harness, **header: Any) -> str:
    """Signed by our RSA key with a header joserfc itself would refuse to produce."""
    full = {"alg": "RS256", "typ": "at+jwt", "kid": h.issuer.keys[0].kid, **header}
    signing_input = f"{b64url_json(full)}.{b64url_json(h.claims())}"
    signature = JWSRegistry.algorithms["RS256"].sign(signing_input.encode(), h.issuer.keys[0])
    return f"{signing_input}.{b64url(signature)}"


def rsa_key(h: Harness) -> RSAKey:
    key = h.issuer.keys[0]
    assert isinstance(key, RSAKey)
    return key


def hs256(h: Harness, secret: bytes) -> str:
    """HS256 "signed" with public key material: the classic algorithm-confusion attack."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": h.issuer.keys[0].kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(h.claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned(h: Harness, alg: str = "none") -> str:
    header = {"alg": alg, "typ": "at+jwt", "kid": h.issuer.keys[0].kid}
    return f"{b64url_json(header)}.{b64url_json(h.claims())}."


def with_payload(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url_json(claims)}.{signature}"


async def test_a_good_token_yields_the_callers_identity(h: Harness) -> None:
    token = h.token()
    access = await h.verifier.verify_token(token)
    assert access is not None
    assert access.token == token
    assert access.client_id == "agent"
    assert access.subject == "alice"
    assert access.scopes == ["pvemcp", "pve.read"]
    assert access.expires_at == int(h.clock.now) + 300
    assert access.resource == RESOURCE
    assert access.claims is not None and access.claims["iss"] == h.issuer.issuer
    assert groups_from_claims(access.claims, "groups") == {"ops", "dev"}
    assert h.failures == []


async def test_ec_keys_azp_and_scp_lists_are_understood(h: Harness, keys: dict[str, Key]) -> None:
    claims = h.claims(client_id=None, azp="cli", scope=None, scp=["pve.read", "pve.read"])
    access = await h.verifier.verify_token(h.issuer.mint(claims, key=keys["ec"]))
    assert access is not None
    assert (access.client_id, access.scopes) == ("cli", ["pve.read"])


async def test_an_array_audience_containing_ours_is_accepted(h: Harness) -> None:
    assert await h.verifier.verify_token(h.token(aud=["https://x.example", RESOURCE])) is not None


async def test_a_configured_audience_replaces_the_resource(issuer: TestIssuer) -> None:
    """Keycloak/Entra put a client id in `aud`; the SDK still sees our resource URI."""
    h = make_harness(issuer, audience="gateway-client")
    access = await h.verifier.verify_token(h.token(aud="gateway-client"))
    assert access is not None and access.resource == RESOURCE
    assert await h.reason(h.token()) == "wrong_audience"


async def test_typ_jwt_is_refused_by_default_and_id_tokens_always(issuer: TestIssuer) -> None:
    strict = make_harness(issuer)
    assert await strict.reason(issuer.mint(strict.claims(), header={"typ": "JWT"})) == "bad_typ"
    assert await strict.reason(issuer.mint(strict.claims(), header={"typ": None})) == "bad_typ"
    lenient = make_harness(issuer, accepted_typ=["at+jwt", "JWT"])
    plain = lenient.claims()
    assert await lenient.verifier.verify_token(issuer.mint(plain, header={"typ": "jwt"}))
    for id_token in (
        lenient.claims(nonce="n-0S6"),
        lenient.claims(at_hash="77QmUPtjPfzWtF2AnpK9RQ"),
        lenient.claims(typ="ID"),
        lenient.claims(scope=None),
    ):
        token = issuer.mint(id_token, header={"typ": "JWT"})
        assert await lenient.reason(token) == "id_token"


async def test_application_prefix_and_case_in_typ_are_equivalent(h: Harness) -> None:
    for typ in ("application/at+jwt", "AT+JWT"):
        assert await h.verifier.verify_token(h.issuer.mint(h.claims(), header={"typ": typ}))


TokenCase = Callable[[Harness], str]

CORPUS: dict[str, tuple[TokenCase, str]] = {
    # time
    "expired": (lambda h: h.token(exp=int(h.clock.now) - LEEWAY - 1), "expired"),
    "exp exactly at the leeway": (lambda h: h.token(exp=int(h.clock.now) - LEEWAY), "expired"),
    "not yet valid": (lambda h: h.token(nbf=int(h.clock.now) + LEEWAY + 1), "not_yet_valid"),
    "iat in the future": (
        lambda h: h.token(iat=int(h.clock.now) + LEEWAY + 1),
        "issued_in_future",
    ),
    "exp as a string": (lambda h: h.token(exp=str(int(h.clock.now) + 300)), "invalid_claim:exp"),
    "exp as a boolean": (lambda h: h.token(exp=True), "invalid_claim:exp"),
    # issuer
    "wrong issuer": (lambda h: h.token(iss="https://evil.example"), "wrong_issuer"),
    "issuer with a suffix": (lambda h: h.token(iss=h.issuer.issuer + ".evil"), "wrong_issuer"),
    "issuer with a slash": (lambda h: h.token(iss=h.issuer.issuer + "/"), "wrong_issuer"),
    "issuer prefix": (lambda h: h.token(iss=h.issuer.issuer[:-1]), "wrong_issuer"),
    "issuer in capitals": (lambda h: h.token(iss=h.issuer.issuer.upper()), "wrong_issuer"),
    "issuer as a list": (lambda h: h.token(iss=[h.issuer.issuer]), "invalid_claim:iss"),
    # audience
    "wrong audience": (lambda h: h.token(aud="https://other.example/mcp"), "wrong_audience"),
    "audience prefix": (lambda h: h.token(aud=RESOURCE + "x"), "wrong_audience"),
    "array without ours": (lambda h: h.token(aud=["a", "b"]), "wrong_audience"),
    "audience of numbers": (lambda h: h.token(aud=[1, 2]), "invalid_claim:aud"),
    # required claims
    "missing exp": (lambda h: h.token(exp=None), "missing_claim:exp"),
    "missing sub": (lambda h: h.token(sub=None), "missing_claim:sub"),
    "empty sub": (lambda h: h.token(sub=""), "invalid_claim:sub"),
    "missing iat": (lambda h: h.token(iat=None), "missing_claim:iat"),
    "missing iss": (lambda h: h.token(iss=None), "missing_claim:iss"),
    "missing aud": (lambda h: h.token(aud=None), "missing_claim:aud"),
    "missing client_id and azp": (lambda h: h.token(client_id=None), "missing_claim:client_id"),
    "scope as a number": (lambda h: h.token(scope=7), "invalid_claim:scope"),
    # algorithm
    "alg none": (unsigned, "alg_not_allowed"),
    "alg None": (lambda h: unsigned(h, "None"), "alg_not_allowed"),
    "HS256 with the public key PEM": (
        lambda h: hs256(h, rsa_key(h).as_pem(private=False)),
        "alg_not_allowed",
    ),
    "HS256 with the public key DER": (
        lambda h: hs256(h, rsa_key(h).as_der(private=False)),
        "alg_not_allowed",
    ),
    "HS256 with the public JWK": (
        lambda h: hs256(h, json.dumps(h.issuer.keys[0].as_dict(private=False)).encode()),
        "alg_not_allowed",
    ),
    "RS384 (not allowed)": (
        lambda h: sign_raw(
            {"alg": "RS384", "typ": "at+jwt", "kid": h.issuer.keys[0].kid},
            h.claims(),
            h.issuer.keys[0],
        ),
        "alg_not_allowed",
    ),
    "RS256 header on the EC key": (
        lambda h: hs_to_kid(h, h.issuer.keys[1].kid),
        "key_mismatch",
    ),
    # keys and signatures
    "unknown kid": (lambda h: h.issuer.mint(h.claims(), key=signing_key("ES256")), "unknown_kid"),
    "our kid, another key": (
        lambda h: sign_raw(
            {"alg": "RS256", "typ": "at+jwt", "kid": h.issuer.keys[0].kid},
            h.claims(),
            signing_key(),
        ),
        "bad_signature",
    ),
    "tampered payload": (
        lambda h: with_payload(h.token(), h.claims(sub="root", scope="pve.write")),
        "bad_signature",
    ),
    "tampered signature": (lambda h: flip_signature(h.token()), "bad_signature"),
    "signature removed": (lambda h: h.token().rsplit(".", 1)[0] + ".", "bad_signature"),
    # headers
    "crit": (lambda h: forge(h, crit=["urn:x"], **{"urn:x": 1}), "forbidden_header:crit"),
    "jku": (
        lambda h: h.issuer.mint(h.claims(), header={"jku": "https://evil.example/jwks"}),
        "forbidden_header:jku",
    ),
    "x5u": (
        lambda h: h.issuer.mint(h.claims(), header={"x5u": "https://evil.example/c.pem"}),
        "forbidden_header:x5u",
    ),
    "embedded jwk": (
        lambda h: h.issuer.mint(
            h.claims(), header={"jwk": h.issuer.keys[0].as_dict(private=False)}
        ),
        "forbidden_header:jwk",
    ),
    "unencoded payload": (
        lambda h: f"{b64url_json({'alg': 'RS256', 'typ': 'at+jwt', 'b64': False})}.x.y",
        "forbidden_header:b64",
    ),
    # garbage
    "empty": (lambda h: "", "malformed"),
    "one word": (lambda h: "hello", "malformed"),
    "two segments": (lambda h: "a.b", "malformed"),
    "five segments (JWE)": (lambda h: "a.b.c.d.e", "malformed"),
    "dots": (lambda h: "..", "malformed"),
    "not base64": (lambda h: "e$e.e$e.e$e", "malformed"),
    "header not JSON": (lambda h: f"{b64url(b'{nope')}.e30.", "malformed"),
    "header a list": (lambda h: f"{b64url_json([1])}.e30.", "malformed"),
    "payload not JSON": (lambda h: with_payload_raw(h.token(), b"[not json"), "bad_signature"),
    "non-ASCII": (lambda h: "ünïcödé.tökén.ẞ", "malformed"),
    "huge": (lambda h: "a" * 20_000 + "." + "b" * 20_000 + ".c", "malformed"),
    "kid not a string": (lambda h: forge(h, kid=7), "malformed"),
    "alg not a string": (lambda h: forge(h, alg=["RS256"]), "alg_not_allowed"),
    "typ not a string": (lambda h: forge(h, typ=["at+jwt"]), "bad_typ"),
}


def hs_to_kid(h: Harness, kid: str | None) -> str:
    """An RS256 token signed by our RSA key but naming the EC key's kid."""
    return sign_raw({"alg": "RS256", "typ": "at+jwt", "kid": kid}, h.claims(), h.issuer.keys[0])


def flip_signature(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    return f"{head}.{flipped}"


def with_payload_raw(token: str, payload: bytes) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url(payload)}.{signature}"


@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
async def test_bad_tokens_are_refused_for_the_right_reason(h: Harness, case: str) -> None:
    build, reason = CORPUS[case]
    assert await h.reason(build(h)) == reason


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        ("exp", -LEEWAY + 1, True),
        ("exp", -LEEWAY, False),
        ("nbf", LEEWAY, True),
        ("nbf", LEEWAY + 1, False),
        ("iat", LEEWAY, True),
        ("iat", LEEWAY + 1, False),
    ],
)
async def test_time_claims_at_the_leeway_boundary(
    h: Harness, claim: str, offset: int, accepted: bool
) -> None:
    token = h.token(**{claim: int(h.clock.now) + offset})
    assert (await h.verifier.verify_token(token) is not None) is accepted


async def test_no_kid_needs_exactly_one_fitting_key(h: Harness, keys: dict[str, Key]) -> None:
    """One RSA key (beside an EC one) is unambiguous for RS256; two are not."""
    no_kid = h.issuer.mint(h.claims(), header={"kid": None})
    assert await h.verifier.verify_token(no_kid)
    ambiguous = make_harness(h.issuer)
    h.issuer.reset([keys["rsa"], keys["rogue"]])
    assert await ambiguous.reason(no_kid) == "missing_kid"


async def test_a_key_marked_for_another_alg_or_use_is_not_used(
    h: Harness, keys: dict[str, Key]
) -> None:
    public = keys["rsa"].as_dict(private=False)
    h.issuer.document = {"keys": [{**public, "alg": "PS256"}]}
    assert await h.reason(h.token()) == "key_mismatch"
    fresh = make_harness(h.issuer)
    h.issuer.document = {"keys": [{**public, "key_ops": ["sign"]}]}
    assert await fresh.reason(fresh.token()) == "key_mismatch"


async def test_no_token_reaches_a_log(
    h: Harness, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [h.token(), h.token(exp=1), unsigned(h), flip_signature(h.token()), "garbage"]
    with structlog.testing.capture_logs() as events:
        for token in tokens:
            await h.verifier.verify_token(token)
    assert [event["reason"] for event in events if event["event"] == "bearer token rejected"] == [
        "expired",
        "alg_not_allowed",
        "bad_signature",
        "malformed",
    ]
    captured = capfd.readouterr()
    logged = " ".join([caplog.text, captured.out, captured.err, repr(events), repr(h.failures)])
    for token in tokens:
        assert token not in logged
        for part in token.split("."):
            if len(part) > 8:
                assert part not in logged


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
async def test_ps256_and_eddsa_keys_verify(h: Harness) -> None:
    ps256 = RSAKey.generate_key(2048, parameters={"alg": "PS256", "use": "sig"}, auto_kid=True)
    eddsa = OKPKey.generate_key("Ed25519", parameters={"alg": "EdDSA"}, auto_kid=True)
    h.issuer.reset([ps256, eddsa])
    for key in (ps256, eddsa):
        assert await h.verifier.verify_token(h.issuer.mint(h.claims(), key=key)), h.failures


async def test_a_failing_hook_does_not_turn_a_401_into_an_error(issuer: TestIssuer) -> None:
    def broken(reason: str, digest: str | None) -> None:
        raise RuntimeError("metrics are down")

    h = make_harness(issuer)
    verifier = OidcVerifier(
        OidcConfig(issuer=issuer.issuer), resource=RESOURCE, jwks=h.verifier.jwks, on_failure=broken
    )
    assert await verifier.verify_token("garbage") is None


async def test_private_header_parameters_and_certificate_chains_are_tolerated(h: Harness) -> None:
    header = {"x5c": ["MII" + "A" * 1500], "x5t#S256": "abc", "x-vendor": "1"}
    assert await h.verifier.verify_token(forge(h, **header)), h.failures
