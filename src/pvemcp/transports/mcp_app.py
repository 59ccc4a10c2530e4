"""The MCP face of the gateway: an SDK `MCPServer` whose every tool call is a door into
`invoke`.

The SDK's own tool machinery would validate arguments against a lax signature model and
format errors its way; `GatewayServer.call_tool` instead hands the raw arguments straight
to the gateway, which validates strictly, decides, audits and shapes. tools/list is built
from the gateway's catalogue per caller (its enabled toolsets that policy could allow).
The SDK still does the protocol: sessions, progress notifications, eras, transports.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server import NotificationOptions
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.types import (
    CallToolResult,
    GetPromptResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from mcp_types import INVALID_PARAMS
from mcp_types import Tool as MCPTool
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from pvemcp import __version__
from pvemcp.gateway.artifacts import URI_PREFIX
from pvemcp.gateway.confirm import ApprovalStates
from pvemcp.gateway.invoke import Gateway, ToolResult, shown_tool_name
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.principal import Principal
from pvemcp.transports.confirmation import Asker, guard_request_state
from pvemcp.transports.mcp_tasks import TasksExtension, task_watch

PrincipalResolver = Callable[[ServerRequestContext[Any, Any] | None], Principal]
CallObserver = Callable[[str, ToolResult, float], None]
"""Told of every finished tool call (tool, result, seconds): the hook `/metrics` counts with."""

INSTRUCTIONS = (
    "pvemcp operates Proxmox VE clusters. Every call is checked by the gateway's policy and "
    "recorded in its audit log. Look before acting: proxmox_cluster_status, "
    "proxmox_guest_list. Errors carry a code, a message and a hint on what to do next. "
    "Arguments every tool shares: cluster = a configured cluster's name (omit for the "
    "default). Tools that change something also take dry_run (true: answer {dry_run, plan} "
    "with the plan's summary, changes, calls, target and warnings; change nothing) and "
    "confirm_token (from a confirmation_required answer, once the user "
    "approved the plan). A guest is named by vmid or by its exact name (one of the two). "
    "Tools that start a Proxmox task take wait (default true: return when the task ends, "
    "reporting progress) and timeout (seconds to wait; default the cluster's task_timeout), "
    "and answer vmid, node, type, upid, task_status (running until the task ends), "
    "exitstatus, guest_status (the guest's state after it: running, stopped...), note (read "
    "it: e.g. an HA request not yet applied) and seconds; a failed task is an error with its "
    "upid (proxmox_task_log shows why). Output cut at a tool's inline cap is readable as the "
    "resource its *artifact field names. "
    "Tools come in toolsets: proxmox_toolset_enable lists them and enables one for this "
    "session."
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_LISTING: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "pvemcp_listing", default=None
)
"""The names the current tools/list shows its caller (set by its middleware): the tools
loaded with a toolset that policy hides from this caller are not worth their schemas,
which pydantic builds at a stdio client's first tools/list (a sixth of the default
toolsets' tools for the local operator)."""


def annotations_for(spec: AnySpec) -> ToolAnnotations:
    """Client hints derived from the declared tier, so they can never disagree with it.

    Only what differs from MCP's defaults is sent (readOnly false, destructive true,
    idempotent false, openWorld true), and a read-only tool's destructive and idempotent
    hints, which MCP says mean nothing then, are left out; `destructiveHint` is always sent
    for a tool that changes something, true included, because a client that asks the user
    only when it reads `destructiveHint: true` would otherwise never ask."""
    # The title travels once, as the tool's own `title` (clients prefer it to the hint's).
    if spec.read_only:
        return ToolAnnotations(read_only_hint=True, open_world_hint=False)
    return ToolAnnotations(
        destructive_hint=spec.destructive,
        idempotent_hint=True if spec.idempotent else None,
        open_world_hint=False,
    )


class SecretStored(BaseModel):
    """What the person answers when a secret is handed over."""

    stored: bool = Field(description="I have stored it safely (it cannot be shown again).")


class ElicitedSecrets:
    """Hands a secret to the person at the client through MCP elicitation: the client
    shows the message to its user, and no MCP message carries it to the model (a tool
    result, which the model reads, never holds it). A client without elicitation, or a
    request without a back channel (stateless HTTP), cannot be handed one."""

    def __init__(self, context: Context[Any, Any]) -> None:
        self._context = context

    @property
    def available(self) -> bool:
        # A 2026-07-28 request has no back channel for a pushed elicitation. Its
        # input-required flow (which confirmations use) is not used for a secret: the
        # question would be the tools/call's own answer, kept with the call by the client.
        if self._context.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return False
        capabilities = self._context.client_capabilities
        return capabilities is not None and capabilities.elicitation is not None

    async def hand_over(self, message: str, secret: str) -> bool:
        text = f"{message}\n\n{secret}\n\nStore it now: Proxmox never shows it again."
        try:
            answer = await self._context.elicit(text, SecretStored)
        except NoBackChannelError:
            return False
        return isinstance(answer, AcceptedElicitation) and answer.data.stored


