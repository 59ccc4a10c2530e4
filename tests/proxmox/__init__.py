"""Tests of the Proxmox backend layer: UPIDs, encoding, TLS, REST and tasks."""
