"""High availability: the manager's status, HA resources, their moves, and HA rules.

PVE's HA API (pve-ha-manager `src/PVE/API2/HA/`) answers every write at once and lets
the cluster resource manager act later, so the plans read the configuration first and
refuse what PVE would refuse (an unmanaged guest, a duplicate, a rule PVE finds
infeasible), and `proxmox_ha_move` waits on the manager's status until the guest runs
on its target. Rules are PVE 9's (node-affinity, resource-affinity); on 8.x, which has
HA groups instead, the rule tools refuse naming the version read from `/version`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

import anyio
from pydantic import Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    Answer,
    ApiCall,
    Applied,
    Change,
    Empty,
    GuestName,
    GuestRef,
    NodeName,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WaitInput,
    WriteInput,
    apply_plan,
    matching,
    node_statuses,
    planners,
    read_as,
    tool,
)

TOOLSET = "ha"
RuleId = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9_-]*", "a rule id (pve-configid)")]
HaState = Literal["started", "stopped", "disabled", "ignored"]
_SETTLED = frozenset({"started", "stopped", "disabled", "ignored", "error"})
"""Service states the manager stays in; others (migrate, relocate, request_stop, queued,
freeze, fence, recovery) are on the way somewhere."""
_POLL = 0.5


class _Version(Answer):
    version: str


class _Resource(Answer):
    sid: str
    type: str
    state: str | None = None
    comment: str | None = None
    max_restart: int | None = None
    max_relocate: int | None = None
    failback: bool | None = None
    digest: str | None = None


class _Rule(Answer):
    rule: str
    type: str
    resources: str = ""
    nodes: str | None = None
    strict: bool | None = None
    affinity: str | None = None
    disable: bool | None = None
    comment: str | None = None
    digest: str | None = None
    errors: dict[str, Any] | None = None


class _StatusRow(Answer):
    id: str
    type: str
    node: str | None = None
    status: str | None = None
    quorate: bool | None = None
    sid: str | None = None
    state: str | None = None
    request_state: str | None = None


class _Power(Answer):
    status: str = "unknown"


_RESOURCES = TypeAdapter(list[_Resource])
_RULES = TypeAdapter(list[_Rule])
_STATUS = TypeAdapter(list[_StatusRow])
_VERSION = TypeAdapter(_Version)
_POWER = TypeAdapter(_Power)


def _vmid(sid: str) -> int:
    return int(sid.split(":", 1)[1])


def _sid(row: dict[str, Any]) -> str:
    return f"{'vm' if row['type'] == 'qemu' else 'ct'}:{row['vmid']}"


async def _resources(ctx: ToolContext) -> dict[str, _Resource]:
    return {r.sid: r for r in await read_as(ctx, _RESOURCES, "/cluster/ha/resources")}


async def _rules(ctx: ToolContext) -> dict[str, _Rule]:
    """The HA rules, after checking the cluster has them (PVE 9.0 or later)."""
    version = await read_as(ctx, _VERSION, "/version")
    major = int(version.version.split(".", 1)[0]) if version.version[:1].isdigit() else 0
    if major < 9:
        raise ToolFailure(
            "unsupported",
            f"HA rules need PVE 9.0 or later; this cluster runs {version.version}, which "
            "has HA groups instead",
            field="rule",
            hint="Manage HA groups on the node (ha-manager groupadd/groupset), or upgrade.",
        )
    return {r.rule: r for r in await read_as(ctx, _RULES, "/cluster/ha/rules")}


async def _managed(ctx: ToolContext, args: planners.GuestLookup) -> tuple[dict[str, Any], str]:
    """The guest's resource row and its HA resource id, refused when HA does not manage it."""
    row = await planners.resolve_guest(ctx, args)
    sid = _sid(row)
    if sid not in await _resources(ctx):
        raise ToolFailure(
            "not_found",
            f"{sid} is not an HA resource",
            field=planners.ref_field(args),
            hint="Put it under HA first with proxmox_ha_resource op=add.",
        )
    return row, sid


# --- status and lists ----------------------------------------------------------------


