"""The toolset tool: which toolsets exist, and enabling one for the caller's session."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.registry import ToolInput, ToolOutput, tool
from pvemcp.gateway.toolsets import ToolsetEntry
from pvemcp.policy.tiers import Tier


class ToolsetArgs(ToolInput):
    toolset: Annotated[
        str | None, Field(max_length=64, description="Toolset to enable; omit to list them.")
    ] = None


class ToolsetInfo(ToolOutput):
    name: str
    description: str
    enabled: bool
    tools: list[str]


class Toolsets(ToolOutput):
    toolsets: list[ToolsetInfo]
    enabled: str | None = None
    """The toolset this call enabled, if any."""


def _info(entry: ToolsetEntry) -> ToolsetInfo:
    return ToolsetInfo(
        name=entry.name,
        description=entry.description,
        enabled=entry.enabled,
        tools=list(entry.tools),
    )


@tool(
    "proxmox_toolset_enable",
    title="List or enable toolsets",
    tier=Tier.READ,
    toolset="core",
    input=ToolsetArgs,
    output=Toolsets,
    examples=[{}, {"toolset": "tasks"}],
    rejects=[({"toolset": "nope"}, "invalid_argument")],
)
async def toolset_enable(ctx: ToolContext, args: ToolsetArgs) -> Toolsets:
    """Without toolset: each toolset, whether it is enabled, and its tools. With toolset:
    enable it for this session (tools/list then shows its tools; policy still decides each
    call)."""
    if ctx.toolsets is None:
        raise ToolFailure("internal_error", "this gateway serves no toolsets")
    if args.toolset is None:
        return Toolsets(toolsets=[_info(entry) for entry in ctx.toolsets.listing()])
    return Toolsets(toolsets=[_info(ctx.toolsets.enable(args.toolset))], enabled=args.toolset)


TOOLS = (toolset_enable,)
