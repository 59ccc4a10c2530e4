"""The guest-agent reads end to end: the MCP SDK client, the gateway and a fresh
simulator each. What the agent reports, and PVE's three reasons it cannot answer, each an
`agent_unavailable` failure naming the field and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

RUNNING_VM = 100  # pve1, web01: agent 1, one NIC, a 32 GiB disk


async def test_info_and_lists(session: Session) -> None:
    info = ok(await call(session, "proxmox_agent_info", vmid=RUNNING_VM,
                         fields=["ping", "os", "hostname"]))  # fmt: skip
    assert info["responding"] is True and info["hostname"] == "web01"
    assert info["os"] == "Debian GNU/Linux 12 (bookworm)" and info["os_id"] == "debian"
    assert (info["os_version"], info["arch"]) == ("12", "x86_64")
    default = ok(await call(session, "proxmox_agent_info", name="web01"))
    assert "responding" not in default and default["hostname"] == "web01"

    network = ok(await call(session, "proxmox_agent_list", vmid=RUNNING_VM, what="network"))
    (nic,) = network["interfaces"]  # the loopback is left out
    config = ok(await call(session, "proxmox_guest_config", vmid=RUNNING_VM))["config"]
    assert config["net0"].lower().startswith(f"virtio={nic['mac']}")
    assert nic["name"] == "ens18" and nic["ips"][0].endswith("/24")
    assert "filesystems" not in network
    disks = ok(await call(session, "proxmox_agent_list", vmid=RUNNING_VM, what="filesystems"))
    root = disks["filesystems"][0]
    assert (root["mountpoint"], root["type"], root["total_gib"]) == ("/", "ext4", 32.0)
    assert root["used_gib"] < root["total_gib"]


async def test_the_agent_cannot_answer_for_three_reasons(session: Session) -> None:
    async def unavailable(**arguments: Any) -> dict[str, Any]:
        error = error_of(await call(session, "proxmox_agent_info", **arguments))
        assert error is not None and error["code"] == "agent_unavailable", error
        return error

    stopped = await unavailable(vmid=101)
    assert stopped["message"] == "VM 101 is not running" and stopped["field"] == "vmid"
    assert "proxmox_guest_power" in stopped["hint"]
    paused = await unavailable(name="db02")
    assert paused["message"] == "QEMU guest agent is not running"
    assert paused["field"] == "name" and "qemu-guest-agent" in paused["hint"]
    ok(await call(session, "proxmox_guest_config_update", vmid=102, delete=["agent"]))
    none = await unavailable(vmid=102)
    assert none["message"] == "No QEMU guest agent configured"
    assert '"agent": "1"' in none["hint"]
    container = error_of(await call(session, "proxmox_agent_list", vmid=200, what="network"))
    assert container is not None and container["code"] == "unsupported"
