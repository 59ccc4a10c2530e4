"""A node's network interfaces: `/etc/network/interfaces`, its pending copy, apply, revert.

As pve-manager's `PVE/API2/Network.pm` with pve-common's `PVE/INotify.pm` and
`PVE/Network/Interfaces.pm`: every create, update and delete rewrites the whole config
into the pending file `/etc/network/interfaces.new` (INotify's shadow file), so GET reads
the pending config, and PVE adds the `changes` attribute to the answer (a `diff -u` of the
active file against the pending one). Interfaces only in the pending file are not
`active`. `PUT /nodes/{node}/network` (a `srvreload` task of `networking`) renames the
pending file over the active one and runs `ifreload -a`; `DELETE` unlinks the pending
file. The checks are PVE's, in its order and words: the handler's own (`interface already
exists`, a second default gateway, a port another interface uses, Open vSwitch not
installed) as parameter errors or dies before the write, then the writer's
(`__write_etc_network_interfaces`: missing bond slaves, VLAN parents, bridge ports), which
fail the whole request so nothing is half-written.

Seed: every node has `eno1` (pve3 also `eno2`), `vmbr0` on `eno1` with the node's address
and gateway, and pve1 and pve2 a VLAN-aware `vmbr1` without ports; pve3 has a VLAN-aware
`vmbr1` on `eno2` pending, not applied. The `type`
filter follows `index`: `any_bridge`/`any_local_bridge` are Linux and OVS bridges (plus
the running SDN VNets for `any_bridge`, `include_sdn` and `vnet`, see `sdn.py`).

Not modelled: a reload does not touch guests. PVE does not either: a running guest's NIC
on a bridge the reload removes loses its link, and its next start fails (`bridge 'vmbr1'
does not exist`, modelled for VMs in `power.py`; the tools check bridges the node has
applied, `active`).
Altnames, IPv6 host checks and OVS ports are not modelled; OVS types are refused as on a
node without `openvswitch-switch`.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import failure, param_error
from .model import Node
from .router import Context, Params, Result, Route, api, text
from .tasks import Plan

Iface = dict[str, Any]
BRIDGE_TYPES = frozenset({"bridge", "OVSBridge"})
_PORT_KEYS = ("bridge_ports", "ovs_ports", "slaves", "ovs_bonds")
_OUTPUT_ONLY = frozenset({"active", "exists", "cidr", "cidr6"})
RELOAD_SECONDS = 3.0
_SHOWN_ORDER = {"eth": 0, "bond": 1, "vlan": 2, "bridge": 3}


@dataclass
class NodeNetwork:
    """One node's interfaces: the active file and, once changed, the pending one."""

    active: dict[str, Iface]
    pending: dict[str, Iface] | None = None
    """`/etc/network/interfaces.new`, or None when there is none."""
    ifupdown2: bool = True
    """Whether `ifreload` is installed; without it PVE cannot apply the pending file."""
    physical: frozenset[str] = field(default_factory=frozenset)
    """The NICs that exist in hardware (`exists: 1`)."""

    def current(self) -> dict[str, Iface]:
        """What PVE reads: the pending file if there is one, else the active one."""
        return self.pending if self.pending is not None else self.active

    def changes(self) -> str | None:
        """`diff -u` of the active file against the pending one, or None when equal."""
        if self.pending is None:
            return None
        lines = difflib.unified_diff(
            render(self.active).splitlines(keepends=True),
            render(self.pending).splitlines(keepends=True),
            "/etc/network/interfaces",
            "/etc/network/interfaces.new",
        )
        return "".join(lines) or None


