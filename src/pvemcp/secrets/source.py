"""The one interface every secret source implements, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pydantic import SecretStr

from pvemcp.secrets.models import (
    CredentialsConfig,
    EnvCredentials,
    FileCredentials,
    IdentityMapping,
    InlineCredentials,
    VaultCredentials,
)
from pvemcp.secrets.types import ApiToken, ClusterCredentials, SecretSourceError

SecretSink = Callable[[str], None]
"""Called with every secret value a source handles besides the credentials themselves
(a Vault token, a secret_id), so it joins the redaction set."""


class ClusterLike(Protocol):
    """What the secrets package needs of a cluster's config (`pvemcp.config.ClusterConfig`)."""

    @property
    def token_id(self) -> str | None: ...

    @property
    def token_secret(self) -> SecretStr | None: ...

    @property
    def credentials(self) -> CredentialsConfig: ...

    @property
    def identities(self) -> Sequence[IdentityMapping]: ...


class SettingsLike(Protocol):
    """What `secrets check` needs of the settings (`pvemcp.config.Settings`)."""

    def all_clusters(self) -> Mapping[str, ClusterLike]: ...


class SecretSource:
    """Base class: loads one cluster's credentials.

    `load` may be called concurrently with `maintain` (which runs for the source's whole
    life, e.g. Vault token renewal); sources serialise their own I/O.
    """

    kind = "base"
    refreshable = False
    """Whether reading again can give another value (false for inline settings)."""
    refresh_interval = 0.0

    def describe(self) -> str:
        """Where the credentials come from, for logs and `secrets check` (no values)."""
        raise NotImplementedError

    async def load(self) -> ClusterCredentials:
        """Read the credentials now; raise `SecretSourceError` with a clear message."""
        raise NotImplementedError

    async def maintain(self) -> None:
        """Long-running upkeep (token renewal); returns at once when there is none."""

    async def aclose(self) -> None:
        """Release what the source holds (revoke a Vault login token)."""


class InlineSource(SecretSource):
    """The `token_id` / `token_secret` given in the cluster's own settings."""

    kind = "inline"

    def __init__(self, name: str, cluster: ClusterLike) -> None:
        self._name = name
        self._token_id = cluster.token_id
        self._secret = cluster.token_secret

    def describe(self) -> str:
        return f"inline settings of cluster {self._name} (token_id / token_secret)"

    async def load(self) -> ClusterCredentials:
        if self._token_id is None or self._secret is None:
            raise SecretSourceError(
                f"cluster {self._name} has no token_id / token_secret and no credentials "
                "source; set both, or add a [clusters.NAME.credentials] table"
            )
        return ClusterCredentials(
            token=ApiToken(self._token_id, self._secret), origin=self.describe()
        )


def build_source(
    name: str, cluster: ClusterLike, *, sink: SecretSink | None = None
) -> SecretSource:
    """The source configured for cluster `name`."""
    if isinstance(cluster.credentials, InlineCredentials):
        return InlineSource(name, cluster)
    return _external(name, cluster.credentials, cluster.token_id, sink)


def build_identity_source(
    cluster: str, mapping: IdentityMapping, *, sink: SecretSink | None = None
) -> SecretSource:
    """The source of one caller's own token (`[[clusters.NAME.identities]]`); its messages
    name it `CLUSTER identity MAPPING` where a cluster's name the cluster."""
    return _external(
        f"{cluster} identity {mapping.name}", mapping.credentials, mapping.token_id, sink
    )


def _external(
    name: str,
    config: CredentialsConfig,
    fallback_token_id: str | None,
    sink: SecretSink | None,
) -> SecretSource:
    """An env, file or Vault source; `name` is what its messages call the owner."""
    sink = sink or (lambda _value: None)
    if isinstance(config, EnvCredentials):
        from pvemcp.secrets.env import EnvSource  # noqa: PLC0415 - small, lazy like the others

        return EnvSource(name, config, fallback_token_id=fallback_token_id)
    if isinstance(config, FileCredentials):
        from pvemcp.secrets.file import FileSource  # noqa: PLC0415

        return FileSource(name, config, fallback_token_id=fallback_token_id)
    if isinstance(config, VaultCredentials):
        # hvac (and requests) are imported only when a cluster uses Vault.
        from pvemcp.secrets.vault import VaultSource  # noqa: PLC0415

        return VaultSource(name, config, fallback_token_id=fallback_token_id, sink=sink)
    raise TypeError(f"unknown credentials source {config!r}")
