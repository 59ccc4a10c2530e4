"""The MCP face of the gateway: an SDK `MCPServer` whose every tool is a door into `invoke`.

The SDK's own tool machinery would validate arguments against a lax signature model and
format errors its way; `GatewayTool.run` instead hands the raw arguments straight to the
gateway, which validates strictly, decides, audits and shapes. The SDK still does the
protocol: sessions, progress notifications, eras, transports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.types import (
    CallToolResult,
    GetPromptResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel, ConfigDict, Field

from pvemcp import __version__
from pvemcp.gateway.artifacts import URI_PREFIX
from pvemcp.gateway.invoke import Gateway, ToolResult, shown_tool_name
from pvemcp.gateway.plan import Plan
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.principal import Principal

PrincipalResolver = Callable[[ServerRequestContext[Any, Any] | None], Principal]
CallObserver = Callable[[str, ToolResult, float], None]
"""Told of every finished tool call (tool, result, seconds): the hook `/metrics` counts with."""

INSTRUCTIONS = (
    "pvemcp operates Proxmox VE clusters. Every call is checked by the gateway's policy and "
    "recorded in its audit log. Look before acting: proxmox_cluster_status, "
    "proxmox_guest_list. Power actions return a task upid; proxmox_task_log shows why a task "
    "failed. Errors carry a code, a message and a hint on what to do next."
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def annotations_for(spec: AnySpec) -> ToolAnnotations:
    """Client hints derived from the declared tier, so they can never disagree with it."""
    # The title travels once, as the tool's own `title` (clients prefer it to the hint's).
    return ToolAnnotations(
        read_only_hint=spec.read_only,
        destructive_hint=spec.destructive,
        idempotent_hint=spec.idempotent,
        open_world_hint=False,
    )


class Approval(BaseModel):
    """What the user answers when a risky call needs confirmation."""

    approve: bool = Field(description="Run it?")


async def ask_user(context: Context[Any, Any], tool: str, plan: Plan) -> bool | None:
    """Ask the human through MCP elicitation; None when this client cannot be asked, so the
    gateway falls back to the two-step token. Only an explicit accept with approve=true runs
    the call."""
    capabilities = context.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return None
    try:
        answer = await context.elicit(f"pvemcp asks to run {tool}:\n{plan.describe()}", Approval)
    except NoBackChannelError:
        return None
    if isinstance(answer, AcceptedElicitation):
        return answer.data.approve
    return False


class GatewayTool(Tool):
    """An SDK tool that runs nothing itself: it forwards to `Gateway.invoke`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    gateway: Gateway = Field(exclude=True)
    principal_of: PrincipalResolver = Field(exclude=True)
    observer: CallObserver | None = Field(default=None, exclude=True)

    @classmethod
    def for_spec(
        cls,
        spec: AnySpec,
        gateway: Gateway,
        principal_of: PrincipalResolver,
        observer: CallObserver | None = None,
    ) -> GatewayTool:
        async def unused() -> None:  # the SDK wants a callable; run() never calls it
            raise NotImplementedError

        return cls(
            fn=unused,
            name=spec.name,
            title=spec.title,
            description=spec.description,
            parameters=gateway.input_schema(spec.name),
            fn_metadata=FuncMetadata(
                arg_model=ArgModelBase, output_schema=gateway.output_schema(spec.name)
            ),
            is_async=True,
            annotations=annotations_for(spec),
            gateway=gateway,
            principal_of=principal_of,
            observer=observer,
        )

    async def run(
        self,
        arguments: dict[str, Any],
        context: Context[Any, Any],
        convert_result: bool = False,
    ) -> CallToolResult:
        return await forward(
            self.gateway,
            self.principal_of,
            self.observer,
            name=self.name,
            arguments=arguments,
            context=context,
        )


