"""SDN: zones, VNets and their subnets, pending until applied, as pve-network keeps them.

The configuration (`/etc/pve/sdn/{zones,vnets,subnets}.cfg`) changes at once on every
create, update and delete; what the nodes run is a separate copy (`.running-config`) that
only `PUT /cluster/sdn` replaces (pve-network `PVE/API2/Network/SDN.pm` `reload`:
`commit_config` before the `reloadnetworkall` worker reloads every node's network). A GET
with `pending=1` merges the two as `PVE::Network::SDN::pending_config` does: the running
values at the top, what the config changes under `pending`, and `state` new, changed or
deleted; `running=1` shows the running copy alone. Only the running VNets are bridges a
node offers guests (`get_local_vnets`, in `GET /nodes/{node}/network?type=any_bridge`).

Checks and wording follow `API2/Network/SDN/{Zones,Vnets,Subnets}.pm`, the zone plugins'
`vnet_update_hook`, `VnetPlugin` and `SubnetPlugin`: an id already defined, an unknown
one (`sdn 'x' does not exist`), a tag on a simple zone, a VLAN zone's VNet without a tag,
a zone still used by a VNet, a VNet with subnets, a gateway outside its subnet. Errors
raised inside `lock_sdn_config` reach the client as `<what> failed: <error>` with HTTP
500, parameter errors included (pve-network `lock_sdn_domain` re-dies with the message;
the stringified exception keeps its `400` code and field lines; from reading the code, not
verified against a node). Zone types with controllers (evpn, faucet) are not modelled.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, check_digest, failure, param_error
from .router import Context, Params, Result, Route, api, text
from .tasks import Plan

Section = dict[str, Any]
KINDS = ("zones", "vnets", "subnets")
_ID_KEY = {"zones": "zone", "vnets": "vnet", "subnets": "subnet"}
_REQUIRED = {"vlan": ("bridge",), "qinq": ("bridge", "tag"), "vxlan": ("peers",)}
"""The options each zone type's `options` marks `optional => 0`."""
_TAGGED = ("vlan", "qinq")
RELOAD_SECONDS = 4.0


@dataclass
class Sdn:
    """The SDN config and the running copy the last apply committed."""

    config: dict[str, dict[str, Section]]
    running: dict[str, dict[str, Section]] = field(default_factory=dict)
    version: int = 1

    def digest(self, kind: str) -> str:
        """The config file's digest, as SectionConfig computes it over the file text."""
        text = "".join(
            f"{id_}:" + "".join(f"{k}={v};" for k, v in sorted(s.items())) + "\n"
            for id_, s in sorted(self.config[kind].items())
        )
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def local_vnets(self, node: str) -> list[Section]:
        """The running VNets a node offers as bridges (`get_local_vnets`)."""
        found = []
        zones = self.running.get("zones", {})
        for vnet, values in sorted(self.running.get("vnets", {}).items()):
            zone = zones.get(str(values.get("zone")))
            if zone is None or (zone.get("nodes") and node not in str(zone["nodes"]).split(",")):
                continue
            item: Section = {"iface": vnet, "type": "vnet", "active": 1}
            if values.get("alias"):
                item["comments"] = values["alias"]
            found.append(item)
        return found


def demo_sdn() -> Sdn:
    """A simple zone `lab` with the VNet `labnet` and its subnet 10.20.0.0/24, applied,
    and a VNet `dmz` in it not applied yet."""
    config: dict[str, dict[str, Section]] = {
        "zones": {"lab": {"type": "simple", "ipam": "pve"}},
        "vnets": {"labnet": {"type": "vnet", "zone": "lab", "alias": "lab network"}},
        "subnets": {
            "lab-10.20.0.0-24": {
                "type": "subnet", "vnet": "labnet", "gateway": "10.20.0.1", "snat": 1,
            }
        },
    }  # fmt: skip
    running = copy.deepcopy(config)
    # Created in the web UI, not applied yet.
    config["vnets"]["dmz"] = {"type": "vnet", "zone": "lab", "alias": "DMZ"}
    return Sdn(config, running)