class HaNode(ToolOutput):
    node: str
    status: str


class HaService(ToolOutput):
    sid: str
    node: str | None = None
    state: str | None = None
    requested: str | None = None


class HaStatus(ToolOutput):
    quorate: bool
    manager: str | None = None
    fencing: str | None = None
    lrm: list[HaNode]
    resources: list[HaService]


@tool(
    "proxmox_ha_status",
    title="HA manager status",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=Empty,
    output=HaStatus,
    idempotent=True,
    examples=[{}],
    rejects=[({"node": "pve1"}, "invalid_argument")],
    api=["GET /cluster/ha/status/current"],
)
async def ha_status(ctx: ToolContext, args: Empty) -> HaStatus:
    """HA at a glance: quorum, the CRM master, each node's LRM, and every HA resource's node
    and state (started, stopped, migrate, relocate, error...) against its requested state."""
    rows = await read_as(ctx, _STATUS, "/cluster/ha/status/current")
    by_type: dict[str, list[_StatusRow]] = {}
    for row in rows:
        by_type.setdefault(row.type, []).append(row)
    quorum = next(iter(by_type.get("quorum", [])), None)
    master = next(iter(by_type.get("master", [])), None)
    fencing = next(iter(by_type.get("fencing", [])), None)
    return HaStatus(
        quorate=bool(quorum and quorum.quorate),
        manager=master.status if master else None,
        fencing=fencing.status if fencing else None,
        lrm=[HaNode(node=r.node or "", status=r.status or "") for r in by_type.get("lrm", [])],
        resources=[
            HaService(sid=r.sid or r.id, node=r.node, state=r.state, requested=r.request_state)
            for r in by_type.get("service", [])
        ],
    )


class ListArgs(ToolInput):
    kind: Literal["resources", "rules"] = "resources"


class ResourceRow(ToolOutput):
    sid: str
    vmid: int
    state: str
    comment: str | None = None
    max_restart: int | None = None
    max_relocate: int | None = None
    failback: bool | None = None


class RuleRow(ToolOutput):
    rule: str
    type: str
    vmids: list[int]
    nodes: str | None = None
    strict: bool | None = None
    affinity: str | None = None
    disabled: bool | None = None
    comment: str | None = None
    errors: dict[str, Any] | None = None


class HaList(ToolOutput):
    resources: list[ResourceRow] | None = None
    rules: list[RuleRow] | None = None


def _rule_row(rule: _Rule) -> RuleRow:
    return RuleRow(
        rule=rule.rule,
        type=rule.type,
        vmids=[_vmid(sid) for sid in rule.resources.split(",") if sid],
        nodes=rule.nodes,
        strict=rule.strict if rule.type == "node-affinity" else None,
        affinity=rule.affinity,
        disabled=rule.disable or None,
        comment=rule.comment,
        errors=rule.errors,
    )


@tool(
    "proxmox_ha_list",
    title="List HA resources or rules",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=ListArgs,
    output=HaList,
    idempotent=True,
    examples=[{}, {"kind": "rules"}],
    rejects=[({"kind": "groups"}, "invalid_argument")],
    api=["GET /cluster/ha/resources", "GET /cluster/ha/rules"],
)
async def ha_list(ctx: ToolContext, args: ListArgs) -> HaList:
    """HA resources (guest, requested state, restart/relocate limits) or HA rules (PVE 9:
    node-affinity with node priorities, resource-affinity; errors: why PVE ignores a rule)."""
    if args.kind == "rules":
        return HaList(rules=[_rule_row(rule) for rule in (await _rules(ctx)).values()])
    return HaList(
        resources=[
            ResourceRow(
                sid=r.sid,
                vmid=_vmid(r.sid),
                state=r.state or "started",
                comment=r.comment,
                max_restart=r.max_restart,
                max_relocate=r.max_relocate,
                failback=r.failback,
            )
            for r in (await _resources(ctx)).values()
        ]
    )


# --- resources -----------------------------------------------------------------------


