"""Argument types shared by the tool modules, with PVE's own limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure

Vmid = Annotated[int, Field(ge=100, le=999_999_999, description="Guest id (VMID).")]
NodeName = Annotated[
    str,
    Field(
        pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$",
        description="Node name.",
    ),
]


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
        description="Task id (UPID) as returned by a tool that started a task.",
    ),
]
Timeout = Annotated[
    float,
    Field(gt=0, le=3600, description="Seconds to wait; default: the cluster's task_timeout."),
]


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


def tag_list(raw: Any) -> list[str] | None:
    """PVE's `tags` string (`a;b` or `a,b` or `a b`) as a sorted list; None when empty."""
    if not raw or not isinstance(raw, str):
        return None
    tags = sorted({t for t in raw.replace(",", ";").replace(" ", ";").split(";") if t})
    return tags or None
