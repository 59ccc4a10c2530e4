"""Our own client checked against the official schema: every request the tools send, and
every answer they read, must fit PVE 9.2's API tree (so neither the client nor the
simulator can drift from real PVE together)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ApiResult, Method, Params
from pvemcp.proxmox.rest import RestBackend
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import all_tools
from tests.conftest import cluster_for, operator_policy
from tests.pveschema import check_request, check_response, require_schema

pytestmark = pytest.mark.anyio


@dataclass
class RecordingBackend:
    """Wraps the real REST backend and keeps every call and answer."""

    inner: RestBackend
    name: str = "rest"
    calls: list[tuple[str, str, dict[str, Any], Any]] = field(default_factory=list)

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        result = await self.inner.call(method, path, params)
        self.calls.append((method, path, dict(params or {}), result.data))
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_every_tool_request_and_answer_fits_the_schema(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    require_schema()
    recorders: list[RecordingBackend] = []

    def factory(cluster: ClusterConfig) -> RecordingBackend:
        recorders.append(RecordingBackend(RestBackend(cluster)))
        return recorders[-1]

    gateway = Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim)}, backend_factory=factory),
        policy=operator_policy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor(),
    )
    local = Principal.local("memory")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("proxmox_cluster_status", {}),
        ("proxmox_node_list", {}),
        ("proxmox_node_status", {"node": "pve3"}),
        ("proxmox_next_vmid", {}),
        ("proxmox_guest_list", {"fields": ["cpu", "mem", "disk", "uptime", "pool"]}),
        ("proxmox_guest_get", {"vmid": 104}),
        ("proxmox_guest_get", {"name": "gitlab"}),
        ("proxmox_guest_power", {"vmid": 204, "action": "start"}),
        ("proxmox_guest_stop", {"vmid": 204}),
    ]
    try:
        upid = None
        for tool, args in calls:
            result = await gateway.invoke(local, tool, args)
            if result.error and result.error["code"] == "confirmation_required":
                token = result.error["details"]["confirm_token"]
                result = await gateway.invoke(local, tool, {**args, "confirm_token": token})
            assert result.ok, (tool, result.error)
            if result.data and "upid" in result.data:
                upid = result.data["upid"]
        assert upid is not None
        for tool, args in [
            ("proxmox_task_status", {"upid": upid}),
            ("proxmox_task_log", {"upid": upid, "start": 0, "limit": 10}),
            ("proxmox_task_wait", {"upid": upid}),
        ]:
            assert (await gateway.invoke(local, tool, args)).ok
    finally:
        await gateway.aclose()
    (recorder,) = recorders
    seen_paths = {path for _, path, _, _ in recorder.calls}
    assert len(recorder.calls) >= 15 and any("/tasks/" in p for p in seen_paths)
    problems = []
    for method, path, params, data in recorder.calls:
        problems += [f"{method} {path} request: {p}" for p in check_request(method, path, params)]
        problems += [f"{method} {path} answer: {p}" for p in check_response(method, path, data)]
    assert not problems, "\n".join(problems)