class ResourceArgs(WriteInput, GuestRef):
    op: Literal["add", "update"]
    state: Annotated[HaState | None, Field(description="Default on add: started.")] = None
    comment: Annotated[str | None, Field(max_length=4096)] = None
    max_restart: Annotated[int | None, Field(ge=0, le=10)] = None
    max_relocate: Annotated[int | None, Field(ge=0, le=10)] = None
    failback: bool | None = None


_RESOURCE_FIELDS = ("state", "comment", "max_restart", "max_relocate", "failback")


def _state_warning(row: dict[str, Any], state: str | None) -> list[str]:
    running = row.get("status") == "running"
    if state == "started" and not running:
        return ["the guest is stopped: the HA manager will start it"]
    if state in ("stopped", "disabled") and running:
        return ["the guest runs: the HA manager will shut it down"]
    if state == "ignored":
        return ["HA will leave the guest alone (no recovery) until its state changes"]
    return []


async def _plan_resource(ctx: ToolContext, args: ResourceArgs) -> Plan:
    row = await planners.resolve_guest(ctx, args)
    field = planners.ref_field(args)
    sid = _sid(row)
    existing = (await _resources(ctx)).get(sid)
    given = {k: getattr(args, k) for k in _RESOURCE_FIELDS if getattr(args, k) is not None}
    if args.op == "add":
        if existing is not None:
            raise ToolFailure(
                "already_exists",
                f"{sid} is already an HA resource",
                field=field,
                hint="Change it with op=update.",
            )
        given.setdefault("state", "started")
        before: dict[str, Any] = {}
        call = ApiCall.to("POST", "/cluster/ha/resources", params={"sid": sid, **_pve(given)})
    else:
        if existing is None:
            raise ToolFailure(
                "not_found",
                f"{sid} is not an HA resource",
                field=field,
                hint="Add it with op=add.",
            )
        before = existing.model_dump(include=set(_RESOURCE_FIELDS), exclude_none=True)
        given = {k: v for k, v in given.items() if before.get(k) != v}
        if not given:
            raise ToolFailure(
                "invalid_argument",
                f"nothing to change: {sid} already has these settings",
                field="state",
                hint="Pass a state, comment, max_restart, max_relocate or failback that differs.",
            )
        params = {**_pve(given), "digest": existing.digest} if existing.digest else _pve(given)
        call = ApiCall.to("PUT", "/cluster/ha/resources/{sid}", params=params, sid=sid)
    changes = [Change(field=k, before=before.get(k), after=v) for k, v in given.items()]
    return Plan(
        summary=f"{'Add' if args.op == 'add' else 'Update'} HA resource {sid} on {row['node']}",
        changes=changes,
        target=planners.guest_target(row),
        calls=[call],
        warnings=_state_warning(row, given.get("state")),
    )


