"""Assembly: settings in, a ready gateway out (with the embedded simulator for
`pvemcp demo`). Shared clients are built here once, whatever transports serve them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio
import structlog
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, ConfigError, Settings, TlsMode
from pvemcp.gateway.approval_notify import approval_notifier
from pvemcp.gateway.approvals import ApprovalStore
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.evidence import EvidenceStore
from pvemcp.policy.loader import PolicyError, load_policy
from pvemcp.secrets.manager import SecretsManager, install_sighup
from pvemcp.secrets.redaction import Redactor
from pvemcp.tools import catalogue, tier_map

log = structlog.get_logger(__name__)

SIMULATED_CLUSTER = "demo"


def build_policy(settings: Settings) -> PolicyEngine:
    """The policy engine the settings describe; a bad policy file stops the start."""
    try:
        return load_policy(
            profile=settings.policy.profile,
            profile_subjects=settings.policy.profile_subjects,
            file=settings.policy.file,
            known_tools=tier_map(),
        )
    except PolicyError as exc:
        raise ConfigError(f"the policy cannot be loaded:\n{exc}") from None


def _simulated_cluster(stack: ExitStack, settings: Settings) -> dict[str, ClusterConfig]:
    # The simulator (and the web server it runs on) loads only for `pvemcp demo`.
    from pvemcp.simulator.seed import Scale  # noqa: PLC0415
    from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread  # noqa: PLC0415

    config = settings.simulator
    try:
        scale = Scale.of(config.guests, config.nodes)
    except ValueError as exc:
        raise ConfigError(f"[simulator] guests/nodes: {exc}") from None
    sim = stack.enter_context(
        simulator_in_thread(
            SimulatorOptions(time_scale=config.time_scale, seed=config.seed, scale=scale)
        )
    )
    log.warning(
        "embedded_simulator",
        url=sim.url,
        why="pvemcp demo: every call goes to a simulated cluster",
    )
    return {
        SIMULATED_CLUSTER: ClusterConfig(
            api_url=sim.url,
            token_id=sim.token_id,
            token_secret=SecretStr(sim.token_secret),
            tls=TlsMode.FINGERPRINT,
            fingerprint=sim.fingerprint,
            default_node="pve1",
            # The embedded simulator serves no pve-docs (the schema is not ours to ship):
            # asking would only end in the shipped index and a warning at every demo start.
            api_schema_fetch=False,
        )
    }


@asynccontextmanager
async def open_gateway(
    settings: Settings, redactor: Redactor, *, simulate: bool = False
) -> AsyncIterator[Gateway]:
    """Build the gateway; start the embedded simulator when asked (`pvemcp demo`).

    Without `simulate`, no configured cluster is a `ConfigError`: the simulator is never
    served in place of a cluster someone meant to configure.

    Credentials load through the secrets manager (which adds every value to the redaction
    set); a source that is down leaves its cluster answering "credentials unavailable" until
    the manager's retries recover it, instead of stopping the start.
    """
    policy = build_policy(settings)
    audit = AuditLog.from_config(settings.audit)
    with ExitStack() as stack:
        clusters = settings.all_clusters()
        default = settings.default_cluster
        if simulate:
            clusters, default = _simulated_cluster(stack, settings), SIMULATED_CLUSTER
        else:
            settings.require_cluster()

        def rotated(cluster: str, secret: str, source: str) -> None:
            audit.secret_rotated(
                f"cluster:{cluster}/{secret}",
                source=source,
                version=manager.version(cluster, secret),
            )

        async with SecretsManager(clusters, redactor, on_rotation=rotated) as manager:
            await install_sighup(manager)
            gateway = Gateway(
                tools=catalogue(settings.tools.toolsets),
                clusters=ClusterPool(clusters, default, secrets=manager),
                policy=policy,
                audit=audit,
                redactor=redactor,
                confirm_ttl=settings.policy.confirm_ttl,
                token_confirmation=settings.policy.token_confirmation,
                approvals=ApprovalStore.from_settings(settings, audit),
                evidence=EvidenceStore.from_config(settings.audit),
            )
            notifier = approval_notifier(settings, gateway.approvals, audit, redactor)
            try:
                async with anyio.create_task_group() as background:
                    if notifier is not None:  # the approval webhook, for the gateway's life
                        await background.start(notifier.run)
                    try:
                        yield gateway
                    finally:
                        background.cancel_scope.cancel()
            finally:
                await gateway.aclose()
