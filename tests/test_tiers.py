"""Every tool declares a tier, and its MCP hints follow from it."""

from __future__ import annotations

import pytest

from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.tiers import Tier
from pvemcp.tools import all_tools
from pvemcp.transports.mcp_app import annotations_for

# The expected tier of each tool, written down once: adding a tool means deciding its tier
# here too, so a tier can never be left to a default.
EXPECTED = {
    "proxmox_cluster_status": Tier.READ,
    "proxmox_node_list": Tier.READ,
    "proxmox_node_status": Tier.READ,
    "proxmox_next_vmid": Tier.READ,
    "proxmox_guest_list": Tier.READ,
    "proxmox_guest_get": Tier.READ,
    "proxmox_guest_power": Tier.WRITE,
    "proxmox_guest_stop": Tier.DESTRUCTIVE,
    "proxmox_task_status": Tier.READ,
    "proxmox_task_log": Tier.READ,
    "proxmox_task_wait": Tier.READ,
    "proxmox_cli_run": Tier.ESCAPE,
    "proxmox_shell_run": Tier.ESCAPE,
    "proxmox_file_read": Tier.ESCAPE,
    "proxmox_file_write": Tier.ESCAPE,
    "proxmox_ct_exec": Tier.ESCAPE,
    "proxmox_vm_exec": Tier.ESCAPE,
}


def test_every_tool_has_its_expected_tier() -> None:
    assert {spec.name: spec.tier for spec in all_tools()} == EXPECTED


@pytest.mark.parametrize("spec", all_tools(), ids=lambda s: s.name)
def test_hints_follow_the_tier(spec: AnySpec) -> None:
    hints = annotations_for(spec)
    assert hints.read_only_hint is (spec.tier is Tier.READ)
    assert hints.destructive_hint is (spec.tier in (Tier.DESTRUCTIVE, Tier.ESCAPE))
    assert hints.open_world_hint is False
    assert spec.description and len(spec.description) < 400
