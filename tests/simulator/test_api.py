"""The simulator's HTTP behaviour: auth, listings, reads and PVE-shaped errors."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle, SimulatorOptions, serve_simulator

from .conftest import client_for

pytestmark = pytest.mark.anyio


async def _data(client: httpx2.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


# --- authentication ------------------------------------------------------------------


async def test_token_is_accepted(client: httpx2.AsyncClient) -> None:
    response = await client.get("/version")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"]["release"] == "9.2"


async def test_missing_credentials_are_401_with_empty_body(shared_sim: SimulatorHandle) -> None:
    async with client_for(shared_sim, authorized=False) as client:
        response = await client.get("/version")
    assert response.status_code == 401
    assert response.content == b""
    assert response.reason_phrase == "No ticket"


@pytest.mark.parametrize(
    "header",
    [
        "PVEAPIToken=root@pam!pvemcp=00000000-0000-0000-0000-000000000000",
        "PVEAPIToken=root@pam!other={secret}",
        "PVEAPIToken root@pam!pvemcp={secret}",
        "Bearer {secret}",
    ],
)
async def test_bad_token_is_401_authentication_failure(
    shared_sim: SimulatorHandle, header: str
) -> None:
    secret = shared_sim.token_secret
    async with client_for(shared_sim, authorized=False) as client:
        response = await client.get(
            "/version", headers={"Authorization": header.format(secret=secret)}
        )
    assert response.status_code == 401
    assert response.content == b""
    assert response.reason_phrase == "authentication failure"


async def test_token_id_and_secret_are_configurable(anyio_backend: str) -> None:
    options = SimulatorOptions(token_id="ops@pve!ci", token_secret="s3cr3t", time_scale=0)
    async with serve_simulator(options) as sim, client_for(sim) as client:
        assert sim.authorization == "PVEAPIToken=ops@pve!ci=s3cr3t"
        assert (await client.get("/version")).status_code == 200


async def test_auth_failure_delay_is_configurable(anyio_backend: str) -> None:
    options = SimulatorOptions(auth_fail_delay=0.3, time_scale=0)
    async with serve_simulator(options) as sim, client_for(sim, authorized=False) as client:
        began = time.monotonic()
        response = await client.get("/version")
        assert response.status_code == 401
        assert time.monotonic() - began >= 0.3


# --- listings ------------------------------------------------------------------------


async def test_cluster_and_nodes(client: httpx2.AsyncClient) -> None:
    status = await _data(client, "/cluster/status")
    assert status[0] == {
        "type": "cluster", "id": "cluster", "name": "demo", "nodes": 3, "quorate": 1,
        "version": 3,
    }  # fmt: skip
    nodes = await _data(client, "/nodes")
    assert [n["node"] for n in nodes] == ["pve1", "pve2", "pve3"]
    assert all(n["status"] == "online" and 0 < n["mem"] < n["maxmem"] for n in nodes)
    assert all(n["uptime"] > 86_400 for n in nodes)
    node = await _data(client, "/nodes/pve3/status")
    assert node["cpuinfo"]["cpus"] == 16
    assert node["memory"]["total"] == 64 * 1024**3
    assert node["pveversion"].startswith("pve-manager/9.2")


async def test_cluster_resources_hold_the_demo_guests(client: httpx2.AsyncClient) -> None:
    guests = await _data(client, "/cluster/resources", type="vm")
    by_id = {g["id"]: g for g in guests}
    assert len(guests) == 14
    expected = {
        "type": "qemu", "vmid": 100, "node": "pve1", "name": "web01", "status": "running",
        "tags": "prod;web", "pool": "prod", "template": 0, "maxcpu": 2,
    }  # fmt: skip
    assert {key: by_id["qemu/100"][key] for key in expected} == expected
    assert by_id["qemu/105"]["status"] == "paused"
    assert by_id["qemu/9000"]["template"] == 1
    named_test = sorted((g["type"], g["node"], g["vmid"]) for g in guests if g["name"] == "test")
    assert named_test == [("lxc", "pve3", 203), ("qemu", "pve1", 102)]
    on_pve1 = {g["status"] for g in guests if g["type"] == "qemu" and g["node"] == "pve1"}
    assert {"running", "stopped"} <= on_pve1


@pytest.mark.parametrize(("kind", "count"), [("node", 3), ("storage", 11), ("sdn", 6)])
async def test_cluster_resources_type_filter(
    client: httpx2.AsyncClient, kind: str, count: int
) -> None:
    items = await _data(client, "/cluster/resources", type=kind)
    assert len(items) == count
    assert {item["type"] for item in items} == {kind}


async def test_unfiltered_resources_include_pools(client: httpx2.AsyncClient) -> None:
    items = await _data(client, "/cluster/resources")
    assert {"/pool/dev", "/pool/prod"} <= {item["id"] for item in items}


async def test_node_guest_lists(client: httpx2.AsyncClient) -> None:
    vms = await _data(client, "/nodes/pve1/qemu")
    assert [vm["vmid"] for vm in vms] == [100, 101, 102, 103]
    running = next(vm for vm in vms if vm["vmid"] == 100)
    assert running["status"] == "running" and running["uptime"] > 0 and "pid" in running
    stopped = next(vm for vm in vms if vm["vmid"] == 101)
    assert stopped["status"] == "stopped" and stopped["uptime"] == 0 and "pid" not in stopped
    full = await _data(client, "/nodes/pve2/qemu", full=1)
    assert next(vm for vm in full if vm["vmid"] == 105)["qmpstatus"] == "paused"
    cts = await _data(client, "/nodes/pve3/lxc")
    assert [(ct["vmid"], ct["name"], ct["type"]) for ct in cts] == [
        (203, "test", "lxc"),
        (204, "nginx-dev", "lxc"),
    ]


async def test_guest_status_and_config(client: httpx2.AsyncClient) -> None:
    status = await _data(client, "/nodes/pve2/qemu/105/status/current")
    assert status["status"] == "running"
    assert status["qmpstatus"] == "paused"
    assert status["ha"] == {"managed": 0}
    config = await _data(client, "/nodes/pve1/qemu/100/config")
    assert config["name"] == "web01"
    assert config["memory"] == "4096"
    assert config["net0"].startswith("virtio=BC:24:11:")
    assert config["scsi0"].startswith("local-lvm:vm-100-disk-0")
    assert len(config["digest"]) == 40
    assert config["parent"] == "after-upgrade"
    ct = await _data(client, "/nodes/pve1/lxc/200/config")
    assert ct["hostname"] == "dns01"
    assert ct["rootfs"].startswith("local-lvm:vm-200-disk-0")


async def test_snapshots(client: httpx2.AsyncClient) -> None:
    snapshots = await _data(client, "/nodes/pve1/qemu/100/snapshot")
    names = [s["name"] for s in snapshots]
    assert names == ["pre-upgrade", "after-upgrade", "current"]
    assert snapshots[-1]["parent"] == "after-upgrade"
    assert snapshots[-1]["running"] == 1
    saved = await _data(client, "/nodes/pve1/qemu/100/config", snapshot="pre-upgrade")
    assert saved["name"] == "web01" and "snaptime" in saved
    missing = await client.get("/nodes/pve1/qemu/100/config", params={"snapshot": "nope"})
    assert missing.status_code == 500
    assert missing.json()["message"] == "snapshot 'nope' does not exist\n"
    assert [s["name"] for s in await _data(client, "/nodes/pve3/qemu/106/snapshot")] == ["current"]


async def test_storage_list(client: httpx2.AsyncClient) -> None:
    storages = await _data(client, "/nodes/pve1/storage")
    assert [s["storage"] for s in storages] == ["local", "local-lvm", "nfs-backup"]
    assert all(s["used"] + s["avail"] == s["total"] for s in storages)
    images = await _data(client, "/nodes/pve1/storage", content="images", format=1)
    assert [(s["storage"], s["formats"]["default"]) for s in images] == [
        ("local", "qcow2"),
        ("local-lvm", "raw"),
    ]
    shared = await _data(client, "/nodes/pve1/storage", target="pve2")
    assert [s["storage"] for s in shared] == ["nfs-backup"]


async def test_nextid(client: httpx2.AsyncClient) -> None:
    assert await _data(client, "/cluster/nextid") == 107 + 1
    assert await _data(client, "/cluster/nextid", vmid=500) == 500
    taken = await client.get("/cluster/nextid", params={"vmid": 100})
    assert taken.status_code == 400
    assert taken.json()["errors"] == {"vmid": "VM 100 already exists"}


# --- errors --------------------------------------------------------------------------


async def test_missing_guest_is_500_does_not_exist(client: httpx2.AsyncClient) -> None:
    response = await client.get("/nodes/pve1/qemu/999/status/current")
    assert response.status_code == 500
    message = "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
    assert response.reason_phrase == message
    assert response.json() == {"data": None, "message": message + "\n"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nodes/pve2/qemu/100/config", "nodes/pve2/qemu-server/100.conf"),
        ("/nodes/pve1/qemu/200/config", "nodes/pve1/qemu-server/200.conf"),
        ("/nodes/pve1/lxc/100/status/current", "nodes/pve1/lxc/100.conf"),
    ],
)
async def test_guest_on_other_node_or_kind_does_not_exist(
    client: httpx2.AsyncClient, path: str, expected: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 500
    assert response.json()["message"] == f"Configuration file '{expected}' does not exist\n"


async def test_unknown_node_is_500(client: httpx2.AsyncClient) -> None:
    response = await client.get("/nodes/pve9/qemu")
    assert response.status_code == 500
    assert response.reason_phrase.startswith("hostname lookup 'pve9' failed")


@pytest.mark.parametrize(
    ("path", "params", "errors"),
    [
        ("/nodes/pve1/qemu/abc/status/current", {},
         {"vmid": "type check ('integer') failed - got 'abc'"}),
        # pve-common check_prop checks the format before the range: pve-vmid's own words.
        ("/nodes/pve1/qemu/99/status/current", {},
         {"vmid": "invalid format - value does not look like a valid VM ID\n"}),
        ("/nodes/pve1/qemu/1000000000/config", {},
         {"vmid": "invalid format - value does not look like a valid VM ID\n"}),
        ("/nodes/pve1/qemu/100/config", {"snapshot": "x" * 41},
         {"snapshot": "value may only be 40 characters long"}),
        ("/nodes/pve1/qemu", {"bogus": "1"}, {"bogus": (
            "property is not defined in schema and the schema does not allow additional "
            "properties")}),
        ("/nodes/pve1/qemu", {"full": "true"},
         {"full": "type check ('boolean') failed - got 'true'"}),
        ("/cluster/resources", {"type": "vms"}, {"type": (
            "value 'vms' does not have a value in the enumeration 'vm, storage, node, sdn'")}),
        ("/nodes/pve_1/status", {},
         {"node": "invalid format - value does not look like a valid node name\n"}),
        ("/nodes/pve1/tasks", {"start": "-1", "limit": "x"},
         {"start": "value must have a minimum value of 0",
          "limit": "type check ('integer') failed - got 'x'"}),
    ],
)  # fmt: skip
async def test_parameter_errors_are_400_with_errors(
    client: httpx2.AsyncClient, path: str, params: dict[str, str], errors: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 400
    assert response.reason_phrase == "Parameter verification failed."
    body = response.json()
    assert body["data"] is None
    assert body["message"] == "Parameter verification failed.\n"
    assert body["errors"] == errors


async def test_root_only_option_is_refused_for_a_token(client: httpx2.AsyncClient) -> None:
    response = await client.post("/nodes/pve1/qemu/101/status/start", data={"skiplock": "1"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"skiplock": "Only root may use this option."}


async def test_body_conflicting_with_the_path_is_400(client: httpx2.AsyncClient) -> None:
    response = await client.post("/nodes/pve1/qemu/101/status/start", data={"vmid": "102"})
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "vmid": "duplicate parameter (already defined in URI) with conflicting values!"
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/foo"),
        ("POST", "/version"),
        ("GET", "/nodes/pve1/lxc/200/exec"),
        ("PUT", "/nodes/pve1/qemu/100/snapshot"),  # a path PVE has, without PUT
        ("POST", "/cluster/acme/account"),  # a method PVE has, not simulated (ACME)
        ("GET", "/nodes/pve1/qemu/100/snapshot/a/b"),  # deeper than any template
    ],
)
async def test_unknown_method_or_path_is_501(
    client: httpx2.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 501
    message = f"Method '{method} {path}' not implemented"
    assert response.reason_phrase == message
    assert response.json() == {"data": None, "message": message + "\n"}


async def test_other_http_methods_are_501_not_available(client: httpx2.AsyncClient) -> None:
    response = await client.request("PATCH", "/version")
    assert response.status_code == 501
    assert response.reason_phrase == "method 'PATCH' not available"
    assert response.content == b""


async def test_get_with_a_body_is_501_unexpected_content(client: httpx2.AsyncClient) -> None:
    response = await client.request("GET", "/version", content=b"x=1")
    assert response.status_code == 501
    assert response.reason_phrase == "Unexpected content"


@pytest.mark.parametrize("encoding", ["form", "json"])
async def test_post_bodies_form_and_json(client: httpx2.AsyncClient, encoding: str) -> None:
    path = "/nodes/pve3/qemu/106/status/shutdown"
    if encoding == "json":
        response = await client.post(path, json={"timeout": 30, "forceStop": True})
    else:
        response = await client.post(path, data={"timeout": "30", "forceStop": "1"})
    assert response.status_code == 200, response.text
    assert response.json()["data"].startswith("UPID:pve3:")


async def test_upid_in_path_may_be_percent_encoded(client: httpx2.AsyncClient) -> None:
    tasks = await _data(client, "/nodes/pve2/tasks", limit=1)
    upid = tasks[0]["upid"]
    encoded = upid.replace(":", "%3A").replace("@", "%40")
    response = await client.get(f"/nodes/pve2/tasks/{encoded}/status")
    assert response.status_code == 200
    assert response.json()["data"]["upid"] == upid