def _shown(sdn: Sdn, kind: str, id_: str, values: Section) -> Section:
    """An object as the API shows it: its id, the config's digest, a subnet's parts."""
    item: Section = {**values, _ID_KEY[kind]: id_, "digest": sdn.digest(kind)}
    if kind == "subnets":
        zone, network, mask = id_.split("-")
        item.update(cidr=f"{network}/{mask}", zone=zone, network=network, mask=mask, id=id_)
    return item


def _pending(sdn: Sdn, kind: str) -> dict[str, Section]:
    """`pending_config`: running values on top, config changes under `pending`, `state`."""
    running, config = sdn.running.get(kind, {}), sdn.config[kind]
    merged: dict[str, Section] = {}
    for id_, old in sorted(running.items()):
        new = config.get(id_)
        item: Section = dict(old)
        if new is None:
            item["state"] = "deleted"
        else:
            gone = {k: "deleted" for k in old if k not in new}
            if gone or any(str(old[k]) != str(new[k]) for k in old if k in new):
                item["state"] = "changed"
            if gone:
                item["pending"] = gone
        merged[id_] = item
    for id_, new in sorted(config.items()):
        old = running.get(id_, {})
        item = merged.setdefault(id_, {})
        for key, value in new.items():
            if key in ("type", "vnet"):
                item[key] = value
            elif key not in old or str(old[key]) != str(value):
                item.setdefault("pending", {})[key] = value
                item["state"] = "changed" if old else "new"
        if not old:
            item["state"] = "new"
        if item.get("state") and "pending" not in item:
            item["pending"] = {}
    return merged


def _view(ctx: Context, params: Params, kind: str) -> dict[str, Section]:
    sdn = ctx.state.sdn
    if params.get("pending"):
        return _pending(sdn, kind)
    if params.get("running"):
        return sdn.running.get(kind, {})
    return sdn.config[kind]


def _locked(what: str, change: Callable[[], None]) -> None:
    """`lock_sdn_config`: any error inside becomes `<what> failed: <error>`, HTTP 500."""
    try:
        change()
    except ApiError as err:
        lines = "".join(f"{k}: {v}\n" for k, v in (err.errors or {}).items())
        code = f"{err.status} " if err.errors else ""
        raise failure(f"{what} failed: {code}{err.message}{lines}") from None


def _missing(id_: str) -> ApiError:
    return failure(f"sdn '{id_}' does not exist")


def _fields(params: Params, *drop: str) -> Section:
    skipped = {"lock-token", "digest", "delete", *drop}
    return {k: v for k, v in params.items() if k not in skipped}


def _delete_keys(values: Section, params: Params) -> None:
    for key in str(params.get("delete") or "").replace(";", ",").split(","):
        values.pop(key.strip(), None)


# --- zones -------------------------------------------------------------------------------


def _check_zone(values: Section) -> None:
    kind = str(values["type"])
    if kind not in ("simple", *_REQUIRED):
        raise failure(f"zone type '{kind}' is not modelled by the simulator")
    missing = {k: "property is missing and it is not optional" for k in _REQUIRED.get(kind, ())
               if k not in values}  # fmt: skip
    if missing:
        raise param_error(missing)


def _zones(ctx: Context, params: Params) -> Result:
    wanted = params.get("type")
    items = [_shown(ctx.state.sdn, "zones", i, v) for i, v in _view(ctx, params, "zones").items()]
    return Result([item for item in items if wanted in (None, item.get("type"))])


def _zone(ctx: Context, params: Params) -> Result:
    id_ = text(params, "zone")
    found = _view(ctx, params, "zones").get(id_)
    if found is None:
        raise _missing(id_)
    return Result(_shown(ctx.state.sdn, "zones", id_, found))


