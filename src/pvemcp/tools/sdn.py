"""SDN tools: zones, VNets and subnets of the cluster, and applying them.

pve-network changes its config files at once and keeps what the nodes run in a separate
copy that only `PUT /cluster/sdn` replaces, so every create, update and delete here is a
pending change, shown with PVE's own `pending=1` view (running values, what changes,
`state` new/changed/deleted). Zones, VNets and subnets share one write tool with a `kind`,
as the API is the same shape for the three, and one destructive delete.

**Choice: the apply is destructive.** It reloads the network of every node (PVE's
`reloadnetworkall` runs `pvesh set /nodes/<node>/network` on each), which also makes each
node's pending interface changes live, and it removes deleted VNets from under the guests
that use them. Its plan lists the pending SDN changes and every node's pending interface
changes that go live with them. Refused before sending, naming the argument: an id in use
or unknown, a zone still used by a VNet, a VNet with subnets, a VLAN tag on a simple zone
or none on a VLAN zone, a subnet that does not parse or a gateway outside it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    ApiCall,
    Change,
    Plan,
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
    tool,
)

_ITEMS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])
_ID = re.compile(r"[a-z][a-z0-9]{0,6}[a-z0-9]")
SdnId = Annotated[str, matching(_ID.pattern, "a zone/VNet id (a-z0-9, 8 max)")]
Kind = Literal["zone", "vnet", "subnet"]
ZONES = "/cluster/sdn/zones"
VNETS = "/cluster/sdn/vnets"
SUBNETS = "/cluster/sdn/vnets/{vnet}/subnets"
_SHOWN = (
    "type",
    "zone",
    "vnet",
    "bridge",
    "tag",
    "nodes",
    "mtu",
    "alias",
    "vlanaware",
    "cidr",
    "gateway",
    "snat",
    "ipam",
)


class SdnObject(ToolOutput):
    id: str
    """The zone, the VNet, or the subnet's CIDR."""
    settings: dict[str, Any]
    """As the nodes run it (for a new object: empty)."""
    state: Literal["new", "changed", "deleted"] | None = None
    """Not applied yet: what proxmox_sdn_apply will do."""
    pending: dict[str, Any] | None = None
    """Settings the apply will set (`deleted`: removes)."""


def _row(item: dict[str, Any], key: str) -> SdnObject:
    ident = str(item.get("cidr") or item.get(key))
    if key == "subnet" and "cidr" not in item:
        _, network, mask = str(item["subnet"]).split("-")
        ident = f"{network}/{mask}"
    settings = {k: item[k] for k in _SHOWN if k in item and k not in ("cidr", key)}
    return SdnObject(
        id=ident,
        settings=settings,
        state=item.get("state"),
        pending=item.get("pending") or None,
    )


class Sdn:
    """The cluster's SDN objects in PVE's pending view, by id."""

    def __init__(
        self,
        zones: list[dict[str, Any]],
        vnets: list[dict[str, Any]],
        subnets: dict[str, list[dict[str, Any]]],
    ) -> None:
        self.zones = {str(z["zone"]): z for z in zones}
        self.vnets = {str(v["vnet"]): v for v in vnets}
        self.subnets = subnets
        """Each VNet's subnets (pending view), by the VNet's id."""

    @staticmethod
    def value(item: dict[str, Any], key: str) -> Any:
        """A setting as the config has it now: the pending value, else the running one."""
        pending = item.get("pending") or {}
        if pending.get(key) == "deleted":
            return None
        return pending.get(key, item.get(key))

    def live(self, kind: str) -> dict[str, dict[str, Any]]:
        """The objects the config holds (deleted-but-running ones left out)."""
        found = self.zones if kind == "zone" else self.vnets
        return {k: v for k, v in found.items() if v.get("state") != "deleted"}

    def subnets_of(self, vnet: str) -> list[dict[str, Any]]:
        return [s for s in self.subnets.get(vnet, []) if s.get("state") != "deleted"]

    def has_pending(self) -> bool:
        every = [*self.zones.values(), *self.vnets.values()]
        every += [s for items in self.subnets.values() for s in items]
        return any(item.get("state") for item in every)


