"""Pools, users, groups, roles, ACLs, API tokens and realms, and "who may do what where".

Few tools, one per tier where the API is symmetric (`kind`/`action` arguments). Every write
is planned from fresh reads: what does not exist (a pool, user, group, role, token, guest
or storage) is refused naming the field before anything is sent, and the plan shows the
diff (pool members before/after, the ACL entries added or removed and, for a revoke, the
privileges the named users and tokens hold there now, which they lose).

**A new API token's secret goes to the person, never to the model.** PVE shows it once,
in the create call's answer. `proxmox_token_create` refuses before creating anything when
the caller's client cannot show it to its person (no MCP elicitation: then the token is
made in the Proxmox UI or with `pveum`, where the person sees it); otherwise the secret
joins the redaction set the moment it arrives, goes to the person through elicitation, and
the result says only that it was delivered. If the person declines or cannot be asked,
the token is deleted again: nobody holds a secret for it, so it must not stay.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pvemcp.tools.kit import (
    Answer,
    ApiCall,
    Applied,
    Change,
    Plan,
    StorageId,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WriteInput,
    answer_as,
    apply_plan,
    matching,
    planners,
    read_as,
    tool,
)

TOOLSET = "access"

_USER = r"[^\s:/@]{1,60}@[A-Za-z][A-Za-z0-9.\-_]+"
_GROUP = r"[A-Za-z0-9.\-_]{1,64}"
UserId = Annotated[str, matching(_USER, "name@realm")]
TokenId = Annotated[
    str,
    matching(_USER + r"![A-Za-z][A-Za-z0-9.\-_]+", "user@realm!name"),
]
GroupId = Annotated[str, matching(_GROUP, "a group name")]
RoleId = Annotated[str, matching(r"[A-Za-z0-9.\-_]{1,64}", "a role name")]
PoolId = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9.\-_]{0,63}", "a pool name")]
TokenName = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9.\-_]{1,63}", "a token name")]
AclPath = Annotated[str, matching(r"/[A-Za-z0-9.\-_/]{0,200}", "an ACL path like /vms/100")]


def _listed(items: list[str]) -> str:
    return ", ".join(items) if items else "(none)"


def _missing(field: str, what: str, name: str, known: list[str], lister: str) -> ToolFailure:
    shown = known[:20]
    return ToolFailure(
        "not_found",
        f"no {what} {name!r}",
        field=field,
        hint=f"Known: {_listed(shown)}{' ...' if len(known) > 20 else ''} ({lister}).",
    )


# --- reading the access configuration -------------------------------------------------


class _User(Answer):
    userid: str
    enable: int = 1
    expire: int = 0
    firstname: str | None = None
    lastname: str | None = None
    email: str | None = None
    comment: str | None = None
    groups: str | None = None
    tokens: list[dict[str, Any]] = Field(default_factory=list)


class _Group(Answer):
    groupid: str
    comment: str | None = None
    users: str | None = None


class _Role(Answer):
    roleid: str
    privs: str = ""


class _Acl(Answer):
    path: str
    type: str
    ugid: str
    roleid: str
    propagate: int = 1


class _Pool(Answer):
    poolid: str
    comment: str | None = None


class _Member(Answer):
    type: str
    id: str
    node: str | None = None
    vmid: int | None = None
    name: str | None = None
    status: str | None = None
    storage: str | None = None


class _PoolDetail(_Pool):
    members: list[_Member] = Field(default_factory=list)


class _Realm(Answer):
    realm: str
    type: str
    comment: str | None = None
    default: int | None = None


class _Storage(Answer):
    storage: str


_USERS = TypeAdapter(list[_User])
_GROUPS = TypeAdapter(list[_Group])
_ROLES = TypeAdapter(list[_Role])
_ACLS = TypeAdapter(list[_Acl])
_POOLS = TypeAdapter(list[_Pool])
_POOL_DETAIL = TypeAdapter(list[_PoolDetail])
_REALMS = TypeAdapter(list[_Realm])
_STORAGES = TypeAdapter(list[_Storage])
_PERMISSIONS = TypeAdapter(dict[str, dict[str, int]])


def _split(text: str | None) -> list[str]:
    return [item for item in re.split(r"[,;\s]+", text or "") if item]


async def _users(ctx: ToolContext) -> dict[str, _User]:
    rows = await read_as(ctx, _USERS, "/access/users", {"full": 1})
    return {row.userid: row for row in rows}


async def _groups(ctx: ToolContext) -> dict[str, _Group]:
    return {row.groupid: row for row in await read_as(ctx, _GROUPS, "/access/groups")}


async def _roles(ctx: ToolContext) -> dict[str, list[str]]:
    rows = await read_as(ctx, _ROLES, "/access/roles")
    return {row.roleid: sorted(_split(row.privs)) for row in rows}


async def _acl(ctx: ToolContext) -> list[_Acl]:
    return await read_as(ctx, _ACLS, "/access/acl")


async def _pool_names(ctx: ToolContext) -> list[str]:
    return sorted(row.poolid for row in await read_as(ctx, _POOLS, "/pools"))


async def _pool(ctx: ToolContext, name: str) -> _PoolDetail:
    """The pool with its members, or `not_found` naming `pool` and the pools there are."""
    names = await _pool_names(ctx)
    if name not in names:
        raise _missing("pool", "pool", name, names, "proxmox_pool_list")
    rows = await read_as(ctx, _POOL_DETAIL, "/pools", {"poolid": name})
    if len(rows) != 1:
        raise ToolFailure("not_found", f"no pool {name!r}", field="pool", hint="List pools.")
    return rows[0]


# --- pools ------------------------------------------------------------------------------


class PoolListArgs(ToolInput):
    pool: PoolId | None = None


class PoolGuest(ToolOutput):
    vmid: int
    type: str
    name: str | None = None
    node: str | None = None
    status: str | None = None


class PoolEntry(ToolOutput):
    pool: str
    comment: str | None = None
    guests: list[PoolGuest]
    storages: list[str]


class PoolList(ToolOutput):
    pools: list[PoolEntry]


def _entry(detail: _PoolDetail) -> PoolEntry:
    guests = [
        PoolGuest(vmid=m.vmid, type=m.type, name=m.name, node=m.node, status=m.status)
        for m in detail.members
        if m.vmid is not None and m.type in ("qemu", "lxc")
    ]
    storages = sorted({m.storage for m in detail.members if m.type == "storage" and m.storage})
    return PoolEntry(pool=detail.poolid, comment=detail.comment, guests=guests, storages=storages)


@tool(
    "proxmox_pool_list",
    title="Resource pools and their members",
    tier=Tier.READ,
    toolset=TOOLSET,
    api=("GET /pools",),
    input=PoolListArgs,
    output=PoolList,
    idempotent=True,
    examples=[{}, {"pool": "prod"}],
    rejects=[({"pool": "nope"}, "not_found"), ({"pool": "1x"}, "invalid_argument")],
)
async def pool_list(ctx: ToolContext, args: PoolListArgs) -> PoolList:
    """Resource pools with their guests and storages (one pool with pool)."""
    if args.pool is not None:
        return PoolList(pools=[_entry(await _pool(ctx, args.pool))])
    names = await _pool_names(ctx)
    answers = await ctx.get_many(*[("/pools", {"poolid": name}) for name in names])
    details = [answer_as(_POOL_DETAIL, a, method="GET", path="/pools")[0] for a in answers]
    return PoolList(pools=[_entry(detail) for detail in details])


class PoolUpdateArgs(WriteInput):
    pool: PoolId
    action: Literal["create", "add", "remove"]
    vmids: Annotated[list[Vmid], Field(default_factory=list, max_length=100)]
    storages: Annotated[list[StorageId], Field(default_factory=list, max_length=50)]
    comment: Annotated[str | None, Field(max_length=256)] = None
    allow_move: Annotated[bool, Field(description="Take guests from another pool.")] = False


async def _guest_pools(ctx: ToolContext) -> dict[int, dict[str, Any]]:
    return {int(row["vmid"]): row for row in await planners.guest_resources(ctx)}


async def _storage_names(ctx: ToolContext) -> set[str]:
    rows = await read_as(ctx, _STORAGES, "/cluster/resources", {"type": "storage"})
    return {row.storage for row in rows}


async def _pool_before(ctx: ToolContext, args: PoolUpdateArgs) -> PoolEntry:
    """The pool as it is (empty for one to create), after checking it may be changed so."""
    names = await _pool_names(ctx)
    if args.action == "create":
        if args.pool in names:
            raise ToolFailure(
                "already_exists",
                f"pool {args.pool!r} already exists",
                field="pool",
                hint="Add members with action add.",
            )
        return PoolEntry(pool=args.pool, guests=[], storages=[])
    before = _entry(await _pool(ctx, args.pool))
    if not (args.vmids or args.storages or args.comment is not None):
        raise ToolFailure(
            "invalid_argument",
            f"nothing to {args.action}: give vmids, storages or comment",
            field="vmids",
            hint=f"Name the guests (vmids) or storages to {args.action}.",
        )
    return before


def _not_listed(args: PoolUpdateArgs, before: PoolEntry, *, present: bool) -> None:
    """Refuse a guest or storage that is (present=True: is not) already a member."""
    members = {g.vmid for g in before.guests}
    state = "not in" if present else "already in"
    for vmid in args.vmids:
        if (vmid in members) != present:
            raise ToolFailure(
                "invalid_argument",
                f"guest {vmid} is {state} pool {args.pool!r}",
                field="vmids",
                hint=f"Its guests: {_listed([str(v) for v in sorted(members)])}.",
            )
    for storage in args.storages:
        if (storage in before.storages) != present:
            raise ToolFailure(
                "invalid_argument",
                f"storage {storage!r} is {state} pool {args.pool!r}",
                field="storages",
                hint=f"Its storages: {_listed(before.storages)}.",
            )


def _moves(args: PoolUpdateArgs, guests: dict[int, dict[str, Any]]) -> list[str]:
    """Guests added that leave another pool (only with allow_move)."""
    moved = []
    for vmid in args.vmids:
        current = guests[vmid].get("pool")
        if current is not None and current != args.pool:
            if not args.allow_move:
                raise ToolFailure(
                    "precondition_failed",
                    f"guest {vmid} is in pool {current!r}; a guest is in one pool at most",
                    field="allow_move",
                    hint="Pass allow_move=true to move it (it leaves the other pool).",
                )
            moved.append(f"guest {vmid} leaves pool {current!r}")
    return moved


def _pool_calls(args: PoolUpdateArgs) -> list[ApiCall]:
    calls = []
    if args.action == "create":
        params = {"poolid": args.pool} | ({"comment": args.comment} if args.comment else {})
        calls.append(ApiCall.to("POST", "/pools", params=params))
    update: dict[str, Any] = {}
    if args.vmids:
        update["vms"] = ",".join(str(v) for v in args.vmids)
    if args.storages:
        update["storage"] = ",".join(args.storages)
    if args.comment is not None and args.action != "create":
        update["comment"] = args.comment
    if update and args.action == "remove":
        update["delete"] = 1
    if update and args.allow_move and args.action != "remove":
        update["allow-move"] = 1
    if update:
        calls.append(ApiCall.to("PUT", "/pools", params={"poolid": args.pool} | update))
    return calls


async def _plan_pool_update(ctx: ToolContext, args: PoolUpdateArgs) -> Plan:
    before = await _pool_before(ctx, args)
    guests, storages = await _guest_pools(ctx), await _storage_names(ctx)
    for vmid in args.vmids:
        if vmid not in guests:
            raise _missing("vmids", "guest", str(vmid), [], "proxmox_guest_list")
    for storage in args.storages:
        if storage not in storages:
            raise _missing("storages", "storage", storage, sorted(storages), "cluster storages")
    members = {g.vmid for g in before.guests}
    if args.action == "remove":
        _not_listed(args, before, present=True)
        after_guests = members - set(args.vmids)
        after_storages = set(before.storages) - set(args.storages)
        warnings = ["Who reaches these only through the pool's ACL loses access to them."]
    else:
        _not_listed(args, before, present=False)
        warnings = _moves(args, guests)
        after_guests = members | set(args.vmids)
        after_storages = set(before.storages) | set(args.storages)
    changes = [
        Change(field="guests", before=sorted(members), after=sorted(after_guests)),
        Change(field="storages", before=before.storages, after=sorted(after_storages)),
        Change(field="comment", before=before.comment, after=args.comment),
    ]
    verb = {"create": "Create", "add": "Add to", "remove": "Remove from"}[args.action]
    return Plan(
        summary=f"{verb} pool {args.pool}",
        changes=[
            c for c in changes if c.before != c.after and (c.field != "comment" or args.comment)
        ],
        target=Target(pool=args.pool),
        calls=_pool_calls(args),
        warnings=warnings,
    )


@tool(
    "proxmox_pool_update",
    title="Create a pool or change its members",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    api=("POST /pools", "PUT /pools"),
    input=PoolUpdateArgs,
    output=Applied,
    planner=_plan_pool_update,
    examples=[
        {"pool": "qa", "action": "create", "comment": "testing", "vmids": [102]},
        {"pool": "dev", "action": "add", "vmids": [102], "storages": ["local"]},
        {"pool": "prod", "action": "remove", "vmids": [101]},
        {"pool": "dev", "action": "add", "vmids": [100], "allow_move": True},
    ],
    rejects=[
        ({"pool": "nope", "action": "add", "vmids": [102]}, "not_found"),
        ({"pool": "prod", "action": "create"}, "already_exists"),
        ({"pool": "dev", "action": "add", "vmids": [100]}, "precondition_failed"),
        ({"pool": "dev", "action": "add", "vmids": [999]}, "not_found"),
        ({"pool": "dev", "action": "add", "storages": ["nope"]}, "not_found"),
        ({"pool": "dev", "action": "remove", "vmids": [100]}, "invalid_argument"),
    ],
)
async def pool_update(ctx: ToolContext, args: PoolUpdateArgs) -> Applied:
    """Create a pool (action create) or add/remove guests and storages (a guest in another
    pool moves only with allow_move). The plan shows members before and after."""
    return await apply_plan(ctx, args)


class PoolDeleteArgs(WriteInput):
    pool: PoolId


async def _plan_pool_delete(ctx: ToolContext, args: PoolDeleteArgs) -> Plan:
    pool = _entry(await _pool(ctx, args.pool))
    if pool.guests or pool.storages:
        held = [f"guest {g.vmid}" for g in pool.guests] + [f"storage {s}" for s in pool.storages]
        raise ToolFailure(
            "precondition_failed",
            f"pool {args.pool!r} is not empty: {', '.join(held)}",
            field="pool",
            hint="Remove them first with proxmox_pool_update action=remove.",
        )
    lost = [e for e in await _acl(ctx) if e.path == f"/pool/{args.pool}"]
    return Plan(
        summary=f"Delete pool {args.pool}",
        changes=[Change(field="acl", before=[_acl_text(e) for e in lost], after=[])],
        target=Target(pool=args.pool),
        calls=[ApiCall.to("DELETE", "/pools", params={"poolid": args.pool})],
        warnings=[f"its ACL entries go with it: {_acl_text(e)}" for e in lost],
    )


@tool(
    "proxmox_pool_delete",
    title="Delete an empty pool",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    api=("DELETE /pools",),
    input=PoolDeleteArgs,
    output=Applied,
    planner=_plan_pool_delete,
    examples=[{"pool": "staging"}],
    rejects=[({"pool": "dev"}, "precondition_failed"), ({"pool": "nope"}, "not_found")],
)
async def pool_delete(ctx: ToolContext, args: PoolDeleteArgs) -> Applied:
    """Delete an empty pool and its ACL entries; a pool with members is refused."""
    return await apply_plan(ctx, args)


# --- users, groups, roles, tokens, ACLs, realms: reading -------------------------------

Kind = Literal["users", "groups", "roles", "tokens", "acl", "realms"]


class AccessListArgs(ToolInput):
    kind: Kind
    id: Annotated[
        str | None,
        Field(max_length=128, description="Only this user, group, role; acl: a user/group/token."),
    ] = None
    path: Annotated[AclPath | None, Field(description="acl: this path and its parents.")] = None


class AccessList(ToolOutput):
    kind: str
    items: list[dict[str, Any]]


def _user_item(user: _User) -> dict[str, Any]:
    item: dict[str, Any] = {"userid": user.userid, "enabled": bool(user.enable)}
    name = " ".join(part for part in (user.firstname, user.lastname) if part)
    for key, value in (("name", name), ("email", user.email), ("comment", user.comment)):
        if value:
            item[key] = value
    if user.expire:
        item["expire"] = user.expire
    item["groups"] = _split(user.groups)
    item["tokens"] = sorted(f"{user.userid}!{t['tokenid']}" for t in user.tokens)
    return item


def _token_items(user: _User) -> list[dict[str, Any]]:
    return [
        {"tokenid": f"{user.userid}!{t['tokenid']}", "privsep": bool(t.get("privsep", 1))}
        | {k: t[k] for k in ("expire", "comment") if t.get(k)}
        for t in sorted(user.tokens, key=lambda t: str(t["tokenid"]))
    ]


def _acl_text(entry: _Acl) -> str:
    propagate = "" if entry.propagate else " (not propagated)"
    return f"{entry.path}: {entry.type} {entry.ugid} {entry.roleid}{propagate}"


def _on_path(path: str, of: str) -> bool:
    """Whether an entry on `of` applies to `path` (the same path or a parent)."""
    return of in ("/", path) or path.startswith(of.rstrip("/") + "/")


async def _list_items(ctx: ToolContext, args: AccessListArgs) -> list[dict[str, Any]]:
    if args.kind in ("users", "tokens"):
        users = await _users(ctx)
        if args.id is not None and args.id not in users:
            raise _missing("id", "user", args.id, sorted(users), "kind users")
        chosen = [users[args.id]] if args.id is not None else list(users.values())
        if args.kind == "users":
            return [_user_item(user) for user in chosen]
        return [item for user in chosen for item in _token_items(user)]
    if args.kind == "groups":
        groups = await _groups(ctx)
        if args.id is not None and args.id not in groups:
            raise _missing("id", "group", args.id, sorted(groups), "kind groups")
        return [
            {"groupid": g.groupid, "members": _split(g.users)}
            | ({"comment": g.comment} if g.comment else {})
            for g in groups.values()
            if args.id in (None, g.groupid)
        ]
    if args.kind == "roles":
        roles = await _roles(ctx)
        if args.id is not None and args.id not in roles:
            raise _missing("id", "role", args.id, sorted(roles), "kind roles")
        return [
            {"roleid": name, "privileges": privs}
            for name, privs in sorted(roles.items())
            if args.id in (None, name)
        ]
    if args.kind == "realms":
        return [
            r.model_dump(exclude_none=True) for r in await read_as(ctx, _REALMS, "/access/domains")
        ]
    entries = await _acl(ctx)
    return [
        {"path": e.path, "type": e.type, "ugid": e.ugid, "role": e.roleid}
        | ({} if e.propagate else {"propagate": False})
        for e in entries
        if args.id in (None, e.ugid) and (args.path is None or _on_path(args.path, e.path))
    ]


@tool(
    "proxmox_access_list",
    title="Users, groups, roles, tokens, ACLs, realms",
    tier=Tier.READ,
    toolset=TOOLSET,
    api=(
        "GET /access/users",
        "GET /access/groups",
        "GET /access/roles",
        "GET /access/acl",
        "GET /access/domains",
    ),
    input=AccessListArgs,
    output=AccessList,
    idempotent=True,
    examples=[
        {"kind": "users"},
        {"kind": "users", "id": "bob@pve"},
        {"kind": "groups"},
        {"kind": "roles", "id": "PVEVMUser"},
        {"kind": "tokens"},
        {"kind": "acl", "path": "/vms/100"},
        {"kind": "acl", "id": "ops"},
        {"kind": "realms"},
    ],
    rejects=[
        ({"kind": "users", "id": "nobody@pve"}, "not_found"),
        ({"kind": "roles", "id": "Superuser"}, "not_found"),
        ({"kind": "hosts"}, "invalid_argument"),
    ],
)
async def access_list(ctx: ToolContext, args: AccessListArgs) -> AccessList:
    """List users, groups, roles (with privileges), API tokens (never secrets), ACL entries
    or realms; id narrows to one. For effective rights use proxmox_access_check."""
    return AccessList(kind=args.kind, items=await _list_items(ctx, args))


# --- users and groups: create, update, delete ------------------------------------------


class AccessUpdateArgs(WriteInput):
    kind: Literal["user", "group"]
    action: Literal["create", "update"]
    id: Annotated[str, Field(max_length=128, description="name@realm, or a group name.")]
    comment: Annotated[str | None, Field(max_length=256)] = None
    groups: Annotated[
        list[GroupId] | None, Field(max_length=32, description="user: its groups (replaced).")
    ] = None
    enable: bool | None = None
    email: Annotated[str | None, matching(r"[^\s@]+@[^\s@]+", "an e-mail address")] = None
    firstname: Annotated[str | None, Field(max_length=64)] = None
    lastname: Annotated[str | None, Field(max_length=64)] = None
    expire: Annotated[int | None, Field(ge=0, description="Epoch seconds; 0: never.")] = None

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if self.kind == "group":
            extra = [
                name
                for name in ("groups", "enable", "email", "firstname", "lastname", "expire")
                if getattr(self, name) is not None
            ]
            if extra:
                raise ValueError(f"a group has only a comment, not {', '.join(extra)}")
        return self


_USER_FIELDS = ("enable", "email", "firstname", "lastname", "expire", "comment")


def _id_problem(args: AccessUpdateArgs | AccessDeleteArgs) -> ToolFailure | None:
    """`id` in the form its kind has (checked here: its form depends on `kind`)."""
    pattern, what = {
        "user": (_USER, "name@realm"),
        "group": (_GROUP, "a group name"),
        "token": (_USER + r"![A-Za-z][A-Za-z0-9.\-_]+", "user@realm!name"),
    }[args.kind]
    if re.fullmatch(pattern, args.id):
        return None
    return ToolFailure(
        "invalid_argument", f"id: is not {what}", field="id", hint=f"Give a {args.kind} as {what}."
    )


async def _user_change(
    ctx: ToolContext, args: AccessUpdateArgs
) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Whether the user exists, its fields now and the fields asked for, after checking
    its realm (for a new user) and groups exist."""
    users = await _users(ctx)
    realm = args.id.rpartition("@")[2]
    realms = sorted(r.realm for r in await read_as(ctx, _REALMS, "/access/domains"))
    if args.action == "create" and realm not in realms:
        raise _missing("id", "realm", realm, realms, "proxmox_access_list kind=realms")
    known = await _groups(ctx)
    for group in args.groups or []:
        if group not in known:
            raise _missing("groups", "group", group, sorted(known), "kind groups")
    user = users.get(args.id)
    before: dict[str, Any] = {}
    if user is not None:
        before = {
            "enable": bool(user.enable),
            "email": user.email,
            "firstname": user.firstname,
            "lastname": user.lastname,
            "expire": user.expire,
            "comment": user.comment,
            "groups": _split(user.groups),
        }
    wanted = {k: getattr(args, k) for k in _USER_FIELDS if getattr(args, k) is not None}
    if args.groups is not None:
        wanted["groups"] = sorted(args.groups)
    return user is not None, before, wanted