def _pve(values: dict[str, Any]) -> dict[str, Any]:
    """Booleans as PVE's 0/1."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in values.items()}


@tool(
    "proxmox_ha_resource",
    title="Add or change an HA resource",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=ResourceArgs,
    output=Applied,
    planner=_plan_resource,
    examples=[
        {"op": "add", "vmid": 102, "comment": "web", "max_relocate": 2},
        {"op": "add", "name": "web02", "state": "stopped"},
        {"op": "update", "vmid": 203, "state": "stopped"},
    ],
    rejects=[
        ({"op": "add", "vmid": 203}, "already_exists"),
        ({"op": "update", "vmid": 100, "state": "started"}, "not_found"),
        ({"op": "add", "vmid": 999}, "not_found"),
        ({"op": "update", "vmid": 203, "state": "started"}, "invalid_argument"),
    ],
    api=["POST /cluster/ha/resources", "PUT /cluster/ha/resources/{sid}"],
)
async def ha_resource(ctx: ToolContext, args: ResourceArgs) -> Applied:
    """Put a guest under HA (op add; state default started) or change its HA settings (op
    update). HA then starts/stops it to match state; its own start/stop become HA requests."""
    return await apply_plan(ctx, args)


class MoveArgs(WaitInput, GuestRef):
    node: Annotated[NodeName, Field(description="Target node.")]
    relocate: Annotated[
        bool, Field(description="Stop, move, start instead of a live/restart migration.")
    ] = False


async def _plan_move(ctx: ToolContext, args: MoveArgs) -> Plan:
    row, sid = await _managed(ctx, args)
    source = str(row["node"])
    if args.node == source:
        raise ToolFailure(
            "invalid_argument",
            f"{sid} already runs on {source}",
            field="node",
            hint="Name another node.",
        )
    nodes = await node_statuses(ctx)
    if args.node not in nodes or nodes[args.node] != "online":
        known = ", ".join(n for n, s in sorted(nodes.items()) if s == "online")
        raise ToolFailure(
            "not_found",
            f"node {args.node!r} is not an online cluster node",
            field="node",
            hint=f"Online nodes: {known}.",
        )
    verb = "relocate" if args.relocate else "migrate"
    how = (
        "stopped, moved offline and started again"
        if args.relocate
        else "moved live (a container restarts)"
    )
    return Plan(
        summary=f"HA {verb} {sid} from {source} to {args.node}",
        changes=[Change(field="node", before=source, after=args.node)],
        target=planners.guest_target(row),
        calls=[
            ApiCall.to(
                "POST", f"/cluster/ha/resources/{{sid}}/{verb}", params={"node": args.node}, sid=sid
            )
        ],
        warnings=[f"the guest is {how} by the HA manager"],
    )


class _Moved(Answer):
    sid: str
    comigrated_resources: list[str] | None = Field(None, alias="comigrated-resources")


class MoveOutcome(ToolOutput):
    sid: str
    source: str
    target: str
    node: str | None = None
    state: str | None = None
    comigrated: list[str] | None = None
    note: str | None = None


async def _runs(ctx: ToolContext, target: Target, node: str) -> bool:
    path = f"/nodes/{node}/{target.type}/{target.vmid}/status/current"
    return (await read_as(ctx, _POWER, path)).status == "running"


async def _service(ctx: ToolContext, sid: str) -> _StatusRow | None:
    rows = await read_as(ctx, _STATUS, "/cluster/ha/status/current")
    return next((r for r in rows if r.sid == sid), None)


@tool(
    "proxmox_ha_move",
    title="Migrate or relocate an HA resource",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=MoveArgs,
    output=MoveOutcome,
    planner=_plan_move,
    examples=[{"vmid": 203, "node": "pve2"}, {"vmid": 203, "node": "pve2", "relocate": True}],
    rejects=[
        ({"vmid": 203, "node": "pve3"}, "invalid_argument"),
        ({"vmid": 100, "node": "pve2"}, "not_found"),
        ({"vmid": 203, "node": "pve9"}, "not_found"),
    ],
    api=["POST /cluster/ha/resources/{sid}/migrate", "POST /cluster/ha/resources/{sid}/relocate"],
)
async def ha_move(ctx: ToolContext, args: MoveArgs) -> MoveOutcome:
    """Ask the HA manager to move an HA guest to another node (relocate: stop, move, start),
    and wait until it is there. For a guest not under HA use proxmox_guest_migrate."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    call, target = plan.calls[0], plan.target
    sid = f"{'vm' if target.type == 'qemu' else 'ct'}:{target.vmid}"
    source = str(plan.changes[0].before)
    answer = await ctx.call(call.method, call.path, call.params)
    moved = _Moved.model_validate(answer.data) if isinstance(answer.data, dict) else None
    outcome = MoveOutcome(
        sid=sid,
        source=source,
        target=args.node,
        comigrated=moved.comigrated_resources if moved else None,
    )
    if not args.wait:
        outcome.note = "requested; proxmox_ha_status shows the move"
        return outcome
    deadline = anyio.current_time() + (args.timeout or ctx.cluster.task_timeout)
    while True:
        row = await _service(ctx, sid)
        outcome.node, outcome.state = (row.node, row.state) if row else (None, None)
        # The manager says `started` once it asked the node's LRM to start the guest.
        if (
            row is not None
            and row.node == args.node
            and row.state in _SETTLED
            and (row.request_state != "started" or await _runs(ctx, target, args.node))
        ):
            return outcome
        if anyio.current_time() >= deadline:
            outcome.note = "the HA manager has not finished the move yet: see proxmox_ha_status"
            return outcome
        await ctx.report_progress(0.5, 1.0, f"HA: {sid} is {outcome.state} on {outcome.node}")
        await anyio.sleep(_POLL)


