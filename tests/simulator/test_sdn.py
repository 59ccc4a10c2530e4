"""SDN over real HTTPS, as pve-network keeps it: the config changes at once, what runs only
at an apply; `pending=1` shows the difference; guests see only running VNets as bridges;
PVE's checks refuse a bad change whole, in its words."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from .conftest import get_data, task_status

pytestmark = pytest.mark.anyio

SDN = "/cluster/sdn"


async def _send(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> Any:
    if method in ("GET", "DELETE"):
        return await client.request(method, path, params=params)
    return await client.request(method, path, data=params)


async def _ok(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> Any:
    response = await _send(client, method, path, **params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _refused(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> str:
    response = await _send(client, method, path, **params)
    assert response.status_code == 500, response.text
    message: str = response.json()["message"]
    return message


async def _bridges(client: httpx2.AsyncClient, node: str = "pve1") -> list[str]:
    found = await get_data(client, f"/nodes/{node}/network", type="any_bridge")
    return [item["iface"] for item in found]


async def test_the_seed_is_one_applied_simple_zone_with_a_vnet_and_subnet(
    client: httpx2.AsyncClient,
) -> None:
    assert [z["zone"] for z in await get_data(client, f"{SDN}/zones")] == ["lab"]
    vnets = {v["vnet"]: v for v in await get_data(client, f"{SDN}/vnets", pending="1")}
    assert "state" not in vnets["labnet"]
    assert vnets["dmz"]["state"] == "new"
    assert vnets["dmz"]["pending"] == {"zone": "lab", "alias": "DMZ"}
    (subnet,) = await get_data(client, f"{SDN}/vnets/labnet/subnets")
    assert (subnet["subnet"], subnet["cidr"], subnet["gateway"]) == (
        "lab-10.20.0.0-24", "10.20.0.0/24", "10.20.0.1")  # fmt: skip
    assert "labnet" in await _bridges(client) and "dmz" not in await _bridges(client)
    zones = await get_data(client, "/cluster/resources", type="sdn")
    assert {z["sdn"] for z in zones if z["node"] == "pve2"} == {"localnetwork", "lab"}


async def test_a_vnet_and_subnet_are_pending_until_applied(
    fresh_client: httpx2.AsyncClient,
) -> None:
    await _ok(fresh_client, "POST", f"{SDN}/vnets", vnet="web", zone="lab", alias="web tier")
    await _ok(fresh_client, "POST", f"{SDN}/vnets/web/subnets", subnet="10.30.0.0/24",
              type="subnet", gateway="10.30.0.1", snat="1")  # fmt: skip
    pending = {v["vnet"]: v for v in await get_data(fresh_client, f"{SDN}/vnets", pending="1")}
    assert pending["web"]["state"] == "new"
    assert pending["web"]["pending"] == {"zone": "lab", "alias": "web tier"}
    assert "web" not in await _bridges(fresh_client)
    running = await get_data(fresh_client, f"{SDN}/vnets", running="1")
    assert [v["vnet"] for v in running] == ["labnet"]
    upid = await _ok(fresh_client, "PUT", SDN)
    assert upid.split(":")[5] == "reloadnetworkall"
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert "web" in await _bridges(fresh_client)
    # Each node's reload is PUT /nodes/<node>/network: pve3's pending vmbr1 went live too.
    pve3 = (await _send(fresh_client, "GET", "/nodes/pve3/network")).json()
    assert "changes" not in pve3
    assert [i.get("active") for i in pve3["data"] if i["iface"] == "vmbr1"] == [1]
    subnets = await get_data(fresh_client, f"{SDN}/vnets/web/subnets", pending="1")
    assert [(s["subnet"], s.get("state")) for s in subnets] == [("lab-10.30.0.0-24", None)]
    await _ok(fresh_client, "PUT", f"{SDN}/vnets/web", alias="web", delete="isolate-ports")
    changed = await get_data(fresh_client, f"{SDN}/vnets/web", pending="1")
    assert (changed["state"], changed["pending"], changed["alias"]) == (
        "changed", {"alias": "web"}, "web tier")  # fmt: skip


async def test_deletes_are_refused_while_used_and_pending_once_made(
    fresh_client: httpx2.AsyncClient,
) -> None:
    assert await _refused(fresh_client, "DELETE", f"{SDN}/zones/lab") == (
        "delete sdn zone object failed: zone lab is used by vnet dmz\n")  # fmt: skip
    message = await _refused(fresh_client, "DELETE", f"{SDN}/vnets/labnet")
    assert message == ("delete sdn vnet object failed: 400 Parameter verification failed.\n"
                       "vnet: Can't delete vnet if subnets exists\n")  # fmt: skip
    await _ok(fresh_client, "DELETE", f"{SDN}/vnets/labnet/subnets/lab-10.20.0.0-24")
    await _ok(fresh_client, "DELETE", f"{SDN}/vnets/labnet")
    states = {v["vnet"]: v["state"] for v in await get_data(fresh_client, f"{SDN}/vnets",
                                                            pending="1")}  # fmt: skip
    assert states == {"labnet": "deleted", "dmz": "new"}
    assert "labnet" in await _bridges(fresh_client)
    await _ok(fresh_client, "PUT", SDN)
    assert "labnet" not in await _bridges(fresh_client)


@pytest.mark.parametrize(
    ("path", "params", "text"),
    [
        ("/zones", {"zone": "lab", "type": "simple"}, "sdn zone object ID 'lab' already defined"),
        ("/zones", {"zone": "vl", "type": "vlan"},
         '"bridge":"property is missing and it is not optional"'),
        ("/vnets", {"vnet": "labnet", "zone": "lab"},
         "sdn vnet object ID 'labnet' already defined"),
        ("/vnets", {"vnet": "v2", "zone": "lab", "tag": "5"},
         "tag: vlan tag is not allowed on simple zone"),
        ("/vnets", {"vnet": "v2", "zone": "nope"}, "sdn 'nope' does not exist"),
        ("/vnets/labnet/subnets", {"subnet": "10.20.0.0/24", "type": "subnet"},
         "sdn subnet object ID 'lab-10.20.0.0-24' already defined"),
        ("/vnets/labnet/subnets", {"subnet": "10.40.0.0/24", "type": "subnet",
                                   "gateway": "10.41.0.1"},
         "gateway: 10.41.0.1 is not in subnet 10.40.0.0/24"),
    ],
)  # fmt: skip
async def test_bad_objects_are_refused_in_pve_words(
    fresh_client: httpx2.AsyncClient, path: str, params: dict[str, str], text: str
) -> None:
    before = await get_data(fresh_client, f"{SDN}/vnets", pending="1")
    response = await _send(fresh_client, "POST", SDN + path, **params)
    assert response.status_code in (400, 500) and text in response.text, response.text
    assert await get_data(fresh_client, f"{SDN}/vnets", pending="1") == before


async def test_a_vlan_zone_needs_a_tag_on_its_vnets(fresh_client: httpx2.AsyncClient) -> None:
    await _ok(fresh_client, "POST", f"{SDN}/zones", zone="dc", type="vlan", bridge="vmbr1")
    message = await _refused(fresh_client, "POST", f"{SDN}/vnets", vnet="v10", zone="dc")
    assert message.endswith("tag: missing vlan tag\n")
    await _ok(fresh_client, "POST", f"{SDN}/vnets", vnet="v10", zone="dc", tag="10")
    message = await _refused(fresh_client, "POST", f"{SDN}/vnets", vnet="v11", zone="dc", tag="10")
    assert message.endswith("tag: tag 10 already exist in vnet v10\n")
