"""The interface every Proxmox backend offers the gateway and the tools.

REST (this package's `rest` module) is the default; pvesh over SSH implements the same
interface later, so a typed tool never knows which one served it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Method = Literal["GET", "POST", "PUT", "DELETE"]
Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ApiResult:
    """PVE's answer: `data`, plus `total` on paged lists (task lists, task logs) and
    `changes` on a node's network list (the diff of its pending interfaces file)."""

    data: Any
    total: int | None = None
    changes: str | None = None


class ProxmoxBackend(Protocol):
    """What a backend must do: one call of the PVE API, answered or raised as ProxmoxError."""

    name: str
    """Backend kind for audit records: `rest` or `pvesh`."""

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        """Call `path` (relative to `/api2/json`, leading `/`) and return PVE's `data`.

        Booleans, lists and None in `params` are encoded the way PVE expects (booleans as
        0/1, None dropped, lists repeated). Raises a `ProxmoxError` subclass on failure.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
