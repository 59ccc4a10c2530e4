"""The pvesh backend: PVE API calls run as `pvesh` on a node over SSH.

For sites that expose SSH but not port 8006. A call becomes
`pvesh get|set|create|delete <path> --output-format json --name=value ...` on the node the
path names (`/nodes/<node>/...`), else on the cluster's default node, and its answer and
errors are turned into the same `ApiResult` and `ProxmoxError` classes as the REST
backend's, so a typed tool cannot tell them apart.

pvesh semantics handled here (proxmox-api.md, "pvesh over SSH"):
- only the last stdout line is the result (async methods print the task's log first);
  empty means null, a UPID comes back as a string;
- pvesh exits 0 even when the task it ran failed: callers wait for the UPID with
  `wait_for_task`, which polls the task status through this same backend;
- errors are `<code> <message>` plus `param: error` lines on stderr, or
  `No '<cmd>' handler defined for '<path>'` (exit 1) for an unknown path;
- pvesh prints only `data`, never `total`: `ApiResult.total` is always None, and paged
  readers (task logs) fall back to counting what they got.

Parameters use `--name=value`, one argument each, so a value starting with `-` can never
be read as an option; names that are pvesh's own options are refused. pvesh runs as the
SSH user with every permission check passing (root@pam), so the policy engine is the
only gate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from urllib.parse import unquote

from pvemcp.config import ClusterConfig
from pvemcp.proxmox.backend import ApiResult, Method, Params
from pvemcp.proxmox.encoding import PathError, encode_path, param_pairs
from pvemcp.proxmox.errors import (
    NotImplementedOnServer,
    ParameterError,
    ProxmoxError,
    ServerError,
    SshError,
    error_class_for,
)
from pvemcp.proxmox.ssh import CommandResult, SshPool, check_operand, printable
from pvemcp.proxmox.upid import parse_upid

_COMMANDS: dict[str, str] = {"GET": "get", "PUT": "set", "POST": "create", "DELETE": "delete"}
# pvesh's own options: a parameter with one of these names would change how pvesh runs
# or prints, not what the API receives.
_RESERVED = frozenset(
    {"output-format", "noproxy", "nooutput", "quiet", "noborder", "noheader", "human-readable"}
)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_STATUS_RE = re.compile(r"^(\d{3}) (.+)$")
_PARAM_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-\[\]]*): (.+)$")
_NO_HANDLER_RE = re.compile(r"No '\w+' handler defined for '[^']*'")
_NOT_RUNNABLE = {126: "is not executable", 127: "is not installed or not on the PATH"}


class PveshBackend:
    """`ProxmoxBackend` over `pvesh` on the nodes, through the cluster's `SshPool`.

    `pvesh` is the argv prefix that starts it: `("pvesh",)` for a root login, or for
    instance `("sudo", "-n", "/usr/bin/pvesh")` for a dedicated user with a sudoers entry.
    GETs get the pool's `command_timeout`; writes may run a task in the foreground, so
    they get the cluster's `task_timeout` (when larger).
    """

    name = "pvesh"

    def __init__(
        self, cluster: ClusterConfig, pool: SshPool, *, pvesh: Sequence[str] = ("pvesh",)
    ) -> None:
        if not pvesh:
            raise ValueError("pvesh must name the program to run")
        self._cluster = cluster
        self._pool = pool
        self._pvesh = tuple(pvesh)

    def __repr__(self) -> str:
        return f"PveshBackend(cluster={self._pool.cluster!r}, pvesh={self._pvesh!r})"

    async def aclose(self) -> None:
        """Nothing of its own to release: the pool belongs to the cluster pool."""

    async def call(self, method: Method, path: str, params: Params | None = None) -> ApiResult:
        """One API call as pvesh; see `ProxmoxBackend.call`. Raises a `ProxmoxError`."""
        argv, node = self._command(method, path, params)
        timeout = self._pool.config.command_timeout
        if method != "GET":
            timeout = max(timeout, self._cluster.task_timeout)
        try:
            result = await self._pool.run(node, argv, timeout=timeout)
        except SshError as exc:
            exc.method, exc.path = method, path
            raise
        if result.capture_truncated:
            raise ServerError(
                f"pvesh's answer to {method} {path} is larger than artifact_max_bytes "
                f"({self._pool.config.artifact_max_bytes} bytes)",
                method=method,
                path=path,
            )
        if result.exit_code != 0:
            raise self._failure(result, method, path)
        return ApiResult(data=self._data(result, method, path), total=None)

    def _command(self, method: str, path: str, params: Params | None) -> tuple[list[str], str]:
        """The argv and the node to run it on; bad input is a `ParameterError`."""
        command = _COMMANDS.get(method)
        if command is None:
            raise ParameterError(
                f"method {method!r} is not one of GET, POST, PUT, DELETE",
                errors={"method": "must be GET, POST, PUT or DELETE"},
                method=method,
                path=path,
            )
        try:
            segments = [unquote(s) for s in encode_path(path)[1:].split("/")]
            pairs = param_pairs(params)
        except PathError as exc:
            raise ParameterError(
                str(exc), errors={"path": str(exc)}, method=method, path=path
            ) from None
        except ValueError as exc:
            raise ParameterError(
                str(exc), errors={"params": str(exc)}, method=method, path=path
            ) from None
        options: list[str] = []
        for key, value in pairs:
            if not _NAME_RE.match(key) or key in _RESERVED:
                reason = "is one of pvesh's own options" if key in _RESERVED else "is not valid"
                raise ParameterError(
                    f"parameter name {key!r} {reason}",
                    errors={key: f"parameter name {reason}"},
                    method=method,
                    path=path,
                )
            options.append(f"--{key}={value}")
        pvesh_path = check_operand("/" + "/".join(segments), "path")
        argv = [*self._pvesh, command, pvesh_path, "--output-format", "json", *options]
        return argv, self._node(segments, method, path)

    def _node(self, segments: list[str], method: str, path: str) -> str:
        """The node in `/nodes/<node>/...` (pvesh would proxy there anyway), else the
        cluster's default node, else the first node with an SSH address."""
        if len(segments) >= 2 and segments[0] == "nodes":
            return segments[1]
        ssh = self._pool.config
        node = self._cluster.default_node or next(iter(ssh.nodes), None)
        if node is None:
            raise SshError(
                f"no node to run pvesh on for {method} {path}: set the cluster's default_node "
                "or list the nodes in ssh.nodes",
                method=method,
                path=path,
            )
        return node

    @staticmethod
    def _data(result: CommandResult, method: str, path: str) -> object:
        """The last stdout line as JSON; nothing means null; a bare UPID is accepted."""
        lines = result.stdout.decode("utf-8", errors="replace").rstrip("\r\n").split("\n")
        last = lines[-1].strip()
        if not last:
            return None
        try:
            return json.loads(last)
        except ValueError:
            pass
        try:
            return str(parse_upid(last))
        except ValueError:
            raise ServerError(
                f"pvesh printed no JSON result for {method} {path}: "
                f"{printable(last.encode())[:200]!r}",
                method=method,
                path=path,
                status=200,
            ) from None

    def _failure(self, result: CommandResult, method: str, path: str) -> ProxmoxError:
        """pvesh's non-zero exit as the error REST would have raised."""
        text = printable(result.stderr)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if result.exit_code is None:
            return ServerError(
                f"pvesh was ended by signal {result.signal or 'unknown'} during {method} {path}",
                method=method,
                path=path,
            )
        not_runnable = _NOT_RUNNABLE.get(result.exit_code)
        if not_runnable is not None:
            return SshError(
                f"{self._pvesh[0]} {not_runnable} for user {result.user} on node "
                f"{result.node} (exit {result.exit_code}): {' '.join(lines)[:200]}",
                node=result.node,
                method=method,
                path=path,
            )
        handler = _NO_HANDLER_RE.search(text)
        if handler is not None:
            return NotImplementedOnServer(handler.group(0), status=501, method=method, path=path)
        message = lines[0] if lines else f"pvesh exited with status {result.exit_code}"
        status: int | None = None
        matched = _STATUS_RE.match(message)
        if matched is not None:
            status, message = int(matched.group(1)), matched.group(2).strip()
        errors: dict[str, str] = {}
        if status == 400 or "Parameter verification failed" in message:
            for line in lines[1:]:
                param = _PARAM_RE.match(line)
                if param is not None:
                    errors[param.group(1)] = param.group(2).strip()
        cls = error_class_for(status, message, errors)
        return cls(message, status=status, errors=errors, method=method, path=path)
