"""Reading PVE's answers through small typed models of the fields a reader uses.

The gateway's planners and runner read guests and their state, and so do the tools: they
share these helpers, so an odd answer is `bad_upstream_answer` naming the path wherever it
is read, never a crash.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from pvemcp.gateway.context import ToolContext
from pvemcp.proxmox.backend import Params
from pvemcp.proxmox.errors import MalformedAnswer

T = TypeVar("T")


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


def tag_list(raw: Any) -> list[str] | None:
    """PVE's `tags` string (`a;b` or `a,b` or `a b`) as a sorted list; None when empty."""
    if not raw or not isinstance(raw, str):
        return None
    tags = sorted({t for t in raw.replace(",", ";").replace(" ", ";").split(";") if t})
    return tags or None
