"""A node's interfaces over real HTTPS, as pve-manager's Network.pm and pve-common's
Interfaces.pm behave: changes land in the pending file (GET shows them, with the `changes`
diff, new interfaces not `active`), a reload task applies them, DELETE reverts them, and
PVE's checks refuse a bad change whole, in PVE's words."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from .conftest import get_data, task_status

pytestmark = pytest.mark.anyio

NET = "/nodes/pve1/network"


async def _send(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> Any:
    if method in ("GET", "DELETE"):
        response = await client.request(method, path, params=params)
    else:
        response = await client.request(method, path, data=params)
    return response


async def _ok(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> Any:
    response = await _send(client, method, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


async def _refused(
    client: httpx2.AsyncClient, method: str, path: str, **params: Any
) -> tuple[int, str, dict[str, str]]:
    response = await _send(client, method, path, **params)
    body = response.json()
    return response.status_code, body["message"].strip(), body.get("errors") or {}


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["iface"]: item for item in items}


async def test_the_seed_has_vmbr0_with_the_node_address_and_vmbr1_on_some_nodes(
    client: httpx2.AsyncClient,
) -> None:
    pve1 = _by_name(await get_data(client, NET))
    assert pve1["vmbr0"]["cidr"] == pve1["vmbr0"]["address"] + "/24"
    assert pve1["vmbr0"]["bridge_ports"] == "eno1" and pve1["vmbr0"]["active"] == 1
    assert pve1["vmbr1"]["bridge_vlan_aware"] == 1 and pve1["eno1"]["exists"] == 1
    pve3 = await _ok(client, "GET", "/nodes/pve3/network")
    assert set(_by_name(pve3["data"])) == {"eno1", "eno2", "vmbr0", "vmbr1"}
    assert "active" not in _by_name(pve3["data"])["vmbr1"]
    assert "+iface vmbr1 inet manual" in pve3["changes"]
    assert [i["iface"] for i in await get_data(client, NET, type="eth")] == ["eno1"]


async def test_a_new_bridge_is_pending_until_the_reload_task_applies_it(
    fresh_client: httpx2.AsyncClient,
) -> None:
    await _ok(fresh_client, "POST", NET, iface="vmbr7", type="bridge", bridge_vlan_aware="1",
              bridge_vids="10,20 30-40", comments="lab")  # fmt: skip
    answer = await _ok(fresh_client, "GET", NET, type="any_bridge")
    new = _by_name(answer["data"])["vmbr7"]
    assert "active" not in new and new["bridge_vids"] == "10 20 30-40"
    assert new["method"] == "manual" and new["families"] == ["inet"]
    assert "+iface vmbr7 inet manual" in answer["changes"]
    assert answer["changes"].startswith("--- /etc/network/interfaces\n")
    upid = (await _ok(fresh_client, "PUT", NET))["data"]
    assert upid.split(":")[5:7] == ["srvreload", "networking"]
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    answer = await _ok(fresh_client, "GET", NET)
    assert "changes" not in answer and _by_name(answer["data"])["vmbr7"]["active"] == 1


async def test_revert_drops_every_pending_change(fresh_client: httpx2.AsyncClient) -> None:
    await _ok(fresh_client, "PUT", f"{NET}/vmbr1", type="bridge", mtu="9000",
              delete="comments")  # fmt: skip
    await _ok(fresh_client, "DELETE", f"{NET}/vmbr0")
    pending = await _ok(fresh_client, "GET", NET)
    assert "vmbr0" not in _by_name(pending["data"])
    assert _by_name(pending["data"])["vmbr1"]["mtu"] == 9000
    assert "-#guest VLANs" in pending["changes"] and "+\tmtu 9000" in pending["changes"]
    await _ok(fresh_client, "DELETE", NET)
    after = await _ok(fresh_client, "GET", NET)
    assert "changes" not in after and "mtu" not in _by_name(after["data"])["vmbr1"]


async def test_cidr_becomes_address_and_netmask_and_a_vlan_finds_its_parent(
    fresh_client: httpx2.AsyncClient,
) -> None:
    await _ok(fresh_client, "POST", NET, iface="vmbr0.50", type="vlan", cidr="192.0.2.5/28")
    item = await get_data(fresh_client, f"{NET}/vmbr0.50")
    assert (item["address"], item["netmask"], item["cidr"]) == ("192.0.2.5", "28",
                                                                "192.0.2.5/28")  # fmt: skip
    assert item["method"] == "static" and "active" not in item
    await _ok(fresh_client, "POST", NET, iface="vlan60", type="vlan", **{"vlan-raw-device": "eno1"})
    status, message, _ = await _refused(fresh_client, "POST", NET, iface="vlan70", type="vlan",
                                        **{"vlan-raw-device": "eno9"})  # fmt: skip
    assert (status, message) == (500, "vlan 'vlan70' - unable to find parent 'eno9'")


@pytest.mark.parametrize(
    ("params", "status", "field", "text"),
    [
        ({"iface": "vmbr0", "type": "bridge"}, 400, "iface", "interface already exists"),
        ({"iface": "vmbr5", "type": "bridge", "bridge_ports": "eno1"}, 400, "bridge_ports",
         "eno1 is already used on interface 'vmbr0'."),
        ({"iface": "vmbr5", "type": "bridge", "cidr": "10.9.9.2/24", "gateway": "10.9.9.1"},
         400, "gateway", "Default gateway already exists on interface 'vmbr0'."),
        ({"iface": "vmbr5", "type": "bridge", "cidr": "10.9.9.300/24"}, 400, "cidr", "invalid"),
        ({"iface": "vmbr5", "type": "bridge", "bridge_ports": "eno7"}, 500, None,
         "bridge 'vmbr5' - unable to find bridge port 'eno7'"),
        ({"iface": "bond0", "type": "bond", "slaves": "eno5"}, 500, None,
         "bond 'bond0' - unable to find slave 'eno5'"),
        ({"iface": "vmbr5", "type": "OVSBridge"}, 500, None,
         "Open VSwitch is not installed (need package 'openvswitch-switch')"),
    ],
)  # fmt: skip
async def test_bad_changes_are_refused_whole_in_pve_words(
    fresh_client: httpx2.AsyncClient,
    params: dict[str, str],
    status: int,
    field: str | None,
    text: str,
) -> None:
    got, message, errors = await _refused(fresh_client, "POST", NET, **params)
    assert got == status
    assert text in (errors[field] if field else message)
    assert "changes" not in await _ok(fresh_client, "GET", NET)


async def test_update_and_delete_of_an_unknown_interface_and_a_missing_ifupdown2(
    fresh_sim: Any, fresh_client: httpx2.AsyncClient
) -> None:
    status, _, errors = await _refused(fresh_client, "PUT", f"{NET}/vmbr9", type="bridge")
    assert (status, errors) == (400, {"iface": "interface does not exist"})
    status, _, errors = await _refused(fresh_client, "GET", f"{NET}/vmbr9")
    assert (status, errors) == (400, {"iface": "interface does not exist"})
    status, message, _ = await _refused(fresh_client, "DELETE", f"{NET}/eno1")
    assert (status, message) == (500, "bridge 'vmbr0' - unable to find bridge port 'eno1'")
    fresh_sim.state.networks["pve1"].ifupdown2 = False
    status, message, _ = await _refused(fresh_client, "PUT", NET)
    assert (status, message) == (500, "you need ifupdown2 to reload network configuration")
