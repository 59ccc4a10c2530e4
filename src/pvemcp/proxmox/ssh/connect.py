"""Opening one SSH connection to a node: explicit key, pinned host key, nothing ambient.

asyncssh reads `~/.ssh/config`, the agent (`SSH_AUTH_SOCK`), default identity files,
`~/.ssh/known_hosts` and X.509 bundles unless told otherwise, so every one of those is
turned off here, and every failure leaves as an `SshError` subclass that names the cause.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh
from pydantic import SecretStr

from pvemcp.config import SshConfig
from pvemcp.proxmox.errors import SshAuthError, SshHostKeyError, SshUnreachable
from pvemcp.proxmox.ssh.hostkeys import HostKeyPins, PinningClient

KEEPALIVE_COUNT_MAX = 3


class SshCredentials(Protocol):
    """SSH login material (`pvemcp.secrets.types.SshCredentials` is one). Compared with
    `==` to notice a rotation."""

    @property
    def user(self) -> str: ...

    @property
    def private_key(self) -> SecretStr | None: ...

    @property
    def key_path(self) -> Path | None: ...

    @property
    def passphrase(self) -> SecretStr | None: ...

    @property
    def host_keys(self) -> Mapping[str, Sequence[str]]:
        """Pinned known_hosts lines per node."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """A node and where its sshd listens."""

    cluster: str
    node: str
    host: str
    port: int

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def load_client_key(target: Target, credentials: SshCredentials) -> asyncssh.SSHKey:
    """The explicit client key from the credentials (text or file, maybe encrypted)."""
    passphrase = credentials.passphrase.get_secret_value() if credentials.passphrase else None
    source = "ssh_private_key" if credentials.private_key is not None else "ssh_key_path"
    owner = f"cluster {target.cluster}"
    try:
        if credentials.private_key is not None:
            return asyncssh.import_private_key(
                credentials.private_key.get_secret_value(), passphrase
            )
        if credentials.key_path is not None:
            return asyncssh.read_private_key(credentials.key_path, passphrase)
    except asyncssh.KeyEncryptionError:
        raise SshAuthError(
            f"the SSH private key ({source}) of {owner} could not be decrypted: "
            "ssh_passphrase is wrong",
            node=target.node,
        ) from None
    except asyncssh.KeyImportError as exc:
        reason = (
            "it is encrypted and no ssh_passphrase is set"
            if "Passphrase" in str(exc)
            else "it is not an OpenSSH or PEM private key"
        )
        raise SshAuthError(
            f"the SSH private key ({source}) of {owner} cannot be used: {reason}",
            node=target.node,
        ) from None
    except OSError as exc:
        raise SshAuthError(
            f"the SSH key file {credentials.key_path} of {owner} cannot be read ({exc.strerror})",
            node=target.node,
        ) from None
    raise SshAuthError(
        f"{owner} has no SSH client key: set ssh_private_key or ssh_key_path (agents and "
        "~/.ssh keys are never used)",
        node=target.node,
    )


def _options(
    config: SshConfig, credentials: SshCredentials, key: asyncssh.SSHKey, pins: HostKeyPins
) -> dict[str, Any]:
    return {
        "username": credentials.user,
        # Nothing ambient: no ~/.ssh/config, agent, default keys or known_hosts.
        "config": None,
        "known_hosts": pins,
        "x509_trusted_certs": None,
        "x509_trusted_cert_paths": [],
        "client_keys": [key],
        "agent_path": None,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "request_pty": False,
        "preferred_auth": "publickey",
        "public_key_auth": True,
        "password_auth": False,
        "kbdint_auth": False,
        "host_based_auth": False,
        "gss_auth": False,
        "gss_kex": False,
        "pkcs11_provider": None,
        "disable_trivial_auth": True,
        "connect_timeout": config.connect_timeout,
        "login_timeout": config.login_timeout,
        "keepalive_interval": config.keepalive_interval,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
    }


async def open_connection(
    target: Target, config: SshConfig, credentials: SshCredentials, key: asyncssh.SSHKey
) -> tuple[asyncssh.SSHClientConnection, PinningClient]:
    """Connect and log in; the client object reports a lost connection later."""
    pins = HostKeyPins(
        target.node,
        credentials.host_keys.get(target.node, ()),
        config.known_hosts,
        host=target.host,
    )
    client = PinningClient()
    options = _options(config, credentials, key, pins)
    try:
        conn = await asyncssh.connect(
            target.host, target.port, client_factory=lambda: client, **options
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise pins.rejected(target.host, target.port, client.refused_key, exc.reason) from None
    except asyncssh.PermissionDenied:
        raise SshAuthError(
            f"node {target.node} ({target.where}) refused the SSH login of "
            f"{credentials.user!r} with the configured key: check the node's authorized_keys "
            "for that user",
            node=target.node,
        ) from None
    except TimeoutError:
        raise SshUnreachable(
            f"node {target.node} ({target.where}): no SSH handshake within connect_timeout "
            f"({config.connect_timeout:g} s)",
            node=target.node,
        ) from None
    except (OSError, asyncssh.Error) as exc:
        if pins.pinned and client.refused_key is None:
            # Only the pinned key types were offered, and sshd drops a client that wants
            # none of its keys: find out which key it has, to report a changed key.
            changed = await _probe_changed_key(target, options, pins)
            if changed is not None:
                raise changed from None
        raise SshUnreachable(
            f"cannot connect to node {target.node} ({target.where}): {_reason(exc)}",
            node=target.node,
        ) from None
    return conn, client


async def _probe_changed_key(
    target: Target, options: dict[str, Any], pins: HostKeyPins
) -> SshHostKeyError | None:
    """Connect once more accepting any key type (still trusting only the pins) and return
    the refusal that shows the node's actual key; None when that tells nothing more."""
    client = PinningClient()
    try:
        conn = await asyncssh.connect(
            target.host,
            target.port,
            client_factory=lambda: client,
            **{**options, "server_host_key_algs": "default"},
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        reason = f"none of the pinned key types is offered: {exc.reason}"
        return pins.rejected(target.host, target.port, client.refused_key, reason)
    except (OSError, asyncssh.Error):
        return None
    conn.close()
    return None


def _reason(exc: BaseException) -> str:
    """asyncio's strerror is "Connect call failed (...)"; the errno says why."""
    if isinstance(exc, asyncssh.Error):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
