"""The diagnostics tools end to end: the MCP SDK client, the gateway and a fresh simulator.

Each test makes its finding happen in its own simulator (a node's root filesystem or a
storage filled, swap in use, a guest's memory or disk nearly full, a snapshot aged, a
backup aged or removed, an agent that stops answering) and checks the finding cites the
number the simulator holds, its threshold and the call that acts on it; the untouched
demo yields none of those.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pvemcp.simulator.backups import Backup
from pvemcp.simulator.model import GiB
from pvemcp.simulator.state import ClusterState
from pvemcp.tools import diagnostics
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio

DAY = 86_400


def _by(findings: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["kind"] == kind]


def _backups(state: ClusterState, vmid: int) -> list[tuple[str, Backup]]:
    """(node, backup) of every archive of `vmid` on every node's view of every storage."""
    found = []
    for storage in state.volumes.storages.values():
        for node in storage.usage:
            found += [
                (node, v)
                for v in state.volumes.on(storage, node)
                if isinstance(v, Backup) and v.vmid == vmid
            ]
    return found


# --- nodes -----------------------------------------------------------------------------


async def test_healthy_nodes_have_no_finding_and_their_figures(session: Session) -> None:
    answer = ok(await call(session, "proxmox_diagnose_nodes"))
    assert answer["findings"] == []
    assert answer["calls"] == 1 + 2 * 3, "resources once, then status and rrddata per node"
    rows = {row["node"]: row for row in answer["nodes"]}
    node = session.sim.state.nodes["pve3"]
    assert rows["pve3"]["rootfs_pct"] == round(100 * node.rootfs_used / node.rootfs_total, 1)
    assert rows["pve3"]["swap_pct"] == 0
    cpu = rows["pve3"]
    assert cpu["cpu_avg_pct"] <= cpu["cpu_max_pct"] and cpu["cpu_pct"] is not None
    assert "nfs-backup" in rows["pve1"]["storages"], "a shared storage under its first node"
    assert [n for n, row in rows.items() if "nfs-backup" in (row["storages"] or {})] == ["pve1"]


async def test_node_pressure_is_ranked_with_figures_thresholds_and_actions(
    session: Session,
) -> None:
    state = session.sim.state
    with state.lock:
        pve1, pve2, pve3 = (state.nodes[n] for n in ("pve1", "pve2", "pve3"))
        pve2.host_cpu = 2.0  # the host alone saturates the node: 100 % all hour
        pve3.rootfs_used = int(pve3.rootfs_total * 0.97)
        pve1.swap_used = 6 * GiB  # of 8 GiB: 75 %
        lvm = state.volumes.storages["local-lvm"]
        total, used = state.volumes.usage(lvm, "pve2")
        lvm.usage["pve2"] = (total, lvm.usage["pve2"][1] + int(total * 0.9) - used)
        nfs = state.volumes.storages["nfs-backup"]
        total, used = state.volumes.usage(nfs, "pve1")
        extra = int(total * 0.96) - used
        nfs.usage = {n: (t, other + extra) for n, (t, other) in nfs.usage.items()}
    answer = ok(await call(session, "proxmox_diagnose_nodes"))
    found = [(f["severity"], f["kind"], f["target"], f["value"]) for f in answer["findings"]]
    assert found == [
        ("critical", "cpu", "node pve2", 100.0),
        ("critical", "rootfs", "node pve3", 97.0),
        ("critical", "storage", "storage nfs-backup (shared)", 96.0),
        ("warning", "swap", "node pve1", 75.0),
        ("warning", "storage", "storage local-lvm on pve2", 90.0),
    ]
    cpu, rootfs, nfs_finding, swap, lvm_finding = answer["findings"]
    assert cpu["threshold"] == 85 and "averaged 100.0 % over the last hour" in cpu["detail"]
    assert (cpu["tool"], cpu["args"]["node"]) == ("proxmox_guest_list", "pve2")
    assert rootfs["args"] == {"storage": "local", "node": "pve3"}
    assert nfs_finding["tool"] == "proxmox_backup_list" and swap["threshold"] == 50
    assert lvm_finding["tool"] == "proxmox_storage_content"
    assert "to local-zfs (" in lvm_finding["action"], "the roomiest other image storage"
    assert "GiB free of 1700.0 GiB" in lvm_finding["detail"]

    # Thresholds are arguments: memory at 1 % finds every node; one node only.
    pve1_only = ok(await call(session, "proxmox_diagnose_nodes", node="pve1", mem_pct=1))
    assert [row["node"] for row in pve1_only["nodes"]] == ["pve1"]
    memory = _by(pve1_only["findings"], "memory")
    assert [(f["target"], f["threshold"]) for f in memory] == [("node pve1", 1.0)]
    assert memory[0]["value"] == pve1_only["nodes"][0]["mem_pct"]


