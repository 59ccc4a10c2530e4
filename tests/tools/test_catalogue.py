"""Contract tests over every tool of the registry, and the reviewable catalogue golden file.

Adding a tool adds no test function here: each check runs over `all_tools()`. The golden
file (one line per tool: name | toolset | tier | input fields | input and output schema
bytes) is the deliberate second declaration of each tool's tier and surface: a change shows
as a diff to review, and is accepted with `pytest --update-golden`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from pvemcp.config import ToolsConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.registry import AnySpec, WriteInput
from pvemcp.gateway.schema import SHARED_FIELDS, bare_fields
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.policy.tiers import Tier
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import TOOLSETS, all_tools, catalogue, tier_map
from pvemcp.transports.mcp_app import INSTRUCTIONS, annotations_for, build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).with_name("catalogue.golden")
NAME = re.compile(r"^proxmox_[a-z]+(_[a-z]+)+$")
VALIDATION_ONLY = {"pattern", "maxLength", "minLength", "maxItems", "minItems"}
BUDGET_BYTES = 33_000
"""The most the default tools/list may cost (compact JSON): about 8k tokens of context."""

TOOLS = all_tools()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _walk(node: Any) -> list[dict[str, Any]]:
    """Every schema object in `node`, nested ones included."""
    if isinstance(node, list):
        return [found for item in node for found in _walk(item)]
    if not isinstance(node, dict):
        return []
    return [node, *(found for value in node.values() for found in _walk(value))]


@pytest.fixture
async def full(sim: SimulatorHandle, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway serving every toolset, for the schemas as clients get them."""
    gateway = Gateway(
        tools=catalogue(),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=None, known_tools=tier_map()
        ),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor(),
    )
    try:
        yield gateway
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("spec", TOOLS, ids=lambda s: s.name)
def test_declaration(spec: AnySpec) -> None:
    assert NAME.match(spec.name), "tool names are proxmox_<domain>_<verb>"
    assert spec.title
    assert 0 < len(spec.description.encode()) < 400, "descriptions stay under 400 bytes"
    assert spec.toolset in {toolset.name for toolset in TOOLSETS}
    risky = spec.tier is not Tier.READ
    assert (spec.planner is not None) is risky, "a planner exactly above read"
    assert issubclass(spec.input_model, WriteInput) is risky, "WriteInput exactly above read"
    assert spec.output_model.model_fields, "an output model with fields"


HINT_DEFAULTS = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}
"""MCP's ToolAnnotations defaults: what a client reads for a hint that is not sent."""


@pytest.mark.parametrize("spec", TOOLS, ids=lambda s: s.name)
def test_hints_follow_the_tier(spec: AnySpec) -> None:
    """Read with MCP's defaults, the hints say the tier; only non-defaults are sent, and
    `destructiveHint` always on a tool that changes something (a client may ask the user
    only when it reads it true)."""
    sent = annotations_for(spec).model_dump(by_alias=True, exclude_none=True)
    hints = {**HINT_DEFAULTS, **sent}
    read = spec.tier is Tier.READ
    assert hints["readOnlyHint"] is read
    assert hints["openWorldHint"] is False
    if read:
        assert sent == {"readOnlyHint": True, "openWorldHint": False}, "meaningless ones left out"
        return
    assert sent["destructiveHint"] is (spec.tier in (Tier.DESTRUCTIVE, Tier.ESCAPE))
    assert hints["idempotentHint"] is spec.idempotent
    assert all(HINT_DEFAULTS[k] != v for k, v in sent.items() if k != "destructiveHint")


def test_each_toolset_loads_exactly_its_tools() -> None:
    for toolset in TOOLSETS:
        specs = toolset.load()
        assert specs, f"toolset {toolset.name} has no tools: declare it once it has"
        assert {spec.toolset for spec in specs} == {toolset.name}
    assert len({spec.name for spec in TOOLS}) == len(TOOLS)


