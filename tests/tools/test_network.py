"""The network tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's network
scenario (a VLAN-aware bridge created as a pending change, usable by guests only once
applied, a guest NIC attached to it, then both removed), what the plans say (the diff,
the management address, guest NICs on a bridge that goes), the bad inputs that must send
nothing, and a node that cannot apply live.
"""

from __future__ import annotations

from typing import Any

import pytest

from pvemcp.tools.network import Pending
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

NET1 = "/nodes/pve1/network"


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then the call with the
    token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def _plan(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    plan: dict[str, Any] = ok(await call(session, tool, **arguments, dry_run=True))["plan"]
    return plan


async def test_scenario_vlan_aware_bridge_pending_applied_used_by_a_guest_then_removed(
    session: Session,
) -> None:
    ok(await call(session, "proxmox_network_revert", node="pve3"))  # the seeded pending vmbr1
    made = ok(await call(session, "proxmox_network_iface", node="pve3", iface="vmbr2",
                         op="create", type="bridge", ports="eno2", vlan_aware=True,
                         vids="10 20", comments="lab"))  # fmt: skip
    assert made["iface"] == "vmbr2 bridge pending vlan-aware ports=eno2 vids=10 20 # lab"
    assert made["pending"] == ["vmbr2"]
    # Pending: a guest cannot use it yet (the create tools check bridges the node runs).
    nic = {"node": "pve3", "name": "lab1", "nics": [{"bridge": "vmbr2", "vlan": 20}]}
    early = refused(await call(session, "proxmox_vm_create", **nic, dry_run=True))
    assert (early["code"], early["field"]) == ("invalid_argument", "nics[0].bridge")
    assert "proxmox_network_apply" in early["hint"]
    plan = await _plan(session, "proxmox_network_apply", node="pve3")
    assert "+iface vmbr2 inet manual" in plan["changes"][0]["before"]
    assert any("cut the node off" in w for w in plan["warnings"])
    assert not any("management address" in w for w in plan["warnings"])
    applied = await _confirmed(session, "proxmox_network_apply", node="pve3")
    assert applied["exitstatus"] == "OK" and applied["node"] == "pve3"
    listed = ok(await call(session, "proxmox_network_list", node="pve3", iface="vmbr2"))
    assert listed["ifaces"] == ["vmbr2 bridge vlan-aware ports=eno2 vids=10 20 # lab"]
    assert listed["pending"] == []
    ok(await call(session, "proxmox_vm_create", **nic, dry_run=True))
    ok(await call(session, "proxmox_guest_config_update", vmid=107,
                  values={"net1": "virtio,bridge=vmbr2,tag=20"}))  # fmt: skip
    # Deleting the bridge while the NIC is on it: PVE allows it, the plan names the NIC.
    plan = await _plan(session, "proxmox_network_iface_delete", node="pve3", iface="vmbr2")
    assert any("qemu 107 net1 (vmbr2)" in w for w in plan["warnings"])
    ok(await call(session, "proxmox_guest_config_update", vmid=107, delete=["net1"]))
    await _confirmed(session, "proxmox_network_iface_delete", node="pve3", iface="vmbr2")
    await _confirmed(session, "proxmox_network_apply", node="pve3")
    left = ok(await call(session, "proxmox_network_list", node="pve3"))
    assert [i.split()[0] for i in left["ifaces"]] == ["eno1", "eno2", "vmbr0"]
    assert [w for w in session.writes() if "/network" in w] == [
        "DELETE /nodes/pve3/network",
        "POST /nodes/pve3/network",
        "PUT /nodes/pve3/network",
        "DELETE /nodes/pve3/network/vmbr2",
        "PUT /nodes/pve3/network",
    ]
    assert not session.schema_problems(), "\n".join(session.schema_problems())


async def test_touching_the_management_bridge_is_flagged_in_the_apply_plan(
    session: Session,
) -> None:
    ok(await call(session, "proxmox_network_iface", node="pve1", iface="vmbr0", op="update",
                  mtu=9000))  # fmt: skip
    plan = await _plan(session, "proxmox_network_apply", node="pve1")
    (flag,) = [w for w in plan["warnings"] if "management address" in w]
    assert "(vmbr0)" in flag and "node pve1" in flag
    assert "+\tmtu 9000" in plan["changes"][0]["before"]
    (reload,) = plan["calls"]
    assert (reload["method"], reload["path"], reload["task"]) == (
        "PUT",
        "/nodes/pve1/network",
        True,
    )
    revert = await _plan(session, "proxmox_network_revert", node="pve1")
    assert revert["summary"] == "drop the pending network changes of node pve1 (vmbr0)"


async def test_update_shows_the_diff_and_clears_settings_by_pve_names(session: Session) -> None:
    plan = await _plan(session, "proxmox_network_iface", node="pve1", iface="vmbr1",
                       op="update", clear=["comments"], vids="100-200")  # fmt: skip
    (change,) = plan["changes"]
    assert change["before"]["comments"] == "guest VLANs" and "comments" not in change["after"]
    assert change["after"]["bridge_vids"] == "100-200"
    (sent,) = plan["calls"]
    assert sent["method"] == "PUT" and sent["path"] == "/nodes/pve1/network/vmbr1"
    assert sent["params"] == {"type": "bridge", "bridge_vids": "100-200", "delete": "comments"}
    assert session.writes() == []


@pytest.mark.parametrize(
    ("arguments", "code", "field"),
    [
        ({"iface": "vmbr0", "op": "create", "type": "bridge"}, "already_exists", "iface"),
        ({"iface": "vmbr5", "op": "create", "type": "bridge", "ports": "eno1"}, "in_use",
         "ports"),
        ({"iface": "vmbr5", "op": "create", "type": "bridge", "ports": "eno7"}, "not_found",
         "ports"),
        ({"iface": "vmbr5", "op": "create"}, "invalid_argument", "type"),
        ({"iface": "vmbr5", "op": "create", "type": "bridge", "cidr": "10.1.1.1"},
         "invalid_argument", "cidr"),
        ({"iface": "vmbr5", "op": "create", "type": "bridge", "cidr": "10.0.0.300/24"},
         "invalid_argument", "cidr"),
        ({"iface": "eno9.20", "op": "create", "type": "vlan"}, "not_found", "iface"),
        ({"iface": "lab", "op": "create", "type": "vlan", "vlan_raw_device": "eno1"},
         "invalid_argument", "iface"),
        ({"iface": "vlan20", "op": "create", "type": "vlan"}, "invalid_argument",
         "vlan_raw_device"),
        ({"iface": "eno1.20", "op": "create", "type": "vlan", "ports": "eno1"},
         "invalid_argument", "ports"),
        ({"iface": "vmbr9", "op": "update", "mtu": 9000}, "not_found", "iface"),
        ({"iface": "vmbr1", "op": "update", "cidr": "192.0.2.9/24", "gateway": "192.0.2.1"},
         "already_exists", "gateway"),
        ({"iface": "vmbr5", "op": "create", "type": "OVSBridge"}, "invalid_argument", "type"),
        ({"iface": "uplink", "op": "create", "type": "bond", "ports": "eno1"},
         "invalid_argument", "iface"),
    ],
)  # fmt: skip
async def test_bad_interfaces_are_refused_naming_the_field_and_send_nothing(
    session: Session, arguments: dict[str, Any], code: str, field: str
) -> None:
    error = refused(await call(session, "proxmox_network_iface", node="pve1", **arguments))
    assert (error["code"], error["field"]) == (code, field), error
    assert error["hint"]
    assert session.writes() == []


async def test_a_node_without_ifupdown2_cannot_apply_and_says_how_to_fix_it(
    session: Session,
) -> None:
    session.sim.state.networks["pve3"].ifupdown2 = False
    ask = error_of(await call(session, "proxmox_network_apply", node="pve3"))
    assert ask is not None
    error = refused(await call(session, "proxmox_network_apply", node="pve3",
                               confirm_token=ask["details"]["confirm_token"]))  # fmt: skip
    assert (error["code"], error["field"]) == ("unsupported", "node")
    assert "ifupdown2" in error["message"] and "proxmox_network_revert" in error["hint"]
    listed = ok(await call(session, "proxmox_network_list", node="pve3"))
    assert listed["pending"], "the pending change is still there"


async def test_nothing_pending_and_an_interface_in_use_are_refused(session: Session) -> None:
    nothing = refused(await call(session, "proxmox_network_apply", node="pve1"))
    assert (nothing["code"], nothing["field"]) == ("precondition_failed", "node")
    used = refused(await call(session, "proxmox_network_iface_delete", node="pve1", iface="eno1"))
    assert (used["code"], used["message"]) == ("in_use", "eno1 is used by vmbr0")
    assert session.writes() == []


def test_a_change_the_diff_context_does_not_place_is_reported_as_unknown() -> None:
    items = [{"iface": "vmbr0", "bridge_ports": "eno1"}, {"iface": "vmbr1", "bridge_ports": ""}]
    placed = (
        "@@ -9,3 +9,4 @@\n \tbridge-ports eno1\n \tbridge-stp off\n \tbridge-fd 0\n+\tmtu 9000\n"
    )
    assert Pending("pve1", items, placed).touched() == ["vmbr0"]
    unplaced = "@@ -9,2 +9,3 @@\n \tbridge-stp off\n+\tmtu 9000\n"
    assert Pending("pve1", items, unplaced).touched() == ["?"]
    stanza = "@@ -1,2 +1,5 @@\n iface lo inet loopback\n+\n+auto vmbr2\n+iface vmbr2 inet manual\n"
    assert Pending("pve1", items, stanza).touched() == ["vmbr2"]


async def test_a_bond_on_the_spare_nic_and_a_vlan_bridge_on_it(session: Session) -> None:
    ok(await call(session, "proxmox_network_revert", node="pve3"))
    bond = ok(await call(session, "proxmox_network_iface", node="pve3", iface="bond0",
                         op="create", type="bond", ports="eno2",
                         bond_mode="active-backup"))  # fmt: skip
    assert bond["iface"] == "bond0 bond pending slaves=eno2 mode=active-backup"
    bridge = ok(await call(session, "proxmox_network_iface", node="pve3", iface="vmbr3",
                           op="create", type="bridge", ports="bond0", vlan_aware=True))  # fmt: skip
    assert bridge["pending"] == ["bond0", "vmbr3"]
    taken = refused(await call(session, "proxmox_network_iface", node="pve3", iface="vmbr4",
                               op="create", type="bridge", ports="bond0"))  # fmt: skip
    assert (taken["code"], taken["message"]) == ("in_use", "bond0 is already a port of vmbr3")
