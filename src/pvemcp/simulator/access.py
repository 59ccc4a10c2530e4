"""Pools, users, groups, roles, ACLs, API tokens and realms, and the effective privileges
they give (PVE's `user.cfg`, `domains.cfg` and `priv/token.cfg` as one store).

Behaviour and wording follow pve-access-control (`src/PVE/AccessControl.pm`,
`src/PVE/RPCEnvironment.pm`, `src/PVE/API2/{User,Group,Role,ACL,AccessControl,Domains}.pm`)
and pve-manager's `PVE/API2/Pool.pm`:

- Every change is made on the whole store or not at all, as PVE's handlers die before
  `cfs_write_file("user.cfg")` and so leave the file as it was; `lock_user_config` prefixes
  the message with what failed (`create user failed: user 'x@pve' already exists`).
- Built-in roles are generated from the privilege groups as `create_roles` does
  (`PVE<Cat>Admin`, `PVE<Cat>User`, `PVEAuditor`, `PVEAdmin` without `Mapping.Modify`,
  `PVETemplateUser`, `NoAccess`, `Administrator` with every privilege).
- Effective privileges (`permissions`) are `roles` walked down the path (a deeper entry
  replaces what was inherited; a user's own entry wins over its groups'; a token's over
  its user's; only propagated entries reach below their path), plus the roles a pool's
  ACL gives its member guests and storages (never `NoAccess`-trumping), and for a token
  with privilege separation the intersection with its user's privileges. root@pam has
  every privilege.
- A guest's pool is kept on the guest (`Guest.pool`, which create, restore and delete
  maintain), a storage's in `Pool.storage`. **Divergence:** PVE's pool update adds a vmid
  without checking that a guest has it; the simulator cannot hold such a member and
  refuses it with PVE's `VM {vmid} does not exist` wording of other handlers (a guess).

The store is what issue 13's permission model checks requests against: users with
tokens (`privsep`) and their secrets, roles with privileges, ACLs with propagation.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import ApiError, failure, param_error
from .router import Context, Params, Result, Route, api, integer, text

if TYPE_CHECKING:
    from .model import Guest

AclType = Literal["user", "group", "token"]

# AccessControl.pm `$privgroups`: per category, the root/admin/user/audit privileges.
_PRIVGROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "VM": {
        "root": (),
        "admin": ("VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
                  "VM.Config.HWType", "VM.Config.Options", "VM.Allocate", "VM.Clone",
                  "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate", "VM.Snapshot",
                  "VM.Snapshot.Rollback"),
        "user": ("VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
                 "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
                 "VM.GuestAgent.FileWrite", "VM.PowerMgmt"),
        "audit": ("VM.Audit", "VM.GuestAgent.Audit"),
    },
    "Sys": {
        "root": ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        "admin": ("Sys.Console", "Sys.Syslog"),
        "user": (),
        "audit": ("Sys.Audit",),
    },
    "Datastore": {
        "root": (),
        "admin": ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        "user": ("Datastore.AllocateSpace",),
        "audit": ("Datastore.Audit",),
    },
    "SDN": {
        "root": (),
        "admin": ("SDN.Allocate", "SDN.Audit"),
        "user": ("SDN.Use",),
        "audit": ("SDN.Audit",),
    },
    "User": {
        "root": ("Realm.Allocate",),
        "admin": ("User.Modify", "Group.Allocate", "Realm.AllocateUser"),
        "user": (),
        "audit": (),
    },
    "Pool": {
        "root": (),
        "admin": ("Pool.Allocate",),
        "user": ("Pool.Audit",),
        "audit": ("Pool.Audit",),
    },
    "Mapping": {
        "root": (),
        "admin": ("Mapping.Modify",),
        "user": ("Mapping.Use",),
        "audit": ("Mapping.Audit",),
    },
}  # fmt: skip


def _builtin_roles() -> dict[str, frozenset[str]]:
    """AccessControl.pm `create_roles`."""
    valid = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, groups in _PRIVGROUPS.items():
        valid.update(groups["root"], groups["admin"], groups["user"], groups["audit"])
        roles[f"PVE{cat}Admin"] = {*groups["admin"], *groups["user"], *groups["audit"]}
        roles["PVEAdmin"].update(roles[f"PVE{cat}Admin"])
        if groups["user"]:
            roles[f"PVE{cat}User"] = {*groups["user"], *groups["audit"]}
        roles["PVEAuditor"].update(groups["audit"])
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = valid
    return {name: frozenset(privs) for name, privs in roles.items()}


BUILTIN_ROLES = _builtin_roles()
ALL_PRIVILEGES = BUILTIN_ROLES["Administrator"]

# PVE::Auth::Plugin: user, realm and group names; AccessControl.pm check_path.
_USER_RE = re.compile(r"([^\s:/]+)@([A-Za-z][A-Za-z0-9.\-_]+)")
_TOKEN_SUBID_RE = re.compile(r"[A-Za-z][A-Za-z0-9.\-_]+")
_ACL_PATH_RE = re.compile(
    r"/|/access|/access/groups|/access/groups/[\w.\-]+|/access/realm|/access/realm/[\w.\-]+"
    r"|/nodes|/nodes/[\w.\-]+|/pool|/pool/[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}"
    r"|/sdn|/sdn/\w+|/sdn/\w+/[\w.\-]+|/sdn/zones/[\w.\-]+/[\w.\-]+"
    r"|/sdn/zones/[\w.\-]+/[\w.\-]+/[1-9][0-9]{0,3}"
    r"|/storage|/storage/[\w.\-]+|/vms|/vms/[1-9][0-9]{2,}"
    r"|/mapping|/mapping/[\w.\-]+|/mapping/[\w.\-]+/[\w.\-]+"
)


@dataclass
class Token:
    """An API token of a user (`user.cfg` `token:` line, its secret in `priv/token.cfg`)."""

    secret: str = field(repr=False)
    privsep: bool = True
    expire: int = 0
    comment: str | None = None

    def info(self) -> dict[str, Any]:
        """PVE's `token-info`."""
        entry: dict[str, Any] = {"privsep": int(self.privsep), "expire": self.expire}
        if self.comment:
            entry["comment"] = self.comment
        return entry


