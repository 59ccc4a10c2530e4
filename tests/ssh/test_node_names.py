"""Only the cluster's own nodes are reached over SSH, and host keys pin configured names.

The attack: every other name of a node's address (a numeric form of the IP, `localhost`)
used to be dialled as given, and with a `known_hosts` file its entry matched the resolved
address, so a call on `2130706433` reached the node that `deny nodes = ["pve3"]` kept out.
Here the real sshd is the node, and each alias is tried against it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from pathlib import Path

import pytest

from pvemcp.policy.principal import Principal
from pvemcp.proxmox.errors import SshHostKeyError, SshUnknownNode
from pvemcp.proxmox.ssh import SshPool
from pvemcp.proxmox.ssh.pool import NodeLister
from pvemcp.simulator.server import SimulatorHandle
from tests.support.sshd import Sshd

from .conftest import NODES, credentials, escape_gateway, failed, ok, ssh_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
ALIASES = ("2130706433", "0x7f000001", "017700000001", "localhost")
"""Other names of 127.0.0.1, where the test sshd (every node) listens."""
ISSUE_ALIASES = ("2130706435", "0x7f000003", "017700000003")
"""The names of 127.0.0.3 from the report (its pve3 listened there): refused the same way."""

POLICY = """
version = 1

[[rules]]
id = "shell"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_shell_run"]

[[rules]]
id = "not-pve3"
effect = "deny"
subjects = ["*"]
nodes = ["pve3"]
"""


def members(*names: str) -> NodeLister:
    """The node list a cluster reports (what `GET /nodes` gives the real pool)."""

    async def listed() -> Collection[str]:
        return names

    return listed


def known_hosts(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def marker() -> Path:
    return Path(f"/tmp/pvemcp-alias-{uuid.uuid4().hex}")


@pytest.mark.parametrize("alias", [*ALIASES, *ISSUE_ALIASES])
async def test_another_name_of_a_node_is_not_dialled(
    sshd: Sshd, tmp_path: Path, alias: str
) -> None:
    known = known_hosts(tmp_path, sshd.host_key_line)
    login = credentials(sshd, pins=())
    config = ssh_config(sshd, port=sshd.port, known_hosts=known)
    pool = SshPool("lab", config, lambda: login, cluster_nodes=members(*NODES))
    touched = marker()
    try:
        with pytest.raises(SshUnknownNode) as caught:
            await pool.run(alias, ["touch", str(touched)])
        assert caught.value.code == "not_found" and caught.value.node == alias
        assert caught.value.hint == "Use one of the cluster's nodes: pve1, pve2, pve3"
        assert "nothing was sent" in caught.value.message
        assert not touched.exists()
        assert (await pool.run("pve1", ["true"])).exit_code == 0
    finally:
        await pool.aclose()


async def test_a_node_the_cluster_reports_is_dialled_by_its_name_and_pinned_by_it(
    sshd: Sshd, tmp_path: Path
) -> None:
    login = credentials(sshd, pins=())
    by_address = ssh_config(
        sshd, port=sshd.port, known_hosts=known_hosts(tmp_path, sshd.host_key_line)
    )
    pool = SshPool("lab", by_address, lambda: login, cluster_nodes=members("localhost"))
    try:
        # Reported by the cluster, so dialled; but `[127.0.0.1]:port` does not pin `localhost`.
        with pytest.raises(SshHostKeyError, match="no host key is pinned"):
            await pool.run("localhost", ["true"])
    finally:
        await pool.aclose()
    by_name = known_hosts(tmp_path, sshd.host_key_line.replace("[127.0.0.1]", "[localhost]"))
    pool = SshPool(
        "lab",
        ssh_config(sshd, port=sshd.port, known_hosts=by_name),
        lambda: login,
        cluster_nodes=members("localhost"),
    )
    try:
        assert (await pool.run("localhost", ["true"])).exit_code == 0
    finally:
        await pool.aclose()


async def test_the_default_node_is_reached_without_asking_the_cluster(sshd: Sshd) -> None:
    login = credentials(sshd)

    async def unreachable() -> Collection[str]:
        raise AssertionError("the configured default node needs no node list")

    config = ssh_config(sshd, nodes={"pve1": f"127.0.0.1:{sshd.port}"})
    pool = SshPool("lab", config, lambda: login, cluster_nodes=unreachable, default_node="pve1")
    try:
        assert (await pool.run("pve1", ["true"])).exit_code == 0
        with pytest.raises(SshUnknownNode, match="'pve2' is not a node of cluster lab"):
            await SshPool("lab", config, lambda: login, default_node="pve1").run("pve2", ["true"])
    finally:
        await pool.aclose()


async def test_denied_node_aliases_are_not_found_through_the_gateway(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    known = known_hosts(tmp_path, sshd.host_key_line)
    async with escape_gateway(
        ssh_sim,
        sshd,
        audit=audit_path,
        policy=POLICY,
        secrets_dir=tmp_path,
        port=sshd.port,
        known_hosts=known,
    ) as gateway:
        denied = failed(
            await gateway.invoke(LOCAL, "proxmox_shell_run", {"node": "pve3", "command": "true"})
        )
        assert denied["code"] == "denied" and denied["details"]["rules"] == ["not-pve3"]
        for alias in ALIASES:
            touched = marker()
            args = {"node": alias, "command": f"touch {touched}"}
            error = failed(await gateway.invoke(LOCAL, "proxmox_shell_run", args))
            assert error["code"] == "not_found", error
            assert error["hint"] == "Use one of the cluster's nodes: pve1, pve2, pve3"
            assert error["details"]["node"] == alias
            assert not touched.exists()
        assert (
            ok(
                await gateway.invoke(
                    LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "true"}
                )
            )["exit_code"]
            == 0
        )
