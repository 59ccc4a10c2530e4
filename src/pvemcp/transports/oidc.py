"""Bearer JWT access tokens from the organisation's OpenID provider (RFC 9068, RFC 8725).

The checks run in the order of docs/security-requirements §3: the header first (type,
forbidden key-carrying parameters, an algorithm from our allowlist), then the key by `kid`
from the provider's JWKS, the signature, and only then the claims (`iss` exact, `aud`
containing our audience, times with a bounded leeway, the identity claims). Nothing in the
token chooses how it is verified: the algorithm list, the key set and the issuer are ours.

A rejected token yields `None` (the SDK answers 401) and one short, stable reason code for
metrics and audit; the token itself is never logged, only its SHA-256.

A client presents the same token on every call of a session, so a token that passed is
remembered for a short while (`TOKEN_CACHE_SECONDS`, never past `exp`): a repeat skips the
signature check but still has its times checked and its key looked up in the JWKS cache.
Failures are never remembered: every bad token is checked, and reported, every time.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry
from mcp.server.auth.provider import AccessToken

from pvemcp.config import ConfigError, OidcConfig
from pvemcp.transports.claims import token_sha256
from pvemcp.transports.jwks import JwksCache, JwksUnavailable

log = structlog.get_logger(__name__)

# on_failure(reason, token_sha256): called once per rejected token, for metrics and audit.
FailureHook = Callable[[str, str | None], None]

# Longer than any sane access token (and than most proxies' header limits); a cap before
# any decoding keeps garbage cheap to refuse.
MAX_TOKEN_CHARS = 16 * 1024
# Asymmetric only, whatever the configuration type allows: an HMAC algorithm here would let
# anyone holding the public key sign tokens (CVE-2024-33663 and relatives).
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "PS256", "ES256", "EdDSA"})
# Header parameters that point at or carry keys, or change how the signature is read: a
# verifier that honoured them would let the token choose its own key.
FORBIDDEN_HEADERS = ("crit", "jku", "x5u", "jwk", "b64")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# How long a verified token is taken on trust before its signature is checked again. `exp`
# always still applies (a cached token never outlives it) and revocation is not checked
# for JWTs anyway, so this only bounds what a cache could hide: a key that leaves the JWKS
# also ends its tokens' cache entries (see `_Verified.key`), and this caps the rest, such
# as a configuration or clock anomaly, at one minute. Short enough to be harmless, long
# enough that a busy session pays for one signature check a minute, not one a call.
TOKEN_CACHE_SECONDS = 60.0
# At most this many verified tokens are remembered (the oldest goes first): many distinct
# tokens, honest or not, must not grow the gateway's memory. Far more than the sessions one
# gateway serves within `TOKEN_CACHE_SECONDS`.
TOKEN_CACHE_ENTRIES = 1024
_TIME_CLAIMS = ("exp", "nbf", "iat")


class TokenRejected(Exception):
    """A token failed one check; `reason` is the stable code reported to `on_failure`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def report_failure(hook: FailureHook | None, reason: str, token: str) -> None:
    """Tell the HTTP layer (metrics, audit) why a token was refused, by hash only.

    A failing hook is logged, never raised: a metrics bug must not turn a 401 into a 500.
    """
    digest = token_sha256(token)
    log.debug("bearer token rejected", reason=reason, token_sha256=digest)
    if hook is None:
        return
    try:
        hook(reason, digest)
    except Exception as exc:  # the hook is someone else's code
        log.warning("auth failure hook failed", error=type(exc).__name__)


def _normalise_typ(value: str) -> str:
    """RFC 7515 §4.1.9: `typ` is case-insensitive and `application/` may be omitted."""
    lowered = value.strip().lower()
    return lowered.removeprefix("application/")


def _b64_json(segment: str) -> Any:
    if not _SEGMENT_RE.match(segment):
        raise TokenRejected("malformed")
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise TokenRejected("malformed") from None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(f"invalid_claim:{name}")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TokenRejected(f"invalid_claim:{name}")
    return value


