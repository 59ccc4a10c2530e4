"""The whole PVE API within reach: a schema-checked generic call, and discovery.

`proxmox_api_read` (GET, read tier) and `proxmox_api_call` (POST/PUT/DELETE) send one
request of the API the typed tools do not cover, checked against the structural index of
PVE's schema before anything is sent: the path must exist (templated segments matched,
nothing encoded to reach another path), the method must exist on it, and the parameters
must fit PVE's types, formats, enums and ranges, unknown ones refused with the closest
names. The gateway decides on the call's own tier and endpoint (`ToolSpec.calls_of`):
GET read, POST/PUT write, DELETE destructive, raised for escapes (shells, consoles,
`execute`, APT repositories...) and never below the tier of a typed tool that sends the
same endpoint, so a hard stop is destructive and confirmed through either door. Methods
whose answer is a credential (login and console tickets, token secrets) are refused
outright. `proxmox_api_search` and `proxmox_api_describe` find and explain methods from
the index alone, in answers of a few hundred tokens. The index is the cluster's
(`cluster_schema`): its `api_schema` file, else the schema its node serves (which has
descriptions, so describe shows them), else the shipped one, which has no Proxmox prose;
describe says which one answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import Field

from pvemcp.pveapi import CREDENTIALS, Index, RouteError, validate
from pvemcp.pveapi.discover import SEARCH_LIMIT, describe, search
from pvemcp.pveapi.tiers import GENERIC_ONLY, RAISED, params_raise
from pvemcp.tools.kit import (
    ApiCall,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    generic_tier,
    planners,
    tag_list,
    tool,
)

ApiPath = Annotated[
    str,
    Field(min_length=1, max_length=512, description="API path, e.g. /nodes/pve1/qemu/100/config."),
]
Params = Annotated[
    dict[str, Any] | None,
    Field(description="The method's parameters, as PVE names them."),
]
"""Values are checked against the method's schema (`route`), not by type here: a list or
an object where PVE takes none is refused naming the parameter, as PVE would."""

HttpMethod = Literal["GET", "POST", "PUT", "DELETE"]

MAX_TEXT = 16_384
"""The longest string answer passed on whole (characters); longer ones are cut, saying so."""


def _bad_path(path: str, message: str) -> ToolFailure:
    return ToolFailure(
        "invalid_argument",
        f"path {path[:120]!r}: {message}",
        field="path",
        hint="Give the plain API path, one value per segment, e.g. /nodes/pve1/qemu/100/config; "
        "find paths with proxmox_api_search.",
    )


def _plain(path: str) -> None:
    """Refuse a path that is not plainly one API path: no query, no `.`/`..` or empty
    segments, no encoded dots or double encoding, no control characters. What is sent is
    rebuilt from the matched template and its values, so nothing else could leak through;
    these are refused so that what the caller wrote is what the audit shows."""
    if not path.startswith("/"):
        raise _bad_path(path, "must start with /")
    if any(ch in path for ch in "?#\\") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise _bad_path(path, "holds a query, fragment, backslash or control character")
    lowered = path.lower()
    if "%2e" in lowered or "%25" in lowered or "%00" in lowered:
        raise _bad_path(path, "holds an encoded dot, percent or NUL (no encoded traversal)")
    segments = path[1:].removesuffix("/").split("/")
    for segment in segments:
        if segment in ("", ".", "..") or unquote(segment) in (".", ".."):
            raise _bad_path(path, "has an empty, '.' or '..' segment (no traversal)")


def route(method: HttpMethod, path: str, params: dict[str, Any] | None, index: Index) -> ApiCall:
    """The one request `method path params` is, checked against the PVE API index as PVE
    would check it; `invalid_argument` naming the path, method or parameter (with the
    closest names) otherwise, and `unsupported` for a method that answers a credential.
    `index` is the cluster's (`ToolContext.schema()`)."""
    _plain(path)
    try:
        endpoint, values = index.match(method, path)
    except RouteError as exc:
        hint = f"Closest valid: {', '.join(exc.closest)}." if exc.closest else None
        raise ToolFailure(
            "invalid_argument",
            exc.message,
            field=exc.field,
            hint=hint or "Find paths with proxmox_api_search.",
        ) from None
    if (endpoint.method, endpoint.template) in CREDENTIALS:
        what = CREDENTIALS[endpoint.method, endpoint.template]
        raise ToolFailure(
            "unsupported",
            f"{method} {endpoint.template} answers {what}: the gateway never hands a "
            "credential to a model",
            field="path",
            hint="An operator does this on the node or in the web UI.",
        )
    given = dict(params or {})
    clash = sorted(set(given) & set(values))
    if clash:
        raise ToolFailure(
            "invalid_argument",
            f"params.{clash[0]}: is given by the path ({endpoint.template})",
            field=f"params.{clash[0]}",
            hint="Leave it out of params: the path's value is the one sent.",
        )
    problems = validate(endpoint, given, values)
    if problems:
        first = problems[0]
        where = first.field if first.field in values else f"params.{first.field}"
        closest = f"Closest valid: {', '.join(first.closest)}. " if first.closest else ""
        raise ToolFailure(
            "invalid_argument",
            f"{method} {endpoint.template}: {first.field}: {first.message}",
            field=where,
            hint=f"{closest}proxmox_api_describe shows the method's parameters.",
            details={"problems": [{"field": p.field, "message": p.message} for p in problems[:10]]}
            if len(problems) > 1
            else None,
        )
    return ApiCall.to(
        method,
        endpoint.template,
        params=given,
        task=endpoint.upid,
        **values,
    )


