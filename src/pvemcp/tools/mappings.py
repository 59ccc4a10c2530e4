"""Hardware mappings (issue 12): cluster-wide names for PCI and USB devices.

A mapping (pve-manager `PVE/API2/Cluster/Mapping/{PCI,USB}.pm`, pve-guest-common
`PVE/Mapping/*.pm`) names a device per node, so a VM says `hostpci0: mapping=gpu` or
`usb0: mapping=dongle` and may move between nodes that have it. PVE deletes a mapping a
VM still uses (the VM then fails to start); `proxmox_mapping_delete` refuses that,
naming the VM and its config key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    OBJECT,
    ApiCall,
    Applied,
    Change,
    NodeName,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WriteInput,
    apply_plan,
    matching,
    node_statuses,
    planners,
    read_as,
    tool,
)

TOOLSET = "mappings"
Kind = Literal["pci", "usb"]
MappingId = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9_\-]{1,63}", "a mapping id")]
_ROWS = TypeAdapter(list[dict[str, Any]])
_USES = {"pci": re.compile(r"^hostpci\d+$"), "usb": re.compile(r"^usb\d+$")}
"""The VM config keys that can name a mapping of each kind."""
_ENTRY_KEYS = (("node", "node"), ("path", "path"), ("device", "id"),
               ("iommugroup", "iommugroup"), ("subsystem_id", "subsystem-id"),
               ("description", "description"))  # fmt: skip
"""(field here, key in PVE's map property string)."""


class MapEntry(ToolOutput):
    node: NodeName
    device: Annotated[
        str, matching(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}", "vendor:device (hex)"),
        Field(description="Vendor:device id, e.g. 10de:24b0."),
    ]  # fmt: skip
    path: Annotated[
        str | None,
        Field(max_length=256, description="PCI 0000:01:00(.0) or USB bus-port 1-1.2."),
    ] = None
    iommugroup: int | None = None
    subsystem_id: Annotated[str | None, matching(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}", "hex")] = None
    description: Annotated[str | None, Field(max_length=4096)] = None

    def property_string(self) -> str:
        values = self.model_dump()
        return ",".join(f"{key}={values[name]}" for name, key in _ENTRY_KEYS
                        if values[name] is not None)  # fmt: skip


def _entry(text: str) -> MapEntry:
    parsed = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    return MapEntry.model_validate({name: parsed[key] for name, key in _ENTRY_KEYS
                                    if key in parsed})  # fmt: skip


class MappingRow(ToolOutput):
    kind: str
    id: str
    description: str | None = None
    map: list[MapEntry]
    used_by: list[str] | None = None
    """`<vmid>:<key>` of every VM config naming it (only when one id is asked)."""


async def _mappings(ctx: ToolContext, kind: str) -> dict[str, dict[str, Any]]:
    return {str(m["id"]): m for m in await read_as(ctx, _ROWS, f"/cluster/mapping/{kind}")}


async def _mapping(ctx: ToolContext, kind: str, mapping_id: str) -> dict[str, Any]:
    found = await _mappings(ctx, kind)
    if mapping_id not in found:
        raise ToolFailure(
            "not_found",
            f"no {kind} mapping {mapping_id!r}",
            field="id",
            hint=f"{kind} mappings: {', '.join(sorted(found)) or 'none'}.",
        )
    return found[mapping_id]


async def _users(ctx: ToolContext, kind: str, mapping_id: str) -> list[str]:
    """`<vmid>:<key>` of every VM whose config (current or pending) names the mapping."""
    users = []
    for row in await planners.guest_resources(ctx):
        if row.get("type") != "qemu":
            continue
        target = planners.guest_target(row)
        config = await read_as(ctx, OBJECT, f"{target.path}/config")
        for key, value in sorted(config.items()):
            options = str(value).split(",")
            if _USES[kind].match(key) and f"mapping={mapping_id}" in options:
                users.append(f"{target.vmid}:{key}")
    return users


def _row(kind: str, raw: dict[str, Any]) -> MappingRow:
    return MappingRow(kind=kind, id=str(raw["id"]), description=raw.get("description"),
                      map=[_entry(str(m)) for m in raw.get("map") or []])  # fmt: skip


class ListArgs(ToolInput):
    kind: Kind | None = None
    id: Annotated[MappingId | None, Field(description="One mapping, with the VMs using it.")] = None

    @model_validator(mode="after")
    def _kind_with_id(self) -> Self:
        if self.id is not None and self.kind is None:
            raise ValueError("give kind with id")
        return self


class MappingList(ToolOutput):
    mappings: list[MappingRow]


@tool(
    "proxmox_mapping_list",
    title="List hardware mappings",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=ListArgs,
    output=MappingList,
    idempotent=True,
    examples=[{}, {"kind": "pci", "id": "gpu"}],
    rejects=[({"kind": "usb", "id": "gpu"}, "not_found"), ({"id": "gpu"}, "invalid_argument")],
    api=["GET /cluster/mapping/pci", "GET /cluster/mapping/usb"],
)
async def mapping_list(ctx: ToolContext, args: ListArgs) -> MappingList:
    """PCI and USB hardware mappings (a device named per node, for passthrough with
    hostpciN/usbN: mapping=<id>); with kind and id, also the VMs that use it."""
    if args.id is not None and args.kind is not None:
        row = _row(args.kind, await _mapping(ctx, args.kind, args.id))
        row.used_by = await _users(ctx, args.kind, args.id)
        return MappingList(mappings=[row])
    kinds: tuple[Kind, ...] = (args.kind,) if args.kind else ("pci", "usb")
    rows = [_row(k, m) for k in kinds for m in (await _mappings(ctx, k)).values()]
    return MappingList(mappings=rows)


class MappingArgs(WriteInput):
    op: Literal["create", "update"]
    kind: Kind
    id: MappingId
    map: Annotated[
        list[MapEntry] | None,
        Field(min_length=1, max_length=64, description="Per-node devices; replaces the list."),
    ] = None
    description: Annotated[str | None, Field(max_length=4096)] = None

    @model_validator(mode="after")
    def _map_for_create(self) -> Self:
        if self.op == "create" and not self.map:
            raise ValueError("a new mapping needs map (one entry per node)")
        if self.kind == "pci" and any(e.path is None for e in self.map or []):
            raise ValueError("a pci map entry needs path (e.g. 0000:01:00.0)")
        return self


async def _plan_mapping(ctx: ToolContext, args: MappingArgs) -> Plan:
    existing = await _mappings(ctx, args.kind)
    if args.op == "create" and args.id in existing:
        raise ToolFailure("already_exists", f"{args.kind} mapping {args.id!r} already exists",
                          field="id", hint="Choose another id, or op=update.")  # fmt: skip
    before = None
    if args.op == "update":
        before = _row(args.kind, await _mapping(ctx, args.kind, args.id))
    nodes = set(await node_statuses(ctx))
    for index, entry in enumerate(args.map or []):
        if entry.node not in nodes:
            raise ToolFailure("not_found", f"no node {entry.node!r}", field=f"map[{index}].node",
                              hint=f"Nodes: {', '.join(sorted(nodes))}.")  # fmt: skip
    params: dict[str, Any] = {}
    changes = []
    if args.map is not None:
        params["map"] = [e.property_string() for e in args.map]
        old = [e.property_string() for e in before.map] if before else None
        changes.append(Change(field="map", before=old, after=params["map"]))
    if args.description is not None:
        params["description"] = args.description
        changes.append(Change(field="description",
                              before=before.description if before else None,
                              after=args.description))  # fmt: skip
    if not params:
        raise ToolFailure("invalid_argument", "nothing to change", field="op",
                          hint="Pass map or description.")  # fmt: skip
    if args.op == "update" and "map" not in params and before is not None:
        params["map"] = [e.property_string() for e in before.map]  # PVE's PUT requires map
    base = f"/cluster/mapping/{args.kind}"
    call = (ApiCall.to("POST", base, params={"id": args.id, **params}) if args.op == "create"
            else ApiCall.to("PUT", base + "/{id}", params=params, id=args.id))  # fmt: skip
    return Plan(
        summary=f"{args.op} {args.kind} mapping {args.id}",
        changes=changes,
        target=Target(name=args.id),
        calls=[call],
    )


@tool(
    "proxmox_mapping_set",
    title="Create or change a hardware mapping",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=MappingArgs,
    output=Applied,
    planner=_plan_mapping,
    examples=[
        {
            "op": "create",
            "kind": "usb",
            "id": "dongle",
            "map": [{"node": "pve1", "device": "046d:c52b", "path": "1-1.2"}],
        },
        {"op": "update", "kind": "pci", "id": "gpu", "description": "GPU for CUDA"},
    ],
    rejects=[
        (
            {
                "op": "create",
                "kind": "pci",
                "id": "gpu",
                "map": [{"node": "pve1", "device": "10de:24b0", "path": "0000:01:00"}],
            },
            "already_exists",
        ),
        (
            {
                "op": "create",
                "kind": "usb",
                "id": "key",
                "map": [{"node": "pve9", "device": "046d:c52b"}],
            },
            "not_found",
        ),
        (
            {
                "op": "create",
                "kind": "pci",
                "id": "nic",
                "map": [{"node": "pve1", "device": "8086:1521"}],
            },
            "invalid_argument",
        ),
        ({"op": "update", "kind": "usb", "id": "nope", "description": "x"}, "not_found"),
    ],
    api=[
        "POST /cluster/mapping/pci",
        "PUT /cluster/mapping/pci/{id}",
        "POST /cluster/mapping/usb",
        "PUT /cluster/mapping/usb/{id}",
    ],
)
async def mapping_set(ctx: ToolContext, args: MappingArgs) -> Applied:
    """Create or change a PCI/USB hardware mapping: which device on each node the name
    stands for. A VM then uses it as hostpciN or usbN: mapping=<id>."""
    return await apply_plan(ctx, args)


class DeleteArgs(WriteInput):
    kind: Kind
    id: MappingId


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    before = _row(args.kind, await _mapping(ctx, args.kind, args.id))
    users = await _users(ctx, args.kind, args.id)
    if users:
        raise ToolFailure(
            "in_use",
            f"{args.kind} mapping {args.id} is used by VM config {', '.join(users)}",
            field="id",
            hint="Remove it from those VMs first (proxmox_guest_config_update delete=<key>); "
            "PVE would delete it and the VMs would fail to start.",
            details={"used_by": users},
        )
    return Plan(
        summary=f"delete {args.kind} mapping {args.id}",
        changes=[Change(field="map", before=[e.property_string() for e in before.map], after=None)],
        target=Target(name=args.id),
        calls=[ApiCall.to("DELETE", f"/cluster/mapping/{args.kind}/{{id}}", id=args.id)],
    )


@tool(
    "proxmox_mapping_delete",
    title="Delete a hardware mapping",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=DeleteArgs,
    output=Applied,
    planner=_plan_delete,
    examples=[{"kind": "pci", "id": "gpu"}],
    rejects=[({"kind": "usb", "id": "nope"}, "not_found")],
    api=["DELETE /cluster/mapping/pci/{id}", "DELETE /cluster/mapping/usb/{id}"],
)
async def mapping_delete(ctx: ToolContext, args: DeleteArgs) -> Applied:
    """Delete a PCI/USB hardware mapping. Refused while a VM config names it."""
    return await apply_plan(ctx, args)


TOOLS = (mapping_list, mapping_set, mapping_delete)
