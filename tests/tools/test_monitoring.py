"""The monitoring tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are what one call
cannot show: summaries that agree with the current state, the cap on rows, paging that
adds up, filters, a journal cursor that follows a task the test starts, and a secret in
a log line that never reaches the caller.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio


def _series(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in answer["series"]}


async def test_node_metrics_are_a_summary_per_series(session: Session) -> None:
    answer = ok(await call(session, "proxmox_metrics_get", node="pve1"))
    assert answer["target"] == "node pve1"
    assert (answer["points"], answer["step_s"]) == (60, 60) and "rows" not in answer
    assert answer["start"] < answer["end"] and answer["end"].endswith("Z")
    series = _series(answer)
    assert series["cpu"]["unit"] == "%" and 0 < series["cpu"]["avg"] < 100
    assert series["cpu"]["min"] <= series["cpu"]["avg"] <= series["cpu"]["max"]
    assert series["memtotal"] == {"name": "memtotal", "unit": "GiB", "last": 128.0}
    assert series["netin"]["unit"] == "B/s" and series["maxcpu"]["last"] == 32


async def test_stopped_guest_is_flat_zero_running_guest_near_its_memory(
    session: Session,
) -> None:
    stopped = _series(ok(await call(session, "proxmox_metrics_get", vmid=101, timeframe="day")))
    assert stopped["cpu"] == {"name": "cpu", "unit": "%", "last": 0.0}
    assert stopped["maxmem"]["last"] == 4.0
    running = ok(await call(session, "proxmox_metrics_get", name="web01"))
    assert running["target"] == "qemu 100 (web01) on pve1"
    guest = ok(await call(session, "proxmox_guest_get", vmid=100, include_config=False))
    mem = _series(running)["mem"]
    assert 0.8 * guest["mem_mib"] / 1024 <= mem["avg"] <= guest["maxmem_mib"] / 1024


async def test_rows_only_when_asked_capped_and_filtered(session: Session) -> None:
    answer = ok(
        await call(
            session,
            "proxmox_metrics_get",
            vmid=104,
            timeframe="day",
            cf="MAX",
            series=["cpu", "mem"],
            points=True,
        )
    )
    assert answer["points"] == 1440 and len(answer["rows"]) == 120
    assert {name for row in answer["rows"] for name in row} == {"time", "cpu", "mem"}
    assert [s["name"] for s in answer["series"]] == ["cpu", "mem"]
    times = [row["time"] for row in answer["rows"]]
    assert times == sorted(times) and times[-1] - times[0] == 119 * 60


async def test_storage_metrics_end_at_its_usage(session: Session) -> None:
    answer = ok(
        await call(
            session, "proxmox_metrics_get", node="pve2", storage="local-lvm", timeframe="month"
        )
    )
    assert answer["target"] == "storage local-lvm on pve2" and answer["step_s"] == 1800
    status = session.sim.state.volumes
    storage = status.storages["local-lvm"]
    _, used = status.usage(storage, "pve2")
    assert abs(_series(answer)["used"]["last"] - used / 1024**3) < 0.01 * used / 1024**3 + 0.01


async def test_metrics_bad_targets_name_their_field(session: Session) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"vmid": 999}, "not_found", "vmid"),
        ({"name": "nope"}, "not_found", "name"),
        ({"node": "pve9"}, "not_found", "node"),
        ({"node": "pve1", "storage": "nope"}, "not_found", "storage"),
        ({"vmid": 100, "timeframe": "decade"}, "invalid_argument", "timeframe"),
        ({"vmid": 100, "series": ["cpu", "bogus"]}, "invalid_argument", "series"),
        ({"node": "pve1", "timeframe": "minute"}, "invalid_argument", "timeframe"),
    ]
    for arguments, code, field in cases:
        error = refused(await call(session, "proxmox_metrics_get", **arguments))
        assert (error["code"], error.get("field")) == (code, field), (arguments, error)
    both = refused(await call(session, "proxmox_metrics_get", vmid=100, storage="local"))
    assert both["code"] == "invalid_argument"


async def test_task_list_pages_add_up_newest_first(session: Session) -> None:
    first = ok(await call(session, "proxmox_task_list", limit=5))
    second = ok(await call(session, "proxmox_task_list", limit=5, offset=5))
    whole = ok(await call(session, "proxmox_task_list", limit=10))
    assert first["total"] == whole["total"] > 10 and first["next_offset"] == 5
    assert first["tasks"] + second["tasks"] == whole["tasks"]
    starts = [task["start"] for task in whole["tasks"]]
    assert starts == sorted(starts, reverse=True)
    assert {task["node"] for task in whole["tasks"]} >= {"pve1", "pve2"}


async def test_task_list_filters(session: Session) -> None:
    errors = ok(await call(session, "proxmox_task_list", status="error"))
    assert errors["total"] == 1
    (failed,) = errors["tasks"]
    assert (failed["type"], failed["id"], failed["node"]) == ("qmstart", "103", "pve1")
    assert failed["status"] == "start failed: QEMU exited with code 1"
    warned = ok(
        await call(session, "proxmox_task_list", node="pve3", type="aptupdate", status="warning")
    )
    assert [t["status"] for t in warned["tasks"]] == ["WARNINGS: 1"]
    for_vm = ok(await call(session, "proxmox_task_list", vmid=100))
    assert for_vm["tasks"] and {t["id"] for t in for_vm["tasks"]} == {"100"}
    since = ok(await call(session, "proxmox_task_list", since="2100-01-01T00:00:00Z"))
    assert since == {"tasks": [], "total": 0}
    started = ok(await call(session, "proxmox_guest_power", vmid=101, action="start"))
    mine = ok(await call(session, "proxmox_task_list", user="root@pam", limit=1))
    assert mine["tasks"][0]["upid"] == started["upid"]
    assert mine["tasks"][0]["user"] == "root@pam!pvemcp" and mine["tasks"][0]["status"] == "OK"


async def test_syslog_pages_and_filters(session: Session) -> None:
    page = ok(await call(session, "proxmox_node_log", node="pve2", limit=10))
    assert len(page["lines"]) == 10 and page["next_start"] == 10 and page["total"] > 10
    nxt = ok(await call(session, "proxmox_node_log", node="pve2", limit=10, start=10))
    assert nxt["lines"][0] != page["lines"][0]
    daemon = ok(await call(session, "proxmox_node_log", node="pve1", service="pvedaemon"))
    assert daemon["lines"] and all(" pvedaemon[" in line for line in daemon["lines"])
    empty = ok(await call(session, "proxmox_node_log", node="pve1", since="2100-01-01"))
    assert empty["lines"] == ["-- No entries --"] and "next_start" not in empty


async def test_log_secrets_are_redacted(session: Session) -> None:
    """pve1's journal holds a cron command line with an API token secret: the gateway's
    redaction masks it like every result."""
    secret = "5f0b8e3c-91d2-4a7e-b6c4-2d9e7a10c3f4"
    answer = ok(await call(session, "proxmox_node_log", node="pve1", service="cron", limit=500))
    flagged = [line for line in answer["lines"] if "Authorization" in line]
    assert flagged and all("[REDACTED]" in line for line in flagged)
    result = await call(session, "proxmox_node_log", node="pve1", service="cron", limit=500)
    assert secret not in str(result.content) and secret not in str(result.structured_content)


async def test_journal_follows_a_cursor(session: Session) -> None:
    tail = ok(await call(session, "proxmox_node_log", node="pve1", source="journal", limit=5))
    assert len(tail["lines"]) == 5 and tail["next_cursor"].startswith("s=")
    started = ok(await call(session, "proxmox_guest_power", vmid=101, action="start"))
    newer = ok(
        await call(
            session, "proxmox_node_log", node="pve1", source="journal", cursor=tail["next_cursor"]
        )
    )
    assert any(line.endswith(f"starting task {started['upid']}") for line in newer["lines"])
    assert newer["next_cursor"] != tail["next_cursor"]


async def test_node_log_bad_inputs_name_their_field(session: Session) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"node": "pve9"}, "not_found", "node"),
        ({"since": "2026-01-02", "until": "2026-01-01 10:00"}, "invalid_argument", "until"),
        ({"source": "journal", "service": "ssh"}, "invalid_argument", "service"),
        ({"cursor": "s=1;t=2"}, "invalid_argument", "cursor"),
        ({"since": "yesterday"}, "invalid_argument", "since"),
    ]
    for arguments, code, field in cases:
        error = refused(await call(session, "proxmox_node_log", **arguments))
        assert (error["code"], error.get("field")) == (code, field), (arguments, error)
    assert session.writes() == []


async def test_running_tasks_are_listed_as_running(session: Session) -> None:
    """A reboot (8 s, scaled) started without waiting is still running when listed."""
    started = ok(await call(session, "proxmox_guest_power", vmid=100, action="reboot", wait=False))
    running = ok(await call(session, "proxmox_task_list", status="running"))
    assert [(t["upid"], t["status"]) for t in running["tasks"]] == [(started["upid"], "running")]
    assert "end" not in running["tasks"][0]
    log = ok(await call(session, "proxmox_node_log", node="pve1", service="pvedaemon"))
    assert any(line.endswith(f"starting task {started['upid']}") for line in log["lines"])
    assert not any(f"end task {started['upid']}" in line for line in log["lines"])
