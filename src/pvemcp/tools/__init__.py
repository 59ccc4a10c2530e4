"""The typed tool catalogue, one module per Proxmox domain."""

from __future__ import annotations

from pvemcp.gateway.registry import AnySpec
from pvemcp.tools import cluster, files, guest_exec, guests, node_cli, tasks


def all_tools() -> list[AnySpec]:
    """Every tool, in the order tools/list shows them."""
    return [
        *cluster.TOOLS,
        *guests.TOOLS,
        *tasks.TOOLS,
        *node_cli.TOOLS,
        *files.TOOLS,
        *guest_exec.TOOLS,
    ]


def tier_map() -> dict[str, str]:
    """Each tool's declared tier by name: what the policy loader checks rules against."""
    return {spec.name: str(spec.tier) for spec in all_tools()}
