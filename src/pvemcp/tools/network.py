"""Network tools: a node's interfaces (bridges, bonds, VLANs), their pending changes, apply
and revert.

PVE writes every interface change to a pending file (`/etc/network/interfaces.new`) and
answers a node's interface list from it with a `changes` diff against the running file
(pve-manager `PVE/API2/Network.pm`); nothing reaches the node's network until a reload
(`PUT /nodes/{node}/network`, `ifreload -a`) or a reboot. So a create or update is a
write (it changes only the pending file, and `proxmox_network_revert` undoes all of it),
a delete is destructive (the interface is gone at the next apply or reboot even without
an apply here), and the apply is destructive: a wrong address, gateway or bridge port
cuts the node off, this gateway's API connection included, and nothing here can reach it
to undo that. Its plan lists the pending diff and warns when it touches the node's own
address (from `/cluster/status`) or the interfaces that carry it.

What PVE would refuse is refused before sending, naming the argument: a name in use, an
unknown interface, a bridge port, bond slave or VLAN parent the node does not have, a
port another interface uses, a second default gateway, a CIDR that does not parse. PVE
refuses Open vSwitch types without `openvswitch-switch` and the tools do not offer them.
A node without ifupdown2 cannot apply pending changes live (PVE's `you need ifupdown2`):
the apply is refused with the fix instead of an upstream error.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter

from pvemcp.tools.kit import (
    Answer,
    ApiCall,
    Change,
    NodeName,
    Plan,
    ProxmoxError,
    Target,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    WriteInput,
    answer_as,
    matching,
    node_or_default,
    read_as,
    tool,
)

_ITEMS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])
IfaceName = Annotated[
    str, matching(r"[a-zA-Z][a-zA-Z0-9_]{1,20}(?:[:.]\d+)?", "an interface name (vmbr1, eno1.20)")
]
_PORTS = {"bridge": "bridge_ports", "bond": "slaves"}
"""Which PVE key holds an interface's ports, by type."""
_SHOWN = (
    "cidr", "gateway", "cidr6", "gateway6", "bridge_ports", "slaves", "bond_mode",
    "vlan-raw-device", "vlan-id", "bridge_vlan_aware", "bridge_vids", "mtu", "autostart",
    "comments",
)  # fmt: skip
LIST = "/nodes/{node}/network"
ONE = "/nodes/{node}/network/{iface}"


def _cidr(version: int) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is None:  # null means unset
            return None
        try:
            parsed = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(f"is not an IPv{version} address/prefix (192.0.2.10/24)") from None
        if parsed.version != version or "/" not in value:
            raise ValueError(f"is not an IPv{version} address/prefix (192.0.2.10/24)")
        return value

    return AfterValidator(check)


def _address(version: int) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is None:  # null means unset
            return None
        try:
            parsed = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"is not an IPv{version} address") from None
        if parsed.version != version:
            raise ValueError(f"is not an IPv{version} address")
        return value

    return AfterValidator(check)


# --- reading ----------------------------------------------------------------------------


_LINE_KEYS = (
    ("cidr", "cidr"), ("gateway", "gw"), ("cidr6", "cidr6"), ("gateway6", "gw6"),
    ("bridge_ports", "ports"), ("slaves", "slaves"), ("bond_mode", "mode"),
    ("vlan-raw-device", "raw"), ("vlan-id", "tag"), ("bridge_vids", "vids"), ("mtu", "mtu"),
)  # fmt: skip


def iface_line(item: dict[str, Any]) -> str:
    """An interface in one line: `vmbr1 bridge pending vlan-aware vids=10 20 # lab`
    (`pending`: only in the pending config, not running yet)."""
    parts = [str(item["iface"]), str(item.get("type", "unknown"))]
    if not item.get("active"):
        parts.append("pending")
    if str(item.get("bridge_vlan_aware", "")) in ("1", "True"):
        parts.append("vlan-aware")
    parts += [
        f"{short}={item[key]}" for key, short in _LINE_KEYS if item.get(key) not in (None, "")
    ]
    if str(item.get("autostart", "1")) in ("0", "False"):
        parts.append("no-autostart")
    if item.get("comments"):
        parts.append(f"# {str(item['comments']).strip()}")
    return " ".join(parts)


