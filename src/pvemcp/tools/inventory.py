"""An Ansible inventory of the cluster's guests, as YAML or INI: the read tool
`proxmox_inventory_export`, which `pvemcp inventory` also calls (through the gateway, so policy
and audit apply to the command as to any caller).

The builder (`Host` rows in, `build`, `render_yaml`, `render_ini`) is pure: the tool only
gathers the rows. Groups are `node_<node>`, `pool_<pool>`, `tag_<tag>`, `type_<type>` and
`status_<status>`, with every character Ansible refuses in a group name (anything but
`[A-Za-z0-9_]`) made `_`. Host names are the guests' names, with `-<vmid>` added where
several guests share one (the demo's two `test`s), since Ansible keys hosts by name.
Templates are left out: nothing can run on them.

`ansible_host` is the address Ansible would reach: the first IPv4 address, neither
loopback nor link-local, that a running VM's guest agent reports (qemu-server
`network-get-interfaces`), else the static `ip=` of the guest's own config (a VM's
cloud-init `ipconfig0`, a container's `net0`), else none. An agent that does not answer
only means no address from it, never a failed export.

Neither format needs a YAML library: every string is written JSON-quoted (a JSON string
is a YAML double-quoted scalar), and INI values as Ansible's INI plugin reads them back
(shell-split, then `ast.literal_eval`, a plain string when that fails).
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from pydantic import Field

from pvemcp.tools.kit import (
    OBJECT,
    GuestType,
    NodeName,
    ProxmoxError,
    Tier,
    ToolContext,
    ToolInput,
    ToolOutput,
    answer_as,
    matching,
    planners,
    tag_list,
    tool,
)

AGENT_CONCURRENCY = 8
"""Guest-agent and config reads in flight at once: a cluster of hundreds of guests is read
in bounded waves, not all at once (each agent call costs PVE a QMP round trip)."""

_GROUP_INVALID = re.compile(r"[^A-Za-z0-9_]")
_HOST_INVALID = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Host:
    """One guest as the inventory needs it."""

    vmid: int
    name: str | None
    node: str
    type: str
    status: str
    tags: tuple[str, ...] = ()
    pool: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """Host variables by host name (in vmid order) and each group's host names."""

    hosts: dict[str, dict[str, Any]]
    groups: dict[str, list[str]]


def group_name(prefix: str, value: str) -> str:
    """`<prefix>_<value>` with what Ansible refuses in a group name made `_`."""
    return _GROUP_INVALID.sub("_", f"{prefix}_{value}")


def host_names(guests: Iterable[tuple[int, str | None]]) -> dict[int, str]:
    """Each guest's host name by vmid, from `(vmid, name)` pairs: its name (characters a
    shell or an INI line would split on made `-`; `guest-<vmid>` when it has none), with
    `-<vmid>` added to each of the guests that share one, and again should that collide
    with another guest's name."""
    base = {
        vmid: _HOST_INVALID.sub("-", name) if name else f"guest-{vmid}"
        for vmid, name in sorted(guests)
    }
    counts = Counter(base.values())
    taken = {name for name in base.values() if counts[name] == 1}
    names: dict[int, str] = {}
    for vmid, own in base.items():
        name = own
        if counts[own] > 1:
            name = f"{own}-{vmid}"
            while name in taken:
                name = f"{name}-{vmid}"
            taken.add(name)
        names[vmid] = name
    return names


def build(hosts: Iterable[Host], names: Mapping[int, str] | None = None) -> Inventory:
    """The inventory of `hosts`: host variables and groups (node, pool, tag, type, status,
    in that order, each sorted). `names` are the host names by vmid (`host_names` of all
    the cluster's guests, so that a filtered export names a host as the whole one does);
    by default those of `hosts`."""
    ordered = sorted(hosts, key=lambda host: host.vmid)
    if names is None:
        names = host_names((host.vmid, host.name) for host in ordered)
    variables: dict[str, dict[str, Any]] = {}
    members: dict[tuple[int, str], list[str]] = {}
    for host in ordered:
        name = names[host.vmid]
        found = {
            "ansible_host": host.address,
            "proxmox_vmid": host.vmid,
            "proxmox_node": host.node,
            "proxmox_type": host.type,
            "proxmox_status": host.status,
            "proxmox_tags": list(host.tags),
            "proxmox_pool": host.pool,
        }
        variables[name] = {key: value for key, value in found.items() if value is not None}
        keys = [(0, group_name("node", host.node))]
        keys += [(1, group_name("pool", host.pool))] if host.pool else []
        keys += [(2, group_name("tag", tag)) for tag in host.tags]
        keys += [(3, group_name("type", host.type)), (4, group_name("status", host.status))]
        for key in dict.fromkeys(keys):  # two tags may sanitise to one group
            members.setdefault(key, []).append(name)
    return Inventory(variables, {group: members[(o, group)] for o, group in sorted(members)})


