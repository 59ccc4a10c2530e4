"""Every request checked against its method's `permissions` from the API index, with the
caller's effective privileges (`access.AccessStore.permissions`), as pve-access-control's
`PVE/RPCEnvironment.pm` `check_api2_permissions` and `exec_api2_perm_check` do.

What is checked, and how PVE words a refusal (`PVE::Exception::raise_perm_exc`, HTTP 403,
`Permission check failed (/vms/101, VM.PowerMgmt)`):

- `user: all` lets any authenticated caller in; `user: world` anyone.
- No `permissions` at all: root@pam only (`Permission check failed (user != root@pam)`).
- `["perm", path, [privs], "any", 1]`: the path template is filled from the request's
  parameters and normalised; every privilege is needed (`check`: the first missing one is
  named), or with `any` one of them (`check_any`: all named, joined by `|`);
  `require_param` skips the check (fails it) when that parameter is absent.
- `["and", ...]` / `["or", ...]`: as PVE, an `or` that fails raises the bare message.
- `["userid-param", "self" | "Realm.AllocateUser"]`.

Not implemented (allowed for root only, refused with the bare message for anyone else, never
silently allowed): `perm-modify` (`check_perm_modify`'s per-path-kind rules) and
`userid-group` (group membership of the target user). A method the index does not know is
treated the same way.

**Divergence:** PVE skips the checks for the user `root@pam` only; the simulator also treats a
root@pam token without privilege separation as root, so the demo gateway token
(`root@pam!pvemcp`) keeps every right, root-only methods included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pvemcp.pveapi.index import load_index

from .access import normalize_path
from .errors import ApiError

if TYPE_CHECKING:
    from .access import AccessStore
    from .model import Guest

FORBIDDEN = 403


def perm_error(what: str | None = None) -> ApiError:
    """PVE's `raise_perm_exc`: 403 `Permission check failed ({what})`."""
    return ApiError(FORBIDDEN, "Permission check failed" + (f" ({what})" if what else ""))


def is_root(store: AccessStore, auth: str) -> bool:
    """root@pam, or (see the module's divergence) a root@pam token without privsep."""
    if auth == "root@pam":
        return True
    userid, _, _ = auth.partition("!")
    token = store.token(auth)
    return userid == "root@pam" and token is not None and not token.privsep


def _fill(template: str, params: Mapping[str, object]) -> str:
    """PVE::Tools `template_replace`: `{name}` replaced by the parameter's value."""
    return re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), "")), template)


class Checker:
    """The permission checks of one caller, against the store and the guests as they are."""

    def __init__(self, store: AccessStore, auth: str, guests: Iterable[Guest]) -> None:
        self.store = store
        self.auth = auth
        self._guests = guests
        self.root = is_root(store, auth)

    @cached_property
    def guests(self) -> dict[int, Guest]:
        """The guests by vmid, indexed once per checker, when a check first needs them
        (root never does)."""
        return {guest.vmid: guest for guest in self._guests}

    def privileges(self, path: str) -> dict[str, bool]:
        return self.store.permissions(self.auth, path, self.guests)

    def has(self, path: str, privs: Sequence[str], *, any_of: bool = False) -> bool:
        """RPCEnvironment.pm `check`/`check_any` with `noerr`."""
        if self.root:
            return True
        held = self.privileges(path)
        found = [priv in held for priv in privs]
        return any(found) if any_of else all(found)

    def require(self, path: str, privs: Sequence[str], *, any_of: bool = False) -> None:
        """RPCEnvironment.pm `check`/`check_any`: the 403 naming what is missing."""
        if self.root:
            return
        held = self.privileges(path)
        if any_of:
            if not any(priv in held for priv in privs):
                raise perm_error(f"{path}, {'|'.join(privs)}")
            return
        for priv in privs:
            if priv not in held:
                raise perm_error(f"{path}, {priv}")

    def api2(self, permissions: Mapping[str, Any] | None, params: Mapping[str, object]) -> None:
        """`check_api2_permissions` for a method's `permissions` and the request's parameters."""
        if self.root:
            return
        if permissions is None:
            raise perm_error("user != root@pam")
        if permissions.get("user") in ("all", "world"):
            return
        check = permissions.get("check")
        if not check:
            raise perm_error()
        self._exec(check, params, noerr=False)

    def _exec(self, check: Sequence[Any], params: Mapping[str, object], *, noerr: bool) -> bool:
        """`exec_api2_perm_check`: True, False (with `noerr`) or the 403."""
        test = check[0]
        if test == "and":
            return all(self._exec(sub, params, noerr=noerr) for sub in check[1:])
        if test == "or":
            if any(self._exec(sub, params, noerr=True) for sub in check[1:]):
                return True
            if noerr:
                return False
            raise perm_error()
        if test == "perm":
            return self._perm(check, params, noerr=noerr)
        if test == "userid-param":
            return self._userid_param(str(check[1]), params, noerr=noerr)
        # perm-modify, userid-group and anything else: not modelled (see the module doc).
        if noerr:
            return False
        raise perm_error()

    def _perm(self, check: Sequence[Any], params: Mapping[str, object], *, noerr: bool) -> bool:
        """`["perm", path, [privs], options...]`."""
        options = dict(zip(check[3::2], check[4::2], strict=False))
        required = options.get("require_param")
        if required and params.get(str(required)) is None:
            return False
        path = normalize_path(_fill(str(check[1]), params)) or str(check[1])
        privs = [str(priv) for priv in check[2]]
        any_of = bool(options.get("any"))
        if noerr:
            return self.has(path, privs, any_of=any_of)
        self.require(path, privs, any_of=any_of)
        return True

    def _userid_param(self, subtest: str, params: Mapping[str, object], *, noerr: bool) -> bool:
        """`["userid-param", "self" | "Realm.AllocateUser"]` on the `userid` parameter."""
        userid = str(params.get("userid", ""))
        if subtest == "self" and userid == self.auth:
            return True
        if subtest == "Realm.AllocateUser":
            path = f"/access/realm/{userid.rpartition('@')[2]}"
            if noerr:
                return self.has(path, ["Realm.AllocateUser"])
            self.require(path, ["Realm.AllocateUser"])
            return True
        if noerr:
            return False
        raise perm_error()


def check_request(
    store: AccessStore,
    auth: str,
    guests: Iterable[Guest],
    *,
    method: str,
    template: str,
    params: Mapping[str, object],
) -> None:
    """The 403 for `auth` calling `method` on `template` with `params`, if PVE would refuse
    it; a method the index lacks is root-only (never silently allowed)."""
    checker = Checker(store, auth, guests)
    if checker.root:
        return
    endpoint = load_index().endpoint(method, template)
    if endpoint is None:
        raise perm_error("user != root@pam")
    checker.api2(endpoint.permissions, params)


def audited(store: AccessStore, auth: str, guests: Iterable[Guest]) -> list[Guest]:
    """The guests `auth` may see in a list: those it holds VM.Audit on, as the handlers of
    pve-manager's `/cluster/resources` (Cluster.pm) and qemu-server's/pve-container's
    `vmlist` filter with `$rpcenv->check($authuser, "/vms/$vmid", ['VM.Audit'], 1)`."""
    guests = list(guests)
    checker = Checker(store, auth, guests)
    return [g for g in guests if checker.has(f"/vms/{g.vmid}", ["VM.Audit"])]
