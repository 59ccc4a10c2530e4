"""pvemcp: an audited MCP gateway that lets AI agents operate Proxmox VE clusters."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pvemcp")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
