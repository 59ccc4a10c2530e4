"""proxmox_cli_run and proxmox_shell_run end to end: policy on argv, the real sshd, audit
records with the SSH facts, output caps and artifacts, timeouts, host-key refusals."""

from __future__ import annotations

import base64
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.transports.mcp_app import build_mcp_server
from tests.conftest import read_audit
from tests.support.sshd import Sshd

from .conftest import escape_gateway, failed, ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
ALICE = Principal("alice", "http", client_id="agent", issuer="https://idp.example")
ESCAPE_TOOLS = {
    "proxmox_cli_run",
    "proxmox_shell_run",
    "proxmox_file_read",
    "proxmox_file_write",
    "proxmox_ct_exec",
    "proxmox_vm_exec",
}
POLICY = """
version = 1

[[rules]]
id = "cli-reads"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_cli_run"]
argv = [["pvesh", "get", "*", "--output-format", "json"], ["qm", "status", "*"]]

[[rules]]
id = "shell"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_shell_run"]

[[rules]]
id = "never-reboot"
effect = "deny"
subjects = ["*"]
tools = ["proxmox_shell_run"]
argv = [["sh", "-c", "reboot"]]
"""


@pytest.fixture
async def gw(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> AsyncIterator[Gateway]:
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path, output_cap=1024
    ) as gateway:
        yield gateway


def visible(gateway: Gateway, principal: Principal) -> set[str]:
    return {spec.name for spec in gateway.visible_specs(principal)}


def records(audit: Path, tool: str) -> list[dict[str, Any]]:
    return [r for r in read_audit(audit) if r.get("what", {}).get("tool") == tool]


async def test_escape_tools_are_hidden_from_and_denied_to_unnamed_callers(gw: Gateway) -> None:
    # The local operator sees the escape tools a rule names, and only those.
    assert ESCAPE_TOOLS & visible(gw, LOCAL) == {"proxmox_cli_run", "proxmox_shell_run"}
    assert not ESCAPE_TOOLS & visible(gw, ALICE)
    result = failed(await gw.invoke(ALICE, "proxmox_shell_run", {"node": "pve1", "command": "id"}))
    assert result["code"] == "denied"
    assert result["details"]["rules"] == ["builtin.no-escape"]


async def test_cli_run_returns_parsed_json_and_audits_the_ssh_call(
    gw: Gateway, sshd: Sshd, audit_path: Path
) -> None:
    argv = ["pvesh", "get", "/version", "--output-format", "json"]
    data = ok(await gw.invoke(LOCAL, "proxmox_cli_run", {"node": "pve2", "argv": argv}))
    assert data["exit_code"] == 0
    assert data["parsed"]["release"]
    assert data["node"] == "pve2" and not data["truncated"]
    intent, outcome = records(audit_path, "proxmox_cli_run")
    wire = "timeout --kill-after=5s 15s pvesh get /version --output-format json"
    assert intent["phase"] == "intent"
    assert intent["where"]["argv"] == argv
    assert intent["where"]["command"] == wire
    assert intent["decision"]["rules"] == ["cli-reads"]
    where, result = outcome["where"], outcome["outcome"]
    assert where["node"] == "pve2" and where["ssh_user"] == sshd.user
    assert where["host_key"] == sshd.fingerprint
    assert where["command"] == wire and where["argv"] == argv
    assert where["target"]["ssh_duration_ms"] > 0
    assert result["status"] == "ok" and result["exit_code"] == 0
    assert result["out_bytes"] > 0 and len(result["out_sha256"]) == 64
    assert result["err_bytes"] == 0 and result["truncated"] is False


async def test_a_failing_command_is_a_result(gw: Gateway) -> None:
    # Allowed by policy; the test host has no qm, so `timeout` cannot start it (exit 127).
    data = ok(
        await gw.invoke(LOCAL, "proxmox_cli_run", {"node": "pve1", "argv": ["qm", "status", "100"]})
    )
    assert data["exit_code"] == 127 and "No such file" in data["stderr"]


