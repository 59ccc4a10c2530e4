"""The hardware mapping tools end to end: the MCP SDK client, the gateway and a fresh
simulator. Issue 12's mappings scenario: a USB mapping created, used in a VM's config,
its delete refused naming the VM, the VM detached, the mapping deleted."""

from __future__ import annotations

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

DONGLE = [{"node": "pve1", "device": "046d:c52b", "path": "1-1.2"}]


async def test_scenario_create_use_refused_detach_delete(session: Session) -> None:
    made = ok(await call(session, "proxmox_mapping_set", op="create", kind="usb", id="dongle",
                         map=DONGLE, description="licence key"))  # fmt: skip
    entry = "node=pve1,path=1-1.2,id=046d:c52b"
    assert made["changes"][0] == {"field": "map", "after": [entry]}
    ok(await call(session, "proxmox_guest_config_update", vmid=102,
                  values={"usb0": "mapping=dongle"}))  # fmt: skip
    listed = ok(await call(session, "proxmox_mapping_list", kind="usb", id="dongle"))
    [row] = listed["mappings"]
    assert row["used_by"] == ["102:usb0"] and row["description"] == "licence key"
    assert row["map"] == [{"node": "pve1", "device": "046d:c52b", "path": "1-1.2"}]

    error = refused(await call(session, "proxmox_mapping_delete", kind="usb", id="dongle"))
    assert (error["code"], error["field"]) == ("in_use", "id")
    assert error["message"] == "usb mapping dongle is used by VM config 102:usb0"
    assert session.writes() == ["POST /cluster/mapping/usb", "PUT /nodes/pve1/qemu/102/config"]

    ok(await call(session, "proxmox_guest_config_update", vmid=102, delete=["usb0"]))
    ask = error_of(await call(session, "proxmox_mapping_delete", kind="usb", id="dongle"))
    assert ask is not None and ask["code"] == "confirmation_required"
    ok(await call(session, "proxmox_mapping_delete", kind="usb", id="dongle",
                  confirm_token=ask["details"]["confirm_token"]))  # fmt: skip
    left = ok(await call(session, "proxmox_mapping_list"))["mappings"]
    assert [(m["kind"], m["id"]) for m in left] == [("pci", "gpu")]


async def test_update_keeps_the_map_and_shows_the_diff(session: Session) -> None:
    changed = ok(await call(session, "proxmox_mapping_set", op="update", kind="pci", id="gpu",
                            description="CUDA"))  # fmt: skip
    assert changed["changes"] == [{"field": "description", "before": "RTX A4000 for passthrough",
                                   "after": "CUDA"}]  # fmt: skip
    [gpu] = ok(await call(session, "proxmox_mapping_list", kind="pci"))["mappings"]
    assert gpu["description"] == "CUDA"
    assert gpu["map"][0]["device"] == "10de:24b0" and gpu["map"][0]["iommugroup"] == 14


async def test_an_unknown_node_is_refused_naming_the_entry(session: Session) -> None:
    bad = [*DONGLE, {"node": "pve7", "device": "046d:c52b"}]
    error = refused(await call(session, "proxmox_mapping_set", op="create", kind="usb", id="key",
                               map=bad))  # fmt: skip
    assert (error["code"], error["field"]) == ("not_found", "map[1].node")
    assert session.writes() == []