async def read_sdn(ctx: ToolContext) -> Sdn:
    """Zones, VNets and every VNet's subnets, as PVE's `pending=1` shows them."""
    pending = {"pending": 1}
    zones, vnets = await ctx.get_many((ZONES, pending), (VNETS, pending))
    zones = answer_as(_ITEMS, zones, method="GET", path=ZONES)
    vnets = answer_as(_ITEMS, vnets, method="GET", path=VNETS)
    # A VNet deleted but still running has no subnets to list (PVE finds it no more).
    names = [str(v["vnet"]) for v in vnets if v.get("state") != "deleted"]
    paths = [ApiCall.to("GET", SUBNETS, vnet=name).path for name in names]
    found = await ctx.get_many(*((path, pending) for path in paths))
    subnets = {
        name: answer_as(_ITEMS, items, method="GET", path=path)
        for name, items, path in zip(names, found, paths, strict=True)
    }
    return Sdn(zones, vnets, subnets)


class ListArgs(ToolInput):
    kind: Annotated[Kind | None, Field(description="Only zones, vnets or subnets.")] = None


class SdnView(ToolOutput):
    zones: list[SdnObject] | None = None
    vnets: list[SdnObject] | None = None
    subnets: dict[str, list[SdnObject]] | None = None
    """By VNet."""
    pending: bool
    """Changes wait for proxmox_sdn_apply."""


@tool(
    "proxmox_sdn_list",
    title="List SDN zones, VNets and subnets",
    tier=Tier.READ,
    toolset="sdn",
    input=ListArgs,
    output=SdnView,
    api=[
        "GET /cluster/sdn/zones",
        "GET /cluster/sdn/vnets",
        "GET /cluster/sdn/vnets/{vnet}/subnets",
    ],
    examples=[{}, {"kind": "subnet"}],
    rejects=[({"kind": "bridge"}, "invalid_argument")],
)
async def sdn_list(ctx: ToolContext, args: ListArgs) -> SdnView:
    """The cluster's SDN zones, VNets (guest bridges) and their subnets, with changes not
    yet applied (state, pending). A node's own bridges: proxmox_network_list."""
    sdn = await read_sdn(ctx)
    view = SdnView(pending=sdn.has_pending())
    if args.kind in (None, "zone"):
        view.zones = [_row(z, "zone") for z in sdn.zones.values()]
    if args.kind in (None, "vnet"):
        view.vnets = [_row(v, "vnet") for v in sdn.vnets.values()]
    if args.kind in (None, "subnet"):
        view.subnets = {
            vnet: [_row(s, "subnet") for s in items] for vnet, items in sdn.subnets.items() if items
        }
    return view


# --- create and update -----------------------------------------------------------------

Clearable = Literal["nodes", "mtu", "alias", "gateway", "snat", "tag"]


class ObjectArgs(WriteInput):
    kind: Kind
    op: Literal["create", "update"]
    id: Annotated[str, Field(max_length=64, description="Zone or VNet id; a subnet's CIDR.")]
    type: Annotated[
        Literal["simple", "vlan", "qinq", "vxlan"] | None, Field(description="Zone type.")
    ] = None
    zone: Annotated[SdnId | None, Field(description="A VNet's zone.")] = None
    vnet: Annotated[SdnId | None, Field(description="A subnet's VNet.")] = None
    bridge: Annotated[
        str | None,
        matching(r"[\w.-]{1,15}", "a bridge name"),
        Field(description="vlan/qinq zone: the node bridge."),
    ] = None
    tag: Annotated[int | None, Field(ge=1, le=16777215, description="VNet VLAN/VXLAN tag.")] = None
    peers: Annotated[str | None, Field(max_length=1024, description="vxlan zone: peer IPs.")] = None
    nodes: list[Annotated[str, matching(r"[\w-]{1,63}", "a node name")]] | None = None
    mtu: Annotated[int | None, Field(ge=576, le=65520)] = None
    alias: Annotated[str | None, Field(max_length=256)] = None
    vlanaware: bool | None = None
    gateway: Annotated[str | None, Field(max_length=64)] = None
    snat: bool | None = None
    clear: Annotated[
        list[Clearable] | None, Field(max_length=6, description="update: settings to remove.")
    ] = None


