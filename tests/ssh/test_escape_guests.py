"""proxmox_ct_exec (pct exec over SSH, with a `pct` stand-in on the test sshd) and
proxmox_vm_exec (the guest agent over REST, against the simulator's fake guest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.support.sshd import Sshd

from .conftest import escape_gateway, failed, ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
POLICY = """
version = 1

[[rules]]
id = "ct-exec-test"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_ct_exec"]
argv = [["pct", "exec", "*", "--", "**"]]
tags = ["test", "dev"]

[[rules]]
id = "vm-exec-range"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_vm_exec"]
argv = [["qm", "guest", "exec", "*", "--", "**"]]
vmids = ["104-107"]
"""
PCT_STANDIN = """#!/bin/sh
# pct stand-in: `pct exec <vmid> -- argv...` runs argv here, as if inside the container.
[ "$1" = exec ] && [ "$3" = -- ] || { echo "pct stand-in: unsupported: $*" >&2; exit 255; }
vmid=$2
shift 3
PCT_VMID=$vmid exec "$@"
"""


@pytest.fixture
async def gw(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> AsyncIterator[Gateway]:
    pct = sshd.bin_dir / "pct"
    pct.write_text(PCT_STANDIN)
    pct.chmod(0o755)
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=POLICY, secrets_dir=tmp_path
    ) as gateway:
        yield gateway


def records(audit: Path, tool: str) -> list[dict[str, Any]]:
    return [r for r in read_audit(audit) if r.get("what", {}).get("tool") == tool]


async def test_ct_exec_runs_pct_exec_on_the_containers_node(
    gw: Gateway, sshd: Sshd, audit_path: Path
) -> None:
    args = {"vmid": 203, "argv": ["printenv", "PCT_VMID"]}
    data = ok(await gw.invoke(LOCAL, "proxmox_ct_exec", args))
    assert data["node"] == "pve3" and data["exit_code"] == 0 and data["stdout"] == "203\n"
    argv = ["pct", "exec", "203", "--", "printenv", "PCT_VMID"]
    intent, outcome = records(audit_path, "proxmox_ct_exec")
    assert intent["where"]["argv"] == argv and intent["where"]["vmid"] == 203
    assert intent["where"]["command"] == "timeout --kill-after=5s 15s " + " ".join(argv)
    assert outcome["where"]["argv"] == argv and outcome["where"]["ssh_user"] == sshd.user
    assert outcome["where"]["host_key"] == sshd.fingerprint
    assert outcome["outcome"]["exit_code"] == 0 and outcome["outcome"]["out_bytes"] == 4


async def test_ct_exec_options_after_the_separator_are_operands(gw: Gateway) -> None:
    data = ok(await gw.invoke(LOCAL, "proxmox_ct_exec", {"vmid": 203, "argv": ["ls", "-d", "/"]}))
    assert data["stdout"] == "/\n"


async def test_ct_exec_is_limited_by_tags_and_guest_type(gw: Gateway) -> None:
    infra = failed(await gw.invoke(LOCAL, "proxmox_ct_exec", {"vmid": 200, "argv": ["id"]}))
    assert infra["code"] == "denied"
    vm = failed(await gw.invoke(LOCAL, "proxmox_ct_exec", {"vmid": 106, "argv": ["id"]}))
    assert vm["code"] == "wrong_guest_type" and "proxmox_vm_exec" in vm["hint"]


async def test_vm_exec_through_the_guest_agent(gw: Gateway, audit_path: Path) -> None:
    data = ok(await gw.invoke(LOCAL, "proxmox_vm_exec", {"vmid": 106, "argv": ["echo", "hello"]}))
    assert data["exit_code"] == 0 and data["stdout"] == "hello\n" and data["node"] == "pve3"
    intent, outcome = records(audit_path, "proxmox_vm_exec")
    assert intent["where"]["argv"] == ["qm", "guest", "exec", "106", "--", "echo", "hello"]
    assert "command" not in intent["where"]
    assert outcome["where"]["argv"] == ["echo", "hello"]
    assert outcome["where"]["target"]["guest_pid"] >= 1200
    assert outcome["outcome"]["exit_code"] == 0 and outcome["outcome"]["out_bytes"] == 6
    assert "ssh_user" not in outcome["where"]


async def test_vm_exec_exit_codes_and_input(gw: Gateway) -> None:
    false = ok(await gw.invoke(LOCAL, "proxmox_vm_exec", {"name": "db01", "argv": ["false"]}))
    assert false["exit_code"] == 1
    cat = ok(
        await gw.invoke(
            LOCAL, "proxmox_vm_exec", {"vmid": 104, "argv": ["cat"], "input_data": "piped\n"}
        )
    )
    assert cat["stdout"] == "piped\n"
    # A paused VM's agent cannot answer its ping, so PVE refuses before exec.
    paused = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", {"vmid": 105, "argv": ["true"]}))
    assert "QEMU guest agent is not running" in paused["message"]
    missing = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", {"vmid": 104, "argv": ["nope"]}))
    # PVE's 500 says "No such file or directory", which the backend reads as not found.
    assert missing["code"] == "not_found" and "Failed to execute" in missing["message"]


async def test_vm_exec_timeout_reports_the_guest_pid(gw: Gateway, audit_path: Path) -> None:
    args = {"vmid": 104, "argv": ["sleep", "60"], "timeout": 1}
    error = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", args))
    assert error["code"] == "guest_command_timeout" and error["details"]["pid"] >= 1200
    _, outcome = records(audit_path, "proxmox_vm_exec")
    assert outcome["outcome"]["timed_out"] is True


async def test_vm_exec_refusals(gw: Gateway) -> None:
    outside = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", {"vmid": 100, "argv": ["id"]}))
    assert outside["code"] == "denied"
    ct = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", {"vmid": 203, "argv": ["id"]}))
    assert ct["code"] == "wrong_guest_type"
    stopped = {"vmid": 107, "argv": ["true"]}
    plan = ok(await gw.invoke(LOCAL, "proxmox_vm_exec", {**stopped, "dry_run": True}))["plan"]
    assert "the VM is stopped" in plan["warnings"][0]
    error = failed(await gw.invoke(LOCAL, "proxmox_vm_exec", stopped))
    assert error["code"] == "proxmox_refused" and "not running" in error["message"]
