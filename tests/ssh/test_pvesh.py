"""The pvesh backend end to end: SSH to a real sshd, the pvesh stand-in, the simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.proxmox.errors import (
    NotFound,
    NotImplementedOnServer,
    ParameterError,
    SshAuthError,
    TaskFailed,
)
from pvemcp.proxmox.pvesh import PveshBackend
from pvemcp.proxmox.rest import RestBackend
from pvemcp.proxmox.ssh import SshPool
from pvemcp.proxmox.tasks import get_task_log, wait_for_task
from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import FileCredentials
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import cluster_for
from tests.support.sshd import Sshd

from .conftest import NODES, ssh_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def cluster(ssh_sim: SimulatorHandle, sshd: Sshd) -> ClusterConfig:
    return cluster_for(ssh_sim, ssh=ssh_config(sshd, backend="pvesh"))


@pytest.fixture
async def rest(cluster: ClusterConfig) -> AsyncIterator[RestBackend]:
    async with RestBackend(cluster) as backend:
        yield backend


@pytest.fixture
async def pvesh(cluster: ClusterConfig, pool: SshPool) -> PveshBackend:
    return PveshBackend(cluster, pool)


async def test_reads_match_rest(pvesh: PveshBackend, rest: RestBackend) -> None:
    nodes = await pvesh.call("GET", "/nodes")
    assert nodes.total is None
    assert sorted(n["node"] for n in nodes.data) == sorted(NODES)
    via_ssh = await pvesh.call("GET", "/cluster/resources", {"type": "vm"})
    via_rest = await rest.call("GET", "/cluster/resources", {"type": "vm"})
    assert {g["vmid"] for g in via_ssh.data} == {g["vmid"] for g in via_rest.data}
    assert (await pvesh.call("GET", "/version")).data == (await rest.call("GET", "/version")).data


async def test_null_result_is_none(pvesh: PveshBackend) -> None:
    tasks = (await pvesh.call("GET", "/nodes/pve2/tasks")).data
    stopped = await pvesh.call("DELETE", f"/nodes/pve2/tasks/{tasks[0]['upid']}")
    assert stopped.data is None


async def test_start_a_vm_through_pvesh_and_wait(pvesh: PveshBackend, rest: RestBackend) -> None:
    guests = (await rest.call("GET", "/cluster/resources", {"type": "vm"})).data
    guest = next(g for g in guests if g["type"] == "qemu" and g["status"] == "stopped")
    path = f"/nodes/{guest['node']}/qemu/{guest['vmid']}/status"
    started = await pvesh.call("POST", f"{path}/start")
    assert isinstance(started.data, str) and started.data.startswith(f"UPID:{guest['node']}:")
    status = await wait_for_task(pvesh, started.data, timeout=20)
    assert status.ok
    assert (await rest.call("GET", f"{path}/current")).data["status"] == "running"
    lines, total = await get_task_log(pvesh, started.data)
    # pvesh prints no `total`: the backend says it does not know rather than guess.
    assert total is None and lines[-1][1] == "TASK OK"
    # pvesh exits 0 after a task that failed; the failure shows when the UPID is polled.
    again = await pvesh.call("POST", f"{path}/start")
    with pytest.raises(TaskFailed, match="already running"):
        await wait_for_task(pvesh, again.data, timeout=20)


async def test_parameter_error_has_per_parameter_errors(pvesh: PveshBackend) -> None:
    with pytest.raises(ParameterError) as caught:
        await pvesh.call("POST", "/nodes/pve1/qemu/100/status/start", {"timeout": "abc"})
    assert caught.value.status == 400
    assert "type check ('integer') failed" in caught.value.errors["timeout"]


async def test_missing_vm_is_not_found(pvesh: PveshBackend) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await pvesh.call("GET", "/nodes/pve1/qemu/999999/config")


async def test_unknown_path_is_not_implemented(pvesh: PveshBackend) -> None:
    with pytest.raises(NotImplementedOnServer, match="No 'get' handler defined for '/nope'"):
        await pvesh.call("GET", "/nope")


async def test_values_never_become_options(pvesh: PveshBackend) -> None:
    # A value that looks like an option stays the value of its parameter.
    with pytest.raises(ParameterError) as caught:
        await pvesh.call("POST", "/nodes/pve1/qemu/100/status/start", {"timeout": "--help"})
    assert "got '--help'" in caught.value.errors["timeout"]


@pytest.mark.parametrize("name", ["output-format", "noproxy", "-x", "a b"])
async def test_reserved_or_bad_parameter_names_are_refused(pvesh: PveshBackend, name: str) -> None:
    with pytest.raises(ParameterError, match="parameter name"):
        await pvesh.call("GET", "/version", {name: "1"})


async def test_bad_paths_are_refused_before_ssh(cluster: ClusterConfig, sshd: Sshd) -> None:
    def no_credentials() -> None:
        raise AssertionError("nothing may reach the node")

    backend = PveshBackend(cluster, SshPool("lab", ssh_config(sshd), no_credentials))
    for path in ("/nodes/../x", "/nodes/%2e%2e/x", "nodes", "/a//b"):
        with pytest.raises(ParameterError):
            await backend.call("GET", path)


async def test_cluster_pool_routes_to_pvesh(
    cluster: ClusterConfig, sshd: Sshd, tmp_path: Path, ssh_sim: SimulatorHandle
) -> None:
    secret = tmp_path / "lab.json"
    secret.write_text(
        json.dumps(
            {
                "token_id": ssh_sim.token_id,
                "token_secret": ssh_sim.token_secret,
                "ssh_user": sshd.user,
                "ssh_key_path": str(sshd.keys.plain),
                "ssh_host_keys": {node: [sshd.host_key_line] for node in NODES},
            }
        )
    )
    secret.chmod(0o600)
    managed = cluster.model_copy(
        update={"token_secret": None, "credentials": FileCredentials(path=secret)}
    )
    async with SecretsManager({"lab": managed}, Redactor()) as manager:
        clusters = ClusterPool({"lab": managed}, secrets=manager)
        backend = clusters.backend("lab")
        assert isinstance(backend, PveshBackend) and backend.name == "pvesh"
        assert (await backend.call("GET", "/version")).data["release"]
        result = await clusters.ssh_pool("lab").run("pve1", ["true"])
        assert result.exit_code == 0
        await clusters.aclose()
    # Without a secrets manager there are no SSH credentials: a clear error, no connection.
    bare = ClusterPool({"lab": cluster})
    with pytest.raises(SshAuthError, match="no SSH credentials"):
        await bare.backend("lab").call("GET", "/version")
    await bare.aclose()
