"""Credentials from HashiCorp Vault or OpenBao (KV v2, or v1 by option), through hvac.

hvac is synchronous: every Vault call runs in a worker thread, serialised by one lock per
source, so a renewal and a read never race over the client's token.

Safety choices (see docs/secrets.md):
- TLS verified against `ca_file` or the system store; there is no switch to turn it off.
- Redirects are refused, not followed: requests would resend `X-Vault-Token` to wherever a
  redirect points. A standby node's 307 becomes a clear error naming the target.
- No proxies or CA bundles from the environment (`trust_env = False`): requests go where
  `url` says, verified as configured.
- Connect and read timeouts on every request.
- Login tokens are renewed (`renew_self`) at about two thirds of their TTL, with jitter;
  when a renewal comes back shorter than asked (the max TTL caps it) or is refused, the
  next step is a fresh login. A 403 on a read logs in again once before it is reported.
- Every token, secret_id and wrapping token handled here joins the redaction set.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import hvac
import hvac.exceptions
import requests
import structlog

from pvemcp.secrets.file import read_private_file
from pvemcp.secrets.models import (
    VaultAppRoleAuth,
    VaultCredentials,
    VaultKubernetesAuth,
    VaultTokenAuth,
)
from pvemcp.secrets.source import SecretSink, SecretSource
from pvemcp.secrets.types import (
    ClusterCredentials,
    SecretSourceError,
    credentials_from_mapping,
    warn_unknown_keys,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

RENEW_FRACTION = 2 / 3
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\"\)\]]+)")
_TLS_RE = re.compile(r"certificate verify failed: ([^'\"\(\)]+)")
_MAINTAIN_TICK = 1.0


class _Redirected(Exception):
    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"HTTP {status} redirect to {location or '(no location)'}")
        self.status = status
        self.location = location


def _refuse_redirects(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    if response.is_redirect or 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")
        # Only the scheme, host and path: a query could carry anything.
        raise _Redirected(response.status_code, location.split("?", 1)[0])


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.85, 1.0)  # noqa: S311 - jitter, not cryptography


def _vault_errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc) or type(exc).__name__]
    text = "; ".join(" ".join(str(e).split()) for e in errors if e)
    # "1 error occurred: * permission denied" -> "permission denied"
    return re.sub(r"^\d+ errors? occurred: \* ", "", text) or type(exc).__name__


def _network_reason(exc: BaseException) -> str:
    match = _TLS_RE.search(str(exc)) or _ERRNO_RE.search(str(exc))
    if match:
        return match.group(1).strip()
    return type(exc).__name__


@dataclass(slots=True)
class _Lease:
    """The current login token's timing (monotonic seconds)."""

    ttl: float
    full_ttl: float  # the TTL at login: a renewal that returns less is capped by max TTL
    renewable: bool
    obtained: float
    next_action: float | None
    action: str | None  # "renew" | "login" | None (never expires)