class ReadArgs(ToolInput):
    path: ApiPath
    params: Params = None
    offset: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=500, description="Rows of a list answer.")] = 50


class CallArgs(WaitInput):
    method: Literal["POST", "PUT", "DELETE"]
    path: ApiPath
    params: Params = None


class ApiAnswer(ToolOutput):
    method: str
    path: str
    data: Any = None
    total: int | None = None
    next_offset: int | None = None
    upid: str | None = None
    task_status: str | None = None
    exitstatus: str | None = None
    note: str | None = None


def _shaped(answer: ApiAnswer, data: Any, offset: int, limit: int) -> ApiAnswer:
    """A list answer paged, a long text cut, each saying so."""
    if isinstance(data, list):
        answer.total = len(data)
        answer.data = data[offset : offset + limit]
        if offset + limit < len(data):
            answer.next_offset = offset + limit
    elif isinstance(data, str) and len(data) > MAX_TEXT:
        answer.data = data[:MAX_TEXT]
        answer.note = f"text cut at {MAX_TEXT} of {len(data)} characters"
    else:
        answer.data = data
    return answer


def _read_calls(args: ReadArgs, index: Index) -> list[ApiCall]:
    return [route("GET", args.path, args.params, index)]


def _write_calls(args: CallArgs, index: Index) -> list[ApiCall]:
    return [route(args.method, args.path, args.params, index)]


@tool(
    "proxmox_api_read",
    title="Read any PVE API path",
    tier=Tier.READ,
    toolset="api",
    input=ReadArgs,
    output=ApiAnswer,
    idempotent=True,
    calls_of=_read_calls,
    examples=[
        {"path": "/nodes/pve1/qemu/100/config"},
        {"path": "/cluster/resources", "params": {"type": "vm"}, "limit": 3},
    ],
    rejects=[
        ({"path": "/nodes/pve1/qemu/100/confg"}, "invalid_argument"),
        ({"path": "/nodes/pve1/../access/users"}, "invalid_argument"),
        ({"path": "/nodes/pve1/%2e%2e/access"}, "invalid_argument"),
        ({"path": "/cluster/resources", "params": {"type": "vms"}}, "invalid_argument"),
    ],
)
async def api_read(ctx: ToolContext, args: ReadArgs) -> ApiAnswer:
    """GET one PVE API path not covered by a typed tool (prefer those); checked against
    PVE's schema first. Lists are paged (offset, limit). Find paths: proxmox_api_search."""
    call = _read_calls(args, await ctx.schema())[0]
    data = await ctx.get(call.path, call.params or None)
    return _shaped(ApiAnswer(method="GET", path=call.path), data, args.offset, args.limit)


async def _target(ctx: ToolContext, call: ApiCall) -> Target:
    """What the call acts on, for policy: the node of its path and, for a guest's path (or
    a new guest's `vmid`), the guest with its pool and tags, read fresh; for a pool's
    methods, the pool."""
    values = _path_values(call)
    node = values.get("node")
    vmid = values.get("vmid")
    if vmid is None:
        created = call.params.get("vmid")
        if created is None:
            # A pool's own methods (/pools, /pools/{poolid}) act on that pool.
            pool = values.get("poolid", call.params.get("poolid"))
            return Target(node=node, pool=str(pool) if pool is not None else None)
        pool = call.params.get("pool")
        return Target(
            node=node,
            vmid=int(created),
            pool=str(pool) if pool is not None else None,
            tags=tag_list(call.params.get("tags")) or [],
        )
    rows = await planners.guest_resources(ctx)
    row = next((r for r in rows if int(r["vmid"]) == int(vmid)), None)
    if row is None:
        raise ToolFailure(
            "not_found",
            f"no guest with vmid {vmid} in cluster {ctx.cluster_name}",
            field="path",
            hint="List guests with proxmox_guest_list.",
        )
    target = planners.guest_target(row)
    kind = next((s for s in call.template.split("/") if s in ("qemu", "lxc")), target.type)
    if target.node != node or target.type != kind:
        raise ToolFailure(
            "invalid_argument",
            f"guest {vmid} is a {target.type} on {target.node}, not a {kind} on {node}",
            field="path",
            hint=f"Use {target.path} in the path.",
        )
    return target