async def forward(
    gateway: Gateway,
    principal_of: PrincipalResolver,
    observer: CallObserver | None,
    *,
    name: str,
    arguments: dict[str, Any],
    context: Context[Any, Any],
    states: ApprovalStates,
    counted_as: str | None = None,
) -> CallToolResult | InputRequiredResult:
    """Run one tools/call through `Gateway.invoke` and shape its answer for the SDK: the
    confirmation question instead, when the call asked a 2026-07-28 client one.

    `counted_as` is the tool label the observer gets instead of `name` (an unknown name is
    the caller's text, and a metric label per name would let callers grow /metrics).
    """
    started = time.perf_counter()
    principal = principal_of(context.request_context)
    toolsets = gateway.catalogue.enabled_for(principal)

    watch = task_watch()

    async def progress(done: float, total: float | None, message: str | None) -> None:
        if watch is not None and watch.follows(message):
            return  # the client holds this call as an MCP task: its status shows progress
        await context.report_progress(done, total, message)

    asker = Asker(context, states)
    result = await gateway.invoke(
        principal,
        name,
        arguments,
        progress=progress,
        confirmer=asker,
        secret_sink=ElicitedSecrets(context),
        on_task=None if watch is None else watch.started,
    )
    if observer is not None:
        observer(counted_as or name, result, time.perf_counter() - started)
    if gateway.catalogue.enabled_for(principal) != toolsets:
        await tools_changed(context)
    if asker.pending is not None and not result.ok:
        return asker.pending
    if result.ok:
        return CallToolResult(
            content=[TextContent(type="text", text=_dumps(result.data))],
            structured_content=result.data,
        )
    return CallToolResult(
        content=[TextContent(type="text", text=_dumps({"error": result.error}))],
        is_error=True,
    )


async def tools_changed(context: Context[Any, Any]) -> None:
    """Tell the client its tools/list changed (a toolset was enabled for its session).

    2026-07-28 clients get it on their `subscriptions/listen` streams, the only place that
    era allows it; the bus reaches every stream of this process, so another caller may
    refetch an unchanged list. Handshake-era clients get it on their session's stream;
    with none (stateless HTTP) it is dropped, and the client sees the tools on its next
    tools/list."""
    if context.request_context.protocol_version in MODERN_PROTOCOL_VERSIONS:
        await context.notify_tools_changed()
        return
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await context.session.send_tool_list_changed()


def mcp_tool(gateway: Gateway, spec: AnySpec) -> MCPTool:
    """A tool's MCP definition: compact schemas, hints from the tier."""
    return MCPTool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=gateway.input_schema(spec.name),
        output_schema=gateway.output_schema(spec.name),
        annotations=annotations_for(spec),
    )


UNKNOWN_TOOL_LABEL = "(unknown)"
"""The observer's (and so /metrics') tool label for calls of a name no tool has."""


class GatewayServer(MCPServer[Any]):
    """The SDK server, with its tools from the gateway's catalogue and every call to it.

    Every tools/call goes to the gateway, a name no tool has included: the SDK would answer
    that itself ("Unknown tool: X") and the gateway would never know, so no audit record of
    someone probing for tools. Here the gateway refuses it like any other refusal
    (`unknown_tool`, recorded with the caller and the name, capped), and the client gets
    the same structured error as from every other refusal. This relies on the SDK's
    tools/call and tools/list handlers going through the public `call_tool` and
    `list_tools` (mcp is pinned); tests/e2e/test_audit_unknown_tool.py and
    tests/tools/test_toolsets.py fail if they ever stop doing so.
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
        self._tools: dict[str, MCPTool] = {}
        # The approval states of input-required confirmations: their own key, their
        # single-use memory for this server's lifetime, the gateway's confirmation TTL.
        self._states = ApprovalStates(gateway.tokens.ttl)
        guard_request_state(self)
        # Handshake-era clients learn from the capability that tools/list can change (a
        # toolset enabled at run time); the SDK offers no setting for it. 2026-07-28
        # clients learn it from subscriptions/listen, which the SDK serves.
        lowlevel = self._lowlevel_server
        lowlevel.create_initialization_options = functools.partial(  # type: ignore[method-assign]
            type(lowlevel).create_initialization_options,
            lowlevel,
            NotificationOptions(tools_changed=True),
        )

    async def list_tools(self) -> list[MCPTool]:
        """Every tool loaded so far, or within a `tools/list` only those its middleware
        shows the caller (it loads the caller's toolsets before this runs)."""
        shown = _LISTING.get()
        tools: list[MCPTool] = []
        for spec in self._gateway.catalogue.loaded():
            if shown is not None and spec.name not in shown:
                continue
            if spec.name not in self._tools:
                self._tools[spec.name] = mcp_tool(self._gateway, spec)
            tools.append(self._tools[spec.name])
        return tools

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any] | None = None,
    ) -> CallToolResult | InputRequiredResult:
        if context is None:  # not a tools/call: the SDK always gives a request's context
            return await super().call_tool(name, arguments, context)
        known = self._gateway.catalogue.find(name) is not None
        return await forward(
            self._gateway,
            self._principal_of,
            self._observer,
            name=name,
            arguments=arguments,
            context=context,
            states=self._states,
            counted_as=None if known else UNKNOWN_TOOL_LABEL,
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

    async def filter_tools(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """tools/list shows a caller only the tools of its enabled toolsets that policy
        could allow it, in the catalogue's order."""
        if ctx.method != "tools/list":
            return await call_next(ctx)
        # First: this loads the caller's toolsets, which `list_tools` then shows.
        visible = [spec.name for spec in gateway.visible_specs(principal_of(ctx))]
        listing = _LISTING.set(frozenset(visible))
        try:
            out = await call_next(ctx)
        finally:
            _LISTING.reset(listing)
        if isinstance(out, dict):
            listed = {t.get("name"): t for t in out.get("tools", [])}
            out = {**out, "tools": [listed[name] for name in visible if name in listed]}
        return out

    tasks = TasksExtension(gateway, principal_of)  # long calls as MCP tasks (mcp_tasks.py)
    server = GatewayServer(
        gateway,
        principal_of,
        observer,
        name="pvemcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        middleware=[filter_tools],
        token_verifier=token_verifier,
        auth=auth,
        extensions=[tasks],
        lifespan=tasks.running,
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
