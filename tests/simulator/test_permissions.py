"""Every request checked against its method's PVE permissions (simulator/permissions.py).

Over real HTTPS: a narrowed token is made through the API itself (a user, its token, ACL
entries), as an administrator would, and then used; the refusals are PVE's
`raise_perm_exc` wording (`Permission check failed (/vms/101, VM.PowerMgmt)`, 403).
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle

from .conftest import client_for, get_data, trust

pytestmark = pytest.mark.anyio


async def narrowed_token(
    admin: httpx2.AsyncClient,
    userid: str,
    grants: Iterable[tuple[str, str, bool]],
    *,
    privsep: bool = False,
) -> tuple[str, str]:
    """Make `userid` with an API token and the ACL entries (path, role, propagate) given to
    the user (or, with `privsep`, to both the user and the token); (token id, secret)."""
    response = await admin.post("/access/users", data={"userid": userid})
    assert response.status_code == 200, response.text
    response = await admin.post(f"/access/users/{userid}/token/gw", data={"privsep": int(privsep)})
    assert response.status_code == 200, response.text
    token = response.json()["data"]
    for path, role, propagate in grants:
        who = {"users": userid, **({"tokens": token["full-tokenid"]} if privsep else {})}
        data = {"path": path, "roles": role, "propagate": int(propagate), **who}
        response = await admin.put("/access/acl", data=data)
        assert response.status_code == 200, response.text
    return token["full-tokenid"], token["value"]


def token_client(sim: SimulatorHandle, tokenid: str, secret: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=sim.url + "/api2/json",
        verify=trust(sim),
        headers={"Authorization": f"PVEAPIToken={tokenid}={secret}"},
    )


AUDIT_AND_POWER_100 = (("/", "PVEAuditor", True), ("/vms/100", "PVEVMUser", False))


async def test_a_missing_privilege_is_a_403_naming_path_and_privilege(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    tokenid, secret = await narrowed_token(fresh_client, "ops@pve", AUDIT_AND_POWER_100)
    async with token_client(fresh_sim, tokenid, secret) as narrow:
        refused = await narrow.post("/nodes/pve1/qemu/101/status/start")
        assert refused.status_code == 403
        assert refused.json() == {
            "data": None,
            "message": "Permission check failed (/vms/101, VM.PowerMgmt)\n",
        }
        assert refused.reason_phrase == "Permission check failed (/vms/101, VM.PowerMgmt)"
        allowed = await narrow.post("/nodes/pve1/qemu/100/status/stop")
        assert allowed.status_code == 200, allowed.text
        # PVEAuditor on / propagates: reads everywhere.
        assert (await narrow.get("/nodes/pve1/qemu/101/config")).status_code == 200
        # An "any" check names every privilege it would accept, joined by |.
        refused = await narrow.put("/nodes/pve1/qemu/101/config", data={"description": "x"})
        assert refused.status_code == 403
        assert refused.json()["message"].startswith(
            "Permission check failed (/vms/101, VM.Config.Disk|VM.Config.CDROM|"
        )
        # A root-only method (no permissions in the schema).
        refused = await narrow.get("/cluster/backup-info")
        assert (refused.status_code, refused.json()["message"]) == (
            403,
            "Permission check failed (user != root@pam)\n",
        )
        # perm-modify is not modelled: refused for anyone but root, never let through.
        refused = await narrow.put("/access/acl", data={"path": "/", "roles": "NoAccess"})
        assert (refused.status_code, refused.json()["message"]) == (
            403,
            "Permission check failed\n",
        )


async def test_a_non_propagated_entry_stops_at_its_path(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    grants = (("/vms", "PVEVMUser", False), ("/nodes", "PVEAuditor", True))
    tokenid, secret = await narrowed_token(fresh_client, "dev@pve", grants)
    async with token_client(fresh_sim, tokenid, secret) as narrow:
        refused = await narrow.get("/nodes/pve1/qemu/100/config")
        assert (refused.status_code, refused.json()["message"]) == (
            403,
            "Permission check failed (/vms/100, VM.Audit)\n",
        )
        # The node audit propagates from /nodes.
        assert (await narrow.get("/nodes/pve1/status")).status_code == 200


async def test_privilege_separated_token_gets_the_intersection(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    tokenid, secret = await narrowed_token(
        fresh_client, "sep@pve", AUDIT_AND_POWER_100, privsep=True
    )
    # Take PowerMgmt away from the token only: the user keeps it, the token does not.
    response = await fresh_client.put(
        "/access/acl",
        data={"path": "/vms/100", "roles": "PVEVMUser", "tokens": tokenid, "delete": 1},
    )
    assert response.status_code == 200, response.text
    async with token_client(fresh_sim, tokenid, secret) as narrow:
        refused = await narrow.post("/nodes/pve1/qemu/100/status/stop")
        assert refused.json()["message"] == "Permission check failed (/vms/100, VM.PowerMgmt)\n"


async def test_lists_show_only_the_guests_the_caller_may_audit(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    grants = (("/vms/100", "PVEVMUser", False), ("/nodes", "PVEAuditor", True))
    tokenid, secret = await narrowed_token(fresh_client, "one@pve", grants)
    async with token_client(fresh_sim, tokenid, secret) as narrow:
        guests = await get_data(narrow, "/cluster/resources", type="vm")
        assert [g["vmid"] for g in guests] == [100]
        listed = await get_data(narrow, "/nodes/pve1/qemu")
        assert [g["vmid"] for g in listed] == [100]
    everything = await get_data(fresh_client, "/cluster/resources", type="vm")
    assert len(everything) > 1  # the demo token keeps full rights


async def test_an_unknown_or_wrong_token_secret_is_refused(
    fresh_sim: SimulatorHandle, fresh_client: httpx2.AsyncClient
) -> None:
    tokenid, _ = await narrowed_token(fresh_client, "x@pve", ())
    async with token_client(fresh_sim, tokenid, "wrong") as narrow:
        assert (await narrow.get("/version")).status_code == 401
    async with client_for(fresh_sim) as demo:
        assert (await demo.get("/version")).status_code == 200