@dataclass
class User:
    """A user of a realm, with its API tokens."""

    enable: bool = True
    expire: int = 0
    firstname: str | None = None
    lastname: str | None = None
    email: str | None = None
    comment: str | None = None
    keys: str | None = None
    tokens: dict[str, Token] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        """User.pm `$extract_user_data` without `full`."""
        entry: dict[str, Any] = {"enable": int(self.enable), "expire": self.expire}
        for name in ("firstname", "lastname", "email", "comment", "keys"):
            if (value := getattr(self, name)) is not None:
                entry[name] = value
        return entry


@dataclass
class Group:
    comment: str | None = None
    users: set[str] = field(default_factory=set)


@dataclass
class Pool:
    """A resource pool; its guests are those whose `Guest.pool` names it."""

    comment: str | None = None
    storage: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Realm:
    type: str
    comment: str
    default: bool = False


AclKey = tuple[AclType, str]
"""Who an ACL entry is for: ("user", "bob@pve"), ("group", "ops"), ("token", "bob@pve!mon")."""


@dataclass
class AccessStore:
    """The access configuration of the cluster."""

    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    acl: dict[str, dict[AclKey, dict[str, bool]]] = field(default_factory=dict)
    """path -> who -> role -> propagate."""
    realms: dict[str, Realm] = field(default_factory=dict)
    custom_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    """Roles made through `POST /access/roles` (`user.cfg` `role:` lines)."""
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    """userid -> password for `POST /access/ticket` (PAM's shadow file and `priv/shadow.cfg`
    as one map); a user without one cannot log in. Tests set root@pam's here."""
    tickets: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """ticket -> (userid, CSRF prevention token) of a successful login."""
    logins: list[str] = field(default_factory=list)
    """Every username a `POST /access/ticket` named, in order, whether or not it succeeded:
    what tests check to prove that no credential was sent."""

    def roles(self) -> dict[str, frozenset[str]]:
        """Every role and its privileges: the built-in ones and those created."""
        return {**BUILTIN_ROLES, **self.custom_roles}

    def groups_of(self, userid: str) -> list[str]:
        return sorted(name for name, group in self.groups.items() if userid in group.users)

    def token(self, tokenid: str) -> Token | None:
        """The token `user@realm!name`, if it exists."""
        userid, _, name = tokenid.partition("!")
        user = self.users.get(userid)
        return user.tokens.get(name) if user is not None and name else None

    def forget_guest(self, vmid: int) -> None:
        """AccessControl.pm `remove_vm_access`, which qemu-server's and pve-container's
        destroy call whether or not `purge` is set: the guest's ACL entries go (its pool
        membership went with the guest)."""
        self.acl.pop(f"/vms/{vmid}", None)

    def grant(self, path: str, who: AclKey, role: str, propagate: bool = True) -> None:
        self.acl.setdefault(path, {}).setdefault(who, {})[role] = propagate

    # -- effective privileges ----------------------------------------------------------

    def _roles_on(self, auth: str, path: str) -> dict[str, bool]:
        """AccessControl.pm `roles`: role -> propagate for `auth` (a user or a privsep
        token) on `path`, walking from `/` down; a token or user entry at a level wins over
        the groups' and replaces what was inherited."""
        is_token = "!" in auth
        kind: AclType = "token" if is_token else "user"
        parts = [] if path == "/" else path.strip("/").split("/")
        levels = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
        roles: dict[str, bool] = {}
        for index, level in enumerate(levels):
            final = index == len(levels) - 1
            node = self.acl.get(level, {})
            own = {r: p for r, p in node.get((kind, auth), {}).items() if final or p}
            if own:
                roles = own
                continue
            if is_token:
                continue
            from_groups: dict[str, bool] = {}
            for (type_, name), entry in node.items():
                if type_ == "group" and auth in self.groups.get(name, Group()).users:
                    from_groups.update({r: p for r, p in entry.items() if final or p})
            if from_groups:
                roles = from_groups
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _pool_roles(self, auth: str, path: str, guests: Mapping[int, Guest]) -> set[str]:
        """The roles a pool's ACL gives `auth` on `path` as a member of that pool. The
        guest is looked up by vmid, not found by walking every guest: a list checks each
        of its guests, and 2,000 guests took over a second (quadratic)."""
        found: set[str] = set()
        vmid = path.removeprefix("/vms/")
        guest = guests.get(int(vmid)) if path.startswith("/vms/") and vmid.isdigit() else None
        for name, pool in self.pools.items():
            if (guest is not None and guest.pool == name and path == f"/vms/{guest.vmid}") or (
                path in {f"/storage/{s}" for s in pool.storage}
            ):
                found |= set(self._roles_on(auth, f"/pool/{name}"))
        return found

    def _privileges(self, auth: str, path: str, guests: Mapping[int, Guest]) -> dict[str, bool]:
        """RPCEnvironment.pm `$compile_acl_path` for a user or a privsep token."""
        roles = self._roles_on(auth, path)
        pool_roles = self._pool_roles(auth, path, guests)
        if pool_roles and "NoAccess" not in roles:
            if "NoAccess" in pool_roles:
                roles = {"NoAccess": False}
            else:
                for role in pool_roles:
                    roles.setdefault(role, False)
        privs: dict[str, bool] = {}
        every_role = self.roles()
        for role, propagate in roles.items():
            for priv in every_role.get(role, frozenset()):
                privs[priv] = privs.get(priv, False) or propagate
        return privs

    def permissions(self, auth: str, path: str, guests: Mapping[int, Guest]) -> dict[str, bool]:
        """RPCEnvironment.pm `permissions`: privilege -> propagate of a user or token on a
        path (empty for an unknown user or token); `guests` by vmid (`ClusterState.guests`)."""
        if auth == "root@pam":
            return dict.fromkeys(ALL_PRIVILEGES, True)
        if "!" in auth:
            userid = auth.partition("!")[0]
            token = self.token(auth)
            if token is None:
                return {}
            user_privs = self.permissions(userid, path, guests)
            if not token.privsep:
                return user_privs
            own = self._privileges(auth, path, guests)
            return {p: user_privs[p] and v for p, v in own.items() if p in user_privs}
        if auth not in self.users:
            return {}
        return self._privileges(auth, path, guests)

    def effective(self, auth: str, guests: Mapping[int, Guest]) -> dict[str, dict[str, bool]]:
        """RPCEnvironment.pm `get_effective_permissions`: the privileges on the top-level
        paths, every ACL path and every pool member, paths without any left out."""
        paths = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
        paths |= set(self.acl)
        paths |= {f"/vms/{g.vmid}" for g in guests.values() if g.pool in self.pools}
        paths |= {f"/storage/{s}" for pool in self.pools.values() for s in pool.storage}
        found = {path: self.permissions(auth, path, guests) for path in sorted(paths)}
        return {path: privs for path, privs in found.items() if privs}