def _path_values(call: ApiCall) -> dict[str, str]:
    """The values of the call's `{variables}`, read back from its path."""
    names = call.template.strip("/").split("/")
    parts = call.path.strip("/").split("/")
    return {
        name[1:-1]: unquote(part)
        for name, part in zip(names, parts, strict=True)
        if name.startswith("{")
    }


async def _plan_call(ctx: ToolContext, args: CallArgs) -> Plan:
    call = _write_calls(args, await ctx.schema())[0]
    target = await _target(ctx, call)
    warnings = []
    endpoint = (call.method, call.template)
    covering = ctx.endpoint_tools(call.method, call.template)
    tier = generic_tier(call.method, call.template, call.params, covering)
    raised = (
        RAISED.get(endpoint)
        or GENERIC_ONLY.get(endpoint)
        or params_raise(call.method, call.template, call.params)
    )
    if raised is not None:
        warnings.append(f"tier {tier}: it {raised[1]}")
    if covering:
        tools = ", ".join(spec.name for spec in covering)
        warnings.append(f"typed tools with their own checks and plan send this: {tools}")
    return Plan(
        summary=f"{call.method} {call.path}", target=target, calls=[call], warnings=warnings
    )


@tool(
    "proxmox_api_call",
    title="Call any PVE API method",
    tier=Tier.DESTRUCTIVE,
    toolset="api",
    input=CallArgs,
    output=ApiAnswer,
    planner=_plan_call,
    calls_of=_write_calls,
    examples=[
        {
            "method": "PUT",
            "path": "/nodes/pve1/qemu/100/config",
            "params": {"description": "web server"},
        },
        {"method": "POST", "path": "/nodes/pve1/qemu/101/status/start"},
        {"method": "POST", "path": "/nodes/pve2/qemu/104/status/stop"},
        {"method": "POST", "path": "/pools", "params": {"poolid": "sandbox"}},
    ],
    rejects=[
        ({"method": "POST", "path": "/nodes/pve1/qemu/100/snapshots"}, "invalid_argument"),
        ({"method": "DELETE", "path": "/version"}, "invalid_argument"),
        (
            {"method": "PUT", "path": "/nodes/pve1/qemu/100/config", "params": {"cores": "x"}},
            "invalid_argument",
        ),
        (
            {
                "method": "PUT",
                "path": "/nodes/pve1/qemu/100/config",
                "params": {"descriptoin": "x"},
            },
            "invalid_argument",
        ),
        ({"method": "PUT", "path": "/nodes/pve1//qemu/100/config"}, "invalid_argument"),
        ({"method": "POST", "path": "/nodes/pve1/execute", "params": {"commands": "[]"}}, "denied"),
        (
            {
                "method": "POST",
                "path": "/access/ticket",
                "params": {"username": "a", "password": "b"},
            },
            "unsupported",
        ),
        ({"method": "PUT", "path": "/nodes/pve2/qemu/100/config"}, "invalid_argument"),
    ],
)
async def api_call(ctx: ToolContext, args: CallArgs) -> ApiAnswer:
    """POST/PUT/DELETE one PVE API method no typed tool covers (prefer those); checked
    against PVE's schema, planned, and tiered per call: DELETE and hard stops confirm."""
    plan = ctx.plan
    if plan is None or len(plan.calls) != 1:
        raise ToolFailure("internal_error", "proxmox_api_call ran without its plan")
    call = plan.calls[0]
    answer = await ctx.call(call.method, call.path, call.params or None)
    result = ApiAnswer(method=call.method, path=call.path)
    if call.task and isinstance(answer.data, str) and answer.data in ctx.upids:
        result.upid, result.task_status = answer.data, "running"
        if args.wait:
            status = await ctx.wait_task(answer.data, args.timeout)
            result.task_status, result.exitstatus = status.status, status.exitstatus
        return result
    return _shaped(result, answer.data, 0, 500)