def _yaml_value(value: Any) -> str:
    """A scalar or list as YAML: JSON is YAML's flow subset, and JSON-quoting every string
    keeps `yes`, `1.0` or `null` strings from being read as something else."""
    return json.dumps(value)


def render_yaml(inventory: Inventory) -> str:
    """Ansible's YAML inventory: `all` holds the hosts with their variables, and its
    `children` the groups, each listing its hosts."""
    if not inventory.hosts:
        return "all: {}\n"
    lines = ["all:", "  hosts:"]
    for name, variables in inventory.hosts.items():
        lines.append(f"    {json.dumps(name)}:")
        lines += [f"      {key}: {_yaml_value(value)}" for key, value in variables.items()]
    lines.append("  children:")
    for group, hosts in inventory.groups.items():
        lines += [f"    {group}:", "      hosts:"]
        lines += [f"        {json.dumps(name)}: null" for name in hosts]
    return "\n".join(lines) + "\n"


def _ini_value(value: Any) -> str:
    """`value` so that Ansible's INI plugin reads it back as it is: a string that
    `literal_eval` would turn into something else (`1.0`, `True`) or that has spaces is
    JSON-quoted inside shell quotes; numbers and lists go through `literal_eval` as such."""
    if isinstance(value, str):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if value and shlex.quote(value) == value:
                return value
        return shlex.quote(json.dumps(value))
    return shlex.quote(json.dumps(value))


def render_ini(inventory: Inventory) -> str:
    """Ansible's INI inventory: each host once with its variables before any section
    (Ansible takes such hosts out of `ungrouped` once a group has them), then one section
    per group."""
    lines = [
        " ".join([name, *(f"{key}={_ini_value(value)}" for key, value in variables.items())])
        for name, variables in inventory.hosts.items()
    ]
    for group, hosts in inventory.groups.items():
        lines += ["", f"[{group}]", *hosts]
    return "\n".join(lines) + "\n" if lines else ""


def agent_enabled(value: object) -> bool:
    """Whether a VM's `agent` option (`1`, `0` or `[enabled=]1,fstrim_cloned_disks=...`)
    enables the guest agent."""
    for part in str(value or "0").split(","):
        key, _, text = part.partition("=")
        if not text:
            return key.strip() in ("1", "yes", "on", "true")
        if key == "enabled":
            return text.strip() in ("1", "yes", "on", "true")
    return False


def _usable(text: object) -> str | None:
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    if address.version != 4 or address.is_loopback or address.is_link_local:
        return None
    return str(address)


def agent_address(result: object) -> str | None:
    """The first IPv4 address, neither loopback nor link-local, in the guest agent's
    `network-get-interfaces` result (a list of interfaces with `ip-addresses`)."""
    for interface in result if isinstance(result, list) else ():
        if not isinstance(interface, Mapping):
            continue
        for entry in interface.get("ip-addresses") or ():
            if isinstance(entry, Mapping) and (found := _usable(entry.get("ip-address"))):
                return found
    return None


def static_address(value: object) -> str | None:
    """The address of a static `ip=` in a cloud-init `ipconfigN` or a container's `netN`
    (`ip=10.0.0.5/24,gw=...`); None for `dhcp`, `manual` or no `ip=`."""
    for part in str(value or "").split(","):
        key, _, text = part.partition("=")
        if key == "ip":
            try:
                return _usable(ipaddress.IPv4Interface(text).ip)
            except ValueError:
                return None
    return None