def demo_networks(nodes: Iterable[Node]) -> dict[str, NodeNetwork]:
    """The seeded interfaces of every node (see the module docstring)."""
    networks = {}
    for index, node in enumerate(nodes):
        physical = ("eno1", "eno2") if index == 2 else ("eno1",)
        ifaces: dict[str, Iface] = {
            **{nic: {"type": "eth", "method": "manual", "autostart": 1} for nic in physical},
            "vmbr0": {
                "type": "bridge", "method": "static", "autostart": 1, "bridge_ports": "eno1",
                "address": node.ip, "netmask": "24",
                "gateway": node.ip.rsplit(".", 1)[0] + ".1",
            },
        }  # fmt: skip
        if index < 2:
            ifaces["vmbr1"] = {
                "type": "bridge", "method": "manual", "autostart": 1, "bridge_ports": "",
                "bridge_vlan_aware": 1, "bridge_vids": "2-4094", "comments": "guest VLANs",
            }  # fmt: skip
        for iface in ifaces.values():
            iface.setdefault("families", ["inet"])
            iface.setdefault("method6", "manual")
        net = NodeNetwork(ifaces, physical=frozenset(physical))
        if index == 2:
            # An operator's change not applied yet, as the web UI leaves it after "Create".
            net.pending = {**copy.deepcopy(ifaces), "vmbr1": {
                "type": "bridge", "method": "manual", "method6": "manual", "autostart": 1,
                "bridge_ports": "eno2", "bridge_vlan_aware": 1, "families": ["inet"],
            }}  # fmt: skip
        networks[node.name] = net
    return networks


def render(ifaces: Mapping[str, Iface]) -> str:
    """The interfaces file PVE writes (enough of `__interface_to_string` for a diff)."""
    out = ["auto lo\niface lo inet loopback\n"]
    for name in sorted(ifaces, key=lambda n: (_SHOWN_ORDER.get(ifaces[n]["type"], 4), n)):
        d = ifaces[name]
        raw = f"auto {name}\n" if d.get("autostart") else ""
        raw += f"iface {name} inet {d.get('method', 'manual')}\n"
        if d.get("address"):
            raw += f"\taddress {d['address']}/{d.get('netmask', '32')}\n"
        if d.get("gateway"):
            raw += f"\tgateway {d['gateway']}\n"
        if d["type"] == "bridge":
            raw += f"\tbridge-ports {d.get('bridge_ports') or 'none'}\n"
            raw += "\tbridge-stp off\n\tbridge-fd 0\n"
            if d.get("bridge_vlan_aware"):
                raw += (
                    f"\tbridge-vlan-aware yes\n\tbridge-vids {d.get('bridge_vids') or '2-4094'}\n"
                )
        elif d["type"] == "bond":
            raw += f"\tbond-slaves {d.get('slaves') or 'none'}\n\tbond-miimon 100\n"
            raw += f"\tbond-mode {d.get('bond_mode') or 'balance-rr'}\n"
        elif d["type"] == "vlan" and "." not in name:
            raw += f"\tvlan-raw-device {d.get('vlan-raw-device')}\n"
            if not name.startswith("vlan"):
                raw += f"\tvlan-id {d.get('vlan-id')}\n"
        if d.get("mtu"):
            raw += f"\tmtu {d['mtu']}\n"
        if d.get("comments"):
            raw += "".join(f"#{line}\n" for line in str(d["comments"]).splitlines())
        out.append(raw)
    return "\n".join(out)


def _shown(net: NodeNetwork, name: str, d: Iface) -> Iface:
    """An interface as `read_etc_network_interfaces` returns it."""
    item: Iface = {**d, "iface": name}
    if d.get("address"):
        item["cidr"] = f"{d['address']}/{d.get('netmask', '32')}"
    if name in net.active and net.active[name]["type"] == d["type"]:
        item["active"] = 1
    if name in net.physical:
        item["exists"] = 1
    elif d["type"] == "vlan":
        parent = d.get("vlan-raw-device") or name.rsplit(".", 1)[0]
        if parent in net.physical:
            item["exists"] = 1
    if d["type"] == "bridge":
        item.setdefault("bridge_stp", "off")
        item.setdefault("bridge_fd", 0)
    return item


def _network(ctx: Context, params: Params) -> NodeNetwork:
    node = ctx.state.node(text(params, "node"))
    return ctx.state.networks[node.name]


