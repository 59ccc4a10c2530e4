"""Assembly: settings in, a ready gateway out (with the embedded simulator when no cluster
is configured). Shared clients are built here once, whatever transports serve them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import structlog
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, Settings, TlsMode
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.engine import BaselinePolicy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools

log = structlog.get_logger(__name__)

SIMULATED_CLUSTER = "demo"


@asynccontextmanager
async def open_gateway(
    settings: Settings, redactor: Redactor, *, simulate: bool = False
) -> AsyncIterator[Gateway]:
    """Build the gateway; start the embedded simulator when asked or when nothing is configured."""
    with ExitStack() as stack:
        clusters = settings.all_clusters()
        default = settings.default_cluster
        if simulate or not clusters:
            sim = stack.enter_context(
                simulator_in_thread(
                    SimulatorOptions(
                        time_scale=settings.simulator.time_scale, seed=settings.simulator.seed
                    )
                )
            )
            clusters = {
                SIMULATED_CLUSTER: ClusterConfig(
                    api_url=sim.url,
                    token_id=sim.token_id,
                    token_secret=SecretStr(sim.token_secret),
                    tls=TlsMode.FINGERPRINT,
                    fingerprint=sim.fingerprint,
                    default_node="pve1",
                )
            }
            default = SIMULATED_CLUSTER
            log.warning(
                "embedded_simulator",
                url=sim.url,
                why="no Proxmox cluster is configured; every call goes to a simulated cluster",
            )
        for cluster in clusters.values():
            if cluster.token_secret is not None:
                redactor.add(cluster.token_secret.get_secret_value())
        gateway = Gateway(
            tools=all_tools(),
            clusters=ClusterPool(clusters, default),
            policy=BaselinePolicy(),
            audit=AuditLog(settings.audit.path if settings.audit.enabled else None),
            redactor=redactor,
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()