@pytest.mark.parametrize(
    "argv",
    [
        ["qm", "destroy", "100"],
        ["qm", "status", "--force"],
        ["qm", "status", "-rf"],
        ["qm", "status", "100", "--skiplock"],
        ["pvesh", "get", "--noproxy", "--output-format", "json"],
        ["pvesh", "create", "/nodes/pve1/qemu/100/status/stop"],
    ],
)
async def test_argv_outside_the_patterns_is_denied(
    gw: Gateway, audit_path: Path, argv: list[str]
) -> None:
    error = failed(await gw.invoke(LOCAL, "proxmox_cli_run", {"node": "pve1", "argv": argv}))
    assert error["code"] == "denied"
    (record,) = records(audit_path, "proxmox_cli_run")
    assert record["outcome"]["status"] == "denied" and record["where"]["argv"] == argv
    assert "command" in record["where"] and "ssh_user" not in record["where"]


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["rm", "-rf", "/"], "is not a Proxmox command"),
        (["/usr/sbin/qm", "list"], "is not a Proxmox command"),
        (["qm", "status", "100\n; reboot"], "control characters"),
        (["qm", "status", "1\x00"], "control characters"),
        ([], "at least 1 item"),
    ],
)
async def test_bad_argv_is_refused_before_policy(gw: Gateway, argv: list[str], why: str) -> None:
    error = failed(await gw.invoke(LOCAL, "proxmox_cli_run", {"node": "pve1", "argv": argv}))
    assert error["code"] == "invalid_argument" and why in error["message"]


async def test_shell_run_audits_the_exact_string(gw: Gateway, audit_path: Path) -> None:
    command = "echo out; echo 'it''s' \"$HOME\" >&2; exit 3"
    data = ok(await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve3", "command": command}))
    assert data["exit_code"] == 3 and data["stdout"] == "out\n"
    assert data["stderr"].startswith("its /home/")
    intent, outcome = records(audit_path, "proxmox_shell_run")
    wire = shlex.join(["timeout", "--kill-after=5s", "15s", "sh", "-c", command])
    assert intent["where"]["argv"] == ["sh", "-c", command]
    assert intent["where"]["command"] == outcome["where"]["command"] == wire
    assert outcome["outcome"]["exit_code"] == 3


@pytest.mark.parametrize(
    ("command", "why"),
    [("-i", "must not start with '-'"), ("ls\x1b[2J", "control characters"), ("", "at least")],
)
async def test_bad_shell_lines_are_refused(gw: Gateway, command: str, why: str) -> None:
    args = {"node": "pve1", "command": command}
    error = failed(await gw.invoke(LOCAL, "proxmox_shell_run", args))
    assert error["code"] == "invalid_argument" and why in error["message"]


async def test_deny_rule_on_the_shell_string(gw: Gateway) -> None:
    error = failed(
        await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "reboot"})
    )
    assert error["code"] == "denied" and error["details"]["rules"] == ["never-reboot"]


async def test_output_over_the_cap_is_an_artifact_only_its_owner_reads(
    gw: Gateway, audit_path: Path
) -> None:
    command = "head -c 5000 /dev/zero | tr '\\0' a; echo; echo done >&2"

    async with Client(build_mcp_server(gw, lambda _: LOCAL), mode="legacy") as client:
        result = await client.call_tool("proxmox_shell_run", {"node": "pve1", "command": command})
        assert not result.is_error, result.content
        data = result.structured_content
        assert data is not None
        assert data["truncated"] is True and data["stdout"] == "a" * 1024
        assert data["stderr"] == "done\n" and "stderr_artifact" not in data
        uri = data["stdout_artifact"]
        assert uri.startswith("pvemcp://artifacts/")
        read = await client.read_resource(uri)
        blob = read.contents[0]
        assert blob.mime_type == "application/octet-stream"
        assert base64.b64decode(blob.blob) == b"a" * 5000 + b"\n"  # type: ignore[union-attr]
        templates = await client.list_resource_templates()
        assert templates.resource_templates[0].uri_template == "pvemcp://artifacts/{artifact_id}"

    async with Client(build_mcp_server(gw, lambda _: ALICE), mode="legacy") as other:
        with pytest.raises(MCPError, match="no artifact"):
            await other.read_resource(uri)
        with pytest.raises(MCPError, match="no artifact"):
            await other.read_resource("pvemcp://artifacts/not-an-id")
    _, outcome = records(audit_path, "proxmox_shell_run")
    assert outcome["where"]["target"]["artifacts"] == [uri.rsplit("/", 1)[1]]
    assert outcome["outcome"]["truncated"] is True
    assert outcome["outcome"]["out_bytes"] == 5001