async def test_an_offline_node_is_critical_and_not_read(session: Session) -> None:
    with session.sim.state.lock:
        session.sim.state.nodes["pve3"].online = False
    answer = ok(await call(session, "proxmox_diagnose_nodes"))
    assert [(f["severity"], f["kind"], f["target"]) for f in answer["findings"]] == [
        ("critical", "offline", "node pve3")
    ]
    assert answer["calls"] == 1 + 2 * 2


async def test_node_arguments_are_checked(session: Session) -> None:
    error = refused(await call(session, "proxmox_diagnose_nodes", node="pve9"))
    assert (error["code"], error["field"]) == ("not_found", "node")
    error = refused(await call(session, "proxmox_diagnose_nodes", swap_pct=101))
    assert error["code"] == "invalid_argument" and "swap_pct" in error["message"]


# --- guests ----------------------------------------------------------------------------


async def test_demo_guests_findings_and_a_healthy_guest(session: Session) -> None:
    """The demo's findings at the defaults: two stopped onboot guests (critical), an
    agent that does not answer and a 45-day-old snapshot; a running, backed-up guest with
    an answering agent and no snapshot has none."""
    answer = ok(await call(session, "proxmox_diagnose_guests"))
    assert [(f["kind"], f["target"]) for f in answer["findings"]] == [
        ("stopped", "lxc 201 (proxy01) on pve1"),
        ("stopped", "qemu 101 (web02) on pve1"),
        ("agent", "qemu 102 (test) on pve1"),
        ("snapshot", "lxc 202 (monitoring) on pve2"),
    ]
    snapshot = answer["findings"][3]
    assert (snapshot["value"], snapshot["threshold"], snapshot["unit"]) == (45.0, 30, "days")
    assert answer["guests"] == 13, "the template is not diagnosed"
    web02 = answer["findings"][1]
    assert web02["severity"] == "critical" and "onboot=1" in web02["detail"]
    assert (web02["tool"], web02["args"]) == (
        "proxmox_guest_power",
        {"vmid": 101, "action": "start"},
    )
    # Bounded: per guest its config, a snapshot list for the 3 with snapshots, the agent of
    # the 4 running VMs with one; backups once per storage (nfs-backup, local on 3 nodes).
    assert answer["calls"] == 1 + 13 + 3 + 4 + 4

    healthy = ok(await call(session, "proxmox_diagnose_guests", vmid=104))
    assert (healthy["guests"], healthy["findings"], healthy["total"]) == (1, [], 0)

    ok(await call(session, "proxmox_guest_power", vmid=101, action="start"))
    after = ok(await call(session, "proxmox_diagnose_guests", node="pve1"))
    assert [f["target"] for f in after["findings"]] == [
        "lxc 201 (proxy01) on pve1",
        "qemu 102 (test) on pve1",
    ]


async def test_memory_and_disks_near_full(session: Session) -> None:
    state = session.sim.state
    with state.lock:
        state.guests[102].mem_fraction = 0.96
        dns01 = state.guests[200]
        dns01.disk_used = int(dns01.maxdisk * 0.92)
        state.guests[100].disk_used = int(32 * GiB * 0.93)  # web01's / per its agent
    answer = ok(await call(session, "proxmox_diagnose_guests", checks=["memory", "disk"]))
    found = {(f["kind"], f["target"]): f for f in answer["findings"]}
    assert set(found) == {
        ("memory", "qemu 102 (test) on pve1"),
        ("disk", "lxc 200 (dns01) on pve1"),
        ("disk", "qemu 100 (web01) on pve1"),
    }
    memory = found["memory", "qemu 102 (test) on pve1"]
    assert (memory["severity"], memory["value"], memory["threshold"]) == ("critical", 96.0, 90)
    assert memory["args"] == {"vmid": 102, "values": {"memory": 3072}}
    assert "of 2048 MiB" in memory["detail"]
    ct = found["disk", "lxc 200 (dns01) on pve1"]
    assert (ct["severity"], ct["value"]) == ("warning", 92.0)
    assert ct["args"] == {"vmid": 200, "size_gib": 12, "disk": "rootfs"}
    vm = found["disk", "qemu 100 (web01) on pve1"]
    assert vm["value"] == 93.0 and vm["detail"].startswith("/ (sda1) 93.0 % used of 32.0 GiB")
    assert vm["args"] == {"vmid": 100, "size_gib": 48, "disk": "scsi0"}
    assert [f["severity"] for f in answer["findings"]] == ["critical", "warning", "warning"]


async def test_backups_missing_or_too_old(session: Session) -> None:
    state = session.sim.state
    now = time.time()
    with state.lock:
        for node, backup in _backups(state, 102):
            state.volumes.free(node, backup.volid)
        for _, backup in _backups(state, 104):
            backup.ctime = int(now - 10 * DAY)
    answer = ok(await call(session, "proxmox_diagnose_guests", checks=["backup"]))
    assert [(f["severity"], f["target"]) for f in answer["findings"]] == [
        ("critical", "qemu 102 (test) on pve1"),
        ("warning", "qemu 104 (db01) on pve2"),
    ]
    never, old = answer["findings"]
    assert "value" not in never and never["detail"] == "no backup on any backup storage"
    assert never["args"] == {"vmid": 102, "storage": "nfs-backup"}
    assert old["tool"] == "proxmox_backup_start" and old["threshold"] == 7
    assert (old["value"], old["detail"]) == (10.0, "last backup 10.0 days ago")
    assert answer["calls"] == 1 + 4, "no per-guest read when only backups are checked"
    fine = ok(await call(session, "proxmox_diagnose_guests", checks=["backup"], backup_days=30))
    assert [f["target"] for f in fine["findings"]] == ["qemu 102 (test) on pve1"]


