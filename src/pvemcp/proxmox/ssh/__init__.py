"""SSH to the Proxmox nodes: pooled, pinned connections that run argv lists with limits.

`SshPool.run(node, argv)` is the one way to run something on a node; it returns a
`CommandResult` with everything the audit log needs. Errors are `SshError` subclasses of
`ProxmoxError` (see `pvemcp.proxmox.errors`).

The names that need asyncssh (`SshPool`, `SshCredentials`, ...) load on first use: a
gateway whose clusters have no `[ssh]` never imports the SSH stack (about 70 modules and
a third of a cold start), while `from pvemcp.proxmox.ssh import SshPool` still works.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pvemcp.proxmox.ssh.command import check_operand, printable, wire_command
from pvemcp.proxmox.ssh.result import CommandResult

if TYPE_CHECKING:
    from pvemcp.proxmox.ssh.connect import SshCredentials
    from pvemcp.proxmox.ssh.pool import CredentialSource, SshPool, node_address

_LAZY = {
    "SshCredentials": "pvemcp.proxmox.ssh.connect",
    "CredentialSource": "pvemcp.proxmox.ssh.pool",
    "SshPool": "pvemcp.proxmox.ssh.pool",
    "node_address": "pvemcp.proxmox.ssh.pool",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CommandResult",
    "CredentialSource",
    "SshCredentials",
    "SshPool",
    "check_operand",
    "node_address",
    "printable",
    "wire_command",
]
