"""A node's network interfaces, as GET /nodes/{node}/network lists them.

Every node of the demo cluster has the same small, typical setup: a physical NIC `eno1`,
the bridge `vmbr0` on it with the node's address, and a VLAN-aware internal bridge
`vmbr1` without ports. Read-only: the tools read it to refuse a NIC on a bridge the node
does not have before a create is sent (PVE itself accepts an unknown bridge at create
and fails only at start, in `PVE::Network::tap_plug`). The `type` filter follows
pve-manager's `PVE/API2/Network.pm` `index`: `any_bridge` and `any_local_bridge` are
Linux and OVS bridges (plus SDN vnets for `any_bridge`, which the simulator has none of).
"""

from __future__ import annotations

from typing import Any

from .model import Node
from .router import Context, Params, Result, Route, api, text

_BRIDGES = frozenset({"bridge", "OVSBridge"})


def interfaces(node: Node) -> list[dict[str, Any]]:
    """The node's interfaces, in PVE's shape."""
    common = {"active": 1, "autostart": 1, "exists": 1, "families": ["inet"]}
    return [
        {"iface": "eno1", "type": "eth", "method": "manual", **common},
        {
            "iface": "vmbr0", "type": "bridge", "method": "static", "bridge_ports": "eno1",
            "cidr": f"{node.ip}/24", "address": node.ip, "netmask": "24",
            "gateway": node.ip.rsplit(".", 1)[0] + ".1", "bridge_vlan_aware": 0, **common,
        },
        {
            "iface": "vmbr1", "type": "bridge", "method": "manual", "bridge_ports": "",
            "bridge_vlan_aware": 1, "bridge_vids": "2-4094", **common,
        },
    ]  # fmt: skip


def _list(ctx: Context, params: Params) -> Result:
    node = ctx.state.node(text(params, "node"))
    wanted = params.get("type")
    found = interfaces(node)
    if wanted in ("any_bridge", "any_local_bridge"):
        found = [item for item in found if item["type"] in _BRIDGES]
    elif wanted not in (None, "include_sdn"):
        found = [item for item in found if item["type"] == wanted]
    return Result(found)


ROUTES: tuple[Route, ...] = (api("GET", "/nodes/{node}/network", _list),)
