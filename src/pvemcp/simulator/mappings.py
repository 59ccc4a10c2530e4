"""Hardware mappings: cluster-wide names for PCI and USB devices, with one map per node.

Follows pve-manager `PVE/API2/Cluster/Mapping/{PCI,USB}.pm` and pve-guest-common
`PVE/Mapping/{PCI,USB}.pm`: `mapping/pci.cfg` and `mapping/usb.cfg`, one section per id
with `description`, `map` (property strings `node=...,path=...,id=vendor:device,...`) and,
for PCI, `mdev` and `live-migration-capable`. A VM uses one as `hostpciN: mapping=<id>`
or `usbN: mapping=<id>`.

PVE does not refuse deleting a mapping a guest uses (the DELETE handler only removes the
section; the guest fails at its next start), so neither does the simulator: the
`proxmox_mapping_delete` tool refuses it before sending. Where the simulator is simpler:
- No node's hardware is simulated, so `check-node` reports only PVE's "No mapping for
  node ..." warning, never a device that is missing or changed (`assert_valid`).
- A map entry's check (`check_config` of the `map` format) is reduced to the keys each
  format requires and the vendor:device pattern; the words after `map:` are the
  simulator's (unsure of PVE's exact text).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import MODIFIED, failure, param_error
from .notify import listed
from .router import Context, Params, Result, Route, api, deleted_keys, text

KINDS = ("pci", "usb")
REQUIRED = {"pci": ("node", "id", "path"), "usb": ("node", "id")}
"""The keys a map entry must have (`$map_fmt` of each plugin)."""
_DEVICE_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$")
_NOT_OPTIONS = ("id", "delete", "digest")


@dataclass
class Mappings:
    """Both mapping configs: kind -> id -> options."""

    ids: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def digest(self, kind: str) -> str:
        body = json.dumps(self.ids[kind], sort_keys=True).encode()
        return hashlib.sha1(body, usedforsecurity=False).hexdigest()


def demo_mappings() -> Mappings:
    """A GPU on pve1 for passthrough (nothing uses it yet)."""
    mappings = Mappings()
    mappings.ids["pci"]["gpu"] = {
        "description": "RTX A4000 for passthrough",
        "map": ["node=pve1,path=0000:01:00,id=10de:24b0,iommugroup=14,subsystem-id=10de:14ad"],
    }
    return mappings


def parse_map(entry: str) -> dict[str, str]:
    """One map entry's keys and values (`node=pve1,path=...`)."""
    found: dict[str, str] = {}
    for part in entry.split(","):
        key, sep, value = part.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found


def _check_map(kind: str, entries: list[str]) -> None:
    for entry in entries:
        parsed = parse_map(entry)
        for key in REQUIRED[kind]:
            if key not in parsed:
                raise param_error({"map": f"invalid format - {key}: property is missing"})
        if not _DEVICE_ID.match(parsed["id"]):
            raise param_error({"map": f"invalid format - id: value does not match the regex "
                                      f"pattern ('{parsed['id']}')"})  # fmt: skip


def _routes(kind: str) -> list[Route]:
    base = f"/cluster/mapping/{kind}"

    def config(ctx: Context) -> dict[str, dict[str, Any]]:
        return ctx.state.mappings.ids[kind]

    def listing(ctx: Context, params: Params) -> Result:
        check = params.get("check-node")
        if check is not None:
            ctx.state.node(str(check))
        rows = []
        for mapping_id, options in sorted(config(ctx).items()):
            row = {"id": mapping_id, **options, "digest": ctx.state.mappings.digest(kind)}
            if check is not None:
                nodes = {parse_map(e).get("node") for e in listed(options.get("map"))}
                warning = {"severity": "warning", "message": f"No mapping for node {check}."}
                problems = [] if check in nodes else [warning]
                row["checks" if kind == "pci" else "error"] = problems
            rows.append(row)
        return Result(rows)

    def read(ctx: Context, params: Params) -> Result:
        mapping_id = text(params, "id")
        options = config(ctx).get(mapping_id)
        if options is None:
            raise failure(f"mapping '{mapping_id}' not found")
        return Result({**options, "digest": ctx.state.mappings.digest(kind)})

    def create(ctx: Context, params: Params) -> Result:
        mapping_id = text(params, "id")
        entries = listed(params.get("map"))
        _check_map(kind, entries)
        options: dict[str, Any] = {k: v for k, v in params.items() if k not in _NOT_OPTIONS}
        options["map"] = entries
        if mapping_id in config(ctx):
            raise failure(f"create hardware mapping failed: {kind} ID '{mapping_id}' already "
                          "defined")  # fmt: skip
        config(ctx)[mapping_id] = options
        return Result(None)

    def update(ctx: Context, params: Params) -> Result:
        mapping_id = text(params, "id")
        digest = params.get("digest")
        if digest is not None and digest != ctx.state.mappings.digest(kind):
            raise failure(f"update hardware mapping failed: {MODIFIED}")
        options = config(ctx).get(mapping_id)
        if options is None:
            raise failure(f"update hardware mapping failed: {kind} ID '{mapping_id}' does not "
                          "exist")  # fmt: skip
        changed: dict[str, Any] = {k: v for k, v in params.items() if k not in _NOT_OPTIONS}
        if "map" in changed:
            changed["map"] = listed(changed["map"])
            _check_map(kind, changed["map"])
        updated = dict(options)
        for key in deleted_keys(params):
            updated.pop(key, None)
        updated.update(changed)
        config(ctx)[mapping_id] = updated
        return Result(None)

    def delete(ctx: Context, params: Params) -> Result:
        config(ctx).pop(text(params, "id"), None)  # PVE: no error for an unknown id
        return Result(None)

    return [
        api("GET", base, listing),
        api("POST", base, create),
        api("GET", base + "/{id}", read),
        api("PUT", base + "/{id}", update),
        api("DELETE", base + "/{id}", delete),
    ]


def _index(ctx: Context, params: Params) -> Result:
    return Result([{"name": kind} for kind in ("dir", *KINDS)])


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/mapping", _index),
    *(route for kind in KINDS for route in _routes(kind)),
)
