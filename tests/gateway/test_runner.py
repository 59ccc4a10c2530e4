"""Plans that carry their API calls, the default runner, and results that say the guest's
resulting state: against the simulator, and against a scripted PVE (real HTTPS) for the
HA-managed guests the simulator does not model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, SecretStr
from starlette.requests import Request
from starlette.responses import Response

from pvemcp.config import ClusterConfig, TlsMode
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.plan import ApiCall, Plan
from pvemcp.gateway.run import guest_state
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.certs import make_self_signed
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools
from pvemcp.tools.kit import (
    GuestRef,
    TaskOutcome,
    Tier,
    ToolContext,
    WaitInput,
    WriteInput,
    action,
    planners,
)
from tests.conftest import cluster_for, operator_policy, read_audit
from tests.proxmox.fake_pve import SECRET, TOKEN_ID, FakePve, bound_socket, pve_json

pytestmark = pytest.mark.anyio

LOCAL = Principal.local("memory")


# -- test tools declared the way a tool module declares them --------------------------


class ToggleArgs(GuestRef, WaitInput):
    pass


async def _plan_toggle(ctx: ToolContext, args: ToggleArgs) -> Plan:
    """Start a stopped guest, shut a running one down: the same arguments plan different
    calls depending on the guest's state."""
    row = await planners.resolve_guest(ctx, args)
    verb = "start" if row["status"] == "stopped" else "shutdown"
    return await planners.guest_action(ctx, args, verb, f"status/{verb}")


toggle = action(
    "test_toggle",
    title="toggle",
    description="Start a stopped guest or shut a running one down.",
    tier=Tier.DESTRUCTIVE,
    toolset="guests",
    input=ToggleArgs,
    output=TaskOutcome,
    planner=_plan_toggle,
)


class ConfigArgs(GuestRef, WriteInput):
    values: Annotated[dict[str, str | int], Field(default_factory=dict, max_length=20)]
    delete: Annotated[list[str], Field(default_factory=list)]


async def _plan_config(ctx: ToolContext, args: ConfigArgs) -> Plan:
    return await planners.guest_config_change(ctx, args, args.values, args.delete)


configure = action(
    "test_configure",
    title="configure",
    description="Change a guest's configuration.",
    tier=Tier.WRITE,
    toolset="guests",
    input=ConfigArgs,
    output=TaskOutcome,
    planner=_plan_config,
)


configure_confirmed = action(
    "test_configure_confirmed",
    title="configure, confirmed",
    description="Change a guest's configuration once a person approved the change.",
    tier=Tier.DESTRUCTIVE,
    toolset="guests",
    input=ConfigArgs,
    output=TaskOutcome,
    planner=_plan_config,
)


def gateway_for(cluster: ClusterConfig, audit_path: Path) -> Gateway:
    return Gateway(
        tools=[*all_tools(), toggle, configure, configure_confirmed],
        clusters=ClusterPool({"demo": cluster}),
        policy=operator_policy(),
        audit=AuditLog(audit_path),
        redactor=Redactor(),
    )