def demo_store(
    pools: Iterable[str],
    gateway_token: str = "root@pam!pvemcp",  # noqa: S107 - a token id, not its secret
) -> AccessStore:
    """The demo cluster's access configuration: the demo's pools and an empty one
    (`staging`), PVE's two standard realms, root@pam with the gateway's token (no
    privilege separation, so it keeps root's rights), a few people in groups with roles on
    the whole cluster, a pool and a storage, and a monitoring token with privilege
    separation."""
    store = AccessStore(
        realms={
            "pam": Realm("pam", "Linux PAM standard authentication"),
            "pve": Realm("pve", "Proxmox VE authentication server", default=True),
        },
    )
    root_user, _, token_name = gateway_token.partition("!")
    store.users = {
        "root@pam": User(email="root@example.invalid"),
        "alice@pve": User(firstname="Alice", lastname="Admin", email="alice@example.invalid"),
        "bob@pve": User(firstname="Bob", lastname="Operator", comment="on call"),
        "carol@pve": User(firstname="Carol", lastname="Developer"),
        "dave@pve": User(enable=False, comment="left the team"),
    }
    store.users.setdefault(root_user, User())
    store.users[root_user].tokens[token_name] = Token(
        str(uuid.uuid4()), privsep=False, comment="pvemcp gateway"
    )
    store.users["bob@pve"].tokens["monitoring"] = Token(
        str(uuid.uuid4()), comment="read-only dashboards"
    )
    store.groups = {
        "admins": Group("cluster administrators", {"alice@pve"}),
        "ops": Group("operators", {"bob@pve"}),
        "developers": Group(None, {"carol@pve", "dave@pve"}),
    }
    store.pools = {name: Pool() for name in pools}
    if "prod" in store.pools:
        store.pools["prod"] = Pool("production services", {"nfs-backup"})
    if "dev" in store.pools:
        store.pools["dev"].comment = "development"
    store.pools["staging"] = Pool("empty, for services not yet in production")
    store.grant("/", ("group", "admins"), "Administrator")
    store.grant("/", ("user", "bob@pve"), "PVEAuditor")
    store.grant("/pool/prod", ("group", "ops"), "PVEVMUser")
    store.grant("/pool/dev", ("group", "developers"), "PVEVMAdmin")
    store.grant("/storage/nfs-backup", ("group", "ops"), "PVEDatastoreUser", propagate=False)
    store.grant("/", ("token", "bob@pve!monitoring"), "PVEAuditor")
    return store


