"""The generic API tools end to end: the MCP SDK client, the gateway and a fresh simulator
each. The declared examples and rejects run in test_examples.py; these are issue 13's
story (an agent that knows nothing finds how to set a VM's description and does it), its
bad inputs with nothing sent, the per-call tier, endpoint rules in policy (a rule on a
typed tool reaches the generic call), and that no credential comes back.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from pvemcp.config import ClusterConfig
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_report import build_report
from pvemcp.policy.evidence import EvidenceStore, blob_path
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier
from pvemcp.proxmox.rest import RestBackend
from pvemcp.pveapi import load_index, tier_floor
from pvemcp.pveapi.index import data_path
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import catalogue, tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for
from tests.e2e.test_client_schema import RecordingBackend
from tests.pveschema import schema_dir
from tests.tools.calls import call, ok, refused
from tests.tools.test_catalogue import TOOLS
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio

CONFIG = "/nodes/pve1/qemu/100/config"  # web01, running, pool prod, tags prod;web
OLDER_APIDOC = schema_dir() / "pve-9.1-apidoc.json"


@asynccontextmanager
async def gateway_session(
    tmp_path: Path,
    rules: str = "",
    toolsets: tuple[str, ...] | None = None,
    *,
    evidence: EvidenceStore | None = None,
    **cluster: Any,
) -> AsyncIterator[Session]:
    """A client on a gateway over a fresh simulator, with the operator profile plus
    `rules` (a policy file's text), the configured `toolsets` (None: all) and `cluster`
    settings."""
    recorders: list[RecordingBackend] = []

    def factory(cluster: ClusterConfig) -> RecordingBackend:
        recorders.append(RecordingBackend(RestBackend(cluster)))
        return recorders[-1]

    policy_file = None
    if rules:
        policy_file = tmp_path / "policy.toml"
        policy_file.write_text(rules)
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as sim:
        gateway = Gateway(
            tools=catalogue(toolsets),
            clusters=ClusterPool({"demo": cluster_for(sim, **cluster)}, backend_factory=factory),
            policy=load_policy(
                profile="operator",
                profile_subjects=["local"],
                file=policy_file,
                known_tools=tier_map(),
            ),
            audit=AuditLog(tmp_path / "audit.jsonl"),
            redactor=Redactor((sim.token_secret,)),
            evidence=evidence,
        )
        try:
            async with Client(build_mcp_server(gateway, local_principal)) as client:
                yield Session(client, recorders, sim)
        finally:
            await gateway.aclose()


def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


async def test_an_agent_that_knows_nothing_sets_a_vms_description(tmp_path: Path) -> None:
    """Issue 13's "done when": from the default toolsets, through MCP only."""
    async with gateway_session(tmp_path, toolsets=("core", "guests")) as session:
        listed = {tool.name for tool in (await session.client.list_tools()).tools}
        assert "proxmox_api_search" not in listed
        ok(await call(session, "proxmox_toolset_enable", toolset="api"))

        found = ok(
            await call(session, "proxmox_api_search", query="how do I set a VM's description")
        )
        assert size(found) < 1600, "a few hundred tokens"
        top = found["endpoints"][0]
        assert (top["method"], top["path"]) == ("PUT", "/nodes/{node}/qemu/{vmid}/config")
        assert "description" in top["summary"]

        described = ok(await call(session, "proxmox_api_describe", method="PUT",
                                  path=top["path"], match="description"))  # fmt: skip
        assert described["params"] == {"description": "string, <=8192 chars"}
        assert described["tier"] == "write" and described["task"] is False
        assert "VM.Config.Options" in described["permission"]

        done = ok(await call(session, "proxmox_api_call", method="PUT", path=CONFIG,
                             params={"description": "the public web server"}))  # fmt: skip
        assert done["path"] == CONFIG
        assert [w for w in session.writes()] == [f"PUT {CONFIG}"]

        config = ok(await call(session, "proxmox_api_read", path=CONFIG))
        assert config["data"]["description"] == "the public web server"
    intent = next(r for r in audit_records(tmp_path) if r["phase"] == "intent")
    assert intent["what"]["tool"] == "proxmox_api_call" and intent["what"]["tier"] == "write"
    assert intent["where"]["target"]["calls"][0]["template"] == "/nodes/{node}/qemu/{vmid}/config"


async def test_describe_is_capped_and_says_so(session: Session) -> None:
    described = ok(await call(session, "proxmox_api_describe", method="PUT",
                              path="/nodes/pve1/qemu/100/config"))  # fmt: skip
    assert size(described) < 2400, "a few hundred tokens for a method of 88 parameters"
    assert described["params_total"] == 88 and described["params_more"] == 88 - 16
    assert "narrow with match" in described["note"]
    stop = ok(await call(session, "proxmox_api_describe", method="POST",
                         path="/nodes/{node}/qemu/{vmid}/status/stop"))  # fmt: skip
    assert stop["tier"] == "destructive" and stop["task"] is True


BAD = [
    ("POST", "/nodes/pve1/qemu/100/snapshots", None, "path", "snapshot"),
    ("DELETE", "/version", None, "method", "it has GET"),
    ("PUT", CONFIG, {"cores": "four"}, "params.cores", "must be an integer"),
    ("PUT", CONFIG, {"descripton": "x"}, "params.descripton", "description"),
    ("PUT", CONFIG, {"vmid": 101}, "params.vmid", "given by the path"),
    ("PUT", CONFIG, {"description": {"text": "x"}}, "params.description", "got an object"),
    ("PUT", "/nodes/pve1/qemu/100/../101/config", None, "path", "traversal"),
    ("PUT", "/nodes/pve1/qemu/%2e%2e/config", None, "path", "encoded"),
    ("PUT", "/nodes/pve1/qemu//100/config", None, "path", "traversal"),
    ("PUT", "/nodes/pve1/qemu/100/config?description=x", None, "path", "query"),
    ("POST", "/access/ticket", {"username": "root@pam", "password": "x"}, "path", "credential"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{m} {p}" for m, p, *_ in BAD])
async def test_bad_calls_are_refused_with_nothing_sent(
    session: Session, case: tuple[str, str, Any, str, str]
) -> None:
    method, path, params, field, said = case
    arguments: dict[str, Any] = {"method": method, "path": path}
    if params is not None:
        arguments["params"] = params
    error = refused(await call(session, "proxmox_api_call", **arguments, dry_run=True))
    assert error["field"] == field, error
    assert said in error["message"] + error["hint"], error
    assert session.calls == [], "checked against the index alone: no request at all"


async def test_a_guest_on_another_node_is_refused_before_sending(session: Session) -> None:
    error = refused(await call(session, "proxmox_api_call", method="PUT",
                               path="/nodes/pve2/qemu/100/config",
                               params={"description": "x"}))  # fmt: skip
    assert error["field"] == "path" and "/nodes/pve1/qemu/100" in error["hint"]
    assert session.writes() == []


async def test_an_escape_endpoint_needs_a_rule_naming_the_caller(session: Session) -> None:
    error = refused(await call(session, "proxmox_api_call", method="POST",
                               path="/nodes/pve1/execute", params={"commands": "[]"}))  # fmt: skip
    assert error["code"] == "denied" and "builtin.no-escape" in error["details"]["rules"]
    read = refused(await call(session, "proxmox_api_read",
                              path="/nodes/pve1/qemu/100/agent/file-read",
                              params={"file": "/etc/shadow"}))  # fmt: skip
    assert read["code"] == "denied"
    assert session.calls == []


async def test_no_credential_comes_back(session: Session, tmp_path: Path) -> None:
    ok(await call(session, "proxmox_api_call", method="PUT", path=CONFIG,
                  params={"cipassword": "hunter2-secret"}))  # fmt: skip
    config = ok(await call(session, "proxmox_api_read", path=CONFIG))
    assert "hunter2-secret" not in json.dumps(config)
    assert config["data"].get("cipassword") in (None, "[REDACTED]", "**********")
    token = refused(await call(session, "proxmox_api_call", method="POST",
                               path="/access/users/root@pam/token/agent"))  # fmt: skip
    assert token["code"] == "unsupported" and "token secret" in token["message"]
    assert "hunter2-secret" not in (tmp_path / "audit.jsonl").read_text()


async def test_a_read_pages_a_list(session: Session) -> None:
    first = ok(await call(session, "proxmox_api_read", path="/cluster/resources",
                          params={"type": "vm"}, limit=5))  # fmt: skip
    assert len(first["data"]) == 5 and first["next_offset"] == 5 and first["total"] > 5
    rest = ok(await call(session, "proxmox_api_read", path="/cluster/resources",
                         params={"type": "vm"}, offset=5, limit=100))  # fmt: skip
    assert "next_offset" not in rest
    vmids = {row["vmid"] for row in first["data"] + rest["data"]}
    assert len(vmids) == first["total"]


@pytest.mark.parametrize("spec", TOOLS, ids=lambda spec: spec.name)
def test_declared_endpoints_exist_and_the_tier_is_not_below_theirs(spec: AnySpec) -> None:
    """Every endpoint a tool declares is a method of PVE's API, and the tool's tier is at
    least the method's floor (a hard stop is destructive whichever tool sends it)."""
    index = load_index()
    for method, template in spec.api:
        assert index.endpoint(method, template), (
            f"{spec.name}: {method} {template} is not in the API"
        )
        floor = Tier(tier_floor(method, template))
        assert spec.tier.rank >= floor.rank, (
            f"{spec.name} is {spec.tier}, below {method} {template} ({floor}): raise its tier"
        )


async def test_a_typed_tools_planned_calls_carry_the_apis_template(tmp_path: Path) -> None:
    """An `api` rule written with the API's own template matches a snapshot rollback and
    delete: their plans named the template with the snapshot filled in before."""
    rules = """
    [[rules]]
    id = "no-rollback"
    effect = "deny"
    subjects = ["*"]
    api = ["POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback"]
    """
    async with gateway_session(tmp_path, rules.replace("\n    ", "\n")) as session:
        denied = refused(await call(session, "proxmox_snapshot_rollback", vmid=100,
                                    snapname="pre-upgrade"))  # fmt: skip
        assert denied["code"] == "denied" and denied["details"]["rules"] == ["no-rollback"]
        plan = ok(await call(session, "proxmox_snapshot_delete", vmid=100,
                             snapname="pre-upgrade", dry_run=True))["plan"]  # fmt: skip
        (planned,) = plan["calls"]
        assert planned["template"] == "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}"
        assert planned["path"] == "/nodes/pve1/qemu/100/snapshot/pre-upgrade"
        assert session.writes() == []


async def test_pool_rules_see_the_pool_a_call_changes(tmp_path: Path) -> None:
    rules = '[[rules]]\nid = "prod-pool-frozen"\neffect = "deny"\nsubjects = ["*"]\n'
    rules += 'pools = ["prod"]\ntiers = ["write", "destructive"]\n'
    async with gateway_session(tmp_path, rules) as session:
        denied = refused(await call(session, "proxmox_api_call", method="PUT", path="/pools",
                                    params={"poolid": "prod", "comment": "x"}))  # fmt: skip
        assert denied["code"] == "denied" and denied["details"]["rules"] == ["prod-pool-frozen"]
        ok(await call(session, "proxmox_api_call", method="PUT", path="/pools",
                      params={"poolid": "dev", "comment": "x"}))  # fmt: skip
        # A guest's write is decided on the guest's pool, read from /cluster/resources.
        guest = refused(await call(session, "proxmox_api_call", method="POST",
                                   path="/nodes/pve1/qemu/101/status/start"))  # fmt: skip
        assert guest["code"] == "denied"
        assert session.writes() == ["PUT /pools"]


async def test_the_generic_call_is_listed_for_whoever_policy_could_allow_some_call(
    tmp_path: Path, sim: SimulatorHandle
) -> None:
    """Its static tier (destructive) is only for the hints: a grant of write alone is
    enough to see it, and a read-only caller sees the reads only."""
    grant = (
        '[[rules]]\nid = "alice-api-writes"\neffect = "allow"\nsubjects = ["sub:alice"]\n'
        'tools = ["proxmox_api_call"]\ntiers = ["write"]\n'
    )
    (tmp_path / "policy.toml").write_text(grant)
    policy = load_policy(
        profile="read-only",
        profile_subjects=[],
        file=tmp_path / "policy.toml",
        known_tools=tier_map(),
    )
    gateway = Gateway(
        tools=catalogue(["api"]),
        clusters=ClusterPool({"demo": cluster_for(sim)}),
        policy=policy,
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor(),
    )
    alice = Principal("alice", "http")
    bob = Principal("bob", "http")
    assert {spec.name for spec in gateway.visible_specs(alice)} >= {
        "proxmox_api_read",
        "proxmox_api_call",
    }
    assert "proxmox_api_call" not in {spec.name for spec in gateway.visible_specs(bob)}
    assert "proxmox_api_read" in {spec.name for spec in gateway.visible_specs(bob)}
    await gateway.aclose()


async def test_a_configured_schema_is_what_calls_are_checked_against(tmp_path: Path) -> None:
    """A cluster whose PVE has no `description` on a VM's config (an index written as
    the generator writes it, here the shipped one less that parameter)."""
    data = json.loads(gzip.decompress(data_path("9.2").read_bytes()))
    del data["paths"]["/nodes/{node}/qemu/{vmid}/config"]["PUT"]["parameters"]["properties"][
        "description"
    ]
    schema = tmp_path / "pve-old.index.json"
    schema.write_text(json.dumps(data))
    async with gateway_session(tmp_path, api_schema=schema) as session:
        error = refused(await call(session, "proxmox_api_call", method="PUT", path=CONFIG,
                                   params={"description": "x"}))  # fmt: skip
        assert error["field"] == "params.description" and "unknown parameter" in error["message"]
        described = ok(await call(session, "proxmox_api_describe", method="PUT",
                                  path=CONFIG, match="desc"))  # fmt: skip
        assert described["params"] == {}
        # The typed tools' requests are checked against it too, when they are sent.
        typed = refused(await call(session, "proxmox_guest_config_update", vmid=100,
                                   values={"description": "x"}))  # fmt: skip
        assert typed["code"] == "invalid_argument" and "description" in typed["message"]
        assert session.writes() == []


async def test_a_schema_that_cannot_be_read_refuses_naming_the_setting(tmp_path: Path) -> None:
    schema = tmp_path / "broken.json"
    schema.write_text("{not json")
    async with gateway_session(tmp_path, api_schema=schema) as session:
        error = refused(await call(session, "proxmox_api_read", path=CONFIG))
        assert error["code"] == "schema_unavailable" and "api_schema" in error["message"]
        assert session.calls == []


@pytest.mark.skipif(not OLDER_APIDOC.is_file(), reason="../shared/pve-api is not here")
async def test_a_pve_9_1_apidoc_knows_no_9_2_method(tmp_path: Path) -> None:
    async with gateway_session(tmp_path, api_schema=OLDER_APIDOC) as session:
        error = refused(await call(session, "proxmox_api_read", path="/cluster/qemu"))
        assert error["field"] == "path" and "'qemu'" in error["message"]
        assert session.calls == []
        ok(await call(session, "proxmox_api_read", path="/cluster/resources"))


async def test_the_tier_is_the_calls_and_never_below_a_typed_tool(
    session: Session, tmp_path: Path
) -> None:
    # A POST, but a hard stop: destructive through either door, so it needs confirmation.
    stop = refused(await call(session, "proxmox_api_call", method="POST",
                              path="/nodes/pve1/qemu/100/status/stop"))  # fmt: skip
    assert stop["code"] == "confirmation_required"
    # A POST whose floor is write, but proxmox_guest_template (destructive) sends it.
    template = refused(await call(session, "proxmox_api_call", method="POST",
                                  path="/nodes/pve1/qemu/101/template"))  # fmt: skip
    assert template["code"] == "confirmation_required"
    # A config change is a write, unless it deletes an unused disk (PVE frees its volume).
    unused = refused(await call(session, "proxmox_api_call", method="PUT", path=CONFIG,
                                params={"delete": "unused0"}))  # fmt: skip
    assert unused["code"] == "confirmation_required"
    assert "deletes an unused disk's volume" in " ".join(unused["details"]["plan"]["warnings"])
    assert session.writes() == []
    # A plain start is a write: no confirmation, and the task is waited for.
    started = ok(await call(session, "proxmox_api_call", method="POST",
                            path="/nodes/pve1/qemu/101/status/start"))  # fmt: skip
    assert started["task_status"] == "stopped" and started["exitstatus"] == "OK"
    tiers = {
        (r["what"]["tool"], r["phase"], r["what"]["tier"])
        for r in audit_records(tmp_path)
        if r["what"].get("tool") == "proxmox_api_call"
    }
    assert ("proxmox_api_call", "intent", "write") in tiers
    assert ("proxmox_api_call", "record", "destructive") in tiers


ENDPOINT_DENY = """
[[rules]]
id = "no-config-by-api"
effect = "deny"
subjects = ["*"]
api = ["PUT /nodes/*/qemu/*/config"]

[[rules]]
id = "no-migrate"
effect = "deny"
subjects = ["*"]
tools = ["proxmox_guest_migrate"]

[[rules]]
id = "no-snapshots-on-pve2"
effect = "deny"
subjects = ["*"]
api = ["POST /nodes/pve2/*/*/snapshot"]

[[rules]]
id = "prod-writes-confirmed"
effect = "confirm"
subjects = ["*"]
tags = ["prod"]
tiers = ["write"]
"""


async def test_endpoint_rules_and_typed_tool_rules_reach_the_generic_call(
    tmp_path: Path,
) -> None:
    async with gateway_session(tmp_path, ENDPOINT_DENY) as session:
        # An `api` rule: decided on the endpoint before any request, planning's included.
        config = refused(await call(session, "proxmox_api_call", method="PUT", path=CONFIG,
                                    params={"description": "x"}))  # fmt: skip
        assert config["code"] == "denied" and config["details"]["rules"] == ["no-config-by-api"]
        assert session.calls == []
        # A deny on the typed tool also stops the same endpoint through the generic call.
        migrate = refused(await call(session, "proxmox_api_call", method="POST",
                                     path="/nodes/pve1/qemu/102/migrate",
                                     params={"target": "pve2", "online": 1}))  # fmt: skip
        assert migrate["code"] == "denied" and "no-migrate" in migrate["details"]["rules"]
        # An `api` rule applies to a typed tool's planned calls too, by concrete node.
        typed = refused(await call(session, "proxmox_snapshot_create", vmid=104,
                                   snapname="api-snap"))  # fmt: skip
        assert typed["code"] == "denied" and typed["details"]["rules"] == ["no-snapshots-on-pve2"]
        ok(await call(session, "proxmox_snapshot_create", vmid=102, snapname="api-snap"))
        # The target is resolved from the path: a tag rule confirms a write on a prod guest.
        prod = refused(await call(session, "proxmox_api_call", method="POST",
                                  path="/nodes/pve1/qemu/101/status/start"))  # fmt: skip
        assert prod["code"] == "confirmation_required"
        assert prod["details"]["plan"]["target"]["tags"] == ["prod", "web"]
        assert session.writes() == ["POST /nodes/pve1/qemu/102/snapshot"]


AGENT_BY_API = """
version = 1

[[rules]]
id = "agent-by-api"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_api_call", "proxmox_api_read"]
tiers = ["escape"]
"""


async def test_an_escape_endpoint_through_the_generic_tools_keeps_its_answer_as_evidence(
    tmp_path: Path,
) -> None:
    """A guest command run and read back through the generic tools (agent/exec and
    agent/exec-status, escape) is an escape call like proxmox_vm_exec: its answer is kept
    in the evidence store and referenced by the outcome record, or a reviewer would see
    what ran but never what it printed."""
    root = tmp_path / "evidence"
    agent = "/nodes/pve1/qemu/100/agent"
    async with gateway_session(tmp_path, AGENT_BY_API, evidence=EvidenceStore(root)) as session:
        started = ok(await call(session, "proxmox_api_call", method="POST", path=f"{agent}/exec",
                                params={"command": ["echo", "printed-in-the-guest"]}))  # fmt: skip
        pid = started["data"]["pid"]
        read = ok(await call(session, "proxmox_api_read", path=f"{agent}/exec-status",
                             params={"pid": pid}))  # fmt: skip
        assert read["data"]["out-data"] == "printed-in-the-guest\n"
    outcomes = [r for r in audit_records(tmp_path) if r["phase"] == "outcome"]
    assert [r["what"]["tool"] for r in outcomes] == ["proxmox_api_call", "proxmox_api_read"]
    for record in outcomes:
        (ref,) = record["outcome"]["evidence"]
        assert ref["kind"] == "content"
        kept = blob_path(root, ref["sha256"]).read_bytes()
        assert ref["bytes"] == len(kept)
    assert b"printed-in-the-guest" in kept, kept


async def test_the_review_report_lists_a_credential_grab(tmp_path: Path) -> None:
    """A model reaching for a credential through the generic call is refused whatever
    policy says: a reviewer must see that attempt among the refusals, as a denial."""
    async with gateway_session(tmp_path) as session:
        ticket = refused(await call(session, "proxmox_api_call", method="POST",
                                    path="/access/users/root@pam/token/agent"))  # fmt: skip
        assert ticket["code"] == "unsupported"
    report = build_report(audit_records(tmp_path))
    refusals = [(row.tool, row.status) for row in report.refusals]
    assert refusals == [("proxmox_api_call", "rejected:unsupported")], refusals
