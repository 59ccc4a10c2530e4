"""Policy decides on the node before any planner reaches it.

The file tools' planners open SFTP to the node to resolve a path before policy judged
the call, so a node that policy refuses still saw a connection (and answered whether a
path existed). Here the refused node `pve3` is a TCP listener that counts connections:
it must see none, whichever tool is called on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.support.sshd import Sshd

from .conftest import escape_gateway, failed, ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
GRANTS = """
version = 1

[[rules]]
id = "escape"
effect = "allow"
subjects = ["local"]
tiers = ["escape"]
"""
DENY_PVE3 = (
    GRANTS
    + """
[[rules]]
id = "refused-node"
effect = "deny"
subjects = ["*"]
nodes = ["pve3"]
"""
)
ONLY_PVE1 = """
version = 1

[[rules]]
id = "escape-on-pve1"
effect = "allow"
subjects = ["local"]
tiers = ["escape"]
nodes = ["pve1"]
"""
CALLS: dict[str, dict[str, Any]] = {
    "proxmox_file_read": {"path": "/etc/hostname"},
    "proxmox_file_write": {"path": "/tmp/pvemcp-node-policy", "content": "x\n"},
    "proxmox_cli_run": {"argv": ["qm", "list"]},
    "proxmox_shell_run": {"command": "true"},
}


class Listener:
    """A TCP port standing in for node pve3's sshd: it counts connections, then drops them."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accepted(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def pve3() -> AsyncIterator[Listener]:
    listener = Listener()
    listener.server = await asyncio.start_server(listener._accepted, "127.0.0.1", 0)
    try:
        yield listener
    finally:
        listener.server.close()
        await listener.server.wait_closed()


@pytest.mark.parametrize(
    ("policy", "rule"), [(DENY_PVE3, "refused-node"), (ONLY_PVE1, "builtin.no-escape")]
)
async def test_a_refused_node_sees_no_connection(
    *,
    ssh_sim: SimulatorHandle,
    sshd: Sshd,
    tmp_path: Path,
    audit_path: Path,
    pve3: Listener,
    policy: str,
    rule: str,
) -> None:
    nodes = {"pve1": f"127.0.0.1:{sshd.port}", "pve3": f"127.0.0.1:{pve3.port}"}
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=policy, secrets_dir=tmp_path, nodes=nodes
    ) as gateway:
        for tool, args in CALLS.items():
            error = failed(await gateway.invoke(LOCAL, tool, {"node": "pve3", **args}))
            assert error["code"] == "denied" and error["details"]["rules"] == [rule], error
            # The same call on an allowed node is planned (and so reaches that node).
            planned = await gateway.invoke(LOCAL, tool, {"node": "pve1", **args, "dry_run": True})
            assert ok(planned)["dry_run"] is True
        assert pve3.connections == 0
    refusals = [r for r in read_audit(audit_path) if r["where"].get("node") == "pve3"]
    assert len(refusals) == len(CALLS)
    assert {r["outcome"]["status"] for r in refusals} == {"denied"}
    assert {tuple(r["decision"]["rules"]) for r in refusals} == {(rule,)}


async def test_the_default_node_is_decided_before_planning_too(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path, pve3: Listener
) -> None:
    """A call that leaves `node` out runs on the cluster's default node (pve1 here), so
    policy decides on that one before planning: here pve1 is the refused listener."""
    policy = DENY_PVE3.replace('nodes = ["pve3"]', 'nodes = ["pve1"]')
    nodes = {"pve1": f"127.0.0.1:{pve3.port}"}
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=policy, secrets_dir=tmp_path, nodes=nodes
    ) as gateway:
        for tool, args in CALLS.items():
            error = failed(await gateway.invoke(LOCAL, tool, args))
            assert error["code"] == "denied" and error["details"]["rules"] == ["refused-node"]
    assert pve3.connections == 0