# --- rules ---------------------------------------------------------------------------


class RuleArgs(WriteInput):
    op: Literal["create", "update"]
    rule: RuleId
    type: Literal["node-affinity", "resource-affinity"] | None = None
    vmids: Annotated[
        list[Vmid] | None, Field(max_length=100, description="HA guests the rule is about.")
    ] = None
    nodes: Annotated[
        dict[str, Annotated[int, Field(ge=0, le=1000)]] | None,
        Field(description="node-affinity: node to priority (higher preferred)."),
    ] = None
    strict: Annotated[bool | None, Field(description="node-affinity: only these nodes.")] = None
    affinity: Literal["positive", "negative"] | None = None
    disable: bool | None = None
    comment: Annotated[str | None, Field(max_length=4096)] = None


def _nodes_text(nodes: dict[str, int]) -> str:
    return ",".join(f"{n}:{p}" if p else n for n, p in sorted(nodes.items()))


def _check_rule(
    args: RuleArgs,
    *,
    kind: str,
    sids: list[str],
    rules: dict[str, _Rule],
    managed: set[str],
    nodes: set[str],
) -> None:
    """What PVE's rule checks refuse (`API2/HA/Rules.pm`, `Rules/*.pm`), with a field."""
    unmanaged = [s for s in sids if s not in managed]
    if unmanaged:
        raise ToolFailure(
            "precondition_failed",
            f"not HA resources: {', '.join(unmanaged)}",
            field="vmids",
            hint="Add them with proxmox_ha_resource op=add first.",
        )
    if args.nodes is not None and (unknown := sorted(set(args.nodes) - nodes)):
        raise ToolFailure(
            "not_found",
            f"not cluster nodes: {', '.join(unknown)}",
            field="nodes",
            hint=f"Nodes: {', '.join(sorted(nodes))}.",
        )
    if kind == "resource-affinity" and len(sids) < 2:
        raise ToolFailure(
            "invalid_argument",
            "a resource-affinity rule needs at least two HA resources",
            field="vmids",
            hint="Name two or more guests.",
        )
    if kind == "resource-affinity" and args.affinity == "negative" and len(sids) > len(nodes):
        raise ToolFailure(
            "invalid_argument",
            f"{len(sids)} resources cannot be kept apart on {len(nodes)} nodes",
            field="vmids",
            hint="Name at most one guest per node.",
        )
    if kind == "node-affinity":
        for other in rules.values():
            shared = set(sids) & set(other.resources.split(","))
            if other.rule != args.rule and other.type == "node-affinity" and shared:
                raise ToolFailure(
                    "conflict",
                    f"{', '.join(sorted(shared))} already in node-affinity rule {other.rule!r}",
                    field="vmids",
                    hint=f"A resource may be in one node-affinity rule: update {other.rule}.",
                )


