"""The one `invoke` pipeline every tool call goes through, whatever the transport.

validate → resolve cluster → (risky calls: plan → policy on the resolved target → dry run
or confirmation → audit intent) → handler (backend) → redact → shape → audit outcome.
A refusal at any step is audited too, and every failure becomes a structured `ToolFailure`
payload: no traceback or secret ever reaches the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
from pydantic import ValidationError

from pvemcp.gateway.approvals import ApprovalStore
from pvemcp.gateway.artifacts import ArtifactStore
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.confirm import CONFIRM_FIELD, Answer, ConfirmationTokens, binding
from pvemcp.gateway.context import (
    CommandRecord,
    PolicyView,
    ProgressFn,
    SecretSink,
    ToolContext,
    cluster_schema,
)
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import ApiCall, Plan
from pvemcp.gateway.registry import AnySpec, ToolInput, ToolOutput, WriteInput, generic_tier
from pvemcp.gateway.run import run_planned
from pvemcp.gateway.schema import compact_schema, field_hint
from pvemcp.gateway.taskowners import Owner, TaskDesk, TaskOwners
from pvemcp.gateway.toolsets import Catalogue, SessionToolsets
from pvemcp.gateway.undo import Undo, UndoDesk, Undoing
from pvemcp.policy.audit import AuditLog, AuditUnavailable, new_event_id, utc_now
from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.evidence import EvidenceStore, EvidenceUnavailable
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier
from pvemcp.proxmox.errors import (
    TASK_STARTED_HINT,
    ProxmoxError,
    SshError,
    SshHostKeyError,
    TaskFailed,
    TaskStatusUnknown,
    TaskTimeout,
)
from pvemcp.secrets.redaction import Redactor

log = structlog.get_logger(__name__)

READ_FILE_TOOL = "proxmox_file_read"
"""The tool whose grant decides whether a plan may show a file's current content."""

Confirmer = Callable[[str, Plan, str], Awaitable[Answer | None]]
"""Asks the human about a plan (tool, redacted plan, the call's `binding`): their answer,
or None when this client cannot be asked. It raises a `ToolFailure` for an answer that
does not hold for this call (an approval state issued for another, used, expired)."""

MAX_TOOL_NAME = 128
"""The longest tool name kept whole in an unknown-tool refusal, its record and its log line
(MCP's own limit for tool names): the name of an unknown tool comes from the caller."""

# Audit status of each refusal, by failure code; anything else is "rejected".
_REFUSAL_STATUS = {
    "denied": "denied",
    "confirmation_required": "confirmation_required",
    "confirmation_declined": "confirmation_declined",
    "confirmation_invalid": "confirmation_failed",
    "confirmation_unavailable": "confirmation_required",
    "approval_pending": "approval_pending",
}


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
    raw_arguments: dict[str, Any] | None = None
    """Unredacted, for the audit HMAC only: never written or returned."""
    decision: Decision | None = None
    target: dict[str, Any] = field(default_factory=dict)
    planned: dict[str, Any] = field(default_factory=dict)
    """What the plan says will run or be touched (argv, wire command, paths), for the
    intent record and any refusal."""
    approval: dict[str, Any] | None = None
    """How a confirmed call was approved: `decision.approval` of its intent and outcome."""
    undoing: Undoing | None = None
    """The call this one undoes (`proxmox_call_undo`), and what its guest must still be."""
    undo: Undo | None = None
    """What undoes this call, once it succeeded (its tool's `inverse`)."""

    def approval_detail(self) -> dict[str, Any]:
        """The audit keywords for the approval and the undone call, empty when none."""
        detail: dict[str, Any] = {"approval": self.approval} if self.approval else {}
        if self.undoing is not None:
            detail["undoes"] = self.undoing.event_id
        return detail


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
    if isinstance(exc, TaskFailed | TaskTimeout | TaskStatusUnknown):
        details["upid"] = exc.upid
    if isinstance(exc, TaskFailed):
        details["exitstatus"] = exc.exitstatus
    if isinstance(exc, SshError) and exc.node is not None:
        details["node"] = exc.node
    if isinstance(exc, SshHostKeyError):
        # What an operator needs to verify and pin the key: not secret, and not guessable.
        details.update(
            {k: v for k, v in (("fingerprint", exc.fingerprint), ("pin_line", exc.pin_line)) if v}
        )
    field_name = next(iter(exc.errors), None)
    return ToolFailure(exc.code, exc.message, hint=exc.hint, field=field_name, details=details)


def _naming_task(failure: ToolFailure, upids: list[str]) -> ToolFailure:
    """A failure that came after the call started a task names the task and says the
    action happened, so that the caller checks on it rather than starting it again."""
    if not upids or "upid" in failure.details:
        return failure
    upid = upids[-1]
    return ToolFailure(
        failure.code,
        f"{failure.message} (the action was started: task {upid})",
        hint=TASK_STARTED_HINT,
        field=failure.field,
        details={**failure.details, "upid": upid},
        issued=failure.issued,
    )


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


def _crash(call: _Call, stage: str) -> ToolFailure:
    """Log the traceback of an unexpected exception (called inside `except`) and return the
    failure the caller sees: no exception text, just where to look."""
    log.exception("tool_crashed", tool=call.tool, stage=stage, event_id=call.event_id)
    return ToolFailure(
        "internal_error",
        f"{call.tool} failed unexpectedly while {stage} (audit event {call.event_id})",
        hint="This is a gateway bug; the operator's log has the details.",
    )