class VaultSource(SecretSource):
    kind = "vault"
    refreshable = True

    def __init__(
        self,
        name: str,
        config: VaultCredentials,
        *,
        fallback_token_id: str | None,
        sink: SecretSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._config = config
        self._fallback = fallback_token_id
        self._sink = sink
        self._clock = clock
        self.refresh_interval = config.refresh_interval
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._lease: _Lease | None = None
        self._owned_token = False  # a token we obtained by login (revoked on close)
        self._unwrapped: tuple[str, str] | None = None  # (wrapping token, secret_id)
        self.logins = 0
        self.renewals = 0

    # -- description -------------------------------------------------------------------

    def describe(self) -> str:
        cfg = self._config
        extra = f", namespace {cfg.namespace}" if cfg.namespace else ""
        return (
            f"vault {cfg.url} {cfg.full_path} (kv v{cfg.kv_version}, auth {cfg.auth.method}{extra})"
        )

    @property
    def token_accessor_ttl(self) -> float | None:
        """Seconds the current token had when last obtained or renewed (tests, metrics)."""
        return self._lease.ttl if self._lease else None

    # -- client and auth (worker thread, under the lock) --------------------------------

    def _new_client(self, token: str | None = None) -> hvac.Client:
        cfg = self._config
        session = requests.Session()
        session.trust_env = False
        session.max_redirects = 0
        session.hooks["response"].append(_refuse_redirects)
        return hvac.Client(
            url=cfg.url,
            token=token,
            namespace=cfg.namespace,
            verify=str(cfg.ca_file.expanduser()) if cfg.ca_file else True,
            timeout=(cfg.connect_timeout, cfg.read_timeout),
            allow_redirects=False,
            session=session,
        )

    def _read_small(self, path: Path, what: str) -> str:
        value = read_private_file(path.expanduser(), what).decode("utf-8", "replace").strip()
        if not value:
            raise SecretSourceError(f"{what} {path} is empty")
        return value

    @staticmethod
    def _env(var: str, what: str) -> str:
        value = os.environ.get(var, "").strip()
        if not value:
            raise SecretSourceError(
                f"vault auth: env variable {var} ({what}) is not set or empty; export it in "
                "the gateway's environment"
            )
        return value

    def _token_from_config(self, auth: VaultTokenAuth) -> str:
        if auth.token_file is not None:
            return self._read_small(auth.token_file, "Vault token file")
        assert auth.token_env is not None
        return self._env(auth.token_env, "the Vault token")

    def _role_id(self, auth: VaultAppRoleAuth) -> str:
        if auth.role_id is not None:
            return auth.role_id
        if auth.role_id_file is not None:
            return self._read_small(auth.role_id_file, "AppRole role_id file")
        assert auth.role_id_env is not None
        return self._env(auth.role_id_env, "the AppRole role_id")

    def _secret_id(self, auth: VaultAppRoleAuth) -> str:
        if auth.secret_id_file is not None:
            value = self._read_small(auth.secret_id_file, "AppRole secret_id file")
        else:
            assert auth.secret_id_env is not None
            value = self._env(auth.secret_id_env, "the AppRole secret_id")
        self._sink(value)
        if not auth.secret_id_wrapped:
            return value
        if self._unwrapped is not None and self._unwrapped[0] == value:
            return self._unwrapped[1]  # a wrapping token is single-use: unwrapped once
        try:
            # The wrapping token authenticates its own unwrap.
            unwrapper = self._new_client(token=value)
            try:
                response = unwrapper.sys.unwrap()
            finally:
                unwrapper.adapter.close()
            secret_id = str(response["data"]["secret_id"])
        except hvac.exceptions.VaultError as exc:
            raise SecretSourceError(
                f"vault: cannot unwrap the wrapped secret_id ({_vault_errors(exc)}); wrapping "
                "tokens are single-use and expire: deliver a fresh one (vault write -wrap-ttl="
                f"... auth/{auth.mount}/role/ROLE/secret-id)"
            ) from None
        except (KeyError, TypeError):
            raise SecretSourceError(
                "vault: the unwrapped response holds no secret_id; the wrapping token must "
                f"come from auth/{auth.mount}/role/ROLE/secret-id"
            ) from None
        self._sink(secret_id)
        self._unwrapped = (value, secret_id)
        log.info("vault_secret_id_unwrapped", cluster=self._name, source=self.describe())
        return secret_id

    def _login(self) -> None:
        auth = self._config.auth
        client = self._new_client()
        what = f"{auth.method} login"
        try:
            if isinstance(auth, VaultTokenAuth):
                token = self._token_from_config(auth)
                self._sink(token)
                client.token = token
                data = client.auth.token.lookup_self()["data"]
                ttl, renewable, owned = (
                    float(data.get("ttl") or 0),
                    bool(data.get("renewable")),
                    False,
                )
            elif isinstance(auth, VaultAppRoleAuth):
                response = client.auth.approle.login(
                    role_id=self._role_id(auth),
                    secret_id=self._secret_id(auth),
                    mount_point=auth.mount,
                )
                ttl, renewable, owned = self._adopt_auth(client, response)
            else:
                assert isinstance(auth, VaultKubernetesAuth)
                # Re-read at every login: the kubelet rotates the projected token.
                jwt = self._read_k8s_jwt(auth)
                response = client.auth.kubernetes.login(
                    role=auth.role, jwt=jwt, mount_point=auth.mount
                )
                ttl, renewable, owned = self._adopt_auth(client, response)
        except hvac.exceptions.VaultError as exc:
            raise self._error(exc, what) from None
        except (requests.RequestException, _Redirected) as exc:
            raise self._transport_error(exc) from None
        self._close_client()
        self._client = client
        self._owned_token = owned
        self.logins += 1
        self._schedule(ttl, renewable, full_ttl=ttl)
        log.info(
            "vault_login",
            cluster=self._name,
            source=self.describe(),
            ttl=ttl,
            renewable=renewable,
        )

    def _read_k8s_jwt(self, auth: VaultKubernetesAuth) -> str:
        path = auth.jwt_file.expanduser()
        try:
            jwt = path.read_text().strip()
        except FileNotFoundError:
            raise SecretSourceError(
                f"vault kubernetes auth: service-account token {path} does not exist; mount a "
                "projected service-account token there or set auth.jwt_file"
            ) from None
        except OSError as exc:
            raise SecretSourceError(
                f"vault kubernetes auth: cannot read {path}: {exc.strerror}"
            ) from None
        if not jwt:
            raise SecretSourceError(f"vault kubernetes auth: {path} is empty")
        self._sink(jwt)
        return jwt

    def _adopt_auth(self, client: hvac.Client, response: Any) -> tuple[float, bool, bool]:
        auth = (response or {}).get("auth") or {}
        token = auth.get("client_token")
        if not token:
            raise SecretSourceError("vault: the login answer holds no client token")
        self._sink(str(token))
        client.token = token
        return float(auth.get("lease_duration") or 0), bool(auth.get("renewable")), True

    def _schedule(
        self, ttl: float, renewable: bool, *, full_ttl: float, capped: bool = False
    ) -> None:
        now = self._clock()
        if ttl <= 0:  # a token without expiry (root, or a non-expiring token given to us)
            self._lease = _Lease(ttl, full_ttl, renewable, now, None, None)
            return
        action = "renew" if renewable and not capped else "login"
        self._lease = _Lease(
            ttl, full_ttl, renewable, now, now + _jitter(ttl * RENEW_FRACTION), action
        )

    def _renew(self) -> None:
        assert self._client is not None
        assert self._lease is not None
        full_ttl = self._lease.full_ttl
        try:
            response = self._client.auth.token.renew_self()
        except hvac.exceptions.VaultError as exc:
            log.info(
                "vault_renew_refused",
                cluster=self._name,
                error=_vault_errors(exc),
                next="fresh login",
            )
            self._login()
            return
        auth = (response or {}).get("auth") or {}
        ttl = float(auth.get("lease_duration") or 0)
        self.renewals += 1
        if ttl <= 0:  # nothing left before the max TTL: log in again now
            self._login()
            return
        # Shorter than at login: the token's max TTL caps it, so log in again before then.
        capped = 0 < ttl < full_ttl * 0.9
        self._schedule(ttl, bool(auth.get("renewable")), full_ttl=full_ttl, capped=capped)
        log.debug("vault_token_renewed", cluster=self._name, ttl=ttl, capped=capped)

    def _ensure_login(self) -> None:
        lease = self._lease
        if self._client is None or lease is None:
            self._login()
            return
        margin = min(1.0, lease.ttl / 10)
        if lease.ttl > 0 and self._clock() >= lease.obtained + lease.ttl - margin:
            self._login()  # expired (or about to): renewing is too late

    # -- reading ------------------------------------------------------------------------

    def _read_once(self) -> tuple[dict[str, Any], str | None]:
        assert self._client is not None
        cfg = self._config
        if cfg.kv_version == 2:
            response = self._client.secrets.kv.v2.read_secret_version(
                path=cfg.path, mount_point=cfg.mount, raise_on_deleted_version=True
            )
            data = response["data"]["data"]
            version = response["data"].get("metadata", {}).get("version")
            return (data if isinstance(data, dict) else {}), (
                str(version) if version is not None else None
            )
        response = self._client.secrets.kv.v1.read_secret(path=cfg.path, mount_point=cfg.mount)
        data = response.get("data")
        return (data if isinstance(data, dict) else {}), None

    def _load_sync(self) -> ClusterCredentials:
        with self._lock:
            self._ensure_login()
            try:
                try:
                    data, version = self._read_once()
                except hvac.exceptions.Forbidden:
                    # Revoked or expired behind our back? Log in again, once.
                    self._login()
                    data, version = self._read_once()
            except hvac.exceptions.VaultError as exc:
                raise self._error(exc, "read") from None
            except (requests.RequestException, _Redirected) as exc:
                raise self._transport_error(exc) from None
        unknown: list[str] = []
        where = f"vault secret {self._config.full_path}"
        credentials = credentials_from_mapping(
            data,
            where=where,
            fallback_token_id=self._fallback,
            origin=f"{self.describe()} version {version}" if version else self.describe(),
            version=version,
            unknown=unknown,
        )
        warn_unknown_keys(self._name, self.describe(), unknown)
        return credentials

    async def _run(self, func: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)

    async def load(self) -> ClusterCredentials:
        return await self._run(self._load_sync)

    # -- upkeep -------------------------------------------------------------------------

    def _maintain_step(self) -> None:
        with self._lock:
            lease = self._lease
            if self._client is None or lease is None or lease.next_action is None:
                return
            if self._clock() < lease.next_action:
                return
            if lease.action == "renew":
                self._renew()
            else:
                self._login()

    async def maintain(self) -> None:
        """Renew the login token at ~2/3 of its TTL; log in again when capped or refused."""
        while True:
            lease = self._lease
            delay = _MAINTAIN_TICK
            if lease is not None and lease.next_action is not None:
                delay = min(_MAINTAIN_TICK, max(0.0, lease.next_action - self._clock()))
            await anyio.sleep(delay)
            try:
                await self._run(self._maintain_step)
            except SecretSourceError as exc:
                # The next read logs in again; until then the last credentials stay in use.
                log.warning(
                    "vault_token_upkeep_failed",
                    cluster=self._name,
                    source=self.describe(),
                    error=exc.message,
                )
                await anyio.sleep(_jitter(5.0))

    def _close_client(self) -> None:
        client, owned = self._client, self._owned_token
        self._client, self._lease, self._owned_token = None, None, False
        if client is not None and owned:
            try:
                client.auth.token.revoke_self()
            except (hvac.exceptions.VaultError, requests.RequestException, _Redirected):
                log.debug("vault_revoke_failed", cluster=self._name)
        if client is not None:
            client.adapter.close()

    def _close_sync(self) -> None:
        with self._lock:
            self._close_client()

    async def aclose(self) -> None:
        """Revoke the token this source logged in with (a token given to us is kept)."""
        with anyio.move_on_after(self._config.connect_timeout + 1, shield=True):
            await self._run(self._close_sync)

    # -- errors -------------------------------------------------------------------------

    def _error(self, exc: hvac.exceptions.VaultError, action: str) -> SecretSourceError:
        cfg = self._config
        where = f"vault {cfg.url}"
        target = f"mount {cfg.mount!r} path {cfg.path!r} (kv v{cfg.kv_version})"
        reason = _vault_errors(exc)
        auth = cfg.auth.method
        if isinstance(exc, hvac.exceptions.VaultDown):
            return SecretSourceError(
                f"{where} is sealed or in maintenance ({reason}); retrying in the background",
                transient=True,
            )
        if isinstance(
            exc,
            hvac.exceptions.InternalServerError
            | hvac.exceptions.BadGateway
            | hvac.exceptions.RateLimitExceeded
            | hvac.exceptions.UnexpectedError,
        ):
            return SecretSourceError(f"{where} failed during {action} ({reason})", transient=True)
        if action != "read":
            if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.InvalidRequest):
                return SecretSourceError(
                    f"{where} refused the {action} ({reason}); check the {auth} credentials "
                    "and the auth method's mount"
                )
            return SecretSourceError(f"{where}: {action} failed ({reason})")
        if isinstance(exc, hvac.exceptions.InvalidPath):
            if "no handler for route" in reason:
                return SecretSourceError(
                    f"{where} has no KV v{cfg.kv_version} mount {cfg.mount!r} reachable at "
                    f"{target}; check credentials.mount (and kv_version)"
                )
            hint = (
                " (if the mount is a KV version 1 engine, set kv_version = 1)"
                if cfg.kv_version == 2
                else ""
            )
            return SecretSourceError(
                f"{where} has no secret at {target}; check credentials.mount and "
                f"credentials.path, or write it (bao kv put -mount={cfg.mount} {cfg.path} "
                f"token_secret=...){hint}"
            )
        if isinstance(exc, hvac.exceptions.Forbidden):
            api_path = f"{cfg.mount}/data/{cfg.path}" if cfg.kv_version == 2 else cfg.full_path
            return SecretSourceError(
                f"{where} denied reading {target} with the {auth} login ({reason}), also "
                f'after a fresh login; the token\'s policy needs read on "{api_path}" '
                "(see docs/secrets.md, Vault policy)"
            )
        return SecretSourceError(f"{where}: reading {target} failed ({reason})")

    def _transport_error(self, exc: BaseException) -> SecretSourceError:
        url = self._config.url
        if isinstance(exc, _Redirected):
            return SecretSourceError(
                f"vault {url} answered {exc}; redirects are not followed (they would carry the "
                "Vault token elsewhere): set credentials.url to the active node's address"
            )
        if isinstance(exc, requests.exceptions.SSLError):
            return SecretSourceError(
                f"TLS verification of vault {url} failed ({_network_reason(exc)}); set "
                "credentials.ca_file to the CA bundle that signed Vault's certificate"
            )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return SecretSourceError(
                f"connecting to vault {url} timed out ({self._config.connect_timeout:g} s); "
                "retrying in the background",
                transient=True,
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return SecretSourceError(
                f"vault {url} did not answer within read_timeout "
                f"({self._config.read_timeout:g} s); retrying in the background",
                transient=True,
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return SecretSourceError(
                f"cannot connect to vault {url} ({_network_reason(exc)}); retrying in the "
                "background",
                transient=True,
            )
        return SecretSourceError(f"vault {url}: request failed ({type(exc).__name__})")
