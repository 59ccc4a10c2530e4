"""The simulated node system (simulator/nodes.py): services, APT, disks, certificates, the
join information, and a reboot or shutdown that takes the node and its guests down."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle
from pvemcp.simulator.nodes import BOOT_SECONDS
from tests.simulator.conftest import FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio


async def _log(client: httpx2.AsyncClient, upid: str) -> list[str]:
    node = upid.split(":")[1]
    return [line["t"] for line in await get_data(client, f"/nodes/{node}/tasks/{upid}/log")]


async def _service(client: httpx2.AsyncClient, node: str, name: str) -> dict[str, Any]:
    state: dict[str, Any] = await get_data(client, f"/nodes/{node}/services/{name}/state")
    return state


async def test_services_list_every_unit_with_systemd_states(
    fresh_client: httpx2.AsyncClient,
) -> None:
    services = {s["service"]: s for s in await get_data(fresh_client, "/nodes/pve1/services")}
    assert len(services) == 23
    assert services["pveproxy"]["state"] == "running"
    assert services["postfix"]["state"] == "exited"
    assert services["systemd-timesyncd"]["unit-state"] == "not-found"
    assert services["proxmox-firewall"]["active-state"] == "inactive"


async def test_stop_and_start_a_service_as_tasks(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve2/services/chrony/stop")
    assert upid.split(":")[5:7] == ["srvstop", "chrony"]
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert (await _service(fresh_client, "pve2", "chrony"))["state"] == "dead"
    # reload is try-reload-or-restart: a stopped service stays stopped
    await post_upid(fresh_client, "/nodes/pve2/services/chrony/reload")
    assert (await _service(fresh_client, "pve2", "chrony"))["active-state"] == "inactive"
    await post_upid(fresh_client, "/nodes/pve2/services/chrony/start")
    assert (await _service(fresh_client, "pve2", "chrony"))["state"] == "running"
    # the other nodes' chrony is untouched
    assert (await _service(fresh_client, "pve1", "chrony"))["state"] == "running"


async def test_stopping_an_essential_service_fails_in_the_task(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await post_upid(fresh_client, "/nodes/pve1/services/pveproxy/stop")
    status = await task_status(fresh_client, upid)
    assert status["exitstatus"] == (
        "invalid service cmd 'pveproxy stop': refusing to stop essential service!"
    )
    assert (await _service(fresh_client, "pve1", "pveproxy"))["state"] == "running"
    missing = await post_upid(fresh_client, "/nodes/pve1/services/systemd-timesyncd/start")
    status = await task_status(fresh_client, missing)
    assert status["exitstatus"] == "command 'systemctl start systemd-timesyncd' failed: exit code 5"
    assert "Unit systemd-timesyncd.service not found." in " ".join(
        await _log(fresh_client, missing)
    )


async def test_an_unknown_service_is_refused_by_the_schema(
    fresh_client: httpx2.AsyncClient,
) -> None:
    response = await fresh_client.post("/nodes/pve1/services/nginx/restart")
    assert response.status_code == 400
    assert "service" in response.json()["errors"]


async def test_apt_refresh_shows_the_offered_updates(fresh_client: httpx2.AsyncClient) -> None:
    before = [p["Package"] for p in await get_data(fresh_client, "/nodes/pve1/apt/update")]
    assert before == ["openssl"]
    upid = await post_upid(fresh_client, "/nodes/pve1/apt/update")
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert "starting apt-get update" in await _log(fresh_client, upid)
    after = {p["Package"]: p for p in await get_data(fresh_client, "/nodes/pve1/apt/update")}
    assert set(after) == {"openssl", "pve-manager", "qemu-server", "proxmox-kernel-6.17"}
    assert after["pve-manager"]["OldVersion"] == "9.2.0"
    # another node's cache is its own
    assert len(await get_data(fresh_client, "/nodes/pve2/apt/update")) == 1


async def test_changelog_and_apts_errors_in_the_text(fresh_client: httpx2.AsyncClient) -> None:
    text = await get_data(fresh_client, "/nodes/pve1/apt/changelog", name="qemu-server")
    assert text.startswith("qemu-server (9.1.4) trixie; urgency=medium")
    assert "qemu-server (9.1.3)" in text
    unknown = await get_data(fresh_client, "/nodes/pve1/apt/changelog", name="nginx")
    assert unknown == "E: Unable to locate package nginx\nRC: 100"


async def test_disks_smart_zfs_and_lvm_agree(fresh_client: httpx2.AsyncClient) -> None:
    disks = {d["devpath"]: d for d in await get_data(fresh_client, "/nodes/pve3/disks/list")}
    assert disks["/dev/sdb"]["health"] == "FAILED" and disks["/dev/sdb"]["used"] == "ZFS"
    smart = await get_data(fresh_client, "/nodes/pve3/disks/smart", disk="/dev/sdb")
    realloc = next(a for a in smart["attributes"] if a["name"] == "Reallocated_Sector_Ct")
    assert (realloc["raw"], realloc["fail"]) == ("120", "NOW")
    nvme = await get_data(fresh_client, "/nodes/pve1/disks/smart", disk="/dev/nvme0n1")
    assert nvme["type"] == "text" and "Percentage Used" in nvme["text"]
    bad = await fresh_client.get("/nodes/pve1/disks/smart", params={"disk": "/dev/sdz"})
    assert (bad.status_code, bad.json()["message"]) == (500, "not a valid block device\n")
    pools = await get_data(fresh_client, "/nodes/pve3/disks/zfs")
    assert [(p["name"], p["health"]) for p in pools] == [("rpool", "DEGRADED")]
    detail = await get_data(fresh_client, "/nodes/pve3/disks/zfs/rpool")
    assert detail["state"] == "DEGRADED" and "Replace the faulted device" in detail["action"]
    assert await get_data(fresh_client, "/nodes/pve1/disks/zfs") == []
    thin = (await get_data(fresh_client, "/nodes/pve1/disks/lvmthin"))[0]
    lvm = await get_data(fresh_client, "/nodes/pve1/storage/local-lvm/status")
    assert (thin["lv_size"], thin["used"]) == (lvm["total"], lvm["used"])


async def test_certificates_and_join_info_carry_no_secret(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    certs = await get_data(fresh_client, "/nodes/pve1/certificates/info")
    ssl = next(c for c in certs if c["filename"] == "pve-ssl.pem")
    assert ssl["fingerprint"] == fresh_sim.fingerprint_colons
    assert "pve1.demo.lan" in ssl["san"]
    join = await get_data(fresh_client, "/cluster/config/join")
    assert join["preferred_node"] == "pve1"
    assert {n["name"]: n["pve_addr"] for n in join["nodelist"]}["pve2"] == "10.10.10.12"
    text = str(certs) + str(join)
    assert "PRIVATE KEY" not in text and "authkey" not in text
    missing = await fresh_client.get("/cluster/config/join", params={"node": "pve9"})
    assert (missing.status_code, missing.json()["message"]) == (500, "unknown node 'pve9'\n")


async def test_reboot_stops_the_guests_and_the_node_comes_back(
    timed_sim: SimulatorHandle, timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    response = await timed_client.post("/nodes/pve1/status", data={"command": "reboot"})
    assert (response.status_code, response.json()["data"]) == (200, None)
    tasks = await get_data(timed_client, "/nodes/pve1/tasks", source="active")
    stopall = next(t for t in tasks if t["type"] == "stopall")
    assert stopall["user"] == "root@pam"
    clock.advance(30)
    nodes = {n["node"]: n for n in await get_data(timed_client, "/nodes")}
    assert nodes["pve1"]["status"] == "offline" and "uptime" not in nodes["pve1"]
    down = await timed_client.get("/nodes/pve1/qemu/100/status/current")
    assert (down.status_code, down.json()["message"]) == (595, "No route to host\n")
    guests = await get_data(timed_client, "/cluster/resources", type="vm")
    assert {g["vmid"]: g["status"] for g in guests}[100] == "unknown"
    storages = await get_data(timed_client, "/cluster/resources", type="storage")
    local = next(s for s in storages if s["id"] == "storage/pve1/local")
    assert local["status"] == "unknown" and "disk" not in local
    status = await get_data(timed_client, "/cluster/status")
    assert status[0]["quorate"] == 1
    clock.advance(BOOT_SECONDS + 30)
    nodes = {n["node"]: n for n in await get_data(timed_client, "/nodes")}
    # it booted 40 s after its 8 s of stopall: 52 s ago
    assert nodes["pve1"]["status"] == "online" and nodes["pve1"]["uptime"] == 52
    assert (await _service(timed_client, "pve1", "pveproxy"))["state"] == "running"
    log = await _log(timed_client, stopall["upid"])
    assert "Stopping VM 100 (timeout = 180 seconds)" in log
    assert "Stopping CT 200 (timeout = 180 seconds)" in log
    # startall starts the onboot guests (web01, web02, dns01), not the others (test)
    clock.advance(15)
    state = {g["vmid"]: g["status"] for g in await get_data(timed_client, "/nodes/pve1/qemu")}
    assert state[100] == "running" and state[101] == "running" and state[102] == "stopped"


async def test_shutdown_leaves_the_node_off_and_two_down_lose_quorum(
    fresh_client: httpx2.AsyncClient,
) -> None:
    for node in ("pve2", "pve3"):
        response = await fresh_client.post(f"/nodes/{node}/status", data={"command": "shutdown"})
        assert response.status_code == 200
    nodes = {n["node"]: n["status"] for n in await get_data(fresh_client, "/nodes")}
    assert nodes == {"pve1": "online", "pve2": "offline", "pve3": "offline"}
    assert (await get_data(fresh_client, "/cluster/status"))[0]["quorate"] == 0