def _create_zone(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "zone")
    values = _fields(params, "zone")
    _check_zone(values)

    def change() -> None:
        if id_ in sdn.config["zones"]:
            raise failure(f"sdn zone object ID '{id_}' already defined")
        sdn.config["zones"][id_] = values

    _locked("create sdn zone object", change)
    return Result(None)


def _update_zone(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "zone")

    def change() -> None:
        check_digest(params.get("digest"), sdn.digest("zones"))
        old = sdn.config["zones"].get(id_)
        if old is None:
            raise _missing(id_)
        values = {**old, **_fields(params, "zone")}
        _delete_keys(values, params)
        _check_zone(values)
        sdn.config["zones"][id_] = values

    _locked("update sdn zone object", change)
    return Result(None)


def _delete_zone(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "zone")

    def change() -> None:
        if id_ not in sdn.config["zones"]:
            raise _missing(id_)
        for vnet, values in sorted(sdn.config["vnets"].items()):
            if values.get("zone") == id_:
                # Zones/Plugin.pm `on_delete_hook` dies without a newline (Perl adds where).
                raise failure(f"zone {id_} is used by vnet {vnet}")
        del sdn.config["zones"][id_]

    _locked("delete sdn zone object", change)
    return Result(None)


# --- vnets -------------------------------------------------------------------------------


def _check_vnet(sdn: Sdn, id_: str, values: Section) -> None:
    zone = sdn.config["zones"].get(str(values.get("zone")))
    if zone is None:
        raise _missing(str(values.get("zone")))
    tag = values.get("tag")
    if zone["type"] == "simple" and tag is not None:
        raise param_error({"tag": "vlan tag is not allowed on simple zone"})
    if zone["type"] in _TAGGED:
        if tag is None:
            raise param_error({"tag": "missing vlan tag"})
        if int(tag) > 4096:
            raise param_error({"tag": "vlan tag max value is 4096"})
        for other, values_ in sdn.config["vnets"].items():
            if other != id_ and values_.get("zone") == values["zone"] and values_.get("tag") == tag:
                raise param_error({"tag": f"tag {tag} already exist in vnet {other}"})
    if values.get("vlanaware") and _subnets_of(sdn, id_):
        raise param_error({"vlanaware": "vlanaware vnet is not compatible with subnets"})


def _subnets_of(sdn: Sdn, vnet: str) -> list[str]:
    return sorted(i for i, v in sdn.config["subnets"].items() if v.get("vnet") == vnet)


def _vnets(ctx: Context, params: Params) -> Result:
    views = _view(ctx, params, "vnets").items()
    return Result([_shown(ctx.state.sdn, "vnets", i, v) for i, v in views])


def _vnet_of(ctx: Context, params: Params, id_: str) -> Section:
    found = _view(ctx, params, "vnets").get(id_)
    if found is None:
        raise _missing(id_)
    return found


def _vnet(ctx: Context, params: Params) -> Result:
    id_ = text(params, "vnet")
    return Result(_shown(ctx.state.sdn, "vnets", id_, _vnet_of(ctx, params, id_)))


def _create_vnet(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "vnet")
    values = {"type": "vnet", **_fields(params, "vnet")}

    def change() -> None:
        if id_ in sdn.config["vnets"]:
            raise failure(f"sdn vnet object ID '{id_}' already defined")
        _check_vnet(sdn, id_, values)
        sdn.config["vnets"][id_] = values

    _locked("create sdn vnet object", change)
    return Result(None)


def _update_vnet(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "vnet")
    _vnet_of(ctx, {}, id_)

    def change() -> None:
        check_digest(params.get("digest"), sdn.digest("vnets"))
        old = sdn.config["vnets"][id_]
        values = {**old, **_fields(params, "vnet")}
        _delete_keys(values, params)
        if not values.get("zone"):
            raise param_error({"zone": "cannot delete zone"})
        if values["zone"] != old.get("zone") and _subnets_of(sdn, id_):
            raise param_error({"zone": "can't change zone if subnets exist"})
        _check_vnet(sdn, id_, values)
        sdn.config["vnets"][id_] = values

    _locked("update sdn vnet object", change)
    return Result(None)