async def test_timeout_kills_the_command_on_the_node(gw: Gateway, audit_path: Path) -> None:
    marker = "sleep 31.25"
    error = failed(
        await gw.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": marker, "timeout": 1}
        )
    )
    assert error["code"] == "ssh_command_timeout" and error["details"]["node"] == "pve1"
    intent, outcome = records(audit_path, "proxmox_shell_run")
    assert intent["where"]["command"].startswith("timeout --kill-after=5s 1s sh -c ")
    assert outcome["outcome"]["timed_out"] is True and outcome["outcome"]["status"] == "error"
    left = await anyio.run_process(["pgrep", "-f", marker], check=False)
    assert left.returncode == 1, left.stdout


TIMEOUT_CALLS: dict[str, dict[str, Any]] = {
    "proxmox_cli_run": {"node": "pve1", "argv": ["qm", "status", "100"]},
    "proxmox_shell_run": {"node": "pve1", "command": "sleep 30"},
    "proxmox_ct_exec": {"vmid": 200, "argv": ["sleep", "30"]},
    "proxmox_vm_exec": {"vmid": 104, "argv": ["sleep", "30"]},
}


@pytest.mark.parametrize("tool", sorted(TIMEOUT_CALLS))
@pytest.mark.parametrize("timeout", [0.0004, 0.5, 0.999, 0, -1, float("nan"), float("inf")])
async def test_a_timeout_under_one_second_is_refused_naming_the_field(
    gw: Gateway, audit_path: Path, tool: str, timeout: float
) -> None:
    """0.0004 s used to be sent as `timeout 0s`, which GNU timeout reads as no limit at all:
    the command ran unbounded while the gateway promised it would be killed."""
    error = failed(await gw.invoke(LOCAL, tool, {**TIMEOUT_CALLS[tool], "timeout": timeout}))
    assert error["code"] == "invalid_argument" and error["field"] == "timeout", error
    assert "timeout" in error["message"]
    (record,) = records(audit_path, tool)
    assert record["outcome"]["status"] == "rejected" and "command" not in record.get("where", {})


async def test_changed_host_key_failure_shows_the_fingerprint_and_pin(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh")
    pin = f"[127.0.0.1]:{sshd.port} " + " ".join(stranger.decode().split()[:2])
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path, pins=(pin,)
    ) as gateway:
        error = failed(
            await gateway.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "true"})
        )
    assert error["code"] == "ssh_host_key_rejected"
    assert error["details"]["fingerprint"] == sshd.fingerprint
    assert error["details"]["pin_line"] == sshd.host_key_line
    assert "differs from the pinned key" in error["message"]


async def test_a_path_token_grants_pvesh_get_under_nodes_only(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    policy = """
version = 1

[[rules]]
id = "pvesh-nodes"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_cli_run"]
argv = [["pvesh", "get", "path:/nodes/**", "--output-format", "json"]]
"""

    def pvesh_get(path: str) -> dict[str, Any]:
        return {"node": "pve1", "argv": ["pvesh", "get", path, "--output-format", "json"]}

    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=policy, secrets_dir=tmp_path
    ) as gateway:
        data = ok(await gateway.invoke(LOCAL, "proxmox_cli_run", pvesh_get("/nodes/pve1/status")))
        assert data["exit_code"] == 0 and isinstance(data["parsed"], dict)
        for outside in ("/access/users", "/nodes/../access/users", "/nodes//access", "nodes"):
            error = failed(await gateway.invoke(LOCAL, "proxmox_cli_run", pvesh_get(outside)))
            assert error["code"] == "denied", outside
