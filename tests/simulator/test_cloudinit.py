"""Cloud-init and the guest agent's reads over HTTPS: what changed since the drive was
generated, the generated files as qemu-server writes them, regeneration, and the agent's
refusals in PVE's words."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from .conftest import get_data

pytestmark = pytest.mark.anyio

TEMPLATE = "/nodes/pve2/qemu/9000"  # a cloud-init drive, ciuser debian, stopped
NO_DRIVE = "/nodes/pve1/qemu/101"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx7 ops@example"


async def _pending(client: httpx2.AsyncClient, path: str) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in await get_data(client, f"{path}/cloudinit")}


async def _put(client: httpx2.AsyncClient, path: str, **params: Any) -> None:
    response = await client.put(f"{path}/config", data=params)
    assert response.status_code == 200, response.text


async def test_changes_are_pending_until_the_drive_is_regenerated(
    fresh_client: httpx2.AsyncClient,
) -> None:
    assert await _pending(fresh_client, TEMPLATE) == {
        "ciuser": {"key": "ciuser", "value": "debian"}
    }
    before = (await get_data(fresh_client, f"{TEMPLATE}/config"))["digest"]
    await _put(fresh_client, TEMPLATE, ciuser="ops", sshkeys=quote(KEY, safe=""),
               ipconfig0="ip=192.0.2.10/24,gw=192.0.2.1", cipassword="s3cret")  # fmt: skip
    pending = await _pending(fresh_client, TEMPLATE)
    assert pending["ciuser"] == {"key": "ciuser", "value": "debian", "pending": "ops"}
    assert pending["sshkeys"] == {"key": "sshkeys", "pending": quote(KEY, safe="")}
    # The password never shows, an added ipconfig is listed as added.
    assert pending["cipassword"] == {"key": "cipassword", "pending": "**********"}
    assert pending["ipconfig0"] == {"key": "ipconfig0", "pending": "ip=192.0.2.10/24,gw=192.0.2.1"}
    # The recorded old values are part of the file: the digest moved.
    assert (await get_data(fresh_client, f"{TEMPLATE}/config"))["digest"] != before

    # Changed back before a regeneration: in sync again.
    await _put(fresh_client, TEMPLATE, ciuser="debian")
    assert (await _pending(fresh_client, TEMPLATE))["ciuser"] == {
        "key": "ciuser",
        "value": "debian",
    }
    await _put(fresh_client, TEMPLATE, ciuser="ops", delete="ipconfig0")
    assert "ipconfig0" not in await _pending(fresh_client, TEMPLATE)

    response = await fresh_client.put(f"{TEMPLATE}/cloudinit")
    assert response.status_code == 200 and response.json() == {"data": None}
    regenerated = await _pending(fresh_client, TEMPLATE)
    assert regenerated["ciuser"] == {"key": "ciuser", "value": "ops"}
    assert all("pending" not in item and "delete" not in item for item in regenerated.values())

    # A key removed after the regeneration is a pending delete.
    await _put(fresh_client, TEMPLATE, delete="sshkeys")
    assert (await _pending(fresh_client, TEMPLATE))["sshkeys"] == {"key": "sshkeys", "delete": 1}


async def test_the_generated_files_are_qemu_servers(fresh_client: httpx2.AsyncClient) -> None:
    await _put(fresh_client, TEMPLATE, sshkeys=quote(KEY + "\n", safe=""), searchdomain="corp",
               nameserver="192.0.2.53 192.0.2.54", ipconfig0="ip=192.0.2.10/24,gw=192.0.2.1",
               cipassword="s3cret")  # fmt: skip
    user = await get_data(fresh_client, f"{TEMPLATE}/cloudinit/dump", type="user")
    assert user.startswith("#cloud-config\nhostname: tmpl-deb12\nmanage_etc_hosts: true\n")
    assert "fqdn: tmpl-deb12.corp\nuser: debian\n" in user
    # The API's user may configure cloud-init: the (hashed) password is not masked.
    assert "password: $5$" in user
    assert f"ssh_authorized_keys:\n  - {KEY}\nchpasswd:\n  expire: False\n" in user
    assert user.endswith("users:\n  - default\npackage_upgrade: true\n")

    network = await get_data(fresh_client, f"{TEMPLATE}/cloudinit/dump", type="network")
    config = await get_data(fresh_client, f"{TEMPLATE}/config")
    mac = config["net0"].split(",")[0].split("=")[1].lower()
    assert network == (
        "version: 1\nconfig:\n"
        "    - type: physical\n      name: eth0\n"
        f"      mac_address: '{mac}'\n      subnets:\n"
        "      - type: static\n        address: '192.0.2.10'\n"
        "        netmask: '255.255.255.0'\n        gateway: '192.0.2.1'\n"
        "    - type: nameserver\n      address:\n      - '192.0.2.53'\n      - '192.0.2.54'\n"
        "      search:\n      - 'corp'\n"
    )
    meta = await get_data(fresh_client, f"{TEMPLATE}/cloudinit/dump", type="meta")
    assert meta.startswith("instance-id: ") and len(meta.strip()) == len("instance-id: ") + 40

    # A Windows VM gets configdrive2's interfaces file and JSON metadata.
    win = "/nodes/pve1/qemu/103"
    await _put(fresh_client, win, ipconfig0="ip=dhcp")
    network = await get_data(fresh_client, f"{win}/cloudinit/dump", type="network")
    assert network == (
        "auto lo\niface lo inet loopback\n\n        dns_nameservers 192.168.1.1\n"
        "        dns_search lan\nauto eth0\niface eth0 inet dhcp\n"
    )
    meta = await get_data(fresh_client, f"{win}/cloudinit/dump", type="meta")
    assert '"network_config": { "content_path": "/content/0000" }' in meta


async def test_regenerating_without_a_drive_does_nothing(fresh_client: httpx2.AsyncClient) -> None:
    await _put(fresh_client, NO_DRIVE, ciuser="ops")
    response = await fresh_client.put(f"{NO_DRIVE}/cloudinit")
    assert response.status_code == 200
    assert (await _pending(fresh_client, NO_DRIVE))["ciuser"] == {"key": "ciuser", "pending": "ops"}
    response = await fresh_client.get(f"{NO_DRIVE}/cloudinit/dump", params={"type": "vendor"})
    assert response.status_code == 400
    assert "type" in response.json()["errors"]


async def test_agent_reads_and_refusals(fresh_client: httpx2.AsyncClient) -> None:
    base = "/nodes/pve1/qemu/100/agent"
    response = await fresh_client.post(f"{base}/ping")
    assert response.status_code == 200 and response.json() == {"data": {"result": {}}}
    host = await get_data(fresh_client, f"{base}/get-host-name")
    assert host == {"result": {"host-name": "web01"}}
    osinfo = (await get_data(fresh_client, f"{base}/get-osinfo"))["result"]
    assert osinfo["id"] == "debian" and osinfo["machine"] == "x86_64"
    nics = (await get_data(fresh_client, f"{base}/network-get-interfaces"))["result"]
    assert [n["name"] for n in nics] == ["lo", "ens18"]
    config = await get_data(fresh_client, "/nodes/pve1/qemu/100/config")
    assert config["net0"].lower().startswith(f"virtio={nics[1]['hardware-address']}")
    filesystems = (await get_data(fresh_client, f"{base}/get-fsinfo"))["result"]
    assert filesystems[0]["mountpoint"] == "/"
    assert filesystems[0]["total-bytes"] == 32 << 30

    async def refusal(path: str) -> str:
        response = await fresh_client.get(path)
        assert response.status_code == 500
        return str(response.json()["message"])

    assert await refusal("/nodes/pve1/qemu/101/agent/get-osinfo") == "VM 101 is not running\n"
    # A paused VM's agent cannot answer guest-ping.
    paused = "/nodes/pve2/qemu/105/agent/get-osinfo"
    assert await refusal(paused) == "QEMU guest agent is not running\n"
    await _put(fresh_client, "/nodes/pve1/qemu/100", delete="agent")
    assert await refusal(f"{base}/get-osinfo") == "No QEMU guest agent configured\n"
    await _put(fresh_client, "/nodes/pve1/qemu/100", agent="enabled=0")
    assert await refusal(f"{base}/get-osinfo") == "QEMU guest agent is not running\n"
