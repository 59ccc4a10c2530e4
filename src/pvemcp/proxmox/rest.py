"""The REST backend: PVE's HTTPS API with an API token, one pooled client per cluster.

Every failure leaves here as a `ProxmoxError` subclass that names the method and path, so
tools can give the model a precise hint. The token secret lives only in its `SecretStr`
and in the header of requests in flight; messages built from third-party exception text
are scrubbed of it as a last line of defence.

Every request has a total deadline (`request_timeout`: connect, send and the whole body)
and a size cap (`max_response_bytes`, enforced while the body streams in), so a server
that trickles, hangs or floods costs one bounded call, not a hung agent or the gateway's
memory. Messages passed on from the server are cut at `errors.MESSAGE_LIMIT` characters.

Credentials come from a provider (the secrets manager) read once per call, so a rotation
never changes the token of a call in flight. When PVE answers 401, the backend asks the
provider's owner to re-read its source once (`on_unauthorized`) and, if that produced a
different token, sends the request once more with it: never more than one retry.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx2
from pydantic import SecretStr

from pvemcp import __version__
from pvemcp.config import ClusterConfig
from pvemcp.proxmox.backend import ApiResult, Method, Params
from pvemcp.proxmox.encoding import PathError, encode_form, encode_path
from pvemcp.proxmox.errors import (
    AnswerTooLarge,
    AuthenticationError,
    MalformedAnswer,
    ParameterError,
    ProxmoxError,
    ProxmoxTimeout,
    ProxmoxUnreachable,
    ServerError,
    TlsVerificationError,
    bounded,
    error_class_for,
)
from pvemcp.proxmox.tls import CertificatePinError, build_transport

logger = logging.getLogger(__name__)

# PVE answers 500 for most missing objects ("Configuration file ... does not exist").
# Visible ASCII only: anything else in a header would be rejected by h11 with an error
# that quotes the header value, i.e. the secret.
_HEADER_VALUE_RE = re.compile(r"[\x21-\x7e]+")
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})

_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 3.0
# pveproxy drops a connection after 5 s without traffic; expiring idle connections
# earlier avoids sending a request into one the server is closing.
_LIMITS = httpx2.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=4.0)
# What OpenSSL says when the "TLS" server answers in plain text (an HTTP server on the
# port): its first bytes parse as a record with an impossible version or length.
_PLAINTEXT_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)
_RELAY_FAILURES = frozenset({502, 504})
"""Statuses pveproxy never sends itself: a proxy in front gave up on (or lost) the node's
answer, so a write may have run."""
_MAYBE_RAN_HINT = (
    "The request may have taken effect on the node although no answer came back. Check the "
    "object's state (and the node's task list) before retrying, so it does not run twice."
)
_MAX_ERRORS = 20
"""Per-parameter errors passed on from one answer; PVE names a handful at most."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response read within the deadline and the size cap.

    `complete` is False when the body passed `max_response_bytes` and reading stopped.
    """

    status: int
    reason: str
    headers: httpx2.Headers
    body: bytes
    complete: bool

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


class ApiCredential(Protocol):
    """An API token as the backend needs it (`pvemcp.secrets.types.ApiToken` is one)."""

    @property
    def token_id(self) -> str: ...

    @property
    def secret(self) -> SecretStr: ...


CredentialProvider = Callable[[], ApiCredential | None]
"""Returns the token to use now; None when there is none; may raise a `ProxmoxError`
(`CredentialsUnavailable`) to say why there is none."""
UnauthorizedHook = Callable[[ApiCredential], Awaitable[bool]]
"""Called with the token PVE rejected; re-reads the credential source (at most once)."""


@dataclass(frozen=True, slots=True)
class _StaticToken:
    token_id: str
    secret: SecretStr


def _same(a: ApiCredential, b: ApiCredential) -> bool:
    return a.token_id == b.token_id and a.secret.get_secret_value() == b.secret.get_secret_value()


class _TokenAuth(httpx2.Auth):
    """Adds `Authorization: PVEAPIToken=...` at send time, so the secret stays in its
    `SecretStr` and never sits in the client's default headers."""

    def __init__(self, token_id: str, secret: SecretStr) -> None:
        self._token_id = token_id
        self._secret = secret

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = (
            f"PVEAPIToken={self._token_id}={self._secret.get_secret_value()}"
        )
        yield request


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a connect error, if that is what it was.

    An EOF during the handshake is a dropped connection, not a certificate problem.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException) -> str:
    """The most specific cause: the OS error (`Connection refused`) rather than a
    wrapper's summary (`All connection attempts failed`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            # asyncio's strerror is "Connect call failed (...)"; the errno says why.
            # DNS errors (socket.gaierror) have negative codes and a useful strerror.
            return os.strerror(current.errno) if current.errno > 0 else str(current.strerror)
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _total(body: dict[str, Any]) -> int | None:
    total = body.get("total")
    if isinstance(total, bool):
        return None
    if isinstance(total, int):
        return total
    if isinstance(total, str) and total.isdigit():
        return int(total)
    return None


class RestBackend:
    """`ProxmoxBackend` over PVE's HTTPS API (`{api_url}/api2/json`).

    Each request must be answered in full within `cluster.request_deadline` seconds and
    `cluster.max_response_bytes` bytes. Path refusals (`..`, `%2e%2e`, `//`, `?`, controls)
    raise `ParameterError` with
    `errors["path"]`, before any request; a value PVE cannot receive (NUL, NaN) raises
    `ParameterError` too. Only GETs are retried, and only when no connection could be made.
    `transport` replaces the TLS-configured one (tests); the constructor raises
    `ConfigError` for an unusable `ca_file` or a pin on a plain-http URL. A cluster without
    a token fails at the first call, with `AuthenticationError`, before anything is sent.

    Without `credentials` the backend uses the cluster's inline `token_id`/`token_secret`
    (the simulator, tests). With it, the provider is asked once per call; `on_unauthorized`
    enables one re-read-and-retry after a 401.
    """

    name = "rest"

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        credentials: CredentialProvider | None = None,
        on_unauthorized: UnauthorizedHook | None = None,
    ) -> None:
        self._cluster = cluster
        url = httpx2.URL(cluster.api_url)
        self._address = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        if credentials is None:
            static = (
                _StaticToken(cluster.token_id, cluster.token_secret)
                if cluster.token_id is not None and cluster.token_secret is not None
                else None
            )
            credentials = lambda: static  # noqa: E731 - a one-line provider
        self._credentials = credentials
        self._on_unauthorized = on_unauthorized
        # Every secret this backend has sent, to scrub from error texts (newest first).
        self._secrets: list[SecretStr] = []
        if transport is None:
            transport = build_transport(cluster, limits=_LIMITS)
        self._client = httpx2.AsyncClient(
            base_url=f"{cluster.api_url}/api2/json",
            transport=transport,
            timeout=httpx2.Timeout(
                connect=cluster.connect_timeout,
                read=cluster.read_timeout,
                write=cluster.read_timeout,
                pool=cluster.read_timeout,
            ),
            headers={"Accept": "application/json", "User-Agent": f"pvemcp/{__version__}"},
            follow_redirects=False,
            # No proxies or .netrc from the environment: requests go where api_url says.
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"RestBackend(api_url={self._cluster.api_url!r}, tls={self._cluster.tls.value!r})"

    async def __aenter__(self) -> RestBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        """One API call; see `ProxmoxBackend.call`. Raises a `ProxmoxError` subclass."""
        if method not in _METHODS:
            raise ParameterError(
                f"method {method!r} is not one of GET, POST, PUT, DELETE",
                errors={"method": "must be GET, POST, PUT or DELETE"},
                method=method,
                path=path,
            )
        credential = self._credential(method, path)
        try:
            url = encode_path(path)
            form = encode_form(params)
        except PathError as exc:
            raise self._error(
                ParameterError, str(exc), method, path, errors={"path": str(exc)}
            ) from None
        except ValueError as exc:
            raise self._error(
                ParameterError, str(exc), method, path, errors={"params": str(exc)}
            ) from None
        if method in {"GET", "DELETE"}:
            request = self._client.build_request(method, f"{url}?{form}" if form else url)
        else:
            request = self._client.build_request(
                method,
                url,
                content=form.encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        answer = await self._send(request, method, path, credential)
        reread = False
        if answer.status == 401 and self._on_unauthorized is not None:
            reread = True
            fresh = await self._fresh_credential(credential, method, path)
            if fresh is not None:
                # PVE checks the token before doing anything, so resending is safe for
                # every method. Once: a second 401 is reported as it is.
                logger.info(
                    "%s %s: Proxmox rejected the API token %s; the credential source gave "
                    "another token, retrying once with it",
                    method,
                    path,
                    credential.token_id,
                )
                credential = fresh
                answer = await self._send(request, method, path, credential)
        return self._result(answer, method, path, credential, reread=reread)

    def _credential(self, method: str, path: str) -> ApiCredential:
        """The token for this call, checked before anything is sent."""
        try:
            credential = self._credentials()
        except ProxmoxError as exc:
            exc.method = exc.method or method
            exc.path = exc.path or path
            raise
        if credential is None:
            raise AuthenticationError(
                f"no API token is configured for {self._cluster.api_url}: set token_id and "
                "token_secret for this cluster",
                method=method,
                path=path,
            )
        if not any(known is credential.secret for known in self._secrets):
            self._secrets.insert(0, credential.secret)
            del self._secrets[16:]
        if not _HEADER_VALUE_RE.fullmatch(credential.secret.get_secret_value()):
            raise AuthenticationError(
                f"the token secret of {credential.token_id} contains whitespace, control or "
                "non-ASCII characters, so it cannot be sent; check token_secret",
                method=method,
                path=path,
            )
        return credential

    async def _fresh_credential(
        self, rejected: ApiCredential, method: str, path: str
    ) -> ApiCredential | None:
        """After a 401: re-read the source once; a different token, or None."""
        assert self._on_unauthorized is not None
        try:
            await self._on_unauthorized(rejected)
            fresh = self._credential(method, path)
        except ProxmoxError:
            return None
        except Exception:
            logger.exception("%s %s: re-reading the credentials failed", method, path)
            return None
        return None if _same(fresh, rejected) else fresh

    async def _exchange(self, request: httpx2.Request, auth: httpx2.Auth) -> _Answer:
        """Send `request` and read its answer, at most `max_response_bytes` of it.

        A declared Content-Length over the cap is not read at all; otherwise the body is
        read chunk by chunk and the connection dropped at the cap.
        """
        cap = self._cluster.max_response_bytes
        response = await self._client.send(request, auth=auth, stream=True)
        try:
            body = bytearray()
            declared = response.headers.get("content-length", "")
            complete = not (declared.isdigit() and int(declared) > cap)
            if complete:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > cap:
                        complete = False
                        break
            return _Answer(
                status=response.status_code,
                reason=response.reason_phrase,
                headers=response.headers,
                # An answer over the cap is reported by its size; its start is of no use.
                body=bytes(body) if complete else b"",
                complete=complete,
            )
        finally:
            await response.aclose()

    async def _send(
        self, request: httpx2.Request, method: str, path: str, credential: ApiCredential
    ) -> _Answer:
        """Send with retries for GETs that could not connect; map transport failures.

        Each attempt (connect, send, whole answer) has `request_deadline` seconds.
        """
        attempts = 1 + (self._cluster.retries if method == "GET" else 0)
        attempt = 0
        auth = _TokenAuth(credential.token_id, credential.secret)
        deadline = self._cluster.request_deadline
        while True:
            attempt += 1
            try:
                with anyio.fail_after(deadline):
                    return await self._exchange(request, auth)
            except TimeoutError:
                effect = "" if method == "GET" else "; the call may still take effect on the node"
                raise self._error(
                    ProxmoxTimeout,
                    f"{method} {path} to {self._address}: no complete answer within "
                    f"request_timeout ({deadline:g} s){effect}",
                    method,
                    path,
                ) from None
            except CertificatePinError as exc:
                raise self._error(TlsVerificationError, str(exc), method, path) from None
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                tls_error = _tls_failure(exc)
                if tls_error is not None:
                    raise self._tls_error(tls_error, method, path) from exc
                if attempt == attempts:
                    raise self._connect_error(exc, method, path, attempts) from exc
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
                logger.info(
                    "%s %s: cannot connect to %s (%s); retry %d/%d in %.2f s",
                    method,
                    path,
                    self._address,
                    type(exc).__name__,
                    attempt,
                    attempts - 1,
                    delay,
                )
                await anyio.sleep(delay)
            except httpx2.TimeoutException as exc:
                raise self._timeout_error(exc, method, path) from exc
            except httpx2.TransportError as exc:
                effect = "" if method == "GET" else "; the call may or may not have taken effect"
                raise self._error(
                    ProxmoxUnreachable,
                    f"the connection to {self._address} broke during {method} {path} "
                    f"({_reason(exc)}){effect}",
                    method,
                    path,
                ) from exc
            except httpx2.HTTPError as exc:
                raise self._error(
                    ServerError, f"unusable answer from {self._address}: {exc}", method, path
                ) from exc

    def _error(
        self,
        cls: type[ProxmoxError],
        message: str,
        method: str,
        path: str,
        *,
        status: int | None = None,
        errors: dict[str, str] | None = None,
    ) -> ProxmoxError:
        """Build an error whose texts cannot carry the token secret."""
        return cls(
            self._scrub(message),
            status=status,
            errors={key: self._scrub(value) for key, value in (errors or {}).items()},
            method=method,
            path=path,
        )

    def _scrub(self, text: str) -> str:
        for known in self._secrets:
            secret = known.get_secret_value()
            if secret:
                text = text.replace(secret, "**********")
        return text

    def _tls_error(self, exc: ssl.SSLError, method: str, path: str) -> ProxmoxError:
        if exc.reason in _PLAINTEXT_REASONS:
            return self._error(
                ProxmoxUnreachable,
                f"the server at {self._address} answered plain HTTP on a TLS port; nothing "
                "was sent. Use an http:// api_url if that is intended, or check the port "
                "(PVE's API listens with TLS on 8006)",
                method,
                path,
            )
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return self._error(
            TlsVerificationError,
            f"TLS verification of {self._address} failed ({reason}) with tls = "
            f"'{self._cluster.tls.value}'; nothing was sent. For PVE's self-signed "
            "certificate use tls = 'ca-file' with /etc/pve/pve-root-ca.pem or pin the "
            "certificate with tls = 'fingerprint'",
            method,
            path,
        )

    def _connect_error(
        self, exc: httpx2.TransportError, method: str, path: str, attempts: int
    ) -> ProxmoxError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, httpx2.ConnectTimeout):
            return self._error(
                ProxmoxTimeout,
                f"connecting to {self._address} timed out "
                f"({self._cluster.connect_timeout:g} s){tries}",
                method,
                path,
            )
        return self._error(
            ProxmoxUnreachable,
            f"cannot connect to {self._address}{tries}: {_reason(exc)}",
            method,
            path,
        )

    def _timeout_error(self, exc: httpx2.TimeoutException, method: str, path: str) -> ProxmoxError:
        if isinstance(exc, httpx2.PoolTimeout):
            what = "no free connection in the pool"
        elif isinstance(exc, httpx2.WriteTimeout):
            what = "sending the request timed out"
        else:
            what = f"no answer within read_timeout ({self._cluster.read_timeout:g} s)"
        effect = "" if method == "GET" else "; the call may still take effect on the node"
        return self._error(
            ProxmoxTimeout, f"{method} {path} to {self._address}: {what}{effect}", method, path
        )

    def _result(
        self,
        answer: _Answer,
        method: str,
        path: str,
        credential: ApiCredential,
        *,
        reread: bool = False,
    ) -> ApiResult:
        body = self._json_object(answer)
        if answer.is_success:
            if not answer.complete:
                raise AnswerTooLarge(
                    f"Proxmox's answer to {method} {path} is larger than max_response_bytes "
                    f"({self._cluster.max_response_bytes} bytes); reading stopped there",
                    method=method,
                    path=path,
                    status=answer.status,
                )
            if body is None or "data" not in body:
                what = "is not a JSON object" if body is None else "has no `data` member"
                raise MalformedAnswer(
                    f"Proxmox answered {method} {path} with HTTP {answer.status} and a body "
                    f"that {what} ({answer.headers.get('content-type', 'no content type')}, "
                    f"{len(answer.body)} bytes)",
                    method=method,
                    path=path,
                    status=answer.status,
                )
            changes = body.get("changes")
            return ApiResult(
                data=body["data"],
                total=_total(body),
                changes=changes if isinstance(changes, str) else None,
            )
        raise self._status_error(answer, body, method, path, credential, reread=reread)

    @staticmethod
    def _json_object(answer: _Answer) -> dict[str, Any] | None:
        if not answer.complete:
            return None
        try:
            body = json.loads(answer.body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            return None
        return body if isinstance(body, dict) else None

    def _status_error(
        self,
        answer: _Answer,
        body: dict[str, Any] | None,
        method: str,
        path: str,
        credential: ApiCredential,
        *,
        reread: bool = False,
    ) -> ProxmoxError:
        status = answer.status
        message = body.get("message") if body else None
        if not isinstance(message, str) or not message.strip():
            # PVE before 8.4 sends no `message`; the reason phrase is its first line.
            message = answer.reason or f"HTTP {status}"
        message = bounded(message.strip())
        raw_errors = body.get("errors") if body else None
        errors = (
            {
                bounded(str(key), 64): bounded(str(value).strip())
                for key, value in list(raw_errors.items())[:_MAX_ERRORS]
            }
            if isinstance(raw_errors, dict)
            else {}
        )
        if 300 <= status < 400:
            location = answer.headers.get("location")
            where = f" to {bounded(location, 200)}" if location else " (no Location given)"
            message = (
                f"{method} {path}: the server answered HTTP {status} ({message}), a redirect"
                f"{where}; redirects are not followed"
            )
        cls = error_class_for(status, message, errors)
        if cls is AuthenticationError:
            message = (
                f"Proxmox rejected the API token {credential.token_id} ({message}); "
                "check token_id and token_secret and that the token is not expired"
            )
            if reread:
                message += " (the credential source was re-read and gave no other token)"
        relayed = method != "GET" and status in _RELAY_FAILURES
        if relayed:
            message += (
                f"; HTTP {status} comes from a proxy in front of Proxmox, so the request may "
                "or may not have reached the node"
            )
        error = self._error(cls, message, method, path, status=status, errors=errors)
        if relayed:
            error.hint = _MAYBE_RAN_HINT
        return error
