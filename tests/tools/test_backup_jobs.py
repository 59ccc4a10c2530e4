"""The backup job tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's backup
job scenario (a schedule created, run now and its archive seen, deleted) and the bad
input refused before anything is sent.
"""

from __future__ import annotations

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio


async def test_scenario_create_run_see_the_archive_delete(session: Session) -> None:
    made = ok(await call(session, "proxmox_backup_job", op="create", id="dns-nightly",
                         schedule="mon..fri 22:30", vmids=[200], storage="local",
                         compress="zstd", notes="{{guestname}}"))  # fmt: skip
    assert made["summary"] == "create backup job dns-nightly: vmids 200, mon..fri 22:30"
    listed = ok(await call(session, "proxmox_backup_job_list", id="dns-nightly"))
    job = listed["jobs"][0]
    assert (job["schedule"], job["enabled"], job["storage"], job["guests"]) == (
        "mon..fri 22:30", True, "local", [200],
    )  # fmt: skip
    assert job["next_run"] is not None

    run = ok(await call(session, "proxmox_backup_job", op="run", id="dns-nightly"))
    assert len(run["runs"]) == 1
    started = run["runs"][0]
    assert started["node"] == "pve1" and started["exitstatus"] == "OK"
    [archive] = started["backups"]
    assert archive.startswith("local:backup/vzdump-lxc-200-")
    backups = ok(await call(session, "proxmox_backup_list", storage="local", vmid=200))
    assert archive in [b["volid"] for b in backups["backups"]]
    assert next(b for b in backups["backups"] if b["volid"] == archive)["notes"] == "dns01"

    changed = ok(await call(session, "proxmox_backup_job", op="update", id="dns-nightly",
                            schedule="sat 03:00", enabled=False))  # fmt: skip
    assert {c["field"]: (c.get("before"), c["after"]) for c in changed["changes"]} == {
        "schedule": ("mon..fri 22:30", "sat 03:00"),
        "enabled": (1, 0),
    }

    ask = error_of(await call(session, "proxmox_backup_job_delete", id="dns-nightly"))
    assert ask is not None and ask["code"] == "confirmation_required"
    ok(await call(session, "proxmox_backup_job_delete", id="dns-nightly",
                  confirm_token=ask["details"]["confirm_token"]))  # fmt: skip
    left = ok(await call(session, "proxmox_backup_job_list"))
    assert [j["id"] for j in left["jobs"]] == ["backup-nightly"]
    # The archive outlives its job.
    backups = ok(await call(session, "proxmox_backup_list", storage="local", vmid=200))
    assert archive in [b["volid"] for b in backups["backups"]]


async def test_the_nightly_job_and_the_guests_it_misses(session: Session) -> None:
    listed = ok(await call(session, "proxmox_backup_job_list"))
    [job] = listed["jobs"]
    assert (job["id"], job["selection"], job["storage"], job["mode"], job["compress"]) == (
        "backup-nightly", "all guests except 9000", "nfs-backup", "snapshot", "zstd",
    )  # fmt: skip
    assert listed["not_backed_up"] == [{"vmid": 9000, "name": "tmpl-deb12", "type": "qemu"}]


async def test_a_run_over_several_nodes_sends_one_vzdump_per_node(session: Session) -> None:
    ok(await call(session, "proxmox_backup_job", op="create", id="prod", schedule="01:30",
                  pool="prod", storage="nfs-backup"))  # fmt: skip
    plan = ok(await call(session, "proxmox_backup_job", op="run", id="prod", dry_run=True))["plan"]
    assert plan["summary"] == "run backup job prod now: 4 guests on 2 nodes to nfs-backup"
    calls = [c["path"] + " " + str(c["params"]["vmid"]) for c in plan["calls"]]
    assert calls == ["/nodes/pve1/vzdump 100,101", "/nodes/pve2/vzdump 104,105"]


@pytest.mark.parametrize(
    ("arguments", "code", "field"),
    [
        ({"op": "create", "schedule": "01:00", "vmids": [100], "pool": "prod"},
         "invalid_argument", None),
        ({"op": "create", "schedule": "01:00", "pool": "nope"}, "not_found", "pool"),
        ({"op": "create", "schedule": "01:00", "all": True, "exclude": [998]},
         "not_found", "exclude"),
        ({"op": "create", "schedule": "01:00", "all": True, "storage": "nope"},
         "not_found", "storage"),
        ({"op": "update", "id": "backup-nightly"}, "invalid_argument", "op"),
    ],
)  # fmt: skip
async def test_bad_jobs_are_refused_before_anything_is_sent(
    session: Session, arguments: dict[str, object], code: str, field: str | None
) -> None:
    error = refused(await call(session, "proxmox_backup_job", **arguments))
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert session.writes() == []


async def test_a_schedule_pve_cannot_parse_is_refused_naming_it(session: Session) -> None:
    error = refused(await call(session, "proxmox_backup_job", op="create", id="bad",
                               schedule="25:00", all=True))  # fmt: skip
    assert (error["code"], error["field"]) == ("invalid_parameter", "schedule")
    assert error["details"]["errors"] == {
        "schedule": "invalid calendar event '25:00' - hour '25' out of range"
    }
    listed = ok(await call(session, "proxmox_backup_job_list"))
    assert [j["id"] for j in listed["jobs"]] == ["backup-nightly"]


async def test_a_run_with_a_node_down_is_refused_before_any_vzdump(session: Session) -> None:
    session.sim.state.nodes["pve2"].online = False
    error = refused(await call(session, "proxmox_backup_job", op="run", id="backup-nightly"))
    assert (error["code"], error["field"]) == ("precondition_failed", "id")
    assert error["message"] == "node pve2 holding guests of the job is not online"
    assert session.writes() == []
