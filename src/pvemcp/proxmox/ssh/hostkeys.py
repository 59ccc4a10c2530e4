"""Host-key pinning per node: no trust on first use, and errors an operator can act on.

A node's accepted keys are the lines under `ssh_host_keys.<node>` in the cluster's
credentials plus the entries of the configured `known_hosts` file that match the host the
node is configured at (its `ssh.nodes` entry, else its name), never the address that name
resolves to: otherwise any other name of that address (`localhost`, `2130706435`) would
be trusted with the node's key. Credential lines are bound to their node by the mapping
key, so their host field (`pve1`, `[10.0.0.1]:22`) is informative and may be left out
(`ssh-ed25519 AAAA...`); `@cert-authority` and `@revoked` markers work in both places.

asyncssh checks the presented key against these and, when none matches, asks the client
object (`PinningClient.validate_host_public_key`), which records the key and says no. That
is how a refusal can show the fingerprint that was seen and the exact line that would pin
it, while the decision itself stays asyncssh's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncssh

from pvemcp.proxmox.errors import SshHostKeyError

_KeyLists = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]


def _is_key_type(word: str) -> bool:
    return word.startswith(("ssh-", "ecdsa-", "sk-")) or "@openssh.com" in word


def _parse_line(node: str, line: str) -> tuple[str | None, asyncssh.SSHKey]:
    """(marker, key) of one credential line; the host field is optional and ignored."""
    words = line.split()
    marker = words.pop(0) if words and words[0].startswith("@") else None
    if marker not in (None, "@cert-authority", "@revoked"):
        raise SshHostKeyError(
            f"ssh_host_keys.{node} has an unknown marker {marker!r} (use @cert-authority or "
            "@revoked)",
            node=node,
        )
    if words and not _is_key_type(words[0]):
        words.pop(0)
    try:
        key = asyncssh.import_public_key(" ".join(words[:2]))
    except (asyncssh.KeyImportError, ValueError):
        raise SshHostKeyError(
            f"ssh_host_keys.{node} has a line that is not '[host] keytype base64-key'",
            node=node,
        ) from None
    return marker, key


class HostKeyPins:
    """The keys one node may present; asyncssh's `known_hosts` callable for that node."""

    def __init__(
        self, node: str, lines: Sequence[str], known_hosts: Path | None, *, host: str
    ) -> None:
        self.node = node
        self.host = host
        """The host as configured, the only name `known_hosts` entries are matched by."""
        self._trusted: list[asyncssh.SSHKey] = []
        self._authorities: list[asyncssh.SSHKey] = []
        self._revoked: list[asyncssh.SSHKey] = []
        for line in lines:
            marker, key = _parse_line(node, line)
            {None: self._trusted, "@cert-authority": self._authorities, "@revoked": self._revoked}[
                marker
            ].append(key)
        self._file: asyncssh.SSHKnownHosts | None = None
        self._file_path = known_hosts
        if known_hosts is not None:
            # Read at every connect, so an edited file applies to the next connection.
            try:
                self._file = asyncssh.read_known_hosts(str(known_hosts))
            except (OSError, ValueError) as exc:
                raise SshHostKeyError(
                    f"the known_hosts file {known_hosts} cannot be used "
                    f"({getattr(exc, 'strerror', None) or exc}); nothing was sent",
                    node=node,
                ) from None
        self.pinned: list[asyncssh.SSHKey] = []
        """The keys that were accepted for the address, after the lookup."""

    def __call__(self, host: str, addr: str, port: int | None) -> _KeyLists:
        """asyncssh's lookup for the host it dialled; `host` and `addr` are ignored for the
        configured host name (an IP literal there still matches CIDR entries)."""
        trusted, authorities, revoked = (
            list(self._trusted),
            list(self._authorities),
            list(self._revoked),
        )
        if self._file is not None:
            matched = self._file.match(self.host, "", port)
            trusted.extend(matched[0])
            authorities.extend(matched[1])
            revoked.extend(matched[2])
        self.pinned = trusted + authorities
        return trusted, authorities, revoked

    def rejected(
        self, host: str, port: int, seen: asyncssh.SSHKey | None, reason: str
    ) -> SshHostKeyError:
        """The error for a refused key: the fingerprint seen and the line that pins it."""
        where = f"{host}:{port}"
        if seen is None:
            return SshHostKeyError(
                f"node {self.node} ({where}): host key refused ({reason}); nothing was sent",
                node=self.node,
            )
        fingerprint = str(seen.get_fingerprint("sha256"))
        key_type, blob = seen.export_public_key("openssh").decode().split()[:2]
        address = host if port == 22 else f"[{host}]:{port}"
        pin = f"{address} {key_type} {blob}"
        how = f'ssh_host_keys.{self.node} = ["{pin}"] in the cluster\'s credentials' + (
            f", or add that line to {self._file_path}" if self._file_path else ""
        )
        if self.pinned:
            expected = ", ".join(str(k.get_fingerprint("sha256")) for k in self.pinned)
            message = (
                f"node {self.node} ({where}) presented host key {fingerprint} ({key_type}), "
                f"which differs from the pinned key(s) {expected}. The node may have been "
                "reinstalled, or someone is intercepting the connection; nothing was sent. "
                f"Only after verifying the new key on the node, replace the pin: {how}"
            )
        else:
            message = (
                f"node {self.node} ({where}) presented host key {fingerprint} ({key_type}), "
                "but no host key is pinned for this node, and keys are never trusted on first "
                f"use; nothing was sent. After verifying it on the node, pin it: {how}"
            )
        return SshHostKeyError(message, node=self.node, fingerprint=fingerprint, pin_line=pin)


class PinningClient(asyncssh.SSHClient):
    """asyncssh client callbacks: remembers a refused host key and a lost connection."""

    def __init__(self) -> None:
        self.refused_key: asyncssh.SSHKey | None = None
        self.lost = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Called only for a key that matched no pin: record it for the error, refuse it.
        self.refused_key = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