_FIELDS: dict[str, tuple[str, ...]] = {
    "zone": ("type", "bridge", "tag", "peers", "nodes", "mtu"),
    "vnet": ("zone", "tag", "alias", "vlanaware"),
    "subnet": ("gateway", "snat"),
}
"""Which arguments each kind takes (`tag` is a qinq zone's service VLAN)."""


def _values(args: ObjectArgs) -> dict[str, Any]:
    allowed = _FIELDS[args.kind]
    given = {
        k: getattr(args, k)
        for k in (
            "type",
            "zone",
            "bridge",
            "tag",
            "peers",
            "nodes",
            "mtu",
            "alias",
            "vlanaware",
            "gateway",
            "snat",
        )
    }
    for key, value in given.items():
        if value is not None and key not in allowed:
            raise ToolFailure(
                "invalid_argument",
                f"a {args.kind} has no setting {key}",
                field=key,
                hint=f"A {args.kind} takes: {', '.join(allowed)}.",
            )
    values: dict[str, Any] = {}
    for key in allowed:
        value = given[key]
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, list):
            value = ",".join(value)
        values[key] = value
    return values


def _unknown(kind: str, ident: str, field: str, known: list[str]) -> ToolFailure:
    return ToolFailure(
        "not_found",
        f"SDN {kind} {ident} does not exist",
        field=field,
        hint=f"Known: {', '.join(sorted(known)) or 'none'} (proxmox_sdn_list).",
    )


