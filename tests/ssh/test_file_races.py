"""Swapping parts of the allowed tree for symlinks while file calls run (issue 10 B).

A thread keeps replacing a directory and a file inside the allowed tree with symlinks to
a secret outside it, and back, while reads and writes run through the gateway. Whatever
the interleaving, no read may return the secret, no write may land outside the tree, and
no temporary file may be left anywhere. Before the fix (SFTP path operations, which
follow symlinks) about one call in ten got through.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pvemcp.gateway.invoke import Gateway
from pvemcp.simulator.server import SimulatorHandle
from tests.support.sshd import Sshd

from .conftest import escape_gateway
from .test_escape_files import LOCAL

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKERS = 6
ROUNDS = 25
SECRET = b"HUSH"
"""As long as the safe content: the old check of the opened file's size cannot tell them apart."""

POLICY = """
version = 1

[[rules]]
id = "files"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_file_read", "proxmox_file_write"]
paths = ["{base}/allowed/**"]
"""


@pytest.fixture
def tree(sshd: Sshd) -> Iterator[Path]:
    """`allowed/dir/f.txt` and `allowed/files/f.txt` (safe content) and `outside/` holding
    the secret under the same names, all the test user's, so a followed symlink would
    reach it. The directory and the file swapped are in different places, so one swap
    never moves the other's target."""
    root = Path(tempfile.mkdtemp(prefix="pvemcp-race-")).resolve()
    root.chmod(0o755)
    user = pwd.getpwnam(sshd.user)
    for relative in ("allowed", "allowed/dir", "allowed/files", "outside"):
        (root / relative).mkdir()
    (root / "allowed" / "dir" / "f.txt").write_bytes(b"safe")
    (root / "allowed" / "files" / "f.txt").write_bytes(b"safe")
    (root / "outside" / "f.txt").write_bytes(SECRET)
    (root / "outside" / "secret.txt").write_bytes(SECRET)
    for path in (root, *root.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    yield root
    shutil.rmtree(root)


def swap(path: Path, aside: Path, target: Path, stop: threading.Event) -> int:
    """Until `stop`: move `path` aside, put a symlink to `target` in its place, then move
    it back, a few milliseconds apart. Returns how many times it did."""
    swaps = 0
    while not stop.is_set():
        os.rename(path, aside)
        os.symlink(target, path)
        os.unlink(path)
        os.rename(aside, path)
        swaps += 1
        # Mostly the real thing, so most calls are planned on it and swapped mid-call.
        time.sleep(0.002)
    return swaps


async def test_swapping_in_symlinks_during_calls_never_escapes(
    ssh_sim: SimulatorHandle, sshd: Sshd, tree: Path, tmp_path: Path, audit_path: Path
) -> None:
    allowed, outside = tree / "allowed", tree / "outside"
    directory, file = allowed / "dir", allowed / "files" / "f.txt"
    outcomes: dict[str, int] = {}
    leaked: list[str] = []
    stop = threading.Event()
    swapped: list[int] = []

    async def worker(gw: Gateway, number: int) -> None:
        for i in range(ROUNDS):
            path = directory / "f.txt" if i % 2 else file
            read = await gw.invoke(LOCAL, "proxmox_file_read", {"node": "pve1", "path": str(path)})
            if read.data is not None and read.data["content"] != "safe":
                leaked.append(f"read of {path} returned {read.data['content']!r}")
            name = f"w-{number}-{i}.txt"
            write = await gw.invoke(
                LOCAL,
                "proxmox_file_write",
                {"node": "pve1", "path": str(directory / name), "content": "written"},
            )
            for result in (read, write):
                code = "ok" if result.error is None else result.error["code"]
                outcomes[code] = outcomes.get(code, 0) + 1

    def churn(path: Path, target: Path) -> None:
        swapped.append(swap(path, path.with_name(f".{path.name}-aside"), target, stop))

    churners = [
        threading.Thread(target=churn, args=(directory, outside)),
        threading.Thread(target=churn, args=(file, outside / "secret.txt")),
    ]
    async with escape_gateway(
        ssh_sim,
        sshd,
        audit=audit_path,
        policy=POLICY.replace("{base}", str(tree)),
        secrets_dir=tmp_path,
    ) as gw:
        for churner in churners:
            churner.start()
        try:
            async with anyio.create_task_group() as tg:
                for number in range(WORKERS):
                    tg.start_soon(worker, gw, number)
        finally:
            stop.set()
            for churner in churners:
                churner.join()

    assert leaked == []
    # Nothing was written outside, and no temporary file was left anywhere.
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt", "secret.txt"]
    assert (outside / "f.txt").read_bytes() == SECRET
    assert (outside / "secret.txt").read_bytes() == SECRET
    for place in (allowed, directory, file.parent, outside):
        assert [p.name for p in place.iterdir() if ".pvemcp-" in p.name] == []
    for written in directory.glob("w-*.txt"):
        assert written.read_bytes() == b"written"
    # The race was real: the swaps ran throughout, and calls both got through and were
    # refused.
    assert min(swapped) > 100, swapped
    assert outcomes.get("ok", 0) > 0 and sum(outcomes.values()) > outcomes.get("ok", 0), outcomes