# --- handlers -------------------------------------------------------------------------


def _locked(what: str, change: Callable[[AccessStore], Any], ctx: Context) -> Any:
    """Run `change` on a copy of the store and keep it only if it succeeded, with
    `lock_user_config`'s `<what>: <message>` on failure (a 500, as a `die`)."""
    work = copy.deepcopy(ctx.state.access)
    try:
        answer = change(work)
    except ApiError as err:
        if err.status == 500:
            raise failure(f"{what}: {err.message}") from None
        raise
    _install(ctx, work)
    return answer


def _install(ctx: Context, work: AccessStore) -> None:
    store = ctx.state.access
    store.users, store.groups, store.acl = work.users, work.groups, work.acl
    store.custom_roles = work.custom_roles
    store.pools.clear()
    store.pools.update(work.pools)


def _split(value: object) -> list[str]:
    """PVE::Tools::split_list."""
    return [item for item in re.split(r"[;,\s\0]+", str(value or "")) if item]


def _expire(params: Params) -> int:
    return integer(params, "expire") if "expire" in params else 0


def _userid(value: str, name: str = "userid") -> str:
    """PVE::Auth::Plugin::verify_username, as the `pve-userid` format answers it."""
    if len(value) < 2 or len(value) > 64 or not _USER_RE.fullmatch(value):
        raise param_error(
            {name: f"invalid format - value '{value}' does not look like a valid user name\n"}
        )
    return value


def _user(store: AccessStore, userid: str) -> User:
    user = store.users.get(userid)
    if user is None:
        raise failure(f"no such user ('{userid}')")
    return user


def _group(store: AccessStore, groupid: str) -> Group:
    group = store.groups.get(groupid)
    if group is None:
        raise failure(f"group '{groupid}' does not exist")
    return group


def _set_groups(store: AccessStore, userid: str, groups: object, *, replace: bool) -> None:
    if replace:
        for group in store.groups.values():
            group.users.discard(userid)
    for name in _split(groups):
        if name not in store.groups:
            raise failure(f"no such group '{name}'")
        store.groups[name].users.add(userid)


_USER_FIELDS = ("firstname", "lastname", "email", "comment", "keys")


def _users(ctx: Context, params: Params) -> Result:
    store = ctx.state.access
    items = []
    for userid in sorted(store.users):
        user = store.users[userid]
        if "enabled" in params and bool(params["enabled"]) != user.enable:
            continue
        entry = user.data() | {"userid": userid}
        # User.pm index: `$extract_user_data` adds groups and tokens only with `full`.
        if params.get("full"):
            if groups := store.groups_of(userid):
                entry["groups"] = ",".join(groups)
            entry["tokens"] = [
                {"tokenid": name} | token.info() for name, token in sorted(user.tokens.items())
            ]
        realm = store.realms.get(userid.rpartition("@")[2])
        if realm is not None:
            entry["realm-type"] = realm.type
        items.append(entry)
    return Result(items)


def _user_create(ctx: Context, params: Params) -> Result:
    userid = _userid(text(params, "userid"))

    def change(store: AccessStore) -> None:
        if userid in store.users:
            raise failure(f"user '{userid}' already exists")
        user = User(enable=bool(params.get("enable", True)), expire=_expire(params))
        for name in _USER_FIELDS:
            if params.get(name):
                setattr(user, name, str(params[name]))
        store.users[userid] = user
        _set_groups(store, userid, params.get("groups"), replace=False)

    return Result(_locked("create user failed", change, ctx))


def _user_get(ctx: Context, params: Params) -> Result:
    store = ctx.state.access
    userid = _userid(text(params, "userid"))
    user = _user(store, userid)
    entry = user.data() | {"groups": store.groups_of(userid)}
    entry["tokens"] = {name: token.info() for name, token in user.tokens.items()}
    return Result(entry)


def _user_update(ctx: Context, params: Params) -> Result:
    userid = _userid(text(params, "userid"))

    def change(store: AccessStore) -> None:
        user = _user(store, userid)
        if "enable" in params:
            user.enable = bool(params["enable"])
        if "expire" in params:
            user.expire = _expire(params)
        if "groups" in params:
            _set_groups(store, userid, params["groups"], replace=not params.get("append"))
        for name in _USER_FIELDS:
            if name in params:
                setattr(user, name, str(params[name]))

    return Result(_locked("update user failed", change, ctx))


def _drop_acl(store: AccessStore, who: Callable[[AclKey], bool]) -> None:
    for path in list(store.acl):
        store.acl[path] = {key: roles for key, roles in store.acl[path].items() if not who(key)}
        if not store.acl[path]:
            del store.acl[path]


