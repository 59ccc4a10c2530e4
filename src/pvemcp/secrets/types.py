"""What a secret source yields per cluster, and how a source's raw mapping becomes it.

A source's payload (a file, a Vault KV secret, a set of env variables) is a flat mapping:

    token_id        user@realm!tokenid (else the cluster's own `token_id` setting)
    token_secret    the API token secret (required)
    ssh_user        SSH login user for the nodes
    ssh_private_key the private key, PEM or OpenSSH text
    ssh_key_path    or a path to the key file
    ssh_passphrase  the key's passphrase
    ssh_host_keys   {node: [known_hosts lines]} (or that mapping as JSON text)

An `[ssh]` table with `user`, `private_key`, `key_path`, `passphrase`, `host_keys` is
accepted too. Errors name the source and the key, never a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

TOKEN_ID_RE = re.compile(r"^[^\s@!]+@[A-Za-z][A-Za-z0-9.\-_]*![A-Za-z][A-Za-z0-9.\-_]+$")
_NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

SSH_KEYS = ("user", "private_key", "key_path", "passphrase", "host_keys")
KNOWN_KEYS = frozenset({"token_id", "token_secret", "ssh", *(f"ssh_{k}" for k in SSH_KEYS)})


class SecretSourceError(Exception):
    """A source could not deliver credentials. The message names the source and the fix and
    never contains a secret value. `transient` is true for outages worth retrying soon
    (unreachable, sealed, timeout); configuration mistakes are retried too, more slowly."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A Proxmox API token: `user@realm!tokenid` and its secret."""

    token_id: str
    secret: SecretStr

    def same_as(self, other: ApiToken | None) -> bool:
        return (
            other is not None
            and self.token_id == other.token_id
            and self.secret.get_secret_value() == other.secret.get_secret_value()
        )


@dataclass(frozen=True, slots=True)
class SshCredentials:
    """SSH login material for the nodes (used by the SSH backends of a later issue)."""

    user: str
    private_key: SecretStr | None = None
    key_path: Path | None = None
    passphrase: SecretStr | None = None
    host_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Expected host keys per node, known_hosts lines (`pve1 ssh-ed25519 AAAA...`)."""

    def _comparable(self) -> tuple[Any, ...]:
        return (
            self.user,
            self.private_key.get_secret_value() if self.private_key else None,
            self.key_path,
            self.passphrase.get_secret_value() if self.passphrase else None,
            {k: tuple(v) for k, v in self.host_keys.items()},
        )


@dataclass(frozen=True, slots=True)
class ClusterCredentials:
    """Everything one cluster needs, as loaded from its source at one moment."""

    token: ApiToken | None
    ssh: SshCredentials | None = None
    origin: str = ""
    """Where it came from, for logs (`vault https://v:8200 secret/pvemcp/prod`)."""
    version: str | None = None
    """The source's version of the secret (KV v2 version, file mtime), when it has one."""

    def secret_values(self) -> Iterator[str]:
        """Every secret value held, for the redaction set (with each line of a key body)."""
        if self.token is not None:
            yield self.token.secret.get_secret_value()
        if self.ssh is not None:
            for item in (self.ssh.private_key, self.ssh.passphrase):
                if item is not None:
                    value = item.get_secret_value()
                    yield value
                    # A fragment of a key (one base64 line) is still a leak.
                    for raw in value.splitlines():
                        line = raw.strip()
                        if len(line) >= 16 and not line.startswith("-----"):
                            yield line

    def changed_fields(self, newer: ClusterCredentials) -> list[str]:
        """Names (never values) of what differs in `newer`."""
        changed: list[str] = []
        old_t, new_t = self.token, newer.token
        if (old_t.token_id if old_t else None) != (new_t.token_id if new_t else None):
            changed.append("token_id")
        old_s = old_t.secret.get_secret_value() if old_t else None
        new_s = new_t.secret.get_secret_value() if new_t else None
        if old_s != new_s:
            changed.append("token_secret")
        none: tuple[Any, ...] = (None, None, None, None, {})
        a = self.ssh._comparable() if self.ssh else none
        b = newer.ssh._comparable() if newer.ssh else none
        for name, x, y in zip(SSH_KEYS, a, b, strict=True):
            if x != y:
                changed.append(f"ssh_{name}")
        return changed


def _text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SecretSourceError(f"{where}: {key} must be a string")
    return value if value.strip() else None