def _scopes(claims: Mapping[str, Any]) -> list[str] | None:
    """`scope` (RFC 9068: space-separated) or `scp` (Okta: a list; Entra: a string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return list(dict.fromkeys(value.split()))
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(dict.fromkeys(value))
        raise TokenRejected(f"invalid_claim:{name}")
    return None


def _registry(alg: str) -> JWSRegistry:
    """A joserfc registry that verifies exactly one algorithm, ours.

    The header was vetted before this is used, so joserfc need not know every parameter a
    provider may add (its strict mode refuses private ones), and a header may carry an
    `x5c` chain (its 512-byte default would refuse those).
    """
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    registry.max_header_length = 8192
    return registry


def _looks_like_id_token(claims: Mapping[str, Any]) -> bool:
    """A plain `JWT` may be an ID token replayed as an access token: those carry `nonce` or
    `at_hash` (Keycloak also says `typ: ID`), and no scope (checked later)."""
    return "nonce" in claims or "at_hash" in claims or claims.get("typ") == "ID"


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check, as remembered by `OidcVerifier`.

    `times` are its signed `exp`/`nbf`/`iat`, checked again on every use; `key` is the
    JWKS key object (by identity) that verified it and `kid` how it was found, so a key
    dropped or replaced by a JWKS refresh sends the token back through the full check;
    `deadline` (wall clock) is when the signature must be checked again, never after `exp`.
    """

    access: AccessToken
    times: Mapping[str, Any]
    key: Key
    kid: str | None
    deadline: float