async def _address(ctx: ToolContext, row: Mapping[str, Any]) -> str | None:
    """The guest's address: its agent's, for a running VM that has one that answers; else
    the static one in its config."""
    base = f"/nodes/{row['node']}/{row['type']}/{row['vmid']}"
    config = answer_as(OBJECT, await ctx.get(f"{base}/config"), method="GET", path=base + "/config")
    if (
        row["type"] == "qemu"
        and row.get("status") == "running"
        and agent_enabled(config.get("agent"))
    ):
        try:
            answer = await ctx.get(f"{base}/agent/network-get-interfaces")
        except ProxmoxError:
            answer = None  # not running, not installed, timed out: no address from it
        found = agent_address(answer.get("result") if isinstance(answer, Mapping) else None)
        if found is not None:
            return found
    return static_address(config.get("ipconfig0" if row["type"] == "qemu" else "net0"))


async def _addresses(ctx: ToolContext, rows: list[dict[str, Any]]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    limiter = anyio.CapacityLimiter(AGENT_CONCURRENCY)

    async def read(row: dict[str, Any]) -> None:
        async with limiter:
            found[int(row["vmid"])] = await _address(ctx, row)

    try:
        async with anyio.create_task_group() as group:
            for row in rows:
                group.start_soon(read, row)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return found


Tag = Annotated[str, Field(max_length=64, pattern=r"^[\w.+-]+$")]


class InventoryArgs(ToolInput):
    format: Literal["yaml", "ini"] = "yaml"
    node: NodeName | None = None
    pool: Annotated[str | None, matching(r"[A-Za-z][A-Za-z0-9.\-_]{0,63}", "a pool name")] = None
    tag: Tag | None = None
    status: Literal["running", "stopped", "paused"] | None = None
    type: GuestType | None = None
    with_ips: Annotated[
        bool, Field(description="Look up ansible_host (guest agent, else cloud-init ip=).")
    ] = True


class InventoryExport(ToolOutput):
    """The inventory text; beyond the output cap, its start and the whole as an artifact."""

    format: str
    hosts: int
    groups: int
    without_ip: list[str] | None = None
    inventory: str
    truncated: bool | None = None
    artifact: str | None = None


@tool(
    "proxmox_inventory_export",
    title="Export an Ansible inventory of the guests",
    tier=Tier.READ,
    toolset="inventory",
    input=InventoryArgs,
    output=InventoryExport,
    idempotent=True,
    api=[
        "GET /cluster/resources",
        "GET /nodes/{node}/{type}/{vmid}/config",
        "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    ],
    examples=[{}, {"format": "ini", "tag": "prod"}, {"node": "pve3", "with_ips": False}],
    rejects=[({"format": "json"}, "invalid_argument"), ({"pool": "-x"}, "invalid_argument")],
)
async def inventory(ctx: ToolContext, args: InventoryArgs) -> InventoryExport:
    """Ansible inventory (YAML or INI) of the guests, grouped by node, pool, tag, type and
    status; ansible_host from the guest agent or cloud-init. Templates are left out. To
    browse guests use proxmox_guest_list."""
    guests = [row for row in await planners.guest_resources(ctx) if not row.get("template")]
    rows = [
        row
        for row in guests
        if (args.node is None or row.get("node") == args.node)
        and (args.pool is None or row.get("pool") == args.pool)
        and (args.tag is None or args.tag in (tag_list(row.get("tags")) or ()))
        and (args.status is None or row.get("status") == args.status)
        and (args.type is None or row.get("type") == args.type)
    ]
    addresses = await _addresses(ctx, rows) if args.with_ips else {}
    hosts = [
        Host(
            vmid=int(row["vmid"]),
            name=row.get("name"),
            node=str(row["node"]),
            type=str(row["type"]),
            status=str(row.get("status", "unknown")),
            tags=tuple(tag_list(row.get("tags")) or ()),
            pool=row.get("pool"),
            address=addresses.get(int(row["vmid"])),
        )
        for row in rows
    ]
    built = build(hosts, host_names((int(row["vmid"]), row.get("name")) for row in guests))
    text = render_yaml(built) if args.format == "yaml" else render_ini(built)
    data = text.encode()
    cap = ctx.output_limits.output_cap
    long = len(data) > cap
    return InventoryExport(
        format=args.format,
        hosts=len(built.hosts),
        groups=len(built.groups),
        without_ip=(
            [name for name, found in built.hosts.items() if "ansible_host" not in found]
            if args.with_ips
            else None
        ),
        # Cut at a line end, so what is shown inline is whole lines.
        inventory=data[: data.rfind(b"\n", 0, cap) + 1].decode() if long else text,
        truncated=long or None,
        artifact=ctx.keep_artifact(data) if long else None,
    )


TOOLS = (inventory,)
