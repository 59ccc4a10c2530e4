"""proxmox_guest_clone through the SDK client against the simulator, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import read_audit
from tests.e2e.test_tools_inmemory import data, error

pytestmark = pytest.mark.anyio


async def _call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return data(await client.call_tool(name, args))


async def test_a_template_clones_linked_to_the_next_free_vmid(
    client: Client, audit_path: Path
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await client.call_tool(
        "proxmox_guest_clone",
        {"name": "tmpl-deb12", "new_name": "web03"},
        progress_callback=on_progress,
    )
    outcome = data(result)
    assert outcome["vmid"] == 108 and outcome["node"] == "pve2"
    assert outcome["exitstatus"] == "OK" and outcome["guest_status"] == "stopped"
    assert outcome["note"] == "clone of qemu 9000"
    assert seen, "a clone reports progress while it waits"
    guest = await _call(client, "proxmox_guest_get", {"vmid": 108})
    assert guest["name"] == "web03" and guest["node"] == "pve2"
    intent = next(r for r in read_audit(audit_path) if r.get("phase") == "intent")
    (call,) = intent["where"]["target"]["calls"]
    assert call["path"] == "/nodes/pve2/qemu/9000/clone"
    assert call["params"] == {"newid": 108, "full": 0, "name": "web03"}


async def test_the_plan_says_what_a_full_clone_makes_and_the_space_left(client: Client) -> None:
    answer = await _call(
        client,
        "proxmox_guest_clone",
        {"vmid": 101, "newid": 150, "storage": "local", "pool": "dev", "dry_run": True},
    )
    plan = answer["plan"]
    assert plan["calls"][0]["params"] == {"newid": 150, "full": 1, "storage": "local",
                                          "pool": "dev"}  # fmt: skip
    assert plan["summary"] == "full clone of qemu 101 (web02) on pve1 as 150 on pve1"
    changes = {c["field"]: c for c in plan["changes"]}
    assert changes["clone"]["after"] == "full"
    assert changes["scsi0"]["after"] == (
        "new volume on local, 32.0 GiB, copy of local-lvm:vm-101-disk-0"
    )
    free = changes["local free GiB"]
    # 32 GiB + the EFI disk and TPM state (4 MiB each), in GiB to one decimal.
    assert free["before"] - free["after"] == pytest.approx(32.0, abs=0.11)
    outcome = await _call(
        client, "proxmox_guest_clone", {"vmid": 101, "newid": 150, "storage": "local"}
    )
    assert outcome["vmid"] == 150 and outcome["guest_status"] == "stopped"


async def test_a_container_clones_with_its_new_hostname(client: Client) -> None:
    outcome = await _call(
        client, "proxmox_guest_clone", {"name": "proxy01", "newid": 250, "new_name": "proxy02"}
    )
    assert outcome["type"] == "lxc" and outcome["exitstatus"] == "OK"
    guest = await _call(client, "proxmox_guest_get", {"vmid": 250})
    assert guest["name"] == "proxy02"


@pytest.mark.parametrize(
    ("args", "code", "field"),
    [
        ({"vmid": 101, "full": False}, "precondition_failed", "full"),
        ({"vmid": 9000, "storage": "local"}, "invalid_argument", "storage"),
        ({"vmid": 101, "newid": 100}, "already_exists", "newid"),
        ({"vmid": 101, "target": "pve9"}, "not_found", "target"),
        ({"vmid": 106, "storage": "local"}, "storage_full", "storage"),
        ({"vmid": 101, "storage": "nope"}, "not_found", "storage"),
        ({"vmid": 101, "snapname": "nope"}, "not_found", "snapname"),
        ({"vmid": 4242}, "not_found", "vmid"),
        ({"vmid": 101, "newid": 5}, "invalid_argument", "newid"),
    ],
)
async def test_bad_inputs_are_refused_naming_the_field(
    client: Client, args: dict[str, Any], code: str, field: str
) -> None:
    failure = error(await client.call_tool("proxmox_guest_clone", args))
    assert failure["code"] == code and failure["field"] == field, failure
    assert failure["hint"]


async def test_pve_refuses_what_the_plan_cannot_see(client: Client) -> None:
    """A full clone of a running container needs a snapshot: PVE's words come back."""
    failure = error(await client.call_tool("proxmox_guest_clone", {"name": "dns01"}))
    assert "Full clone of a running container is only possible from a snapshot" in str(failure)


async def test_a_clone_is_undone_by_a_confirmed_delete_of_the_clone(client: Client) -> None:
    await _call(client, "proxmox_guest_clone", {"vmid": 9000, "newid": 130})
    [made, *_] = (await _call(client, "proxmox_call_undo", {}))["calls"]
    assert made["undo"] == "proxmox_guest_delete vmid=130"
    # The delete is destructive: the undo asks for the same confirmation it would.
    ask = error(await client.call_tool("proxmox_call_undo", {"event_id": made["event_id"]}))
    assert ask["code"] == "confirmation_required"
    token = ask["details"]["confirm_token"]
    await _call(client, "proxmox_call_undo", {"event_id": made["event_id"], "confirm_token": token})
    gone = error(await client.call_tool("proxmox_guest_get", {"vmid": 130}))
    assert gone["code"] == "not_found"
