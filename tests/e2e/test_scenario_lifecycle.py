"""Issue 11's scenario: a guest's whole life, driven through MCP only.

`pvemcp demo` runs as a real subprocess over stdio with its embedded simulator; the
official SDK client enables the toolsets it needs with `proxmox_toolset_enable`, then:
clone the cloud-init template → set the cloud-init user, key and IP → grow the disk →
start → snapshot → back up → restore the backup to a new vmid → migrate the restored
guest → delete both. Destructive steps are confirmed the way a client without elicitation
confirms (the two-step token). At the end `pvemcp audit verify` (the CLI, as an operator
runs it) passes on the log, and every step is in it, intent and outcome.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TEMPLATE = 9000
"""The demo cluster's Debian 12 cloud-init template (`tmpl-deb12` on pve2)."""
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb5zzVbXc3j0mOIh0tEMm9xS1nK0OZ8z4W1sG1Jq1cd ops@example"


def _answer(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def _error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return error


class Operator:
    """The agent's side: calls tools, confirms destructive ones, remembers what it ran."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ran: list[str] = []

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        self.ran.append(tool)
        return _answer(await self.client.call_tool(tool, arguments))

    async def confirmed(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """A destructive call: the first answer asks for confirmation, the second confirms."""
        self.ran.append(tool)
        ask = _error(await self.client.call_tool(tool, arguments))
        assert ask["code"] == "confirmation_required", ask
        token = ask["details"]["confirm_token"]
        return _answer(await self.client.call_tool(tool, {**arguments, "confirm_token": token}))


async def test_a_guest_from_clone_to_delete_through_mcp(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(audit),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0.05",
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "pvemcp", "demo"], env=env)
    async with Client(params) as client:
        op = Operator(client)
        for toolset in ("lifecycle", "cloudinit", "disks", "backup"):
            await op.call("proxmox_toolset_enable", toolset=toolset)

        clone = await op.call(
            "proxmox_guest_clone", vmid=TEMPLATE, new_name="web03", full=True, wait=True
        )
        web03 = clone["vmid"]
        assert clone["exitstatus"] == "OK"
        assert clone["node"] == "pve2"

        await op.call(
            "proxmox_cloudinit_set",
            vmid=web03,
            user="ops",
            ssh_keys=[KEY],
            ipconfig={"0": "ip=10.0.10.23/24,gw=10.0.10.1"},
            nameserver="10.0.10.2",
        )
        data = await op.call("proxmox_cloudinit_show", vmid=web03, what="user")
        assert "ops" in json.dumps(data)

        before = await op.call("proxmox_guest_config", vmid=web03)
        assert "scsi0" in json.dumps(before)
        grown = await op.call(
            "proxmox_disk_resize", vmid=web03, disk="scsi0", size_gib=32, wait=True
        )
        assert grown["exitstatus"] == "OK"

        started = await op.call("proxmox_guest_power", vmid=web03, action="start", wait=True)
        assert started["guest_status"] == "running"

        await op.call("proxmox_snapshot_create", vmid=web03, snapname="fresh", wait=True)
        tree = await op.call("proxmox_snapshot_list", vmid=web03)
        assert "fresh" in json.dumps(tree)

        backup = await op.call(
            "proxmox_backup_start", vmid=web03, storage="nfs-backup", mode="snapshot", wait=True
        )
        assert backup["exitstatus"] == "OK"
        [volid] = backup["backups"]
        listed = await op.call("proxmox_backup_list", storage="nfs-backup", vmid=web03)
        assert volid in json.dumps(listed)

        restored = await op.call(
            "proxmox_backup_restore", volid=volid, node="pve2", storage="local-lvm", wait=True
        )
        copy = restored["vmid"]
        assert copy != web03
        assert restored["exitstatus"] == "OK"
        copy_config = (await op.call("proxmox_guest_config", vmid=copy))["config"]
        assert copy_config["ciuser"] == "ops", "the restored guest has the backed-up config"
        assert "size=32G" in copy_config["scsi0"], "and the grown disk, on the chosen storage"
        assert copy_config["scsi0"].startswith("local-lvm:")

        moved = await op.call("proxmox_guest_migrate", vmid=copy, target="pve1", wait=True)
        assert moved["exitstatus"] == "OK"
        assert (await op.call("proxmox_guest_get", vmid=copy))["node"] == "pve1"

        await op.confirmed("proxmox_guest_stop", vmid=web03, wait=True)
        for vmid in (web03, copy):
            gone = await op.confirmed("proxmox_guest_delete", vmid=vmid, wait=True)
            assert gone["exitstatus"] == "OK"
            assert _error(await client.call_tool("proxmox_guest_get", {"vmid": vmid}))["code"] == (
                "not_found"
            )

    verified = await anyio.run_process(
        [sys.executable, "-m", "pvemcp", "audit", "verify", str(audit)], check=False
    )
    assert verified.returncode == 0, (verified.stdout + verified.stderr).decode()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    # A read is one `record`; a write an fsync'd `intent` before it runs and an `outcome`.
    finished = [r["what"]["tool"] for r in records if r["phase"] in ("record", "outcome")]
    for tool in op.ran:
        assert tool in finished, f"{tool} is not in the audit log"
    intents = {r["what"]["tool"] for r in records if r["phase"] == "intent"}
    outcomes = {r["what"]["tool"] for r in records if r["phase"] == "outcome"}
    assert intents == outcomes
    assert intents >= {
        "proxmox_guest_clone",
        "proxmox_cloudinit_set",
        "proxmox_disk_resize",
        "proxmox_backup_restore",
        "proxmox_guest_migrate",
        "proxmox_guest_delete",
    }
