"""proxmox_snippet_read / proxmox_snippet_write on the real sshd, with the storage config
from the simulator: a `dir` storage whose path is a temporary tree on this machine."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway.invoke import Gateway, ToolResult
from pvemcp.policy.principal import Principal
from pvemcp.simulator.model import Storage
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import cluster_for, make_gateway
from tests.ssh.conftest import NODES, escape_gateway, failed, ok, ssh_sim, sshd  # noqa: F401
from tests.support.sshd import Sshd

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")


@pytest.fixture
def base(ssh_sim: SimulatorHandle, sshd: Sshd) -> Iterator[Path]:  # noqa: F811
    """Storages `snip` (snippets, its snippets dir owned by the test user), `evil`
    (snippets, its snippets dir a symlink outside) and `isos` (no snippets), all `dir`
    storages under one temporary tree, in the simulator's storage.cfg."""
    root = Path(tempfile.mkdtemp(prefix="pvemcp-snip-")).resolve()
    root.chmod(0o755)
    user = pwd.getpwnam(sshd.user)
    for name in ("snip", "snip/snippets", "evil", "outside", "isos", "isos/snippets", "bare"):
        (root / name).mkdir()
        os.chown(root / name, user.pw_uid, user.pw_gid)
    (root / "outside" / "u.yaml").write_text("secret: 1\n")
    (root / "evil" / "snippets").symlink_to(root / "outside")
    (root / "snip" / "snippets" / "link.yaml").symlink_to(root / "outside" / "u.yaml")
    added = [
        Storage(name, "dir", content, False, {n: (10**9, 0) for n in NODES}, {"path": str(path)})
        for name, content, path in (
            ("snip", ("snippets",), root / "snip"),
            ("evil", ("snippets",), root / "evil"),
            ("isos", ("iso",), root / "isos"),
            ("bare", ("snippets",), root / "bare"),
        )
    ]
    ssh_sim.state.storages.extend(added)
    yield root
    for storage in added:
        ssh_sim.state.storages.remove(storage)
    shutil.rmtree(root)


@pytest.fixture
async def gw(
    ssh_sim: SimulatorHandle,  # noqa: F811
    sshd: Sshd,  # noqa: F811
    base: Path,
    tmp_path: Path,
    audit_path: Path,
) -> AsyncIterator[Gateway]:
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy="version = 1\n", secrets_dir=tmp_path
    ) as gateway:
        yield gateway


async def read(gw: Gateway, storage: str, name: str) -> ToolResult:
    return await gw.invoke(
        LOCAL, "proxmox_snippet_read", {"node": "pve1", "storage": storage, "name": name}
    )


