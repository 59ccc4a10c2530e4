"""The access toolset end to end: the MCP SDK client, the gateway and a simulator.

The declared examples and rejects run in test_examples.py; these are what one call cannot
show: the issue's scenario (a user and a group, a role on a pool, what the user may then
do, the revoke), plans that show the diff, no partial change, and an API token's secret
that reaches the person through elicitation and nothing else: no tool result, no audit
record, no log line; without elicitation nothing is created, and a person who does not
take the secret leaves no token behind.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from pvemcp.simulator.server import SimulatorHandle
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway, read_audit
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

Answer = Callable[[ElicitRequestParams], ElicitResult]


class Person:
    """The human at the client: approves confirmations and answers a secret's hand-over as
    `on_secret` says, keeping what they were shown."""

    def __init__(self, on_secret: Answer) -> None:
        self.on_secret = on_secret
        self.shown: list[str] = []

    async def on_elicit(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        schema: dict[str, Any] = params.requested_schema  # type: ignore[union-attr]
        if "approve" in schema["properties"]:
            return ElicitResult(action="accept", content={"approve": True})
        self.shown.append(params.message)
        return self.on_secret(params)


def stores(params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"stored": True})


def declines(params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="decline")


@pytest.fixture
async def person_client(
    own_sim: SimulatorHandle, audit_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Client, Person]]:
    """A client that supports elicitation, with its person, on a gateway over `own_sim`."""
    person = Person(getattr(request, "param", stores))
    gateway = make_gateway({"demo": cluster_for(own_sim)}, audit_path, (own_sim.token_secret,))
    server = build_mcp_server(gateway, local_principal)
    try:
        async with Client(server, mode="legacy", elicitation_callback=person.on_elicit) as c:
            yield c, person
    finally:
        await gateway.aclose()


Caller = Callable[..., Awaitable[CallToolResult]]


def caller(client: Client) -> Caller:
    async def run(tool: str, **arguments: Any) -> CallToolResult:
        return await client.call_tool(tool, arguments)

    return run


async def test_scenario_user_group_role_on_pool_check_revoke(
    person_client: tuple[Client, Person], own_sim: SimulatorHandle
) -> None:
    run = caller(person_client[0])
    ok(await run("proxmox_access_update", kind="group", action="create", id="qa"))
    ok(
        await run(
            "proxmox_access_update",
            kind="user",
            action="create",
            id="erin@pve",
            groups=["qa"],
            firstname="Erin",
        )
    )
    (user,) = ok(await run("proxmox_access_list", kind="users", id="erin@pve"))["items"]
    assert user["groups"] == ["qa"] and user["name"] == "Erin"

    before = ok(await run("proxmox_access_check", who="erin@pve", path="/vms/106"))
    assert before["privileges"] == [] and before["grants"] == []
    granted = ok(
        await run("proxmox_acl_grant", path="/pool/dev", roles=["PVEVMUser"], groups=["qa"])
    )
    assert granted["changes"] == [
        {"field": "acl", "before": [], "after": ["/pool/dev: group qa PVEVMUser"]}
    ]
    check = ok(
        await run("proxmox_access_check", who="erin@pve", path="/vms/106", privilege="VM.PowerMgmt")
    )
    assert check["allowed"] is True
    assert "VM.Console" in check["privileges"] and "VM.Allocate" not in check["privileges"]
    assert check["grants"] == ["/pool/dev: group qa PVEVMUser"]  # through the pool
    elsewhere = ok(await run("proxmox_access_check", who="erin@pve", path="/vms/100"))
    assert elsewhere["privileges"] == []

    plan = ok(
        await run(
            "proxmox_acl_revoke", path="/pool/dev", roles=["PVEVMUser"], groups=["qa"], dry_run=True
        )
    )["plan"]
    assert plan["changes"] == [
        {"field": "acl", "before": ["/pool/dev: group qa PVEVMUser"], "after": []}
    ]
    assert any("VM.PowerMgmt" in w for w in plan["warnings"])
    ok(await run("proxmox_acl_revoke", path="/pool/dev", roles=["PVEVMUser"], groups=["qa"]))
    after = ok(
        await run("proxmox_access_check", who="erin@pve", path="/vms/106", privilege="VM.PowerMgmt")
    )
    assert after["allowed"] is False and after["privileges"] == []
    assert ("group", "qa") not in {k for v in own_sim.state.access.acl.values() for k in v}


async def test_revoke_plan_names_what_a_user_loses(session: Session) -> None:
    plan = ok(
        await call(
            session,
            "proxmox_acl_revoke",
            path="/",
            roles=["PVEAuditor"],
            users=["bob@pve"],
            dry_run=True,
        )
    )["plan"]
    assert plan["changes"] == [
        {"field": "acl", "before": ["/: user bob@pve PVEAuditor"], "after": []}
    ]
    holds = next(w for w in plan["warnings"] if w.startswith("bob@pve holds on /"))
    assert "Sys.Audit" in holds
    assert session.writes() == []


async def test_pool_members_before_and_after(session: Session) -> None:
    plan = ok(
        await call(
            session,
            "proxmox_pool_update",
            pool="dev",
            action="add",
            vmids=[100, 102],
            allow_move=True,
            dry_run=True,
        )
    )["plan"]
    assert plan["changes"][0] == {
        "field": "guests",
        "before": [106, 107, 204],
        "after": [100, 102, 106, 107, 204],
    }
    assert plan["warnings"] == ["guest 100 leaves pool 'prod'"]
    assert plan["target"]["pool"] == "dev"
    ok(
        await call(
            session, "proxmox_pool_update", pool="dev", action="add", vmids=[100, 102],
            allow_move=True,
        )
    )  # fmt: skip
    (prod,) = ok(await call(session, "proxmox_pool_list", pool="prod"))["pools"]
    assert [g["vmid"] for g in prod["guests"]] == [101, 104, 105]
    assert prod["storages"] == ["nfs-backup"]
    (dev,) = ok(await call(session, "proxmox_pool_list", pool="dev"))["pools"]
    assert [g["vmid"] for g in dev["guests"]] == [100, 102, 106, 107, 204]


async def test_a_bad_member_changes_nothing(session: Session) -> None:
    error = refused(
        await call(session, "proxmox_pool_update", pool="dev", action="add", vmids=[102, 100])
    )
    assert (error["code"], error["field"]) == ("precondition_failed", "allow_move")
    error = refused(await call(session, "proxmox_pool_delete", pool="prod"))
    assert error["field"] == "pool" and "guest 100" in error["message"]
    assert session.writes() == []


async def test_token_secret_goes_to_the_person_only(
    person_client: tuple[Client, Person],
    own_sim: SimulatorHandle,
    audit_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, person = person_client
    result = await client.call_tool(
        "proxmox_token_create", {"user": "carol@pve", "name": "ci", "comment": "CI"}
    )
    created = ok(result)
    assert created == {
        "tokenid": "carol@pve!ci",
        "privsep": True,
        "comment": "CI",
        "delivered": "to the person",
    }
    token = own_sim.state.access.token("carol@pve!ci")
    assert token is not None
    (shown,) = person.shown
    assert token.secret in shown and "PVEAPIToken=carol@pve!ci=<secret>" in shown
    assert re.fullmatch(r"[0-9a-f-]{36}", token.secret)
    assert token.secret not in str(result.content) and token.secret not in str(created)
    records = read_audit(audit_path)
    phases = [r["phase"] for r in records if r["what"]["tool"] == "proxmox_token_create"]
    assert phases == ["intent", "outcome"]
    assert token.secret not in audit_path.read_text()
    out, err = capfd.readouterr()
    assert token.secret not in out + err
    assert all(token.secret not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("person_client", [declines], indirect=True)
async def test_a_secret_not_taken_leaves_no_token(
    person_client: tuple[Client, Person], own_sim: SimulatorHandle
) -> None:
    client, person = person_client
    error = error_of(
        await client.call_tool("proxmox_token_create", {"user": "carol@pve", "name": "ci"})
    )
    assert error is not None and error["code"] == "secret_not_delivered"
    assert len(person.shown) == 1
    assert own_sim.state.access.token("carol@pve!ci") is None


async def test_without_elicitation_nothing_is_created(session: Session) -> None:
    error = refused(await call(session, "proxmox_token_create", user="carol@pve", name="ci"))
    assert error["code"] == "secret_handover_unavailable"
    assert "Proxmox web UI" in error["hint"]
    asked = refused(
        await call(session, "proxmox_token_create", user="carol@pve", name="ci", show_secret=True)
    )
    assert (asked["code"], asked["field"]) == ("invalid_argument", "show_secret")
    assert "never returned to the model" in asked["message"]
    assert session.writes() == []
    assert session.sim.state.access.token("carol@pve!ci") is None


async def test_no_back_channel_no_token(own_sim: SimulatorHandle, audit_path: Path) -> None:
    """A 2026-07-28 client with elicitation still cannot be pushed one mid-request."""
    person = Person(stores)
    gateway = make_gateway({"demo": cluster_for(own_sim)}, audit_path)
    server = build_mcp_server(gateway, local_principal)
    try:
        async with Client(server, elicitation_callback=person.on_elicit) as client:
            result = await client.call_tool(
                "proxmox_token_create", {"user": "carol@pve", "name": "ci"}
            )
    finally:
        await gateway.aclose()
    error = error_of(result)
    assert error is not None and error["code"] == "secret_handover_unavailable"
    assert person.shown == []
    assert own_sim.state.access.token("carol@pve!ci") is None


async def test_delete_user_plan_lists_lost_access(session: Session) -> None:
    plan = ok(
        await call(session, "proxmox_access_delete", kind="user", id="bob@pve", dry_run=True)
    )["plan"]
    assert plan["changes"] == [
        {
            "field": "acl",
            "before": ["/: token bob@pve!monitoring PVEAuditor", "/: user bob@pve PVEAuditor"],
            "after": [],
        }
    ]
    assert "its API tokens stop working: monitoring" in plan["warnings"]
    assert "it leaves groups ops" in plan["warnings"]


async def test_grant_plan_replaces_an_entry_it_changes(session: Session) -> None:
    plan = ok(
        await call(
            session,
            "proxmox_acl_grant",
            path="/storage/nfs-backup/",
            roles=["PVEDatastoreUser", "PVEAuditor"],
            groups=["ops"],
            dry_run=True,
        )
    )["plan"]
    assert plan["changes"] == [
        {
            "field": "acl",
            "before": ["/storage/nfs-backup: group ops PVEDatastoreUser (not propagated)"],
            "after": [
                "/storage/nfs-backup: group ops PVEAuditor",
                "/storage/nfs-backup: group ops PVEDatastoreUser",
            ],
        }
    ]
    assert plan["calls"][0]["params"]["path"] == "/storage/nfs-backup"