async def _plan_access_update(ctx: ToolContext, args: AccessUpdateArgs) -> Plan:
    if (problem := _id_problem(args)) is not None:
        raise problem
    create = args.action == "create"
    if args.kind == "group":
        groups = await _groups(ctx)
        exists = args.id in groups
        before: dict[str, Any] = {"comment": groups[args.id].comment} if exists else {}
        wanted: dict[str, Any] = {} if args.comment is None else {"comment": args.comment}
        base, key = "/access/groups", "groupid"
    else:
        exists, before, wanted = await _user_change(ctx, args)
        base, key = "/access/users", "userid"
    if create and exists:
        raise ToolFailure(
            "already_exists",
            f"{args.kind} {args.id!r} already exists",
            field="id",
            hint="Use action update to change it.",
        )
    if not create and not exists:
        raise _missing("id", args.kind, args.id, [], f"proxmox_access_list kind={args.kind}s")
    if not create and not wanted:
        raise ToolFailure(
            "invalid_argument",
            "nothing to update",
            field="comment",
            hint="Give the fields to change.",
        )
    params = {k: (",".join(v) if isinstance(v, list) else int(v) if isinstance(v, bool) else v)
              for k, v in wanted.items()}  # fmt: skip
    if create:
        call = ApiCall.to("POST", base, params={key: args.id} | params)
    elif args.kind == "group":
        call = ApiCall.to("PUT", "/access/groups/{groupid}", params=params, groupid=args.id)
    else:
        call = ApiCall.to("PUT", "/access/users/{userid}", params=params, userid=args.id)
    return Plan(
        summary=f"{args.action.capitalize()} {args.kind} {args.id}",
        changes=[
            Change(field=k, before=before.get(k), after=v)
            for k, v in wanted.items()
            if before.get(k) != v
        ],
        calls=[call],
    )