def _delete_vnet(ctx: Context, params: Params) -> Result:
    sdn, id_ = ctx.state.sdn, text(params, "vnet")
    _vnet_of(ctx, {}, id_)

    def change() -> None:
        if _subnets_of(sdn, id_):
            raise param_error({"vnet": "Can't delete vnet if subnets exists"})
        del sdn.config["vnets"][id_]

    _locked("delete sdn vnet object", change)
    return Result(None)


# --- subnets -----------------------------------------------------------------------------


def _check_subnet(id_: str, values: Section) -> None:
    """`SubnetPlugin` `on_update_hook`: the gateway inside the subnet (a /32 aside)."""
    _, network, mask = id_.split("-")
    cidr = ipaddress.ip_network(f"{network}/{mask}", strict=False)
    gateway = values.get("gateway")
    if gateway and cidr.prefixlen != 32 and ipaddress.ip_address(str(gateway)) not in cidr:
        raise param_error({"gateway": f"{gateway} is not in subnet {network}/{mask}"})


def _subnet_id(sdn: Sdn, vnet: str, cidr: str) -> str:
    zone = sdn.config["vnets"][vnet].get("zone")
    return f"{zone}-{cidr.replace('/', '-')}"


def _subnets(ctx: Context, params: Params) -> Result:
    vnet = text(params, "vnet")
    _vnet_of(ctx, {}, vnet)
    views = _view(ctx, params, "subnets").items()
    shown = [_shown(ctx.state.sdn, "subnets", i, v) for i, v in views]
    return Result([item for item in shown if item.get("vnet") == vnet])


def _subnet(ctx: Context, params: Params) -> Result:
    vnet, id_ = text(params, "vnet"), text(params, "subnet")
    found = _view(ctx, params, "subnets").get(id_)
    if found is None:
        raise failure(f"sdn subnet '{id_}' does not exist")
    if found.get("vnet") != vnet:
        raise param_error({"vnet": "wrong vnet"})
    return Result(_shown(ctx.state.sdn, "subnets", id_, found))


def _create_subnet(ctx: Context, params: Params) -> Result:
    sdn, vnet, cidr = ctx.state.sdn, text(params, "vnet"), text(params, "subnet")
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise param_error(
            {"subnet": "invalid format - value does not look like a valid CIDR network"}
        ) from None
    if "/" not in cidr or (network.version == 4 and network.prefixlen < 8):
        raise param_error(
            {"subnet": "invalid format - value does not look like a valid CIDR network"}
        )
    _vnet_of(ctx, {}, vnet)
    id_ = _subnet_id(sdn, vnet, cidr)
    values = _fields(params, "subnet")

    def change() -> None:
        if id_ in sdn.config["subnets"]:
            raise failure(f"sdn subnet object ID '{id_}' already defined")
        if sdn.config["vnets"][vnet].get("vlanaware"):
            raise param_error({"vnet": "you can't add a subnet on a vlanaware vnet"})
        _check_subnet(id_, values)
        sdn.config["subnets"][id_] = values

    _locked("create sdn subnet object", change)
    return Result(None)


def _update_subnet(ctx: Context, params: Params) -> Result:
    sdn, vnet, id_ = ctx.state.sdn, text(params, "vnet"), text(params, "subnet")

    def change() -> None:
        check_digest(params.get("digest"), sdn.digest("subnets"))
        old = sdn.config["subnets"].get(id_)
        if old is None:
            raise failure(f"sdn subnet '{id_}' does not exist")
        values = {**old, **_fields(params, "subnet", "vnet")}
        _delete_keys(values, params)
        _check_subnet(id_, values)
        sdn.config["subnets"][id_] = values

    _vnet_of(ctx, {}, vnet)
    _locked("update sdn subnet object", change)
    return Result(None)


