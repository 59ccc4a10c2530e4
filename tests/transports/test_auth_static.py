"""`build_verifier` per auth mode, and shared static bearer keys: named, and the README's
quick try with one run exactly as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr, ValidationError

from pvemcp.config import ConfigError, HttpConfig, OidcConfig
from pvemcp.transports.auth import (
    OidcVerifier,
    StaticKeyVerifier,
    build_verifier,
    groups_from_claims,
    token_sha256,
)
from tests.conftest import read_audit
from tests.e2e.test_both_mode import free_port, payload
from tests.e2e.test_http_serve import wait_healthy

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

RESOURCE = "http://127.0.0.1:8080/mcp"
KEYS = {"ci": SecretStr("first-key-0123456789"), "me": SecretStr("second-key-9876543210")}


def static(failures: list[tuple[str, str | None]] | None = None, **changes: Any) -> Any:
    config = HttpConfig(auth="static", static_keys=KEYS, **changes)
    hook = None if failures is None else lambda r, d: failures.append((r, d))
    return build_verifier(config, resource=RESOURCE, on_failure=hook)


async def test_each_key_is_its_own_subject_and_never_the_key() -> None:
    verifier = static(oidc=OidcConfig(required_scopes=["pvemcp"]))
    assert isinstance(verifier, StaticKeyVerifier)
    access = await verifier.verify_token("second-key-9876543210")
    assert access is not None
    assert (access.subject, access.client_id, access.scopes) == ("static:me", "static", ["pvemcp"])
    assert access.resource == RESOURCE and access.expires_at is None
    first = await verifier.verify_token(" first-key-0123456789 ")
    assert first is not None and first.subject == "static:ci"


async def test_a_list_of_keys_still_works_named_by_position() -> None:
    config = HttpConfig.model_validate(
        {"auth": "static", "static_keys": ["first-key-0123456789", "second-key-9876543210"]}
    )
    assert list(config.static_keys) == ["0", "1"]
    verifier = build_verifier(config, resource=RESOURCE)
    assert isinstance(verifier, StaticKeyVerifier)
    access = await verifier.verify_token("second-key-9876543210")
    assert access is not None and access.subject == "static:1"


def test_key_names_must_be_plain() -> None:
    with pytest.raises(ValidationError, match="static_keys"):
        HttpConfig(static_keys={"me and you": SecretStr("k" * 20)})


@pytest.mark.parametrize(
    "token",
    ["", "first-key", "first-key-01234567890", "FIRST-KEY-0123456789", "second-key-9876543210x"],
)
async def test_anything_but_an_exact_key_is_refused(token: str) -> None:
    failures: list[tuple[str, str | None]] = []
    assert await static(failures).verify_token(token) is None
    assert failures == [("unknown_key", token_sha256(token))]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "needs at least one key"),
        ({"me": SecretStr("")}, "static_keys.me is empty"),
        ({"a": SecretStr("same-0123456789"), "b": SecretStr("same-0123456789")}, ".a and .b"),
    ],
)
def test_static_without_usable_keys_is_refused_at_build(
    keys: dict[str, SecretStr], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_verifier(HttpConfig(auth="static", static_keys=keys), resource=RESOURCE)


def test_modes() -> None:
    assert build_verifier(HttpConfig(auth="none"), resource=RESOURCE) is None
    oidc = build_verifier(
        HttpConfig(auth="oidc", oidc=OidcConfig(issuer="https://idp.example")), resource=RESOURCE
    )
    assert isinstance(oidc, OidcVerifier)
    assert not oidc.jwks.status.ready  # nothing fetched at build time
    with pytest.raises(ConfigError, match="issuer"):
        build_verifier(HttpConfig(auth="oidc"), resource=RESOURCE)


def test_token_sha256_and_groups() -> None:
    assert token_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert groups_from_claims({"g": ["a", 1, "b"]}, "g") == {"a", "b"}
    assert groups_from_claims({"g": "admins"}, "g") == {"admins"}
    assert groups_from_claims({"g": {"a": 1}}, "g") == frozenset()
    assert groups_from_claims(None, "g") == frozenset()


@contextmanager
def started(
    argv: list[str], env: dict[str, str], errlog: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` run from the checkout's root, stopped (SIGTERM) on the way out."""
    with errlog.open("wb") as err:
        server = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        yield server
    finally:
        server.terminate()
        server.wait(15)


def readme_quick_try() -> tuple[dict[str, str], list[str], str, str]:
    """README's "quick local try": the server command's env and argv, and the URL and the
    header its `claude mcp add` line gives the client."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"quick local\ntry with a shared key:\n\n```sh\n(.*?)```", readme, re.S)
    assert block, "README.md lost its quick local try"
    serve, add = block.group(1).replace("\\\n", " ").strip().splitlines()
    words = shlex.split(serve)
    env = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    argv = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    add_words = shlex.split(add)
    url = next(word for word in add_words if word.startswith("http://"))
    header = add_words[add_words.index("--header") + 1]
    return env, argv, url, header


@pytest.mark.slow
async def test_readme_quick_try_works_as_written(tmp_path: Path) -> None:
    """Run README's commands (on a free port, with the audit log in tmp_path): the key's
    holder is `static:me`, sees the write tools, may power a guest, and audit says who."""
    readme_env, argv, url, header = readme_quick_try()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVEMCP_")}
    env |= readme_env | {"PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl")}
    url = url.replace(":8080/", f":{port}/")
    name, value = header.split(": ", 1)
    with started([*argv, "--port", str(port)], env, tmp_path / "stderr.log") as server:
        wait_healthy(url.removesuffix("/mcp"), server)
        async with (
            httpx2.AsyncClient(headers={name: value}) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"proxmox_guest_power", "proxmox_guest_stop"} <= tools
            guests = payload(await client.call_tool("proxmox_guest_list", {"status": "stopped"}))
            vmid = guests["guests"][0]["vmid"]
            power = await client.call_tool("proxmox_guest_power", {"vmid": vmid, "action": "start"})
            assert payload(power)["upid"]
    records = read_audit(tmp_path / "audit.jsonl")
    audited = [r for r in records if r.get("what", {}).get("tool") == "proxmox_guest_power"]
    assert audited and {r["who"]["sub"] for r in audited} == {"static:me"}