@pytest.mark.parametrize("spec", TOOLS, ids=lambda s: s.name)
async def test_schemas_are_compact(full: Gateway, spec: AnySpec) -> None:
    for schema in (full.input_schema(spec.name), full.output_schema(spec.name)):
        assert schema["type"] == "object"
        for node in _walk(schema):
            assert not isinstance(node.get("title"), str), "no titles"
            assert node.get("additionalProperties") is not False
            assert {"type": "null"} not in node.get("anyOf", []), "no null branches"
    properties = full.input_schema(spec.name)["properties"]
    assert set(SHARED_FIELDS) & set(properties) <= bare_fields(spec.input_model)
    for name in bare_fields(spec.input_model) & set(properties):
        assert list(properties[name]) == ["type"], f"{name} is advertised bare"
    assert full.output_schema(spec.name).get("properties"), "an output schema"
    for node in _walk(full.input_schema(spec.name)):
        assert not VALIDATION_ONLY & set(node), "only validation reads these"
        assert node.get("default") is not False, "an unset flag is false anyway"
    for node in _walk(full.output_schema(spec.name)):
        assert not {"required", "default"} & set(node), "a result carries its values"
        assert "description" not in node or "properties" not in node, "no model docstrings"
    for schema in (full.input_schema(spec.name), full.output_schema(spec.name)):
        text = _compact(schema)
        for name in schema.get("$defs", {}):
            assert text.count(f'"#/$defs/{name}"') > 1, "a model used once is written in place"


@pytest.mark.parametrize("spec", TOOLS, ids=lambda s: s.name)
async def test_fields_left_out_of_an_output_schema_are_explained_once(
    full: Gateway, spec: AnySpec
) -> None:
    """A result's `unadvertised` fields (the shared write outcome's) are still answered,
    so the server instructions must say what they are."""
    hidden = getattr(spec.output_model, "unadvertised", ())
    assert set(hidden) <= set(spec.output_model.model_fields)
    assert not set(hidden) & set(full.output_schema(spec.name)["properties"])
    for name in hidden:
        assert re.search(rf"\b{name}\b", INSTRUCTIONS), f"the instructions explain {name}"


async def test_a_constraint_not_advertised_is_named_when_broken(full: Gateway) -> None:
    """A tag's pattern and length are left out of tools/list, yet a tag that breaks one is
    refused naming the field and the constraint, before anything is sent."""
    tag = full.input_schema("proxmox_guest_list")["properties"]["tag"]
    assert tag == {"type": "string"}
    result = await full.invoke(local_principal(None), "proxmox_guest_list", {"tag": "a b"})
    assert result.error is not None and result.error["code"] == "invalid_argument"
    assert result.error["field"] == "tag" and "matching" in result.error["hint"], result.error


def _golden_line(gateway: Gateway, spec: AnySpec) -> str:
    schema = gateway.input_schema(spec.name)
    required = set(schema.get("required", []))
    fields = ",".join(
        f"{name}*" if name in required else name
        for name in schema.get("properties", {})
        if name not in SHARED_FIELDS
    )
    return " | ".join(
        (
            spec.name,
            spec.toolset,
            str(spec.tier),
            fields or "-",
            f"in {len(_compact(schema).encode())} B",
            f"out {len(_compact(gateway.output_schema(spec.name)).encode())} B",
        )
    )


async def test_catalogue_golden(full: Gateway, request: pytest.FixtureRequest) -> None:
    """Each tool's toolset, tier, arguments (* = required; the shared cluster, dry_run and
    confirm_token left out) and schema sizes, as reviewed."""
    text = (
        "# name | toolset | tier | input fields | input schema | output schema\n"
        + "\n".join(_golden_line(full, spec) for spec in TOOLS)
        + "\n"
    )
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, "the catalogue changed: review, then --update-golden"


async def test_default_tools_list_fits_the_budget(sim: SimulatorHandle, tmp_path: Path) -> None:
    """The default toolsets, every tool of them visible (escape granted too), as the SDK
    client receives tools/list, in compact JSON."""
    escape = [spec.name for spec in TOOLS if spec.tier is Tier.ESCAPE]
    policy = tmp_path / "all.toml"
    policy.write_text(
        f'[[rules]]\nid = "all"\neffect = "allow"\nsubjects = ["local"]\n'
        f"tools = {json.dumps(escape)}\n"
    )
    gateway = Gateway(
        tools=catalogue(ToolsConfig().toolsets),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=load_policy(
            profile="operator", profile_subjects=["local"], file=policy, known_tools=tier_map()
        ),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor(),
    )
    try:
        async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
            tools = (await client.list_tools()).tools
    finally:
        await gateway.aclose()
    wire = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    assert {t["name"] for t in wire} == {spec.name for spec in gateway.specs()}
    size = len(_compact(wire).encode())
    assert size <= BUDGET_BYTES, f"default tools/list is {size} bytes"
