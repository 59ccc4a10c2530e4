"""Per-caller PVE identity (issue 13 item 5): a principal mapped to a PVE API token of its
own (`[[clusters.NAME.identities]]`) has its calls sent with that token, through the MCP
SDK client, against the simulator over HTTPS.

The story: alice@pve's token holds PVEAuditor on /vms/101 and PVEVMUser on /vms/100, and
nothing else. `sub:alice` is mapped to it; bob is not mapped and uses the gateway token
(root@pam's, every right). Alice's guest list shows 100 and 101 only, her capabilities on
101 refuse power naming VM.PowerMgmt, and the power call that follows gets PVE's own 403;
bob sees every guest and may power 101. The audit names the token each call used, task
ownership holds with alice's user in the UPID, a mapping whose secret cannot be loaded
refuses its caller (never the gateway token in its place), a rotated token is picked up
after PVE's 401, and alice's secret appears in no result, log line or audit record.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from pvemcp.cli import main
from pvemcp.config import ClusterConfig, load_settings
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.secrets.commands import check
from pvemcp.secrets.manager import SecretsManager
from pvemcp.secrets.models import EnvCredentials, FileCredentials, IdentityMapping
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map
from pvemcp.transports.mcp_app import build_mcp_server
from tests.conftest import cluster_for, read_audit
from tests.secrets.test_canary import capture_logs, forms, log_stream  # noqa: F401 - fixture
from tests.simulator.conftest import client_for
from tests.simulator.test_permissions import narrowed_token
from tests.tools.calls import ok, refused

pytestmark = pytest.mark.anyio

ALICE_GRANTS = (("/vms/101", "PVEAuditor", False), ("/vms/100", "PVEVMUser", False))


@pytest.fixture(scope="module")
def own_sim() -> Iterator[SimulatorHandle]:
    """A private simulator: these tests add users and power guests."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


def secret_file(path: Path, token_id: str, secret: str) -> Path:
    """A credentials file as an operator writes it (mode 0600)."""
    path.write_text(f'token_id = "{token_id}"\ntoken_secret = "{secret}"\n')
    path.chmod(0o600)
    return path


@dataclass
class World:
    """The clients of three callers on one gateway, and what the test checks afterwards."""

    alice: Client
    bob: Client
    ghost: Client
    gateway: Gateway
    manager: SecretsManager
    token_id: str
    secret: str
    secret_path: Path
    audit_path: Path
    logs: io.StringIO


def identities(secret_path: Path) -> list[IdentityMapping]:
    return [
        IdentityMapping(
            name="alice",
            principal="sub:alice",
            credentials=FileCredentials(path=secret_path),
        ),
        IdentityMapping(
            name="ghosts",
            principal="group:ghosts",
            token_id="ghost@pve!gw",
            credentials=EnvCredentials(prefix="PVEMCP_TEST_GHOST_"),
        ),
    ]