async def write(gw: Gateway, storage: str, name: str, **args: Any) -> ToolResult:
    return await gw.invoke(
        LOCAL, "proxmox_snippet_write", {"node": "pve1", "storage": storage, "name": name, **args}
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_write_then_read_back(gw: Gateway, base: Path) -> None:
    body = "#cloud-config\npackages: [nginx]\n"
    done = ok(await write(gw, "snip", "web.yaml", content=body))
    path = str(base / "snip" / "snippets" / "web.yaml")
    assert done["created"] is True and done["path"] == path and done["sha256"] == sha(body)
    assert (
        done["volid"] == "snip:snippets/web.yaml" and "user=snip:snippets/web.yaml" in done["use"]
    )
    assert (base / "snip" / "snippets" / "web.yaml").read_text() == body
    got = ok(await read(gw, "snip", "web.yaml"))
    assert got["content"] == body and got["sha256"] == sha(body) and got["path"] == path


async def test_replace_shows_a_diff_and_honours_the_precondition(gw: Gateway, base: Path) -> None:
    old, new = "#cloud-config\nhostname: a\n", "#cloud-config\nhostname: b\n"
    ok(await write(gw, "snip", "u.yaml", content=old))
    plan = ok(await write(gw, "snip", "u.yaml", content=new, dry_run=True))
    assert "-hostname: a" in plan["plan"]["diff"] and "+hostname: b" in plan["plan"]["diff"]
    stale = failed(await write(gw, "snip", "u.yaml", content=new, expected_sha256=sha("other")))
    assert stale["code"] == "precondition_failed" and stale["field"] == "expected_sha256"
    assert (base / "snip" / "snippets" / "u.yaml").read_text() == old
    done = ok(await write(gw, "snip", "u.yaml", content=new, expected_sha256=sha(old)))
    assert done["created"] is False and done["before_sha256"] == sha(old)
    assert (base / "snip" / "snippets" / "u.yaml").read_text() == new


@pytest.mark.parametrize("name", ["a/b.yaml", "..", "../u.yaml", ".hidden", "x" * 256])
async def test_a_name_that_is_not_a_plain_file_name_is_refused(gw: Gateway, name: str) -> None:
    for result in (await read(gw, "snip", name), await write(gw, "snip", name, content="x")):
        error = failed(result)
        assert error["code"] == "invalid_argument" and error["field"] == "name", error


async def test_a_storage_without_snippets_is_refused(gw: Gateway, base: Path) -> None:
    for result in (
        await read(gw, "isos", "u.yaml"),
        await write(gw, "isos", "u.yaml", content="x"),
    ):
        error = failed(result)
        assert error["code"] == "invalid_argument" and error["field"] == "storage", error
    assert list((base / "isos" / "snippets").iterdir()) == []


async def test_a_symlink_out_of_the_snippets_directory_is_refused(gw: Gateway, base: Path) -> None:
    for result in (
        await read(gw, "evil", "u.yaml"),
        await write(gw, "evil", "u.yaml", content="x"),
        await read(gw, "snip", "link.yaml"),
        await write(gw, "snip", "link.yaml", content="x"),
    ):
        error = failed(result)
        assert error["code"] == "path_refused" and error["field"] == "name", error
    assert (base / "outside" / "u.yaml").read_text() == "secret: 1\n"


async def test_without_ssh_the_cluster_says_so(
    ssh_sim: SimulatorHandle,  # noqa: F811
    base: Path,
    audit_path: Path,
) -> None:
    gateway = make_gateway({"lab": cluster_for(ssh_sim)}, audit_path, (ssh_sim.token_secret,))
    try:
        for result in (
            await read(gateway, "snip", "u.yaml"),
            await write(gateway, "snip", "u.yaml", content="x"),
        ):
            assert failed(result)["code"] == "ssh_not_configured"
    finally:
        await gateway.aclose()


async def test_a_missing_snippet_or_snippets_directory_is_not_found(gw: Gateway) -> None:
    error = failed(await read(gw, "snip", "absent.yaml"))
    assert error["code"] == "not_found" and error["field"] == "name", error
    for result in (
        await read(gw, "bare", "u.yaml"),
        await write(gw, "bare", "u.yaml", content="x"),
    ):
        error = failed(result)
        assert error["code"] == "not_found" and error["field"] == "storage", error
        assert "snippets directory" in error["message"]


async def test_replacing_needs_read_access_creating_does_not(
    ssh_sim: SimulatorHandle,  # noqa: F811
    sshd: Sshd,  # noqa: F811
    base: Path,
    tmp_path: Path,
    audit_path: Path,
) -> None:
    """A replace's plan shows the current content: a caller denied the read tool may only
    create snippets."""
    (base / "snip" / "snippets" / "kept.yaml").write_text("password: hunter2\n")
    policy = (
        'version = 1\n[[rules]]\nid = "no-read"\neffect = "deny"\nsubjects = ["local"]\n'
        'tools = ["proxmox_snippet_read"]\n'
    )
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=policy, secrets_dir=tmp_path
    ) as gateway:
        error = failed(await write(gateway, "snip", "kept.yaml", content="x", dry_run=True))
        assert error["code"] == "denied" and error["field"] == "name", error
        assert "hunter2" not in str(error)
        assert ok(await write(gateway, "snip", "new.yaml", content="x"))["created"] is True
    assert (base / "snip" / "snippets" / "kept.yaml").read_text() == "password: hunter2\n"