def _user_delete(ctx: Context, params: Params) -> Result:
    userid = _userid(text(params, "userid"))

    def change(store: AccessStore) -> None:
        # User.pm delete_user does not check that the user exists: deleting none is a no-op.
        store.users.pop(userid, None)
        for group in store.groups.values():
            group.users.discard(userid)
        _drop_acl(store, lambda key: key == ("user", userid) or key[1].startswith(userid + "!"))

    return Result(_locked("delete user failed", change, ctx))


def _token_of(store: AccessStore, params: Params) -> tuple[User, str, Token | None]:
    userid = _userid(text(params, "userid"))
    name = text(params, "tokenid")
    if not _TOKEN_SUBID_RE.fullmatch(name):
        raise param_error({"tokenid": "value does not match the regex pattern"})
    user = _user(store, userid)
    return user, name, user.tokens.get(name)


def _token_missing(userid: str, name: str) -> ApiError:
    return failure(f"no such token '{name}' for user '{userid}'")


def _tokens(ctx: Context, params: Params) -> Result:
    user = _user(ctx.state.access, _userid(text(params, "userid")))
    return Result([{"tokenid": n} | t.info() for n, t in sorted(user.tokens.items())])


def _token_get(ctx: Context, params: Params) -> Result:
    _, name, token = _token_of(ctx.state.access, params)
    if token is None:
        raise _token_missing(text(params, "userid"), name)
    return Result(token.info())


def _token_create(ctx: Context, params: Params) -> Result:
    userid = text(params, "userid")
    _, name, existing = _token_of(ctx.state.access, params)
    if existing is not None:
        raise param_error({"tokenid": "Token already exists."})
    # PVE::TokenConfig::generate_token: a random UUID is the secret.
    token = Token(
        str(uuid.uuid4()),
        privsep=bool(params.get("privsep", True)),
        expire=_expire(params),
        comment=str(params["comment"]) if params.get("comment") else None,
    )

    def change(store: AccessStore) -> None:
        store.users[userid].tokens[name] = token

    _locked("generating token failed", change, ctx)
    info: dict[str, Any] = {"privsep": int(token.privsep)}
    if "expire" in params:
        info["expire"] = token.expire
    if token.comment:
        info["comment"] = token.comment
    return Result({"info": info, "value": token.secret, "full-tokenid": f"{userid}!{name}"})


def _token_delete(ctx: Context, params: Params) -> Result:
    userid = text(params, "userid")
    _, name, token = _token_of(ctx.state.access, params)
    if token is None:
        raise _token_missing(userid, name)

    def change(store: AccessStore) -> None:
        del store.users[userid].tokens[name]
        _drop_acl(store, lambda key: key == ("token", f"{userid}!{name}"))

    return Result(_locked("deleting token failed", change, ctx))


def _groups(ctx: Context, params: Params) -> Result:
    items = []
    for name, group in sorted(ctx.state.access.groups.items()):
        entry: dict[str, Any] = {"groupid": name}
        if group.comment is not None:
            entry["comment"] = group.comment
        if group.users:
            entry["users"] = ",".join(sorted(group.users))
        items.append(entry)
    return Result(items)


_GROUP_RE = re.compile(r"[A-Za-z0-9.\-_]+")


def _groupid(params: Params) -> str:
    name = text(params, "groupid")
    if not _GROUP_RE.fullmatch(name):
        raise param_error(
            {"groupid": f"invalid format - group name '{name}' contains invalid characters\n"}
        )
    return name


def _group_create(ctx: Context, params: Params) -> Result:
    name = _groupid(params)

    def change(store: AccessStore) -> None:
        if name in store.groups:
            raise failure(f"group '{name}' already exists")
        store.groups[name] = Group(str(params["comment"]) if "comment" in params else None)

    return Result(_locked("create group failed", change, ctx))


def _group_get(ctx: Context, params: Params) -> Result:
    group = _group(ctx.state.access, _groupid(params))
    entry: dict[str, Any] = {"members": sorted(group.users)}
    if group.comment is not None:
        entry["comment"] = group.comment
    return Result(entry)


def _group_update(ctx: Context, params: Params) -> Result:
    name = _groupid(params)

    def change(store: AccessStore) -> None:
        group = _group(store, name)
        if "comment" in params:
            group.comment = str(params["comment"])

    return Result(_locked("update group failed", change, ctx))


def _group_delete(ctx: Context, params: Params) -> Result:
    name = _groupid(params)

    def change(store: AccessStore) -> None:
        _group(store, name)
        del store.groups[name]
        _drop_acl(store, lambda key: key == ("group", name))

    return Result(_locked("delete group failed", change, ctx))


def _roles(ctx: Context, params: Params) -> Result:
    return Result(
        [
            {
                "roleid": name,
                "privs": ",".join(sorted(privs)),
                "special": int(name in BUILTIN_ROLES),
            }
            for name, privs in sorted(ctx.state.access.roles().items())
        ]
    )


