"""Toolsets: config chooses the enabled ones, a session enables more, modules load lazily."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ToolsListChanged
from mcp.types import ToolListChangedNotification
from pydantic import ValidationError

from pvemcp.config import Settings, ToolsConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.registry import AnySpec, Toolset
from pvemcp.gateway.toolsets import Catalogue
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import TOOLSET_NAMES, TOOLSETS, catalogue, tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, operator_policy, read_audit
from tests.transports.test_http_app import KEYS, bearer, served

pytestmark = pytest.mark.anyio

LOCAL = Principal.local()


def _gateway(sim: SimulatorHandle, audit: Path, tools: Catalogue) -> Gateway:
    return Gateway(
        tools=tools,
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=operator_policy(),
        audit=AuditLog(audit),
        redactor=Redactor(),
    )


@pytest.fixture
async def core_only(sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Gateway]:
    gateway = _gateway(sim, audit_path, catalogue(ToolsConfig(toolsets=["core"]).toolsets))
    try:
        yield gateway
    finally:
        await gateway.aclose()


def test_config_names_the_valid_toolsets() -> None:
    with pytest.raises(ValidationError) as caught:
        ToolsConfig(toolsets=["core", "snapshot"])
    message = str(caught.value)
    assert "unknown toolset 'snapshot'" in message
    assert all(name in message for name in TOOLSET_NAMES)
    assert ToolsConfig(toolsets=["all"]).toolsets == list(TOOLSET_NAMES)
    assert ToolsConfig(toolsets=["tasks"]).toolsets == ["core", "tasks"], "core is always on"
    assert Settings(tools={"toolsets": ["guests"]}).tools.toolsets == ["core", "guests"]


async def _names(client: Client) -> list[str]:
    return [tool.name for tool in (await client.list_tools()).tools]


async def test_tools_list_shows_only_enabled_toolsets(core_only: Gateway) -> None:
    core = [spec.name for spec in TOOLSETS[0].load()]
    async with Client(build_mcp_server(core_only, local_principal), mode="legacy") as client:
        assert await _names(client) == core


async def test_a_tool_of_a_disabled_toolset_is_refused_and_audited(
    core_only: Gateway, audit_path: Path
) -> None:
    result = await core_only.invoke(LOCAL, "proxmox_guest_list", {})
    assert result.error is not None
    assert result.error["code"] == "toolset_disabled"
    assert "'guests'" in result.error["message"]
    assert "proxmox_toolset_enable" in result.error["hint"]
    record = read_audit(audit_path)[-1]
    assert record["what"]["tool"] == "proxmox_guest_list"
    assert record["outcome"]["status"] == "rejected"
    assert record["outcome"]["error"] == "toolset_disabled"


async def test_enabling_a_toolset_lists_it_and_notifies_the_session(core_only: Gateway) -> None:
    notified = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            notified.set()

    server = build_mcp_server(core_only, local_principal)
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        capabilities = client.server_capabilities
        assert capabilities.tools is not None
        assert capabilities.tools.list_changed is True
        listing = await client.call_tool("proxmox_toolset_enable", {})
        assert not listing.is_error
        toolsets = {t["name"]: t for t in listing.structured_content["toolsets"]}
        assert list(toolsets) == list(TOOLSET_NAMES)
        assert toolsets["core"]["enabled"] is True
        assert toolsets["guests"]["enabled"] is False
        assert "proxmox_guest_power" in toolsets["guests"]["tools"]
        assert toolsets["escape"]["tools"] == [], "the operator profile grants no escape tool"
        assert not notified.is_set()

        enabled = await client.call_tool("proxmox_toolset_enable", {"toolset": "guests"})
        assert not enabled.is_error, enabled.content
        assert enabled.structured_content["enabled"] == "guests"
        with anyio.fail_after(5):
            await notified.wait()
        names = await _names(client)
        assert "proxmox_guest_list" in names
        assert not (await client.call_tool("proxmox_guest_list", {})).is_error


async def test_modern_clients_hear_of_it_on_their_listen_stream(core_only: Gateway) -> None:
    server = build_mcp_server(core_only, local_principal)
    async with Client(server, mode="2026-07-28") as client:
        async with client.listen(tools_list_changed=True) as subscription:
            result = await client.call_tool("proxmox_toolset_enable", {"toolset": "tasks"})
            assert not result.is_error
            with anyio.fail_after(5):
                event = await subscription.__anext__()
            assert isinstance(event, ToolsListChanged)
        assert "proxmox_task_log" in await _names(client)


async def test_refusals_name_the_field_or_the_policy(core_only: Gateway) -> None:
    unknown = await core_only.invoke(LOCAL, "proxmox_toolset_enable", {"toolset": "snapshot"})
    assert unknown.error is not None
    assert unknown.error["code"] == "invalid_argument"
    assert unknown.error["field"] == "toolset"
    assert "guests" in unknown.error["hint"]
    escape = await core_only.invoke(LOCAL, "proxmox_toolset_enable", {"toolset": "escape"})
    assert escape.error is not None
    assert escape.error["code"] == "toolset_not_allowed"
    assert "escape" not in core_only.catalogue.enabled_for(LOCAL)


async def test_a_toolset_enabled_in_one_session_stays_in_it(core_only: Gateway) -> None:
    first = Principal(subject="alice", transport="http", session="s1")
    other_session = Principal(subject="alice", transport="http", session="s2")
    other_caller = Principal(subject="bob", transport="http", session="s1")
    # Remote callers get reads only by default: the read tools of `tasks` are allowed.
    assert (await core_only.invoke(first, "proxmox_toolset_enable", {"toolset": "tasks"})).ok
    assert "tasks" in core_only.catalogue.enabled_for(first)
    assert "tasks" not in core_only.catalogue.enabled_for(other_session)
    assert "tasks" not in core_only.catalogue.enabled_for(other_caller)
    visible = {spec.name for spec in core_only.visible_specs(first)}
    assert "proxmox_task_log" in visible


def _counting(loads: list[str]) -> Catalogue:
    def wrap(toolset: Toolset) -> Callable[[], Sequence[AnySpec]]:
        def load() -> Sequence[AnySpec]:
            loads.append(toolset.name)
            return toolset.load()

        return load

    return Catalogue(
        [Toolset(t.name, t.description, wrap(t)) for t in TOOLSETS], enabled=["core", "tasks"]
    )


async def test_toolsets_load_on_first_need_only(sim: SimulatorHandle, audit_path: Path) -> None:
    loads: list[str] = []
    gateway = _gateway(sim, audit_path, _counting(loads))
    try:
        server = build_mcp_server(gateway, local_principal)
        assert loads == [], "building the gateway and its server loads no toolset"
        async with Client(server, mode="legacy") as client:
            await client.list_tools()
            assert loads == ["core", "tasks"]
            await client.call_tool("proxmox_task_log", {"upid": "UPID:nope"})
            assert loads == ["core", "tasks"], "each toolset loads once"
    finally:
        await gateway.aclose()


async def test_tools_list_builds_the_schemas_of_the_listed_tools_only(
    sim: SimulatorHandle, audit_path: Path
) -> None:
    """A loaded toolset's tools that policy hides from the caller are not listed, so their
    schemas are not built (pydantic's work at every stdio client's first tools/list)."""
    gateway = _gateway(sim, audit_path, catalogue())
    try:
        async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
            listed = {tool.name for tool in (await client.list_tools()).tools}
        loaded = {spec.name for spec in gateway.catalogue.loaded()}
        assert listed < loaded, "the default toolsets hold tools policy hides (escape)"
        assert set(gateway._tools) == listed  # the schemas built: the listed tools' only
    finally:
        await gateway.aclose()


async def test_escape_enabled_shows_only_what_policy_grants(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """With a policy that names the local operator for an escape tool, enabling `escape`
    works and shows exactly the granted tool."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[rules]]\nid = "cli"\neffect = "allow"\nsubjects = ["local"]\n'
        f"tools = {json.dumps(['proxmox_cli_run'])}\n"
    )
    gateway = Gateway(
        tools=catalogue(["core"]),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=policy, known_tools=tier_map()
        ),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor(),
    )
    try:
        result = await gateway.invoke(LOCAL, "proxmox_toolset_enable", {"toolset": "escape"})
        assert result.data is not None
        assert result.data["toolsets"][0]["tools"] == ["proxmox_cli_run"]
        visible = {spec.name for spec in gateway.visible_specs(LOCAL)}
        assert "proxmox_cli_run" in visible
        assert "proxmox_shell_run" not in visible
    finally:
        await gateway.aclose()


