"""Fuzzing every tool from its advertised input schema, through the MCP SDK client.

Hypothesis makes arguments from the `inputSchema` each tool lists (what a model sees):
valid by that schema (biased towards the names and numbers the tools' own examples use, so
calls reach real guests, nodes and storages) and invalid (unknown fields, wrong types, a
required field left out, any JSON). Each is sent through the real SDK client to a gateway on
the simulator, under a policy that allows every tool but wants a confirmation for every
risky call, which the fuzzer never gives: nothing changes the cluster, while dry runs,
planners and reads run for real. Whatever the arguments, the answer must be a result or a
structured error: a code and a message, no traceback text, no `internal_error` (the
gateway's name for an exception it did not expect), within 10 s, and the SDK client must not
raise (a crash, an answer that does not fit the tool's output schema).

CI runs about `DEFAULT_EXAMPLES` calls in all; `PVEMCP_FUZZ_EXAMPLES=10000` (the nightly
setting) runs that many, with a random seed instead of the fixed one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import Tool

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for

DEFAULT_EXAMPLES = 500
EXAMPLES = int(os.environ.get("PVEMCP_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
"""Calls in all, shared evenly by the tools."""
CALL_LIMIT = 10.0
"""Seconds any call may take: more is a hang."""
TOOLS = all_tools()
PER_TOOL = max(2, EXAMPLES // len(TOOLS))

POLICY = """
version = 1

[[rules]]
id = "fuzz.escape"
effect = "allow"
subjects = ["local"]
tiers = ["escape"]
description = "list and plan every tool, escape ones included"

[[rules]]
id = "fuzz.confirm"
effect = "confirm"
subjects = ["local"]
tiers = ["write", "destructive", "escape"]
description = "every risky call waits for a confirmation the fuzzer never gives"
"""


def _leaves(value: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """(field name, value) of each scalar in an example, at any depth."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, key)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item, name)
    else:
        yield name, value


_PAIRS = [pair for spec in TOOLS for example in spec.examples for pair in _leaves(example)]
_EXAMPLE_LEAVES = [leaf for _, leaf in _PAIRS]
BY_FIELD: dict[str, list[Any]] = {}
"""What the examples give each field name (`node`: pve1, pve3...): most generated values
come from here, so that calls get past validation to the planners and the simulator."""
for _name, _leaf in _PAIRS:
    if _leaf not in BY_FIELD.setdefault(_name, []):
        BY_FIELD[_name].append(_leaf)