async def forward(
    gateway: Gateway,
    principal_of: PrincipalResolver,
    observer: CallObserver | None,
    *,
    name: str,
    arguments: dict[str, Any],
    context: Context[Any, Any],
    counted_as: str | None = None,
) -> CallToolResult:
    """Run one tools/call through `Gateway.invoke` and shape its answer for the SDK.

    `counted_as` is the tool label the observer gets instead of `name` (an unknown name is
    the caller's text, and a metric label per name would let callers grow /metrics).
    """
    started = time.perf_counter()
    principal = principal_of(context.request_context)

    async def progress(done: float, total: float | None, message: str | None) -> None:
        await context.report_progress(done, total, message)

    result = await gateway.invoke(
        principal,
        name,
        arguments,
        progress=progress,
        confirmer=lambda tool, plan: ask_user(context, tool, plan),
    )
    if observer is not None:
        observer(counted_as or name, result, time.perf_counter() - started)
    if result.ok:
        return CallToolResult(
            content=[TextContent(type="text", text=_dumps(result.data))],
            structured_content=result.data,
        )
    return CallToolResult(
        content=[TextContent(type="text", text=_dumps({"error": result.error}))],
        is_error=True,
    )


UNKNOWN_TOOL_LABEL = "(unknown)"
"""The observer's (and so /metrics') tool label for calls of a name no tool has."""


class GatewayServer(MCPServer[Any]):
    """The SDK server, except that a call of a name it has no tool for goes to the gateway.

    The SDK would answer such a call itself ("Unknown tool: X") and the gateway would never
    know: no audit record of someone probing for tools. Here the gateway refuses it like any
    other refusal (`unknown_tool`, recorded with the caller and the name, capped), and the
    client gets the same structured error as from every other refusal. This relies on the
    SDK's tools/call handler going through the public `call_tool` (mcp is pinned);
    tests/e2e/test_audit_unknown_tool.py fails if it ever stops doing so.
    """

    def __init__(
        self,
        gateway: Gateway,
        principal_of: PrincipalResolver,
        observer: CallObserver | None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self._gateway = gateway
        self._principal_of = principal_of
        self._observer = observer
        self._tool_names = frozenset(spec.name for spec in gateway.specs())

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any] | None = None,
    ) -> CallToolResult | InputRequiredResult:
        if name in self._tool_names or context is None:
            return await super().call_tool(name, arguments, context)
        return await forward(
            self._gateway,
            self._principal_of,
            self._observer,
            name=name,
            arguments=arguments,
            context=context,
            counted_as=UNKNOWN_TOOL_LABEL,
        )

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        context: Context[Any, Any] | None = None,
    ) -> GetPromptResult | InputRequiredResult:
        """pvemcp has no prompts, so every prompts/get names an unknown one: invalid params
        (-32602), as MCP specifies. The SDK's own answer is code 0 in the handshake era and,
        in the 2026-07-28 era, an internal error (-32603) with a traceback in the log."""
        raise MCPError(INVALID_PARAMS, f"Unknown prompt: {shown_tool_name(name)}")


def build_mcp_server(
    gateway: Gateway,
    principal_of: PrincipalResolver,
    *,
    observer: CallObserver | None = None,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
) -> MCPServer[Any]:
    """One MCP server over one gateway; transports (stdio, HTTP, in-memory) share it.

    `token_verifier` and `auth` (together) make its streamable-HTTP app a bearer-token
    resource server; stdio ignores them.
    """
    tools = [
        GatewayTool.for_spec(spec, gateway, principal_of, observer) for spec in gateway.specs()
    ]

    async def filter_tools(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """tools/list shows a caller only the tools policy could allow it."""
        out = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(out, dict):
            visible = {spec.name for spec in gateway.visible_specs(principal_of(ctx))}
            out = {**out, "tools": [t for t in out.get("tools", []) if t.get("name") in visible]}
        return out

    server = GatewayServer(
        gateway,
        principal_of,
        observer,
        name="pvemcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=list(tools),
        middleware=[filter_tools],
        token_verifier=token_verifier,
        auth=auth,
    )

    @server.resource(
        URI_PREFIX + "{artifact_id}",
        name="artifact",
        title="Command output kept beyond the inline cap",
        mime_type="application/octet-stream",
        description="The whole output of a command or file an escape tool cut at its "
        "inline cap; readable only by the caller that ran it, until it expires.",
    )
    async def artifact(artifact_id: str, ctx: Context[Any, Any]) -> bytes:
        found = gateway.artifacts.get(principal_of(ctx.request_context), artifact_id)
        if found is None:
            # The same answer for another caller's artifact as for none: ids cannot be probed.
            raise ResourceNotFoundError(f"no artifact {artifact_id!r} (unknown or expired)")
        return found.data

    return server