async def _plan_rule(ctx: ToolContext, args: RuleArgs) -> Plan:
    rules = await _rules(ctx)
    existing = rules.get(args.rule)
    if args.op == "create" and existing is not None:
        raise ToolFailure(
            "already_exists",
            f"HA rule {args.rule!r} exists",
            field="rule",
            hint="Change it with op=update.",
        )
    if args.op == "update" and existing is None:
        raise ToolFailure(
            "not_found",
            f"no HA rule {args.rule!r}",
            field="rule",
            hint=f"Rules: {', '.join(rules) or 'none'} (proxmox_ha_list kind=rules).",
        )
    kind = args.type or (existing.type if existing else None)
    if kind is None or (existing is not None and kind != existing.type):
        raise ToolFailure(
            "invalid_argument",
            "type is required to create a rule and cannot change"
            if existing is None
            else f"rule {args.rule!r} is a {existing.type} rule; its type cannot change",
            field="type",
            hint="node-affinity (vmids, nodes) or resource-affinity (vmids, affinity).",
        )
    wrong = "affinity" if kind == "node-affinity" else "nodes"
    if getattr(args, wrong) is not None or (kind != "node-affinity" and args.strict is not None):
        raise ToolFailure(
            "invalid_argument",
            f"a {kind} rule has no {wrong if wrong != 'nodes' or args.nodes else 'strict'}",
            field=wrong if getattr(args, wrong) is not None else "strict",
            hint="node-affinity takes nodes and strict; resource-affinity takes affinity.",
        )
    needed = ("vmids", "nodes") if kind == "node-affinity" else ("vmids", "affinity")
    if existing is None and (missing := [n for n in needed if getattr(args, n) is None]):
        raise ToolFailure(
            "invalid_argument",
            f"a new {kind} rule needs {' and '.join(missing)}",
            field=missing[0],
            hint="node-affinity: vmids and nodes; resource-affinity: vmids and affinity.",
        )
    guests = {int(r["vmid"]): r for r in await planners.guest_resources(ctx)}
    if args.vmids is not None and (unknown := [v for v in args.vmids if v not in guests]):
        raise ToolFailure(
            "not_found",
            f"no guests {', '.join(map(str, unknown))}",
            field="vmids",
            hint="List guests with proxmox_guest_list.",
        )
    sids = (
        sorted({_sid(guests[v]) for v in args.vmids})
        if args.vmids is not None
        else (existing.resources.split(",") if existing else [])
    )
    node_names = set(await node_statuses(ctx))
    _check_rule(
        args,
        kind=kind,
        sids=sids,
        rules=rules,
        managed=set(await _resources(ctx)),
        nodes=node_names,
    )
    after: dict[str, Any] = {
        "resources": ",".join(sids) if args.vmids is not None else None,
        "nodes": _nodes_text(args.nodes) if args.nodes is not None else None,
        "strict": args.strict,
        "affinity": args.affinity,
        "disable": args.disable,
        "comment": args.comment,
    }
    after = {k: v for k, v in after.items() if v is not None}
    before = existing.model_dump(include=set(after), exclude_none=True) if existing else {}
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if existing is not None and not changed:
        raise ToolFailure(
            "invalid_argument",
            f"nothing to change in rule {args.rule!r}",
            field="rule",
            hint="Pass vmids, nodes, strict, affinity, disable or comment that differ.",
        )
    params = {**_pve(changed), "type": kind}
    if existing is None:
        call = ApiCall.to("POST", "/cluster/ha/rules", params={"rule": args.rule, **params})
    else:
        params["digest"] = existing.digest
        call = ApiCall.to("PUT", "/cluster/ha/rules/{rule}", params=params, rule=args.rule)
    return Plan(
        summary=f"{'Create' if existing is None else 'Update'} {kind} HA rule {args.rule}",
        changes=[Change(field=k, before=before.get(k), after=v) for k, v in changed.items()],
        target=Target(name=args.rule),
        calls=[call],
    )


