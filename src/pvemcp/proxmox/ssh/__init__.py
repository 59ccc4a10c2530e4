"""SSH to the Proxmox nodes: pooled, pinned connections that run argv lists with limits.

`SshPool.run(node, argv)` is the one way to run something on a node; it returns a
`CommandResult` with everything the audit log needs. Errors are `SshError` subclasses of
`ProxmoxError` (see `pvemcp.proxmox.errors`).
"""

from pvemcp.proxmox.ssh.command import check_operand, printable, wire_command
from pvemcp.proxmox.ssh.connect import SshCredentials
from pvemcp.proxmox.ssh.pool import CredentialSource, SshPool, node_address
from pvemcp.proxmox.ssh.result import CommandResult

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