def _risky_output_schema(base: dict[str, Any]) -> dict[str, Any]:
    """A write tool answers either its result or, for `dry_run`, just the plan: both fit.
    The plan is a bare object: the server instructions say once what it holds, and its
    schema would cost hundreds of bytes per write tool in every tools/list."""
    schema = {k: v for k, v in base.items() if k != "required"}
    # `plan` alone marks a dry run's answer; the instructions say it also holds dry_run.
    schema["properties"] = {**schema.get("properties", {}), "plan": {"type": "object"}}
    return schema


def _passed_on(error: Mapping[str, Any]) -> ToolFailure:
    """An inner call's (already redacted) error as the failure of the call that made it
    (`proxmox_call_undo`): the same code, message and hint; a confirmation token it issued stays
    issued, so redacting the outer answer does not mask it."""
    details = dict(error.get("details") or {})
    token = details.pop(CONFIRM_FIELD, None)
    return ToolFailure(
        str(error["code"]),
        str(error["message"]),
        hint=error.get("hint"),
        field=error.get("field"),
        details=details,
        issued={CONFIRM_FIELD: token} if isinstance(token, str) else None,
    )


def shown_tool_name(name: str) -> str:
    """`name` as a refusal, the audit and the log may show it: cut to `MAX_TOOL_NAME`
    characters (saying how many were dropped), so a caller cannot make each unknown-tool
    record megabytes long."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    return f"{name[:MAX_TOOL_NAME]}…(+{len(name) - MAX_TOOL_NAME} chars)"


def _caller(principal: Principal) -> dict[str, str | None]:
    """Who a confirmation or approval is bound to: the same person through the same client
    (part of the `binding`, so no one else can redeem what this caller was given)."""
    return {"sub": principal.subject, "iss": principal.issuer, "client_id": principal.client_id}


def _binding(call: _Call, args: WriteInput, plan: Plan, exclude: set[str] | None = None) -> str:
    """The call's `binding` (tool, arguments but `exclude`, the planned target, the caller):
    what a confirmation token, an approval state or an approval request holds for."""
    assert call.cluster is not None
    return binding(
        tool=call.tool,
        arguments=args.model_dump(mode="json", exclude=exclude),
        cluster=call.cluster,
        target=plan.bound_facts(),
        caller=_caller(call.principal),
    )


def _approval(
    principal: Principal, method: Literal["token", "elicitation", "input_required"]
) -> dict[str, Any]:
    """`decision.approval` of a confirmed call: how, by whom and when it was approved.

    By whom is the caller: an elicitation (pushed, or input-required in the retry) is
    answered by the person at the caller's client, and a token or approval state is bound
    to the caller that received it, so no one else can redeem it.
    """
    return {
        "method": method,
        "by": {key: value for key, value in _caller(principal).items() if value is not None},
        "at": utc_now(),
    }


def _named_node(args: ToolInput, default_node: str | None) -> str | None:
    """The node a call's arguments name, known before planning: `node`, or the cluster's
    default for a tool whose `node` argument was left out (as the tools read it)."""
    if "node" not in type(args).model_fields:
        return None
    node = getattr(args, "node", None)
    return node if isinstance(node, str) else default_node


def _planned(plan: Plan, redactor: Redactor) -> dict[str, Any]:
    """The audit's view of what a plan will run, send or touch; the API calls redacted
    (their parameters can hold a password or a key)."""
    planned: dict[str, Any] = {}
    if plan.argv is not None:
        planned["argv"] = plan.argv
    if plan.command is not None:
        planned["command"] = plan.command
    target: dict[str, Any] = {k: v for k, v in (("paths", plan.paths), ("hosts", plan.hosts)) if v}
    if plan.calls:
        calls = [call.model_dump(mode="json", exclude_defaults=True) for call in plan.calls]
        target["calls"] = redactor.value(calls)
    if target:
        planned["target"] = target
    return planned


class Gateway:
    """Holds the tool registry and runs calls through policy, audit and redaction."""

    def __init__(
        self,
        *,
        tools: Catalogue | Iterable[AnySpec],
        clusters: ClusterPool,
        policy: PolicyEngine,
        audit: AuditLog,
        redactor: Redactor,
        confirm_ttl: float = 300,
        token_confirmation: bool = True,
        artifacts: ArtifactStore | None = None,
        approvals: ApprovalStore | None = None,
        evidence: EvidenceStore | None = None,
    ) -> None:
        self.catalogue = tools if isinstance(tools, Catalogue) else Catalogue.from_specs(tools)
        self._tools: dict[str, _Prepared] = {}
        """Each tool's schemas, built when the tool is first listed or called."""
        self.clusters = clusters
        self._single_cluster = len(clusters.names) == 1
        self.policy = policy
        self.audit = audit
        self.redactor = redactor
        self.tokens = ConfirmationTokens(confirm_ttl)
        self.token_confirmation = token_confirmation
        self.artifacts = artifacts or ArtifactStore()
        self.approvals = approvals
        """Where calls an `approve` rule holds wait for a second person (None: such calls
        are refused, `approval_unavailable`)."""
        self.evidence = evidence
        """Where the full output of escape calls is kept (None: not kept)."""
        self._covering: dict[tuple[str, str], tuple[AnySpec, ...]] | None = None
        """The typed tools declaring each endpoint (`endpoint_tools`), built on first need."""
        self.task_owners = TaskOwners(audit.path)
        """Who started which task (`gateway/taskowners.py`), from the audit log."""

    def _prepare(self, spec: AnySpec) -> _Prepared:
        prepared = self._tools.get(spec.name)
        if prepared is None:
            schema = compact_schema(spec.input_model)
            if self._single_cluster:
                # One cluster: `cluster` can only name it, so a model is not shown a choice
                # it does not have (it is still accepted, and checked, when sent).
                schema.get("properties", {}).pop("cluster", None)
            output = compact_schema(spec.output_model)
            if spec.tier is not Tier.READ:
                output = _risky_output_schema(output)
            json_fields = frozenset(
                name
                for name, prop in schema.get("properties", {}).items()
                if isinstance(prop, dict) and prop.get("type") in ("array", "object")
            )
            prepared = self._tools[spec.name] = _Prepared(spec, schema, output, json_fields)
        return prepared

    def specs(self) -> list[AnySpec]:
        """The tools of the configured toolsets (a session may enable more)."""
        return self.catalogue.specs(self.catalogue.default)

    def visible_specs(self, principal: Principal) -> list[AnySpec]:
        """The tools of this caller's enabled toolsets that policy could allow it: the only
        ones its tools/list shows."""
        return [
            spec
            for spec in self.catalogue.specs(self.catalogue.enabled_for(principal))
            if self._could_allow(principal, spec)
        ]

    def _could_allow(self, principal: Principal, spec: AnySpec) -> bool:
        """Whether policy could allow `principal` some call of `spec`: at its tier, or for
        a generic API tool (whose tier is its call's) at any tier its calls can have."""
        return any(self.policy.could_allow(principal, spec.name, tier) for tier in spec.tiers)

    def endpoint_tools(self, method: str, template: str) -> tuple[AnySpec, ...]:
        """The typed tools that declare `method template` in their `api` (loads every
        toolset the first time: only the generic API tools ask)."""
        if self._covering is None:
            covering: dict[tuple[str, str], list[AnySpec]] = {}
            for spec in self.catalogue.all_specs():
                if spec.calls_of is None:
                    for endpoint in spec.api:
                        covering.setdefault(endpoint, []).append(spec)
            self._covering = {key: tuple(specs) for key, specs in covering.items()}
        return self._covering.get((method, template), ())

    def call_tier(self, calls: list[ApiCall]) -> Tier:
        """The tier of a generic API call: its riskiest request's (`generic_tier`)."""
        return Tier.most(
            generic_tier(
                call.method,
                call.template,
                call.params,
                self.endpoint_tools(call.method, call.template),
            )
            for call in calls
        )

    def _endpoint_request(self, request: PolicyRequest, calls: list[ApiCall]) -> PolicyRequest:
        """`request` for a generic API call sending `calls`: their tier, the endpoints
        `api` rules see, and the typed tools whose deny and confirm rules apply too."""
        return dataclasses.replace(
            request,
            tier=Tier.most((request.tier, self.call_tier(calls))),
            api=tuple((call.method, call.template, call.path) for call in calls),
            covered_by=frozenset(
                spec.name
                for call in calls
                for spec in self.endpoint_tools(call.method, call.template)
            ),
        )

    def _planned_request(self, spec: AnySpec, request: PolicyRequest, plan: Plan) -> PolicyRequest:
        """`request` with the endpoints the plan will really send: for a generic API tool
        decided again on them (never a lower tier), for a typed tool its planned calls in
        place of its declared endpoints."""
        if spec.calls_of is not None:
            return self._endpoint_request(request, plan.calls)
        if not plan.calls:
            return request
        return dataclasses.replace(
            request, api=tuple((c.method, c.template, c.path) for c in plan.calls)
        )

    def _spec(self, name: str) -> AnySpec:
        spec = self.catalogue.find(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def input_schema(self, name: str) -> dict[str, Any]:
        return self._prepare(self._spec(name)).input_schema

    def output_schema(self, name: str) -> dict[str, Any]:
        return self._prepare(self._spec(name)).output_schema

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
        where = first["field"]
        top = where.split(".", 1)[0]
        accepted = sorted(prepared.input_schema.get("properties", {}))
        if top in accepted:
            # The full schema: a field advertised bare (vmid, timeout...) still has a range.
            hint = field_hint(compact_schema(prepared.spec.input_model, bare=False), top)
        else:
            hint = "Accepted arguments: " + ", ".join(accepted)
        return ToolFailure(
            "invalid_argument",
            f"{where}: {first['message']}",
            field=where,
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
        confirmer: Confirmer | None = None,
        undoing: Undoing | None = None,
        secret_sink: SecretSink | None = None,
        on_task: Callable[[str, str], None] | None = None,
    ) -> ToolResult:
        """Run one tool call end to end and return its (redacted) result or error;
        `undoing` when it is the inverse of an earlier call (`proxmox_call_undo`);
        `secret_sink` how the caller's client shows a secret to its person; `on_task` is
        told (cluster, UPID) of each Proxmox task the call starts, as it starts."""
        found = self.catalogue.find(name)
        if found is None:
            shown = shown_tool_name(name)
            return self._refused(
                _Call(new_event_id(), principal, shown, "unknown"),
                ToolFailure(
                    "unknown_tool",
                    f"no tool named {shown!r}",
                    hint="Call tools/list for the available tools.",
                ),
            )
        if found.toolset not in self.catalogue.enabled_for(principal):
            return self._refused(
                _Call(new_event_id(), principal, name, found.tier),
                ToolFailure(
                    "toolset_disabled",
                    f"{name} is in toolset {found.toolset!r}, which is not enabled",
                    hint=f"Call proxmox_toolset_enable with toolset={found.toolset!r}, or ask "
                    "the operator to add it to [tools] toolsets.",
                ),
            )
        prepared = self._prepare(found)
        call = _Call(new_event_id(), principal, name, prepared.spec.tier, undoing=undoing)
        spec = prepared.spec
        try:
            args = self._validate(prepared, arguments)
            call.cluster, cluster = self.clusters.resolve(args.cluster)
        except ToolFailure as failure:
            return self._refused(call, failure)
        call.raw_arguments = args.model_dump(mode="json", exclude_none=True)
        call.arguments = self.redactor.value(call.raw_arguments)
        request = PolicyRequest(
            tool=name,
            tier=spec.tier,
            cluster=call.cluster,
            arguments=args.model_dump(),
            api=tuple((method, template, None) for method, template in spec.api),
        )
        if spec.calls_of is not None:
            # A generic API tool: its tier and endpoints are the call's, known from the
            # arguments and the index alone, so the decision is made on them before any
            # request (a planner's reads included) is sent.
            try:
                resolving = cluster_schema(
                    call.cluster,
                    cluster,
                    self.clusters.backend(call.cluster),
                    self.clusters.node_schema(call.cluster),
                )
                calls = list(spec.calls_of(args, await resolving))
            except ToolFailure as failure:
                return self._refused(call, failure)
            request = self._endpoint_request(dataclasses.replace(request, tier=Tier.READ), calls)
            call.tier = request.tier
        cluster_name = call.cluster

        def authorize(node: str | None, paths: tuple[str, ...]) -> None:
            decision = self.policy.decide(
                principal, dataclasses.replace(request, node=node, paths=paths)
            )
            if decision.effect is Effect.DENY:
                call.decision = decision
                raise self._denial(decision)

        def may_read(node: str | None, paths: tuple[str, ...]) -> bool:
            """Whether this caller could read `paths` with no one's approval: a plan shows
            a file's content (a diff) only then, or a write grant would leak what it reads."""
            read = PolicyRequest(
                tool=READ_FILE_TOOL,
                tier=Tier.ESCAPE,
                cluster=cluster_name,
                node=node,
                paths=paths,
            )
            return self.policy.decide(principal, read).effect is Effect.ALLOW

        # The caller's own PVE token when an identity mapping names it, else the gateway's.
        identity = self.clusters.identity_for(cluster_name, principal)
        pve_identity = identity.name if identity is not None else None
        ctx = ToolContext(
            principal=principal,
            cluster_name=cluster_name,
            cluster=cluster,
            backend=self.clusters.backend(cluster_name, pve_identity),
            read_cache=self.clusters.read_cache(cluster_name),
            cached_reads=request.tier is Tier.READ,
            progress=progress,
            ssh=lambda: self.clusters.ssh_pool(cluster_name),
            artifacts=self.artifacts,
            redactor=self.redactor,
            authorize=authorize,
            may_read=may_read,
            pve_token=lambda: self.clusters.token_id(cluster_name, pve_identity),
            pve_identity=pve_identity,
            node_schema=self.clusters.node_schema(cluster_name),
        )
        ctx.secret_sink = secret_sink
        ctx.endpoint_tools, ctx.approvals = self.endpoint_tools, self.approvals
        ctx.toolsets = SessionToolsets(
            self.catalogue,
            principal,
            lambda spec: self._could_allow(principal, spec),
        )
        ctx.policy_view = PolicyView(
            lambda asked: self.policy.decide(principal, asked),
            lambda spec: self._could_allow(principal, spec),
            self.catalogue,
            self.catalogue.enabled_for(principal),
        )

        async def apply(
            undo: Undo, undone: Undoing, passed: Mapping[str, Any]
        ) -> tuple[str, dict[str, Any]]:
            """An undo is a new call of the same caller, through this whole pipeline."""
            arguments = {**undo.arguments, **passed}
            result = await self.invoke(
                principal, undo.tool, arguments, progress=progress, confirmer=confirmer,
                undoing=undone,
            )  # fmt: skip
            if result.error is not None:
                raise _passed_on(result.error)
            return result.event_id, result.data or {}

        ctx.undo = UndoDesk(self.audit.path, principal, apply)
        self._bind_tasks(ctx, call, request, on_task)
        if spec.planner is None or not isinstance(args, WriteInput):
            call.decision = self.policy.decide(principal, request)
            if call.decision.effect is not Effect.ALLOW:
                return self._refused(call, self._denial(call.decision))
            return await self._run(call, spec, ctx, args)
        return await self._run_risky(call, spec, ctx, args, request, confirmer=confirmer)

    def _bind_tasks(
        self,
        ctx: ToolContext,
        call: _Call,
        request: PolicyRequest,
        on_task: Callable[[str, str], None] | None,
    ) -> None:
        """Give the call its task desk: each task it starts is the caller's at once, and a
        task tool asks policy before it touches a task another caller started."""
        principal, cluster = call.principal, ctx.cluster_name

        def started(upid: str) -> None:
            owner = Owner(
                principal.subject, principal.issuer, call.tool, call.event_id, time.time()
            )
            self.task_owners.add(cluster, upid, owner)
            if on_task is not None:
                on_task(cluster, upid)

        def others(node: str) -> bool:
            asked = dataclasses.replace(request, node=node, others_task=True)
            return self.policy.decide(principal, asked).effect is not Effect.DENY

        ctx.task_started = started
        ctx.tasks = TaskDesk(self.task_owners, principal, cluster, others)

    async def _run_risky(
        self,
        call: _Call,
        spec: AnySpec,
        ctx: ToolContext,
        args: WriteInput,
        request: PolicyRequest,
        *,
        confirmer: Confirmer | None,
    ) -> ToolResult:
        """Plan, decide on the resolved target, then dry-run, confirm or run."""
        if not self.policy.could_allow(call.principal, call.tool, request.tier):
            call.decision = self.policy.decide(call.principal, request)
            return self._refused(call, self._denial(call.decision))
        # A planner may reach the node over SSH/SFTP (a file's canonical path): decide on
        # the node the arguments name first, so a refused node sees no connection at all.
        node = _named_node(args, ctx.cluster.default_node)
        if node is not None or spec.calls_of is not None:
            denial = self.policy.refuses(call.principal, dataclasses.replace(request, node=node))
            if denial is not None:
                call.decision = denial
                call.target = {"node": node}
                return self._refused(call, self._denial(denial))
        assert spec.planner is not None
        try:
            plan: Plan = await spec.planner(ctx, args)
        except Exception as exc:
            known = _known_failure(exc)
            if known is None:
                known = _crash(call, "planning")
            return self._refused(call, known)
        target = plan.target
        call.target = {"node": target.node, "vmid": target.vmid}
        call.planned = _planned(plan, self.redactor)
        if call.undoing is not None:
            try:
                call.undoing.check(plan)
            except ToolFailure as failure:
                return self._refused(call, failure)
        request = self._planned_request(spec, request, plan)
        call.tier = request.tier
        call.decision = decision = self.policy.decide(
            call.principal,
            dataclasses.replace(
                request,
                node=target.node,
                vmid=target.vmid,
                pool=target.pool,
                tags=frozenset(target.tags),
                argv=tuple(plan.argv) if plan.argv is not None else None,
                paths=tuple(plan.paths),
                hosts=tuple(plan.hosts),
            ),
        )
        if decision.effect is Effect.DENY:
            return self._refused(call, self._denial(decision))
        shown_plan = self.redactor.value(plan.model_dump(mode="json", exclude_none=True))
        if args.dry_run:
            unrecorded = self._record(call, "dry_run", None)
            if unrecorded is not None and self.audit.require_for_reads:
                return self._audit_down(call, unrecorded)
            return ToolResult(call.event_id, data={"dry_run": True, "plan": shown_plan})
        refusal = await self._held(call, args, plan, shown_plan, confirmer)
        if refusal is not None:
            return self._refused(call, refusal)
        ctx.plan = plan
        return await self._run(call, spec, ctx, args, plan)

    async def _confirm(
        self,
        call: _Call,
        args: WriteInput,
        plan: Plan,
        shown_plan: dict[str, Any],
        confirmer: Confirmer | None,
    ) -> ToolFailure | None:
        """None when the human approved this exact call; else the refusal to return."""
        bound = _binding(call, args, plan)
        if args.confirm_token is not None and self.token_confirmation:
            try:
                token_id = self.tokens.redeem(args.confirm_token, bound)
            except ToolFailure as failure:
                return failure
            call.approval = _approval(call.principal, "token") | {
                "token_id": token_id,
                "token_sha256": hashlib.sha256(args.confirm_token.encode()).hexdigest(),
            }
            return None
        # The human sees the redacted plan: a diff or a command line can hold secrets.
        shown = Plan.model_validate(shown_plan)
        reason = call.decision.reason if call.decision is not None else "policy"
        try:
            answer = await confirmer(call.tool, shown, bound) if confirmer is not None else None
        except ToolFailure as failure:
            return failure
        if answer is not None and answer.approved is None:
            # Asked (input-required): the transport sends the question instead of this
            # refusal, which is what the audit records for this round.
            return ToolFailure(
                "confirmation_required",
                f"{call.tool} needs the user's confirmation ({reason}); the client was asked",
                details={"plan": shown_plan, "method": answer.method},
            )
        if answer is not None and answer.approved:
            call.approval = _approval(call.principal, answer.method) | dict(answer.detail)
            return None
        if answer is not None:
            return ToolFailure(
                "confirmation_declined",
                "the user declined the confirmation; nothing was changed",
                hint="Do not retry unless the user asks for it.",
            )
        if not self.token_confirmation:
            return ToolFailure(
                "confirmation_unavailable",
                f"{call.tool} needs a person's confirmation ({reason}) and this client cannot "
                "ask one (MCP elicitation); nothing was changed",
                hint="Use a client that supports elicitation, or ask an operator to run it.",
            )
        return ToolFailure(
            "confirmation_required",
            f"{call.tool} needs the user's confirmation ({reason}); nothing was changed yet",
            field="confirm_token",
            hint="Show the plan to the user. If they approve, call again with the same "
            f"arguments plus confirm_token within {int(self.tokens.ttl)} s.",
            details={"plan": shown_plan, "expires_in": int(self.tokens.ttl)},
            issued={"confirm_token": self.tokens.issue(bound)},
        )

    async def _held(
        self,
        call: _Call,
        args: WriteInput,
        plan: Plan,
        shown_plan: dict[str, Any],
        confirmer: Confirmer | None,
    ) -> ToolFailure | None:
        """None when the call may run: a second person approved it (`approve`), the caller
        confirmed it (`confirm`) or nobody needs to (`allow`); else the refusal to return."""
        assert call.decision is not None
        if call.decision.effect is Effect.APPROVE:
            return await self._four_eyes(call, args, plan, shown_plan)
        if call.decision.effect is Effect.CONFIRM:
            return await self._confirm(call, args, plan, shown_plan, confirmer)
        return None

    async def _four_eyes(
        self, call: _Call, args: WriteInput, plan: Plan, shown_plan: dict[str, Any]
    ) -> ToolFailure | None:
        """None when a second person approved this exact call (its request is then used
        up, and it runs without asking for confirmation); else the refusal: a new pending
        request, or why the given `approval_id` cannot run."""
        assert call.cluster is not None
        assert call.decision is not None
        decision = call.decision
        if self.approvals is None:
            return ToolFailure(
                "approval_unavailable",
                f"{call.tool} needs a second person's approval ({decision.reason}) and this "
                "gateway has no approval store; nothing was run",
                hint="Ask an operator to run it, or to configure [approvals].",
            )
        store = self.approvals
        bound = _binding(call, args, plan, exclude={"approval_id"})
        if args.approval_id is not None:
            approval_id = args.approval_id
            try:
                used = await anyio.to_thread.run_sync(
                    lambda: store.consume(approval_id, bound, call.principal)
                )
            except ToolFailure as failure:
                return failure
            call.approval = {
                "method": "four_eyes",
                "approval_id": used.id,
                "by": used.decided_by,
                "reason": used.reason,
                "requested_by": used.requester,
                "at": utc_now(),
            }
            return None
        cluster = call.cluster
        try:
            request = await anyio.to_thread.run_sync(
                lambda: store.create(
                    tool=call.tool,
                    cluster=cluster,
                    binding=bound,
                    plan=shown_plan,
                    arguments=call.arguments or {},
                    requester=call.principal,
                    approvers=decision.approvers,
                    rule_ids=decision.rule_ids,
                )
            )
        except ToolFailure as failure:
            return failure
        who = ", ".join(decision.approvers)
        return ToolFailure(
            "approval_pending",
            f"{call.tool} is held until one of {who} approves it ({decision.reason}); "
            "nothing was run yet",
            field="approval_id",
            hint="Tell the user it waits for approval (pvemcp approvals approve ID, or the "
            "approval page). Wait with proxmox_approval_status(approval_id, wait=true), then "
            "call again with the same arguments plus approval_id.",
            details={
                "approvers": list(decision.approvers),
                "expires_in": int(store.ttl),
                "plan": shown_plan,
            },
            issued={"approval_id": request.id},
        )

    @staticmethod
    def _denial(decision: Decision) -> ToolFailure:
        return ToolFailure(
            "denied",
            f"policy denies this call: {decision.reason}",
            hint="Ask an operator to allow it in the gateway policy, or use a read tool.",
            details={"rules": list(decision.rule_ids)},
        )

    async def _run(
        self,
        call: _Call,
        spec: AnySpec,
        ctx: ToolContext,
        args: ToolInput,
        plan: Plan | None = None,
    ) -> ToolResult:
        """Audit the intent of a risky call, run the handler (or, for a tool declared
        without one, the default runner on its confirmed `plan`), shape and record the
        outcome."""
        assert call.cluster is not None
        assert call.decision is not None
        tier = Tier(call.tier)  # the tool's, or a generic API call's own
        refused = await self._intent(call, ctx, tier)
        if refused is not None:
            return refused
        status, error_code, exitstatus = "error", None, None
        try:
            if spec.handler is not None:
                output = await spec.handler(ctx, args)
            else:
                # `action` requires a planner and WriteInput, so the call was planned.
                assert plan is not None
                assert isinstance(args, WriteInput)
                output = await run_planned(ctx, args, plan)
            data = self.redactor.value(output.model_dump(mode="json", exclude_none=True))
            if tier is Tier.ESCAPE and ctx.command is None and self.evidence is not None:
                # An escape call no command or file record describes (a guest agent's exec
                # or file-read through the generic API tools): its answer is the evidence.
                answer = json.dumps(data, sort_keys=True).encode()
                ctx.command = CommandRecord(contents={"content": answer})
            status = "ok"
            if plan is not None and spec.inverse is not None:
                call.undo = await self._inverse(call, spec, ctx, plan, output)
            exitstatus = ctx.task.exitstatus if ctx.task is not None else None
            result = ToolResult(call.event_id, data=data)
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except Exception as exc:
            known = _known_failure(exc)
            if known is None:
                known = _crash(call, "running")
            known = _naming_task(known, ctx.upids)
            error_code = known.code
            exitstatus = known.details.get("exitstatus")
            error = self.redactor.value(known.payload())
            if known.issued:  # a confirmation token an inner call issued (proxmox_call_undo)
                error.setdefault("details", {}).update(known.issued)
            result = ToolResult(call.event_id, error=error)
        finally:
            if tier is not Tier.READ:  # it may have changed the cluster, even failing
                self.clusters.read_cache(ctx.cluster_name).invalidate()
            unrecorded = await self._finish(call, status, error_code, ctx, exitstatus)
        # A risky call's intent is on record and it ran: its answer is due. A read whose one
        # record failed is answered only if unrecorded reads are acceptable.
        if unrecorded is not None and tier is Tier.READ and self.audit.require_for_reads:
            return self._audit_down(call, unrecorded)
        return result

    async def _intent(self, call: _Call, ctx: ToolContext, tier: Tier) -> ToolResult | None:
        """Before a call above `read` runs: make sure its evidence can be kept (escape
        calls) and write its intent record. None when it may run, else the refusal."""
        if tier is Tier.ESCAPE and self.evidence is not None:
            # A thread: the first check counts the store, an hourly one walks it to prune.
            refusal = await anyio.to_thread.run_sync(lambda: self._evidence_ready(call))
            if refusal is not None:
                return self._refused(call, refusal)
        if not tier.records_intent:
            return None
        assert call.cluster is not None
        assert call.decision is not None
        try:
            await self.audit.intent(
                call.event_id,
                call.principal,
                tool=call.tool,
                tier=tier,
                cluster=call.cluster,
                arguments=call.arguments or {},
                decision=call.decision,
                backend=ctx.backend_name,
                pve_token_id=ctx.pve_token_id,
                raw_arguments=call.raw_arguments or {},
                policy_hash=self.policy.bundle_hash,
                **call.target,
                **call.planned,
                **call.approval_detail(),
            )
        except AuditUnavailable as exc:
            log.error("audit_intent_failed", tool=call.tool, event_id=call.event_id, error=str(exc))
            return self._audit_down(call, exc)
        return None

    async def _inverse(
        self, call: _Call, spec: AnySpec, ctx: ToolContext, plan: Plan, output: ToolOutput
    ) -> Undo | None:
        """What undoes the call that just succeeded, for its outcome record: the tool's
        inverse, in the call's cluster. None when there is none, when it holds a value the
        redactor masks (a secret is never written to the log, so it cannot be undone), or
        when working it out failed: the call happened, and its answer is due regardless."""
        assert spec.inverse is not None
        try:
            undo = await spec.inverse(ctx, plan, output)
        except Exception:
            log.exception("undo_inverse_failed", tool=call.tool, event_id=call.event_id)
            return None
        if undo is None:
            return None
        arguments = {**undo.arguments, "cluster": call.cluster}
        if self.redactor.value(arguments) != arguments:
            return None
        return undo.model_copy(update={"arguments": arguments})

    def _audit_down(self, call: _Call, exc: AuditUnavailable) -> ToolResult:
        """The answer to a call whose audit record cannot be written: a risky call before it
        runs, or, with `[audit] require_for_reads`, any call (its result is withheld)."""
        if self.audit.require_for_reads:
            hint = "An operator must fix the audit log (disk, permissions); until then every "
            hint += "call is refused, reads too ([audit] require_for_reads)."
        else:
            hint = "An operator must fix the audit log (disk, permissions); reads work."
        refusal = ToolFailure(
            "audit_unavailable",
            f"the call was refused because its audit record cannot be written: {exc}",
            hint=hint,
        )
        return ToolResult(call.event_id, error=self.redactor.value(refusal.payload()))

    async def _finish(
        self,
        call: _Call,
        status: str,
        error_code: str | None,
        ctx: ToolContext,
        exitstatus: str | None,
    ) -> AuditUnavailable | None:
        """Write the call's outcome (or single) record and log the call; returns why the
        record could not be written, if it could not."""
        risky = call.tier != "read"
        command = ctx.command.audit_fields() if ctx.command is not None else {}
        if ctx.command is not None and self.evidence is not None:
            blobs = ctx.command.evidence()
            # In a worker thread (redacting, hashing and fsyncing 16 MiB takes most of a
            # second), shielded: a cancellation arriving meanwhile must not lose the record.
            with anyio.CancelScope(shield=True):
                command |= await anyio.to_thread.run_sync(lambda: self._keep_evidence(call, blobs))
        duration_ms, unrecorded = self._outcome(
            call,
            phase="outcome" if risky else "record",
            status=status,
            error_code=error_code,
            # The intent record already holds the arguments of a risky call.
            arguments=None if risky else call.arguments,
            decision=None if risky else call.decision,
            upids=ctx.upids,
            backend=ctx.backend_name,
            pve_token_id=ctx.pve_token_id,
            exitstatus=exitstatus,
            undo=call.undo.model_dump(mode="json") if call.undo is not None else None,
            **(call.target | command | call.approval_detail()),
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
        return unrecorded

    def _evidence_ready(self, call: _Call) -> ToolFailure | None:
        """Before an escape call runs: prune blobs past their retention when due (the audit
        log names them first), then the refusal to return if the evidence store cannot
        take this call's output (unwritable, full, short of disk), as for the audit log."""
        assert self.evidence is not None
        if self.evidence.prune_due():
            root = str(self.evidence.root)
            try:
                self.evidence.prune(
                    lambda expired: self.audit.evidence_pruned(
                        root, [(item.sha256, item.bytes) for item in expired]
                    )
                )
            except AuditUnavailable as exc:
                log.error("evidence_prune_unrecorded", error=str(exc))
        try:
            self.evidence.check()
        except EvidenceUnavailable as exc:
            log.error(
                "evidence_unavailable", tool=call.tool, event_id=call.event_id, error=str(exc)
            )
            return ToolFailure(
                "evidence_unavailable",
                f"the call was refused because its evidence cannot be kept: {exc}",
                hint="An operator must fix the evidence store ([audit] evidence_dir: disk, "
                "permissions, evidence_max_total_bytes); typed tools still work.",
            )
        return None

    def _keep_evidence(self, call: _Call, blobs: Mapping[str, bytes]) -> dict[str, Any]:
        """Keep what a call ran printed or changed in the evidence store (redacted, as all
        output) and return the outcome's `evidence` references, or `evidence_error` when
        the store failed after the call ran: the call happened, so its answer is still
        due and its record says what was lost."""
        # An empty stream or file needs no blob: the record's size and hash say it all.
        blobs = {kind: data for kind, data in blobs.items() if data}
        if self.evidence is None or not blobs:
            return {}

        def redact(data: bytes) -> bytes:
            # surrogateescape keeps non-UTF-8 bytes as they were while the text is redacted.
            text = data.decode("utf-8", errors="surrogateescape")
            return self.redactor.text(text).encode("utf-8", errors="surrogateescape")

        refs, failure = self.evidence.keep_all(blobs, redact)
        kept: dict[str, Any] = {"evidence": [ref.record() for ref in refs]} if refs else {}
        if failure is not None:
            log.error(
                "evidence_write_failed", tool=call.tool, event_id=call.event_id, error=str(failure)
            )
            kept["evidence_error"] = {"code": "evidence_unavailable", "message": str(failure)}
        return kept

    def _outcome(
        self,
        call: _Call,
        *,
        phase: Literal["outcome", "record"],
        status: str,
        error_code: str | None,
        arguments: dict[str, Any] | None,
        decision: Decision | None,
        **details: Any,
    ) -> tuple[float, AuditUnavailable | None]:
        """Write the call's outcome (or single) record; a failure is logged (with how many
        records of this phase failed so far) and returned, not raised: the call already
        happened, and whether its answer may still go out is the caller's decision.
        Returns the call's duration in milliseconds and the failure, if any."""
        duration_ms = (time.perf_counter() - call.started) * 1000
        try:
            self.audit.outcome(
                call.event_id,
                call.principal,
                tool=call.tool,
                tier=call.tier,
                cluster=call.cluster,
                arguments=arguments,
                decision=decision,
                status=status,
                duration_ms=duration_ms,
                error_code=error_code,
                phase=phase,
                raw_arguments=call.raw_arguments or {},
                **details,
            )
        except AuditUnavailable as exc:
            log.error(
                f"audit_{phase}_failed",
                tool=call.tool,
                event_id=call.event_id,
                error=str(exc),
                failed_so_far=self.audit.write_failures.get(phase, 0),
                answer="withheld" if phase == "record" and self.audit.require_for_reads else "sent",
            )
            return duration_ms, exc
        return duration_ms, None

    def _record(self, call: _Call, status: str, error_code: str | None) -> AuditUnavailable | None:
        """The single record of a call that never reached a backend's write path; returns
        why it could not be written, if it could not."""
        _, unrecorded = self._outcome(
            call,
            phase="record",
            status=status,
            error_code=error_code,
            arguments=call.arguments,
            decision=call.decision,
            policy_hash=self.policy.bundle_hash,
            **call.target,
            **call.planned,
            **call.approval_detail(),
        )
        log.info(
            "tool_refused" if error_code else "tool_call",
            tool=call.tool,
            status=status,
            error=error_code,
            subject=call.principal.subject,
        )
        return unrecorded

    def _refused(self, call: _Call, failure: ToolFailure) -> ToolResult:
        """Record a call that stopped before running, and return its error (an unrecorded
        refusal can carry a plan and a token, so `require_for_reads` withholds it too)."""
        unrecorded = self._record(call, _REFUSAL_STATUS.get(failure.code, "rejected"), failure.code)
        if unrecorded is not None and self.audit.require_for_reads:
            return self._audit_down(call, unrecorded)
        error = self.redactor.value(failure.payload())
        if failure.issued:
            error.setdefault("details", {}).update(failure.issued)
        return ToolResult(call.event_id, error=error)

    async def aclose(self) -> None:
        await self.clusters.aclose()
        self.audit.close()
