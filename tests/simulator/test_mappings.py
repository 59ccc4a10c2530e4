"""Hardware mappings over HTTPS: the seeded GPU, a USB mapping made, used by a VM,
changed and deleted, and PVE's refusals."""

from __future__ import annotations

import httpx2
import pytest

from .conftest import get_data

pytestmark = pytest.mark.anyio

KEY = "node=pve1,id=046d:c52b,path=1-1.2,description=dongle"


async def test_the_seeded_gpu_and_its_node_check(client: httpx2.AsyncClient) -> None:
    [gpu] = await get_data(client, "/cluster/mapping/pci")
    assert gpu["id"] == "gpu" and gpu["map"][0].startswith("node=pve1,path=0000:01:00,")
    assert "checks" not in gpu
    [checked] = await get_data(client, "/cluster/mapping/pci", **{"check-node": "pve2"})
    assert checked["checks"] == [{"severity": "warning", "message": "No mapping for node pve2."}]
    [here] = await get_data(client, "/cluster/mapping/pci", **{"check-node": "pve1"})
    assert here["checks"] == []
    assert await get_data(client, "/cluster/mapping/usb") == []


async def test_a_usb_mapping_made_used_changed_deleted(fresh_client: httpx2.AsyncClient) -> None:
    client = fresh_client
    made = await client.post(
        "/cluster/mapping/usb", data={"id": "dongle", "map": [KEY], "description": "licence"}
    )
    assert made.status_code == 200, made.text
    again = await client.post("/cluster/mapping/usb", data={"id": "dongle", "map": [KEY]})
    assert again.status_code == 500
    assert again.json()["message"] == (
        "create hardware mapping failed: usb ID 'dongle' already defined\n"
    )
    used = await client.put("/nodes/pve1/qemu/102/config", data={"usb0": "mapping=dongle"})
    assert used.status_code == 200, used.text
    config = await get_data(client, "/nodes/pve1/qemu/102/config")
    assert config["usb0"] == "mapping=dongle"
    one = await get_data(client, "/cluster/mapping/usb/dongle")
    second = "node=pve2,id=046d:c52b"
    changed = await client.put("/cluster/mapping/usb/dongle",
                               data={"map": [KEY, second], "delete": "description",
                                     "digest": one["digest"]})  # fmt: skip
    assert changed.status_code == 200, changed.text
    now = await get_data(client, "/cluster/mapping/usb/dongle")
    assert now["map"] == [KEY, second] and "description" not in now
    # PVE deletes a mapping a guest still uses (the guest's next start fails).
    assert (await client.delete("/cluster/mapping/usb/dongle")).status_code == 200
    missing = await client.get("/cluster/mapping/usb/dongle")
    assert missing.status_code == 500
    assert missing.json()["message"] == "mapping 'dongle' not found\n"


@pytest.mark.parametrize(
    ("kind", "entry", "error"),
    [
        ("usb", "node=pve1,path=1-1", "invalid format - id: property is missing"),
        ("pci", "node=pve1,id=10de:24b0", "invalid format - path: property is missing"),
        ("usb", "node=pve1,id=zzzz:1", "invalid format - id: value does not match the regex "
         "pattern ('zzzz:1')"),
    ],
)  # fmt: skip
async def test_bad_maps_are_refused(
    client: httpx2.AsyncClient, kind: str, entry: str, error: str
) -> None:
    response = await client.post(f"/cluster/mapping/{kind}", data={"id": "bad", "map": [entry]})
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == {"map": error}
    assert "bad" not in [m["id"] for m in await get_data(client, f"/cluster/mapping/{kind}")]
