"""A real OpenSSH server on 127.0.0.1 for the SSH tests, with the `pvesh` stand-in.

The server is started once per session (about 50 ms) by `tests.support.sshd`; tests that
need root or Debian's sshd skip with the reason when either is missing. `escape_gateway`
builds a whole gateway on it for the escape-hatch tools.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pvemcp.config import SshConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway, ToolResult
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.proxmox.ssh import SshPool
from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import FileCredentials
from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.types import SshCredentials
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from tests.conftest import TIME_SCALE, cluster_for
from tests.support.sshd import Sshd, running_sshd, unavailable_reason

NODES = ("pve1", "pve2", "pve3")


@pytest.fixture(scope="session")
def ssh_sim() -> Iterator[SimulatorHandle]:
    """A simulator of its own: these tests start guests, which others may expect stopped."""
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as handle:
        yield handle


@pytest.fixture(scope="session")
def sshd(ssh_sim: SimulatorHandle) -> Iterator[Sshd]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with running_sshd(simulator=ssh_sim) as server:
        yield server


def ssh_config(server: Sshd, **changes: Any) -> SshConfig:
    """Every simulated node is this one sshd; short timeouts for tests."""
    values: dict[str, Any] = {
        "nodes": {node: f"127.0.0.1:{server.port}" for node in NODES},
        "connect_timeout": 5.0,
        "login_timeout": 5.0,
        "command_timeout": 15.0,
        "keepalive_interval": 5.0,
    }
    values.update(changes)
    return SshConfig(**values)


def credentials(
    server: Sshd,
    *,
    key_path: Path | None = None,
    passphrase: str | None = None,
    pins: tuple[str, ...] | None = None,
) -> SshCredentials:
    """Login as the test user with the plain key and the server's key pinned for every node."""
    lines = (server.host_key_line,) if pins is None else pins
    return SshCredentials(
        user=server.user,
        key_path=key_path or server.keys.plain,
        passphrase=SecretStr(passphrase) if passphrase is not None else None,
        host_keys={node: lines for node in NODES},
    )


@pytest.fixture
async def pool(sshd: Sshd) -> AsyncIterator[SshPool]:
    login = credentials(sshd)
    ssh = SshPool("lab", ssh_config(sshd), lambda: login)
    try:
        yield ssh
    finally:
        await ssh.aclose()


@asynccontextmanager
async def escape_gateway(
    sim: SimulatorHandle,
    server: Sshd,
    *,
    audit: Path,
    policy: str,
    secrets_dir: Path,
    pins: tuple[str, ...] | None = None,
    **ssh: Any,
) -> AsyncIterator[Gateway]:
    """A gateway whose cluster `lab` reaches the test sshd as every node, with SSH
    credentials from a secrets file (as deployments do) and the policy file `policy`."""
    secret = secrets_dir / "lab.json"
    secret.write_text(
        json.dumps(
            {
                "token_id": sim.token_id,
                "token_secret": sim.token_secret,
                "ssh_user": server.user,
                "ssh_key_path": str(server.keys.plain),
                "ssh_host_keys": {node: list(pins or (server.host_key_line,)) for node in NODES},
            }
        )
    )
    secret.chmod(0o600)
    rules = secrets_dir / "policy.toml"
    rules.write_text(policy)
    cluster = cluster_for(
        sim,
        ssh=ssh_config(server, **ssh),
        token_secret=None,
        credentials=FileCredentials(path=secret),
    )
    redactor = Redactor()
    async with SecretsManager({"lab": cluster}, redactor) as manager:
        gateway = Gateway(
            tools=all_tools(),
            clusters=ClusterPool({"lab": cluster}, secrets=manager),
            policy=load_policy(
                profile="operator",
                profile_subjects=["local"],
                file=rules,
                known_tools=tier_map(),
            ),
            audit=AuditLog(audit),
            redactor=redactor,
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()


def ok(result: ToolResult) -> dict[str, Any]:
    assert result.data is not None, result.error
    return result.data


def failed(result: ToolResult) -> dict[str, Any]:
    assert result.error is not None, result.data
    return result.error