class SearchArgs(ToolInput):
    query: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description="Words, path fragments or parameter names, e.g. 'set vm description'.",
        ),
    ]
    limit: Annotated[int, Field(ge=1, le=20)] = SEARCH_LIMIT


class Found(ToolOutput):
    method: str
    path: str
    summary: str
    tool: str | None = None


class SearchResult(ToolOutput):
    endpoints: list[Found]
    total: int
    note: str | None = None


@tool(
    "proxmox_api_search",
    title="Find PVE API methods",
    tier=Tier.READ,
    toolset="api",
    input=SearchArgs,
    output=SearchResult,
    idempotent=True,
    examples=[{"query": "set vm description"}, {"query": "/lxc/ snapshot rollback", "limit": 3}],
    rejects=[({"query": ""}, "invalid_argument")],
)
async def api_search(ctx: ToolContext, args: SearchArgs) -> SearchResult:
    """Find PVE API methods by words, path fragments or parameter names, best first; tool
    names a typed tool that does it (prefer it). Then proxmox_api_describe."""
    found, total = search(await ctx.schema(), args.query, args.limit)
    words = set(args.query.lower().replace("/", " ").split())
    rows = []
    for endpoint in found:
        matched = [name for name in endpoint.properties if name.replace("[n]", "") in words]
        summary = f"{endpoint.name}, {len(endpoint.properties)} params"
        if matched:
            summary += f" incl. {', '.join(matched)}"
        if endpoint.upid:
            summary += ", task"
        covering = ctx.endpoint_tools(endpoint.method, endpoint.template)
        summary += f", {generic_tier(endpoint.method, endpoint.template, None, covering)}"
        rows.append(
            Found(
                method=endpoint.method,
                path=endpoint.template,
                summary=summary,
                tool=covering[0].name if covering else None,
            )
        )
    note = None
    if total > len(rows):
        note = f"best {len(rows)} of {total}: add words to narrow"
    elif not rows:
        note = "nothing matched: try path segments (qemu, lxc, storage) or parameter names"
    return SearchResult(endpoints=rows, total=total, note=note)


class DescribeArgs(ToolInput):
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: Annotated[
        str,
        Field(min_length=1, max_length=512, description="A template or concrete API path."),
    ]
    match: Annotated[
        str | None,
        Field(max_length=64, description="Only parameters whose name contains this."),
    ] = None


class Description(ToolOutput):
    method: str
    path: str
    name: str
    description: str | None = None
    api_schema: str
    tier: str
    params: dict[str, str]
    params_total: int
    params_more: int | None = None
    returns: str
    permission: str
    task: bool
    typed_tools: list[str] | None = None
    note: str | None = None


@tool(
    "proxmox_api_describe",
    title="Describe a PVE API method",
    tier=Tier.READ,
    toolset="api",
    input=DescribeArgs,
    output=Description,
    idempotent=True,
    examples=[
        {"method": "PUT", "path": "/nodes/{node}/qemu/{vmid}/config", "match": "desc"},
        {"method": "POST", "path": "/nodes/pve1/qemu/100/status/stop"},
    ],
    rejects=[({"method": "GET", "path": "/nodes/{node}/qemu/{vmid}/confg"}, "invalid_argument")],
)
async def api_describe(ctx: ToolContext, args: DescribeArgs) -> Description:
    """One PVE API method: parameters with types and limits (filter with match), what it
    returns, the PVE permission it needs, task or not, its tier, typed tools that send it,
    and which schema answered."""
    index = await ctx.schema()
    try:
        endpoint, _ = index.match(args.method, args.path)
    except RouteError as exc:
        raise ToolFailure(
            "invalid_argument",
            exc.message,
            field=exc.field,
            hint=f"Closest valid: {', '.join(exc.closest)}."
            if exc.closest
            else "Find paths with proxmox_api_search.",
        ) from None
    covering = ctx.endpoint_tools(endpoint.method, endpoint.template)
    tier = generic_tier(endpoint.method, endpoint.template, None, covering)
    shown = describe(
        endpoint, match=args.match, covered_by=[s.name for s in covering], tier=str(tier)
    )
    result = Description.model_validate({**shown, "api_schema": index.source})
    if (endpoint.method, endpoint.template) in CREDENTIALS:
        result.note = "answers a credential: proxmox_api_call refuses it"
    elif result.params_more:
        result.note = f"{result.params_more} more parameters: narrow with match"
    return result


TOOLS = (api_search, api_describe, api_read, api_call)