def _delete_subnet(ctx: Context, params: Params) -> Result:
    sdn, vnet, id_ = ctx.state.sdn, text(params, "vnet"), text(params, "subnet")
    _vnet_of(ctx, {}, vnet)

    def change() -> None:
        if id_ not in sdn.config["subnets"]:
            raise failure(f"sdn subnet '{id_}' does not exist")
        del sdn.config["subnets"][id_]

    _locked("delete sdn subnet object", change)
    return Result(None)


# --- the index and apply -----------------------------------------------------------------


def _index(ctx: Context, params: Params) -> Result:
    return Result([{"id": id_} for id_ in ("vnets", "zones", "controllers", "ipams", "dns",
                                           "fabrics")])  # fmt: skip


def _apply(ctx: Context, params: Params) -> Result:
    """`reload`: commit the config as the running one now, then a worker that reloads
    every node's network (the local node's task), pending interface changes included."""
    from .endpoints import LOCAL_NODE  # noqa: PLC0415 - endpoints imports this module

    sdn = ctx.state.sdn
    sdn.running, sdn.version = copy.deepcopy(sdn.config), sdn.version + 1
    nodes = sorted(ctx.state.nodes)

    def work(_: float) -> Plan:
        lines = tuple((i / len(nodes), f"{node}: reloading network config")
                      for i, node in enumerate(nodes))  # fmt: skip

        def apply(_: float) -> None:
            # Each node's reload is `pvesh set /nodes/<node>/network`, which also renames
            # the node's pending interfaces file over the active one.
            for net in ctx.state.networks.values():
                if net.pending is not None:
                    net.active, net.pending = net.pending, None

        return Plan(RELOAD_SECONDS, lines=lines, apply=apply)

    task = ctx.state.start_task(LOCAL_NODE, "reloadnetworkall", None, ctx.user, work,
                                locks=[("sdn", "reload")])  # fmt: skip
    return Result(task.upid)


def sdn_resources(sdn: Sdn, nodes: Iterable[str]) -> list[Section]:
    """`/cluster/resources` type sdn: each running zone on each node it spans."""
    found = []
    for node in nodes:
        for zone in ["localnetwork", *sorted(sdn.running.get("zones", {}))]:
            values = sdn.running.get("zones", {}).get(zone, {})
            if values.get("nodes") and node not in str(values["nodes"]).split(","):
                continue
            found.append({"id": f"sdn/{node}/{zone}", "type": "sdn", "sdn": zone,
                          "node": node, "status": "ok"})  # fmt: skip
    return found


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/sdn", _index),
    api("PUT", "/cluster/sdn", _apply),
    api("GET", "/cluster/sdn/zones", _zones),
    api("POST", "/cluster/sdn/zones", _create_zone),
    api("GET", "/cluster/sdn/zones/{zone}", _zone),
    api("PUT", "/cluster/sdn/zones/{zone}", _update_zone),
    api("DELETE", "/cluster/sdn/zones/{zone}", _delete_zone),
    api("GET", "/cluster/sdn/vnets", _vnets),
    api("POST", "/cluster/sdn/vnets", _create_vnet),
    api("GET", "/cluster/sdn/vnets/{vnet}", _vnet),
    api("PUT", "/cluster/sdn/vnets/{vnet}", _update_vnet),
    api("DELETE", "/cluster/sdn/vnets/{vnet}", _delete_vnet),
    api("GET", "/cluster/sdn/vnets/{vnet}/subnets", _subnets),
    api("POST", "/cluster/sdn/vnets/{vnet}/subnets", _create_subnet),
    api("GET", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}", _subnet),
    api("PUT", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}", _update_subnet),
    api("DELETE", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}", _delete_subnet),
)