@tool(
    "proxmox_access_update",
    title="Create or update a user or group",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    api=(
        "POST /access/users",
        "PUT /access/users/{userid}",
        "POST /access/groups",
        "PUT /access/groups/{groupid}",
    ),
    input=AccessUpdateArgs,
    output=Applied,
    planner=_plan_access_update,
    examples=[
        {"kind": "group", "action": "create", "id": "qa", "comment": "testers"},
        {
            "kind": "user",
            "action": "create",
            "id": "erin@pve",
            "groups": ["ops"],
            "firstname": "Erin",
            "email": "erin@example.com",
        },
        {"kind": "user", "action": "update", "id": "bob@pve", "enable": False},
        {"kind": "group", "action": "update", "id": "ops", "comment": "on call"},
    ],
    rejects=[
        ({"kind": "user", "action": "create", "id": "bob@pve"}, "already_exists"),
        ({"kind": "user", "action": "update", "id": "nobody@pve", "enable": True}, "not_found"),
        ({"kind": "user", "action": "create", "id": "erin@ldap"}, "not_found"),
        ({"kind": "user", "action": "create", "id": "erin@pve", "groups": ["nope"]}, "not_found"),
        ({"kind": "group", "action": "create", "id": "qa", "enable": True}, "invalid_argument"),
        ({"kind": "user", "action": "create", "id": "erin"}, "invalid_argument"),
    ],
)
async def access_update(ctx: ToolContext, args: AccessUpdateArgs) -> Applied:
    """Create or update a user (name@realm: groups replaced, enable, names, email, expire)
    or a group (comment). Passwords are not set here: use the Proxmox UI."""
    return await apply_plan(ctx, args)


