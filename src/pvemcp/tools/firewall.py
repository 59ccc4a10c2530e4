"""Firewall tools: options, rules, IP sets, aliases and security groups of the cluster, a
node or a guest, and the firewall log.

One `scope` for all: a guest (vmid or name), a node, a security group (rules only), or
the cluster when none is named; PVE's API is the same under each. Rules are shown as PVE
writes them in its `.fw` files (`2: IN ACCEPT -source +web -p tcp -dport 443 # web`, `|`
for a disabled rule): one short line each, the same in a read, a plan and a result.

Rule changes are one write tool with an `op` (add, update, move: all reversible) and a
destructive delete, rather than four tools: the arguments are the same rule fields, and a
model picks an op more reliably than one of four near-identical tools. Every plan shows
the rule list before and after and binds the list's `digest`, so a rule list changed by
someone else in between is refused instead of a wrong position being changed. PVE's own
create ignores `pos` and `digest` (pve-firewall `API2/Firewall/Rules.pm`: a new rule is
rule 0), so adding elsewhere is the create and a `moveto`, and the digest of an add is
checked by the tool before it sends. What PVE would refuse (an unknown IP set or alias, a
CIDR that does not parse, a position out of range) is refused before anything is sent,
and so are a duplicate rule or IP set entry and deleting an IP set, alias or group a rule
still uses (PVE's API allows that and leaves rules that no longer compile).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    GuestName,
    NodeName,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WriteInput,
    check_api_request,
    matching,
    planners,
    read_as,
    tool,
)

_ITEMS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])
FwName = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9_-]{1,63}", "a firewall name")]
"""PVE's IP set, alias and security group names (letter, then letters, digits, - and _)."""