STRINGS = sorted(
    {leaf for leaf in _EXAMPLE_LEAVES if isinstance(leaf, str)}
    | {"", " ", "pve1", "-x", "../../etc/passwd", "a" * 300, "\x00", "ü🙂", "*", "%2F"}
)
"""What the examples name (guests, nodes, storages, volumes) and strings that break things."""
INTS = sorted(
    {leaf for leaf in _EXAMPLE_LEAVES if isinstance(leaf, int) and not isinstance(leaf, bool)}
    | {0, -1, 1, 2**31, 2**63}
)

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _number(schema: Mapping[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum")
    if integer:
        if "exclusiveMinimum" in schema:
            low = int(low) + 1
        known = [i for i in INTS if (low is None or i >= low) and (high is None or i <= high)]
        ranged = st.integers(low, high)
        return st.one_of(st.sampled_from(known), ranged) if known else ranged
    return st.floats(low, high, allow_nan=False, exclude_min="exclusiveMinimum" in schema)


def valid(schema: Mapping[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values that fit `schema` as far as it says (the compact subset tools/list uses:
    type, enum, bounds, items, properties, required, additionalProperties), for a field
    called `name` mostly what the examples give that name."""
    generic = _generic(schema, name)
    known = BY_FIELD.get(name)
    if known and "enum" not in schema:
        return st.one_of(st.sampled_from(known), st.sampled_from(known), generic)
    return generic


def _generic(schema: Mapping[str, Any], name: str) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([valid({**schema, "type": one}, name) for one in kind])
    if kind == "string":
        return st.one_of(st.sampled_from(STRINGS), st.text(max_size=40))
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(valid(schema.get("items", {}), name), max_size=4)
    if kind == "object":
        return _object(schema)
    return JSON


def _object(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries(
        {name: valid(sub, name) for name, sub in properties.items() if name in required},
        optional={
            name: valid(sub, name) for name, sub in properties.items() if name not in required
        },
    )
    extra = schema.get("additionalProperties")
    if not isinstance(extra, Mapping):
        return fixed
    keys = st.one_of(st.sampled_from(STRINGS), st.text(max_size=10))
    more = st.dictionaries(keys, valid(extra), max_size=3)
    return st.tuples(fixed, more).map(lambda pair: {**pair[1], **pair[0]})


def invalid(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments the schema refuses, or that only the gateway's stricter model can judge:
    any JSON under known and unknown names, one field replaced by any JSON, one dropped."""
    names = [*schema.get("properties", {}), "bogus", ""]
    fits = _object(schema)

    def drop(value: dict[str, Any], name: str) -> dict[str, Any]:
        return {key: item for key, item in value.items() if key != name}

    return st.one_of(
        st.dictionaries(st.sampled_from(names), JSON, max_size=5),
        st.builds(
            lambda value, name, item: {**value, name: item}, fits, st.sampled_from(names), JSON
        ),
        st.builds(drop, fits, st.sampled_from(names)),
    )


def _sparse(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid with the required fields and at most two optional ones: each optional field
    is one more chance to be refused before the call does anything."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = [name for name in properties if name in schema.get("required", ())]
    optional = [name for name in properties if name not in required]
    chosen = (
        st.lists(st.sampled_from(optional), max_size=2, unique=True) if optional else st.just([])
    )
    return chosen.flatmap(
        lambda names: st.fixed_dictionaries(
            {name: valid(properties[name], name) for name in [*required, *names]}
        )
    )


def arguments(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Half sparse and valid by the schema, a quarter with any optional fields, a quarter
    invalid."""
    sparse = _sparse(schema)
    return st.one_of(sparse, sparse, _object(schema), invalid(schema))


class Fuzzer:
    """A gateway on the simulator with the SDK client, served by a thread of its own so
    that Hypothesis (synchronous) can drive it call by call."""

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self.portal = portal
        self.client = client
        self.tools: dict[str, Tool] = {}
        self.outcomes: Counter[str] = Counter()
        """Answers by error code ("ok" for a result), printed at the end (`pytest -s`)."""

    def listed(self) -> dict[str, Tool]:
        if not self.tools:
            listing = self.portal.call(self.client.list_tools)
            self.tools = {tool.name: tool for tool in listing.tools}
        return self.tools

    def check(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """One call: a result (None), or a structured error (returned), in time, without
        a crash."""
        answer: dict[str, Any] | None = self.portal.call(self._check, name, args)
        return answer

    async def _check(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        with anyio.fail_after(CALL_LIMIT):
            result = await self.client.call_tool(name, args)
        text = "".join(getattr(block, "text", "") for block in result.content)
        assert "Traceback" not in text and 'File "' not in text, text
        if not result.is_error:
            self.outcomes["ok"] += 1
            return None
        try:
            error: dict[str, Any] = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            pytest.fail(f"{name} {args!r}: an unstructured error: {text[:300]}")
        self.outcomes[str(error.get("code"))] += 1
        assert error.get("code") and error.get("message"), error
        assert error["code"] != "internal_error", (name, args, error)
        return error


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    directory = tmp_path_factory.mktemp("fuzz")
    policy_file = directory / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(
        profile="admin", profile_subjects=["local"], file=policy_file, known_tools=tier_map()
    )
    with (
        simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as sim,
        start_blocking_portal("asyncio") as portal,
    ):
        gateway = _gateway(sim, policy_file.parent / "audit.jsonl", policy)
        try:
            with portal.wrap_async_context_manager(
                Client(build_mcp_server(gateway, local_principal))
            ) as client:
                fuzzing = Fuzzer(portal, client)
                yield fuzzing
                print(f"\nfuzz: {fuzzing.outcomes.total()} calls, {dict(fuzzing.outcomes)}")
        finally:
            portal.call(gateway.aclose)


def _gateway(sim: SimulatorHandle, audit: Path, policy: Any) -> Gateway:
    return Gateway(
        tools=TOOLS,
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=policy,
        audit=AuditLog(audit),
        redactor=Redactor((sim.token_secret,)),
    )


def test_every_tool_is_listed(fuzzer: Fuzzer) -> None:
    """The policy lists the whole catalogue, so the fuzzing below reaches every tool."""
    assert set(fuzzer.listed()) == {spec.name for spec in TOOLS}


@pytest.mark.parametrize("name", [spec.name for spec in TOOLS])
def test_fuzz_tool(fuzzer: Fuzzer, name: str) -> None:
    listed = fuzzer.listed()[name].input_schema
    # tools/list leaves out what the server instructions say once (a field some tools
    # require and others not): the model's required fields make more calls go deep.
    model = next(spec.input_model for spec in TOOLS if spec.name == name)
    needed = {field for field, info in model.model_fields.items() if info.is_required()}
    schema = {**listed, "required": sorted(needed | set(listed.get("required", ())))}

    @settings(
        max_examples=PER_TOOL,
        deadline=None,
        database=None,
        derandomize=EXAMPLES == DEFAULT_EXAMPLES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(args=arguments(schema))
    def run(args: dict[str, Any]) -> None:
        fuzzer.check(name, args)

    run()


@pytest.mark.parametrize("name", [spec.name for spec in TOOLS])
def test_an_explicit_null_is_never_a_crash(fuzzer: Fuzzer, name: str) -> None:
    """`null` for each optional field, one at a time: models send it for "unset". Before:
    a field checked in code (a pattern kept out of the schema, an address list) got None
    and raised TypeError or AttributeError, which escaped the gateway as an unstructured
    SDK error with a traceback in the log (found by the fuzzing above). A field whose
    default is None answers null as if the field were left out (a field with another
    default, `dry_run: false`, may refuse it as the wrong type)."""
    schema = fuzzer.listed()[name].input_schema
    fields = next(spec.input_model for spec in TOOLS if spec.name == name).model_fields
    required = set(schema.get("required", ()))
    left_out = _verdict(fuzzer.check(name, {}))
    for field in schema.get("properties", {}):
        if field in required:
            continue
        answer = fuzzer.check(name, {field: None})
        if field in fields and fields[field].default is None:
            assert _verdict(answer) == left_out, (field, answer)


def _verdict(error: dict[str, Any] | None) -> tuple[Any, ...]:
    """What decides an answer: its code, field and the problems listed (not the ids in a
    message or a token)."""
    if error is None:
        return ("ok",)
    problems = (error.get("details") or {}).get("problems")
    return error["code"], error.get("field"), json.dumps(problems, sort_keys=True)