@pytest.fixture
def own_sim() -> Iterator[SimulatorHandle]:
    """A private simulator: these tests change guests' power state."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@pytest.fixture
async def gw(own_sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Gateway]:
    gateway = gateway_for(cluster_for(own_sim), audit_path)
    try:
        yield gateway
    finally:
        await gateway.aclose()


async def ok(gateway: Gateway, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await gateway.invoke(LOCAL, tool, args)
    assert result.data is not None, result.error
    return result.data


async def refused(gateway: Gateway, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await gateway.invoke(LOCAL, tool, args)
    assert result.error is not None, result.data
    return result.error


# -- the calls in the plan ------------------------------------------------------------


def test_a_call_fills_its_template_one_segment_per_value() -> None:
    call = ApiCall.to("POST", "/nodes/{node}/qemu/{vmid}/status/start", node="pve1", vmid=100)
    assert call.path == "/nodes/pve1/qemu/100/status/start"
    sneaky = ApiCall.to("GET", "/nodes/{node}/status", node="pve1/../../access")
    assert sneaky.path == "/nodes/pve1%2F..%2F..%2Faccess/status"
    with pytest.raises(ValueError, match=r"no value for \{vmid\}"):
        ApiCall.to("GET", "/nodes/{node}/qemu/{vmid}/config", node="pve1")


async def test_dry_run_shows_the_exact_calls(gw: Gateway) -> None:
    start = await ok(gw, "proxmox_guest_power", {"vmid": 101, "action": "start", "dry_run": True})
    assert start["plan"]["calls"] == [
        {
            "method": "POST",
            "template": "/nodes/{node}/qemu/{vmid}/status/start",
            "path": "/nodes/pve1/qemu/101/status/start",
            "params": {},
            "task": True,
        }
    ]
    stop = await ok(gw, "proxmox_guest_stop", {"name": "gitlab", "dry_run": True})
    assert [c["path"] for c in stop["plan"]["calls"]] == ["/nodes/pve3/qemu/106/status/stop"]
    assert stop["plan"]["target"] == {
        "node": "pve3",
        "vmid": 106,
        "type": "qemu",
        "name": "gitlab",
        "pool": "dev",
        "tags": ["dev"],
    }


async def test_the_audit_intent_records_the_calls_and_the_outcome_the_exit_status(
    gw: Gateway, audit_path: Path
) -> None:
    done = await ok(gw, "proxmox_guest_power", {"vmid": 101, "action": "start"})
    assert done["guest_status"] == "running"
    intent, outcome = [
        r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_guest_power"
    ]
    assert intent["phase"] == "intent"
    assert intent["where"]["target"]["calls"] == [
        {
            "method": "POST",
            "template": "/nodes/{node}/qemu/{vmid}/status/start",
            "path": "/nodes/pve1/qemu/101/status/start",
            "task": True,
        }
    ]
    # Recorded from the task the context waited for, not read off the tool's result.
    assert outcome["outcome"]["exitstatus"] == "OK"
    assert outcome["outcome"]["upids"] == [done["upid"]]


async def test_a_token_is_bound_to_the_calls_it_approved(gw: Gateway) -> None:
    """Same tool, same arguments, same target: once the guest changed state the plan
    would send another call, and the token approved for the first one is refused."""
    ask = await refused(gw, "test_toggle", {"vmid": 103})
    assert ask["code"] == "confirmation_required"
    assert ask["details"]["plan"]["calls"][0]["path"].endswith("/status/start")
    token = ask["details"]["confirm_token"]
    await ok(gw, "proxmox_guest_power", {"vmid": 103, "action": "start"})
    other = await refused(gw, "test_toggle", {"vmid": 103, "confirm_token": token})
    assert other["code"] == "confirmation_invalid"
    status = await ok(gw, "proxmox_guest_get", {"vmid": 103, "include_config": False})
    assert status["status"] == "running", "the refused call did not shut it down"


# -- the resulting state -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "qmpstatus", "lock", "state"),
    [
        ("running", "running", None, "running"),
        ("running", "paused", None, "paused"),
        ("running", None, None, "running"),
        ("stopped", "stopped", None, "stopped"),
        ("stopped", None, "suspended", "suspended"),
        ("stopped", None, "backup", "stopped"),
    ],
)
def test_guest_state_reads_qemus_own_status(
    status: str, qmpstatus: str | None, lock: str | None, state: str
) -> None:
    assert guest_state(status, qmpstatus, lock) == state


async def test_a_hard_stop_says_the_guest_is_stopped(gw: Gateway) -> None:
    ask = await refused(gw, "proxmox_guest_stop", {"vmid": 100})
    done = await ok(
        gw, "proxmox_guest_stop", {"vmid": 100, "confirm_token": ask["details"]["confirm_token"]}
    )
    assert (done["task_status"], done["exitstatus"], done["guest_status"]) == (
        "stopped",
        "OK",
        "stopped",
    )
    assert done["vmid"] == 100 and done["node"] == "pve1" and done["seconds"] >= 0


async def test_containers_say_their_state_too(gw: Gateway) -> None:
    shutdown = await ok(gw, "proxmox_guest_power", {"vmid": 200, "action": "shutdown"})
    assert (shutdown["type"], shutdown["guest_status"]) == ("lxc", "stopped")
    start = await ok(gw, "proxmox_guest_power", {"vmid": 200, "action": "start"})
    assert start["guest_status"] == "running"


# -- the guest config change planner -------------------------------------------------


async def test_config_change_plans_a_diff_with_the_digest(
    gw: Gateway, own_sim: SimulatorHandle
) -> None:
    backend = gw.clusters.backend("demo")
    current = (await backend.call("GET", "/nodes/pve1/qemu/102/config")).data
    plan = (
        await ok(
            gw,
            "test_configure",
            {
                "vmid": 102,
                "values": {"memory": 4096, "cores": int(current["cores"])},
                "delete": ["ostype", "nosuchkey"],
                "dry_run": True,
            },
        )
    )["plan"]
    assert plan["changes"] == [
        {"field": "memory", "before": current["memory"], "after": 4096},
        {"field": "ostype", "before": current["ostype"]},
    ]
    (call,) = plan["calls"]
    assert (call["method"], call["path"], call["task"]) == (
        "PUT",
        "/nodes/pve1/qemu/102/config",
        False,
    )
    # Only what changes, the keys to delete, and the digest PVE checks before applying.
    assert call["params"] == {"memory": 4096, "delete": "ostype", "digest": current["digest"]}
    assert plan["warnings"] == ["nosuchkey is not set: nothing to delete"]


async def test_config_change_applies_only_what_it_planned(gw: Gateway) -> None:
    backend = gw.clusters.backend("demo")
    before = (await backend.call("GET", "/nodes/pve1/qemu/102/config")).data
    await ok(gw, "test_configure", {"vmid": 102, "values": {"memory": 3072, "onboot": 1}})
    after = (await backend.call("GET", "/nodes/pve1/qemu/102/config")).data
    assert (int(after["memory"]), int(after["onboot"])) == (3072, 1)
    assert {k: v for k, v in after.items() if k not in ("memory", "onboot", "digest")} == {
        k: v for k, v in before.items() if k not in ("memory", "onboot", "digest")
    }
    assert after["digest"] != before["digest"]


async def test_an_approval_does_not_survive_someone_elses_edit(gw: Gateway) -> None:
    """The approved call carries the digest of the config the person saw: after another
    edit the plan's call differs, and the token is refused before anything is sent."""
    change = {"vmid": 102, "values": {"memory": 6144}}
    ask = await refused(gw, "test_configure_confirmed", change)
    token = ask["details"]["confirm_token"]
    await ok(gw, "test_configure", {"vmid": 102, "values": {"cores": 3}})
    stale = await refused(gw, "test_configure_confirmed", {**change, "confirm_token": token})
    assert stale["code"] == "confirmation_invalid"
    backend = gw.clusters.backend("demo")
    config = (await backend.call("GET", "/nodes/pve1/qemu/102/config")).data
    assert int(config["memory"]) != 6144


