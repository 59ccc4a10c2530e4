"""Where a cluster's credentials come from: the `credentials` table of `[clusters.NAME]`.

These models hold *references* to secrets (variable names, file paths, a Vault path), never
a secret value, so they can be printed by `pvemcp config show`. They live in the secrets
package (which may not import `pvemcp.config`); `pvemcp.config` composes them.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from pvemcp.secrets.types import TOKEN_ID_RE

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not ENV_NAME_RE.match(value):
        raise ValueError("must be an environment variable name (letters, digits, _)")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


def _secret_path(value: str) -> str:
    value = value.strip("/")
    if not value or not _MOUNT_RE.match(value) or ".." in value.split("/"):
        raise ValueError("must be a path such as pvemcp/prod (no '..', no leading '/')")
    return value


class InlineCredentials(_Strict):
    """The cluster's own `token_id` / `token_secret` settings (TOML or `PVEMCP_*` env)."""

    source: Literal["inline"] = "inline"


class EnvCredentials(_Strict):
    """Environment variables, re-read on SIGHUP, on the interval and after a 401."""

    source: Literal["env"] = "env"
    prefix: Annotated[
        str,
        Field(
            description="Variable name prefix: reads PREFIX`TOKEN_ID`, PREFIX`TOKEN_SECRET`, "
            "PREFIX`SSH_USER`, PREFIX`SSH_PRIVATE_KEY`, PREFIX`SSH_KEY_PATH`, "
            "PREFIX`SSH_PASSPHRASE`, PREFIX`SSH_HOST_KEYS` (JSON `{node: [lines]}`).",
        ),
    ] = "PVEMCP_"
    refresh_interval: Annotated[
        float, Field(ge=0, description="Seconds between re-reads (0 = only SIGHUP and 401).")
    ] = 0.0

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if value and not ENV_NAME_RE.match(value):
            raise ValueError("must start an environment variable name (letters, digits, _)")
        return value

    def var(self, name: str) -> str:
        """The variable that holds `name` (`TOKEN_SECRET`, `SSH_USER`, ...)."""
        return f"{self.prefix}{name}"


class FileCredentials(_Strict):
    """A TOML or JSON file that only its owner can read (mode 0600 or 0400)."""

    source: Literal["file"] = "file"
    path: Annotated[Path, Field(description="The credentials file (see docs/secrets.md).")]
    format: Annotated[
        Literal["auto", "toml", "json"],
        Field(description="`auto`: JSON when the name ends in `.json`, else TOML."),
    ] = "auto"
    refresh_interval: Annotated[
        float, Field(ge=0, description="Seconds between re-reads (0 = only SIGHUP and 401).")
    ] = 0.0


class VaultTokenAuth(_Strict):
    """A Vault token from a file (e.g. a Vault Agent sink) or an env variable."""

    method: Literal["token"] = "token"
    token_file: Annotated[
        Path | None, Field(description="File holding the token; re-read at every login.")
    ] = None
    token_env: Annotated[
        EnvName | None, Field(description="Env variable holding the token (when no token_file).")
    ] = "VAULT_TOKEN"  # noqa: S105 - a variable name, not a token

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.token_file is None and self.token_env is None:
            raise ValueError("set token_file or token_env")
        return self


class VaultAppRoleAuth(_Strict):
    """AppRole: a role_id plus a secret_id (optionally response-wrapped)."""

    method: Literal["approle"] = "approle"
    mount: Annotated[str, Field(description="Mount path of the AppRole auth method.")] = "approle"
    role_id: Annotated[str | None, Field(description="The role_id (not a secret).")] = None
    role_id_file: Annotated[Path | None, Field(description="File holding the role_id.")] = None
    role_id_env: Annotated[
        EnvName | None, Field(description="Env variable holding the role_id.")
    ] = None
    secret_id_file: Annotated[
        Path | None, Field(description="File holding the secret_id; re-read at every login.")
    ] = None
    secret_id_env: Annotated[
        EnvName | None, Field(description="Env variable holding the secret_id.")
    ] = None
    secret_id_wrapped: Annotated[
        bool,
        Field(
            description="The secret_id source holds a response-wrapping token: it is unwrapped "
            "once (wrapping tokens are single-use) and the secret_id kept in memory.",
        ),
    ] = False

    @model_validator(mode="after")
    def _one_each(self) -> Self:
        if sum(x is not None for x in (self.role_id, self.role_id_file, self.role_id_env)) != 1:
            raise ValueError("set exactly one of role_id, role_id_file, role_id_env")
        if (self.secret_id_file is None) == (self.secret_id_env is None):
            raise ValueError("set exactly one of secret_id_file, secret_id_env")
        return self