_OPTION_FIELDS = {
    "address": "address", "gateway": "gateway", "bridge-ports": "bridge_ports",
    "bond-slaves": "slaves", "vlan-raw-device": "vlan-raw-device", "bridge-vids": "bridge_vids",
}  # fmt: skip
"""The interfaces file's option lines that name one interface's own values."""


def _option_value(d: dict[str, Any], field: str) -> str:
    if field == "address" and d.get("address"):
        return str(d.get("cidr") or f"{d['address']}/{d.get('netmask', '32')}")
    return str(d.get(field) or "")


class Pending:
    """A node's interfaces as PVE answers them: the pending config and its diff."""

    def __init__(self, node: str, items: list[dict[str, Any]], changes: str | None) -> None:
        self.node = node
        self.items = {str(item["iface"]): item for item in items}
        self.changes = changes

    @property
    def diff(self) -> list[str]:
        """The diff's hunks (its `---`/`+++` file names left out); empty: nothing pending."""
        lines = (self.changes or "").splitlines()
        return [line for line in lines if not line.startswith(("--- ", "+++ "))]

    def touched(self) -> list[str]:
        """The interfaces whose stanza the diff adds, removes or changes; `?` for changes
        whose stanza the diff's context does not show or identify."""
        found: list[str] = []
        stanza: str | None = None
        before: list[str] = []
        """A hunk's lines before its first stanza header (`iface`/`auto`)."""
        for line in self.diff:
            if line.startswith("@@"):
                stanza, before = None, []
                continue
            words = line[1:].split()
            if len(words) >= 2 and words[0] in ("iface", "auto"):
                stanza = words[1]
            elif stanza is None:
                before.append(line)
            changed = line[:1] in "+-" and bool(line[1:].strip())
            owner = stanza if stanza is not None else self._owner(before) if changed else None
            if changed and (owner or "?") not in found:
                found.append(owner or "?")
        return found

    def _owner(self, lines: list[str]) -> str | None:
        """The pending interface that option lines belong to, by the values only one
        interface has (its address, ports, slaves, raw device, VLAN ids)."""
        for line in lines:
            key, _, value = line[1:].strip().partition(" ")
            field = _OPTION_FIELDS.get(key)
            if field is None or not value:
                continue
            owners = [
                name for name, d in self.items.items() if _option_value(d, field) == value.strip()
            ]
            if len(owners) == 1:
                return owners[0]
        return None

    def removed(self) -> list[str]:
        """The interfaces the pending config drops."""
        gone = {line.split()[1] for line in self.diff if line.startswith("-iface ")}
        return sorted(gone - {line.split()[1] for line in self.diff if line.startswith("+iface ")})


async def read_pending(ctx: ToolContext, node: str) -> Pending:
    """The node's interfaces (pending config) and PVE's diff of what is pending."""
    path = ApiCall.to("GET", LIST, node=node).path
    answer = await ctx.call("GET", path)
    items = answer_as(_ITEMS, answer.data, method="GET", path=path)
    return Pending(node, items, answer.changes)


class ListArgs(ToolInput):
    node: NodeName | None = None
    iface: Annotated[IfaceName | None, Field(description="Only this interface.")] = None
    type: Literal["bridge", "bond", "vlan", "eth", "any_bridge"] | None = None


class NetworkView(ToolOutput):
    node: str
    ifaces: list[str]
    """One line each: name, type, `pending` if not running yet, settings, # comment."""
    pending: list[str]
    """PVE's diff of the pending config against the running one; empty: nothing pending."""