def _privs(params: Params) -> frozenset[str]:
    """AccessControl.pm `add_role_privs`: every name must be a known privilege."""
    privs = frozenset(_split(params.get("privs")))
    for priv in sorted(privs - ALL_PRIVILEGES):
        raise failure(f"invalid privilege '{priv}'")
    return privs


def _role_create(ctx: Context, params: Params) -> Result:
    # PVE/API2/Role.pm create_role. The 'PVE' namespace refusal is from memory of PVE 8's
    # Role.pm (the exact wording is unchecked): PVE reserves it for built-in roles.
    name = text(params, "roleid")
    if name.upper().startswith("PVE"):
        raise param_error(
            {"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"}
        )

    def change(store: AccessStore) -> None:
        if name in store.roles():
            raise failure(f"role '{name}' already exists")
        store.custom_roles[name] = _privs(params)

    return Result(_locked("create role failed", change, ctx))


def _role_update(ctx: Context, params: Params) -> Result:
    # Role.pm update_role: built-in roles are 'special' and cannot change.
    name = text(params, "roleid")

    def change(store: AccessStore) -> None:
        if name in BUILTIN_ROLES:
            raise failure(f"cannot modify role '{name}' - is a built-in role")
        if name not in store.custom_roles:
            raise failure(f"role '{name}' does not exist")
        privs = _privs(params)
        if params.get("append"):
            privs |= store.custom_roles[name]
        store.custom_roles[name] = privs

    return Result(_locked("update role failed", change, ctx))


def _role_delete(ctx: Context, params: Params) -> Result:
    # Role.pm delete_role, which also drops the role from every ACL entry
    # (AccessControl.pm delete_role_acl).
    name = text(params, "roleid")

    def change(store: AccessStore) -> None:
        if name in BUILTIN_ROLES:
            raise failure(f"cannot delete role '{name}' - is a built-in role")
        if name not in store.custom_roles:
            raise failure(f"role '{name}' does not exist")
        del store.custom_roles[name]
        for path, node in list(store.acl.items()):
            for key in list(node):
                node[key].pop(name, None)
                if not node[key]:
                    del node[key]
            if not node:
                del store.acl[path]

    return Result(_locked("delete role failed", change, ctx))


def _password(ctx: Context, params: Params) -> Result:
    # PVE/API2/AccessControl.pm change_password (as root: no old password asked).
    userid = _userid(text(params, "userid"))
    _user(ctx.state.access, userid)
    ctx.state.access.passwords[userid] = text(params, "password")
    return Result(None)


AUTH_FAILURE = "authentication failure"


def login(store: AccessStore, params: Params) -> dict[str, Any]:
    """AccessControl.pm `create_ticket` (`POST /access/ticket`, which needs no ticket): a
    ticket and CSRF prevention token for a user's right password, else a 401 that says no
    more than PVE's does (unknown user, disabled user and wrong password alike)."""
    username = text(params, "username")
    if params.get("realm") and "@" not in username:
        username = f"{username}@{params['realm']}"
    store.logins.append(username)
    user = store.users.get(username)
    expected = store.passwords.get(username)
    given = str(params.get("password", ""))
    if user is None or not user.enable or expected is None or expected != given:
        raise ApiError(401, AUTH_FAILURE)
    stamp = uuid.uuid4().hex[:8].upper()
    ticket = f"PVE:{username}:{stamp}::{uuid.uuid4().hex}"
    csrf = f"{stamp}:{uuid.uuid4().hex}"
    store.tickets[ticket] = (username, csrf)
    return {"username": username, "ticket": ticket, "CSRFPreventionToken": csrf}


def _ticket(ctx: Context, params: Params) -> Result:
    return Result(login(ctx.state.access, params))


def _role_get(ctx: Context, params: Params) -> Result:
    name = text(params, "roleid")
    privs = ctx.state.access.roles().get(name)
    if privs is None:
        raise failure(f"role '{name}' does not exist")
    return Result(dict.fromkeys(sorted(privs), 1))


def _acl_entries(store: AccessStore) -> Iterator[dict[str, Any]]:
    for path in sorted(store.acl):
        for (type_, ugid), roles in sorted(store.acl[path].items()):
            for role, propagate in sorted(roles.items()):
                yield {
                    "path": path,
                    "type": type_,
                    "ugid": ugid,
                    "roleid": role,
                    "propagate": int(propagate),
                }


def _acl(ctx: Context, params: Params) -> Result:
    return Result(list(_acl_entries(ctx.state.access)))


