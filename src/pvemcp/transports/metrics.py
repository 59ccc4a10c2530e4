"""Prometheus metrics for `/metrics`: tool calls, latency, auth failures, PVE errors, limits.

Each app owns its registry (not the library's global one), so two servers in one process
(tests, or a future multi-listener set-up) never mix or double-register their series.
Labels are bounded sets: tool names come from the registry, outcomes and PVE codes from the
gateway's error codes, auth reasons from the verifier's reason codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from pvemcp.gateway.invoke import ToolResult
from pvemcp.gateway.readcache import ReadCache

# The `code` values of `pvemcp.proxmox.errors.ProxmoxError` and its subclasses: failures
# that came from Proxmox (or the way to it) rather than from policy or validation. Kept
# here because transports may not import `proxmox`; a test keeps the two in step.
PVE_ERROR_CODES = frozenset(
    {
        "proxmox_error",
        "invalid_parameter",
        "authentication_failed",
        "credentials_unavailable",
        "permission_denied",
        "not_found",
        "proxmox_refused",
        "not_implemented",
        "timeout",
        "unreachable",
        "tls_verification_failed",
        "task_failed",
        "task_wait_timeout",
        "task_status_unknown",
        "bad_upstream_answer",
        "upstream_answer_too_large",
        "unexpected_redirect",
        "ssh_error",
        "ssh_host_key_rejected",
        "ssh_auth_failed",
        "ssh_unreachable",
        "ssh_command_timeout",
        # Files on a node (pvemcp.proxmox.ssh.fileops): what the node's file system answered.
        "file_error",
        "path_refused",
        "path_changed",
        "file_too_large",
        "precondition_failed",
    }
)

# Tool latency spans a cached read (milliseconds) to a waited-for task (minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format, which every Prometheus version scrapes."""


class _ReadCacheCollector(Collector):
    """Each cluster's read-cache counters, read from the caches at scrape time (they count
    for every transport, so they are not this app's to increment)."""

    def __init__(self, caches: Callable[[], Mapping[str, ReadCache]]) -> None:
        self._caches = caches

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "pvemcp_read_cache_hits",
            "Read-tool API reads answered by the cluster's read cache or a request in flight.",
            labels=["cluster"],
        )
        misses = CounterMetricFamily(
            "pvemcp_read_cache_misses",
            "Read-tool API reads sent to Proxmox.",
            labels=["cluster"],
        )
        for name, cache in sorted(self._caches().items()):
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
        yield hits
        yield misses


class _AuditFailureCollector(Collector):
    """The audit records that could not be written, by phase, read from the log's own count
    at scrape time (calls of every transport count)."""

    def __init__(self, failures: Mapping[str, int]) -> None:
        self._failures = failures

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "pvemcp_audit_write_failures",
            "Audit records that could not be written, by phase. `record`: reads and refusals "
            "answered unrecorded (withheld with [audit] require_for_reads); `intent`: risky "
            "calls refused.",
            labels=["phase"],
        )
        for phase, count in sorted(self._failures.items()):
            family.add_metric([phase], count)
        yield family


class Metrics:
    """The counters and histograms one HTTP app exposes; `read_caches` gives the clusters'
    read caches (`ClusterPool.read_caches`), `audit_failures` is the audit log's count of
    records it could not write (`AuditLog.write_failures`)."""

    def __init__(
        self,
        read_caches: Callable[[], Mapping[str, ReadCache]],
        audit_failures: Mapping[str, int],
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ReadCacheCollector(read_caches))
        self.registry.register(_AuditFailureCollector(audit_failures))
        self._calls = Counter(
            "pvemcp_tool_calls",
            "Tool calls by tool and outcome (`ok` or the error code).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "pvemcp_tool_call_duration_seconds",
            "Tool call latency, from the transport's point of view.",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._pve_errors = Counter(
            "pvemcp_pve_errors",
            "Failed calls whose cause was Proxmox (or the way to it), by error code.",
            ["code"],
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "pvemcp_auth_failures",
            "Rejected HTTP requests by authentication failure reason.",
            ["reason"],
            registry=self.registry,
        )
        self._rate_limited = Counter(
            "pvemcp_rate_limited",
            "HTTP requests refused with 429 by the per-caller rate limit.",
            registry=self.registry,
        )

    def tool_call(self, tool: str, result: ToolResult, seconds: float) -> None:
        """Count one finished call (any transport) and its latency."""
        code = str(result.error.get("code", "error")) if result.error is not None else None
        self._calls.labels(tool=tool, outcome=code or "ok").inc()
        self._latency.labels(tool=tool).observe(seconds)
        if code in PVE_ERROR_CODES:
            self._pve_errors.labels(code=code).inc()

    def auth_failure(self, reason: str) -> None:
        self._auth_failures.labels(reason=reason).inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def exposition(self) -> bytes:
        """The current values in Prometheus' text format."""
        return generate_latest(self.registry)