@tool(
    "proxmox_ha_rule",
    title="Create or change an HA rule",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=RuleArgs,
    output=Applied,
    planner=_plan_rule,
    examples=[
        {
            "op": "create",
            "rule": "db-apart",
            "type": "resource-affinity",
            "vmids": [203, 104],
            "affinity": "negative",
        },
        {"op": "update", "rule": "prefer-pve3", "nodes": {"pve3": 2}, "strict": True},
    ],
    rejects=[
        (
            {
                "op": "create",
                "rule": "prefer-pve3",
                "type": "node-affinity",
                "vmids": [203],
                "nodes": {"pve1": 1},
            },
            "already_exists",
        ),
        (
            {
                "op": "create",
                "rule": "r1",
                "type": "node-affinity",
                "vmids": [100],
                "nodes": {"pve1": 1},
            },
            "precondition_failed",
        ),
        (
            {
                "op": "create",
                "rule": "r1",
                "type": "node-affinity",
                "vmids": [203],
                "nodes": {"pve1": 1},
            },
            "conflict",
        ),
        (
            {
                "op": "create",
                "rule": "r2",
                "type": "resource-affinity",
                "vmids": [203],
                "affinity": "positive",
            },
            "invalid_argument",
        ),
        ({"op": "update", "rule": "prefer-pve3", "nodes": {"pve9": 1}}, "not_found"),
        ({"op": "update", "rule": "nope", "comment": "x"}, "not_found"),
    ],
    api=["POST /cluster/ha/rules", "PUT /cluster/ha/rules/{rule}"],
)
async def ha_rule(ctx: ToolContext, args: RuleArgs) -> Applied:
    """Create or change a PVE 9 HA rule: node-affinity (vmids prefer or, strict, keep to
    nodes by priority) or resource-affinity (vmids together: positive, apart: negative)."""
    return await apply_plan(ctx, args)


# --- removal -------------------------------------------------------------------------


class DeleteArgs(WriteInput):
    advertised_bare: ClassVar[tuple[str, ...]] = ("vmid", "name")

    vmid: Vmid | None = None
    name: GuestName | None = None
    rule: RuleId | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if sum(x is not None for x in (self.vmid, self.name, self.rule)) != 1:
            raise ValueError("give exactly one of vmid, name (a guest) or rule")
        return self


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    if args.rule is not None:
        rules = await _rules(ctx)
        if args.rule not in rules:
            raise ToolFailure(
                "not_found",
                f"no HA rule {args.rule!r}",
                field="rule",
                hint=f"Rules: {', '.join(rules) or 'none'}.",
            )
        gone = rules[args.rule]
        return Plan(
            summary=f"Delete {gone.type} HA rule {args.rule}",
            changes=[Change(field="resources", before=gone.resources, after=None)],
            target=Target(name=args.rule),
            calls=[ApiCall.to("DELETE", "/cluster/ha/rules/{rule}", rule=args.rule)],
        )
    row, sid = await _managed(ctx, args)
    warnings = ["HA no longer recovers or moves the guest; it keeps running as it is"]
    changes = [Change(field="ha", before=sid, after=None)]
    try:
        rules = await _rules(ctx)
    except ToolFailure:
        rules = {}  # PVE 8: no rules to purge
    for rule in rules.values():
        members = [s for s in rule.resources.split(",") if s]
        if sid in members:
            left = [s for s in members if s != sid]
            changes.append(Change(field=f"rule {rule.rule}", before=members, after=left or None))
            if not left:
                warnings.append(f"rule {rule.rule} names only {sid}: it is deleted too")
    return Plan(
        summary=f"Remove {sid} from HA",
        changes=changes,
        target=planners.guest_target(row),
        calls=[ApiCall.to("DELETE", "/cluster/ha/resources/{sid}", params={"purge": 1}, sid=sid)],
        warnings=warnings,
    )


@tool(
    "proxmox_ha_delete",
    title="Remove a guest from HA or delete an HA rule",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=DeleteArgs,
    output=Applied,
    planner=_plan_delete,
    examples=[{"vmid": 203}, {"rule": "prefer-pve3"}],
    rejects=[
        ({"vmid": 100}, "not_found"),
        ({"rule": "nope"}, "not_found"),
        ({"vmid": 203, "rule": "prefer-pve3"}, "invalid_argument"),
    ],
    api=["DELETE /cluster/ha/resources/{sid}", "DELETE /cluster/ha/rules/{rule}"],
)
async def ha_delete(ctx: ToolContext, args: DeleteArgs) -> Applied:
    """Take a guest out of HA (vmid/name; the plan lists the rules it leaves, a rule left
    empty goes too) or delete an HA rule (rule). The guest itself is not touched."""
    return await apply_plan(ctx, args)


TOOLS = (ha_status, ha_list, ha_resource, ha_move, ha_rule, ha_delete)
