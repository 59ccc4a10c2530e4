"""The Ceph tools end to end: the MCP SDK client, the gateway and a simulator with Ceph.

The declared examples and rejects run in test_examples.py (on a simulator with Ceph);
these are issue 12's Ceph scenario (status and health, an OSD out and the warning, in
again, a pool created and deleted with confirmation), what a plan refuses, naming it,
before anything is sent, and the one error every tool answers on a cluster without Ceph.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of, fresh_session

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ceph(tmp_path: Path) -> AsyncIterator[Session]:
    """A client on a gateway over a fresh simulator with Ceph."""
    async with fresh_session(tmp_path, ceph=True) as opened:
        yield opened


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call: the plan the user sees, then the call with its token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def test_scenario_health_osd_out_and_in_pool_create_and_delete(ceph: Session) -> None:
    status = ok(await call(ceph, "proxmox_ceph_status"))
    assert status["health"] == "HEALTH_WARN"
    assert [(c["check"], c["message"]) for c in status["checks"]] == [
        ("RECENT_CRASH", "1 daemons have recently crashed")
    ]
    assert status["checks"][0]["detail"][0].startswith("osd.5 crashed on host pve3 at ")
    assert (status["mons"], status["quorum"]) == (["pve1", "pve2", "pve3"],) * 2
    assert (status["mgr_active"], status["mgr_standby"]) == ("pve1", ["pve2"])
    assert status["osds"] == "6 total, 5 up, 5 in"
    osds = ok(await call(ceph, "proxmox_ceph_list", kind="osds"))["rows"]
    assert [(o["name"], o["host"], o["state"], o["marked_in"]) for o in osds[4:]] == [
        ("osd.4", "pve3", "up", True),
        ("osd.5", "pve3", "down", False),
    ]

    # osd.4 is pve3's last OSD up and in: the plan says the pools become undersized.
    plan = ok(await call(ceph, "proxmox_ceph_osd", osd=4, action="out", dry_run=True))["plan"]
    assert plan["summary"] == "Mark osd.4 on pve3 out"
    assert any("become undersized (HEALTH_WARN PG_DEGRADED)" in w for w in plan["warnings"])
    out = await _confirmed(ceph, "proxmox_ceph_osd", osd=4, action="out")
    assert out["health"] == "HEALTH_WARN"
    degraded = next(c for c in out["checks"] if c["check"] == "PG_DEGRADED")
    assert degraded["message"].endswith("pgs undersized")
    back = await _confirmed(ceph, "proxmox_ceph_osd", osd=4, action="in")
    assert [c["check"] for c in back["checks"]] == ["RECENT_CRASH"]

    made = await _confirmed(
        ceph, "proxmox_ceph_pool", action="create", name="vmdata", pg_num=32, add_storage=True
    )
    assert made["exitstatus"] == "OK"
    pools = ok(await call(ceph, "proxmox_ceph_list", kind="pools"))["rows"]
    vmdata = next(p for p in pools if p["name"] == "vmdata")
    assert (vmdata["size"], vmdata["min_size"], vmdata["pg_num"]) == (3, 2, 32)

    # The new pool has a storage: deleting it alone is refused, naming the storage.
    error = refused(await call(ceph, "proxmox_ceph_pool", action="delete", name="vmdata"))
    assert (error["code"], error["field"]) == ("in_use", "name")
    assert error["message"] == "pool 'vmdata' is in use by PVE storage vmdata"
    deleted = await _confirmed(
        ceph, "proxmox_ceph_pool", action="delete", name="vmdata", remove_storages=True
    )
    assert deleted["exitstatus"] == "OK"
    names = [p["name"] for p in ok(await call(ceph, "proxmox_ceph_list", kind="pools"))["rows"]]
    assert "vmdata" not in names


async def test_a_pool_a_guest_disk_uses_is_refused_naming_the_guest(ceph: Session) -> None:
    added = ok(await call(ceph, "proxmox_disk_add", vmid=101, storage="ceph-rbd", size_gib=4))
    assert (added["vmid"], added["node"]) == (101, "pve1")
    error = refused(
        await call(ceph, "proxmox_ceph_pool", action="delete", name="rbd", remove_storages=True)
    )
    assert error["code"] == "in_use"
    assert error["message"].startswith("pool 'rbd' is in use by guest disks 101 (ceph-rbd:vm-101-")
    assert error["message"].endswith(" on storage ceph-rbd")
    assert [w for w in ceph.writes() if "ceph" in w] == []


async def test_an_out_that_stops_io_is_refused(ceph: Session) -> None:
    await _confirmed(ceph, "proxmox_ceph_osd", osd=4, action="out")
    await _confirmed(ceph, "proxmox_ceph_osd", osd=2, action="out")
    error = refused(await call(ceph, "proxmox_ceph_osd", osd=3, action="out"))
    assert error["code"] == "precondition_failed"
    assert error["message"] == (
        "taking osd.3 out leaves 1 host(s) with an OSD up and in, below min_size of pool(s) "
        ".mgr, rbd, cephfs_data, cephfs_metadata: their I/O would stop"
    )
    listed = ok(await call(ceph, "proxmox_ceph_list", kind="osds"))["rows"]
    assert next(o for o in listed if o["name"] == "osd.3")["marked_in"] is True


async def test_lists_of_daemons_and_filesystems(ceph: Session) -> None:
    mds = ok(await call(ceph, "proxmox_ceph_list", kind="mds"))["rows"]
    assert [(m["name"], m["state"], m["fs"]) for m in mds] == [("pve1", "up:active", "cephfs")]
    fs = ok(await call(ceph, "proxmox_ceph_list", kind="fs"))["rows"]
    assert [(f["name"], f["metadata_pool"], f["data_pools"]) for f in fs] == [
        ("cephfs", "cephfs_metadata", ["cephfs_data"])
    ]
    mons = ok(await call(ceph, "proxmox_ceph_list", kind="mons"))["rows"]
    assert [(m["name"], m["state"]) for m in mons] == [
        (n, "running") for n in ("pve1", "pve2", "pve3")
    ]


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("proxmox_ceph_status", {}),
        ("proxmox_ceph_list", {"kind": "pools"}),
        ("proxmox_ceph_osd", {"osd": 1, "action": "out"}),
        ("proxmox_ceph_pool", {"action": "create", "name": "bench"}),
        ("proxmox_ceph_pool", {"action": "delete", "name": "rbd"}),
    ],
)
async def test_without_ceph_every_tool_says_so(
    session: Session, tool: str, arguments: dict[str, Any]
) -> None:
    error = refused(await call(session, tool, **arguments))
    assert error["code"] == "not_configured"
    assert error["message"] == (
        "this cluster has no Ceph: PVE says 'binary not installed: /usr/bin/ceph-mon'"
    )
    assert "pveceph install" in error["hint"]
    assert session.writes() == []
