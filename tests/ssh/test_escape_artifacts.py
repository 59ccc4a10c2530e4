"""The artifact store (owner, TTL, size cap) and what goes into an artifact (redacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvemcp.gateway.artifacts import ArtifactStore
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import MASK
from pvemcp.simulator.server import SimulatorHandle
from tests.support.sshd import Sshd

from .conftest import escape_gateway

LOCAL = Principal.local("stdio")
ALICE = Principal("alice", "http", client_id="agent", issuer="https://idp.example")
ALICE_OTHER_CLIENT = Principal("alice", "http", client_id="other", issuer="https://idp.example")
TOKEN_LOCAL = Principal("local", "http", issuer="https://idp.example")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_owner_reads_an_artifact() -> None:
    store = ArtifactStore()
    kept = store.put(ALICE, b"output", ttl=60)
    assert kept is not None and kept.uri == f"pvemcp://artifacts/{kept.id}"
    assert len(kept.id) >= 24
    found = store.get(ALICE, kept.id)
    assert found is not None and found.data == b"output"
    for other in (ALICE_OTHER_CLIENT, LOCAL, TOKEN_LOCAL):
        assert store.get(other, kept.id) is None
    mine = store.put(LOCAL, b"local", ttl=60)
    assert mine is not None
    assert store.get(Principal.local("memory"), mine.id) is not None
    assert store.get(TOKEN_LOCAL, mine.id) is None, "an HTTP token with sub local is not local"


def test_artifacts_expire_and_the_oldest_make_room() -> None:
    clock = Clock()
    store = ArtifactStore(max_total_bytes=10, clock=clock)
    first = store.put(ALICE, b"12345", ttl=30)
    second = store.put(ALICE, b"6789", ttl=60)
    assert first is not None and second is not None
    third = store.put(ALICE, b"abcd", ttl=60)  # 13 bytes > 10: the oldest goes
    assert third is not None
    assert store.get(ALICE, first.id) is None
    assert store.get(ALICE, second.id) is not None
    assert store.put(ALICE, b"x" * 11, ttl=60) is None, "larger than the whole store"
    clock.now += 61
    assert store.get(ALICE, second.id) is None and store.get(ALICE, third.id) is None


POLICY = """
version = 1

[[rules]]
id = "shell"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_shell_run"]
"""


@pytest.mark.anyio
@pytest.mark.slow
async def test_artifacts_are_redacted_like_all_output(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    secret = ssh_sim.token_secret  # loaded from the secrets file, so in the redaction set
    command = f"for i in $(seq 60); do echo {secret}; done; printf '\\377\\n'"
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path, output_cap=1024
    ) as gateway:
        result = await gateway.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": command}
        )
        assert result.data is not None, result.error
        assert secret not in result.data["stdout"] and MASK in result.data["stdout"]
        artifact_id = result.data["stdout_artifact"].rsplit("/", 1)[1]
        found = gateway.artifacts.get(LOCAL, artifact_id)
    assert found is not None
    assert secret.encode() not in found.data
    assert found.data.count(MASK.encode()) == 60
    assert found.data.endswith(b"\xff\n"), "bytes that are not UTF-8 stay as they were"