async def test_an_old_snapshot_is_found_by_its_age(session: Session) -> None:
    ok(await call(session, "proxmox_snapshot_create", vmid=106, snapname="pre-kernel"))
    with session.sim.state.lock:
        snapshot = session.sim.state.guests[106].snapshots[-1]
        snapshot.snaptime = int(time.time() - 40 * DAY)
    young = ok(await call(session, "proxmox_diagnose_guests", vmid=106, snapshot_days=41))
    assert young["findings"] == []
    answer = ok(await call(session, "proxmox_diagnose_guests", vmid=106))
    (finding,) = answer["findings"]
    assert (finding["kind"], finding["value"], finding["threshold"]) == ("snapshot", 40.0, 30)
    assert finding["detail"] == "snapshot pre-kernel is 40 days old"
    assert finding["args"] == {"vmid": 106, "snapname": "pre-kernel"}
    assert finding["tool"] == "proxmox_snapshot_delete"


async def test_an_agent_that_does_not_answer(session: Session) -> None:
    """The demo's VM 102 has no agent in the guest; web01's stops answering."""
    with session.sim.state.lock:
        session.sim.state.agents.silent.add(100)
    answer = ok(await call(session, "proxmox_diagnose_guests", node="pve1", checks=["agent"]))
    assert [(f["kind"], f["target"]) for f in answer["findings"]] == [
        ("agent", "qemu 100 (web01) on pve1"),
        ("agent", "qemu 102 (test) on pve1"),
    ]
    finding = answer["findings"][0]
    assert "QEMU guest agent is not running" in finding["detail"]
    assert finding["args"] == {"vmid": 100, "fields": ["ping"]}


async def test_filters_and_the_cap(session: Session) -> None:
    prod = ok(await call(session, "proxmox_diagnose_guests", pool="prod", snapshot_days=1))
    assert prod["guests"] == 4 and prod["total"] == 4, "web02 stopped, 3 snapshots"
    capped = ok(
        await call(session, "proxmox_diagnose_guests", pool="prod", snapshot_days=1, limit=2)
    )
    assert (len(capped["findings"]), capped["total"]) == (2, 4)
    assert capped["findings"] == prod["findings"][:2]
    tagged = ok(await call(session, "proxmox_diagnose_guests", tag="infra", checks=["stopped"]))
    assert [f["target"] for f in tagged["findings"]] == ["lxc 201 (proxy01) on pve1"]
    assert tagged["guests"] == 3
    error = refused(await call(session, "proxmox_diagnose_guests", vmid=9000))
    assert (error["code"], error["field"]) == ("not_found", "vmid")
    error = refused(await call(session, "proxmox_diagnose_guests", node="pve9"))
    assert (error["code"], error["field"]) == ("not_found", "node")


async def test_a_stopped_guest_ha_wants_started(session: Session) -> None:
    """CT 203 is HA-managed (requested started); stopped behind the CRM's back (a crash
    the CRM has not acted on yet) it is a finding, and one the HA tools act on."""
    state = session.sim.state
    with state.lock:
        guest = state.guests[203]
        guest.status, guest.started_at, guest.pid = "stopped", None, None
    answer = ok(await call(session, "proxmox_diagnose_guests", node="pve3", checks=["stopped"]))
    (finding,) = answer["findings"]
    assert (finding["severity"], finding["target"]) == ("critical", "lxc 203 (test) on pve3")
    assert finding["detail"] == "stopped although its HA state is started"
    assert (finding["tool"], finding["args"]) == ("proxmox_ha_status", {})


async def test_too_many_guests_to_read_one_by_one(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-guest reads are capped (lowered here from 300 to 5 to see it with the
    demo's 13 guests): the call asks for a filter, and checks answered cluster-wide (memory,
    backups) or a filtered call still work."""
    monkeypatch.setattr(diagnostics, "MAX_GUESTS", 5)
    error = refused(await call(session, "proxmox_diagnose_guests"))
    assert (error["code"], error["field"]) == ("invalid_argument", "node")
    assert "13 guests match" in error["message"] and "Filter by node" in error["hint"]
    wide = ok(await call(session, "proxmox_diagnose_guests", checks=["memory", "backup"]))
    assert wide["guests"] == 13 and wide["calls"] == 1 + 4
    narrow = ok(await call(session, "proxmox_diagnose_guests", node="pve3"))
    assert narrow["guests"] == 4