def _host_keys(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SecretSourceError(
                f"{where}: ssh_host_keys must be a mapping or JSON text "
                '{"node": ["known_hosts line", ...]}'
            ) from None
    if not isinstance(value, Mapping):
        raise SecretSourceError(f"{where}: ssh_host_keys must map node names to key lines")
    result: dict[str, tuple[str, ...]] = {}
    for node, given in value.items():
        if not isinstance(node, str) or not _NODE_RE.match(node):
            raise SecretSourceError(f"{where}: ssh_host_keys has a key that is not a node name")
        lines = given.splitlines() if isinstance(given, str) else given
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise SecretSourceError(f"{where}: ssh_host_keys.{node} must be a list of lines")
        kept = tuple(
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        )
        for line in kept:
            if len(line.split()) < 2 or "\n" in line:
                raise SecretSourceError(
                    f"{where}: ssh_host_keys.{node} has a line that is not "
                    "'[host] keytype base64-key' (known_hosts format)"
                )
        result[node] = kept
    return result


def credentials_from_mapping(
    data: Mapping[str, Any],
    *,
    where: str,
    fallback_token_id: str | None,
    origin: str,
    version: str | None = None,
    unknown: list[str] | None = None,
) -> ClusterCredentials:
    """Validate a source's payload. `where` names the source in errors; unknown keys are
    reported through `unknown` (names only) rather than refused, since a Vault secret may be
    shared with other tools."""
    flat: dict[str, Any] = dict(data)
    ssh_table = flat.pop("ssh", None)
    if ssh_table is not None:
        if not isinstance(ssh_table, Mapping):
            raise SecretSourceError(f"{where}: ssh must be a table of {', '.join(SSH_KEYS)}")
        for key, value in ssh_table.items():
            if key not in SSH_KEYS:
                if unknown is not None:
                    unknown.append(f"ssh.{key}")
                continue
            flat.setdefault(f"ssh_{key}", value)
    if unknown is not None:
        unknown.extend(sorted(str(k) for k in flat if k not in KNOWN_KEYS))

    secret = _text(flat, "token_secret", where)
    if secret is None:
        raise SecretSourceError(f"{where}: token_secret is missing or empty")
    token_id = _text(flat, "token_id", where) or fallback_token_id
    if token_id is None:
        raise SecretSourceError(
            f"{where}: token_id is missing; add it there or set token_id in the cluster's config"
        )
    if not TOKEN_ID_RE.match(token_id):
        raise SecretSourceError(
            f"{where}: token_id must look like user@realm!tokenid (for example pvemcp@pve!gateway)"
        )

    return ClusterCredentials(
        token=ApiToken(token_id, SecretStr(secret)),
        ssh=_ssh(flat, where),
        origin=origin,
        version=version,
    )


def _ssh(flat: Mapping[str, Any], where: str) -> SshCredentials | None:
    user = _text(flat, "ssh_user", where)
    key = _text(flat, "ssh_private_key", where)
    key_path = _text(flat, "ssh_key_path", where)
    passphrase = _text(flat, "ssh_passphrase", where)
    host_keys = _host_keys(flat.get("ssh_host_keys"), where)
    if user is None and (key or key_path or passphrase or host_keys):
        raise SecretSourceError(f"{where}: SSH settings are present but ssh_user is missing")
    if user is None:
        return None
    if key is not None and key_path is not None:
        raise SecretSourceError(f"{where}: set ssh_private_key or ssh_key_path, not both")
    if key is not None and "PRIVATE KEY-----" not in key:
        raise SecretSourceError(
            f"{where}: ssh_private_key is not a PEM or OpenSSH private key "
            "(it must start with -----BEGIN ... PRIVATE KEY-----)"
        )
    return SshCredentials(
        user=user,
        private_key=SecretStr(key) if key is not None else None,
        key_path=Path(key_path) if key_path is not None else None,
        passphrase=SecretStr(passphrase) if passphrase is not None else None,
        host_keys=host_keys,
    )


def warn_unknown_keys(cluster: str, source: str, unknown: list[str]) -> None:
    """Log the names (never values) of payload keys a source ignored: often a typo."""
    if unknown:
        structlog.get_logger(__name__).warning(
            "credentials_unknown_keys",
            cluster=cluster,
            source=source,
            keys=unknown,
            why="ignored; check for typos (see docs/secrets.md)",
        )