class OidcVerifier:
    """The SDK `TokenVerifier` for JWT access tokens from one OpenID provider.

    `audience` is what `aud` must contain (`oidc.audience`, default our resource URI);
    `resource` is our resource URI, reported as `AccessToken.resource` so the SDK's own
    resource check passes even when the provider puts a client id in `aud`.
    """

    def __init__(
        self,
        config: OidcConfig,
        *,
        resource: str,
        jwks: JwksCache,
        on_failure: FailureHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.issuer is None:
            raise ConfigError('http.oidc.issuer is required with auth = "oidc"')
        algorithms: set[str] = set(config.algorithms)
        if not algorithms or not algorithms <= ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                f"http.oidc.algorithms must be a non-empty subset of "
                f"{sorted(ASYMMETRIC_ALGORITHMS)}"
            )
        self.jwks = jwks
        self._issuer = config.issuer
        self._audience = config.audience or resource
        self._resource = resource
        self._algorithms = frozenset(algorithms)
        self._registries = {alg: _registry(alg) for alg in algorithms}
        self._accepted_typ = frozenset(_normalise_typ(typ) for typ in config.accepted_typ)
        self._leeway = float(config.leeway)
        self._on_failure = on_failure
        self._clock = clock
        # Successful verifications only, by exact token, oldest first (see `_remember`).
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The caller's identity if `token` passes every check, else `None` (→ 401).

        The returned `AccessToken` may be shared by every call that presents the same
        token within `TOKEN_CACHE_SECONDS`: callers treat it as read-only.
        """
        token = token.strip()
        try:
            access = await self._recall(token)
            if access is not None:
                return access
            verified = await self._verify(token)
            self._remember(token, verified)
            return verified.access
        except TokenRejected as exc:
            reason = exc.reason
        except JwksUnavailable:
            reason = "jwks_unavailable"
        except Exception as exc:  # libraries raise odd types; a bad token is never a 500
            log.warning("bearer token check failed unexpectedly", error=type(exc).__name__)
            reason = "verifier_error"
        report_failure(self._on_failure, reason, token)
        return None

    async def _recall(self, token: str) -> AccessToken | None:
        """The cached identity for `token` if it may still be trusted without a signature
        check, else `None` (not cached, or due for a full check: the entry is dropped).

        The times are checked first, so an expired token is refused (`expired`) through the
        same path as a fresh one. The key lookup (a scan of a few cached keys while the JWKS
        is fresh) keeps "a key removed from the JWKS stops verifying" as true as it is
        without a cache.
        """
        entry = self._verified.get(token)
        if entry is None:
            return None
        try:
            self._check_times(entry.times)
            current = self._clock() < entry.deadline and any(
                key is entry.key for key in await self.jwks.keys_for(entry.kid)
            )
        except Exception:
            self._drop(token, entry)
            raise
        if not current:
            self._drop(token, entry)
            return None
        return entry.access

    def _drop(self, token: str, entry: _Verified) -> None:
        """Forget `entry`, unless a concurrent check has already replaced it."""
        if self._verified.get(token) is entry:
            del self._verified[token]

    def _remember(self, token: str, verified: _Verified) -> None:
        """Cache a success, evicting the oldest entries beyond `TOKEN_CACHE_ENTRIES`."""
        self._verified.pop(token, None)
        self._verified[token] = verified
        while len(self._verified) > TOKEN_CACHE_ENTRIES:
            self._verified.popitem(last=False)

    async def _verify(self, token: str) -> _Verified:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("malformed")
        segments = token.split(".")
        if len(segments) != 3:
            raise TokenRejected("malformed")
        header = _b64_json(segments[0])
        if not isinstance(header, dict):
            raise TokenRejected("malformed")
        alg, kid, is_at_jwt = self._check_header(header)
        key = await self._key(alg, kid)
        claims = self._signed_claims(token, key, alg)
        access = self._check_claims(claims, is_at_jwt=is_at_jwt, token=token)
        times = {name: claims[name] for name in _TIME_CLAIMS if name in claims}
        expires = _number(times, "exp")
        assert expires is not None  # `_check_claims` refuses a token without one
        deadline = min(self._clock() + TOKEN_CACHE_SECONDS, expires)
        return _Verified(access=access, times=times, key=key, kid=kid, deadline=deadline)

    def _check_header(self, header: Mapping[str, Any]) -> tuple[str, str | None, bool]:
        """(alg, kid, typ is at+jwt) if the header is acceptable before any key is touched."""
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise TokenRejected(f"forbidden_header:{name}")
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) not in self._accepted_typ:
            raise TokenRejected("bad_typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise TokenRejected("alg_not_allowed")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > 256):
            raise TokenRejected("malformed")
        return alg, kid, _normalise_typ(typ) == "at+jwt"

    async def _key(self, alg: str, kid: str | None) -> Key:
        """The one JWKS key for `kid` that may verify `alg` (its kty, curve, alg and use fit)."""
        candidates = await self.jwks.keys_for(kid)
        if not candidates:
            raise TokenRejected("unknown_kid")
        model = JWSRegistry.algorithms[alg]
        fitting: list[Key] = []
        for key in candidates:
            key_ops = key.get("key_ops")
            if key.get("use") not in (None, "sig") or key.alg not in (None, alg):
                continue
            if key_ops is not None and "verify" not in key_ops:
                continue
            try:
                model.check_key(key)
            except JoseError:
                continue
            fitting.append(key)
        if kid is None and len(fitting) != 1:
            # Without a kid only an unambiguous set will do: trying keys in turn would let
            # the token pick among them.
            raise TokenRejected("missing_kid")
        if not fitting:
            raise TokenRejected("key_mismatch")
        return fitting[0]

    def _signed_claims(self, token: str, key: Key, alg: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, key, algorithms=[alg], registry=self._registries[alg])
        except BadSignatureError:
            raise TokenRejected("bad_signature") from None
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("malformed") from None
        return dict(decoded.claims)

    def _check_claims(self, claims: dict[str, Any], *, is_at_jwt: bool, token: str) -> AccessToken:
        """The identity in signed `claims`, once issuer, audience, times and required claims
        hold; `is_at_jwt` is false for a plain `JWT`, which must not look like an ID token."""
        issuer = _string(claims, "iss")
        if issuer is None:
            raise TokenRejected("missing_claim:iss")
        if issuer != self._issuer:  # exact string equality: no prefix, no normalisation
            raise TokenRejected("wrong_issuer")
        self._check_audience(claims)
        expires = self._check_times(claims)
        if not is_at_jwt and _looks_like_id_token(claims):
            raise TokenRejected("id_token")
        subject = _string(claims, "sub")
        if subject is None:
            raise TokenRejected("missing_claim:sub")
        client_id = _string(claims, "client_id") or _string(claims, "azp")
        if client_id is None:
            raise TokenRejected("missing_claim:client_id")
        scopes = _scopes(claims)
        if scopes is None and not is_at_jwt:
            raise TokenRejected("id_token")
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scopes or [],
            expires_at=int(expires),
            resource=self._resource,
            subject=subject,
            claims=claims,
        )

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        audience = claims.get("aud")
        if audience is None:
            raise TokenRejected("missing_claim:aud")
        if isinstance(audience, str):
            audience = [audience]
        if not isinstance(audience, list) or not all(isinstance(a, str) for a in audience):
            raise TokenRejected("invalid_claim:aud")
        if self._audience not in audience:
            raise TokenRejected("wrong_audience")

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """`exp` once `exp`, `nbf` and `iat` hold at the current time give or take the leeway."""
        now = self._clock()
        expires = _number(claims, "exp")
        if expires is None:
            raise TokenRejected("missing_claim:exp")
        if now >= expires + self._leeway:
            raise TokenRejected("expired")
        not_before = _number(claims, "nbf")
        if not_before is not None and now + self._leeway < not_before:
            raise TokenRejected("not_yet_valid")
        issued = _number(claims, "iat")
        if issued is None:
            raise TokenRejected("missing_claim:iat")
        if issued > now + self._leeway:
            raise TokenRejected("issued_in_future")
        return expires