def _one_of(*allowed: str) -> AfterValidator:
    """A choice checked in code, not listed in the schema (each enum costs its bytes in
    every tools/list; the error names the choices when it matters)."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"is not one of {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _position(value: int) -> int:
    if value < 0:
        raise ValueError("is not a position (0 or more)")
    return value


LogLevel = Annotated[
    str, _one_of("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog")
]
Position = Annotated[int, AfterValidator(_position)]
Digest = Annotated[str, matching(r"[0-9a-f]{40}", "a digest (from proxmox_firewall_get)")]
MANAGEMENT_PORTS = {22: "SSH", 8006: "web UI/API"}


# --- scopes --------------------------------------------------------------------------


class GuestScope(ToolInput):
    """Where: a guest (vmid or name), or the cluster when neither is given."""

    advertised_bare: ClassVar[tuple[str, ...]] = ("vmid", "name")

    vmid: Vmid | None = None
    name: GuestName | None = None

    @model_validator(mode="after")
    def _one_guest(self) -> Self:
        if self.vmid is not None and self.name is not None:
            raise ValueError("give vmid or name, not both")
        return self


class ScopeArgs(GuestScope):
    """Where: a guest (vmid or name), a node, or the cluster when none is given."""

    node: NodeName | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.node is not None and (self.vmid is not None or self.name is not None):
            raise ValueError("give a guest (vmid or name) or a node, not both")
        return self


@dataclass(frozen=True)
class Scope:
    """A resolved scope: its label, PVE's rule_env, the API template of its firewall
    directory with the values that fill it, and the target policy decides on."""

    label: str
    env: Literal["cluster", "host", "vm", "ct", "group"]
    base: str
    where: dict[str, str | int]
    target: Target
    rules_at: str = "rules"
    """Where its rules are under `base` (a group's: `groups/{group}`)."""

    def call(
        self,
        method: Literal["GET", "POST", "PUT", "DELETE"],
        rest: str,
        params: dict[str, Any] | None = None,
        **more: str | int,
    ) -> ApiCall:
        """The call of `base/rest` (a template), its placeholders filled and quoted."""
        template = f"{self.base}/{rest}" if rest else self.base
        values: dict[str, Any] = {**self.where, **more}
        return ApiCall.to(method, template, params=params, **values)

    def path(self, rest: str, **more: str | int) -> str:
        return self.call("GET", rest, None, **more).path


async def _nodes(ctx: ToolContext) -> list[str]:
    return sorted(str(row.get("node")) for row in await read_as(ctx, _ITEMS, "/nodes"))


async def resolve_scope(
    ctx: ToolContext, args: GuestScope, *, group: str | None = None, nodes: bool = True
) -> Scope:
    """The scope the arguments name; an unknown guest, node or group is `not_found`, and
    a node where the call has no meaning (`nodes=False`: IP sets, aliases) is refused."""
    if args.vmid is not None or args.name is not None:
        row = await planners.resolve_guest(ctx, args)
        target = planners.guest_target(row)
        label = f"{target.type} {target.vmid} ({target.name or '?'}) on {target.node}"
        env: Literal["vm", "ct"] = "vm" if target.type == "qemu" else "ct"
        base = f"/nodes/{{node}}/{target.type}/{{vmid}}/firewall"
        return Scope(label, env, base, {"node": target.node, "vmid": target.vmid}, target)
    if group is not None:
        groups = [
            str(row.get("group")) for row in await read_as(ctx, _ITEMS, "/cluster/firewall/groups")
        ]
        if group not in groups:
            raise ToolFailure(
                "not_found",
                f"no security group {group!r}",
                field="group",
                hint=f"Its groups: {', '.join(groups) or 'none'} "
                "(proxmox_firewall_group makes one).",
            )
        where: dict[str, str | int] = {"group": group}
        return Scope(
            f"group {group}",
            "group",
            "/cluster/firewall",
            where,
            Target(),
            rules_at="groups/{group}",
        )
    node = args.node if isinstance(args, ScopeArgs) else None
    if node is not None:
        if not nodes:
            raise ToolFailure(
                "invalid_argument",
                "a node's firewall has no IP sets or aliases of its own",
                field="node",
                hint="Use the cluster's (omit node) or a guest's (vmid or name).",
            )
        names = await _nodes(ctx)
        if node not in names:
            raise ToolFailure(
                "not_found",
                f"cluster {ctx.cluster_name} has no node {node!r}",
                field="node",
                hint=f"Use one of its nodes: {', '.join(names)}.",
            )
        return Scope(
            f"node {node}", "host", "/nodes/{node}/firewall", {"node": node}, Target(node=node)
        )
    return Scope("cluster", "cluster", "/cluster/firewall", {}, Target())


# --- rules as PVE writes them ----------------------------------------------------------


def rule_text(rule: dict[str, Any]) -> str:
    """A rule as a line of a PVE `.fw` file: `IN SSH(ACCEPT) -source +admins # ssh`,
    `|` in front when disabled."""
    type_, action = str(rule.get("type", "")), str(rule.get("action", ""))
    head = f"{rule['macro']}({action})" if rule.get("macro") else action
    parts = [type_.upper(), head]
    for key, flag in (
        ("iface", "-i"),
        ("source", "-source"),
        ("dest", "-dest"),
        ("proto", "-p"),
        ("dport", "-dport"),
        ("sport", "-sport"),
        ("icmp-type", "-icmp-type"),
        ("log", "-log"),
    ):
        if rule.get(key) not in (None, ""):
            parts += [flag, str(rule[key])]
    line = " ".join(parts)
    if not rule.get("enable"):
        line = "|" + line
    if rule.get("comment"):
        line += f" # {rule['comment']}"
    return line


def numbered(rules: list[dict[str, Any]]) -> list[str]:
    return [f"{pos}: {rule_text(rule)}" for pos, rule in enumerate(rules)]


_MATCH = (
    "type",
    "action",
    "macro",
    "iface",
    "source",
    "dest",
    "proto",
    "dport",
    "sport",
    "icmp-type",
)
"""What a rule matches and does: two rules equal in these are duplicates."""


async def rule_list(ctx: ToolContext, path: str) -> tuple[list[dict[str, Any]], str | None]:
    """The rules at `path` (without PVE's `pos` and `digest`) and the list's digest."""
    items = await read_as(ctx, _ITEMS, path)
    digest = str(items[0]["digest"]) if items and "digest" in items[0] else None
    return [{k: v for k, v in i.items() if k not in ("pos", "digest")} for i in items], digest


async def read_rules(ctx: ToolContext, scope: Scope) -> tuple[list[dict[str, Any]], str | None]:
    return await rule_list(ctx, scope.path(scope.rules_at))


def _same_digest(scope: Scope, expected: str | None, found: str | None, what: str) -> None:
    if expected is not None and expected != found:
        raise ToolFailure(
            "config_changed",
            f"the {what} of {scope.label} changed since it was read (digest)",
            field="digest",
            hint="Read them again with proxmox_firewall_get and plan the change on what they "
            "are now.",
        )


# --- reading -------------------------------------------------------------------------


class GetArgs(ScopeArgs):
    show: Annotated[
        Literal["rules", "ipsets", "aliases", "groups"],
        Field(description="rules: options and rules; groups: the cluster's security groups."),
    ] = "rules"
    group: Annotated[FwName | None, Field(description="A security group's rules.")] = None


class IpSet(ToolOutput):
    name: str
    comment: str | None = None
    entries: list[str]
    """CIDRs; `!` in front: excluded (nomatch)."""


class Group(ToolOutput):
    group: str
    comment: str | None = None
    rules: list[str]


class FirewallView(ToolOutput):
    scope: str
    digest: str | None = None
    """Of the rules (show rules): pass to a rule change to make sure they are unchanged."""
    options: dict[str, Any] | None = None
    rules: list[str] | None = None
    ipsets: list[IpSet] | None = None
    aliases: list[str] | None = None
    groups: list[Group] | None = None


def _entry(item: dict[str, Any]) -> str:
    text = ("!" if item.get("nomatch") else "") + str(item["cidr"])
    return text + (f" # {item['comment']}" if item.get("comment") else "")


async def _ipsets(ctx: ToolContext, scope: Scope) -> list[IpSet]:
    sets = await read_as(ctx, _ITEMS, scope.path("ipset"))
    found = await ctx.get_many(*(scope.path("ipset/{name}", name=s["name"]) for s in sets))
    return [
        IpSet(name=str(s["name"]), comment=s.get("comment"), entries=[_entry(i) for i in items])
        for s, items in zip(sets, found, strict=True)
    ]


def _alias_line(item: dict[str, Any]) -> str:
    line = f"{item['name']} {item['cidr']}"
    return line + (f" # {item['comment']}" if item.get("comment") else "")


@tool(
    "proxmox_firewall_get",
    title="Firewall rules, IP sets, aliases",
    tier=Tier.READ,
    toolset="firewall",
    api=(
        "GET /cluster/firewall/rules",
        "GET /cluster/firewall/options",
        "GET /nodes/{node}/firewall/rules",
        "GET /nodes/{node}/firewall/options",
        "GET /nodes/{node}/{type}/{vmid}/firewall/rules",
        "GET /nodes/{node}/{type}/{vmid}/firewall/options",
        "GET /cluster/firewall/ipset",
        "GET /cluster/firewall/aliases",
        "GET /nodes/{node}/{type}/{vmid}/firewall/ipset",
        "GET /nodes/{node}/{type}/{vmid}/firewall/aliases",
        "GET /cluster/firewall/groups",
        "GET /cluster/firewall/groups/{group}",
    ),
    input=GetArgs,
    output=FirewallView,
    idempotent=True,
    examples=[
        {},
        {"vmid": 100},
        {"node": "pve1"},
        {"group": "webserver"},
        {"show": "groups"},
        {"name": "db01", "show": "ipsets"},
        {"show": "aliases"},
    ],
    rejects=[
        ({"vmid": 999}, "not_found"),
        ({"group": "nope"}, "not_found"),
        ({"node": "pve1", "show": "ipsets"}, "invalid_argument"),
        ({"vmid": 100, "show": "groups"}, "invalid_argument"),
    ],
)
async def firewall_get(ctx: ToolContext, args: GetArgs) -> FirewallView:
    """Firewall of the cluster (default), a node, a guest (vmid/name) or a security group:
    options and numbered rules with their digest, or IP sets, aliases or groups."""
    if args.show == "groups" and (args.vmid or args.name or args.node or args.group):
        raise ToolFailure(
            "invalid_argument",
            "security groups belong to the cluster",
            field="show",
            hint="Omit vmid, name, node and group with show groups.",
        )
    scope = await resolve_scope(
        ctx, args, group=args.group, nodes=args.show not in ("ipsets", "aliases")
    )
    view = FirewallView(scope=scope.label)
    if args.show == "rules":
        rules, view.digest = await read_rules(ctx, scope)
        view.rules = numbered(rules)
        if scope.env != "group":
            options = await read_as(ctx, OBJECT, scope.path("options"))
            view.options = {k: v for k, v in options.items() if k != "digest"}
    elif args.show == "ipsets":
        view.ipsets = await _ipsets(ctx, scope)
    elif args.show == "aliases":
        view.aliases = [_alias_line(a) for a in await read_as(ctx, _ITEMS, scope.path("aliases"))]
    else:
        groups = await read_as(ctx, _ITEMS, "/cluster/firewall/groups")
        found = await ctx.get_many(*(scope.path("groups/{g}", g=g["group"]) for g in groups))
        view.groups = [
            Group(group=str(g["group"]), comment=g.get("comment"), rules=numbered(rules))
            for g, rules in zip(groups, found, strict=True)
        ]
    return view


# --- the result of every write -------------------------------------------------------


class Applied(ToolOutput):
    scope: str
    now: list[str]
    """What the changed list or object is now (rules numbered, entries, options)."""


OF = " the firewall of "
"""Every write's plan summary ends with `OF` and the scope's label, which the handler's
result repeats (`scope_label`)."""


def scope_label(plan: Plan) -> str:
    return plan.summary.rsplit(OF, 1)[-1]


async def _send(ctx: ToolContext, plan: Plan) -> None:
    for call in plan.calls:
        await ctx.call(call.method, call.path, call.params or None)


# --- rule changes --------------------------------------------------------------------

Port = Annotated[str, matching(r"[\w:,-]{1,64}", "ports (22, 80:90, ssh, a list)")]
Address = Annotated[str, matching(r"[\w.:/,+-]{1,512}", "an address, CIDR, range, +ipset or alias")]


def _checked_address(value: str | None) -> str | None:
    """A literal address list must parse (an `+ipset` or alias is checked on the cluster);
    `null` means unset."""
    if (
        value is None
        or value.startswith("+")
        or re.fullmatch(r"(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+", value)
    ):
        return value
    for element in value.split(","):
        try:
            if "-" in element:
                for part in element.split("-", 1):
                    ipaddress.ip_address(part)
            else:
                ipaddress.ip_network(element, strict=True)
        except ValueError as exc:
            raise ValueError(f"does not parse: {exc}") from None
    return value


class RuleFields(ToolInput):
    type: Literal["in", "out", "forward", "group"] | None = None
    action: Annotated[
        str | None,
        matching(r"[A-Za-z][A-Za-z0-9_-]{1,20}", "ACCEPT, DROP, REJECT or a group name"),
        Field(description="ACCEPT, DROP, REJECT; for type group: the group's name."),
    ] = None
    macro: Annotated[
        str | None,
        matching(r"[A-Za-z][\w-]{0,63}", "a macro name"),
        Field(description="e.g. SSH, HTTPS, DNS, Ping."),
    ] = None
    proto: Annotated[str | None, matching(r"[a-z0-9-]{1,16}", "a protocol")] = None
    source: Annotated[Address | None, AfterValidator(_checked_address)] = None
    dest: Annotated[Address | None, AfterValidator(_checked_address)] = None
    dport: Port | None = None
    sport: Port | None = None
    iface: Annotated[str | None, matching(r"[\w.:-]{1,21}", "an interface (net0 for guests)")] = (
        None
    )
    icmp_type: Annotated[str | None, matching(r"[a-z0-9-]{1,32}", "an ICMP type")] = None
    log: LogLevel | None = None
    enable: Annotated[bool | None, Field(description="Default on for a new rule.")] = None
    comment: Annotated[str | None, Field(max_length=256)] = None

    def pve(self) -> dict[str, Any]:
        """The fields given, as PVE names them (`icmp-type`), booleans as 0/1."""
        values = self.model_dump(
            include=set(RuleFields.model_fields) - set(ToolInput.model_fields), exclude_none=True
        )
        out = {k.replace("_", "-"): v for k, v in values.items()}
        if "enable" in out:
            out["enable"] = int(out["enable"])
        return out


CLEARABLE = ("macro", "proto", "source", "dest", "dport", "sport", "iface", "icmp_type", "log",
             "comment")  # fmt: skip


class RuleArgs(ScopeArgs, RuleFields, WriteInput):
    op: Annotated[
        Literal["add", "update", "move"],
        Field(description="add at pos (default 0); update or move the rule at pos."),
    ] = "add"
    group: Annotated[FwName | None, Field(description="A security group's rules.")] = None
    pos: Position | None = None
    to: Annotated[Position | None, Field(description="move: its new position.")] = None
    clear: Annotated[
        list[Annotated[str, _one_of(*CLEARABLE)]] | None,
        Field(max_length=10, description="update: fields to remove, e.g. comment."),
    ] = None
    digest: Digest | None = None


def _out_of_range(pos: int, size: int, field: str, *, adding: bool = False) -> ToolFailure:
    last = size if adding else size - 1
    valid = f"0..{last}" if last >= 0 else "none: the list is empty"
    return ToolFailure(
        "invalid_argument",
        f"position {pos} is out of range: the list has {size} rule(s)",
        field=field,
        hint=f"Valid positions: {valid} (proxmox_firewall_get numbers them).",
    )


async def _check_references(ctx: ToolContext, scope: Scope, fields: dict[str, Any]) -> None:
    """An `+ipset` or alias in source/dest must exist where PVE looks (the scope, then the
    cluster); refused naming the field, with what exists."""
    named = {
        key: str(fields[key])
        for key in ("source", "dest")
        if str(fields.get(key, "")).startswith("+")
        or re.fullmatch(r"(dc/|guest/)?[A-Za-z][\w-]+", str(fields.get(key, "")))
    }
    if not named:
        return
    path = scope.path("refs") if scope.env in ("vm", "ct") else "/cluster/firewall/refs"
    refs = await read_as(ctx, _ITEMS, path)
    sets = {str(r["name"]) for r in refs if r.get("type") == "ipset"}
    aliases = {str(r["name"]).lower() for r in refs if r.get("type") == "alias"}
    for key, value in named.items():
        if value.startswith("+"):
            name = re.sub(r"^\+(guest/|dc/|sdn/)?", "", value)
            if name not in sets:
                raise ToolFailure(
                    "not_found",
                    f"no IP set {name!r} for {scope.label}",
                    field=key,
                    hint=f"IP sets here: {', '.join(sorted(sets)) or 'none'} "
                    "(proxmox_firewall_ipset creates one).",
                )
        elif re.sub(r"^(dc/|guest/)", "", value).lower() not in aliases:
            raise ToolFailure(
                "not_found",
                f"no alias {value!r} for {scope.label}",
                field=key,
                hint=f"Aliases here: {', '.join(sorted(aliases)) or 'none'} "
                "(proxmox_firewall_alias defines one); an address needs digits.",
            )


def _duplicate(rules: list[dict[str, Any]], rule: dict[str, Any]) -> int | None:
    key = tuple(str(rule.get(k, "")) for k in _MATCH)
    return next(
        (pos for pos, r in enumerate(rules) if tuple(str(r.get(k, "")) for k in _MATCH) == key),
        None,
    )


def _moved(rules: list[Any], pos: int, to: int) -> tuple[list[Any], int]:
    """The list after moving `pos` to `to`, and the `moveto` that does it in PVE (which
    puts the rule in front of the one that *was* at `moveto`)."""
    after = [r for i, r in enumerate(rules) if i != pos]
    after.insert(to, rules[pos])
    return after, to + 1 if to > pos else to


Planned = tuple[list[dict[str, Any]], list[ApiCall], str]
"""A rule change worked out: the rules after it, the calls, what it does (for the summary)."""


async def _plan_add(
    ctx: ToolContext, args: RuleArgs, scope: Scope, rules: list[dict[str, Any]], digest: str | None
) -> Planned:
    fields = args.pve()
    if "type" not in fields or "action" not in fields:
        raise ToolFailure(
            "invalid_argument",
            "a new rule needs type and action",
            field="type" if "type" not in fields else "action",
            hint="e.g. type in, action ACCEPT (or type group, action <group name>).",
        )
    pos = args.pos or 0
    if pos > len(rules):
        raise _out_of_range(pos, len(rules), "pos", adding=True)
    fields.setdefault("enable", 1)
    await _check_references(ctx, scope, fields)
    same = _duplicate(rules, fields)
    if same is not None:
        raise ToolFailure(
            "already_exists",
            f"rule {same} already does this: {rule_text(rules[same])}",
            field="action",
            hint=f"Update rule {same} (op update, pos {same}) instead, or change the rule.",
        )
    # PVE's create ignores digest; the handler checks it before sending (see module doc).
    where = scope.rules_at
    calls = [scope.call("POST", where, {**fields, **({"digest": digest} if digest else {})})]
    if pos:
        calls.append(scope.call("PUT", f"{where}/{{pos}}", {"moveto": pos + 1}, pos=0))
    return [*rules[:pos], fields, *rules[pos:]], calls, f"add a rule at {pos} to"


async def _plan_change(
    ctx: ToolContext, args: RuleArgs, scope: Scope, rules: list[dict[str, Any]], digest: str | None
) -> Planned:
    """update or move the rule at `pos`, binding the list's digest."""
    pos = args.pos
    if pos is None:
        raise ToolFailure(
            "invalid_argument",
            f"{args.op} needs pos",
            field="pos",
            hint="The rule's position, from proxmox_firewall_get.",
        )
    if pos >= len(rules):
        raise _out_of_range(pos, len(rules), "pos")
    check = {"digest": digest} if digest else {}
    one = f"{scope.rules_at}/{{pos}}"
    if args.op == "move":
        if args.to is None:
            raise ToolFailure(
                "invalid_argument", "move needs to", field="to", hint="The rule's new position."
            )
        if args.to >= len(rules):
            raise _out_of_range(args.to, len(rules), "to")
        after, moveto = _moved(rules, pos, args.to)
        calls = [scope.call("PUT", one, {"moveto": moveto, **check}, pos=pos)]
        return after, calls, f"move rule {pos} to {args.to} in"
    fields, cleared = args.pve(), [key.replace("_", "-") for key in args.clear or []]
    if not fields and not cleared:
        raise ToolFailure(
            "invalid_argument",
            "nothing to update",
            field="clear",
            hint="Give the rule fields to change or clear.",
        )
    changed = {k: v for k, v in {**rules[pos], **fields}.items() if k not in cleared}
    if "source" in fields or "dest" in fields:
        await _check_references(ctx, scope, fields)
    params = {**fields, **({"delete": ",".join(cleared)} if cleared else {}), **check}
    calls = [scope.call("PUT", one, params, pos=pos)]
    return [*rules[:pos], changed, *rules[pos + 1 :]], calls, f"update rule {pos} of"


async def _plan_rule(ctx: ToolContext, args: RuleArgs) -> Plan:
    scope = await resolve_scope(ctx, args, group=args.group)
    rules, digest = await read_rules(ctx, scope)
    _same_digest(scope, args.digest, digest, "rules")
    plan = _plan_add if args.op == "add" else _plan_change
    after, calls, verb = await plan(ctx, args, scope, rules, digest)
    for call in calls:
        check_api_request(call.method, call.path, call.params)
    return Plan(
        summary=f"{verb}{OF}{scope.label}",
        changes=[Change(field="rules", before=numbered(rules), after=numbered(after))],
        target=scope.target,
        calls=calls,
    )


def _scope_of(plan: Plan) -> tuple[str, str]:
    """The rule list's path and label, from the plan's first call."""
    call = plan.calls[0]
    path = call.path if call.method == "POST" else call.path.rsplit("/", 1)[0]
    return path, scope_label(plan)


@tool(
    "proxmox_firewall_rule",
    title="Add, change or move a firewall rule",
    tier=Tier.WRITE,
    toolset="firewall",
    api=(
        "POST /cluster/firewall/rules",
        "POST /nodes/{node}/firewall/rules",
        "POST /nodes/{node}/{type}/{vmid}/firewall/rules",
        "PUT /cluster/firewall/rules/{pos}",
        "PUT /nodes/{node}/firewall/rules/{pos}",
        "PUT /nodes/{node}/{type}/{vmid}/firewall/rules/{pos}",
        "POST /cluster/firewall/groups/{group}",
        "PUT /cluster/firewall/groups/{group}/{pos}",
    ),
    input=RuleArgs,
    output=Applied,
    planner=_plan_rule,
    examples=[
        {"vmid": 100, "type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "443", "pos": 1},
        {"name": "web01", "op": "move", "pos": 2, "to": 0},
        {"vmid": 100, "op": "update", "pos": 2, "enable": True, "clear": ["comment"]},
        {
            "group": "webserver",
            "type": "in",
            "action": "ACCEPT",
            "macro": "SSH",
            "source": "+management",
        },
        {"node": "pve1", "type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "8006"},
    ],
    rejects=[
        ({"vmid": 100, "op": "move", "pos": 5, "to": 0}, "invalid_argument"),
        ({"vmid": 100, "pos": 9, "type": "in", "action": "DROP"}, "invalid_argument"),
        ({"vmid": 100, "type": "in", "action": "ACCEPT", "source": "+nope"}, "not_found"),
        ({"type": "in", "action": "ACCEPT", "source": "10.0.0.300"}, "invalid_argument"),
        (
            {
                "vmid": 100,
                "type": "in",
                "action": "ACCEPT",
                "proto": "tcp",
                "dport": "22",
                "source": "+management",
            },
            "already_exists",
        ),
        (
            {"vmid": 100, "op": "update", "pos": 0, "comment": "x", "digest": "0" * 40},
            "config_changed",
        ),
    ],
)
async def firewall_rule(ctx: ToolContext, args: RuleArgs) -> Applied:
    """Add a firewall rule at pos (default 0), or update or move the rule at pos, in the
    cluster, a node, a guest or a group; the plan shows the rules before and after. Delete:
    proxmox_firewall_rule_delete."""
    plan = ctx.plan
    assert plan is not None
    path, label = _scope_of(plan)
    if args.op == "add":
        _, digest = await rule_list(ctx, path)
        planned = plan.calls[0].params.get("digest")
        if planned is not None and digest != planned:
            raise ToolFailure(
                "config_changed",
                f"the rules of {label} changed since the plan (digest); nothing was sent",
                field="digest",
                hint="Call again to plan on the rules as they are now.",
            )
        first = plan.calls[0]
        await ctx.call(first.method, first.path, first.params)
        if len(plan.calls) > 1:
            added, _ = await rule_list(ctx, path)
            # PVE stores a macro in its preferred spelling (ssh -> SSH): compare caseless.
            sent = {k: str(v).lower() for k, v in first.params.items() if k != "digest"}
            if not added or any(str(added[0].get(k)).lower() != v for k, v in sent.items()):
                raise ToolFailure(
                    "config_changed",
                    f"rule 0 of {label} is not the rule just added: it was not moved",
                    field="pos",
                    hint="Read the rules with proxmox_firewall_get and move it with op move.",
                )
            move = plan.calls[1]
            await ctx.call(move.method, move.path, move.params)
    else:
        await _send(ctx, plan)
    rules, _ = await rule_list(ctx, path)
    return Applied(scope=label, now=numbered(rules))


class RuleDeleteArgs(ScopeArgs, WriteInput):
    group: Annotated[FwName | None, Field(description="A security group's rules.")] = None
    pos: Position
    digest: Digest | None = None


async def _plan_rule_delete(ctx: ToolContext, args: RuleDeleteArgs) -> Plan:
    scope = await resolve_scope(ctx, args, group=args.group)
    rules, digest = await read_rules(ctx, scope)
    _same_digest(scope, args.digest, digest, "rules")
    if args.pos >= len(rules):
        raise _out_of_range(args.pos, len(rules), "pos")
    after = [rule for pos, rule in enumerate(rules) if pos != args.pos]
    params = {"digest": digest} if digest else {}
    return Plan(
        summary=f"delete rule {args.pos} of{OF}{scope.label}",
        changes=[Change(field="rules", before=numbered(rules), after=numbered(after))],
        target=scope.target,
        calls=[scope.call("DELETE", f"{scope.rules_at}/{{pos}}", params, pos=args.pos)],
    )


@tool(
    "proxmox_firewall_rule_delete",
    title="Delete a firewall rule",
    tier=Tier.DESTRUCTIVE,
    toolset="firewall",
    api=(
        "DELETE /cluster/firewall/rules/{pos}",
        "DELETE /nodes/{node}/firewall/rules/{pos}",
        "DELETE /nodes/{node}/{type}/{vmid}/firewall/rules/{pos}",
        "DELETE /cluster/firewall/groups/{group}/{pos}",
    ),
    input=RuleDeleteArgs,
    output=Applied,
    planner=_plan_rule_delete,
    examples=[{"vmid": 100, "pos": 2}, {"group": "webserver", "pos": 1}],
    rejects=[
        ({"vmid": 100, "pos": 3}, "invalid_argument"),
        ({"node": "pve1", "pos": 0}, "invalid_argument"),
    ],
)
async def firewall_rule_delete(ctx: ToolContext, args: RuleDeleteArgs) -> Applied:
    """Delete the firewall rule at pos (cluster, node, guest or group); the plan shows the
    rules before and after and binds their digest, so a list changed since is refused."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    path, label = _scope_of(plan)
    rules, _ = await rule_list(ctx, path)
    return Applied(scope=label, now=numbered(rules))


# --- IP sets, aliases, groups --------------------------------------------------------


def pve_cidr(value: str, field: str) -> str:
    """A CIDR or address as PVE stores an IP set entry (host bits cleared, `/32` dropped);
    one that does not parse is refused naming `field`."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ToolFailure(
            "invalid_argument",
            f"{value!r} does not parse as an IP address or CIDR: {exc}",
            field=field,
            hint="Give an address (10.0.0.5) or a network (10.0.0.0/24, fd00::/64).",
        ) from None
    if "/" in value and network.prefixlen == 0:
        raise ToolFailure(
            "invalid_argument",
            "a zero prefix is not allowed in an IP set",
            field=field,
            hint="Give a longer prefix.",
        )
    if "/" not in value or network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


class IpSetArgs(GuestScope, WriteInput):
    ipset: FwName
    op: Annotated[
        Literal["create", "add", "remove"],
        Field(description="create the set (with cidr: its first entry); add or remove cidr."),
    ]
    cidr: Annotated[
        str | None, Field(max_length=64, description="Address, CIDR, or an alias name.")
    ] = None
    nomatch: Annotated[bool, Field(description="add: exclude this entry.")] = False
    comment: Annotated[str | None, Field(max_length=256)] = None


async def _plan_ipset(ctx: ToolContext, args: IpSetArgs) -> Plan:
    scope = await resolve_scope(ctx, args, nodes=False)
    sets = {s.name: s for s in await _ipsets(ctx, scope)}
    name = args.ipset
    if args.op == "create":
        if name in sets:
            raise ToolFailure(
                "already_exists",
                f"IP set {name!r} already exists in {scope.label}",
                field="ipset",
                hint="Add entries to it with op add, or pick another name.",
            )
        before: list[str] = []
        calls = [scope.call("POST", "ipset", {"name": name, **_comment(args)})]
    else:
        if name not in sets:
            raise ToolFailure(
                "not_found",
                f"no IP set {name!r} in {scope.label}",
                field="ipset",
                hint=f"Its IP sets: {', '.join(sets) or 'none'} (op create makes one).",
            )
        before = sets[name].entries
        if args.cidr is None:
            raise ToolFailure(
                "invalid_argument",
                f"{args.op} needs cidr",
                field="cidr",
                hint="The address or network to add or remove.",
            )
        calls = []
    after = list(before)
    if args.cidr is not None:
        cidr = await _entry_cidr(ctx, scope, args.cidr)
        present = [e for e in before if e.lstrip("!").split(" # ")[0] == cidr]
        if args.op == "remove":
            if not present:
                raise ToolFailure(
                    "not_found",
                    f"{cidr} is not in IP set {name!r}",
                    field="cidr",
                    hint=f"Its entries: {', '.join(before) or 'none'}.",
                )
            after.remove(present[0])
            calls.append(scope.call("DELETE", "ipset/{name}/{cidr}", cidr=cidr, name=name))
        else:
            if present:
                raise ToolFailure(
                    "already_exists",
                    f"{cidr} is already in IP set {name!r}",
                    field="cidr",
                    hint="Nothing to add.",
                )
            entry = {"cidr": cidr, **({"nomatch": 1} if args.nomatch else {})}
            if args.op == "add":
                entry |= _comment(args)
            after.insert(0, _entry(entry))
            calls.append(scope.call("POST", "ipset/{name}", entry, name=name))
    for call in calls:
        check_api_request(call.method, call.path, call.params)
    return Plan(
        summary=f"{args.op} IP set {name} in{OF}{scope.label}",
        changes=[
            Change(
                field=f"ipset {name}", before=before if args.op != "create" else None, after=after
            )
        ],
        target=scope.target,
        calls=calls,
    )


def _comment(args: IpSetArgs | AliasArgs | GroupArgs) -> dict[str, str]:
    return {"comment": args.comment} if args.comment else {}


async def _entry_cidr(ctx: ToolContext, scope: Scope, value: str) -> str:
    """An IP set entry: an alias that exists for the scope, or a CIDR as PVE stores it."""
    if not re.fullmatch(r"(dc/|guest/)?[A-Za-z][\w-]+", value):
        return pve_cidr(value, "cidr")
    path = scope.path("refs") if scope.env in ("vm", "ct") else "/cluster/firewall/refs"
    refs = await read_as(ctx, _ITEMS, path, {"type": "alias"})
    names = sorted(str(r["name"]) for r in refs)
    if re.sub(r"^(dc/|guest/)", "", value).lower() not in names:
        raise ToolFailure(
            "invalid_argument",
            f"{value!r} is neither an address nor an alias of {scope.label}",
            field="cidr",
            hint=f"Give an address or CIDR, or one of the aliases: {', '.join(names) or 'none'}.",
        )
    return value


def _under(plan: Plan, what: str) -> str:
    """The firewall directory the plan's calls are in (`.../firewall`), + `/what`."""
    return plan.calls[0].path.split(f"/{what}", 1)[0] + f"/{what}"


@tool(
    "proxmox_firewall_ipset",
    title="Create an IP set or change its entries",
    tier=Tier.WRITE,
    toolset="firewall",
    api=(
        "POST /cluster/firewall/ipset",
        "POST /nodes/{node}/{type}/{vmid}/firewall/ipset",
        "POST /cluster/firewall/ipset/{name}",
        "POST /nodes/{node}/{type}/{vmid}/firewall/ipset/{name}",
        "DELETE /cluster/firewall/ipset/{name}/{cidr}",
        "DELETE /nodes/{node}/{type}/{vmid}/firewall/ipset/{name}/{cidr}",
    ),
    input=IpSetArgs,
    output=Applied,
    planner=_plan_ipset,
    examples=[
        {"ipset": "office", "op": "create", "cidr": "192.0.2.0/24", "comment": "HQ"},
        {"ipset": "management", "op": "add", "cidr": "10.10.11.5"},
        {"vmid": 104, "ipset": "app-servers", "op": "remove", "cidr": "10.10.20.101"},
        {"ipset": "management", "op": "add", "cidr": "backup-server", "nomatch": True},
    ],
    rejects=[
        ({"ipset": "management", "op": "create"}, "already_exists"),
        ({"ipset": "management", "op": "add", "cidr": "10.10.10.0/24"}, "already_exists"),
        ({"ipset": "management", "op": "add", "cidr": "10.0.0.0/33"}, "invalid_argument"),
        ({"ipset": "nope", "op": "add", "cidr": "10.0.0.1"}, "not_found"),
        ({"node": "pve1", "ipset": "x1", "op": "create"}, "invalid_argument"),
    ],
)
async def firewall_ipset(ctx: ToolContext, args: IpSetArgs) -> Applied:
    """Create an IP set (cluster, or a guest's) or add/remove an address, CIDR or alias;
    rules name it as +name. Delete a set: proxmox_firewall_delete."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    path = ApiCall.to("GET", _under(plan, "ipset") + "/{name}", name=args.ipset).path
    entries = await read_as(ctx, _ITEMS, path)
    return Applied(scope=scope_label(plan), now=[_entry(item) for item in entries])


class AliasArgs(GuestScope, WriteInput):
    alias: FwName
    cidr: Annotated[str, Field(max_length=64, description="Address or CIDR it stands for.")]
    comment: Annotated[str | None, Field(max_length=256)] = None


async def _plan_alias(ctx: ToolContext, args: AliasArgs) -> Plan:
    scope = await resolve_scope(ctx, args, nodes=False)
    cidr = pve_cidr(args.cidr, "cidr")
    items = await read_as(ctx, _ITEMS, scope.path("aliases"))
    found = next((a for a in items if str(a["name"]).lower() == args.alias.lower()), None)
    before = [_alias_line(a) for a in items]
    data: dict[str, Any] = {"cidr": cidr, **_comment(args)}
    if found is None:
        call = scope.call("POST", "aliases", {"name": args.alias, **data})
        after = sorted([*before, _alias_line({"name": args.alias, **data})], key=str.lower)
    else:
        digest = {"digest": str(found["digest"])} if "digest" in found else {}
        call = scope.call("PUT", "aliases/{name}", {**data, **digest}, name=str(found["name"]))
        line = _alias_line({"name": found["name"], **data})
        after = [line if a["name"] == found["name"] else _alias_line(a) for a in items]
    check_api_request(call.method, call.path, call.params)
    return Plan(
        summary=f"set alias {args.alias} in{OF}{scope.label}",
        changes=[Change(field="aliases", before=before, after=after)],
        target=scope.target,
        calls=[call],
    )


@tool(
    "proxmox_firewall_alias",
    title="Define or change a firewall alias",
    tier=Tier.WRITE,
    toolset="firewall",
    api=(
        "POST /cluster/firewall/aliases",
        "POST /nodes/{node}/{type}/{vmid}/firewall/aliases",
        "PUT /cluster/firewall/aliases/{name}",
        "PUT /nodes/{node}/{type}/{vmid}/firewall/aliases/{name}",
    ),
    input=AliasArgs,
    output=Applied,
    planner=_plan_alias,
    examples=[
        {"alias": "dns", "cidr": "10.10.10.53", "comment": "resolver"},
        {"alias": "backup-server", "cidr": "10.10.10.51"},
        {"vmid": 100, "alias": "peer", "cidr": "fd00::10"},
    ],
    rejects=[
        ({"alias": "x1", "cidr": "nope"}, "invalid_argument"),
        ({"node": "pve1", "alias": "x1", "cidr": "10.0.0.1"}, "invalid_argument"),
    ],
)
async def firewall_alias(ctx: ToolContext, args: AliasArgs) -> Applied:
    """Define an alias (a name for an address or CIDR, cluster or a guest's) or change what
    an existing one stands for; rules use it in source/dest. Delete: proxmox_firewall_delete."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    aliases = await read_as(ctx, _ITEMS, _under(plan, "aliases"))
    return Applied(scope=scope_label(plan), now=[_alias_line(item) for item in aliases])


class GroupArgs(WriteInput):
    group: Annotated[
        str, matching(r"[A-Za-z][A-Za-z0-9_-]{1,17}", "a group name (2-18 characters)")
    ]
    comment: Annotated[str | None, Field(max_length=256)] = None


async def _plan_group(ctx: ToolContext, args: GroupArgs) -> Plan:
    groups = [str(g["group"]) for g in await read_as(ctx, _ITEMS, "/cluster/firewall/groups")]
    if args.group in groups:
        raise ToolFailure(
            "already_exists",
            f"security group {args.group!r} already exists",
            field="group",
            hint="Add rules to it with proxmox_firewall_rule (group), or pick another name.",
        )
    call = ApiCall.to(
        "POST", "/cluster/firewall/groups", params={"group": args.group, **_comment(args)}
    )
    return Plan(
        summary=f"create security group {args.group} in{OF}cluster",
        changes=[Change(field="groups", before=groups, after=sorted([*groups, args.group]))],
        calls=[call],
    )


@tool(
    "proxmox_firewall_group",
    title="Create a security group",
    tier=Tier.WRITE,
    toolset="firewall",
    api=("POST /cluster/firewall/groups",),
    input=GroupArgs,
    output=Applied,
    planner=_plan_group,
    examples=[{"group": "dns", "comment": "resolvers"}],
    rejects=[({"group": "webserver"}, "already_exists"), ({"group": "a"}, "invalid_argument")],
)
async def firewall_group(ctx: ToolContext, args: GroupArgs) -> Applied:
    """Create a security group: a named rule list that rules of type group apply. Add its
    rules with proxmox_firewall_rule (group)."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    groups = await read_as(ctx, _ITEMS, "/cluster/firewall/groups")
    return Applied(scope="cluster", now=[str(g["group"]) for g in groups])


# --- deleting an IP set, alias or group ----------------------------------------------


class DeleteArgs(GuestScope, WriteInput):
    ipset: FwName | None = None
    alias: FwName | None = None
    group: FwName | None = None

    @model_validator(mode="after")
    def _one_object(self) -> Self:
        if sum(value is not None for value in (self.ipset, self.alias, self.group)) != 1:
            raise ValueError("give exactly one of ipset, alias or group")
        return self


async def _all_rules(ctx: ToolContext, scope: Scope) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every rule list a reference from `scope` can reach, labelled: a guest's own; for the
    cluster's objects the cluster's, each group's, each node's and each guest's."""
    if scope.env in ("vm", "ct"):
        return [(scope.label, (await read_rules(ctx, scope))[0])]
    groups = [str(g["group"]) for g in await read_as(ctx, _ITEMS, "/cluster/firewall/groups")]
    nodes = await _nodes(ctx)
    guests = await planners.guest_resources(ctx)
    labelled = [("cluster", "/cluster/firewall/rules")]
    labelled += [(f"group {g}", f"/cluster/firewall/groups/{g}") for g in groups]
    labelled += [(f"node {n}", f"/nodes/{n}/firewall/rules") for n in nodes]
    labelled += [
        (
            f"{g['type']} {g['vmid']} ({g.get('name', '?')})",
            f"/nodes/{g['node']}/{g['type']}/{g['vmid']}/firewall/rules",
        )
        for g in guests
    ]
    found = await ctx.get_many(*(path for _, path in labelled))
    return [(label, rules) for (label, _), rules in zip(labelled, found, strict=True)]


def _uses(rule: dict[str, Any], args: DeleteArgs) -> bool:
    if args.group is not None:
        return rule.get("type") == "group" and rule.get("action") == args.group
    for key in ("source", "dest"):
        value = re.sub(r"^\+?(guest/|dc/|sdn/)?", "", str(rule.get(key, "")))
        is_set = str(rule.get(key, "")).startswith("+")
        if args.ipset is not None and is_set and value == args.ipset:
            return True
        if args.alias is not None and not is_set and value.lower() == args.alias.lower():
            return True
    return False


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    scope = await resolve_scope(ctx, args, nodes=False)
    if args.group is not None and scope.env != "cluster":
        raise ToolFailure(
            "invalid_argument",
            "security groups belong to the cluster",
            field="group",
            hint="Omit vmid and name.",
        )
    users = [
        f"rule {pos} of {label}: {rule_text(rule)}"
        for label, rules in await _all_rules(ctx, scope)
        for pos, rule in enumerate(rules)
        if _uses(rule, args)
    ]
    kind, name = next(
        (k, v)
        for k, v in (("ipset", args.ipset), ("alias", args.alias), ("group", args.group))
        if v is not None
    )
    if users:
        raise ToolFailure(
            "in_use",
            f"{kind} {name!r} is used by {users[0]}"
            + (f" and {len(users) - 1} more" if len(users) > 1 else ""),
            field=kind,
            hint="Change or delete those rules first (proxmox_firewall_rule, "
            "proxmox_firewall_rule_delete).",
            details={"rules": users},
        )
    lost: list[str]
    if kind == "ipset":
        sets = {s.name: s.entries for s in await _ipsets(ctx, scope)}
        if name not in sets:
            raise ToolFailure(
                "not_found",
                f"no IP set {name!r} in {scope.label}",
                field="ipset",
                hint=f"Its IP sets: {', '.join(sets) or 'none'}.",
            )
        lost = sets[name]
        call = scope.call("DELETE", "ipset/{name}", {"force": 1} if lost else {}, name=name)
    elif kind == "alias":
        items = await read_as(ctx, _ITEMS, scope.path("aliases"))
        found = next((a for a in items if str(a["name"]).lower() == name.lower()), None)
        if found is None:
            raise ToolFailure(
                "not_found",
                f"no alias {name!r} in {scope.label}",
                field="alias",
                hint="Its aliases: " + (", ".join(str(a["name"]) for a in items) or "none") + ".",
            )
        lost = [_alias_line(found)]
        digest = {"digest": str(found["digest"])} if "digest" in found else {}
        call = scope.call("DELETE", "aliases/{name}", digest, name=str(found["name"]))
    else:
        groups = [str(g["group"]) for g in await read_as(ctx, _ITEMS, "/cluster/firewall/groups")]
        if name not in groups:
            raise ToolFailure(
                "not_found",
                f"no security group {name!r}",
                field="group",
                hint=f"Its groups: {', '.join(groups) or 'none'}.",
            )
        rules, _ = await rule_list(ctx, f"/cluster/firewall/groups/{name}")
        if rules:
            raise ToolFailure(
                "in_use",
                f"security group {name!r} still has {len(rules)} rule(s)",
                field="group",
                hint="PVE deletes only an empty group: delete its rules first "
                "(proxmox_firewall_rule_delete with group).",
            )
        lost = []
        call = ApiCall.to("DELETE", "/cluster/firewall/groups/{group}", group=name)
    return Plan(
        summary=f"delete {kind} {name} from{OF}{scope.label}",
        changes=[Change(field=f"{kind} {name}", before=lost or name)],
        target=scope.target,
        calls=[call],
    )


@tool(
    "proxmox_firewall_delete",
    title="Delete an IP set, alias or security group",
    tier=Tier.DESTRUCTIVE,
    toolset="firewall",
    api=(
        "DELETE /cluster/firewall/ipset/{name}",
        "DELETE /nodes/{node}/{type}/{vmid}/firewall/ipset/{name}",
        "DELETE /cluster/firewall/aliases/{name}",
        "DELETE /nodes/{node}/{type}/{vmid}/firewall/aliases/{name}",
        "DELETE /cluster/firewall/groups/{group}",
    ),
    input=DeleteArgs,
    output=Applied,
    planner=_plan_delete,
    examples=[{"alias": "backup-server"}],
    rejects=[
        ({"ipset": "management"}, "in_use"),
        ({"vmid": 104, "ipset": "app-servers"}, "in_use"),
        ({"group": "webserver"}, "in_use"),
        ({"alias": "nope"}, "not_found"),
        ({"group": "nope"}, "not_found"),
        ({"alias": "a1", "ipset": "b1"}, "invalid_argument"),
    ],
)
async def firewall_delete(ctx: ToolContext, args: DeleteArgs) -> Applied:
    """Delete an IP set (with its entries), alias or empty security group; refused while a
    rule uses it, naming the rule. Rules: proxmox_firewall_rule_delete."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    return Applied(scope=scope_label(plan), now=[f"deleted {plan.changes[0].field}"])


# --- options -------------------------------------------------------------------------

_OPTIONS_OF = {
    "cluster": ("enable", "policy_in", "policy_out"),
    "host": ("enable", "log_level_in", "log_level_out"),
    "vm": ("enable", "policy_in", "policy_out", "log_level_in", "log_level_out"),
    "ct": ("enable", "policy_in", "policy_out", "log_level_in", "log_level_out"),
}
"""The options this tool sets in each scope (PVE's `$option_properties` have more)."""
Policy = Literal["ACCEPT", "DROP", "REJECT"]


class OptionsArgs(ScopeArgs, WriteInput):
    enable: bool | None = None
    policy_in: Policy | None = None
    policy_out: Policy | None = None
    log_level_in: LogLevel | None = None
    log_level_out: LogLevel | None = None
    digest: Digest | None = None


def _ports(rule: dict[str, Any]) -> set[int] | None:
    """The management ports an enabled incoming ACCEPT rule lets in (None: every port)."""
    if not rule.get("enable") or rule.get("type") != "in" or rule.get("action") != "ACCEPT":
        return set()
    if rule.get("macro"):
        return {22} if str(rule["macro"]).lower() == "ssh" else set()
    if rule.get("proto") not in (None, "", "tcp", "6"):
        return set()
    if not rule.get("dport"):
        return None
    ports: set[int] = set()
    for item in str(rule["dport"]).split(","):
        low, _, high = item.partition(":")
        named = {"ssh": 22}.get(low)
        if named is not None:
            ports.add(named)
        elif low.isdigit():
            ports |= {p for p in MANAGEMENT_PORTS if int(low) <= p <= int(high or low)}
    return ports


async def _lockout_risk(ctx: ToolContext, after: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings when, with the options after the change, a node's firewall drops incoming
    traffic (cluster enabled, its policy_in DROP or REJECT, the node's enabled) and no
    enabled ACCEPT rule of the cluster or the node lets SSH or the web UI in."""
    cluster = after["cluster"]
    if not int(cluster.get("enable", 0)) or cluster.get("policy_in", "DROP") == "ACCEPT":
        return []
    cluster_rules, _ = await rule_list(ctx, "/cluster/firewall/rules")
    warnings = []
    for node in await _nodes(ctx):
        options = after.get(node)
        if options is None:
            options = await read_as(ctx, OBJECT, f"/nodes/{node}/firewall/options")
        if not int(options.get("enable", 1)):
            continue
        rules = cluster_rules + (await rule_list(ctx, f"/nodes/{node}/firewall/rules"))[0]
        open_ports: set[int] = set()
        for rule in rules:
            ports = _ports(rule)
            open_ports |= set(MANAGEMENT_PORTS) if ports is None else ports
        missing = [
            f"{port} ({what})" for port, what in MANAGEMENT_PORTS.items() if port not in open_ports
        ]
        if missing:
            warnings.append(
                f"risk: node {node} will drop incoming {', '.join(missing)}: policy_in is "
                f"{cluster.get('policy_in', 'DROP')} and no enabled ACCEPT rule of the cluster "
                "or node lets them in (PVE still lets them in from its management IP set, the "
                "cluster network): add one first if you manage it from elsewhere"
            )
    return warnings


async def _plan_options(ctx: ToolContext, args: OptionsArgs) -> Plan:
    scope = await resolve_scope(ctx, args)
    given = args.model_dump(include=set(_OPTIONS_OF["vm"]), exclude_none=True)
    for key in given:
        if key not in _OPTIONS_OF[scope.env]:
            where = [env for env, keys in _OPTIONS_OF.items() if key in keys and env != "ct"]
            names = {"cluster": "the cluster", "host": "a node", "vm": "a guest"}
            raise ToolFailure(
                "invalid_argument",
                f"{key} is not an option of {scope.label}'s firewall",
                field=key,
                hint=f"{key} is set on {' or '.join(names[e] for e in where)}.",
            )
    now = await read_as(ctx, OBJECT, scope.path("options"))
    digest = now.pop("digest", None)
    _same_digest(scope, args.digest, digest, "options")
    values = {k: int(v) if isinstance(v, bool) else v for k, v in given.items()}
    setting = {k: v for k, v in values.items() if str(now.get(k)) != str(v)}
    changes = [Change(field=k, before=now.get(k), after=v) for k, v in sorted(setting.items())]
    if not changes:
        return Plan(summary=f"no change to the options of{OF}{scope.label}", target=scope.target)
    after = {**now, **setting}
    if scope.env == "cluster":
        risk = await _lockout_risk(ctx, {"cluster": after})
    elif scope.env == "host":
        cluster = await read_as(ctx, OBJECT, "/cluster/firewall/options")
        risk = await _lockout_risk(ctx, {"cluster": cluster, str(args.node): after})
    else:
        risk = []
    call = scope.call("PUT", "options", {**setting, **({"digest": digest} if digest else {})})
    check_api_request(call.method, call.path, call.params)
    return Plan(
        summary=f"change {len(changes)} option(s){OF}{scope.label}",
        changes=changes,
        target=scope.target,
        calls=[call],
        warnings=risk,
    )


@tool(
    "proxmox_firewall_options",
    title="Firewall options",
    tier=Tier.WRITE,
    toolset="firewall",
    api=(
        "PUT /cluster/firewall/options",
        "PUT /nodes/{node}/firewall/options",
        "PUT /nodes/{node}/{type}/{vmid}/firewall/options",
    ),
    input=OptionsArgs,
    output=Applied,
    planner=_plan_options,
    examples=[
        {"vmid": 100, "log_level_in": "nolog"},
        {"enable": True},
        {"node": "pve1", "enable": False},
        {"name": "dns01", "enable": True, "policy_in": "DROP", "policy_out": "ACCEPT"},
    ],
    rejects=[
        ({"node": "pve1", "policy_in": "DROP"}, "invalid_argument"),
        ({"log_level_in": "info"}, "invalid_argument"),
        ({"vmid": 100, "enable": False, "digest": "0" * 40}, "config_changed"),
    ],
)
async def firewall_options(ctx: ToolContext, args: OptionsArgs) -> Applied:
    """Turn a firewall on or off and set its policies and log levels (cluster, node or
    guest); the plan shows each change and flags enabling a DROP policy without an SSH or
    web UI rule."""
    plan = ctx.plan
    assert plan is not None
    await _send(ctx, plan)
    label = scope_label(plan)
    if not plan.calls:
        return Applied(scope=label, now=[])
    options = await read_as(ctx, OBJECT, plan.calls[0].path)
    return Applied(
        scope=label, now=[f"{k}: {v}" for k, v in sorted(options.items()) if k != "digest"]
    )


# --- the log -------------------------------------------------------------------------


def _epoch(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _instant(value: str) -> str:
    _epoch(value)
    return value


Instant = Annotated[str, AfterValidator(_instant), Field(description="ISO 8601 (UTC if no zone).")]


class LogArgs(ScopeArgs):
    since: Instant | None = None
    until: Instant | None = None
    start: Annotated[int, Field(ge=0, description="Line offset.")] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class FirewallLog(ToolOutput):
    scope: str
    lines: list[str]
    total: int
    next_start: int | None = None


class _Line(Answer):
    n: int
    t: str


_LINES = TypeAdapter(list[_Line])


@tool(
    "proxmox_firewall_log",
    title="Firewall log",
    tier=Tier.READ,
    toolset="firewall",
    api=("GET /nodes/{node}/firewall/log", "GET /nodes/{node}/{type}/{vmid}/firewall/log"),
    input=LogArgs,
    output=FirewallLog,
    idempotent=True,
    examples=[
        {"vmid": 100},
        {"node": "pve1", "limit": 10, "start": 5},
        {"name": "web01", "since": "2000-01-01T00:00:00"},
    ],
    rejects=[
        ({"node": "pve9"}, "not_found"),
        ({"vmid": 100, "since": "yesterday"}, "invalid_argument"),
    ],
)
async def firewall_log(ctx: ToolContext, args: LogArgs) -> FirewallLog:
    """Firewall log lines (dropped or logged packets) of a guest (vmid/name) or a node
    (default node), oldest first, paged by start; filter by since/until."""
    if args.vmid is None and args.name is None and args.node is None:
        args = args.model_copy(update={"node": ctx.cluster.default_node})
    scope = await resolve_scope(ctx, args)
    if scope.env == "cluster":
        raise ToolFailure(
            "node_required",
            "the firewall log is a node's or a guest's",
            field="node",
            hint="Pass node, vmid or name.",
        )
    params: dict[str, Any] = {"start": args.start, "limit": args.limit}
    for key in ("since", "until"):
        if (value := getattr(args, key)) is not None:
            params[key] = _epoch(value)
    path = scope.path("log")
    answer = await ctx.call("GET", path, params)
    lines = [line.t for line in _LINES.validate_python(answer.data)]
    total = answer.total if answer.total is not None else len(lines)
    if total == 1 and lines == ["no content"]:  # PVE's placeholder for an empty log
        lines, total = [], 0
    end = args.start + len(lines)
    return FirewallLog(
        scope=scope.label, lines=lines, total=total, next_start=end if end < total else None
    )


TOOLS = (
    firewall_get,
    firewall_rule,
    firewall_rule_delete,
    firewall_ipset,
    firewall_alias,
    firewall_group,
    firewall_delete,
    firewall_options,
    firewall_log,
)