@tool(
    "proxmox_network_list",
    title="List a node's network interfaces",
    tier=Tier.READ,
    toolset="network",
    input=ListArgs,
    output=NetworkView,
    api=["GET /nodes/{node}/network"],
    examples=[{"node": "pve1"}, {"node": "pve2", "type": "any_bridge"}, {"iface": "vmbr0"}],
    rejects=[({"node": "pve1", "iface": "vmbr9"}, "not_found")],
)
async def network_list(ctx: ToolContext, args: ListArgs) -> NetworkView:
    """A node's interfaces (bridges, bonds, VLANs, NICs) as configured, pending changes
    included (marked pending until applied), with the pending diff. SDN: proxmox_sdn_list."""
    node = node_or_default(ctx, args.node)
    params = {"type": args.type} if args.type else None
    path = ApiCall.to("GET", LIST, node=node).path
    answer = await ctx.call("GET", path, params)
    found = answer_as(_ITEMS, answer.data, method="GET", path=path)
    if args.iface is not None:
        found = [item for item in found if item.get("iface") == args.iface]
        if not found:
            raise ToolFailure(
                "not_found",
                f"node {node} has no interface {args.iface}",
                field="iface",
                hint="List the node's interfaces without iface.",
            )
    pending = Pending(node, [], answer.changes)
    return NetworkView(node=node, ifaces=[iface_line(i) for i in found], pending=pending.diff)


# --- create and update -----------------------------------------------------------------

Clearable = Literal["cidr", "gateway", "cidr6", "gateway6", "mtu", "comments", "bridge_vids"]


class IfaceArgs(WriteInput):
    node: NodeName | None = None
    iface: IfaceName
    op: Literal["create", "update"]
    type: Annotated[
        Literal["bridge", "bond", "vlan", "eth"] | None,
        Field(description="Needed to create; a VLAN is named parent.tag or vlanN."),
    ] = None
    cidr: Annotated[str | None, _cidr(4)] = None
    gateway: Annotated[str | None, _address(4)] = None
    cidr6: Annotated[str | None, _cidr(6)] = None
    gateway6: Annotated[str | None, _address(6)] = None
    ports: Annotated[
        str | None,
        Field(description="Bridge ports or bond slaves, space-separated; '' for none."),
    ] = None
    vlan_aware: bool | None = None
    vids: Annotated[
        str | None, matching(r"[0-9 ,;-]{1,200}", "VLAN ids and ranges (10 20 100-200)")
    ] = None
    vlan_raw_device: Annotated[IfaceName | None, Field(description="A vlanN VLAN's parent.")] = None
    bond_mode: (
        Literal["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
                "balance-tlb", "balance-alb"] | None
    ) = None  # fmt: skip
    mtu: Annotated[int | None, Field(ge=1280, le=65520)] = None
    autostart: bool | None = None
    comments: Annotated[str | None, Field(max_length=256)] = None
    clear: Annotated[
        list[Clearable] | None, Field(max_length=7, description="update: settings to remove.")
    ] = None


def _fields(args: IfaceArgs, kind: str) -> dict[str, Any]:
    """The PVE parameters the arguments set, by PVE's names."""
    values: dict[str, Any] = {
        "cidr": args.cidr, "gateway": args.gateway, "cidr6": args.cidr6,
        "gateway6": args.gateway6, "bridge_vids": args.vids, "mtu": args.mtu,
        "comments": args.comments, "bond_mode": args.bond_mode,
        "vlan-raw-device": args.vlan_raw_device,
    }  # fmt: skip
    if args.vlan_aware is not None:
        values["bridge_vlan_aware"] = int(args.vlan_aware)
    if args.autostart is not None:
        values["autostart"] = int(args.autostart)
    if args.ports is not None:
        key = _PORTS.get(kind)
        if key is None:
            raise ToolFailure(
                "invalid_argument",
                f"a {kind} interface has no ports",
                field="ports",
                hint="ports are a bridge's ports or a bond's slaves; a VLAN names its parent "
                "in its name (eno1.20) or vlan_raw_device.",
            )
        values[key] = " ".join(args.ports.replace(",", " ").split())
    return {key: value for key, value in values.items() if value is not None}


