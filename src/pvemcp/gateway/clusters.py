"""Configured clusters and their backends, created lazily and reused for every call."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from pvemcp.config import ClusterConfig, TlsMode
from pvemcp.gateway.errors import ToolFailure
from pvemcp.proxmox.backend import ProxmoxBackend
from pvemcp.proxmox.rest import RestBackend

log = structlog.get_logger(__name__)

BackendFactory = Callable[[ClusterConfig], ProxmoxBackend]


class ClusterPool:
    """Maps cluster names to configs and one long-lived backend each (connection reuse)."""

    def __init__(
        self,
        clusters: Mapping[str, ClusterConfig],
        default: str | None = None,
        backend_factory: BackendFactory = RestBackend,
    ) -> None:
        if not clusters:
            raise ValueError("at least one cluster is needed")
        self._clusters = dict(clusters)
        self._default = default or (next(iter(clusters)) if len(clusters) == 1 else None)
        self._factory = backend_factory
        self._backends: dict[str, ProxmoxBackend] = {}
        for name, cluster in self._clusters.items():
            if cluster.tls is TlsMode.INSECURE:
                log.warning(
                    "tls_verification_disabled",
                    cluster=name,
                    api_url=cluster.api_url,
                    why="tls = insecure: anyone on the path can read the API token",
                )

    @property
    def names(self) -> list[str]:
        return sorted(self._clusters)

    def resolve(self, name: str | None) -> tuple[str, ClusterConfig]:
        """The cluster a call targets; an unknown or missing name is a clear tool failure."""
        chosen = name if name is not None else self._default
        if chosen is None:
            raise ToolFailure(
                "cluster_required",
                "several clusters are configured and no default is set",
                field="cluster",
                hint="Pass cluster, one of: " + ", ".join(self.names),
            )
        cluster = self._clusters.get(chosen)
        if cluster is None:
            raise ToolFailure(
                "unknown_cluster",
                f"no cluster named {chosen!r} is configured",
                field="cluster",
                hint="Use one of: " + ", ".join(self.names),
            )
        return chosen, cluster

    def backend(self, name: str) -> ProxmoxBackend:
        backend = self._backends.get(name)
        if backend is None:
            backend = self._factory(self._clusters[name])
            self._backends[name] = backend
        return backend

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
