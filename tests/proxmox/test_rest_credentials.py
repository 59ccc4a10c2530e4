"""The REST backend with a credential provider: the token is read once per call, and a 401
leads to one re-read of the source and at most one retry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from pvemcp.config import ClusterConfig
from pvemcp.proxmox.errors import AuthenticationError, CredentialsUnavailable, ProxmoxError
from pvemcp.proxmox.rest import ApiCredential, RestBackend

from .fake_pve import SECRET, TOKEN_ID, FakePve, pve_json

pytestmark = pytest.mark.anyio

MakeCluster = Callable[..., ClusterConfig]
NEW_SECRET = "0b0b0b0b-1111-4222-8333-444455556666"


@dataclass(frozen=True)
class Token:
    token_id: str
    secret: SecretStr


class Provider:
    """A token that tests can swap, and a 401 hook that counts and may rotate it."""

    def __init__(self, secret: str = SECRET) -> None:
        self.token: Token | None = Token(TOKEN_ID, SecretStr(secret))
        self.rejected: list[str] = []
        self.rotate_to: str | None = None

    def __call__(self) -> ApiCredential | None:
        return self.token

    async def on_unauthorized(self, rejected: ApiCredential) -> bool:
        self.rejected.append(rejected.secret.get_secret_value())
        if self.rotate_to is not None:
            self.token = Token(TOKEN_ID, SecretStr(self.rotate_to))
            return True
        return False


def accept_only(secret: str) -> Callable[[Request], object]:
    async def handler(request: Request) -> Response:
        if request.headers["authorization"] == f"PVEAPIToken={TOKEN_ID}={secret}":
            return pve_json({"ok": 1})
        return Response(status_code=401)

    return handler


def sent_secrets(pve: FakePve) -> list[str]:
    return [r.headers["authorization"].rsplit("=", 1)[1] for r in pve.requests]


async def test_token_is_read_at_every_call(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9"}))
    provider = Provider()
    cluster = make_cluster(token_id=None, token_secret=None)
    async with RestBackend(cluster, credentials=provider) as backend:
        await backend.call("GET", "/version")
        provider.token = Token(TOKEN_ID, SecretStr(NEW_SECRET))
        await backend.call("GET", "/version")
    assert sent_secrets(pve) == [SECRET, NEW_SECRET]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_401_rereads_once_and_retries_with_the_new_token(
    pve: FakePve, make_cluster: MakeCluster, method: str
) -> None:
    pve.route(method, "/x", accept_only(NEW_SECRET))  # type: ignore[arg-type]
    provider = Provider()
    provider.rotate_to = NEW_SECRET
    async with RestBackend(
        make_cluster(), credentials=provider, on_unauthorized=provider.on_unauthorized
    ) as backend:
        result = await backend.call(method, "/x", {"a": 1})  # type: ignore[arg-type]
    assert result.data == {"ok": 1}
    assert provider.rejected == [SECRET]
    assert sent_secrets(pve) == [SECRET, NEW_SECRET]
    assert [r.body for r in pve.requests] == ([b"", b""] if method == "GET" else [b"a=1"] * 2)


async def test_401_without_a_new_token_is_not_retried(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", "/x", Response(status_code=401))
    provider = Provider()
    async with RestBackend(
        make_cluster(), credentials=provider, on_unauthorized=provider.on_unauthorized
    ) as backend:
        with pytest.raises(AuthenticationError) as info:
            await backend.call("GET", "/x")
    assert provider.rejected == [SECRET]
    assert len(pve.requests) == 1
    assert "re-read" in info.value.message and SECRET not in info.value.message


async def test_a_second_401_ends_it(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/x", Response(status_code=401))
    provider = Provider()
    provider.rotate_to = NEW_SECRET
    async with RestBackend(
        make_cluster(), credentials=provider, on_unauthorized=provider.on_unauthorized
    ) as backend:
        with pytest.raises(AuthenticationError) as info:
            await backend.call("GET", "/x")
    assert provider.rejected == [SECRET]  # the hook ran once: no loop
    assert sent_secrets(pve) == [SECRET, NEW_SECRET]
    assert NEW_SECRET not in info.value.message and SECRET not in info.value.message


async def test_a_failing_hook_reports_the_401(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/x", Response(status_code=401))

    async def broken(_: ApiCredential) -> bool:
        raise RuntimeError("vault exploded")

    async with RestBackend(make_cluster(), credentials=Provider(), on_unauthorized=broken) as b:
        with pytest.raises(AuthenticationError):
            await b.call("GET", "/x")
    assert len(pve.requests) == 1


async def test_unavailable_credentials_fail_before_sending(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    def unavailable() -> ApiCredential | None:
        raise CredentialsUnavailable("credentials for cluster lab are unavailable (vault down)")

    async with RestBackend(make_cluster(), credentials=unavailable) as backend:
        with pytest.raises(CredentialsUnavailable) as info:
            await backend.call("GET", "/version")
    assert (info.value.method, info.value.path) == ("GET", "/version")
    assert info.value.code == "credentials_unavailable"
    assert pve.requests == []
    provider = Provider()
    provider.token = None
    async with RestBackend(make_cluster(), credentials=provider) as backend:
        with pytest.raises(AuthenticationError, match="no API token"):
            await backend.call("GET", "/version")


async def test_rotated_secret_is_scrubbed_from_errors(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    async def echo(request: Request) -> Response:
        return pve_json(status=500, message=f"bad {request.headers['authorization']}")

    pve.route("GET", "/echo", echo)
    provider = Provider()
    async with RestBackend(make_cluster(), credentials=provider) as backend:
        for secret in (SECRET, NEW_SECRET):
            provider.token = Token(TOKEN_ID, SecretStr(secret))
            with pytest.raises(ProxmoxError) as info:
                await backend.call("GET", "/echo")
            assert secret not in str(info.value)