class AccessDeleteArgs(WriteInput):
    kind: Literal["user", "group", "token"]
    id: Annotated[str, Field(max_length=160, description="name@realm, group, user@realm!token.")]


async def _plan_access_delete(ctx: ToolContext, args: AccessDeleteArgs) -> Plan:
    if (problem := _id_problem(args)) is not None:
        raise problem
    acl = await _acl(ctx)
    warnings: list[str] = []
    if args.kind == "group":
        groups = await _groups(ctx)
        if args.id not in groups:
            raise _missing("id", "group", args.id, sorted(groups), "kind groups")
        lost = [e for e in acl if e.type == "group" and e.ugid == args.id]
        if members := _split(groups[args.id].users):
            warnings.append(f"members {', '.join(members)} lose what the group's ACL gave them")
        call = ApiCall.to("DELETE", "/access/groups/{groupid}", groupid=args.id)
    elif args.kind == "user":
        users = await _users(ctx)
        if args.id not in users:
            raise _missing("id", "user", args.id, sorted(users), "kind users")
        user = users[args.id]
        lost = [e for e in acl if e.ugid == args.id or e.ugid.startswith(args.id + "!")]
        tokens = [t["tokenid"] for t in user.tokens]
        if tokens:
            warnings.append(f"its API tokens stop working: {', '.join(map(str, tokens))}")
        if joined := _split(user.groups):
            warnings.append(f"it leaves groups {', '.join(joined)}")
        call = ApiCall.to("DELETE", "/access/users/{userid}", userid=args.id)
    else:
        userid, _, name = args.id.partition("!")
        users = await _users(ctx)
        names = [str(t["tokenid"]) for t in users[userid].tokens] if userid in users else []
        if name not in names:
            known = [f"{userid}!{n}" for n in names]
            raise _missing("id", "token", args.id, known, "proxmox_access_list kind=tokens")
        lost = [e for e in acl if e.type == "token" and e.ugid == args.id]
        warnings.append("anything using this token is refused from now on")
        call = ApiCall.to(
            "DELETE", "/access/users/{userid}/token/{tokenid}", userid=userid, tokenid=name
        )
    return Plan(
        summary=f"Delete {args.kind} {args.id}",
        changes=[Change(field="acl", before=[_acl_text(e) for e in lost], after=[])],
        calls=[call],
        warnings=warnings,
    )


