"""proxmox_capabilities_list (the issue's proxmox_capabilities) through the MCP SDK
client, on a gateway whose API token is narrowed; and `pvemcp policy explain --capabilities`.

The issue's story: the token holds PVEAuditor on / and PVEVMUser on /vms/100 only.
proxmox_capabilities_list says power on 100 is possible and on 101 is not, naming
VM.PowerMgmt; then proxmox_guest_power on 101 fails with PVE's own 403 naming the
privilege (the simulator checks every request as PVE does), and on 100 works.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr

from pvemcp.cli import main
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway
from tests.simulator.conftest import client_for
from tests.simulator.test_permissions import AUDIT_AND_POWER_100, narrowed_token
from tests.tools.calls import ok, refused

pytestmark = pytest.mark.anyio


@pytest.fixture
async def narrow(own_sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Client]:
    """A client on a gateway whose token has PVEAuditor on / and PVEVMUser on /vms/100."""
    async with client_for(own_sim) as admin:
        tokenid, secret = await narrowed_token(admin, "agent@pve", AUDIT_AND_POWER_100)
    cluster = cluster_for(own_sim, token_id=tokenid, token_secret=SecretStr(secret))
    gateway = make_gateway({"demo": cluster}, audit_path, (secret,))
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as c:
            yield c
    finally:
        await gateway.aclose()


async def _caps(client: Client, **arguments: Any) -> dict[str, Any]:
    return ok(await client.call_tool("proxmox_capabilities_list", arguments))


async def test_capabilities_predict_the_403_that_follows(narrow: Client) -> None:
    on_100 = await _caps(narrow, vmid=100)
    assert on_100["path"] == "/vms/100"
    assert on_100["pve_user"] == "agent@pve!gw"
    assert "VM.PowerMgmt" in on_100["privileges"]
    assert "proxmox_guest_power" in on_100["allowed"]

    on_101 = await _caps(narrow, vmid=101)
    assert "VM.PowerMgmt" not in on_101["privileges"]
    assert on_101["refused"]["proxmox_guest_power"] == "pve: VM.PowerMgmt on /vms/101"
    assert "proxmox_guest_power" not in on_101["allowed"] + on_101["confirm"]
    assert "proxmox_storage_list" in on_101["allowed"]  # PVEAuditor on / propagates

    error = refused(await narrow.call_tool("proxmox_guest_power", {"vmid": 101, "action": "start"}))
    assert error["code"] == "permission_denied"
    assert "Permission check failed (/vms/101, VM.PowerMgmt)" in error["message"]

    done = ok(await narrow.call_tool("proxmox_guest_power", {"vmid": 100, "action": "shutdown"}))
    assert (done["exitstatus"], done["guest_status"]) == ("OK", "stopped"), done


async def test_policy_refusals_and_unknowns_are_told_apart(narrow: Client) -> None:
    # Escape tools need a rule naming the caller: policy refuses before PVE is asked.
    shell = await _caps(narrow, node="pve1", tool="proxmox_shell_run")
    assert shell["refused"] == {"proxmox_shell_run": "policy: builtin.no-escape"}
    assert shell["path"] == "/nodes/pve1"
    # Without a target, checks on /vms/{vmid} cannot be evaluated: unknown, not yes.
    bare = await _caps(narrow, tool="proxmox_guest_power")
    assert bare["path"] == "/"
    assert bare["unknown"] == ["proxmox_guest_power"]
    assert bare["privileges"] == sorted(bare["privileges"])


async def test_bad_arguments_are_structured_errors(narrow: Client) -> None:
    error = refused(await narrow.call_tool("proxmox_capabilities_list", {"tool": "proxmox_nope"}))
    assert error["code"] == "invalid_argument"
    assert error["field"] == "tool"
    error = refused(await narrow.call_tool("proxmox_capabilities_list", {"toolset": "nope"}))
    assert error["field"] == "toolset"


def test_policy_explain_capabilities_prints_the_same_answer(
    own_sim: SimulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pvemcp policy explain --capabilities` on a config whose cluster token is narrowed."""

    async def make() -> tuple[str, str]:
        async with client_for(own_sim) as admin:
            return await narrowed_token(admin, "cli@pve", AUDIT_AND_POWER_100)

    tokenid, secret = anyio.run(make)
    config = tmp_path / "pvemcp.toml"
    config.write_text(
        f'[clusters.demo]\napi_url = "{own_sim.url}"\ntoken_id = "{tokenid}"\n'
        f'token_secret = "{secret}"\ntls = "fingerprint"\n'
        f'fingerprint = "{own_sim.fingerprint}"\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    for key in [k for k in os.environ if k.startswith("PVEMCP_")]:
        monkeypatch.delenv(key)
    argv = ["policy", "explain", "--capabilities", "--config", str(config)]
    assert main([*argv, "--args", '{"vmid": 101}', "--tool", "proxmox_guest_power"]) == 0
    out = capsys.readouterr().out
    assert f"the local operator on /vms/101 (PVE identity {tokenid})" in out
    assert "    proxmox_guest_power: pve: VM.PowerMgmt on /vms/101" in out
    assert main([*argv, "--json", "--args", '{"vmid": 100, "tool": "proxmox_guest_power"}']) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] == ["proxmox_guest_power"]
    assert main([*argv, "--args", '{"vmid": "x"}']) == 1
    assert "field vmid" in capsys.readouterr().err
    assert main([*argv, "--args", '{"bogus": 1}']) == 2
    assert main(["policy", "explain"]) == 2  # neither --tool nor --capabilities
    assert "--tool is required" in capsys.readouterr().err
