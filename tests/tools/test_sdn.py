"""The SDN tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's SDN
scenario (a VNet with a subnet, applied, usable by a guest only then, both deleted and
applied again), what the plans say (pending changes, node interface changes an apply makes
live too), and the bad inputs that must send nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then the call with the
    token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def _plan(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    plan: dict[str, Any] = ok(await call(session, tool, **arguments, dry_run=True))["plan"]
    return plan


async def test_scenario_vnet_with_subnet_applied_used_then_both_deleted(session: Session) -> None:
    made = ok(await call(session, "proxmox_sdn_object", kind="vnet", op="create", id="web",
                         zone="lab", alias="web tier"))  # fmt: skip
    assert made["now"] == {"id": "web", "settings": {"type": "vnet"}, "state": "new",
                           "pending": {"zone": "lab", "alias": "web tier"}}  # fmt: skip
    subnet = ok(await call(session, "proxmox_sdn_object", kind="subnet", op="create",
                           id="10.30.0.0/24", vnet="web", gateway="10.30.0.1",
                           snat=True))  # fmt: skip
    assert subnet["now"]["state"] == "new" and subnet["now"]["id"] == "10.30.0.0/24"
    nic = {"node": "pve2", "name": "web9", "nics": [{"bridge": "web"}]}
    early = refused(await call(session, "proxmox_vm_create", **nic, dry_run=True))
    assert (early["code"], early["field"]) == ("not_found", "nics[0].bridge")
    plan = await _plan(session, "proxmox_sdn_apply")
    (change,) = plan["changes"]
    assert "new vnet web: alias=web tier, zone=lab" in change["before"]
    assert any(line.startswith("new subnet 10.30.0.0/24 of web") for line in change["before"])
    assert any("pve3" in w and "interface changes" in w for w in plan["warnings"])
    applied = await _confirmed(session, "proxmox_sdn_apply")
    assert applied["exitstatus"] == "OK"
    listed = ok(await call(session, "proxmox_sdn_list"))
    assert listed["pending"] is False
    assert {v["id"]: v.get("state") for v in listed["vnets"]} == {"dmz": None, "labnet": None,
                                                                  "web": None}  # fmt: skip
    assert [s["id"] for s in listed["subnets"]["web"]] == ["10.30.0.0/24"]
    ok(await call(session, "proxmox_vm_create", **nic, dry_run=True))
    in_use = refused(await call(session, "proxmox_sdn_delete", kind="vnet", id="web"))
    assert (in_use["code"], in_use["field"]) == ("in_use", "id") and "10.30.0.0/24" in in_use[
        "message"]  # fmt: skip
    await _confirmed(session, "proxmox_sdn_delete", kind="subnet", id="10.30.0.0/24", vnet="web")
    gone = await _confirmed(session, "proxmox_sdn_delete", kind="vnet", id="web")
    assert gone["now"]["state"] == "deleted"
    await _confirmed(session, "proxmox_sdn_apply")
    after = ok(await call(session, "proxmox_sdn_list", kind="vnet"))
    assert [v["id"] for v in after["vnets"]] == ["dmz", "labnet"] and after["pending"] is False
    assert [w for w in session.writes() if "/sdn" in w] == [
        "POST /cluster/sdn/vnets",
        "POST /cluster/sdn/vnets/web/subnets",
        "PUT /cluster/sdn",
        "DELETE /cluster/sdn/vnets/web/subnets/lab-10.30.0.0-24",
        "DELETE /cluster/sdn/vnets/web",
        "PUT /cluster/sdn",
    ]
    assert not session.schema_problems(), "\n".join(session.schema_problems())


async def test_update_plans_the_diff_and_a_vlan_zone_takes_tagged_vnets(session: Session) -> None:
    plan = await _plan(session, "proxmox_sdn_object", kind="vnet", op="update", id="labnet",
                       alias="lab", clear=["tag"])  # fmt: skip
    (change,) = plan["changes"]
    assert change["before"] == {"type": "vnet", "zone": "lab", "alias": "lab network"}
    assert change["after"] == {"type": "vnet", "zone": "lab", "alias": "lab"}
    assert plan["calls"][0]["params"] == {"alias": "lab"}
    ok(await call(session, "proxmox_sdn_object", kind="zone", op="create", id="dc", type="vlan",
                  bridge="vmbr1", nodes=["pve1", "pve2"]))  # fmt: skip
    untagged = refused(await call(session, "proxmox_sdn_object", kind="vnet", op="create",
                                  id="v10", zone="dc"))  # fmt: skip
    assert (untagged["code"], untagged["field"]) == ("invalid_argument", "tag")
    ok(await call(session, "proxmox_sdn_object", kind="vnet", op="create", id="v10", zone="dc",
                  tag=10))  # fmt: skip
    twice = refused(await call(session, "proxmox_sdn_object", kind="vnet", op="create",
                               id="v11", zone="dc", tag=10))  # fmt: skip
    assert (twice["code"], twice["field"]) == ("already_exists", "tag")


@pytest.mark.parametrize(
    ("arguments", "code", "field"),
    [
        ({"kind": "zone", "op": "create", "id": "lab", "type": "simple"}, "already_exists", "id"),
        ({"kind": "zone", "op": "create", "id": "Bad_Name", "type": "simple"},
         "invalid_argument", "id"),
        ({"kind": "zone", "op": "create", "id": "z1"}, "invalid_argument", "type"),
        ({"kind": "zone", "op": "create", "id": "z1", "type": "vlan"}, "invalid_argument",
         "bridge"),
        ({"kind": "zone", "op": "update", "id": "nope", "mtu": 1400}, "not_found", "id"),
        ({"kind": "vnet", "op": "create", "id": "v2", "zone": "lab", "tag": 5},
         "invalid_argument", "tag"),
        ({"kind": "vnet", "op": "create", "id": "v2", "zone": "nope"}, "not_found", "zone"),
        ({"kind": "vnet", "op": "create", "id": "v2", "zone": "lab", "gateway": "10.0.0.1"},
         "invalid_argument", "gateway"),
        ({"kind": "subnet", "op": "create", "id": "10.40.0.0/24"}, "invalid_argument", "vnet"),
        ({"kind": "subnet", "op": "create", "id": "10.40.0.0", "vnet": "labnet"},
         "invalid_argument", "id"),
        ({"kind": "subnet", "op": "create", "id": "10.40.0.0/24", "vnet": "labnet",
          "gateway": "10.41.0.1"}, "invalid_argument", "gateway"),
        ({"kind": "subnet", "op": "create", "id": "10.20.0.0/24", "vnet": "labnet"},
         "already_exists", "id"),
        ({"kind": "subnet", "op": "update", "id": "10.21.0.0/24", "vnet": "labnet",
          "snat": False}, "not_found", "id"),
    ],
)  # fmt: skip
async def test_bad_objects_are_refused_naming_the_field_and_send_nothing(
    session: Session, arguments: dict[str, Any], code: str, field: str
) -> None:
    error = refused(await call(session, "proxmox_sdn_object", **arguments))
    assert (error["code"], error["field"]) == (code, field), error
    assert error["hint"]
    assert session.writes() == []


async def test_deletes_refused_while_used_and_apply_with_nothing_pending(session: Session) -> None:
    zone = refused(await call(session, "proxmox_sdn_delete", kind="zone", id="lab"))
    assert zone["code"] == "in_use" and "dmz, labnet" in zone["message"]
    await _confirmed(session, "proxmox_sdn_apply")
    nothing = refused(await call(session, "proxmox_sdn_apply"))
    assert nothing["code"] == "precondition_failed"
    missing = refused(await call(session, "proxmox_sdn_delete", kind="subnet", id="10.9.0.0/24",
                                 vnet="labnet"))  # fmt: skip
    assert (missing["code"], missing["field"]) == ("not_found", "id")
    assert "10.20.0.0/24" in missing["hint"]
    assert [w for w in session.writes() if "/sdn" in w] == ["PUT /cluster/sdn"]