def _check(
    pending: Pending, iface: str, kind: str, values: dict[str, Any], *, creating: bool
) -> None:
    """What PVE's handler and writer would refuse, as a field error before sending."""
    items = pending.items
    for key in ("gateway", "gateway6"):
        if key in values:
            other = next((n for n, d in items.items() if n != iface and d.get(key)), None)
            if other is not None:
                raise ToolFailure(
                    "already_exists",
                    f"node {pending.node} has its default {key} on {other}",
                    field=key,
                    hint=f"A node has one default gateway: clear it on {other} first.",
                )
    for port in str(values.get(_PORTS.get(kind) or "", "")).split():
        if port not in items and "." not in port:
            raise ToolFailure(
                "not_found",
                f"node {pending.node} has no interface {port}",
                field="ports",
                hint=f"Its interfaces: {', '.join(sorted(items))}.",
            )
        for name, d in items.items():
            used = " ".join(str(d.get(k) or "") for k in ("bridge_ports", "slaves")).split()
            if name != iface and port in used:
                raise ToolFailure(
                    "in_use",
                    f"{port} is already a port of {name}",
                    field="ports",
                    hint=f"Remove it from {name} first, or use another interface.",
                )
    if kind == "vlan" and (creating or "vlan-raw-device" in values):
        _check_vlan(pending, iface, values)


def _check_vlan(pending: Pending, iface: str, values: dict[str, Any]) -> None:
    """A VLAN's name and parent, as Interfaces.pm reads them: `parent.tag`, or `vlanN` with
    a raw device (custom names need a `vlan-id`, which the tool does not offer)."""
    items = pending.items
    parent: str | None = iface.rsplit(".", 1)[0] if "." in iface else None
    if parent is None:
        parent = values.get("vlan-raw-device")
        if not iface.startswith("vlan") or not iface[4:].isdigit() or parent is None:
            raise ToolFailure(
                "invalid_argument",
                f"VLAN {iface} needs a parent and a tag",
                field="iface" if parent else "vlan_raw_device",
                hint="Name it parent.tag (eno1.20), or vlanN (vlan20) with vlan_raw_device.",
            )
    if parent not in items:
        raise ToolFailure(
            "not_found",
            f"node {pending.node} has no interface {parent} for VLAN {iface}",
            field="vlan_raw_device" if "vlan-raw-device" in values else "iface",
            hint=f"Its interfaces: {', '.join(sorted(items))}.",
        )


def _shown(item: dict[str, Any] | None) -> dict[str, Any]:
    return {key: item[key] for key in _SHOWN if item and item.get(key) not in (None, "")}