class VaultKubernetesAuth(_Strict):
    """Kubernetes: the pod's service-account JWT, re-read at every login."""

    method: Literal["kubernetes"] = "kubernetes"
    role: Annotated[str, Field(description="Vault role bound to the service account.")]
    mount: Annotated[str, Field(description="Mount path of the Kubernetes auth method.")] = (
        "kubernetes"
    )
    jwt_file: Annotated[Path, Field(description="Projected service-account token file.")] = Path(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


VaultAuth = Annotated[
    VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth, Field(discriminator="method")
]


class VaultCredentials(_Strict):
    """A KV secret in HashiCorp Vault or OpenBao, read with hvac."""

    source: Literal["vault"] = "vault"
    url: Annotated[str, Field(description="Vault address, e.g. `https://vault.example:8200`.")]
    path: Annotated[str, Field(description="Secret path inside the mount, e.g. `pvemcp/prod`.")]
    mount: Annotated[str, Field(description="KV secrets engine mount.")] = "secret"
    kv_version: Annotated[Literal[1, 2], Field(description="KV engine version.")] = 2
    namespace: Annotated[str | None, Field(description="Vault namespace (enterprise).")] = None
    ca_file: Annotated[
        Path | None,
        Field(description="PEM CA bundle for Vault's certificate (else the system store)."),
    ] = None
    auth: VaultAuth = VaultTokenAuth()
    allowed_paths: Annotated[
        list[str],
        Field(
            description="If set, `mount/path` must start with one of these prefixes "
            "(whole path components), e.g. `secret/pvemcp`.",
        ),
    ] = []
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    refresh_interval: Annotated[
        float,
        Field(ge=0, description="Seconds between re-reads of the secret (0 = SIGHUP/401 only)."),
    ] = 300.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.rstrip("/")
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL (for example https://vault.example:8200)")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry credentials, a query or a fragment")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(
                "plain http:// would send the Vault token in cleartext; use https:// "
                "(http:// is accepted only for 127.0.0.1, ::1 and localhost)"
            )
        return value

    @field_validator("path", "mount")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _secret_path(value)

    @field_validator("allowed_paths")
    @classmethod
    def _check_allowed(cls, value: list[str]) -> list[str]:
        return [_secret_path(item) for item in value]

    @model_validator(mode="after")
    def _check_allowlist(self) -> Self:
        if self.allowed_paths:
            full = f"{self.mount}/{self.path}"
            if not any(full == p or full.startswith(p + "/") for p in self.allowed_paths):
                raise ValueError(
                    f"{full} is outside allowed_paths ({', '.join(self.allowed_paths)})"
                )
        return self

    @property
    def full_path(self) -> str:
        """`mount/path` as an operator writes it (`bao kv get -mount=... path`)."""
        return f"{self.mount}/{self.path}"


CredentialsConfig = Annotated[
    InlineCredentials | EnvCredentials | FileCredentials | VaultCredentials,
    Field(discriminator="source"),
]


IdentityCredentials = Annotated[
    EnvCredentials | FileCredentials | VaultCredentials, Field(discriminator="source")
]
"""Where a mapped caller's token comes from: never `inline`, so its secret is never in the
configuration (which `pvemcp config show` prints)."""

_MAPPING_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class IdentityMapping(_Strict):
    """One caller's own PVE API token: the calls of a matching principal use it instead of
    the cluster's gateway token, so PVE's ACLs, task ownership and PVE's own log apply to
    that person (`[[clusters.NAME.identities]]`, see docs/secrets.md)."""

    name: Annotated[
        str,
        Field(
            description="The mapping's name, for logs, errors and `secrets check` (letters, "
            "digits, `_.-`); never a secret.",
        ),
    ]
    principal: Annotated[
        str,
        Field(
            description="Who it is for: `sub:NAME` (the caller's OIDC subject) or "
            "`group:NAME` (one of its groups). The first mapping that matches wins.",
        ),
    ]
    token_id: Annotated[
        str | None,
        Field(description="The token id, `user@realm!tokenid`, if the source has none."),
    ] = None
    credentials: Annotated[
        IdentityCredentials,
        Field(
            description="Where its token secret comes from: `source` = `env`, `file` or "
            "`vault`, as the cluster's own `credentials` (never inline).",
        ),
    ]

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _MAPPING_NAME_RE.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("principal")
    @classmethod
    def _check_principal(cls, value: str) -> str:
        kind, sep, who = value.partition(":")
        if not sep or kind not in ("sub", "group") or not who or who != who.strip():
            raise ValueError("must be sub:NAME or group:NAME (for example sub:alice)")
        return value

    @field_validator("token_id")
    @classmethod
    def _check_token_id(cls, value: str | None) -> str | None:
        if value is not None and not TOKEN_ID_RE.match(value):
            raise ValueError("must look like user@realm!tokenid (for example alice@pve!mcp)")
        return value

    def matches(self, subject: str, groups: frozenset[str]) -> bool:
        """Whether a caller with this OIDC subject and these groups is the one mapped."""
        kind, _, who = self.principal.partition(":")
        return subject == who if kind == "sub" else who in groups