@tool(
    "proxmox_access_delete",
    title="Delete a user, group or API token",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    api=(
        "DELETE /access/users/{userid}",
        "DELETE /access/groups/{groupid}",
        "DELETE /access/users/{userid}/token/{tokenid}",
    ),
    input=AccessDeleteArgs,
    output=Applied,
    planner=_plan_access_delete,
    examples=[
        {"kind": "token", "id": "bob@pve!monitoring"},
        {"kind": "user", "id": "dave@pve"},
        {"kind": "group", "id": "developers", "dry_run": True},
    ],
    rejects=[
        ({"kind": "user", "id": "nobody@pve"}, "not_found"),
        ({"kind": "token", "id": "bob@pve!nope"}, "not_found"),
        ({"kind": "group", "id": "nope"}, "not_found"),
        ({"kind": "token", "id": "bob@pve"}, "invalid_argument"),
    ],
)
async def access_delete(ctx: ToolContext, args: AccessDeleteArgs) -> Applied:
    """Delete a user (its tokens and ACL entries go too), a group or an API token; the plan
    lists the access that is lost."""
    return await apply_plan(ctx, args)


# --- ACLs -------------------------------------------------------------------------------


class AclArgs(WriteInput):
    path: Annotated[AclPath, Field(description="/, /vms/100, /pool/dev, /storage/local...")]
    roles: Annotated[list[RoleId], Field(min_length=1, max_length=8)]
    users: Annotated[list[UserId], Field(default_factory=list, max_length=16)]
    groups: Annotated[list[GroupId], Field(default_factory=list, max_length=16)]
    tokens: Annotated[list[TokenId], Field(default_factory=list, max_length=16)]

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not (self.users or self.groups or self.tokens):
            raise ValueError("name users, groups or tokens")
        return self