async def test_the_server_serves_the_configured_toolsets(tmp_path: Path) -> None:
    settings = Settings(tools={"toolsets": ["tasks"]}, audit={"path": tmp_path / "a.jsonl"})
    async with open_gateway(settings, Redactor(), simulate=True) as gateway:
        assert gateway.catalogue.default == {"core", "tasks"}
        names = {spec.name for spec in gateway.visible_specs(LOCAL)}
        assert "proxmox_task_log" in names
        assert "proxmox_guest_list" not in names


async def test_over_http_a_toolset_is_enabled_for_one_session(core_only: Gateway) -> None:
    """Two handshake-era sessions of one caller: the one that enables `tasks` hears of it
    on its stream and lists the tools; the other does not."""
    notified = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            notified.set()

    async with (
        served(core_only) as app,
        httpx2.AsyncClient(headers=bearer(KEYS[0])) as first_http,
        httpx2.AsyncClient(headers=bearer(KEYS[0])) as second_http,
        Client(
            streamable_http_client(app.url, http_client=first_http),
            mode="legacy",
            message_handler=on_message,
        ) as first,
        Client(streamable_http_client(app.url, http_client=second_http), mode="legacy") as second,
    ):
        assert "proxmox_task_log" not in await _names(first)
        result = await first.call_tool("proxmox_toolset_enable", {"toolset": "tasks"})
        assert not result.is_error, result.content
        with anyio.fail_after(5):
            await notified.wait()
        assert "proxmox_task_log" in await _names(first)
        assert "proxmox_task_log" not in await _names(second)
        refused = await second.call_tool("proxmox_task_log", {"upid": "UPID:x"})
        assert refused.is_error
        assert json.loads(refused.content[0].text)["error"]["code"] == "toolset_disabled"  # type: ignore[union-attr]
