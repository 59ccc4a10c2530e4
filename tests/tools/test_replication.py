"""The replication tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's
replication scenario (a job created, run now, its status and log read, deleted) and the
bad input a plan refuses before anything is sent.
"""

from __future__ import annotations

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio


async def test_scenario_create_run_read_delete(session: Session) -> None:
    made = ok(await call(session, "proxmox_replication_create", name="nginx-dev",
                         target="pve2", schedule="*/30"))  # fmt: skip
    assert made["summary"] == "Replicate guest 204 from pve3 to pve2 as job 204-0"
    assert {c["field"]: c.get("after") for c in made["changes"]} == {
        "job": "204-0",
        "volumes": ["local-zfs:subvol-204-disk-0"],
        "schedule": "*/30",
    }

    run = ok(await call(session, "proxmox_replication_run", id="204-0"))
    assert (run["result"], run["node"], run["fail_count"]) == ("synced", "pve3", 0)
    assert run["last_sync"] is not None

    listed = ok(await call(session, "proxmox_replication_list", id="204-0"))
    job = listed["jobs"][0]
    assert (job["vmid"], job["source"], job["target"], job["schedule"]) == (
        204, "pve3", "pve2", "*/30",
    )  # fmt: skip
    assert job["last_sync"] == run["last_sync"] and job["next_sync"] is not None
    log = listed["log"]
    assert log[0].endswith("204-0: start replication job")
    assert any("sync 'local-zfs:subvol-204-disk-0'" in line for line in log)
    assert log[-1].endswith("204-0: end replication job")

    ask = error_of(await call(session, "proxmox_replication_delete", id="204-0"))
    assert ask is not None and ask["code"] == "confirmation_required"
    deleted = ok(await call(session, "proxmox_replication_delete", id="204-0",
                            confirm_token=ask["details"]["confirm_token"]))  # fmt: skip
    assert deleted["summary"] == "Delete replication job 204-0 (pve3 to pve2)"
    assert any("on pve2 are deleted" in w for w in deleted["warnings"])
    left = ok(await call(session, "proxmox_replication_list", vmid=204))["jobs"]
    assert left == [] or left[0]["removing"] == "full"


async def test_a_disk_without_replication_support_is_refused_naming_it(session: Session) -> None:
    error = refused(await call(session, "proxmox_replication_create", vmid=100, target="pve2"))
    assert error["code"] == "precondition_failed" and error["field"] == "vmid"
    assert error["message"].startswith(
        "missing replicate feature on volume 'local-lvm:vm-100-disk-1' (efidisk0, lvmthin"
    )
    assert session.writes() == []
