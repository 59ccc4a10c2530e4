"""OpenID providers for tests: the real one (npm oidc-provider) and a scriptable fake.

`run_oidc_provider(resource)` starts `oidc_provider.mjs` under Node on 127.0.0.1 and mints
real RFC 9068 access tokens through client credentials with RFC 8707 resource indicators.
`run_test_issuer()` serves discovery and a JWKS from an in-process starlette app whose
keys, faults and request counts the test controls, and signs any token the test asks
for, well-formed or not: the bad-token corpus is built with it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeyParameters, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

SUPPORT_DIR = Path(__file__).resolve().parent
PROVIDER_SCRIPT = SUPPORT_DIR / "oidc_provider.mjs"
STARTUP_TIMEOUT = 15.0

# The real provider's clients. `agent` may ask for everything our resource grants; `other`
# only for reading. Throwaway secrets: the provider lives for one test run on loopback.
AGENT = ("agent", "agent-secret-for-tests")
OTHER = ("other", "other-secret-for-tests")
RESOURCE_SCOPES = "pvemcp pve.read pve.write"
# A second resource server at the same provider: its tokens must never open ours.
OTHER_RESOURCE = "https://other.example/api"


def oidc_provider_missing() -> str | None:
    """Why the real provider cannot run here (a reason for `pytest.skip`), or `None`."""
    if shutil.which("node") is None:
        return "node is not installed (needed for the oidc-provider test fixture)"
    if not (SUPPORT_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return "tests/support/node_modules lacks oidc-provider: run scripts/bootstrap"
    return None


class TokenRequestError(Exception):
    """The provider refused a token request; `status` and `error` are its answer."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"token request refused: HTTP {status} {error}")
        self.status = status
        self.error = error


def signing_key(alg: Literal["RS256", "ES256"] = "RS256") -> RSAKey | ECKey:
    """A fresh private signing key with a thumbprint `kid`, marked for `alg` and `sig`."""
    parameters: KeyParameters = {"alg": alg, "use": "sig"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, auto_kid=True)
    return RSAKey.generate_key(2048, parameters=parameters, auto_kid=True)


@dataclass
class OidcProvider:
    """A running oidc-provider; `token()` mints access tokens for `resource`."""

    resource: str
    resources: dict[str, str]
    clients: list[dict[str, str]]
    access_token_ttl: int
    keys: list[Key]
    issuer: str = ""
    _process: subprocess.Popen[bytes] | None = None
    _stderr: Any = None

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def port(self) -> int:
        return int(self.issuer.rsplit(":", 1)[1])

    def request_token(
        self,
        client_id: str,
        secret: str,
        scopes: Sequence[str],
        *,
        resource: str | None = None,
    ) -> httpx2.Response:
        """The raw token endpoint answer (client_credentials, `resource` default ours)."""
        return httpx2.post(
            f"{self.issuer}/token",
            auth=(client_id, secret),
            data={
                "grant_type": "client_credentials",
                "scope": " ".join(scopes),
                "resource": resource or self.resource,
            },
            timeout=10,
        )

    def token(
        self,
        client_id: str,
        secret: str,
        scopes: Sequence[str],
        *,
        resource: str | None = None,
    ) -> str:
        """A signed JWT access token; `TokenRequestError` if the provider refuses."""
        response = self.request_token(client_id, secret, scopes, resource=resource)
        if response.status_code != 200:
            raise TokenRequestError(response.status_code, response.json().get("error", ""))
        return str(response.json()["access_token"])

    def rotate_keys(self, alg: Literal["RS256", "ES256"] = "RS256") -> Key:
        """Sign with a new key from now on (the old one stays published), as IdPs rotate.

        The provider restarts on the same port, so its issuer URL does not change.
        """
        new = signing_key(alg)
        self.keys = [new, *self.keys]
        self.stop()
        self.start(port=self.port)
        return new

    def retire_old_keys(self) -> None:
        """Publish only the current signing key (the end of a rotation)."""
        self.keys = self.keys[:1]
        self.stop()
        self.start(port=self.port)

    def start(self, port: int = 0) -> None:
        config = {
            "port": port,
            "jwks": {"keys": [key.as_dict(private=True) for key in self.keys]},
            "resources": self.resources,
            "clients": self.clients,
            "access_token_ttl": self.access_token_ttl,
        }
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            ["node", str(PROVIDER_SCRIPT)],
            cwd=SUPPORT_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(config).encode())
        process.stdin.close()
        ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
        line = process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"oidc-provider did not start: {self._stderr_text()}")
        self.issuer = json.loads(line)["issuer"]

    def stop(self) -> None:
        """Kill the provider (idempotent)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read().decode(errors="replace")[-2000:])


@contextlib.contextmanager
def run_oidc_provider(
    resource: str,
    *,
    other_resources: Mapping[str, str] | None = None,
    access_token_ttl: int = 300,
    alg: Literal["RS256", "ES256"] = "RS256",
) -> Iterator[OidcProvider]:
    """A real OpenID provider on 127.0.0.1 issuing access tokens for `resource`.

    Clients `AGENT` (scopes `pvemcp pve.read pve.write`) and `OTHER` (`pvemcp pve.read`);
    `resource` grants those three scopes, `OTHER_RESOURCE` grants `pvemcp other.read`
    (pass `other_resources` to change the others). Any other resource is 400
    `invalid_target`; unknown scopes are silently dropped. The process is killed on exit.
    """
    resources = {resource: RESOURCE_SCOPES}
    resources.update(other_resources or {OTHER_RESOURCE: "pvemcp other.read"})
    provider = OidcProvider(
        resource=resource,
        resources=resources,
        clients=[
            {"client_id": AGENT[0], "client_secret": AGENT[1], "scope": RESOURCE_SCOPES},
            {"client_id": OTHER[0], "client_secret": OTHER[1], "scope": "pvemcp pve.read"},
        ],
        access_token_ttl=access_token_ttl,
        keys=[signing_key(alg)],
    )
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


# --- a scriptable issuer for the bad-token corpus ---------------------------------------

Fault = Literal[
    "none",
    "error",
    "huge",
    "huge_chunked",
    "slow",
    "not_json",
    "empty_set",
    "redirect_same",
    "redirect_cross",
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


class FakeClock:
    """Wall and monotonic time that only move when a test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))
        self.mono = 1000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@dataclass
