"""Argument types shared by the tool modules, with PVE's own limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.proxmox.backend import Params
from pvemcp.proxmox.errors import MalformedAnswer

T = TypeVar("T")

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


class Answer(BaseModel):
    """The part of an API object a tool reads: the fields it uses, typed; others ignored.

    Validation is as lax as PVE is inconsistent (numbers sent as strings, 0/1 for
    booleans), and strict about shape: `read_as` turns anything else into
    `bad_upstream_answer` naming the path, so an odd answer never crashes a tool.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
"""An answer that must be a JSON object, of which the tool passes on every member."""

_SHOWN_ERRORS = 3


def _place(loc: tuple[int | str, ...]) -> str:
    return "data" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def answer_as(adapter: TypeAdapter[T], data: Any, *, method: str, path: str) -> T:
    """`data` as the adapter's type; a wrong shape is a `MalformedAnswer` naming the path
    and the first places that are wrong (never their values, which may be huge)."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        wrong = "; ".join(
            f"{_place(err['loc'])}: {err['msg']}" for err in exc.errors()[:_SHOWN_ERRORS]
        )
        more = exc.error_count() - _SHOWN_ERRORS
        raise MalformedAnswer(
            f"Proxmox's answer to {method} {path} is not what the API documents: {wrong}"
            + (f" (and {more} more)" if more > 0 else ""),
            method=method,
            path=path,
        ) from None


async def read_as(
    ctx: ToolContext, adapter: TypeAdapter[T], path: str, params: Params | None = None
) -> T:
    """`GET path`'s data, validated as the adapter's type (see `answer_as`)."""
    return answer_as(adapter, await ctx.get(path, params), method="GET", path=path)


async def start_task(ctx: ToolContext, path: str, params: Params | None = None) -> str:
    """`POST path`, which must answer with the UPID of the task it started.

    Any other answer is `bad_upstream_answer` saying the action may have run: the
    request reached the node, so a retry could do it twice.
    """
    data = await ctx.post(path, params)
    # The context records every UPID (strictly parsed) a write answered with.
    if not isinstance(data, str) or data not in ctx.upids:
        raise MalformedAnswer(
            f"Proxmox answered POST {path} without a task id (UPID): the answer's data is "
            f"{type(data).__name__ if data is not None else 'null'}",
            method="POST",
            path=path,
        )
    return data