class AclGrantArgs(AclArgs):
    propagate: Annotated[bool, Field(description="Also below path (default).")] = True


_PATH_ROOTS = ("access", "nodes", "pool", "sdn", "storage", "vms", "mapping")


def _normal_path(path: str) -> str:
    """AccessControl.pm normalize_path, and a path PVE's check_path could accept."""
    normal = "/" + "/".join(part for part in path.split("/") if part)
    if normal != "/" and normal.split("/")[1] not in _PATH_ROOTS:
        raise ToolFailure(
            "invalid_argument",
            f"path: {path!r} is not an ACL path",
            field="path",
            hint="Start with one of: /, " + ", ".join(f"/{r}" for r in _PATH_ROOTS) + ".",
        )
    return normal


async def _acl_target(ctx: ToolContext, path: str, *, strict: bool) -> Target:
    """The object an ACL path names (a pool or a guest) as policy's target; other paths
    target the cluster. `strict`: one that does not exist is `not_found` (a grant; PVE
    would accept it, but a typo would then grant nothing). A revoke may remove a stale
    entry of a guest or pool that is gone."""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "pool":
        names = await _pool_names(ctx)
        if strict and parts[2] not in names:
            raise _missing("path", "pool", parts[2], names, "proxmox_pool_list")
        return Target(pool=parts[2])
    if len(parts) == 3 and parts[1] == "vms" and parts[2].isdigit():
        row = (await _guest_pools(ctx)).get(int(parts[2]))
        if row is not None:
            return planners.guest_target(row)
        if strict:
            raise _missing("path", "guest", parts[2], [], "proxmox_guest_list")
        return Target(vmid=int(parts[2]))
    return Target()


async def _check_principals(ctx: ToolContext, args: AclArgs) -> None:
    roles = await _roles(ctx)
    for role in args.roles:
        if role not in roles:
            raise _missing("roles", "role", role, sorted(roles), "kind roles")
    users = await _users(ctx) if args.users or args.tokens else {}
    for userid in args.users:
        if userid not in users:
            raise _missing("users", "user", userid, sorted(users), "kind users")
    if args.groups:
        groups = await _groups(ctx)
        for group in args.groups:
            if group not in groups:
                raise _missing("groups", "group", group, sorted(groups), "kind groups")
    for tokenid in args.tokens:
        userid, _, name = tokenid.partition("!")
        owned = [str(t["tokenid"]) for t in users[userid].tokens] if userid in users else []
        if name not in owned:
            raise _missing("tokens", "token", tokenid, [], "proxmox_access_list kind=tokens")


def _who(args: AclArgs) -> list[tuple[str, str]]:
    return (
        [("user", u) for u in args.users]
        + [("group", g) for g in args.groups]
        + [("token", t) for t in args.tokens]
    )


def _acl_call(path: str, args: AclArgs, extra: dict[str, Any]) -> ApiCall:
    params: dict[str, Any] = {"path": path, "roles": ",".join(args.roles)}
    for name in ("users", "groups", "tokens"):
        if values := getattr(args, name):
            params[name] = ",".join(values)
    return ApiCall.to("PUT", "/access/acl", params=params | extra)


async def _plan_acl_grant(ctx: ToolContext, args: AclGrantArgs) -> Plan:
    path = _normal_path(args.path)
    target = await _acl_target(ctx, path, strict=True)
    await _check_principals(ctx, args)
    who = _who(args)
    current = {
        (e.type, e.ugid, e.roleid): e.propagate
        for e in await _acl(ctx)
        if e.path == path and (e.type, e.ugid) in who
    }
    wanted = current | {(t, u, r): int(args.propagate) for t, u in who for r in args.roles}

    def shown(entries: dict[tuple[str, str, str], int]) -> list[str]:
        return [
            _acl_text(_Acl(path=path, type=t, ugid=u, roleid=r, propagate=p))
            for (t, u, r), p in sorted(entries.items())
        ]

    before, after = shown(current), shown(wanted)
    return Plan(
        summary=f"Grant {', '.join(args.roles)} on {path}",
        changes=[Change(field="acl", before=before, after=after)],
        target=target,
        calls=[_acl_call(path, args, {"propagate": int(args.propagate)})],
    )


@tool(
    "proxmox_acl_grant",
    title="Grant roles on a path",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    api=("PUT /access/acl",),
    input=AclGrantArgs,
    output=Applied,
    planner=_plan_acl_grant,
    examples=[
        {"path": "/pool/dev", "roles": ["PVEVMUser"], "users": ["bob@pve"]},
        {"path": "/vms/102", "roles": ["PVEAuditor"], "groups": ["ops"], "propagate": False},
        {"path": "/storage/local", "roles": ["PVEDatastoreUser"], "tokens": ["bob@pve!monitoring"]},
    ],
    rejects=[
        ({"path": "/pool/nope", "roles": ["PVEVMUser"], "users": ["bob@pve"]}, "not_found"),
        ({"path": "/", "roles": ["Superuser"], "users": ["bob@pve"]}, "not_found"),
        ({"path": "/", "roles": ["PVEAuditor"], "users": ["nobody@pve"]}, "not_found"),
        ({"path": "/", "roles": ["PVEAuditor"], "groups": ["nope"]}, "not_found"),
        ({"path": "/bogus", "roles": ["PVEAuditor"], "users": ["bob@pve"]}, "invalid_argument"),
        ({"path": "/", "roles": ["PVEAuditor"]}, "invalid_argument"),
    ],
)
async def acl_grant(ctx: ToolContext, args: AclGrantArgs) -> Applied:
    """Grant roles to users, groups or tokens on an ACL path (propagating below it unless
    propagate=false). proxmox_access_check shows the effect."""
    return await apply_plan(ctx, args)