def _list(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    wanted = params.get("type")
    found = [_shown(net, name, d) for name, d in sorted(net.current().items())]
    if wanted in ("any_bridge", "any_local_bridge"):
        found = [item for item in found if item["type"] in BRIDGE_TYPES]
    elif wanted not in (None, "include_sdn"):
        found = [item for item in found if item["type"] == wanted]
    if wanted in ("any_bridge", "include_sdn", "vnet"):
        found += ctx.state.sdn.local_vnets(text(params, "node"))
    return Result(found, changes=net.changes())


def _get(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    name = text(params, "iface")
    d = net.current().get(name)
    if d is None:
        raise param_error({"iface": "interface does not exist"})
    return Result(_shown(net, name, d))


def _ports(d: Mapping[str, Any]) -> list[str]:
    return " ".join(str(d[k]) for k in _PORT_KEYS if d.get(k)).replace(",", " ").split()


def _check_handler(ifaces: Mapping[str, Iface], name: str, params: Mapping[str, Any]) -> None:
    """The handler's checks before the write (Network.pm `$check_duplicate_*`)."""
    for key, what in (("gateway", "Default gateway"), ("gateway6", "Default ipv6 gateway")):
        if params.get(key):
            for other, d in ifaces.items():
                if other != name and d.get(key):
                    raise param_error({key: f"{what} already exists on interface '{other}'."})
    new_ports = set(_ports(params))
    if new_ports:
        key = next(k for k in _PORT_KEYS if params.get(k))
        for other, d in ifaces.items():
            if other != name:
                for port in _ports(d):
                    if port in new_ports:
                        raise param_error({key: f"{port} is already used on interface '{other}'."})


def _check_write(ifaces: Mapping[str, Iface]) -> None:
    """`__write_etc_network_interfaces`' checks over the whole new file (a die: 500)."""
    used: dict[str, str] = {}
    for name, d in ifaces.items():
        for port in _ports(d):
            if used.get(port, name) != name:
                raise failure(f"port '{port}' is already used on interface '{used[port]}'")
            used[port] = name
    _check_bonds(ifaces)
    _check_vlans(ifaces)
    _check_bridges(ifaces)


def _check_bonds(ifaces: Mapping[str, Iface]) -> None:
    for name, d in ifaces.items():
        if d["type"] == "bond":
            for port in _ports(d):
                slave = ifaces.get(port)
                if slave is None:
                    raise failure(f"bond '{name}' - unable to find slave '{port}'")
                if slave["type"] not in ("eth", "bond"):
                    raise failure(
                        f"bond '{name}' - wrong interface type on slave '{port}' "
                        f"('{slave['type']}' != 'eth or bond')"
                    )


def _check_vlans(ifaces: Mapping[str, Iface]) -> None:
    for name, d in ifaces.items():
        if d["type"] == "vlan":
            if "." in name:
                parent = name.rsplit(".", 1)[0]
            elif not d.get("vlan-raw-device"):
                raise failure("missing vlan-raw-device option")
            else:
                parent = str(d["vlan-raw-device"])
                if not name.startswith("vlan") and not d.get("vlan-id"):
                    raise failure("missing vlan-id option")
            found = ifaces.get(parent)
            if found is None:
                raise failure(f"vlan '{name}' - unable to find parent '{parent}'")
            if found["type"] not in ("eth", "bridge", "bond", "vlan"):
                raise failure(
                    f"vlan '{name}' - wrong interface type on parent '{parent}' "
                    f"('{found['type']}' != 'eth|bond|bridge|vlan' )"
                )


def _check_bridges(ifaces: Mapping[str, Iface]) -> None:
    for name, d in ifaces.items():
        if d["type"] == "bridge":
            for port in _ports(d):
                found = ifaces.get(port)
                if found is None and "." not in port:
                    raise failure(f"bridge '{name}' - unable to find bridge port '{port}'")
                if found is not None and found.get("method") == "static":
                    raise failure(
                        f"iface {port} - ip address can't be set on interface if bridged in {name}"
                    )


_FORMATS = {
    "cidr": (4, "IPv4 CIDR network"), "cidr6": (6, "IPv6 CIDR network"),
    "address": (4, "IPv4 address"), "gateway": (4, "IPv4 address"),
    "address6": (6, "IPv6 address"), "gateway6": (6, "IPv6 address"),
}  # fmt: skip
"""The address formats pve-common's JSONSchema checks (`pve_verify_cidrv4`, `..._ipv4`...)
and the simulator's parameter check leaves to the handler."""


def _check_addresses(params: Params) -> None:
    for key, (version, what) in _FORMATS.items():
        value = params.get(key)
        if value is None:
            continue
        try:
            if key.startswith("cidr"):
                network = ipaddress.ip_interface(str(value))
                ok = "/" in str(value) and network.network.prefixlen > 7
            else:
                network = ipaddress.ip_interface(str(value))
                ok = "/" not in str(value)
            ok = ok and network.version == version
        except ValueError:
            ok = False
        if not ok:
            raise param_error({key: f"invalid format - value does not look like a valid {what}"})


def _fields(params: Params) -> Iface:
    """The interface's settings from a create or update (`$map_cidr_to_address_netmask`)."""
    _check_addresses(params)
    values: Iface = {k: v for k, v in params.items() if k not in ("node", "iface", "delete")}
    for suffix in ("", "6"):
        cidr = values.pop(f"cidr{suffix}", None)
        if cidr:
            if values.get(f"address{suffix}"):
                raise param_error(
                    {f"address{suffix}": f"address{suffix} conflicts with cidr{suffix}"}
                )
            if values.get(f"netmask{suffix}"):
                raise param_error(
                    {f"netmask{suffix}": f"netmask{suffix} conflicts with cidr{suffix}"}
                )
            address, netmask = str(cidr).rsplit("/", 1)
            values[f"address{suffix}"] = address
            values[f"netmask{suffix}"] = int(netmask) if suffix else netmask
    if values.get("bridge_vids"):
        vids = str(values["bridge_vids"]).replace(",", " ").replace(";", " ").split()
        if not vids:
            raise param_error({"bridge_vids": "VLAN list items are empty"})
        values["bridge_vids"] = " ".join(vids)
    return values


def _families(d: Iface) -> None:
    d["families"] = [f for f, k in (("inet", "address"), ("inet6", "address6")) if d.get(k)] or [
        "inet"
    ]
    d["method"] = "static" if d.get("address") else "manual"
    d["method6"] = "static" if d.get("address6") else "manual"


def _write(net: NodeNetwork, ifaces: dict[str, Iface]) -> Result:
    _check_write(ifaces)
    net.pending = ifaces
    return Result(None)


def _refuse_ovs(type_: str) -> None:
    if type_.startswith("OVS"):
        raise failure("Open VSwitch is not installed (need package 'openvswitch-switch')")


def _create(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    name = text(params, "iface")
    ifaces = copy.deepcopy(net.current())
    if name in ifaces:
        raise param_error({"iface": "interface already exists"})
    _check_handler(ifaces, name, params)
    d = _fields(params)
    _families(d)
    _refuse_ovs(str(d["type"]))
    ifaces[name] = d
    return _write(net, ifaces)


def _update(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    name = text(params, "iface")
    ifaces = copy.deepcopy(net.current())
    d = ifaces.get(name)
    if d is None:
        raise param_error({"iface": "interface does not exist"})
    for key in str(params.get("delete") or "").replace(",", " ").replace(";", " ").split():
        d.pop(key, None)
        if key in ("cidr", "cidr6"):
            suffix = key[4:]
            d.pop(f"address{suffix}", None)
            d.pop(f"netmask{suffix}", None)
    new = _fields(params)
    _check_handler(ifaces, name, params)
    _refuse_ovs(str(new["type"]))
    d.update(new)
    _families(d)
    return _write(net, ifaces)


def _delete(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    name = text(params, "iface")
    ifaces = copy.deepcopy(net.current())
    if name not in ifaces:
        raise param_error({"iface": "interface does not exist"})
    del ifaces[name]
    return _write(net, ifaces)


def _reload(ctx: Context, params: Params) -> Result:
    net = _network(ctx, params)
    node = text(params, "node")
    if not net.ifupdown2:
        # Network.pm `assert_ifupdown2_installed`, before the worker is forked.
        raise failure("you need ifupdown2 to reload network configuration")

    def work(_: float) -> Plan:
        def apply(_: float) -> None:
            if net.pending is not None:
                net.active, net.pending = net.pending, None

        return Plan(RELOAD_SECONDS, apply=apply)

    task = ctx.state.start_task(node, "srvreload", "networking", ctx.user, work,
                                locks=[("network", node)])  # fmt: skip
    return Result(task.upid)


def _revert(ctx: Context, params: Params) -> Result:
    _network(ctx, params).pending = None
    return Result(None)


ROUTES: tuple[Route, ...] = (
    api("GET", "/nodes/{node}/network", _list),
    api("POST", "/nodes/{node}/network", _create),
    api("PUT", "/nodes/{node}/network", _reload),
    api("DELETE", "/nodes/{node}/network", _revert),
    api("GET", "/nodes/{node}/network/{iface}", _get),
    api("PUT", "/nodes/{node}/network/{iface}", _update),
    api("DELETE", "/nodes/{node}/network/{iface}", _delete),
)
