"""The typed tool catalogue, one module per Proxmox domain."""

from __future__ import annotations

from pvemcp.gateway.registry import AnySpec
from pvemcp.tools import cluster, guests, tasks


def all_tools() -> list[AnySpec]:
    """Every tool, in the order tools/list shows them."""
    return [*cluster.TOOLS, *guests.TOOLS, *tasks.TOOLS]