async def _privileges(ctx: ToolContext, who: str, path: str) -> list[str]:
    answer = await read_as(ctx, _PERMISSIONS, "/access/permissions", {"userid": who, "path": path})
    return sorted(answer.get(path, {}))


async def _plan_acl_revoke(ctx: ToolContext, args: AclArgs) -> Plan:
    path = _normal_path(args.path)
    await _check_principals(ctx, args)
    here = [e for e in await _acl(ctx) if e.path == path]
    for kind, name in _who(args):
        for role in args.roles:
            if not any((e.type, e.ugid, e.roleid) == (kind, name, role) for e in here):
                held = [e.roleid for e in here if (e.type, e.ugid) == (kind, name)]
                raise ToolFailure(
                    "not_found",
                    f"{kind} {name} has no {role} entry on {path}",
                    field="roles",
                    hint=f"Its roles on {path}: {_listed(held)} (proxmox_access_list kind=acl).",
                )
    removed = [e for e in here if (e.type, e.ugid) in _who(args) and e.roleid in args.roles]
    roles = await _roles(ctx)
    carried = sorted({p for role in args.roles for p in roles[role]})
    warnings = [f"the removed roles carry: {', '.join(carried) or '(no privileges)'}"]
    for kind, name in _who(args):
        if kind != "group":
            now = await _privileges(ctx, name, path)
            warnings.append(f"{name} holds on {path} now: {_listed(now)}")
    return Plan(
        summary=f"Revoke {', '.join(args.roles)} on {path}",
        changes=[Change(field="acl", before=[_acl_text(e) for e in removed], after=[])],
        target=await _acl_target(ctx, path, strict=False),
        calls=[_acl_call(path, args, {"delete": 1})],
        warnings=warnings,
    )


@tool(
    "proxmox_acl_revoke",
    title="Revoke roles on a path",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    api=("PUT /access/acl",),
    input=AclArgs,
    output=Applied,
    planner=_plan_acl_revoke,
    examples=[
        {"path": "/pool/prod", "roles": ["PVEVMUser"], "groups": ["ops"]},
        {"path": "/", "roles": ["PVEAuditor"], "tokens": ["bob@pve!monitoring"]},
    ],
    rejects=[
        ({"path": "/pool/prod", "roles": ["PVEAdmin"], "groups": ["ops"]}, "not_found"),
        ({"path": "/", "roles": ["PVEAuditor"], "users": ["nobody@pve"]}, "not_found"),
    ],
)
async def acl_revoke(ctx: ToolContext, args: AclArgs) -> Applied:
    """Remove ACL entries (roles of users, groups or tokens on a path); the plan lists the
    entries and the privileges they carry."""
    return await apply_plan(ctx, args)


# --- API tokens -------------------------------------------------------------------------


class TokenCreateArgs(WriteInput):
    user: UserId
    name: TokenName
    privsep: Annotated[
        bool, Field(description="Privilege separation: the token has only its own ACLs.")
    ] = True
    expire: Annotated[int | None, Field(ge=0, description="Epoch seconds; 0: never.")] = None
    comment: Annotated[str | None, Field(max_length=256)] = None

    @model_validator(mode="before")
    @classmethod
    def _no_secret_to_the_model(cls, data: Any) -> Any:
        """An argument that asks for the secret is refused by name, with why (the generic
        `unknown argument` would not say that no argument can ever get it)."""
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and ("secret" in key or "value" in key):
                    error = PydanticCustomError(
                        "secret_to_model",
                        "a token's secret is never returned to the model: it is shown once to "
                        "the person at the client (MCP elicitation)",
                    )
                    raise ValidationError.from_exception_data(
                        cls.__name__,
                        [InitErrorDetails(type=error, loc=(key,), input=data[key])],
                    )
        return data


class TokenCreated(ToolOutput):
    tokenid: str
    privsep: bool
    expire: int | None = None
    comment: str | None = None
    delivered: Literal["to the person"]
    """Where the secret went (never into this result)."""


class _Created(Answer):
    full_tokenid: Annotated[str, Field(alias="full-tokenid")]
    value: str
    info: dict[str, Any] = Field(default_factory=dict)


_CREATED = TypeAdapter(_Created)

NO_HANDOVER = (
    "this client cannot show a secret to its person (no MCP elicitation), and a token's "
    "secret is never returned to the model; nothing was created"
)
NO_HANDOVER_HINT = (
    "Ask the person to create it in the Proxmox web UI (Datacenter > Permissions > API "
    "Tokens) or with `pveum user token add` on a node, or to use a client with elicitation."
)


async def _plan_token_create(ctx: ToolContext, args: TokenCreateArgs) -> Plan:
    if not args.dry_run and not ctx.can_hand_over_secret:
        raise ToolFailure("secret_handover_unavailable", NO_HANDOVER, hint=NO_HANDOVER_HINT)
    users = await _users(ctx)
    if args.user not in users:
        raise _missing("user", "user", args.user, sorted(users), "kind users")
    if any(t["tokenid"] == args.name for t in users[args.user].tokens):
        raise ToolFailure(
            "already_exists",
            f"{args.user} already has a token {args.name!r}",
            field="name",
            hint="Pick another name, or delete the old one with proxmox_access_delete.",
        )
    params: dict[str, Any] = {"privsep": int(args.privsep)}
    if args.expire is not None:
        params["expire"] = args.expire
    if args.comment:
        params["comment"] = args.comment
    tokenid = f"{args.user}!{args.name}"
    return Plan(
        summary=f"Create API token {tokenid}; its secret is shown once to the person, "
        "through the client, never to the model",
        changes=[Change(field="tokens", before=None, after=tokenid)],
        calls=[
            ApiCall.to(
                "POST",
                "/access/users/{userid}/token/{tokenid}",
                params=params,
                userid=args.user,
                tokenid=args.name,
            )
        ],
        warnings=[] if args.privsep else ["without privsep the token has all of the user's rights"],
    )