async def _plan_iface(ctx: ToolContext, args: IfaceArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    pending = await read_pending(ctx, node)
    found = pending.items.get(args.iface)
    if args.op == "create" and found is not None:
        raise ToolFailure(
            "already_exists",
            f"node {node} already has an interface {args.iface}",
            field="iface",
            hint="Choose another name, or op=update to change it.",
        )
    if args.op == "update" and found is None:
        raise ToolFailure(
            "not_found",
            f"node {node} has no interface {args.iface}",
            field="iface",
            hint=f"Its interfaces: {', '.join(sorted(pending.items))}; op=create makes one.",
        )
    kind = args.type or (str(found["type"]) if found else None)
    if kind is None:
        raise ToolFailure(
            "invalid_argument", "creating an interface needs its type", field="type",
            hint="bridge, bond, vlan or eth.",
        )  # fmt: skip
    if kind == "bond" and found is None and not re.fullmatch(r"bond\d+", args.iface):
        # Interfaces.pm reads a stanza back as a bond only when it is named bondN.
        raise ToolFailure(
            "invalid_argument",
            f"a bond must be named bondN, not {args.iface}",
            field="iface",
            hint="e.g. bond0.",
        )
    values = _fields(args, kind)
    _check(pending, args.iface, kind, values, creating=found is None)
    before = _shown(found)
    clear = args.clear or []
    after = {k: v for k, v in before.items() if k not in clear}
    after.update(values)
    params: dict[str, Any] = {"type": kind, **values}
    if args.op == "create":
        call = ApiCall.to("POST", LIST, params={"iface": args.iface, **params}, node=node)
    else:
        deleted = [key for key in clear if key in before]
        if deleted:
            params["delete"] = ",".join(deleted)
        call = ApiCall.to("PUT", ONE, params=params, node=node, iface=args.iface)
    return Plan(
        summary=f"{args.op} {kind} {args.iface} on node {node} as a pending change "
        "(applied by proxmox_network_apply)",
        changes=[Change(field=args.iface, before=before or None, after=after)],
        target=Target(node=node, name=args.iface),
        calls=[call],
    )


class Changed(ToolOutput):
    node: str
    iface: str | None
    """The interface now (one line, as proxmox_network_list shows it)."""
    pending: list[str]
    """Interfaces with pending changes, applied by proxmox_network_apply."""


async def _after(ctx: ToolContext, plan: Plan) -> Changed:
    for call in plan.calls:
        await ctx.call(call.method, call.path, call.params or None)
    node, name = str(plan.target.node), plan.target.name
    pending = await read_pending(ctx, node)
    item = pending.items.get(str(name))
    return Changed(
        node=node,
        iface=iface_line(item) if item else None,
        pending=pending.touched(),
    )


@tool(
    "proxmox_network_iface",
    title="Create or change a node's network interface (pending)",
    tier=Tier.WRITE,
    toolset="network",
    input=IfaceArgs,
    output=Changed,
    planner=_plan_iface,
    api=["POST /nodes/{node}/network", "PUT /nodes/{node}/network/{iface}"],
    examples=[
        {
            "node": "pve3",
            "iface": "vmbr2",
            "op": "create",
            "type": "bridge",
            "vlan_aware": True,
            "comments": "lab",
        },
        {
            "node": "pve1",
            "iface": "vmbr0.40",
            "op": "create",
            "type": "vlan",
            "cidr": "192.0.2.40/24",
        },
        {"node": "pve1", "iface": "vmbr1", "op": "update", "vids": "10 20 100-200", "mtu": 9000},
    ],
    rejects=[
        ({"node": "pve1", "iface": "vmbr0", "op": "create", "type": "bridge"}, "already_exists"),
        (
            {"node": "pve1", "iface": "vmbr5", "op": "create", "type": "bridge", "ports": "eno1"},
            "in_use",
        ),
        (
            {"node": "pve1", "iface": "vmbr5", "op": "create", "type": "bridge", "ports": "eno7"},
            "not_found",
        ),
        ({"node": "pve1", "iface": "vmbr9", "op": "update", "mtu": 9000}, "not_found"),
        (
            {
                "node": "pve1",
                "iface": "vmbr5",
                "op": "create",
                "type": "bridge",
                "cidr": "10.0.0.300/24",
            },
            "invalid_argument",
        ),
        (
            {
                "node": "pve1",
                "iface": "vmbr5",
                "op": "create",
                "type": "bridge",
                "cidr": "192.0.2.9/24",
                "gateway": "192.0.2.1",
            },
            "already_exists",
        ),
    ],
)
async def network_iface(ctx: ToolContext, args: IfaceArgs) -> Changed:
    """Create or change a bridge, bond, VLAN or NIC on a node. Pending: nothing changes on
    the node until proxmox_network_apply (or proxmox_network_revert drops it)."""
    plan = ctx.plan
    assert plan is not None
    return await _after(ctx, plan)


class DeleteArgs(WriteInput):
    node: NodeName | None = None
    iface: IfaceName


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    pending = await read_pending(ctx, node)
    found = pending.items.get(args.iface)
    if found is None:
        raise ToolFailure(
            "not_found",
            f"node {node} has no interface {args.iface}",
            field="iface",
            hint=f"Its interfaces: {', '.join(sorted(pending.items))}.",
        )
    for name, d in pending.items.items():
        ports = " ".join(str(d.get(k) or "") for k in ("bridge_ports", "slaves")).split()
        if (
            args.iface in ports
            or d.get("vlan-raw-device") == args.iface
            or (name.startswith(args.iface + "."))
        ):
            raise ToolFailure(
                "in_use",
                f"{args.iface} is used by {name}",
                field="iface",
                hint=f"Change or delete {name} first.",
            )
    warnings = await _management_warnings(ctx, pending, [args.iface])
    if found.get("type") in ("bridge", "OVSBridge"):
        nics = await guest_nics_on(ctx, node, [args.iface])
        if nics:
            warnings.append(
                f"guest NICs use {args.iface}: {', '.join(nics)}; once applied they lose "
                "their link and those guests fail to start until the NICs move"
            )
    return Plan(
        summary=f"delete {found.get('type')} {args.iface} on node {node} as a pending change "
        "(gone at the next apply or reboot)",
        changes=[Change(field=args.iface, before=_shown(found), after=None)],
        target=Target(node=node, name=args.iface),
        calls=[ApiCall.to("DELETE", ONE, node=node, iface=args.iface)],
        warnings=warnings,
    )


@tool(
    "proxmox_network_iface_delete",
    title="Delete a node's network interface (pending)",
    tier=Tier.DESTRUCTIVE,
    toolset="network",
    input=DeleteArgs,
    output=Changed,
    planner=_plan_delete,
    api=["DELETE /nodes/{node}/network/{iface}"],
    examples=[{"node": "pve1", "iface": "vmbr1"}],
    rejects=[
        ({"node": "pve1", "iface": "eno1"}, "in_use"),
        ({"node": "pve1", "iface": "vmbr9"}, "not_found"),
    ],
)
async def network_iface_delete(ctx: ToolContext, args: DeleteArgs) -> Changed:
    """Delete an interface from a node's config (pending until proxmox_network_apply).
    Refused while a bridge, bond or VLAN uses it."""
    plan = ctx.plan
    assert plan is not None
    return await _after(ctx, plan)


# --- apply and revert -------------------------------------------------------------------


class _NodeStatus(Answer):
    type: str
    name: str | None = None
    ip: str | None = None


_STATUS = TypeAdapter(list[_NodeStatus])


async def _management_warnings(ctx: ToolContext, pending: Pending, touched: list[str]) -> list[str]:
    """A warning when a change touches the node's own address or what carries it: the
    interface with that address and its ports (PVE's cluster network, this API's path)."""
    status = await read_as(ctx, _STATUS, "/cluster/status")
    ip = next((s.ip for s in status if s.type == "node" and s.name == pending.node), None)
    if ip is None:
        return []
    carriers = {name for name, d in pending.items.items() if str(d.get("address") or "") == ip}
    for name in list(carriers):
        carriers |= set(str(pending.items[name].get("bridge_ports") or "").split())
        carriers |= set(str(pending.items[name].get("slaves") or "").split())
    hit = sorted(set(touched) & carriers)
    changed_ip = any(ip in line for line in pending.diff if line[:1] in "+-")
    if not hit and not changed_ip and carriers:
        if "?" not in touched:
            return []
        return [
            f"some pending lines do not show their interface: check they leave node "
            f"{pending.node}'s management address {ip} ({', '.join(sorted(carriers))}) alone"
        ]
    where = ", ".join(hit) or "its address"
    return [
        f"this touches node {pending.node}'s management address {ip} ({where}): a mistake "
        "cuts the node off the cluster and this API, and only its console can fix it"
    ]


async def guest_nics_on(ctx: ToolContext, node: str, bridges: list[str]) -> list[str]:
    """The guest NICs on `node` whose bridge is one of `bridges` (`qemu 107 net1`): PVE
    removes a bridge without looking at guests (a reload only runs ifreload)."""
    kinds = ("qemu", "lxc")
    lists = await ctx.get_many(*(f"/nodes/{node}/{kind}" for kind in kinds))
    guests = [
        (kind, int(item["vmid"]))
        for kind, items in zip(kinds, lists, strict=True)
        for item in _ITEMS.validate_python(items or [])
    ]
    configs = await ctx.get_many(*(f"/nodes/{node}/{kind}/{vmid}/config" for kind, vmid in guests))
    found = []
    for (kind, vmid), config in zip(guests, configs, strict=True):
        for key, value in sorted((config or {}).items()):
            parts = dict(p.split("=", 1) for p in str(value).split(",") if "=" in p)
            if key.startswith("net") and key[3:].isdigit() and parts.get("bridge") in bridges:
                found.append(f"{kind} {vmid} {key} ({parts['bridge']})")
    return found


class NodeArgs(WriteInput):
    node: NodeName | None = None


class ApplyArgs(NodeArgs, WaitInput):
    pass


async def _pending_or_refuse(ctx: ToolContext, node: str, what: str) -> Pending:
    pending = await read_pending(ctx, node)
    if not pending.diff:
        raise ToolFailure(
            "precondition_failed",
            f"node {node} has no pending network changes to {what}",
            field="node",
            hint="proxmox_network_iface makes pending changes; proxmox_network_list shows them.",
        )
    return pending


async def _plan_apply(ctx: ToolContext, args: ApplyArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    pending = await _pending_or_refuse(ctx, node, "apply")
    touched = pending.touched()
    warnings = [
        f"reloads node {node}'s network (ifreload -a): a wrong address, gateway or port can "
        "cut the node off, and no tool can undo it from here",
        *await _management_warnings(ctx, pending, touched),
    ]
    removed = pending.removed()
    nics = await guest_nics_on(ctx, node, removed) if removed else []
    if nics:
        warnings.append(
            f"removes {', '.join(removed)}, which guest NICs use: {', '.join(nics)}; they lose "
            "their link and those guests fail to start until the NICs move (PVE does not check)"
        )
    return Plan(
        summary=f"apply the pending network changes of node {node} ({', '.join(touched)})",
        changes=[Change(field="pending", before=pending.diff, after=None)],
        target=Target(node=node),
        calls=[ApiCall.to("PUT", LIST, node=node, task=True)],
        warnings=warnings,
    )


@tool(
    "proxmox_network_apply",
    title="Apply a node's pending network changes",
    tier=Tier.DESTRUCTIVE,
    toolset="network",
    input=ApplyArgs,
    output=TaskOutcome,
    planner=_plan_apply,
    api=["PUT /nodes/{node}/network"],
    examples=[{"node": "pve3"}],
    rejects=[({"node": "pve1"}, "precondition_failed")],
)
async def network_apply(ctx: ToolContext, args: ApplyArgs) -> TaskOutcome:
    """Make a node's pending interface changes live (ifreload). Can cut the node off if
    an address, gateway or port is wrong: read the plan's diff. Drop them instead:
    proxmox_network_revert."""
    plan = ctx.plan
    assert plan is not None
    node = str(plan.target.node)
    call = plan.calls[0]
    try:
        answer = await ctx.call(call.method, call.path)
    except ProxmoxError as exc:
        if "ifupdown2" not in exc.message:
            raise
        raise ToolFailure(
            "unsupported",
            f"node {node} cannot apply network changes live: {exc.message.strip()}",
            field="node",
            hint="Install ifupdown2 on the node, or reboot it to apply them; "
            "proxmox_network_revert drops them.",
        ) from None
    upid = str(answer.data)
    outcome = TaskOutcome(node=node, upid=upid)
    if args.wait:
        task = await ctx.wait_task(upid, args.timeout)
        outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
    else:
        outcome.task_status = "running"
    return outcome


async def _plan_revert(ctx: ToolContext, args: NodeArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    pending = await _pending_or_refuse(ctx, node, "revert")
    return Plan(
        summary=f"drop the pending network changes of node {node} ({', '.join(pending.touched())})",
        changes=[Change(field="pending", before=pending.diff, after=None)],
        target=Target(node=node),
        calls=[ApiCall.to("DELETE", LIST, node=node)],
    )


@tool(
    "proxmox_network_revert",
    title="Drop a node's pending network changes",
    tier=Tier.WRITE,
    toolset="network",
    input=NodeArgs,
    output=Changed,
    planner=_plan_revert,
    api=["DELETE /nodes/{node}/network"],
    examples=[{"node": "pve3"}],
    rejects=[({"node": "pve1"}, "precondition_failed")],
)
async def network_revert(ctx: ToolContext, args: NodeArgs) -> Changed:
    """Drop every pending (not yet applied) interface change of a node; the running
    network is untouched."""
    plan = ctx.plan
    assert plan is not None
    return await _after(ctx, plan)


TOOLS = (
    network_list,
    network_iface,
    network_iface_delete,
    network_apply,
    network_revert,
)
