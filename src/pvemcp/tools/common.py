"""Argument types and units shared by the tool modules, with PVE's own limits.

Tool modules import these (through `tools/kit.py`) rather than from each other, so a
domain module never depends on a sibling.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, TypeAdapter, model_validator

from pvemcp.gateway.answers import Answer, read_as
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import Change
from pvemcp.gateway.registry import ToolInput, ToolOutput, WriteInput

MIB = 1024 * 1024
GIB = 1024 * MIB

Vmid = Annotated[int, Field(ge=100, le=999_999_999, description="Guest id (VMID).")]
NodeName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")]


def matching(pattern: str, what: str) -> AfterValidator:
    """A string check kept out of the schema: a pattern costs its bytes in every
    tools/list, while the error message (naming the field) says the rule when it matters.
    An optional field's `null` passes (it means unset), as its type already allows."""
    compiled = re.compile(pattern)

    def check(value: str | None) -> str | None:
        if value is not None and not compiled.fullmatch(value):
            raise ValueError(f"is not {what}")
        return value

    return AfterValidator(check)


StorageId = Annotated[str, matching(r"[a-zA-Z][\w.-]*[a-zA-Z0-9]", "a storage id")]
"""A storage's id (PVE's pve-storage-id format), checked in code, not in the schema."""


def _printable(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters")
    return value


GuestName = Annotated[
    str,
    AfterValidator(_printable),
    Field(min_length=1, max_length=128, description="Exact guest name."),
]
GuestType = Literal["qemu", "lxc"]
Upid = Annotated[
    str,
    Field(
        pattern=r"^UPID:[a-zA-Z0-9-]+:[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8}:[^:\s]+:[^:\s]*:[^:\s]+:$",
        max_length=256,
        description="As the tool that started the task returned it.",
    ),
]
Timeout = Annotated[
    float,
    Field(gt=0, le=3600, description="Seconds to wait; default: the cluster's task_timeout."),
]


class Empty(ToolInput):
    """The arguments of a tool that takes none (besides `cluster`)."""


class GuestRef(ToolInput):
    """A guest named by vmid or by name (exactly one)."""

    advertised_bare: ClassVar[tuple[str, ...]] = ("vmid", "name")

    vmid: Vmid | None = None
    name: GuestName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.vmid is None) == (self.name is None):
            raise ValueError("give exactly one of vmid or name")
        return self


class WaitInput(WriteInput):
    """Base of a write that starts a Proxmox task: whether to wait, and for how long (the
    default runner reads both, see `pvemcp.gateway.run.Waits`)."""

    advertised_bare: ClassVar[tuple[str, ...]] = ("wait", "timeout")

    wait: Annotated[bool, Field(description="Wait for the task to finish, reporting progress.")] = (
        True
    )
    timeout: Timeout | None = None


def cluster_default(value: str | None, default: str | None, field: str, what: str) -> str:
    """`value`, else the cluster's `default_<field>`; with neither, `<field>_required`
    naming the field, `what` saying which kind to pass."""
    chosen = value or default
    if chosen is None:
        raise ToolFailure(
            f"{field}_required",
            f"no {field} given and the cluster has no default_{field}",
            field=field,
            hint=f"Pass {field} ({what}).",
        )
    return chosen


def node_or_default(ctx: ToolContext, node: str | None) -> str:
    """The node a call targets: the argument, else the cluster's configured default."""
    chosen = node or ctx.cluster.default_node
    if chosen is None:
        raise ToolFailure(
            "node_required",
            "this call needs a node and the cluster has no default_node",
            field="node",
            hint="Pass node (proxmox_node_list lists them).",
        )
    return chosen


class _NodeRow(Answer):
    node: str
    status: str | None = None


_NODE_ROWS = TypeAdapter(list[_NodeRow])


async def node_statuses(ctx: ToolContext) -> dict[str, str | None]:
    """Each cluster node's status (`online`, `offline`, None when PVE sent none) by name,
    in PVE's order: the one read of GET /nodes the tools that check a named node share."""
    return {row.node: row.status for row in await read_as(ctx, _NODE_ROWS, "/nodes")}


# The answer of a write whose plan holds every call it sends: the plan's own diff. No
# docstring, on purpose: it would be in the output schema of every tool answering it.
class Applied(ToolOutput):
    summary: str
    changes: list[Change]
    warnings: list[str] | None = None


async def apply_plan(ctx: ToolContext, _args: WriteInput) -> Applied:
    """Send the confirmed plan's calls in order; the result is the plan's diff. The handler
    (or its last step) of such a write: access pools and ACLs, HA, replication, mappings."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    for call in plan.calls:
        await ctx.call(call.method, call.path, call.params or None)
    return Applied(summary=plan.summary, changes=plan.changes, warnings=plan.warnings or None)


_DISK_KEY = {
    "qemu": re.compile(r"(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0"),
    "lxc": re.compile(r"rootfs|mp\d+"),
}
_SIZE_OPTION = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)")


def size_option(value: str) -> int:
    """The bytes a drive value's `size=` option says (`size=32G`), 0 without one."""
    found = _SIZE_OPTION.search(value)
    if found is None:
        return 0
    return int(float(found.group(1)) * 1024 ** " KMGT".index(found.group(2) or " "))


def guest_disks(kind: str, config: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(key, volid, bytes) of a guest config's volumes: its disks and mount points, not
    CD-ROMs, `unusedN` or bind mounts (what PVE's clone and vzdump take along)."""
    found = []
    for key, value in sorted(config.items()):
        text = str(value)
        if not _DISK_KEY[kind].fullmatch(key) or "media=cdrom" in text.split(","):
            continue
        volid = text.split(",", 1)[0].removeprefix("volume=")
        if ":" in volid and not volid.startswith("/"):
            found.append((key, volid, size_option(text)))
    return found


def as_int(value: Any) -> int | None:
    """PVE sends numbers as numbers or strings depending on the endpoint; normalise."""
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pct(value: Any) -> float | None:
    """PVE's 0..1 load fraction as a percentage with one decimal."""
    number = as_float(value)
    return None if number is None else round(number * 100, 1)


def mib(value: Any) -> int | None:
    number = as_int(value)
    return None if number is None else number // MIB


def utc_time(epoch: Any) -> str | None:
    """An epoch in seconds as ISO 8601 UTC text, the one way tool answers show a time;
    None when PVE gave no number."""
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def gib(value: Any) -> float | None:
    number = as_int(value)
    return None if number is None else round(number / GIB, 1)
