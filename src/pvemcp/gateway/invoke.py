"""The one `invoke` pipeline every tool call goes through, whatever the transport.

validate → resolve cluster → policy decision → audit intent → handler (backend) → redact →
shape → audit outcome. A refusal at any step is audited too, and every failure becomes a
structured `ToolFailure` payload: no traceback or secret ever reaches the caller.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from pydantic import ValidationError

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.context import ProgressFn, ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.registry import AnySpec, ToolInput
from pvemcp.gateway.schema import compact_schema, field_hint
from pvemcp.policy.audit import AuditLog, AuditUnavailable, new_event_id
from pvemcp.policy.decision import Decision
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.errors import ProxmoxError, TaskFailed, TaskTimeout
from pvemcp.secrets.redaction import Redactor

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a transport sends back: `data` on success, `error` (a payload) on failure."""

    event_id: str
    data: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class _Call:
    """One call's facts as the pipeline learns them, for its audit records."""

    event_id: str
    principal: Principal
    tool: str
    tier: str
    started: float = field(default_factory=time.perf_counter)
    cluster: str | None = None
    arguments: dict[str, Any] | None = None
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    spec: AnySpec
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    json_fields: frozenset[str]


def _failure_from_proxmox(exc: ProxmoxError) -> ToolFailure:
    details: dict[str, Any] = {}
    if exc.status is not None:
        details["status"] = exc.status
    if exc.errors:
        details["errors"] = exc.errors
    if isinstance(exc, TaskFailed | TaskTimeout):
        details["upid"] = exc.upid
    if isinstance(exc, TaskFailed):
        details["exitstatus"] = exc.exitstatus
    field = next(iter(exc.errors), None)
    return ToolFailure(exc.code, exc.message, hint=exc.hint, field=field, details=details)


def _known_failure(exc: BaseException) -> ToolFailure | None:
    """The failure to report for `exc`; a tool's concurrent fetches raise an exception group,
    whose first Proxmox or tool failure is the one that explains the call."""
    if isinstance(exc, ToolFailure):
        return exc
    if isinstance(exc, ProxmoxError):
        return _failure_from_proxmox(exc)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _known_failure(inner)
            if found is not None:
                return found
    return None


