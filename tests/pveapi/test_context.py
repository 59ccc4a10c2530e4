"""`ToolContext.call` checks every request against the index before the backend sees it:
what PVE would refuse is an `invalid_argument` naming the PVE field and the closest names,
and nothing is sent. The backend is the real REST client against the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pvemcp.gateway.artifacts import ArtifactStore
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.readcache import ReadCache
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ApiResult, Method, Params
from pvemcp.proxmox.rest import RestBackend
from pvemcp.proxmox.ssh import SshPool
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import cluster_for

pytestmark = pytest.mark.anyio


@dataclass
class Recording:
    """The real REST backend, keeping what was sent."""

    inner: RestBackend
    name: str = "rest"
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        self.sent.append((method, path))
        return await self.inner.call(method, path, params)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _no_ssh() -> SshPool:
    raise AssertionError("no SSH in these tests")


def _no_policy(node: str | None, paths: tuple[str, ...]) -> None:
    raise AssertionError("no file policy in these tests")


async def _failure(ctx: ToolContext, method: Method, path: str, params: Any = None) -> ToolFailure:
    with pytest.raises(ToolFailure) as caught:
        await ctx.call(method, path, params)
    assert caught.value.code == "invalid_argument"
    return caught.value


async def test_requests_pve_would_refuse_are_never_sent(sim: SimulatorHandle) -> None:
    cluster = cluster_for(sim)
    backend = Recording(RestBackend(cluster))
    ctx = ToolContext(
        principal=Principal.local("memory"),
        cluster_name="demo",
        cluster=cluster,
        backend=backend,
        read_cache=ReadCache(0),
        cached_reads=True,
        progress=None,
        ssh=_no_ssh,
        artifacts=ArtifactStore(),
        redactor=Redactor(),
        authorize=_no_policy,
        may_read=lambda node, paths: False,
    )
    try:
        config = "/nodes/pve1/qemu/100/config"
        bad_key = await _failure(ctx, "POST", config, {"scsi0": "local-lvm:32,discrad=on"})
        assert bad_key.field == "scsi0.discrad"
        assert bad_key.message == (
            "POST /nodes/{node}/qemu/{vmid}/config: scsi0.discrad: "
            "unknown key 'discrad' (did you mean discard?)"
        )
        assert bad_key.hint == "Closest valid: discard."

        several = await _failure(ctx, "POST", config, {"nmae": "x", "cores": "four"})
        assert several.field == "nmae" and "name" in (several.hint or "")
        assert [p["field"] for p in several.details["problems"]] == ["nmae", "cores"]

        # Reads too, cached or not.
        path = await _failure(ctx, "GET", "/nodes/pve1/qemu/100/snapshots")
        assert (path.field, path.hint) == ("path", "Closest valid: snapshot.")
        method = await _failure(ctx, "DELETE", "/version")
        assert method.field == "method" and method.message == "/version has no DELETE; it has GET"

        assert backend.sent == []
        assert (await ctx.get("/version"))["version"]
        assert backend.sent == [("GET", "/version")]
    finally:
        await backend.aclose()
