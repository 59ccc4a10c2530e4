"""Every tool's declared examples and rejects, run through the MCP SDK client against a
fresh demo simulator.

Adding a tool adds no test here: a tool declares `examples=` (arguments that must
succeed) and `rejects=` (arguments and the error code they must get), and this file runs
them all. Each case gets a simulator of its own (about 15 ms to start), so an example that
changes the cluster (a start, a snapshot) cannot change what another case finds. The
`ceph` toolset's cases run on a simulator started with Ceph (the demo has none).

- An example must succeed (a destructive one after the two-step confirmation, as a user
  approving it would), its structured result is checked against the tool's output schema
  by the SDK client, and every request the call sent and every answer it read must fit
  PVE 9.2's schema (`tests/pveschema.py`; that check is left out when the schema file is
  absent, the examples still run).
- A reject must fail with its declared code and send no write: only reads (the planner
  resolving the guest) may reach the simulator before the refusal.

The `escape` toolset is left out on purpose: its tools run commands and touch files on
nodes and in guests over SSH, not through the PVE API the simulator serves; their
behaviour is tested against the real sshd fixture in tests/ssh/, and the default policy
hides them from everyone, so a reject would only ever meet that refusal.
`test_escape_tools_declare_none` keeps anyone from declaring cases that would never run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.audit import AuditLog
from pvemcp.proxmox.rest import RestBackend
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for, operator_policy
from tests.e2e.test_client_schema import RecordingBackend
from tests.pveschema import check_request, check_response, skip_reason
from tests.tools.endpoints import undeclared
from tests.tools.test_catalogue import TOOLS

pytestmark = pytest.mark.anyio

EXCLUDED_TOOLSETS = frozenset({"escape"})
"""Toolsets whose tools are not run here (see the module docstring for why)."""

RUN = [spec for spec in TOOLS if spec.toolset not in EXCLUDED_TOOLSETS]
EXAMPLES = [
    pytest.param(spec, example, id=f"{spec.name}-{index}")
    for spec in RUN
    for index, example in enumerate(spec.examples)
]
REJECTS = [
    pytest.param(spec, arguments, code, id=f"{spec.name}-{code}-{index}")
    for spec in RUN
    for index, (arguments, code) in enumerate(spec.rejects)
]


class Session:
    """A client on a gateway over a fresh simulator, with every request recorded."""

    def __init__(
        self, client: Client, recorders: list[RecordingBackend], sim: SimulatorHandle
    ) -> None:
        self.client = client
        self.sim = sim
        """The simulator, for a test that arranges a state the demo does not have."""
        self._recorders = recorders
        """The pool makes its backend on first use: whichever it made, in order."""

    @property
    def calls(self) -> list[tuple[str, str, dict[str, Any], Any]]:
        return [call for recorder in self._recorders for call in recorder.calls]

    async def call(self, spec: AnySpec, arguments: Mapping[str, Any]) -> CallToolResult:
        """Call the tool once it is listed (so the SDK validates its structured result
        against the listed output schema); a destructive call is confirmed as a user
        approving its plan would."""
        listed = {tool.name for tool in (await self.client.list_tools()).tools}
        assert spec.name in listed, f"{spec.name} is not in tools/list"
        result = await self.client.call_tool(spec.name, dict(arguments))
        error = error_of(result)
        if error is not None and error["code"] == "confirmation_required":
            token = error["details"]["confirm_token"]
            result = await self.client.call_tool(spec.name, {**arguments, "confirm_token": token})
        return result

    def writes(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.calls if method != "GET"]

    def schema_problems(self) -> list[str]:
        """Requests and answers that do not fit PVE's schema (none checked without it)."""
        if skip_reason() is not None:
            return []
        problems = []
        for method, path, params, data in self.calls:
            where = f"{method} {path}"
            problems += [f"{where} request: {p}" for p in check_request(method, path, params)]
            problems += [f"{where} answer: {p}" for p in check_response(method, path, data)]
        return problems


def error_of(result: CallToolResult) -> dict[str, Any] | None:
    if not result.is_error:
        return None
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]  # type: ignore[union-attr]
    return error


@asynccontextmanager
async def fresh_session(tmp_path: Path, *, ceph: bool = False) -> AsyncIterator[Session]:
    """A client on a gateway over a fresh demo simulator (`ceph`: one with Ceph)."""
    recorders: list[RecordingBackend] = []

    def factory(cluster: ClusterConfig) -> RecordingBackend:
        recorders.append(RecordingBackend(RestBackend(cluster)))
        return recorders[-1]

    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE, ceph=ceph)) as sim:
        gateway = Gateway(
            tools=TOOLS,
            clusters=ClusterPool({"demo": cluster_for(sim)}, backend_factory=factory),
            policy=operator_policy(),
            audit=AuditLog(tmp_path / "audit.jsonl"),
            redactor=Redactor((sim.token_secret,)),
        )
        try:
            async with Client(build_mcp_server(gateway, local_principal)) as client:
                yield Session(client, recorders, sim)
        finally:
            await gateway.aclose()


@pytest.mark.parametrize(("spec", "example"), EXAMPLES)
async def test_example_succeeds(spec: AnySpec, example: Mapping[str, Any], tmp_path: Path) -> None:
    async with fresh_session(tmp_path, ceph=spec.toolset == "ceph") as session:
        result = await session.call(spec, example)
        assert not result.is_error, error_of(result)
        assert result.structured_content is not None
        assert not session.schema_problems(), "\n".join(session.schema_problems())
        sent = [(method, path) for method, path, _, _ in session.calls]
        missing = undeclared(spec, sent, tmp_path / "audit.jsonl")
        assert not missing, "\n".join(missing)


@pytest.mark.parametrize(("spec", "arguments", "code"), REJECTS)
async def test_reject_fails_before_any_write(
    spec: AnySpec, arguments: Mapping[str, Any], code: str, tmp_path: Path
) -> None:
    async with fresh_session(tmp_path, ceph=spec.toolset == "ceph") as session:
        result = await session.call(spec, arguments)
        error = error_of(result)
        assert error is not None, f"{spec.name} accepted {arguments}"
        assert error["code"] == code, error
        assert error.get("message") and error.get("hint"), "a message and what to do"
        assert session.writes() == [], "refused before anything was sent"


OVER_SSH = frozenset({"proxmox_snippet_read", "proxmox_snippet_write"})
"""Typed tools that reach the node's files over SSH, which this simulator-only session has
not: they declare rejects (refused before SSH) and work end to end in
tests/tools/test_snippets.py against the real sshd."""


def test_every_tool_shows_a_working_call() -> None:
    """Each tool the simulator can serve has an example, unless a required argument is
    one only an earlier answer gives (a task's upid) or it needs SSH (`OVER_SSH`): those
    declare rejects at least."""
    for spec in RUN:
        needs_earlier = "upid" in spec.input_model.model_fields or spec.name in OVER_SSH
        assert spec.examples or (needs_earlier and spec.rejects), spec.name


def test_escape_tools_declare_none() -> None:
    """Cases on an excluded toolset would never run: declare none there."""
    escape = [spec for spec in TOOLS if spec.toolset in EXCLUDED_TOOLSETS]
    assert escape, "the escape toolset exists"
    assert [spec.name for spec in escape if spec.examples or spec.rejects] == []
