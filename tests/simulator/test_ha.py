"""HA over HTTPS: resources and rules with PVE's refusals, the manager's status, and a
managed guest's start, stop and relocation carried out by the simulated CRM."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from .conftest import FakeClock, get_data, post_upid, task_status

pytestmark = pytest.mark.anyio


async def _service(client: httpx2.AsyncClient, sid: str) -> dict[str, Any]:
    rows = await get_data(client, "/cluster/ha/status/current")
    return next(row for row in rows if row.get("sid") == sid)


async def _guest_status(client: httpx2.AsyncClient, node: str, kind: str, vmid: int) -> str:
    status = await get_data(client, f"/nodes/{node}/{kind}/{vmid}/status/current")
    return str(status["status"])


async def _error(response: httpx2.Response, status: int = 500) -> str:
    assert response.status_code == status, response.text
    return str(response.json().get("message", ""))


async def test_the_seeded_status_names_quorum_master_lrms_and_the_managed_container(
    client: httpx2.AsyncClient,
) -> None:
    rows = await get_data(client, "/cluster/ha/status/current")
    by_id = {row["id"]: row for row in rows}
    assert by_id["quorum"]["quorate"] == 1 and by_id["quorum"]["status"] == "OK"
    assert by_id["master"]["node"] == "pve1" and "active" in by_id["master"]["status"]
    assert by_id["lrm:pve3"]["status"].startswith("pve3 (active, watchdog active")
    assert by_id["lrm:pve1"]["status"].startswith("pve1 (idle, watchdog standby")
    service = by_id["service:ct:203"]
    assert (service["node"], service["state"], service["request_state"]) == (
        "pve3", "started", "started",
    )  # fmt: skip
    manager = await get_data(client, "/cluster/ha/status/manager_status")
    assert manager["manager_status"]["service_status"]["ct:203"]["node"] == "pve3"
    assert manager["quorum"]["quorate"] == 1
    current = await get_data(client, "/nodes/pve3/lxc/203/status/current")
    assert current["ha"] == {"managed": 1, "state": "started"}
    guests = {g["vmid"]: g for g in await get_data(client, "/cluster/resources", type="vm")}
    assert guests[203]["hastate"] == "started" and "hastate" not in guests[104]  # ignored
    resource = await get_data(client, "/cluster/ha/resources/203")
    assert (
        resource["sid"] == "ct:203" and resource["type"] == "ct" and len(resource["digest"]) == 40
    )
    rules = await get_data(client, "/cluster/ha/rules")
    assert [(r["rule"], r["type"], r["resources"], r["nodes"]) for r in rules] == [
        ("prefer-pve3", "node-affinity", "ct:203", "pve2:1,pve3:2")
    ]


async def test_groups_have_been_migrated_to_rules(client: httpx2.AsyncClient) -> None:
    refused = await client.post("/cluster/ha/resources", data={"sid": "vm:102", "group": "g1"})
    assert await _error(refused) == (
        "invalid parameter 'group': ha groups have been migrated to rules\n"
    )


async def test_a_managed_guests_stop_and_start_go_through_the_crm(
    timed_client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    client = timed_client
    upid = await post_upid(client, "/nodes/pve3/lxc/203/status/stop")
    assert upid.split(":")[5] == "hastop"
    clock.advance(1)
    done = await task_status(client, upid)
    assert done["exitstatus"] == "OK"
    log = await get_data(client, f"/nodes/pve3/tasks/{upid}/log")
    assert log[0]["t"] == "Requesting HA stop for CT 203"
    # The request is handed over; the guest still runs until the LRM's worker acts.
    assert await _guest_status(client, "pve3", "lxc", 203) == "running"
    assert (await _service(client, "ct:203"))["state"] == "request_stop"
    clock.advance(10)
    assert await _guest_status(client, "pve3", "lxc", 203) == "stopped"
    assert (await get_data(client, "/cluster/ha/resources/ct:203"))["state"] == "stopped"
    assert (await _service(client, "ct:203"))["state"] == "stopped"
    lrm = await get_data(client, "/nodes/pve3/tasks", typefilter="vzshutdown", vmid=203)
    assert lrm[0]["user"] == "root@pam"

    start = await post_upid(client, "/nodes/pve3/lxc/203/status/start")
    assert start.split(":")[5] == "hastart"
    clock.advance(10)
    assert await _guest_status(client, "pve3", "lxc", 203) == "running"
    assert (await _service(client, "ct:203"))["state"] == "started"


async def test_adding_a_resource_applies_its_state_and_refuses_what_pve_refuses(
    fresh_client: httpx2.AsyncClient,
) -> None:
    client = fresh_client
    added = await client.post(
        "/cluster/ha/resources", data={"sid": "vm:102", "state": "stopped", "comment": "c"}
    )
    assert added.status_code == 200, added.text
    assert await _guest_status(client, "pve1", "qemu", 102) == "stopped"
    assert (await _service(client, "vm:102"))["state"] == "stopped"
    again = await client.post("/cluster/ha/resources", data={"sid": "102"})
    assert await _error(again) == ("create resource failed: resource ID 'vm:102' already defined\n")
    missing = await client.post("/cluster/ha/resources", data={"sid": "999"})
    assert await _error(missing) == ("unable to detect SID from VMID - VM/CT 999 does not exist\n")
    # A managed VM cannot hibernate (qemu-server vm_suspend).
    await client.put("/cluster/ha/resources/vm:102", data={"state": "started"})
    assert await _guest_status(client, "pve1", "qemu", 102) == "running"
    hibernate = await client.post("/nodes/pve1/qemu/102/status/suspend", data={"todisk": "1"})
    assert await _error(hibernate) == "Cannot suspend HA managed VM to disk\n"
    stale = await client.put(
        "/cluster/ha/resources/vm:102", data={"comment": "x", "digest": "0" * 40}
    )
    assert "detected modified configuration" in await _error(stale)
    assert (await client.delete("/cluster/ha/resources/vm:102")).status_code == 200
    gone = await client.delete("/cluster/ha/resources/vm:102")
    assert await _error(gone) == "cannot delete service 'vm:102', not HA managed!\n"


async def test_relocate_stops_moves_and_starts_on_the_target(
    fresh_client: httpx2.AsyncClient,
) -> None:
    client = fresh_client
    answer = await client.post("/cluster/ha/resources/ct:203/relocate", data={"node": "pve2"})
    assert answer.json()["data"] == {"sid": "ct:203", "requested-node": "pve2"}
    assert await _guest_status(client, "pve2", "lxc", 203) == "running"
    assert (await _service(client, "ct:203"))["node"] == "pve2"
    types = [t["type"] for t in await get_data(client, "/nodes/pve3/tasks", vmid=203)]
    assert sorted(types[:2]) == ["vzmigrate", "vzshutdown"]  # ended at once: time scale 0
    started = await get_data(client, "/nodes/pve2/tasks", vmid=203, typefilter="vzstart")
    assert started[0]["status"] == "OK"
    unmanaged = await client.post("/cluster/ha/resources/vm:100/migrate", data={"node": "pve2"})
    assert await _error(unmanaged) == "resource 'vm:100' is not HA managed\n"


async def test_rules_are_checked_as_pve_checks_them(fresh_client: httpx2.AsyncClient) -> None:
    client = fresh_client
    unmanaged = await client.post(
        "/cluster/ha/rules",
        data={"rule": "r1", "type": "node-affinity", "resources": "vm:100", "nodes": "pve1"},
    )
    assert await _error(unmanaged) == "cannot use unmanaged resource(s) vm:100.\n"
    twice = await client.post(
        "/cluster/ha/rules",
        data={"rule": "r1", "type": "node-affinity", "resources": "ct:203", "nodes": "pve2"},
    )
    assert twice.status_code == 400
    assert twice.json()["errors"] == {
        "resources": "resource 'ct:203' is already used in another node affinity rule"
    }
    alone = await client.post(
        "/cluster/ha/rules",
        data={"rule": "r2", "type": "resource-affinity", "resources": "ct:203",
              "affinity": "negative"},
    )  # fmt: skip
    assert alone.json()["errors"] == {
        "resources": "rule is ineffective as there are less than two resources"
    }
    await client.post("/cluster/ha/resources", data={"sid": "vm:106"})
    made = await client.post(
        "/cluster/ha/rules",
        data={"rule": "apart", "type": "resource-affinity", "resources": "ct:203,vm:106",
              "affinity": "negative", "comment": "spread"},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    rule = await get_data(client, "/cluster/ha/rules/apart")
    assert (rule["resources"], rule["affinity"], rule["order"]) == ("ct:203,vm:106", "negative", 2)
    changed = await client.put(
        "/cluster/ha/rules/apart",
        data={"type": "resource-affinity", "comment": "x", "digest": rule["digest"]},
    )
    assert changed.status_code == 200, changed.text
    # Removing a resource drops it from rules; a rule left with none goes (purge).
    await client.delete("/cluster/ha/resources/ct:203")
    rules = {r["rule"]: r for r in await get_data(client, "/cluster/ha/rules")}
    assert "prefer-pve3" not in rules and rules["apart"]["resources"] == "vm:106"
    assert rules["apart"]["errors"] == {
        "resources": "rule is ineffective as there are less than two resources"
    }
    assert (await client.delete("/cluster/ha/rules/apart")).status_code == 200
    assert await get_data(client, "/cluster/ha/rules") == []


async def test_a_guest_under_ha_or_replicated_is_destroyed_only_with_purge(
    fresh_client: httpx2.AsyncClient,
) -> None:
    client = fresh_client
    kept = await client.delete("/nodes/pve3/lxc/203", params={"force": "1"})
    assert await _error(kept) == (
        "unable to remove CT 203 - used in HA resources and purge parameter not set.\n"
    )
    await client.delete("/cluster/ha/resources/ct:203")
    replicated = await client.delete("/nodes/pve3/lxc/203", params={"force": "1"})
    assert await _error(replicated) == (
        "There is a replication job '203-0' for guest '203' - Please remove that first.\n"
    )
    await client.post("/cluster/ha/resources", data={"sid": "ct:203"})
    purged = await client.delete("/nodes/pve3/lxc/203", params={"force": "1", "purge": "1"})
    assert purged.status_code == 200, purged.text
    assert (await task_status(client, purged.json()["data"]))["exitstatus"] == "OK"
    assert [r["sid"] for r in await get_data(client, "/cluster/ha/resources")] == ["vm:104"]
    assert await get_data(client, "/cluster/replication") == []


async def test_a_managed_guests_migrate_call_is_handed_to_the_manager(
    fresh_client: httpx2.AsyncClient,
) -> None:
    client = fresh_client
    upid = await post_upid(client, "/nodes/pve3/lxc/203/migrate", target="pve2", restart="1")
    assert upid.split(":")[5] == "hamigrate"
    log = await get_data(client, f"/nodes/pve3/tasks/{upid}/log")
    assert log[0]["t"] == "Requesting HA migration for CT 203 to node pve2"
    assert await _guest_status(client, "pve2", "lxc", 203) == "running"
    migrated = await get_data(client, "/nodes/pve3/tasks", vmid=203, typefilter="vzmigrate")
    assert migrated[0]["user"] == "root@pam" and migrated[0]["status"] == "OK"
