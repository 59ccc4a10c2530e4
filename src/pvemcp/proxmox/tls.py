"""TLS for the Proxmox API: trust store, CA file, certificate pinning or no check.

Fingerprint pinning is enforced during connection setup, not after the response: the
network backend below checks the SHA-256 of the peer's leaf certificate inside
`start_tls`, before httpcore2 gets a stream to write the request on. A connection whose
certificate does not match is closed there, so the `Authorization` header (the API token)
never reaches an impostor. httpx2 has no pinning option of its own, hence the small
transport that plugs this backend into an `httpcore2.AsyncConnectionPool`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore2
import httpx2

from pvemcp.config import ClusterConfig, ConfigError, TlsMode


def colon_fingerprint(hex_digest: str) -> str:
    """`AA:BB:...`, the form PVE shows (`pvenode cert info`) and the config accepts."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


class CertificatePinError(Exception):
    """The server's certificate does not match the pinned fingerprint; nothing was sent."""

    def __init__(self, *, address: str, seen: str | None, expected: str) -> None:
        self.address = address
        self.seen = seen
        self.expected = expected
        if seen is None:
            message = f"the TLS server at {address} presented no certificate to check"
        else:
            message = (
                f"the certificate of {address} has SHA-256 fingerprint "
                f"{colon_fingerprint(seen)}, but the pinned fingerprint is "
                f"{colon_fingerprint(expected)}. Nothing was sent. If the node's certificate "
                "was replaced on purpose, confirm the new fingerprint on the node "
                "(pvenode cert info) and set fingerprint = "
                f'"{colon_fingerprint(seen)}"; otherwise the connection may be intercepted.'
            )
        super().__init__(message)


def _no_verification_context() -> ssl.SSLContext:
    """A context that accepts any certificate: for `insecure`, and for pinning (the pin
    replaces chain and hostname checks, as for PVE's self-signed node certificates)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _ca_file_context(cluster: ClusterConfig) -> ssl.SSLContext:
    if cluster.ca_file is None:  # the config model guarantees it; keeps the type narrow
        raise ConfigError("tls = 'ca-file' needs ca_file")
    path = cluster.ca_file.expanduser()
    try:
        return ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ConfigError(f"ca_file {path} does not exist (needed by tls = 'ca-file')") from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"ca_file {path} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"ca_file {path} cannot be read: {exc.strerror or exc}") from None


def build_ssl_context(cluster: ClusterConfig) -> ssl.SSLContext:
    """The client context for `cluster.tls`; TLS 1.2 is the floor in every mode.

    `system` is the context httpx2 itself would use: on macOS and Windows the OS store
    through truststore; on Linux OpenSSL's CA paths (httpcore2 skips truststore there to
    avoid an OpenSSL < 3.4 leak), with `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured. A missing
    or unreadable `ca_file` raises `ConfigError`.
    """
    if cluster.tls is TlsMode.SYSTEM:
        context = httpx2.create_ssl_context(verify=True)
    elif cluster.tls is TlsMode.CA_FILE:
        context = _ca_file_context(cluster)
    else:
        context = _no_verification_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _PinningStream(httpcore2.AsyncNetworkStream):
    """A TCP stream whose TLS upgrade fails unless the leaf certificate matches the pin."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream, *, pin: str, address: str) -> None:
        self._inner = inner
        self._pin = pin
        self._address = address

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        tls_stream = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        ssl_object = tls_stream.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = hashlib.sha256(der).hexdigest() if der else None
        if seen is None or not hmac.compare_digest(seen, self._pin):
            await tls_stream.aclose()
            raise CertificatePinError(address=self._address, seen=seen, expected=self._pin)
        return tls_stream


class _PinningBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's anyio backend, with every TCP stream wrapped in `_PinningStream`."""

    def __init__(self, pin: str) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._pin = pin

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _PinningStream(stream, pin=self._pin, address=f"{host}:{port}")


# httpcore2 exceptions and their httpx2 twins, most specific first, so callers of a pinned
# transport see the same exception types as with httpx2's own transport.
_ERROR_MAP: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.ProxyError, httpx2.ProxyError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_type, httpx_type in _ERROR_MAP:
            if isinstance(exc, core_type):
                raise httpx_type(str(exc)) from exc
        raise


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class PinnedTransport(httpx2.AsyncBaseTransport):
    """An HTTP/1.1 connection pool whose TLS connections must match a SHA-256 pin.

    A mismatch raises `CertificatePinError` from the request, before any byte of it is
    written.
    """

    def __init__(self, fingerprint: str, *, limits: httpx2.Limits) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=_no_verification_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_PinningBackend(fingerprint.replace(":", "").lower()),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not isinstance(request.stream, httpx2.AsyncByteStream):
            raise TypeError("PinnedTransport needs an async request body")
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        if not isinstance(response.stream, AsyncIterable):
            raise TypeError("httpcore2 returned a synchronous body to an async pool")
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def build_transport(cluster: ClusterConfig, *, limits: httpx2.Limits) -> httpx2.AsyncBaseTransport:
    """The HTTP transport for `cluster`: httpx2's own, or `PinnedTransport` for a pin.

    Raises `ConfigError` for an unusable `ca_file`, or for a pin on a plain-http URL (no
    certificate would ever be checked).
    """
    if cluster.tls is TlsMode.FINGERPRINT:
        if cluster.fingerprint is None:  # the config model guarantees it
            raise ConfigError("tls = 'fingerprint' needs fingerprint")
        if not cluster.api_url.startswith("https://"):
            raise ConfigError("tls = 'fingerprint' needs an https:// api_url")
        return PinnedTransport(cluster.fingerprint, limits=limits)
    return httpx2.AsyncHTTPTransport(
        verify=build_ssl_context(cluster), limits=limits, trust_env=False
    )
