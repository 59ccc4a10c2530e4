"""What a tool handler gets: the target cluster's API, task waiting, and progress.

Every backend call a tool makes goes through here, so the gateway sees the task UPIDs a
call started (for audit) and the tool never holds a credential or a connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pvemcp.config import ClusterConfig
from pvemcp.gateway.plan import Plan
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ApiResult, Method, Params, ProxmoxBackend
from pvemcp.proxmox.tasks import TaskStatus, get_task_log, get_task_status, wait_for_task
from pvemcp.proxmox.upid import is_upid

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


class ToolContext:
    """Per-call handle a tool uses to reach Proxmox."""

    def __init__(
        self,
        *,
        principal: Principal,
        cluster_name: str,
        cluster: ClusterConfig,
        backend: ProxmoxBackend,
        progress: ProgressFn | None,
    ) -> None:
        self.principal = principal
        self.cluster_name = cluster_name
        self.cluster = cluster
        self._backend = backend
        self._progress = progress
        self.upids: list[str] = []
        self.plan: Plan | None = None
        """The plan the gateway confirmed for this call (risky tools only)."""

    @property
    def backend_name(self) -> str:
        return self._backend.name

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        result = await self._backend.call(method, path, params)
        if method != "GET" and isinstance(result.data, str) and is_upid(result.data):
            self.upids.append(result.data)
        return result

    async def get(self, path: str, params: Params | None = None) -> Any:
        return (await self.call("GET", path, params)).data

    async def post(self, path: str, params: Params | None = None) -> Any:
        return (await self.call("POST", path, params)).data

    async def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        if self._progress is not None:
            await self._progress(progress, total, message)

    async def wait_task(self, upid: str, timeout: float | None = None) -> TaskStatus:
        """Wait for a task, reporting MCP progress; raises TaskFailed / TaskTimeout."""
        return await wait_for_task(
            self._backend,
            upid,
            timeout=timeout if timeout is not None else self.cluster.task_timeout,
            on_progress=self._progress,
        )

    async def task_status(self, upid: str) -> TaskStatus:
        return await get_task_status(self._backend, upid)

    async def task_log(
        self, upid: str, start: int, limit: int
    ) -> tuple[list[tuple[int, str]], int]:
        """A page of a task's log as `(n, text)` lines, and the log's total line count."""
        return await get_task_log(self._backend, upid, start=start, limit=limit)