@tool(
    "proxmox_token_create",
    title="Create an API token (secret to the person only)",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    api=("POST /access/users/{userid}/token/{tokenid}",),
    input=TokenCreateArgs,
    output=TokenCreated,
    planner=_plan_token_create,
    examples=[{"user": "carol@pve", "name": "ci", "comment": "CI jobs", "dry_run": True}],
    rejects=[
        ({"user": "carol@pve", "name": "ci"}, "secret_handover_unavailable"),
        ({"user": "carol@pve", "name": "ci", "return_secret": True}, "invalid_argument"),
        ({"user": "nobody@pve", "name": "ci", "dry_run": True}, "not_found"),
        ({"user": "bob@pve", "name": "monitoring", "dry_run": True}, "already_exists"),
    ],
)
async def token_create(ctx: ToolContext, args: TokenCreateArgs) -> TokenCreated:
    """Create an API token. Its secret goes only to the person, through the client (MCP
    elicitation), never to you; without elicitation it is refused (the UI can do it)."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    (call,) = plan.calls
    answer = await ctx.call(call.method, call.path, call.params)
    created = answer_as(_CREATED, answer.data, method=call.method, path=call.path)
    message = (
        f"The secret of the new Proxmox API token {created.full_tokenid}. Use it as "
        f"'PVEAPIToken={created.full_tokenid}=<secret>'."
    )
    if not await ctx.hand_over_secret(message, created.value):
        await ctx.call("DELETE", call.path)
        raise ToolFailure(
            "secret_not_delivered",
            f"the person did not take the secret of {created.full_tokenid}, so the token was "
            "deleted again; nothing remains",
            hint="Call again when the person is ready to store the secret, or have them "
            "create the token in the Proxmox UI.",
        )
    info = created.info
    return TokenCreated(
        tokenid=created.full_tokenid,
        privsep=bool(info.get("privsep", 1)),
        expire=info.get("expire") or None,
        comment=info.get("comment"),
        delivered="to the person",
    )


# --- who may do what where ---------------------------------------------------------------


class CheckArgs(ToolInput):
    who: Annotated[
        str | None,
        matching(_USER + r"(![A-Za-z][A-Za-z0-9.\-_]+)?", "name@realm or user@realm!token"),
        Field(description="User or token; default: the gateway's own token."),
    ] = None
    path: Annotated[AclPath | None, Field(description="Default: every path with rights.")] = None
    privilege: Annotated[
        str | None, matching(r"[A-Z][A-Za-z]*(\.[A-Za-z]+)+", "a privilege like VM.PowerMgmt")
    ] = None


class Check(ToolOutput):
    who: str
    path: str | None = None
    allowed: bool | None = None
    privileges: list[str] | None = None
    paths: dict[str, list[str]] | None = None
    grants: list[str] | None = None


@tool(
    "proxmox_access_check",
    title="Who may do what where",
    tier=Tier.READ,
    toolset=TOOLSET,
    api=("GET /access/permissions",),
    input=CheckArgs,
    output=Check,
    idempotent=True,
    examples=[
        {"who": "bob@pve", "path": "/vms/100"},
        {"who": "carol@pve", "path": "/vms/106", "privilege": "VM.PowerMgmt"},
        {"who": "bob@pve!monitoring"},
        {"path": "/"},
    ],
    rejects=[
        ({"who": "nobody@pve", "path": "/"}, "not_found"),
        ({"who": "bob@pve", "privilege": "VM.PowerMgmt"}, "invalid_argument"),
        ({"who": "bob", "path": "/"}, "invalid_argument"),
    ],
)
async def access_check(ctx: ToolContext, args: CheckArgs) -> Check:
    """Effective PVE privileges of a user or token on a path (ACLs, groups, pools, token
    privsep), the entries that grant them, and with privilege whether it is allowed."""
    if args.privilege is not None and args.path is None:
        raise ToolFailure(
            "invalid_argument",
            "privilege needs a path",
            field="path",
            hint="Give the path to check it on, e.g. /vms/100.",
        )
    params: dict[str, Any] = {}
    if args.who is not None:
        users = await _users(ctx)
        userid, _, token = args.who.partition("!")
        tokens = [str(t["tokenid"]) for t in users[userid].tokens] if userid in users else []
        if userid not in users or (token and token not in tokens):
            kind = "token" if token else "user"
            raise _missing("who", kind, args.who, sorted(users), "proxmox_access_list")
        params["userid"] = args.who
    who = args.who or "the gateway's token"
    if args.path is None:
        answer = await read_as(ctx, _PERMISSIONS, "/access/permissions", params)
        return Check(who=who, paths={p: sorted(v) for p, v in sorted(answer.items())})
    path = _normal_path(args.path)
    answer = await read_as(ctx, _PERMISSIONS, "/access/permissions", params | {"path": path})
    privileges = sorted(answer.get(path, {}))
    grants = await _grants(ctx, args.who, path) if args.who is not None else None
    return Check(
        who=who,
        path=path,
        allowed=(args.privilege in privileges) if args.privilege is not None else None,
        privileges=privileges,
        grants=grants,
    )


async def _grants(ctx: ToolContext, who: str, path: str) -> list[str]:
    """The ACL entries on `path` or above it (propagated) that name `who`, its groups, or
    for a guest or storage the pool holding it: where its privileges come from."""
    userid = who.partition("!")[0]
    users, acl = await _users(ctx), await _acl(ctx)
    groups = set(_split(users[userid].groups)) if userid in users and "!" not in who else set()
    pools: set[str] = set()
    if path.startswith("/vms/") and path.count("/") == 2 and path[5:].isdigit():
        row = (await _guest_pools(ctx)).get(int(path[5:]))
        if row is not None and row.get("pool"):
            pools.add(f"/pool/{row['pool']}")
    mine = [
        e
        for e in acl
        if (e.type, e.ugid) in {("user", who), ("token", who)} | {("group", g) for g in groups}
    ]
    return [
        _acl_text(e)
        for e in mine
        if e.path == path or (e.propagate and _on_path(path, e.path)) or e.path in pools
    ]


TOOLS = (
    pool_list,
    pool_update,
    pool_delete,
    access_list,
    access_update,
    access_delete,
    acl_grant,
    acl_revoke,
    token_create,
    access_check,
)
