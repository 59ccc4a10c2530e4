"""The snapshot tools end to end: the MCP SDK client, the gateway and a fresh simulator.

Each test gets its own simulator (test_examples.fresh_session), so the trees it changes
are its own. The declared examples and rejects already run in test_examples.py; these
are the behaviours a single call cannot show: the tree as it grows and branches, what a
rollback and a delete leave, the confirmation of the destructive ones, and the lock a
running snapshot holds.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.test_snapshots import move_disks_to_zfs
from tests.tools.calls import call as _call
from tests.tools.calls import ok as _ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

RUNNING_VM = 100  # pve1, web01: pre-upgrade <- after-upgrade (with RAM)
STOPPED_VM = 101  # pve1, web02: no snapshots
RUNNING_CT = 202  # pve2, monitoring: pre-update


async def _tree(session: Session, vmid: int) -> dict[str, Any]:
    return _ok(await _call(session, "proxmox_snapshot_list", vmid=vmid))


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then the call with the
    token."""
    ask = error_of(await _call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    token = ask["details"]["confirm_token"]
    return _ok(await _call(session, tool, **arguments, confirm_token=token))


async def test_list_is_a_tree_with_the_current_position(session: Session) -> None:
    tree = await _tree(session, RUNNING_VM)
    assert tree["node"] == "pve1" and tree["type"] == "qemu"
    rows = tree["snapshots"]
    assert [r["name"] for r in rows] == ["pre-upgrade", "after-upgrade"]
    assert "parent" not in rows[0] and rows[1]["parent"] == "pre-upgrade"
    assert rows[1]["vmstate"] is True and "vmstate" not in rows[0]
    assert rows[0]["description"] == "before the Debian 13 upgrade"
    assert rows[0]["time"] < rows[1]["time"] and rows[0]["time"].endswith("Z")
    assert tree["current"] == "after-upgrade"
    empty = await _tree(session, STOPPED_VM)
    assert empty["snapshots"] == [] and "current" not in empty


async def test_create_grows_the_tree_and_refuses_a_taken_name(session: Session) -> None:
    done = _ok(
        await _call(
            session, "proxmox_snapshot_create", vmid=STOPPED_VM, snapname="s1", description="one"
        )
    )
    assert done["exitstatus"] == "OK" and done["upid"].split(":")[5] == "qmsnapshot"
    _ok(await _call(session, "proxmox_snapshot_create", name="web02", snapname="s2"))
    tree = await _tree(session, STOPPED_VM)
    assert [(r["name"], r.get("parent")) for r in tree["snapshots"]] == [
        ("s1", None),
        ("s2", "s1"),
    ]
    assert tree["snapshots"][0]["description"] == "one" and tree["current"] == "s2"
    sent = len(session.writes())
    taken = error_of(
        await _call(session, "proxmox_snapshot_create", vmid=STOPPED_VM, snapname="s1")
    )
    assert taken is not None and taken["code"] == "already_exists"
    assert taken["field"] == "snapname" and "'s1' already used" in taken["message"]
    assert len(session.writes()) == sent, "refused before anything was sent"


async def test_create_dry_run_shows_the_call_and_the_new_parent(session: Session) -> None:
    plan = _ok(
        await _call(
            session,
            "proxmox_snapshot_create",
            vmid=RUNNING_VM,
            snapname="s3",
            vmstate=True,
            dry_run=True,
        )
    )["plan"]
    assert "with its RAM" in plan["summary"]
    (call,) = plan["calls"]
    assert call["method"] == "POST" and call["path"] == "/nodes/pve1/qemu/100/snapshot"
    assert call["params"] == {"snapname": "s3", "vmstate": 1}
    assert {"field": "parent", "before": "after-upgrade", "after": "s3"} in plan["changes"]
    assert session.writes() == []


async def test_a_running_snapshot_locks_the_guest(session: Session) -> None:
    """A second snapshot (or a delete) while one runs is refused with PVE's words, as a
    structured error naming the guest's field; once the task ends, it goes through."""
    started = _ok(
        await _call(
            session,
            "proxmox_snapshot_create",
            vmid=RUNNING_VM,
            snapname="ram",
            vmstate=True,
            wait=False,
        )
    )
    assert started["task_status"] == "running"
    sent = len(session.writes())
    for tool, arguments in (
        ("proxmox_snapshot_create", {"snapname": "second"}),
        ("proxmox_snapshot_delete", {"snapname": "pre-upgrade"}),
    ):
        locked = error_of(await _call(session, tool, vmid=RUNNING_VM, **arguments))
        assert locked is not None and locked["code"] == "guest_locked", locked
        assert locked["message"].startswith("VM is locked (snapshot)")
        assert locked["field"] == "vmid" and locked["details"]["lock"] == "snapshot"
    assert len(session.writes()) == sent
    waited = _ok(await _call(session, "proxmox_task_wait", upid=started["upid"]))
    assert waited["exitstatus"] == "OK"
    _ok(await _call(session, "proxmox_snapshot_create", vmid=RUNNING_VM, snapname="second"))
    tree = await _tree(session, RUNNING_VM)
    assert [r["name"] for r in tree["snapshots"]][-2:] == ["ram", "second"]
    assert tree["snapshots"][-2]["vmstate"] is True


async def test_rollback_is_confirmed_stops_the_guest_and_branches(session: Session) -> None:
    plan = _ok(
        await _call(
            session,
            "proxmox_snapshot_rollback",
            vmid=RUNNING_VM,
            snapname="pre-upgrade",
            dry_run=True,
        )
    )["plan"]
    assert any("is lost" in w for w in plan["warnings"])
    assert any("stopped hard first" in w for w in plan["warnings"])
    assert {"field": "status", "before": "running", "after": "stopped"} in plan["changes"]
    assert plan["calls"][0]["path"] == "/nodes/pve1/qemu/100/snapshot/pre-upgrade/rollback"
    done = await _confirmed(
        session, "proxmox_snapshot_rollback", vmid=RUNNING_VM, snapname="pre-upgrade"
    )
    assert done["exitstatus"] == "OK" and done["guest_status"] == "stopped"
    # The next snapshot starts a branch off pre-upgrade; after-upgrade is kept.
    _ok(await _call(session, "proxmox_snapshot_create", vmid=RUNNING_VM, snapname="branch"))
    tree = await _tree(session, RUNNING_VM)
    assert [(r["name"], r.get("parent")) for r in tree["snapshots"]] == [
        ("pre-upgrade", None),
        ("after-upgrade", "pre-upgrade"),
        ("branch", "pre-upgrade"),
    ]
    assert tree["current"] == "branch"
    # A snapshot with RAM state resumes the VM, without start.
    resumed = await _confirmed(
        session, "proxmox_snapshot_rollback", vmid=RUNNING_VM, snapname="after-upgrade"
    )
    assert resumed["guest_status"] == "running"


async def test_container_rollback_with_start(session: Session) -> None:
    done = await _confirmed(
        session, "proxmox_snapshot_rollback", vmid=RUNNING_CT, snapname="pre-update", start=True
    )
    assert done["upid"].split(":")[5] == "vzrollback"
    assert done["guest_status"] == "running"
    (call,) = [c for c in session.calls if c[0] == "POST" and c[1].endswith("/rollback")]
    assert call[2] == {"start": 1}


async def test_rollback_and_delete_of_a_missing_snapshot(session: Session) -> None:
    for tool in ("proxmox_snapshot_rollback", "proxmox_snapshot_delete"):
        missing = error_of(await _call(session, tool, vmid=RUNNING_VM, snapname="nope"))
        assert missing is not None and missing["code"] == "not_found"
        assert missing["field"] == "snapname"
        assert "pre-upgrade, after-upgrade" in missing["hint"]
    assert session.writes() == []


async def test_delete_reparents_and_moves_the_current_position(session: Session) -> None:
    plan = _ok(
        await _call(
            session,
            "proxmox_snapshot_delete",
            vmid=RUNNING_VM,
            snapname="pre-upgrade",
            dry_run=True,
        )
    )["plan"]
    assert any("after-upgrade then descend from no snapshot" in w for w in plan["warnings"])
    assert plan["calls"][0]["method"] == "DELETE"
    done = await _confirmed(
        session, "proxmox_snapshot_delete", vmid=RUNNING_VM, snapname="pre-upgrade"
    )
    assert done["exitstatus"] == "OK"
    tree = await _tree(session, RUNNING_VM)
    assert [(r["name"], r.get("parent")) for r in tree["snapshots"]] == [("after-upgrade", None)]
    last = await _confirmed(
        session, "proxmox_snapshot_delete", vmid=RUNNING_VM, snapname="after-upgrade", force=True
    )
    assert last["exitstatus"] == "OK"
    (call,) = [c for c in session.calls if c[0] == "DELETE" and c[1].endswith("/after-upgrade")]
    assert call[2] == {"force": 1}
    tree = await _tree(session, RUNNING_VM)
    assert tree["snapshots"] == [] and "current" not in tree


async def test_rollback_past_a_newer_snapshot_on_zfs_is_refused(session: Session) -> None:
    """ZFS rolls a volume back only to its newest snapshot: the plan refuses, naming the
    newer snapshots to delete first, and nothing is sent; the newest one is allowed."""
    volid = move_disks_to_zfs(session.sim.state, RUNNING_VM)
    refused = error_of(
        await _call(session, "proxmox_snapshot_rollback", vmid=RUNNING_VM, snapname="pre-upgrade")
    )
    assert refused is not None and refused["code"] == "precondition_failed", refused
    assert refused["field"] == "snapname"
    assert refused["message"] == (
        f"can't rollback, 'pre-upgrade' is not most recent snapshot on '{volid}'"
    )
    assert refused["details"]["newer"] == ["after-upgrade"]
    assert "proxmox_snapshot_delete" in refused["hint"]
    assert session.writes() == []
    done = await _confirmed(
        session, "proxmox_snapshot_rollback", vmid=RUNNING_VM, snapname="after-upgrade"
    )
    assert done["exitstatus"] == "OK"


async def test_an_approved_rollback_meets_a_lock_taken_since(session: Session) -> None:
    """The plan is worked out again when the approval is redeemed: a snapshot started in
    between has locked the guest, so the rollback is refused rather than sent."""
    ask = error_of(
        await _call(session, "proxmox_snapshot_rollback", vmid=RUNNING_VM, snapname="pre-upgrade")
    )
    assert ask is not None and ask["code"] == "confirmation_required"
    _ok(
        await _call(
            session,
            "proxmox_snapshot_create",
            vmid=RUNNING_VM,
            snapname="ram",
            vmstate=True,
            wait=False,
        )
    )
    locked = error_of(
        await _call(
            session,
            "proxmox_snapshot_rollback",
            vmid=RUNNING_VM,
            snapname="pre-upgrade",
            confirm_token=ask["details"]["confirm_token"],
        )
    )
    assert locked is not None and locked["code"] == "guest_locked", locked
    assert not any(call.endswith("/rollback") for call in session.writes())
