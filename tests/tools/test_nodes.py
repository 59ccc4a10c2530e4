"""The nodes toolset end to end: the MCP SDK client, the gateway and a simulator.

The declared examples and rejects run in test_examples.py; these are what one call cannot
show: a service restarted and its state read back, updates that appear after a refresh,
SMART of a failing disk, facts that carry no secret, the refusals, and a reboot confirmed
by the user, whose guests stop and whose node comes back.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

from pvemcp.simulator.server import SimulatorHandle
from tests.e2e.test_tools_inmemory import data, error
from tests.tools.calls import call, ok
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio


async def _call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    return data(await client.call_tool(name, args))


async def _info(client: Client, node: str, kind: str, **args: Any) -> dict[str, Any]:
    return await _call(client, "proxmox_node_info", node=node, kind=kind, **args)


async def _services(client: Client, node: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in (await _info(client, node, "services"))["rows"]}


async def _node_status(client: Client, node: str) -> str:
    answer = await _call(client, "proxmox_node_list")
    return str(next(row["status"] for row in answer["nodes"] if row["node"] == node))


async def _until(client: Client, node: str, status: str) -> None:
    """Poll proxmox_node_list (as an agent would) until `node` has `status` (20 s)."""
    for _ in range(200):
        if await _node_status(client, node) == status:
            return
        await anyio.sleep(0.1)
    raise AssertionError(f"{node} never became {status}")


async def test_scenario_service_updates_smart_and_a_reboot(
    own_sim: SimulatorHandle, client: Client
) -> None:
    # list services, restart one and see its state
    services = await _services(client, "pve2")
    assert services["chrony"] == {
        "name": "chrony", "state": "running", "active": "active", "unit": "enabled"
    }  # fmt: skip
    stopped = await _call(client, "proxmox_node_service", node="pve2", service="cron",
                          action="stop")  # fmt: skip
    assert stopped["exitstatus"] == "OK" and stopped["upid"].split(":")[5] == "srvstop"
    assert (await _services(client, "pve2"))["cron"]["state"] == "dead"
    await _call(client, "proxmox_node_service", node="pve2", service="cron", action="restart")
    assert (await _services(client, "pve2"))["cron"]["state"] == "running"

    # see updates after a refresh
    before = await _info(client, "pve2", "updates")
    assert [row["package"] for row in before["rows"]] == ["openssl"]
    refreshed = await _call(client, "proxmox_node_apt_refresh", node="pve2")
    assert refreshed["exitstatus"] == "OK"
    after = {row["package"]: row for row in (await _info(client, "pve2", "updates"))["rows"]}
    assert after["pve-manager"] == {
        "package": "pve-manager", "installed": "9.2.0", "available": "9.2.1", "origin": "Proxmox"
    }  # fmt: skip
    log = await _info(client, "pve2", "changelog", package="pve-manager", version="9.2.1")
    assert log["text"].startswith("pve-manager (9.2.1)")

    # read SMART of a disk
    disks = {row["dev"]: row for row in (await _info(client, "pve3", "disks"))["rows"]}
    assert disks["/dev/sdb"]["health"] == "FAILED" and disks["/dev/sdb"]["used"] == "ZFS"
    smart = await _info(client, "pve3", "smart", disk="/dev/sdb")
    assert smart["facts"] == {"disk": "/dev/sdb", "health": "FAILED", "type": "ata"}
    realloc = next(row for row in smart["rows"] if row["name"] == "Reallocated_Sector_Ct")
    assert (realloc["raw"], realloc["fail"]) == ("120", "NOW")
    pool = await _info(client, "pve3", "zfs", pool="rpool")
    assert pool["facts"]["state"] == "DEGRADED"
    assert {"name": "mirror-0", "state": "DEGRADED"}.items() <= pool["rows"][1].items()

    # reboot a node with confirmation: its guests stop, the node comes back
    asked = error(await client.call_tool("proxmox_node_power", {"node": "pve3",
                                                                "command": "reboot"}))  # fmt: skip
    assert asked["code"] == "confirmation_required"
    plan = str(asked["details"])
    assert "qemu 106 (gitlab)" in plan and "lxc 203 (test)" in plan
    assert "ci-runner" not in plan  # stopped already
    token = asked["details"]["confirm_token"]
    done = await _call(client, "proxmox_node_power", node="pve3", command="reboot",
                       confirm_token=token)  # fmt: skip
    assert done["stopping"] == [106, 203]
    await _until(client, "pve3", "offline")
    gone = error(await client.call_tool("proxmox_node_info", {"node": "pve3", "kind": "dns"}))
    assert (gone["code"], gone["field"]) == ("precondition_failed", "node")
    assert own_sim.state.guests[106].status == "stopped"
    await _until(client, "pve3", "online")
    # gitlab has no onboot: it stays stopped after the boot; the node's services run
    guest = await _call(client, "proxmox_guest_get", vmid=106, include_config=False)
    assert guest["status"] == "stopped"
    assert (await _services(client, "pve3"))["pveproxy"]["state"] == "running"


async def test_facts_carry_no_secret(session: Session) -> None:
    certs = ok(await call(session, "proxmox_node_info", node="pve1", kind="certificates"))
    ssl = next(row for row in certs["rows"] if row["file"] == "pve-ssl.pem")
    assert ssl["fingerprint"] == session.sim.fingerprint_colons
    assert "pve1.demo.lan" in ssl["san"] and ssl["key"] == "rsaEncryption 2048"
    assert ssl["days_left"] > 0 and ssl["not_after"].endswith("Z")
    answer = ok(await call(session, "proxmox_node_info", node="pve1", kind="subscription"))
    facts = answer["facts"]
    assert facts["status"] == "active" and "key" not in facts
    # PVE (and the simulator) sent the key: the tool left it out
    sent = next(d for m, p, _, d in session.calls if p.endswith("/subscription"))
    assert sent["key"] and sent["key"] not in str(answer)
    join = ok(await call(session, "proxmox_node_info", node="pve2", kind="join"))
    assert join["facts"]["preferred_node"] == "pve2"
    assert set(join["facts"]["totem"]) <= {
        "cluster_name", "config_version", "ip_version", "link_mode", "secauth", "version"
    }  # fmt: skip
    assert [row["name"] for row in join["rows"]] == ["pve1", "pve2", "pve3"]
    assert all(len(row["fingerprint"]) == 95 for row in join["rows"])
    assert [p for m, p, _, _ in session.calls if "join" in p] == ["/cluster/config/join"]


async def test_refusals_name_the_field(own_sim: SimulatorHandle, client: Client) -> None:
    tasks = len(list(own_sim.state.tasks))
    essential = error(await client.call_tool(
        "proxmox_node_service", {"node": "pve2", "service": "pvedaemon", "action": "stop"}
    ))  # fmt: skip
    assert (essential["code"], essential["field"]) == ("precondition_failed", "action")
    corosync = error(await client.call_tool(
        "proxmox_node_service", {"node": "pve2", "service": "corosync", "action": "stop"}
    ))  # fmt: skip
    assert "quorum" in corosync["message"]
    version = error(await client.call_tool(
        "proxmox_node_info",
        {"node": "pve1", "kind": "changelog", "package": "qemu-server", "version": "1.0"},
    ))  # fmt: skip
    assert (version["code"], version["field"]) == ("not_found", "version")
    # pve2 down: a shutdown of pve3 would leave 1 of 3 nodes, without quorum
    own_sim.state.nodes["pve2"].online = False
    quorum = error(await client.call_tool(
        "proxmox_node_power", {"node": "pve3", "command": "shutdown"}
    ))  # fmt: skip
    assert (quorum["code"], quorum["field"]) == ("precondition_failed", "node")
    assert "loses quorum" in quorum["message"]
    offline = error(await client.call_tool("proxmox_node_apt_refresh", {"node": "pve2"}))
    assert (offline["code"], offline["field"]) == ("precondition_failed", "node")
    assert len(list(own_sim.state.tasks)) == tasks  # nothing was sent


async def test_reboot_of_the_gateways_node_warns(client: Client) -> None:
    plan = await _call(client, "proxmox_node_power", node="pve1", command="reboot", dry_run=True)
    text = str(plan)
    assert "this gateway talks to pve1" in text
    assert "qemu 100 (web01)" in text and "lxc 200 (dns01)" in text
