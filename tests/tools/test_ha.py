"""The HA tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's HA
scenario (a guest put under HA, its power going through the HA manager, relocated to
another node, removed from HA), plans that show the diff and name source and target,
rule checks that send nothing, and the version the rule tools need.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then the token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def _service(session: Session, sid: str) -> dict[str, Any] | None:
    status = ok(await call(session, "proxmox_ha_status"))
    return next((row for row in status["resources"] if row["sid"] == sid), None)


async def test_scenario_put_under_ha_relocate_remove(session: Session) -> None:
    added = ok(await call(session, "proxmox_ha_resource", op="add", vmid=102, comment="web"))
    assert added["summary"] == "Add HA resource vm:102 on pve1"
    assert {c["field"]: c["after"] for c in added["changes"]} == {
        "comment": "web",
        "state": "started",
    }
    assert await _service(session, "vm:102") == {
        "sid": "vm:102", "node": "pve1", "state": "started", "requested": "started",
    }  # fmt: skip

    # Under HA, a shutdown is a request to the HA manager; the runner waits on the guest.
    down = ok(await call(session, "proxmox_guest_power", vmid=102, action="shutdown"))
    assert ":hastop:102:" in down["upid"] and down["guest_status"] == "stopped"
    assert (await _service(session, "vm:102") or {})["requested"] == "stopped"
    up = ok(await call(session, "proxmox_guest_power", vmid=102, action="start"))
    assert ":hastart:102:" in up["upid"] and up["guest_status"] == "running"

    plan = ok(await call(session, "proxmox_ha_move", vmid=102, node="pve2", relocate=True,
                         dry_run=True))["plan"]  # fmt: skip
    assert plan["summary"] == "HA relocate vm:102 from pve1 to pve2"
    assert plan["changes"] == [{"field": "node", "before": "pve1", "after": "pve2"}]
    moved = ok(await call(session, "proxmox_ha_move", vmid=102, node="pve2", relocate=True))
    assert (moved["source"], moved["target"], moved["node"], moved["state"]) == (
        "pve1", "pve2", "pve2", "started",
    )  # fmt: skip
    guest = ok(await call(session, "proxmox_guest_get", vmid=102))
    assert (guest["node"], guest["status"]) == ("pve2", "running")

    removed = await _confirmed(session, "proxmox_ha_delete", vmid=102)
    assert removed["summary"] == "Remove vm:102 from HA"
    assert await _service(session, "vm:102") is None
    listed = ok(await call(session, "proxmox_ha_list"))["resources"]
    assert [r["sid"] for r in listed] == ["ct:203", "vm:104"]
    # Out of HA, the guest's own power calls act directly again.
    direct = ok(await call(session, "proxmox_guest_power", vmid=102, action="shutdown"))
    assert ":qmshutdown:102:" in direct["upid"]


async def test_update_plans_only_what_changes_and_binds_the_digest(session: Session) -> None:
    plan = ok(await call(session, "proxmox_ha_resource", op="update", vmid=203,
                         state="started", max_relocate=3, dry_run=True))["plan"]  # fmt: skip
    assert plan["changes"] == [{"field": "max_relocate", "before": 1, "after": 3}]
    sent = plan["calls"][0]
    assert (sent["method"], sent["path"]) == ("PUT", "/cluster/ha/resources/ct%3A203")
    assert len(sent["params"]["digest"]) == 40 and "state" not in sent["params"]
    stopped = ok(await call(session, "proxmox_ha_resource", op="update", vmid=203,
                            state="stopped"))  # fmt: skip
    assert stopped["warnings"] == ["the guest runs: the HA manager will shut it down"]


async def test_rules_are_checked_before_anything_is_sent(session: Session) -> None:
    made = ok(await call(session, "proxmox_ha_rule", op="create", rule="apart",
                         type="resource-affinity", vmids=[203, 104],
                         affinity="negative"))  # fmt: skip
    assert made["changes"] == [
        {"field": "resources", "after": "ct:203,vm:104"},
        {"field": "affinity", "after": "negative"},
    ]
    rules = ok(await call(session, "proxmox_ha_list", kind="rules"))["rules"]
    assert [(r["rule"], r["vmids"]) for r in rules] == [
        ("prefer-pve3", [203]), ("apart", [203, 104]),
    ]  # fmt: skip
    before = session.writes()
    wrong = refused(await call(session, "proxmox_ha_rule", op="update", rule="apart",
                               nodes={"pve1": 1}))  # fmt: skip
    assert (wrong["code"], wrong["field"]) == ("invalid_argument", "nodes")
    unmanaged = refused(await call(session, "proxmox_ha_rule", op="update", rule="apart",
                                   vmids=[203, 100]))  # fmt: skip
    assert unmanaged["message"] == "not HA resources: vm:100" and unmanaged["field"] == "vmids"
    assert session.writes() == before, "refused before anything was sent"
    deleted = await _confirmed(session, "proxmox_ha_delete", rule="apart")
    assert deleted["summary"] == "Delete resource-affinity HA rule apart"


async def test_removing_the_last_resource_of_a_rule_says_the_rule_goes(session: Session) -> None:
    plan = ok(await call(session, "proxmox_ha_delete", vmid=203, dry_run=True))["plan"]
    assert plan["changes"][1] == {"field": "rule prefer-pve3", "before": ["ct:203"]}
    assert "rule prefer-pve3 names only ct:203: it is deleted too" in plan["warnings"]


async def test_rule_tools_say_which_version_they_need(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pvemcp.simulator.endpoints.PVE_VERSION", "8.4.1")
    error = refused(await call(session, "proxmox_ha_list", kind="rules"))
    assert error["code"] == "unsupported"
    assert error["message"] == (
        "HA rules need PVE 9.0 or later; this cluster runs 8.4.1, which has HA groups instead"
    )
    created = refused(await call(session, "proxmox_ha_rule", op="update", rule="prefer-pve3",
                                 comment="x"))  # fmt: skip
    assert created["code"] == "unsupported"
    # Resources and status work on both.
    assert ok(await call(session, "proxmox_ha_list"))["resources"]
