"""Talking to Proxmox VE: the backend interface, the REST backend, TLS, UPIDs and tasks.

Import the submodules directly (`pvemcp.proxmox.rest`, `pvemcp.proxmox.tasks`, ...); this
package imports nothing itself, so loading the error types stays cheap. Imports point one
way: this package may use `pvemcp.config`, never the gateway, tools, transports, policy or
secrets.
"""