class TestIssuer:
    """Discovery + JWKS on loopback with keys, faults and counters set by the test."""

    __test__ = False  # not a test class, whatever its name

    issuer: str = ""
    keys: list[Key] = field(default_factory=list)
    fault: Fault = "none"
    slow_seconds: float = 2.0
    cache_control: str | None = None
    metadata_issuer: str | None = None  # what discovery claims; default: the real issuer
    document: dict[str, Any] | None = None  # a raw JWKS to serve instead of `keys`
    requests: Counter[str] = field(default_factory=Counter)

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/jwks"]

    def reset(self, keys: list[Key]) -> None:
        self.keys = list(keys)
        self.fault = "none"
        self.cache_control = None
        self.metadata_issuer = None
        self.document = None
        self.requests.clear()

    def mint(
        self,
        claims: Mapping[str, Any],
        *,
        key: Key | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A token signed by `key` (default: the first published key) with its `kid`."""
        signer = key or self.keys[0]
        alg = str(signer.alg or "RS256")
        full_header = {"typ": "at+jwt", "alg": alg, "kid": signer.kid, **(header or {})}
        full_header = {name: value for name, value in full_header.items() if value is not None}
        return jwt.encode(
            full_header, dict(claims), signer, algorithms=[full_header["alg"]], default_type=None
        )

    def app(self) -> Starlette:
        async def metadata(request: Request) -> Response:
            self.requests[request.url.path] += 1
            return JSONResponse(
                {
                    "issuer": self.metadata_issuer or self.issuer,
                    "jwks_uri": self.jwks_url,
                }
            )

        async def jwks(request: Request) -> Response:
            self.requests[request.url.path] += 1
            return await self._jwks_response(request)

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", metadata),
                Route("/jwks", jwks),
                Route("/jwks-moved", jwks),
            ]
        )

    async def _jwks_response(self, request: Request) -> Response:
        document = self.document or {"keys": [key.as_dict(private=False) for key in self.keys]}
        headers = {"cache-control": self.cache_control} if self.cache_control else None
        if self.fault == "error":
            return JSONResponse({"error": "boom"}, status_code=500)
        if self.fault == "slow":
            await anyio.sleep(self.slow_seconds)
        if self.fault == "not_json":
            return Response("<html>hello</html>", media_type="text/html")
        if self.fault == "empty_set":
            return JSONResponse({"keys": []})
        if self.fault == "huge":
            return JSONResponse({**document, "padding": "x" * 70_000})
        if self.fault == "huge_chunked":
            return StreamingResponse(_chunks(70), media_type="application/json")
        if self.fault == "redirect_same" and request.url.path == "/jwks":
            return RedirectResponse(f"{self.issuer}/jwks-moved", status_code=302)
        if self.fault == "redirect_cross":
            cross = self.issuer.replace("127.0.0.1", "localhost")
            return RedirectResponse(f"{cross}/jwks-moved", status_code=302)
        return JSONResponse(document, headers=headers)


async def _chunks(count: int) -> AsyncIterator[bytes]:
    yield b'{"keys": [], "padding": "'
    for _ in range(count):
        yield b"x" * 1024
    yield b'"}'


class _ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 from a daemon thread."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-issuer", daemon=True)

    def start(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test issuer did not start")
            time.sleep(0.01)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STARTUP_TIMEOUT)


@contextlib.contextmanager
def run_test_issuer() -> Iterator[TestIssuer]:
    """A `TestIssuer` listening on 127.0.0.1 until the block ends (leave the block to
    test a provider that went down)."""
    issuer = TestIssuer()
    server = _ServerThread(issuer.app())
    port = server.start()
    issuer.issuer = f"http://127.0.0.1:{port}"
    try:
        yield issuer
    finally:
        server.stop()
