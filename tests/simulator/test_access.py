"""Pools, users, groups, roles, ACLs, tokens, realms and effective privileges.

Over real HTTPS against a fresh simulator each. What is checked against pve-access-control
and pve-manager's behaviour: the built-in roles as `create_roles` makes them, the refusals
worded as PVE's handlers die (with `lock_user_config`'s prefix), no partial change when one
item of a list fails, and `/access/permissions` computed as `RPCEnvironment::permissions`
does: propagation, a deeper entry replacing what was inherited, a user's own entry winning
over its groups', pool members inheriting the pool's roles, privilege-separated tokens
intersected with their user.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator.access import BUILTIN_ROLES

from .conftest import get_data

pytestmark = pytest.mark.anyio


async def _send(
    client: httpx2.AsyncClient, method: str, where: str, **params: Any
) -> tuple[int, str, Any]:
    if method in ("GET", "DELETE"):
        response = await client.request(method, where, params=params)
    else:
        response = await client.request(method, where, data=params)
    body = response.json()
    answer = body.get("data") if response.status_code == 200 else body
    return response.status_code, str(body.get("message", "")), answer


async def _privs(client: httpx2.AsyncClient, userid: str, path: str) -> set[str]:
    response = await client.get("/access/permissions", params={"userid": userid, "path": path})
    assert response.status_code == 200, response.text
    return set(response.json()["data"][path])


async def test_builtin_roles_are_pves() -> None:
    assert BUILTIN_ROLES["PVEVMUser"] == {
        "VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console",
        "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
        "VM.GuestAgent.FileWrite", "VM.PowerMgmt",
    }  # fmt: skip
    assert BUILTIN_ROLES["PVEAuditor"] == {
        "VM.Audit", "VM.GuestAgent.Audit", "Sys.Audit", "Datastore.Audit", "SDN.Audit",
        "Pool.Audit", "Mapping.Audit",
    }  # fmt: skip
    assert "Mapping.Modify" not in BUILTIN_ROLES["PVEAdmin"]
    assert "Sys.PowerMgmt" not in BUILTIN_ROLES["PVEAdmin"]
    assert {"Sys.PowerMgmt", "Permissions.Modify", "Realm.Allocate"} <= BUILTIN_ROLES[
        "Administrator"
    ]
    assert BUILTIN_ROLES["NoAccess"] == frozenset()
    assert BUILTIN_ROLES["PVETemplateUser"] == {"VM.Clone", "VM.Audit"}
    assert "PVESysUser" not in BUILTIN_ROLES  # Sys has no user privileges


async def test_seeded_pools_list_their_members(fresh_client: httpx2.AsyncClient) -> None:
    pools = await get_data(fresh_client, "/pools")
    assert [p["poolid"] for p in pools] == ["dev", "prod", "staging"]
    (prod,) = await get_data(fresh_client, "/pools", poolid="prod")
    ids = [m["id"] for m in prod["members"]]
    assert ids == ["qemu/100", "qemu/101", "qemu/104", "qemu/105", "storage/pve1/nfs-backup"]
    lxc = (await get_data(fresh_client, "/pools", poolid="dev", type="lxc"))[0]["members"]
    assert [m["vmid"] for m in lxc] == [204]
    status, message, _ = await _send(fresh_client, "GET", "/pools/nope")
    assert (status, message) == (500, "pool 'nope' does not exist\n")


async def test_pool_update_is_all_or_nothing(fresh_client: httpx2.AsyncClient) -> None:
    assert (await _send(fresh_client, "POST", "/pools", poolid="qa"))[0] == 200
    status, message, _ = await _send(fresh_client, "PUT", "/pools", poolid="qa", vms="102,100")
    assert status == 500
    assert message == (
        "update pools failed: VM 100 belongs already to pool 'prod' and 'allow-move' is not set\n"
    )
    (qa,) = await get_data(fresh_client, "/pools", poolid="qa")
    assert qa["members"] == []  # 102 was not added either
    await _send(fresh_client, "PUT", "/pools", poolid="qa", vms="100", **{"allow-move": 1})
    guests = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert next(g for g in guests if g["vmid"] == 100)["pool"] == "qa"
    status, message, _ = await _send(fresh_client, "PUT", "/pools", poolid="qa", vms="100")
    assert message == "update pools failed: VM 100 is already a pool member\n"
    status, message, _ = await _send(
        fresh_client, "PUT", "/pools", poolid="qa", storage="local", delete=1
    )
    assert message == "update pools failed: Storage 'local' is not a pool member\n"


async def test_pool_delete_refused_while_it_has_members(fresh_client: httpx2.AsyncClient) -> None:
    status, message, _ = await _send(fresh_client, "DELETE", "/pools", poolid="prod")
    assert (status, message) == (
        500,
        "delete pool failed: pool 'prod' is not empty (contains VM 100)\n",
    )
    await _send(fresh_client, "PUT", "/pools", poolid="prod", vms="100,101,104,105", delete=1)
    status, message, _ = await _send(fresh_client, "DELETE", "/pools/prod")
    assert message == (
        "delete pool failed: pool 'prod' is not empty (contains storage 'nfs-backup')\n"
    )
    await _send(fresh_client, "PUT", "/pools/prod", storage="nfs-backup", delete=1)
    assert (await _send(fresh_client, "DELETE", "/pools/prod"))[0] == 200
    acl = await get_data(fresh_client, "/access/acl")
    assert not [e for e in acl if e["path"] == "/pool/prod"]  # delete_pool_acl
    status, message, _ = await _send(fresh_client, "POST", "/pools", poolid="dev")
    assert message == "create pool failed: pool 'dev' already exists\n"
    status, message, _ = await _send(fresh_client, "POST", "/pools", poolid="x/y")
    assert message == "create pool failed: parent 'x' of pool 'x/y' does not exist\n"


async def test_users_groups_and_their_errors(fresh_client: httpx2.AsyncClient) -> None:
    status, message, _ = await _send(
        fresh_client, "POST", "/access/users", userid="erin@pve", groups="qa"
    )
    assert (status, message) == (500, "create user failed: no such group 'qa'\n")
    assert (await _send(fresh_client, "GET", "/access/users/erin@pve"))[1] == (
        "no such user ('erin@pve')\n"
    )
    await _send(fresh_client, "POST", "/access/groups", groupid="qa", comment="testers")
    await _send(fresh_client, "POST", "/access/users", userid="erin@pve", groups="qa,ops")
    user = await get_data(fresh_client, "/access/users/erin@pve")
    assert user["groups"] == ["ops", "qa"] and user["enable"] == 1
    brief = next(
        u for u in await get_data(fresh_client, "/access/users") if u["userid"] == "erin@pve"
    )
    assert "groups" not in brief and "tokens" not in brief  # only with full, as User.pm
    users = await get_data(fresh_client, "/access/users", full=1)
    full = next(u for u in users if u["userid"] == "erin@pve")
    assert (full["groups"], full["tokens"], full["realm-type"]) == ("ops,qa", [], "pve")
    await _send(fresh_client, "PUT", "/access/users/erin@pve", groups="admins")
    assert (await get_data(fresh_client, "/access/users/erin@pve"))["groups"] == ["admins"]
    status, message, _ = await _send(fresh_client, "POST", "/access/users", userid="erin")
    assert status == 400 and message == "Parameter verification failed.\n"
    status, message, _ = await _send(fresh_client, "POST", "/access/groups", groupid="ops")
    assert message == "create group failed: group 'ops' already exists\n"
    await _send(fresh_client, "DELETE", "/access/groups/admins")
    assert (await get_data(fresh_client, "/access/users/erin@pve"))["groups"] == []
    assert not [e for e in await get_data(fresh_client, "/access/acl") if e["ugid"] == "admins"]


async def test_acl_grant_and_revoke_with_pves_refusals(fresh_client: httpx2.AsyncClient) -> None:
    before = await get_data(fresh_client, "/access/acl")
    status, message, _ = await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/100", roles="PVEVMUser,Bogus",
        users="carol@pve",
    )  # fmt: skip
    assert (status, message) == (500, "ACL update failed: role 'Bogus' does not exist\n")
    status, message, _ = await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/100", roles="PVEVMUser",
        users="carol@pve,nobody@pve",
    )  # fmt: skip
    assert message == "ACL update failed: user 'nobody@pve' does not exist\n"
    assert await get_data(fresh_client, "/access/acl") == before  # nothing half-applied
    status, _, data = await _send(fresh_client, "PUT", "/access/acl", path="/vms/100", roles="x")
    assert status == 400 and set(data["errors"]) == {"users", "groups", "tokens"}
    status, _, data = await _send(
        fresh_client, "PUT", "/access/acl", path="/bogus", roles="NoAccess", users="carol@pve"
    )
    assert data["errors"] == {"path": "invalid ACL path '/bogus'"}
    await _send(
        fresh_client, "PUT", "/access/acl", path="//vms/100/", roles="PVEVMUser",
        users="carol@pve", propagate=0,
    )  # fmt: skip
    added = [e for e in await get_data(fresh_client, "/access/acl") if e not in before]
    assert added == [
        {"path": "/vms/100", "type": "user", "ugid": "carol@pve", "roleid": "PVEVMUser",
         "propagate": 0}
    ]  # fmt: skip
    await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/100", roles="PVEVMUser",
        users="carol@pve", delete=1,
    )  # fmt: skip
    assert await get_data(fresh_client, "/access/acl") == before


async def test_permissions_propagate_override_and_come_from_pools(
    fresh_client: httpx2.AsyncClient,
) -> None:
    # carol is in `developers`, PVEVMAdmin on /pool/dev: dev's guests get it, others not.
    assert "VM.Allocate" in await _privs(fresh_client, "carol@pve", "/vms/106")
    assert await _privs(fresh_client, "carol@pve", "/vms/100") == set()
    # bob: PVEAuditor on / (his own entry) and PVEVMUser on /pool/prod through `ops`.
    assert "VM.PowerMgmt" in await _privs(fresh_client, "bob@pve", "/vms/100")
    assert "VM.PowerMgmt" not in await _privs(fresh_client, "bob@pve", "/vms/106")
    # a non-propagated entry applies on its path only
    assert "Datastore.AllocateSpace" in await _privs(fresh_client, "bob@pve", "/storage/nfs-backup")
    # NoAccess on a deeper path replaces everything inherited
    await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/100", roles="NoAccess", users="bob@pve"
    )
    assert await _privs(fresh_client, "bob@pve", "/vms/100") == set()
    # root@pam has every privilege; an unknown user none
    assert await _privs(fresh_client, "root@pam", "/") == set(BUILTIN_ROLES["Administrator"])
    assert await _privs(fresh_client, "nobody@pve", "/") == set()
    effective = await get_data(fresh_client, "/access/permissions", userid="carol@pve")
    assert "/vms/106" in effective and "/" not in effective


async def test_privsep_token_is_intersected_with_its_user(
    fresh_client: httpx2.AsyncClient,
) -> None:
    # bob@pve!monitoring: PVEAuditor on /, and bob is PVEVMUser on prod's guests.
    token = await _privs(fresh_client, "bob@pve!monitoring", "/vms/100")
    assert token == BUILTIN_ROLES["PVEAuditor"]
    await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/102", roles="PVEVMAdmin",
        tokens="bob@pve!monitoring",
    )  # fmt: skip
    # the token's own grant does not reach beyond what bob himself may do on /vms/102
    narrowed = await _privs(fresh_client, "bob@pve!monitoring", "/vms/102")
    assert narrowed == {"VM.Audit", "VM.GuestAgent.Audit"}
    # the gateway's own token has no privilege separation: root's rights
    gateway = await _privs(fresh_client, "root@pam!pvemcp", "/vms/100")
    assert gateway == set(BUILTIN_ROLES["Administrator"])


async def test_token_create_answers_the_secret_once(fresh_client: httpx2.AsyncClient) -> None:
    status, _, created = await _send(
        fresh_client, "POST", "/access/users/carol@pve/token/ci", comment="ci"
    )
    assert status == 200
    assert created["full-tokenid"] == "carol@pve!ci"
    assert created["info"] == {"privsep": 1, "comment": "ci"}
    assert len(created["value"]) == 36  # a UUID, as PVE::TokenConfig generates
    listed = await get_data(fresh_client, "/access/users/carol@pve/token")
    assert listed == [{"tokenid": "ci", "privsep": 1, "expire": 0, "comment": "ci"}]
    assert created["value"] not in str(await get_data(fresh_client, "/access/users", full=1))
    status, _, data = await _send(fresh_client, "POST", "/access/users/carol@pve/token/ci")
    assert status == 400 and data["errors"] == {"tokenid": "Token already exists."}
    await _send(fresh_client, "DELETE", "/access/users/carol@pve/token/ci")
    status, message, _ = await _send(fresh_client, "GET", "/access/users/carol@pve/token/ci")
    assert (status, message) == (500, "no such token 'ci' for user 'carol@pve'\n")


async def test_realms_read(fresh_client: httpx2.AsyncClient) -> None:
    realms = await get_data(fresh_client, "/access/domains")
    assert [(r["realm"], r["type"]) for r in realms] == [("pam", "pam"), ("pve", "pve")]
    assert (await _send(fresh_client, "GET", "/access/domains/ldap"))[1] == (
        "domain 'ldap' does not exist\n"
    )


async def test_destroying_a_guest_removes_its_acl(fresh_client: httpx2.AsyncClient) -> None:
    # qemu-server's destroy calls remove_vm_access, with or without purge.
    await _send(
        fresh_client, "PUT", "/access/acl", path="/vms/101", roles="PVEVMUser", users="carol@pve"
    )
    await _send(
        fresh_client, "PUT", "/access/acl", path="/vms", roles="PVEAuditor", users="carol@pve"
    )
    assert (await _send(fresh_client, "DELETE", "/nodes/pve1/qemu/101"))[0] == 200
    paths = {entry["path"] for entry in await get_data(fresh_client, "/access/acl")}
    assert "/vms/101" not in paths and "/vms" in paths