@pytest.fixture
async def world(
    own_sim: SimulatorHandle, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    logs: io.StringIO = request.getfixturevalue("log_stream")
    user = f"alice{os.urandom(3).hex()}@pve"
    async with client_for(own_sim) as admin:
        token_id, secret = await narrowed_token(admin, user, ALICE_GRANTS)
    secret_path = secret_file(tmp_path / "alice.toml", token_id, secret)
    cluster = cluster_for(own_sim, identities=identities(secret_path))
    redactor = Redactor((own_sim.token_secret,))
    capture_logs(logs, redactor)
    audit_path = tmp_path / "audit.jsonl"
    policy = load_policy(
        profile="operator",
        profile_subjects=["sub:alice", "sub:bob", "group:ghosts"],
        file=None,
        known_tools=tier_map(),
    )
    async with SecretsManager({"demo": cluster}, redactor, retry_initial=30) as manager:
        gateway = Gateway(
            tools=all_tools(),
            clusters=ClusterPool({"demo": cluster}, secrets=manager),
            policy=policy,
            audit=AuditLog(audit_path),
            redactor=redactor,
        )

        def caller(principal: Principal) -> Client:
            return Client(build_mcp_server(gateway, lambda _ctx: principal))

        try:
            async with (
                caller(Principal("alice", "http", issuer="https://idp")) as alice,
                caller(Principal("bob", "http", issuer="https://idp")) as bob,
                caller(Principal("casper", "http", groups=frozenset({"ghosts"}))) as ghost,
            ):
                yield World(
                    alice, bob, ghost, gateway, manager, token_id, secret, secret_path,
                    audit_path, logs,
                )  # fmt: skip
        finally:
            await gateway.aclose()


def _vmids(answer: dict[str, Any]) -> list[int]:
    return sorted(row["vmid"] for row in answer["guests"])


def cluster_token(world: World) -> str | None:
    """The gateway token's id (bob's calls use it)."""
    return world.gateway.clusters.token_id("demo")


def _assert_secret_nowhere(world: World, *results: Any) -> None:
    """The canary check of tests/secrets: the token secret, nor an encoded form of it, in
    no tool result, audit record or log line."""
    places = {
        "results": json.dumps(results),
        "audit": world.audit_path.read_text(),
        "logs": world.logs.getvalue(),
    }
    assert places["logs"], "the logging setup captured nothing"
    for form in forms(world.secret):
        for where, text in places.items():
            assert form not in text, f"the mapped token's secret ({form!r}) leaked into {where}"


async def test_a_mapped_caller_acts_with_its_own_token(world: World) -> None:
    results: list[Any] = []
    mine = ok(await world.alice.call_tool("proxmox_guest_list", {}))
    everything = ok(await world.bob.call_tool("proxmox_guest_list", {}))
    results += [mine, everything]
    # PVE filters the list by the token's VM.Audit: alice sees her two guests only.
    assert _vmids(mine) == [100, 101]
    assert set(_vmids(everything)) > {100, 101}

    caps = ok(await world.alice.call_tool("proxmox_capabilities_list", {"vmid": 101}))
    results.append(caps)
    assert caps["pve_user"] == world.token_id
    assert "VM.Audit" in caps["privileges"]
    assert "VM.PowerMgmt" not in caps["privileges"]
    assert caps["refused"]["proxmox_guest_power"] == "pve: VM.PowerMgmt on /vms/101"
    bobs = ok(await world.bob.call_tool("proxmox_capabilities_list", {"vmid": 101}))
    results.append(bobs)
    assert bobs["pve_user"] != world.token_id
    assert "proxmox_guest_power" in bobs["allowed"]

    power = {"vmid": 101, "action": "start"}
    error = refused(await world.alice.call_tool("proxmox_guest_power", power))
    results.append(error)
    assert error["code"] == "permission_denied"
    assert "Permission check failed (/vms/101, VM.PowerMgmt)" in error["message"]

    records = read_audit(world.audit_path)
    used = {
        (r["who"]["sub"], r["what"]["tool"]): r["where"].get("pve_token_id")
        for r in records
        if r.get("where")
    }
    assert used[("alice", "proxmox_guest_list")] == world.token_id
    assert used[("alice", "proxmox_guest_power")] == world.token_id
    assert used[("bob", "proxmox_guest_list")] == cluster_token(world)
    _assert_secret_nowhere(world, *results)


async def test_the_read_cache_never_serves_one_token_to_another(world: World) -> None:
    """The same read by two callers within the cache's window: each gets its own token's
    answer (the cache is keyed by identity mapping and token id)."""
    async with anyio.create_task_group() as group:
        answers: dict[str, dict[str, Any]] = {}

        async def read(name: str, client: Client) -> None:
            answers[name] = ok(await client.call_tool("proxmox_guest_list", {}))

        for name, client in (("bob", world.bob), ("alice", world.alice)):
            group.start_soon(read, name, client)
    assert _vmids(answers["alice"]) == [100, 101]
    assert len(answers["bob"]["guests"]) > 2
    again = ok(await world.alice.call_tool("proxmox_guest_list", {}))
    assert _vmids(again) == [100, 101]


async def test_tasks_carry_the_callers_pve_user_and_stay_its_own(world: World) -> None:
    started = ok(
        await world.alice.call_tool("proxmox_guest_power", {"vmid": 100, "action": "shutdown"})
    )
    assert started["exitstatus"] == "OK", started
    upid = started["upid"]
    user = world.token_id.split("!")[0]
    assert f":{world.token_id}:" in upid, upid  # PVE writes the token's id into the UPID

    mine = ok(await world.alice.call_tool("proxmox_task_mine", {}))
    assert [(t["upid"], t["user"]) for t in mine["tasks"]] == [(upid, user)]
    assert ok(await world.bob.call_tool("proxmox_task_mine", {}))["total"] == 0
    error = refused(await world.bob.call_tool("proxmox_task_status", {"upid": upid}))
    assert error["code"] == "not_your_task"
    status = ok(await world.alice.call_tool("proxmox_task_status", {"upid": upid}))
    assert (status["user"], status["exitstatus"]) == (user, "OK")
    start = ok(await world.alice.call_tool("proxmox_guest_power", {"vmid": 100, "action": "start"}))
    assert start["exitstatus"] == "OK", start


async def test_an_unloadable_mapping_fails_closed(world: World) -> None:
    """The ghosts' env variable is not set: their calls are refused naming the mapping,
    and nothing is sent with the gateway token instead."""
    assert world.manager.identity("demo", "ghosts") is None
    assert world.manager.ready("demo")  # one caller's mapping does not fail the cluster
    error = refused(await world.ghost.call_tool("proxmox_guest_list", {}))
    assert error["code"] == "credentials_unavailable"
    assert "identity mapping 'ghosts'" in error["message"]
    assert "PVEMCP_TEST_GHOST_TOKEN_SECRET" in error["message"]  # where, never a value
    assert "nothing was sent to Proxmox" in error["message"]
    assert "never the gateway's" in error["hint"]
    caps = refused(await world.ghost.call_tool("proxmox_capabilities_list", {"vmid": 101}))
    assert caps["code"] == "credentials_unavailable"
    record = read_audit(world.audit_path)[-1]
    assert record["who"]["sub"] == "casper"
    assert record["where"]["pve_token_id"] == "ghost@pve!gw"
    assert record["outcome"]["error"] == "credentials_unavailable"


async def test_a_rotated_token_is_picked_up_after_a_401(
    world: World, own_sim: SimulatorHandle
) -> None:
    """Alice's token is replaced in its file and the old one deleted on PVE: her next
    call gets a 401, re-reads her source (not the cluster's) and succeeds with the new one."""
    assert ok(await world.alice.call_tool("proxmox_guest_list", {}))["total"] == 2
    user, _, old = world.token_id.partition("!")
    async with client_for(own_sim) as admin:
        made = await admin.post(f"/access/users/{user}/token/gw2", data={"privsep": 0})
        assert made.status_code == 200, made.text
        new = made.json()["data"]
        secret_file(world.secret_path, new["full-tokenid"], new["value"])
        gone = await admin.delete(f"/access/users/{user}/token/{old}")
        assert gone.status_code == 200, gone.text
    world.secret = new["value"]  # the canary check covers the new secret too
    caps = ok(await world.alice.call_tool("proxmox_capabilities_list", {"vmid": 100}))
    assert caps["pve_user"] == new["full-tokenid"]
    assert "VM.PowerMgmt" in caps["privileges"]
    assert "secret_rotated" in world.logs.getvalue()
    rotated = [
        json.loads(line)
        for line in world.logs.getvalue().splitlines()
        if '"secret_rotated"' in line
    ]
    assert {(r["cluster"], r["identity"], r["reason"]) for r in rotated} == {
        ("demo", "alice", "unauthorized")
    }
    _assert_secret_nowhere(world, caps)


def test_config_and_policy_explain_capabilities_for_a_mapped_subject(
    own_sim: SimulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`[[clusters.NAME.identities]]` in TOML, and `pvemcp policy explain --capabilities`
    answering for `--subject` / `--group` with the token their calls would use."""

    async def make() -> tuple[str, str]:
        async with client_for(own_sim) as admin:
            return await narrowed_token(admin, "clialice@pve", ALICE_GRANTS)

    token_id, secret = anyio.run(make)
    secret_path = secret_file(tmp_path / "alice.toml", token_id, secret)
    config = tmp_path / "pvemcp.toml"
    config.write_text(
        f'[clusters.demo]\napi_url = "{own_sim.url}"\ntoken_id = "{own_sim.token_id}"\n'
        f'token_secret = "{own_sim.token_secret}"\ntls = "fingerprint"\n'
        f'fingerprint = "{own_sim.fingerprint}"\n'
        "[[clusters.demo.identities]]\n"
        'name = "alice"\nprincipal = "group:auditors"\n'
        f'credentials = {{ source = "file", path = "{secret_path}" }}\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        '[policy]\nprofile = "operator"\nprofile_subjects = ["local", "group:auditors"]\n'
    )
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    argv = ["policy", "explain", "--capabilities", "--config", str(config)]
    args = ["--args", '{"vmid": 101}', "--tool", "proxmox_guest_power"]
    assert main([*argv, "--subject", "carol", "--group", "auditors", *args]) == 0
    out = capsys.readouterr().out
    assert f"subject 'carol' on /vms/101 (PVE identity {token_id})" in out
    assert "    proxmox_guest_power: pve: VM.PowerMgmt on /vms/101" in out
    assert main([*argv, *args]) == 0  # the local operator: the gateway token
    out = capsys.readouterr().out
    assert f"(PVE identity {own_sim.token_id})" in out
    assert "allowed:  proxmox_guest_power" in out
    assert secret not in out


def test_a_mapping_is_checked_when_the_config_loads(tmp_path: Path) -> None:
    base: dict[str, Any] = {"api_url": "https://pve1:8006"}
    mapping = {"name": "a", "principal": "sub:a", "credentials": {"source": "env"}}
    assert ClusterConfig(**base, identities=[mapping]).identities[0].matches("a", frozenset())
    for bad, words in (
        ({**mapping, "principal": "alice"}, "sub:NAME or group:NAME"),
        ({**mapping, "credentials": {"source": "inline"}}, "'env', 'file', 'vault'"),
        ({**mapping, "token_id": "alice"}, "user@realm!tokenid"),
        ({**mapping, "name": "a b"}, "letters, digits"),
    ):
        with pytest.raises(ValueError, match=words):
            ClusterConfig(**base, identities=[bad])
    with pytest.raises(ValueError, match="a name of its own"):
        ClusterConfig(**base, identities=[mapping, mapping])
    ssh = {"backend": "pvesh", "known_hosts": str(tmp_path / "kh")}
    with pytest.raises(ValueError, match="identities need the REST backend"):
        ClusterConfig(**base, ssh=ssh, identities=[mapping])


def test_secrets_check_lists_each_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pvemcp secrets check` loads every mapping's token too, and names the one that fails
    (its cluster then counts as failed), never printing a secret."""
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    secret = "5ec7e7c0-1234-4abc-9def-0123456789ab"
    good = secret_file(tmp_path / "alice.toml", "alice@pve!mcp", secret)
    config = tmp_path / "pvemcp.toml"
    config.write_text(
        '[clusters.prod]\napi_url = "https://pve1:8006"\ntoken_id = "gw@pve!gw"\n'
        'token_secret = "0f0f0f0f-1234-4abc-9def-0123456789ab"\n'
        "[[clusters.prod.identities]]\n"
        'name = "alice"\nprincipal = "sub:alice"\n'
        f'credentials = {{ source = "file", path = "{good}" }}\n'
        "[[clusters.prod.identities]]\n"
        'name = "ops"\nprincipal = "group:ops"\ntoken_id = "ops@pve!mcp"\n'
        'credentials = { source = "env", prefix = "PVEMCP_TEST_OPS_" }\n'
    )
    out = io.StringIO()
    assert check(load_settings(config), out=out) == 1
    text = out.getvalue()
    assert f"  identity alice (sub:alice): file {good}" in text
    assert "    api token: OK (alice@pve!mcp, secret loaded)" in text
    assert "  identity ops (group:ops): env PVEMCP_TEST_OPS_TOKEN_SECRET" in text
    assert "    FAILED: env: variable PVEMCP_TEST_OPS_TOKEN_SECRET is not set" in text
    assert text.rstrip().endswith("0 of 1 cluster(s) OK")
    assert secret not in text