async def test_config_change_that_changes_nothing_sends_nothing(gw: Gateway) -> None:
    backend = gw.clusters.backend("demo")
    current = (await backend.call("GET", "/nodes/pve1/qemu/102/config")).data
    same = {"vmid": 102, "values": {"memory": int(current["memory"])}}
    plan = (await ok(gw, "test_configure", {**same, "dry_run": True}))["plan"]
    assert "calls" not in plan or plan["calls"] == []
    assert plan["summary"].startswith("no change")
    done = await ok(gw, "test_configure", same)
    assert "upid" not in done and "task_status" not in done


async def test_config_change_of_a_secret_shows_and_records_no_secret(
    gw: Gateway, audit_path: Path
) -> None:
    secret = "correct-horse-battery-staple"
    plan = (
        await ok(
            gw,
            "test_configure",
            {"vmid": 102, "values": {"cipassword": secret}, "dry_run": True},
        )
    )["plan"]
    assert plan["changes"] == [{"field": "cipassword", "after": "[REDACTED]"}]
    assert plan["calls"][0]["params"]["cipassword"] == "[REDACTED]"
    (record,) = [r for r in read_audit(audit_path) if r["what"]["tool"] == "test_configure"]
    assert record["where"]["target"]["calls"][0]["params"]["cipassword"] == "[REDACTED]"
    assert secret not in audit_path.read_text()


async def test_config_change_refuses_a_key_both_set_and_deleted(gw: Gateway) -> None:
    error = await refused(
        gw, "test_configure", {"vmid": 102, "values": {"memory": 1024}, "delete": ["memory"]}
    )
    assert (error["code"], error["field"]) == ("invalid_argument", "delete")
    assert "memory" in error["message"]


# -- HA-managed guests, on a scripted PVE over real HTTPS -----------------------------

HA_UPID = "UPID:pve1:0000ABCD:0001E240:66A1B2C3:{type}:100:root@pam:"


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[FakePve]:
    server = FakePve(make_self_signed(), tmp_path)
    server.start(bound_socket())
    yield server
    server.stop()


