"""Tests of the Proxmox VE API simulator (`pvemcp.simulator`)."""
