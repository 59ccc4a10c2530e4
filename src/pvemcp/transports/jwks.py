"""The OpenID provider's signing keys (JWKS), fetched carefully and cached.

Every bearer token is checked against these keys, so this cache decides both whether a
forged token can get in (only keys from the configured issuer's own metadata, over TLS)
and whether the gateway keeps working while the provider is down (last good keys stay in
use, up to a hard limit). An attacker who sends tokens with random `kid`s must not turn
the gateway into a fetch storm against the provider: every fetch, whatever its reason, is
spaced at least `jwks_refresh_cooldown` seconds from the previous one, and concurrent
callers share one fetch.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import structlog
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

from pvemcp.config import ConfigError, OidcConfig, is_loopback_host

log = structlog.get_logger(__name__)

FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 64 * 1024
# Keys stay usable this long after the last successful fetch while refreshes fail: long
# enough to ride out a provider outage, short enough that a key revoked during one dies.
MAX_STALE_SECONDS = 24 * 3600.0
MAX_REDIRECTS = 3
MIN_RSA_BITS = 2048
_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class JwksUnavailable(Exception):
    """No usable signing keys: never fetched successfully, or the last good set is too old."""


class JwksFetchError(Exception):
    """One fetch attempt failed; the message says why (it names URLs, never key material)."""


@dataclass(frozen=True, slots=True)
class JwksStatus:
    """What `/readyz` and operators need to know about the key cache."""

    ready: bool
    key_count: int
    age_seconds: float | None
    stale: bool
    last_error: str | None


def _check_url(url: str, what: str) -> str:
    """`url` if it is https (or http on loopback) without userinfo; else `ValueError`."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} {url!r} must not carry credentials")
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise ValueError(f"{what} {url!r} must be an https URL (plain http only on loopback)")


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _ssl_context(config: OidcConfig) -> ssl.SSLContext:
    if config.ca_file is None:
        context = httpx2.create_ssl_context(verify=True)
    else:
        try:
            context = ssl.create_default_context(cafile=str(config.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"http.oidc.ca_file {config.ca_file} cannot be used as a CA bundle: {exc}"
            ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _max_age(cache_control: str | None) -> int | None:
    if cache_control is None:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE_RE.search(cache_control)
    return int(match.group(1)) if match else None


def _import_keys(document: Any) -> tuple[Key, ...]:
    """The signature keys of a JWK set; symmetric, encryption and weak keys are dropped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("the JWKS document is not a JWK set")
    keys: list[Key] = []
    for data in document["keys"]:
        # Never a symmetric key: a public "oct" key would let anyone forge HMAC tokens.
        if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if data.get("use", "sig") != "sig":
            continue
        try:
            with warnings.catch_warnings():  # weak keys are dropped just below, not warned
                warnings.simplefilter("ignore", SecurityWarning)
                key = JWKRegistry.import_key(data)
        except Exception as exc:  # one malformed key must not spoil the set
            log.info("jwks key skipped", kid=str(data.get("kid"))[:64], error=type(exc).__name__)
            continue
        if isinstance(key, RSAKey) and key.public_key.key_size < MIN_RSA_BITS:
            continue
        if isinstance(key, RSAKey | ECKey | OKPKey):
            keys.append(key)
    if not keys:
        raise JwksFetchError("the JWKS holds no usable signature key")
    return tuple(keys)


class JwksCache:
    """The issuer's signing keys, cached with a TTL, refreshed at most once per cooldown.

    The JWKS URL is `jwks_url` if configured, else the `jwks_uri` of the issuer's
    metadata (OpenID discovery, then RFC 8414), whose `issuer` must equal ours exactly:
    metadata served for another issuer would hand us another issuer's keys. A failed start
    is not fatal: until a fetch succeeds, `keys_for` raises `JwksUnavailable`.
    """

    def __init__(
        self,
        config: OidcConfig,
        *,
        timeout: float = FETCH_TIMEOUT,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        max_stale: float = MAX_STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.issuer is None and config.jwks_url is None:
            raise ConfigError("http.oidc needs `issuer` (or at least `jwks_url`) to find keys")
        try:
            if config.issuer is not None:
                _check_url(config.issuer, "http.oidc.issuer")
            if config.jwks_url is not None:
                _check_url(config.jwks_url, "http.oidc.jwks_url")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._issuer = config.issuer
        self._jwks_uri = config.jwks_url
        self._discover = config.jwks_url is None
        self._ttl = float(config.jwks_ttl)
        self._cooldown = float(config.jwks_refresh_cooldown)
        self._ssl = _ssl_context(config)
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_stale = max_stale
        self._clock = clock
        self._lock = anyio.Lock()
        self._keys: tuple[Key, ...] | None = None
        self._fetched_at = 0.0
        self._fresh_until = 0.0
        self._last_attempt: float | None = None
        self._generation = 0
        self._last_error: str | None = None

    @property
    def status(self) -> JwksStatus:
        """Usable keys right now, how old, and the last fetch error (for `/readyz`)."""
        now = self._clock()
        usable = self._keys is not None and now - self._fetched_at <= self._max_stale
        return JwksStatus(
            ready=usable,
            key_count=len(self._keys) if usable and self._keys else 0,
            age_seconds=now - self._fetched_at if self._keys is not None else None,
            stale=self._keys is not None and now >= self._fresh_until,
            last_error=self._last_error,
        )

    async def prefetch(self) -> bool:
        """Load the keys at start-up; `False` (and a logged warning) if the provider is down.

        A failure is not fatal: requests get `jwks_unavailable` until a later fetch works.
        """
        await self._refresh()
        return self.status.ready

    async def recheck(self) -> bool:
        """For `/readyz`: fetch when no usable keys are held (or they are past their TTL),
        within the cooldown and shared with concurrent callers; whether keys are usable.

        Without it, keys missing at start were fetched only for a token, and a balancer
        sends none to a replica it sees as unready.
        """
        status = self.status
        if not status.ready or status.stale:
            await self._refresh()
        return self.status.ready

    async def keys_for(self, kid: str | None) -> list[Key]:
        """The cached keys with this `kid` (all keys for `None`), refetching on a miss.

        An unknown `kid` (a rotation at the provider, or an attacker's guess) triggers at
        most one fetch per cooldown, shared by all concurrent callers.
        """
        if self._keys is None or self._clock() >= self._fresh_until:
            await self._refresh()
        matching = self._matching(kid)
        if not matching and kid is not None and await self._refresh():
            matching = self._matching(kid)
        return matching

    def _matching(self, kid: str | None) -> list[Key]:
        if self._keys is None:
            raise JwksUnavailable("the JWKS has not been fetched yet")
        if self._clock() - self._fetched_at > self._max_stale:
            raise JwksUnavailable("the last good JWKS is older than the stale limit")
        return [key for key in self._keys if kid is None or key.kid == kid]

    async def _refresh(self) -> bool:
        """One fetch, unless another caller just did one or the cooldown forbids.

        `True` when a fetch happened (here or in the caller we waited for), so the keys may
        have changed and a miss is worth looking up again.
        """
        generation = self._generation
        async with self._lock:
            now = self._clock()
            if self._generation != generation:
                return True
            if self._last_attempt is not None and now - self._last_attempt < self._cooldown:
                return False
            self._last_attempt = now
            try:
                keys, max_age = await self._fetch()
            except JwksFetchError as exc:
                self._generation += 1  # after the fetch: callers who waited look again
                self._last_error = str(exc)
                log.warning(
                    "jwks fetch failed",
                    error=str(exc),
                    cached_keys=len(self._keys or ()),
                    retry_after_seconds=self._cooldown,
                )
                return False
            ttl = self._ttl if max_age is None else min(float(max_age), self._ttl)
            self._generation += 1
            self._keys = keys
            self._fetched_at = now
            self._fresh_until = now + ttl
            self._last_error = None
            log.info("jwks loaded", keys=len(keys), ttl_seconds=ttl)
            return True

    async def _fetch(self) -> tuple[tuple[Key, ...], int | None]:
        async with httpx2.AsyncClient(
            verify=self._ssl, timeout=self._timeout, follow_redirects=False
        ) as client:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover_jwks_uri(client)
            try:
                body, cache_control = await self._get(client, self._jwks_uri)
            except JwksFetchError:
                if self._discover:  # the provider may have moved its keys: rediscover next time
                    self._jwks_uri = None
                raise
        return _import_keys(body), _max_age(cache_control)

    async def _discover_jwks_uri(self, client: httpx2.AsyncClient) -> str:
        assert self._issuer is not None  # checked in __init__: no jwks_url means an issuer
        issuer = self._issuer.rstrip("/")
        parts = urllib.parse.urlsplit(issuer)
        candidates = (
            f"{issuer}/.well-known/openid-configuration",
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path}",
        )
        error = JwksFetchError("no issuer metadata")
        for url in candidates:
            try:
                metadata, _ = await self._get(client, url)
            except JwksFetchError as exc:
                error = exc
                continue
            if not isinstance(metadata, dict) or metadata.get("issuer") != self._issuer:
                raise JwksFetchError(f"the metadata at {url} is for another issuer")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise JwksFetchError(f"the metadata at {url} has no jwks_uri")
            try:
                return _check_url(jwks_uri, "jwks_uri")
            except ValueError as exc:
                raise JwksFetchError(str(exc)) from None
        raise error

    async def _get(self, client: httpx2.AsyncClient, url: str) -> tuple[Any, str | None]:
        """GET a JSON document: same-origin redirects only, size and time capped."""
        try:
            with anyio.fail_after(self._timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    async with client.stream(
                        "GET", url, headers={"Accept": "application/json"}
                    ) as response:
                        if response.is_redirect:
                            target = urllib.parse.urljoin(url, response.headers["location"])
                            if _origin(target) != _origin(url):
                                raise JwksFetchError(f"{url} redirects to another host; refused")
                            url = target
                            continue
                        if response.status_code != 200:
                            raise JwksFetchError(f"{url} answered HTTP {response.status_code}")
                        body = await self._read_capped(response, url)
                        return json.loads(body), response.headers.get("cache-control")
                raise JwksFetchError(f"{url}: too many redirects")
        except JwksFetchError:
            raise
        except TimeoutError:
            raise JwksFetchError(f"{url} did not answer within {self._timeout:g} s") from None
        except (ValueError, RecursionError):  # not JSON, not UTF-8, absurdly nested
            raise JwksFetchError(f"{url} did not return JSON") from None
        except Exception as exc:  # transport errors come in many types
            raise JwksFetchError(f"{url} failed: {type(exc).__name__}") from None

    async def _read_capped(self, response: httpx2.Response, url: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            raise JwksFetchError(f"{url} is larger than {self._max_bytes} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._max_bytes:
                raise JwksFetchError(f"{url} is larger than {self._max_bytes} bytes")
        return bytes(body)
