"""proxmox_guest_config and proxmox_guest_config_update end to end: the MCP SDK client,
the gateway and a fresh simulator each (test_examples.fresh_session). The declared
examples and rejects run in test_examples.py; these are what one call cannot show:
pending changes on a running guest, a revert, the digest as a precondition, the plan's
diff, and an unknown key refused before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

RUNNING_VM = 100  # pve1, web01: memory 4096, hotplug network,disk,usb (memory waits)


async def read(session: Session, **arguments: Any) -> dict[str, Any]:
    return ok(await call(session, "proxmox_guest_config", **arguments))


async def test_read_current_pending_and_a_snapshot(session: Session) -> None:
    config = await read(session, vmid=RUNNING_VM)
    assert (config["node"], config["type"]) == ("pve1", "qemu")
    assert config["config"]["memory"] == "4096" and config["config"]["name"] == "web01"
    assert "digest" not in config["config"] and len(config["digest"]) == 40
    assert "pending" not in config

    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"memory": 8192, "description": "web"}, delete=["numa"]))  # fmt: skip
    config = await read(session, name="web01")
    # Memory and numa's deletion wait for the next start; the description applies now.
    assert config["config"]["memory"] == "4096" and config["config"]["description"] == "web"
    assert config["pending"] == {"memory": "8192"} and config["pending_delete"] == ["numa"]

    saved = await read(session, vmid=RUNNING_VM, snapshot="pre-upgrade")
    assert saved["snapshot"] == "pre-upgrade" and "snaptime" in saved["config"]
    missing = error_of(await call(session, "proxmox_guest_config", vmid=RUNNING_VM,
                                  snapshot="nope"))  # fmt: skip
    assert missing is not None and "does not exist" in missing["message"]


async def test_the_plan_shows_the_diff_and_revert_drops_pending(session: Session) -> None:
    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"memory": 8192}))  # fmt: skip
    plan = ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                         values={"cores": 4}, revert=["memory"],
                         dry_run=True))  # fmt: skip
    assert plan["dry_run"] is True
    changes = {c["field"]: c for c in plan["plan"]["changes"]}
    assert changes["cores"] == {"field": "cores", "before": "2", "after": 4}
    assert changes["memory"] == {"field": "memory", "before": "8192", "after": "4096"}
    (sent,) = plan["plan"]["calls"]
    assert sent["method"] == "PUT" and sent["params"]["revert"] == "memory"
    assert "memory" not in {k for k in sent["params"] if k != "revert"}

    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM, revert=["memory"]))
    assert "pending" not in await read(session, vmid=RUNNING_VM)
    nothing = ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                            revert=["memory"], dry_run=True))  # fmt: skip
    assert nothing["plan"]["warnings"] == ["memory has no pending change: nothing to revert"]


async def test_the_digest_is_a_precondition(session: Session) -> None:
    digest = (await read(session, vmid=RUNNING_VM))["digest"]
    ok(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                  values={"tags": "prod;web;checked"}, digest=digest))  # fmt: skip
    stale = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                values={"onboot": 0}, digest=digest))  # fmt: skip
    assert stale is not None and stale["code"] == "config_changed"
    assert stale["field"] == "digest" and "proxmox_guest_config" in stale["hint"]
    assert len([w for w in session.writes() if w.endswith("/config")]) == 1


async def test_an_unknown_key_is_named_with_the_closest_before_anything_is_sent(
    session: Session,
) -> None:
    refused = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                  values={"memroy": 8192, "cores": 4}))  # fmt: skip
    assert refused is not None and refused["code"] == "invalid_argument"
    assert refused["field"] == "memroy" and "memory" in refused["hint"]
    bad_value = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                    values={"cores": True}))  # fmt: skip
    assert bad_value is not None and bad_value["code"] == "invalid_argument"
    assert "values" in bad_value["message"] or bad_value.get("field") == "values"
    assert session.writes() == []


async def test_a_locked_guest_is_refused_before_anything_is_sent(session: Session) -> None:
    started = ok(await call(session, "proxmox_snapshot_create", vmid=RUNNING_VM,
                            snapname="ram", vmstate=True, wait=False))  # fmt: skip
    assert started["task_status"] == "running"
    locked = error_of(await call(session, "proxmox_guest_config_update", vmid=RUNNING_VM,
                                 values={"cores": 4}))  # fmt: skip
    assert locked is not None and locked["code"] == "guest_locked", locked
    assert locked["field"] == "vmid" and locked["details"]["lock"] == "snapshot"
    assert [w for w in session.writes() if w.endswith("/config")] == []