class Gateway:
    """Holds the tool registry and runs calls through policy, audit and redaction."""

    def __init__(
        self,
        *,
        tools: Iterable[AnySpec],
        clusters: ClusterPool,
        policy: PolicyEngine,
        audit: AuditLog,
        redactor: Redactor,
    ) -> None:
        self._tools: dict[str, _Prepared] = {}
        for spec in tools:
            if spec.name in self._tools:
                raise ValueError(f"tool {spec.name} is registered twice")
            schema = compact_schema(spec.input_model)
            json_fields = frozenset(
                name
                for name, prop in schema.get("properties", {}).items()
                if isinstance(prop, dict) and prop.get("type") in ("array", "object")
            )
            self._tools[spec.name] = _Prepared(
                spec, schema, compact_schema(spec.output_model), json_fields
            )
        self.clusters = clusters
        self.policy = policy
        self.audit = audit
        self.redactor = redactor

    def specs(self) -> list[AnySpec]:
        return [prepared.spec for prepared in self._tools.values()]

    def visible_specs(self, principal: Principal) -> list[AnySpec]:
        """The tools policy could allow this caller: the only ones its tools/list shows."""
        return [
            spec
            for spec in self.specs()
            if self.policy.could_allow(principal, spec.name, spec.tier)
        ]

    def input_schema(self, name: str) -> dict[str, Any]:
        return self._tools[name].input_schema

    def output_schema(self, name: str) -> dict[str, Any]:
        return self._tools[name].output_schema

    def _validate(self, prepared: _Prepared, arguments: Mapping[str, Any] | None) -> ToolInput:
        raw = dict(arguments or {})
        # Some clients send nested values as JSON text; accept it, then validate strictly.
        for name in prepared.json_fields:
            value = raw.get(name)
            if isinstance(value, str) and value[:1] in ("[", "{"):
                with contextlib.suppress(json.JSONDecodeError):
                    raw[name] = json.loads(value)
        try:
            validated: ToolInput = prepared.spec.input_model.model_validate(raw)
            return validated
        except ValidationError as exc:
            raise self._invalid(prepared, exc) from None

    @staticmethod
    def _invalid(prepared: _Prepared, exc: ValidationError) -> ToolFailure:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "(arguments)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown argument"
            problems.append({"field": where, "message": message})
        first = problems[0]
        field = first["field"]
        top = field.split(".", 1)[0]
        accepted = sorted(prepared.input_schema.get("properties", {}))
        if top in accepted:
            hint = field_hint(prepared.input_schema, top)
        else:
            hint = "Accepted arguments: " + ", ".join(accepted)
        return ToolFailure(
            "invalid_argument",
            f"{field}: {first['message']}",
            field=field,
            hint=hint,
            details={"problems": problems} if len(problems) > 1 else None,
        )

    async def invoke(
        self,
        principal: Principal,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        progress: ProgressFn | None = None,
    ) -> ToolResult:
        """Run one tool call end to end and return its (redacted) result or error."""
        prepared = self._tools.get(name)
        call = _Call(new_event_id(), principal, name, prepared.spec.tier if prepared else "unknown")
        if prepared is None:
            return self._refused(
                call,
                ToolFailure(
                    "unknown_tool",
                    f"no tool named {name!r}",
                    hint="Call tools/list for the available tools.",
                ),
            )
        spec = prepared.spec
        try:
            args = self._validate(prepared, arguments)
            call.cluster, cluster = self.clusters.resolve(args.cluster)
        except ToolFailure as failure:
            return self._refused(call, failure)

        call.arguments = self.redactor.value(args.model_dump(mode="json", exclude_none=True))
        call.decision = decision = self.policy.decide(
            principal,
            PolicyRequest(
                tool=name, tier=spec.tier, cluster=call.cluster, arguments=args.model_dump()
            ),
        )
        if not decision.allowed:
            return self._refused(
                call,
                ToolFailure(
                    "denied",
                    f"policy denies {name} for {principal.subject}: {decision.reason}",
                    hint="Ask an operator to allow it in the gateway policy, or use a read tool.",
                    details={"rules": list(decision.rule_ids)},
                ),
            )

        backend = self.clusters.backend(call.cluster)
        if spec.tier.records_intent:
            try:
                await self.audit.intent(
                    call.event_id,
                    principal,
                    tool=name,
                    tier=spec.tier,
                    cluster=call.cluster,
                    arguments=call.arguments,
                    decision=decision,
                    backend=backend.name,
                )
            except AuditUnavailable as exc:
                log.error("audit_intent_failed", tool=name, event_id=call.event_id, error=str(exc))
                refusal = ToolFailure(
                    "audit_unavailable",
                    f"the call was refused because its audit record cannot be written: {exc}",
                    hint="An operator must fix the audit log (disk, permissions); reads work.",
                )
                return ToolResult(call.event_id, error=self.redactor.value(refusal.payload()))

        ctx = ToolContext(
            principal=principal,
            cluster_name=call.cluster,
            cluster=cluster,
            backend=backend,
            progress=progress,
        )
        status, error_code = "error", None
        try:
            output = await spec.handler(ctx, args)
            data = self.redactor.value(output.model_dump(mode="json", exclude_none=True))
            status = "ok"
            return ToolResult(call.event_id, data=data)
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except Exception as exc:
            known = _known_failure(exc)
            if known is None:
                log.exception("tool_crashed", tool=name, event_id=call.event_id)
                known = ToolFailure(
                    "internal_error",
                    f"{name} failed unexpectedly (audit event {call.event_id})",
                    hint="This is a gateway bug; the operator's log has the details.",
                )
            error_code = known.code
            return ToolResult(call.event_id, error=self.redactor.value(known.payload()))
        finally:
            self._finish(call, status, error_code, ctx.upids)

    def _finish(self, call: _Call, status: str, error_code: str | None, upids: list[str]) -> None:
        duration_ms = (time.perf_counter() - call.started) * 1000
        risky = call.tier != "read"
        try:
            self.audit.outcome(
                call.event_id,
                call.principal,
                tool=call.tool,
                tier=call.tier,
                cluster=call.cluster,
                # The intent record already holds the arguments of a risky call.
                arguments=None if risky else call.arguments,
                decision=None if risky else call.decision,
                status=status,
                duration_ms=duration_ms,
                error_code=error_code,
                upids=upids,
                phase="outcome" if risky else "record",
            )
        except AuditUnavailable as exc:
            log.error(
                "audit_outcome_failed", tool=call.tool, event_id=call.event_id, error=str(exc)
            )
        log.info(
            "tool_call",
            tool=call.tool,
            status=status,
            error=error_code,
            duration_ms=round(duration_ms, 2),
            subject=call.principal.subject,
            event_id=call.event_id,
        )

    def _refused(self, call: _Call, failure: ToolFailure) -> ToolResult:
        """Record a call that never reached a backend, and return its error."""
        try:
            self.audit.outcome(
                call.event_id,
                call.principal,
                tool=call.tool,
                tier=call.tier,
                cluster=call.cluster,
                arguments=call.arguments,
                decision=call.decision,
                status="denied" if failure.code == "denied" else "rejected",
                duration_ms=(time.perf_counter() - call.started) * 1000,
                error_code=failure.code,
                phase="record",
            )
        except AuditUnavailable as exc:
            log.error("audit_record_failed", tool=call.tool, event_id=call.event_id, error=str(exc))
        log.info("tool_refused", tool=call.tool, error=failure.code, subject=call.principal.subject)
        return ToolResult(call.event_id, error=self.redactor.value(failure.payload()))

    async def aclose(self) -> None:
        await self.clusters.aclose()
        self.audit.close()
