"""proxmox_capabilities_list (the issue's proxmox_capabilities) through the MCP SDK client, on a gateway whose API token is narrowed.

The issue's story: the token holds PVEAuditor on / and PVEVMUser on /vms/100 only.
proxmox_capabilities_list says power on 100 is possible and on 101 is not, naming
VM.PowerMgmt; then proxmox_guest_power on 101 fails with PVE's own 403 naming the
privilege (the simulator checks every request as PVE does), and on 100 works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from pydantic import SecretStr

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