def script_guest(pve: FakePve, task_type: str, running_after_reads: int | None) -> list[int]:
    """VM 100, stopped; its start answers a `task_type` task that ends OK at once, and
    the guest shows `running` from the given read of its status on (None: never).
    Returns the live count of status reads."""
    upid = HA_UPID.format(type=task_type)
    reads = [0]
    pve.route(
        "GET",
        "/cluster/resources",
        pve_json(
            [
                {
                    "vmid": 100,
                    "type": "qemu",
                    "node": "pve1",
                    "name": "ha-vm",
                    "status": "stopped",
                    "hastate": "stopped",
                }
            ]
        ),
    )
    pve.route("POST", "/nodes/pve1/qemu/100/status/start", pve_json(upid))
    task = {"upid": upid, "node": "pve1", "type": task_type, "id": "100", "user": "root@pam"}
    pve.route(
        "GET",
        f"/nodes/pve1/tasks/{upid}/status",
        pve_json({**task, "status": "stopped", "exitstatus": "OK", "starttime": 1722000067}),
    )

    async def current(_: Request) -> Response:
        reads[0] += 1
        up = running_after_reads is not None and reads[0] >= running_after_reads
        state = "running" if up else "stopped"
        return pve_json({"vmid": 100, "status": state, "qmpstatus": state, "ha": {"managed": 1}})

    pve.route("GET", "/nodes/pve1/qemu/100/status/current", current)
    return reads


def fake_cluster(pve: FakePve, **changes: Any) -> ClusterConfig:
    values: dict[str, Any] = {
        "api_url": pve.url,
        "token_id": TOKEN_ID,
        "token_secret": SecretStr(SECRET),
        "tls": TlsMode.FINGERPRINT,
        "fingerprint": pve.certs.fingerprint_colons,
        "read_timeout": 2.0,
        "task_timeout": 10.0,
    }
    return ClusterConfig(**(values | changes))


async def test_an_ha_start_waits_for_the_guest_to_run(pve: FakePve, audit_path: Path) -> None:
    """`hastart` only asks ha-manager and ends at once (qemu-server API2/Qemu.pm): the
    runner reads the guest's state until it is running."""
    reads = script_guest(pve, "hastart", running_after_reads=3)
    seen: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, message))

    gateway = gateway_for(fake_cluster(pve), audit_path)
    try:
        result = await gateway.invoke(
            LOCAL, "proxmox_guest_power", {"vmid": 100, "action": "start"}, progress=progress
        )
    finally:
        await gateway.aclose()
    done = result.data
    assert done is not None, result.error
    assert (done["exitstatus"], done["guest_status"]) == ("OK", "running")
    assert "note" not in done
    assert reads[0] == 3
    # The task's poll, then the waits for the guest: MCP progress only ever increases.
    values = [value for value, _ in seen]
    assert values == sorted(set(values)), values
    assert [m for _, m in seen if m and m.startswith("HA: qemu 100 is stopped")]


async def test_an_ha_start_that_outlasts_the_wait_says_so(pve: FakePve, audit_path: Path) -> None:
    reads = script_guest(pve, "hastart", running_after_reads=None)
    gateway = gateway_for(fake_cluster(pve), audit_path)
    try:
        done = await ok(
            gateway, "proxmox_guest_power", {"vmid": 100, "action": "start", "timeout": 1}
        )
    finally:
        await gateway.aclose()
    assert (done["exitstatus"], done["guest_status"]) == ("OK", "stopped")
    assert "HA manager" in done["note"] and "do not repeat" in done["note"]
    assert 2 <= reads[0] <= 5, "read a few times within the one-second budget"
    assert done["seconds"] <= 1.5


async def test_a_plain_task_is_not_waited_on_beyond_its_end(pve: FakePve, audit_path: Path) -> None:
    """Not an HA request: the state read after the task is the answer, read once."""
    reads = script_guest(pve, "qmstart", running_after_reads=None)
    gateway = gateway_for(fake_cluster(pve), audit_path)
    try:
        done = await ok(gateway, "proxmox_guest_power", {"vmid": 100, "action": "start"})
    finally:
        await gateway.aclose()
    assert (done["exitstatus"], done["guest_status"], reads[0]) == ("OK", "stopped", 1)
    assert "note" not in done


async def test_concurrent_reads_fail_with_the_failed_reads_own_error(
    pve: FakePve, audit_path: Path
) -> None:
    """`ToolContext.get_many`: one failed read of several is the call's error (PVE's
    words, the path), not an exception group or an internal error."""
    script_guest(pve, "qmstart", running_after_reads=None)
    pve.route(
        "GET",
        "/nodes/pve1/qemu/100/config",
        pve_json(status=403, message="Permission check failed (/vms/100, VM.Audit)"),
    )
    gateway = gateway_for(fake_cluster(pve), audit_path)
    try:
        error = await refused(gateway, "proxmox_guest_get", {"vmid": 100})
        status_only = await ok(gateway, "proxmox_guest_get", {"vmid": 100, "include_config": False})
    finally:
        await gateway.aclose()
    assert error["code"] != "internal_error"
    assert "VM.Audit" in error["message"]
    assert status_only["status"] == "stopped"