def _subnet(ident: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(ident, strict=False)
    except ValueError:
        network = None
    if network is None or "/" not in ident or (network.version == 4 and network.prefixlen < 8):
        raise ToolFailure(
            "invalid_argument",
            f"{ident!r} is not a subnet in CIDR form",
            field="id",
            hint="A subnet's id is its CIDR, e.g. 10.30.0.0/24.",
        )
    return network


def _check_vnet(sdn: Sdn, args: ObjectArgs, values: dict[str, Any]) -> None:
    """The zone plugins' `vnet_update_hook`: a zone that exists, its tag rules."""
    old = sdn.vnets.get(args.id, {})
    zone_id = values.get("zone") or Sdn.value(old, "zone")
    zones = sdn.live("zone")
    if zone_id is None:
        raise ToolFailure(
            "invalid_argument",
            "a VNet needs a zone",
            field="zone",
            hint="Name one of the SDN zones.",
        )
    if zone_id not in zones:
        raise _unknown("zone", zone_id, "zone", list(zones))
    zone_type = Sdn.value(zones[zone_id], "type")
    tag = values.get("tag", Sdn.value(old, "tag"))
    if zone_type == "simple" and tag is not None:
        raise ToolFailure(
            "invalid_argument",
            f"zone {zone_id} is simple: it takes no tag",
            field="tag",
            hint="Leave tag out, or use a VLAN zone.",
        )
    if zone_type in ("vlan", "qinq") and tag is None:
        raise ToolFailure(
            "invalid_argument",
            f"zone {zone_id} is a {zone_type} zone: a VNet needs its VLAN tag",
            field="tag",
            hint="Set tag (1-4094).",
        )
    if tag is not None and zone_type != "vxlan":
        same = [
            name
            for name, other in sdn.live("vnet").items()
            if name != args.id
            and Sdn.value(other, "zone") == zone_id
            and Sdn.value(other, "tag") == tag
        ]
        if same:
            raise ToolFailure(
                "already_exists",
                f"VNet {same[0]} already uses tag {tag} in zone {zone_id}",
                field="tag",
                hint="Choose another tag.",
            )
    moving = values.get("zone") and old and values["zone"] != Sdn.value(old, "zone")
    if moving and sdn.subnets_of(args.id):
        raise ToolFailure(
            "in_use",
            f"VNet {args.id} has subnets: its zone cannot change",
            field="zone",
            hint="Delete its subnets first.",
        )
    if values.get("vlanaware") and sdn.subnets_of(args.id):
        raise ToolFailure(
            "in_use",
            f"VNet {args.id} has subnets: it cannot be VLAN-aware",
            field="vlanaware",
            hint="Delete its subnets first.",
        )


def _check_subnet(
    sdn: Sdn, args: ObjectArgs, values: dict[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """The subnet's VNet, its PVE id (`zone-10.30.0.0-24`) check and the gateway."""
    network = _subnet(args.id)
    vnets = sdn.live("vnet")
    if args.vnet is None:
        raise ToolFailure(
            "invalid_argument", "a subnet belongs to a VNet", field="vnet", hint="Name its VNet."
        )
    if args.vnet not in vnets:
        raise _unknown("vnet", args.vnet, "vnet", list(vnets))
    if Sdn.value(vnets[args.vnet], "vlanaware"):
        raise ToolFailure(
            "invalid_argument",
            f"VNet {args.vnet} is VLAN-aware: it takes no subnets",
            field="vnet",
            hint="Use a VNet that is not VLAN-aware.",
        )
    gateway = values.get("gateway")
    if gateway is not None:
        try:
            inside = ipaddress.ip_address(gateway) in network
        except ValueError:
            inside = False
        if not inside and network.prefixlen != 32:
            raise ToolFailure(
                "invalid_argument",
                f"gateway {gateway} is not in {network}",
                field="gateway",
                hint=f"An address inside {network}.",
            )
    found = next(
        (
            s
            for s in sdn.subnets_of(args.vnet)
            if ipaddress.ip_network(_row(s, "subnet").id) == network
        ),
        None,
    )
    return args.vnet, found


async def _plan_object(ctx: ToolContext, args: ObjectArgs) -> Plan:
    sdn = await read_sdn(ctx)
    values = _values(args)
    if args.kind == "subnet":
        vnet, found = _check_subnet(sdn, args, values)
        path_id = str(found["subnet"]) if found else None
    else:
        if not _ID.fullmatch(args.id):
            raise ToolFailure(
                "invalid_argument",
                f"{args.id!r} is not an SDN {args.kind} id",
                field="id",
                hint="2-8 of a-z and 0-9, starting with a letter.",
            )
        found = sdn.live(args.kind).get(args.id)
        path_id = args.id
        vnet = None
    if args.op == "create" and found is not None:
        raise ToolFailure(
            "already_exists",
            f"SDN {args.kind} {args.id} already exists",
            field="id",
            hint="Choose another id, or op=update.",
        )
    if args.op == "update" and found is None:
        known = (
            [_row(s, "subnet").id for s in sdn.subnets_of(vnet)]
            if vnet
            else list(sdn.live(args.kind))
        )
        raise _unknown(args.kind, args.id, "id", known)
    if args.kind == "zone":
        if args.op == "create" and "type" not in values:
            raise ToolFailure(
                "invalid_argument",
                "a new zone needs its type",
                field="type",
                hint="simple, vlan, qinq or vxlan.",
            )
        if args.op == "update" and "type" in values:
            raise ToolFailure(
                "invalid_argument",
                "a zone's type cannot change",
                field="type",
                hint="Create another zone.",
            )
        kind = values.get("type") or Sdn.value(found or {}, "type")
        needs = {"vlan": ("bridge",), "qinq": ("bridge", "tag"), "vxlan": ("peers",)}
        for key in needs.get(str(kind), ()):
            if key not in values and (found is None or Sdn.value(found, key) is None):
                raise ToolFailure(
                    "invalid_argument", f"a {kind} zone needs {key}", field=key, hint=f"Set {key}."
                )
    if args.kind == "vnet":
        _check_vnet(sdn, args, values)
    before = _settings(found, args.kind)
    clear: list[str] = [k for k in (args.clear or []) if k in before]
    after = {k: v for k, v in before.items() if k not in clear} | values
    call = _write_call(args, values, clear, path_id, vnet)
    return Plan(
        summary=f"{args.op} SDN {args.kind} {args.id} (pending until proxmox_sdn_apply)",
        changes=[Change(field=f"{args.kind} {args.id}", before=before or None, after=after)],
        target=Target(name=args.id),
        calls=[call],
    )


def _settings(found: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """An object's settings as the config has them now (pending values applied)."""
    shown = [k for k in _SHOWN if k not in ("cidr", kind)]
    return {k: Sdn.value(found, k) for k in shown if found and Sdn.value(found, k) is not None}


def _write_call(
    args: ObjectArgs,
    values: dict[str, Any],
    clear: list[str],
    path_id: str | None,
    vnet: str | None,
) -> ApiCall:
    params = dict(values)
    if clear:
        params["delete"] = ",".join(clear)
    if args.kind == "zone":
        if args.op == "create":
            return ApiCall.to("POST", ZONES, params={"zone": args.id, **params})
        return ApiCall.to("PUT", ZONES + "/{zone}", params=params, zone=args.id)
    if args.kind == "vnet":
        if args.op == "create":
            return ApiCall.to("POST", VNETS, params={"vnet": args.id, **params})
        return ApiCall.to("PUT", VNETS + "/{vnet}", params=params, vnet=args.id)
    assert vnet is not None
    if args.op == "create":
        return ApiCall.to(
            "POST", SUBNETS, params={"subnet": args.id, "type": "subnet", **params}, vnet=vnet
        )
    assert path_id is not None
    return ApiCall.to("PUT", SUBNETS + "/{subnet}", params=params, vnet=vnet, subnet=path_id)


class Changed(ToolOutput):
    now: SdnObject | None
    """The object in PVE's pending view after the change (None once deleted and applied)."""


async def _send_and_read(ctx: ToolContext, plan: Plan, kind: str, ident: str) -> Changed:
    for call in plan.calls:
        await ctx.call(call.method, call.path, call.params or None)
    sdn = await read_sdn(ctx)
    if kind == "subnet":
        rows = [_row(s, "subnet") for items in sdn.subnets.values() for s in items]
        match = [r for r in rows if ipaddress.ip_network(r.id) == ipaddress.ip_network(ident)]
        return Changed(now=match[0] if match else None)
    found = (sdn.zones if kind == "zone" else sdn.vnets).get(ident)
    return Changed(now=_row(found, kind) if found else None)


@tool(
    "proxmox_sdn_object",
    title="Create or change an SDN zone, VNet or subnet (pending)",
    tier=Tier.WRITE,
    toolset="sdn",
    input=ObjectArgs,
    output=Changed,
    planner=_plan_object,
    api=[
        "POST /cluster/sdn/zones",
        "PUT /cluster/sdn/zones/{zone}",
        "POST /cluster/sdn/vnets",
        "PUT /cluster/sdn/vnets/{vnet}",
        "POST /cluster/sdn/vnets/{vnet}/subnets",
        "PUT /cluster/sdn/vnets/{vnet}/subnets/{subnet}",
    ],
    examples=[
        {"kind": "zone", "op": "create", "id": "dc", "type": "vlan", "bridge": "vmbr1"},
        {"kind": "vnet", "op": "create", "id": "web", "zone": "lab", "alias": "web tier"},
        {
            "kind": "subnet",
            "op": "create",
            "id": "10.30.0.0/24",
            "vnet": "labnet",
            "gateway": "10.30.0.1",
            "snat": True,
        },
        {
            "kind": "subnet",
            "op": "update",
            "id": "10.20.0.0/24",
            "vnet": "labnet",
            "clear": ["snat"],
        },
    ],
    rejects=[
        ({"kind": "zone", "op": "create", "id": "lab", "type": "simple"}, "already_exists"),
        ({"kind": "vnet", "op": "create", "id": "v2", "zone": "lab", "tag": 5}, "invalid_argument"),
        ({"kind": "vnet", "op": "create", "id": "v2", "zone": "nope"}, "not_found"),
        (
            {
                "kind": "subnet",
                "op": "create",
                "id": "10.40.0.0/24",
                "vnet": "labnet",
                "gateway": "10.41.0.1",
            },
            "invalid_argument",
        ),
        (
            {"kind": "subnet", "op": "create", "id": "10.40.0.300/24", "vnet": "labnet"},
            "invalid_argument",
        ),
    ],
)
async def sdn_object(ctx: ToolContext, args: ObjectArgs) -> Changed:
    """Create or change an SDN zone, VNet (a bridge guests can use on every node of its
    zone) or subnet (id: its CIDR). Pending until proxmox_sdn_apply."""
    plan = ctx.plan
    assert plan is not None
    return await _send_and_read(ctx, plan, args.kind, args.id)


class DeleteArgs(WriteInput):
    kind: Kind
    id: Annotated[str, Field(max_length=64, description="Zone or VNet id; a subnet's CIDR.")]
    vnet: Annotated[SdnId | None, Field(description="A subnet's VNet.")] = None


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    sdn = await read_sdn(ctx)
    if args.kind == "subnet":
        probe = ObjectArgs(kind="subnet", op="update", id=args.id, vnet=args.vnet)
        vnet, found = _check_subnet(sdn, probe, {})
        if found is None:
            known = [_row(s, "subnet").id for s in sdn.subnets_of(vnet)]
            raise _unknown("subnet", args.id, "id", known)
        call = ApiCall.to("DELETE", SUBNETS + "/{subnet}", vnet=vnet, subnet=str(found["subnet"]))
    else:
        live = sdn.live(args.kind)
        found = live.get(args.id)
        if found is None:
            raise _unknown(args.kind, args.id, "id", list(live))
        users = (
            sorted(n for n, v in sdn.live("vnet").items() if Sdn.value(v, "zone") == args.id)
            if args.kind == "zone"
            else [_row(s, "subnet").id for s in sdn.subnets_of(args.id)]
        )
        if users:
            what = "VNets" if args.kind == "zone" else "subnets"
            raise ToolFailure(
                "in_use",
                f"SDN {args.kind} {args.id} still has {what}: {', '.join(users)}",
                field="id",
                hint=f"Delete its {what} first.",
            )
        if args.kind == "zone":
            call = ApiCall.to("DELETE", ZONES + "/{zone}", zone=args.id)
        else:
            call = ApiCall.to("DELETE", VNETS + "/{vnet}", vnet=args.id)
    before = _settings(found, args.kind)
    return Plan(
        summary=f"delete SDN {args.kind} {args.id} (pending until proxmox_sdn_apply)",
        changes=[Change(field=f"{args.kind} {args.id}", before=before, after=None)],
        target=Target(name=args.id),
        calls=[call],
        warnings=[f"once applied, guest NICs on VNet {args.id} lose their link"]
        if args.kind == "vnet"
        else [],
    )


@tool(
    "proxmox_sdn_delete",
    title="Delete an SDN zone, VNet or subnet (pending)",
    tier=Tier.DESTRUCTIVE,
    toolset="sdn",
    input=DeleteArgs,
    output=Changed,
    planner=_plan_delete,
    api=[
        "DELETE /cluster/sdn/zones/{zone}",
        "DELETE /cluster/sdn/vnets/{vnet}",
        "DELETE /cluster/sdn/vnets/{vnet}/subnets/{subnet}",
    ],
    examples=[{"kind": "subnet", "id": "10.20.0.0/24", "vnet": "labnet"}],
    rejects=[
        ({"kind": "zone", "id": "lab"}, "in_use"),
        ({"kind": "vnet", "id": "labnet"}, "in_use"),
        ({"kind": "vnet", "id": "nope"}, "not_found"),
    ],
)
async def sdn_delete(ctx: ToolContext, args: DeleteArgs) -> Changed:
    """Delete an SDN zone (no VNets left), VNet (no subnets left) or subnet (id: its CIDR).
    Pending until proxmox_sdn_apply."""
    plan = ctx.plan
    assert plan is not None
    return await _send_and_read(ctx, plan, args.kind, args.id)


# --- apply -------------------------------------------------------------------------------


class ApplyArgs(WaitInput):
    pass


def _pairs(pending: dict[str, Any] | None) -> str:
    """`: alias=web, zone=lab` for the settings an apply sets (`deleted`: removes)."""
    return ": " + ", ".join(f"{k}={v}" for k, v in sorted(pending.items())) if pending else ""


def _pending_lines(sdn: Sdn) -> list[str]:
    lines = []
    for kind, items in (("zone", sdn.zones), ("vnet", sdn.vnets)):
        for ident, item in items.items():
            if item.get("state"):
                lines.append(f"{item['state']} {kind} {ident}{_pairs(item.get('pending'))}")
    for vnet, subnets in sdn.subnets.items():
        for item in subnets:
            if item.get("state"):
                row = _row(item, "subnet")
                lines.append(f"{item['state']} subnet {row.id} of {vnet}{_pairs(row.pending)}")
    return lines


async def _plan_apply(ctx: ToolContext, args: ApplyArgs) -> Plan:
    sdn = await read_sdn(ctx)
    lines = _pending_lines(sdn)
    if not lines:
        raise ToolFailure(
            "precondition_failed",
            "the SDN config has no pending changes",
            hint="proxmox_sdn_object and _delete make them; proxmox_sdn_list shows them.",
        )
    nodes = answer_as(_ITEMS, await ctx.get("/nodes"), method="GET", path="/nodes")
    names = sorted(str(n["node"]) for n in nodes if n.get("status") == "online")
    answers = [await ctx.call("GET", f"/nodes/{name}/network") for name in names]
    other = [name for name, answer in zip(names, answers, strict=True) if answer.changes]
    warnings = [
        "reloads the network of every node (ifreload); deleted VNets vanish under the guests "
        "that use them"
    ]
    if other:
        warnings.append(
            f"also makes the pending interface changes of {', '.join(other)} live (PVE reloads "
            "each node's whole network): review them with proxmox_network_list first"
        )
    return Plan(
        summary=f"apply {len(lines)} pending SDN change(s) on every node",
        changes=[Change(field="sdn", before=lines, after=None)],
        target=Target(),
        calls=[ApiCall.to("PUT", "/cluster/sdn", task=True)],
        warnings=warnings,
    )


@tool(
    "proxmox_sdn_apply",
    title="Apply the pending SDN changes",
    tier=Tier.DESTRUCTIVE,
    toolset="sdn",
    input=ApplyArgs,
    output=TaskOutcome,
    planner=_plan_apply,
    api=["PUT /cluster/sdn"],
    examples=[{}],
    rejects=[({"timeout": 0}, "invalid_argument")],
)
async def sdn_apply(ctx: ToolContext, args: ApplyArgs) -> TaskOutcome:
    """Make the pending SDN zones, VNets and subnets live on every node. Reloads each
    node's network, which also applies its pending interface changes: read the plan."""
    plan = ctx.plan
    assert plan is not None
    answer = await ctx.call("PUT", plan.calls[0].path)
    upid = str(answer.data)
    outcome = TaskOutcome(node=upid.split(":")[1] if upid.startswith("UPID:") else None, upid=upid)
    if args.wait:
        task = await ctx.wait_task(upid, args.timeout)
        outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
    else:
        outcome.task_status = "running"
    return outcome


TOOLS = (sdn_list, sdn_object, sdn_delete, sdn_apply)
