"""Configured clusters and their backends, created lazily and reused for every call.

With a `SecretsManager`, each REST backend reads its token from the manager at every call
(so rotations apply to new calls at once) and asks it to re-read the source after a 401.
A cluster whose credentials are not loaded answers `CredentialsUnavailable`.

A cluster with an `[ssh]` section gets one `SshPool` (one connection per node), shared by
its pvesh backend (`ssh.backend = "pvesh"`) and the SSH tools; SSH credentials come from
the same manager, read at every connect.

A cluster's identity mappings (`[[clusters.NAME.identities]]`) give some callers their own
PVE API token: `identity_for` picks the caller's mapping (the first that matches, else
None: the gateway token), and `backend(name, mapping)` is that token's own REST client and
connection pool, made on first use and reading its token from the manager at every call
(rotated as the cluster's). A mapping whose token is not loaded fails its caller's calls
with `credentials_unavailable` naming the mapping; it never falls back to the gateway token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from pvemcp.config import ClusterConfig, TlsMode
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.readcache import ReadCache
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ProxmoxBackend
from pvemcp.proxmox.errors import CredentialsUnavailable
from pvemcp.pveapi.node import NodeSchema
from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import IdentityMapping
from pvemcp.secrets.types import SshCredentials

if TYPE_CHECKING:
    from pvemcp.proxmox.rest import ApiCredential
    from pvemcp.proxmox.ssh import CredentialSource, SshPool
    from pvemcp.proxmox.ssh.pool import NodeLister

log = structlog.get_logger(__name__)

BackendFactory = Callable[[ClusterConfig], ProxmoxBackend]


class ClusterPool:
    """Maps cluster names to configs and one long-lived backend each (connection reuse).

    `secrets` supplies the credentials of the clusters it manages (the default REST
    backends only; a custom `backend_factory` gets just the config).
    """

    def __init__(
        self,
        clusters: Mapping[str, ClusterConfig],
        default: str | None = None,
        backend_factory: BackendFactory | None = None,
        *,
        secrets: SecretsManager | None = None,
    ) -> None:
        if not clusters:
            raise ValueError("at least one cluster is needed")
        self._clusters = dict(clusters)
        self._default = default or (next(iter(clusters)) if len(clusters) == 1 else None)
        self._factory = backend_factory
        self.secrets = secrets
        self._backends: dict[tuple[str, str | None], ProxmoxBackend] = {}
        """By (cluster, identity mapping or None for the gateway token)."""
        self._ssh_pools: dict[str, SshPool] = {}
        self._read_caches: dict[str, ReadCache] = {}
        self._node_schemas: dict[str, NodeSchema] = {}
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

    def identity_for(self, name: str, principal: Principal) -> IdentityMapping | None:
        """The first of cluster `name`'s identity mappings that is the caller's, or None:
        its calls use the gateway token."""
        for mapping in self._clusters[name].identities:
            if mapping.matches(principal.subject, principal.groups):
                return mapping
        return None

    def backend(self, name: str, identity: str | None = None) -> ProxmoxBackend:
        """Cluster `name`'s backend: the gateway token's, or identity mapping `identity`'s."""
        backend = self._backends.get((name, identity))
        if backend is None:
            backend = (
                self._build(name) if identity is None else self._build_identity(name, identity)
            )
            self._backends[(name, identity)] = backend
        return backend

    def token_id(self, name: str, identity: str | None = None) -> str | None:
        """The PVE token id (public) that calls through `backend(name, identity)` send now:
        the loaded one, else the configured one; None when neither is known."""
        secrets = self.secrets
        if identity is None:
            token = secrets.token(name) if secrets is not None else None
            return token.token_id if token is not None else self._clusters[name].token_id
        current = secrets.identity(name, identity) if secrets is not None else None
        if current is not None and current.token is not None:
            return current.token.token_id
        mapping = next(m for m in self._clusters[name].identities if m.name == identity)
        return mapping.token_id

    def read_cache(self, name: str) -> ReadCache:
        """The cluster's cache of read-tool GETs (`readcache.py`), made on first use."""
        cache = self._read_caches.get(name)
        if cache is None:
            cache = ReadCache(self._clusters[name].read_cache_ttl)
            self._read_caches[name] = cache
        return cache

    def read_caches(self) -> dict[str, ReadCache]:
        """The read caches made so far, by cluster (for metrics)."""
        return dict(self._read_caches)

    def node_schema(self, name: str) -> NodeSchema:
        """Where the cluster's node schema is resolved, once for this gateway whatever
        token its calls use (`context.cluster_schema`)."""
        return self._node_schemas.setdefault(name, NodeSchema())

    def ssh_pool(self, name: str) -> SshPool:
        """The cluster's SSH connections (made on first use); a cluster without an `[ssh]`
        section is a tool failure."""
        pool = self._ssh_pools.get(name)
        if pool is None:
            cluster = self._clusters[name]
            if cluster.ssh is None:
                raise ToolFailure(
                    "ssh_not_configured",
                    f"cluster {name} has no SSH access configured",
                    hint="An operator must add an [clusters.NAME.ssh] section and SSH "
                    "credentials (ssh_user, ssh_private_key, ssh_host_keys); see docs/ssh.md.",
                )
            # The SSH stack (asyncssh) loads only for a cluster that uses it.
            from pvemcp.proxmox.ssh import SshPool  # noqa: PLC0415

            pool = SshPool(
                name,
                cluster.ssh,
                self._ssh_credentials(name),
                cluster_nodes=self._node_names(name),
                default_node=cluster.default_node,
            )
            self._ssh_pools[name] = pool
        return pool

    def ready(self, name: str | None = None) -> bool:
        """Whether `name` (or every cluster) has credentials; always true without a manager."""
        return self.secrets is None or self.secrets.ready(name)

    def _build(self, name: str) -> ProxmoxBackend:
        cluster = self._clusters[name]
        if self._factory is not None:
            return self._factory(cluster)
        if cluster.ssh is not None and cluster.ssh.backend == "pvesh":
            from pvemcp.proxmox.pvesh import PveshBackend  # noqa: PLC0415

            return PveshBackend(cluster, self.ssh_pool(name), pvesh=cluster.ssh.pvesh_command)
        # The HTTP client stack (httpcore2, h11, TLS pinning) loads with the first call,
        # not at start: a stdio client's tools/list never needs it.
        from pvemcp.proxmox.rest import RestBackend  # noqa: PLC0415

        secrets = self.secrets
        if secrets is None or not secrets.manages(name):
            return RestBackend(cluster)

        def credentials() -> ApiCredential:
            token = secrets.token(name)
            if token is None:
                raise _unavailable(secrets, name, "Proxmox")
            return token

        async def on_unauthorized(rejected: ApiCredential) -> bool:
            return await secrets.after_unauthorized(name, rejected)

        return RestBackend(cluster, credentials=credentials, on_unauthorized=on_unauthorized)

    def _build_identity(self, name: str, identity: str) -> ProxmoxBackend:
        """A REST client of its own for one identity mapping (whatever `backend_factory`
        says: a mapping is a PVE token, so it is always spoken to over the REST API)."""
        from pvemcp.proxmox.rest import RestBackend  # noqa: PLC0415

        secrets = self.secrets

        def credentials() -> ApiCredential:
            current = secrets.identity(name, identity) if secrets is not None else None
            if current is None or current.token is None:
                raise _identity_unavailable(secrets, name, identity)
            return current.token

        async def on_unauthorized(rejected: ApiCredential) -> bool:
            if secrets is None:
                return False
            return await secrets.after_unauthorized(name, rejected, identity=identity)

        return RestBackend(
            self._clusters[name], credentials=credentials, on_unauthorized=on_unauthorized
        )

    def _node_names(self, name: str) -> NodeLister:
        """The cluster's members as its API reports them: the only names, besides the
        configured ones, that its SSH pool dials."""

        async def names() -> frozenset[str]:
            rows = (await self.backend(name).call("GET", "/nodes")).data
            if not isinstance(rows, list):
                return frozenset()
            return frozenset(
                row["node"]
                for row in rows
                if isinstance(row, dict) and isinstance(row.get("node"), str)
            )

        return names

    def _ssh_credentials(self, name: str) -> CredentialSource:
        """SSH credentials from the manager at each connect; None without a manager (inline
        settings carry no SSH key)."""
        secrets = self.secrets

        def credentials() -> SshCredentials | None:
            if secrets is None or not secrets.manages(name):
                return None
            current = secrets.current(name)
            if current is None:
                raise _unavailable(secrets, name, "the nodes")
            return current.ssh

        return credentials

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
        for pool in self._ssh_pools.values():
            await pool.aclose()
        self._ssh_pools.clear()


def _unavailable(secrets: SecretsManager, name: str, peer: str) -> CredentialsUnavailable:
    problem = secrets.problem(name) or "they have not been loaded yet"
    return CredentialsUnavailable(
        f"credentials for cluster {name} are unavailable ({problem}); nothing was sent to {peer}"
    )


def _identity_unavailable(
    secrets: SecretsManager | None, name: str, identity: str
) -> CredentialsUnavailable:
    """Fail closed: the caller's own token is not loaded, and the gateway token (which may
    hold other rights) is not used in its place."""
    problem = (
        secrets.identity_problem(name, identity) if secrets is not None else None
    ) or "it has not been loaded yet"
    error = CredentialsUnavailable(
        f"the PVE token of identity mapping {identity!r} (cluster {name}), which your calls "
        f"use, is unavailable ({problem}); nothing was sent to Proxmox"
    )
    error.hint = (
        "Your calls use a PVE API token of your own, never the gateway's in its place. The "
        "gateway retries loading it by itself: try again in a minute, or ask an operator to "
        "run `pvemcp secrets check`."
    )
    return error