def normalize_path(path: str) -> str | None:
    """AccessControl.pm `normalize_path`."""
    path = re.sub(r"/+", "/", path).removesuffix("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if re.fullmatch(r"[A-Za-z0-9.\-_/]+", path) else None


def _acl_members(store: AccessStore, params: Params) -> list[AclKey]:
    """The groups, users and tokens an ACL update names, each checked to exist (in
    ACL.pm's order and wording)."""
    who: list[AclKey] = []
    for group in _split(params.get("groups")):
        if group not in store.groups:
            raise failure(f"group '{group}' does not exist")
        who.append(("group", group))
    for userid in _split(params.get("users")):
        if userid not in store.users:
            raise failure(f"user '{_userid(userid, 'users')}' does not exist")
        who.append(("user", userid))
    for tokenid in _split(params.get("tokens")):
        userid, _, name = tokenid.partition("!")
        if name not in _user(store, userid).tokens:
            raise _token_missing(userid, name)
        who.append(("token", tokenid))
    return who


def _acl_update(ctx: Context, params: Params) -> Result:
    # ACL.pm update_acl, with root's rights (the simulator does not check the caller's).
    if not any(params.get(name) for name in ("users", "groups", "tokens")):
        message = "either 'users', 'groups' or 'tokens' is required."
        raise param_error(dict.fromkeys(("users", "groups", "tokens"), message))
    raw = text(params, "path")
    path = normalize_path(raw)
    delete = bool(params.get("delete"))
    if path is None or (not delete and not _ACL_PATH_RE.fullmatch(path)):
        raise param_error({"path": f"invalid ACL path '{raw}'"})
    propagate = bool(params.get("propagate", True))

    def change(store: AccessStore) -> None:
        node = store.acl.setdefault(path, {})
        for role in _split(params.get("roles")):
            if role not in store.roles():
                raise failure(f"role '{role}' does not exist")
            for key in _acl_members(store, params):
                if delete:
                    node.get(key, {}).pop(role, None)
                else:
                    node.setdefault(key, {})[role] = propagate
        for key in [key for key, roles in node.items() if not roles]:
            del node[key]
        if not node:
            del store.acl[path]

    return Result(_locked("ACL update failed", change, ctx))


def _domains(ctx: Context, params: Params) -> Result:
    items = []
    for name, realm in sorted(ctx.state.access.realms.items()):
        entry: dict[str, Any] = {"realm": name, "type": realm.type, "comment": realm.comment}
        if realm.default:
            entry["default"] = 1
        items.append(entry)
    return Result(items)


def _domain_get(ctx: Context, params: Params) -> Result:
    name = text(params, "realm")
    realm = ctx.state.access.realms.get(name)
    if realm is None:
        raise failure(f"domain '{name}' does not exist")
    entry: dict[str, Any] = {"type": realm.type, "comment": realm.comment, "digest": "0" * 40}
    if realm.default:
        entry["default"] = 1
    return Result(entry)


def _permissions(ctx: Context, params: Params) -> Result:
    """AccessControl.pm `permissions`: one path's privileges, or the effective ones."""
    store, guests = ctx.state.access, ctx.state.guests
    userid = str(params.get("userid", ctx.user))
    path = params.get("path")
    if path:
        privs = store.permissions(userid, str(path), guests)
        return Result({str(path): {p: int(v) for p, v in sorted(privs.items())}})
    found = store.effective(userid, guests)
    return Result({p: {k: int(v) for k, v in sorted(v.items())} for p, v in found.items()})


# --- pools ----------------------------------------------------------------------------


def _poolid(params: Params) -> str:
    return text(params, "poolid")


def _pool(store: AccessStore, name: str) -> Pool:
    pool = store.pools.get(name)
    if pool is None:
        raise failure(f"pool '{name}' does not exist")
    return pool


def _pool_members(ctx: Context, name: str, kind: object) -> list[dict[str, Any]]:
    """Pool.pm index with a poolid: its guests (`extract_vm_stats`) and storages
    (`extract_storage_stats`, on the first node that has the storage)."""
    from .views import guest_resource, storage_resource  # noqa: PLC0415 - views imports state

    state = ctx.state
    pool = state.access.pools[name]
    members = [
        guest_resource(g, ctx.now)
        for g in sorted(state.guests.values(), key=lambda g: g.vmid)
        if g.pool == name and kind in (None, g.kind)
    ]
    if kind in (None, "storage"):
        for storage in state.storages:
            if storage.name in pool.storage and storage.usage:
                node = "pve1" if "pve1" in storage.usage else sorted(storage.usage)[0]
                usage = state.volumes.usage(storage, node)
                members.append(storage_resource(storage, node, usage))
    return members


def _pools(ctx: Context, params: Params) -> Result:
    store = ctx.state.access
    if params.get("poolid"):
        name = _poolid(params)
        entry: dict[str, Any] = {"poolid": name}
        entry["members"] = _pool_members(ctx, _known_pool(store, name), params.get("type"))
        if store.pools[name].comment is not None:
            entry["comment"] = store.pools[name].comment
        return Result([entry])
    items = []
    for name, pool in sorted(store.pools.items()):
        item: dict[str, Any] = {"poolid": name}
        if pool.comment is not None:
            item["comment"] = pool.comment
        items.append(item)
    return Result(items)


def _known_pool(store: AccessStore, name: str) -> str:
    _pool(store, name)
    return name


def _pool_get(ctx: Context, params: Params) -> Result:
    store = ctx.state.access
    name = _known_pool(store, _poolid(params))
    entry: dict[str, Any] = {"members": _pool_members(ctx, name, params.get("type"))}
    if store.pools[name].comment is not None:
        entry["comment"] = store.pools[name].comment
    return Result(entry)


def _pool_create(ctx: Context, params: Params) -> Result:
    name = _poolid(params)

    def change(store: AccessStore) -> None:
        if name in store.pools:
            raise failure(f"pool '{name}' already exists")
        parent, _, leaf = name.rpartition("/")
        if parent and parent not in store.pools:
            raise failure(f"parent '{parent}' of pool '{name}' does not exist")
        if not re.match(r"[A-Za-z]", leaf):
            raise failure("pool name must start with a letter")
        store.pools[name] = Pool(str(params["comment"]) if params.get("comment") else None)

    return Result(_locked("create pool failed", change, ctx))


def _pool_update(ctx: Context, params: Params) -> Result:
    name = _poolid(params)
    state = ctx.state
    delete = bool(params.get("delete"))
    moves: dict[int, str | None] = {}

    def change(store: AccessStore) -> None:
        pool = _pool(store, name)
        if "comment" in params:
            pool.comment = str(params["comment"])
        for vmid in (int(v) for v in _split(params.get("vms"))):
            guest = state.guests.get(vmid)
            current = moves.get(vmid, guest.pool if guest is not None else None)
            if delete:
                if current != name:
                    raise failure(f"VM {vmid} is not a pool member")
                moves[vmid] = None
                continue
            if current == name:
                raise failure(f"VM {vmid} is already a pool member")
            if guest is None:
                raise failure(f"VM {vmid} does not exist")  # see the module's divergence
            if current is not None and not params.get("allow-move"):
                raise failure(
                    f"VM {vmid} belongs already to pool '{current}' and 'allow-move' is not set"
                )
            moves[vmid] = name
        for storage in _split(params.get("storage")):
            if delete:
                if storage not in pool.storage:
                    raise failure(f"Storage '{storage}' is not a pool member")
                pool.storage.discard(storage)
            else:
                if storage in pool.storage:
                    raise failure(f"Storage '{storage}' is already a pool member")
                pool.storage.add(storage)

    _locked("update pools failed", change, ctx)
    for vmid, pool in moves.items():
        state.guests[vmid].pool = pool
    return Result(None)


def _pool_delete(ctx: Context, params: Params) -> Result:
    name = _poolid(params)
    storages = {storage.name for storage in ctx.state.storages}
    guests = sorted(g.vmid for g in ctx.state.guests.values() if g.pool == name)

    def change(store: AccessStore) -> None:
        pool = _pool(store, name)
        for sub in sorted(p for p in store.pools if p.startswith(name + "/")):
            raise failure(f"pool '{name}' is not empty (contains pool '{sub}')")
        for vmid in guests:
            raise failure(f"pool '{name}' is not empty (contains VM {vmid})")
        for storage in sorted(pool.storage & storages):
            raise failure(f"pool '{name}' is not empty (contains storage '{storage}')")
        del store.pools[name]
        # AccessControl.pm delete_pool_acl
        store.acl.pop(f"/pool/{name}", None)

    return Result(_locked("delete pool failed", change, ctx))


_USER = "/access/users/{userid}"
_TOKEN = "/access/users/{userid}/token/{tokenid}"  # noqa: S105 - a path template

ROUTES: tuple[Route, ...] = (
    api("GET", "/pools", _pools),
    api("POST", "/pools", _pool_create),
    api("PUT", "/pools", _pool_update),
    api("DELETE", "/pools", _pool_delete),
    api("GET", "/pools/{poolid}", _pool_get),
    api("PUT", "/pools/{poolid}", _pool_update),
    api("DELETE", "/pools/{poolid}", _pool_delete),
    api("GET", "/access/users", _users),
    api("POST", "/access/users", _user_create),
    api("GET", _USER, _user_get),
    api("PUT", _USER, _user_update),
    api("DELETE", _USER, _user_delete),
    api("GET", f"{_USER}/token", _tokens),
    api("GET", _TOKEN, _token_get),
    api("POST", _TOKEN, _token_create),
    api("DELETE", _TOKEN, _token_delete),
    api("GET", "/access/groups", _groups),
    api("POST", "/access/groups", _group_create),
    api("GET", "/access/groups/{groupid}", _group_get),
    api("PUT", "/access/groups/{groupid}", _group_update),
    api("DELETE", "/access/groups/{groupid}", _group_delete),
    api("GET", "/access/roles", _roles),
    api("GET", "/access/roles/{roleid}", _role_get),
    api("POST", "/access/roles", _role_create),
    api("PUT", "/access/roles/{roleid}", _role_update),
    api("DELETE", "/access/roles/{roleid}", _role_delete),
    api("PUT", "/access/password", _password),
    api("POST", "/access/ticket", _ticket),
    api("GET", "/access/acl", _acl),
    api("PUT", "/access/acl", _acl_update),
    api("GET", "/access/domains", _domains),
    api("GET", "/access/domains/{realm}", _domain_get),
    api("GET", "/access/permissions", _permissions),
)
