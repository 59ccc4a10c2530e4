"""The Ansible inventory: the pure builder (groups, names, addresses, both formats, parsed
back as Ansible reads them), and `proxmox_inventory_export` through the MCP SDK client against
the simulator (an agent's address, a cloud-init static one, filters, the artifact)."""

from __future__ import annotations

import ast
import base64
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from pvemcp.config import SshConfig
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools.inventory import (
    Host,
    agent_address,
    agent_enabled,
    build,
    host_names,
    render_ini,
    render_yaml,
    static_address,
)
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway
from tests.tools.calls import call, ok
from tests.tools.test_examples import Session, error_of


def ansible_ini(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Host variables and groups as Ansible's INI inventory plugin reads them
    (`ansible/plugins/inventory/ini.py`: each line shell-split with `#` comments, a host's
    `key=value` tokens through `ast.literal_eval`, kept as text when that fails)."""
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    section: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("["):
            section = line.strip("[]")
            groups[section] = []
            continue
        name, *pairs = shlex.split(line, comments=True)
        found = hosts.setdefault(name, {})
        for pair in pairs:
            key, _, value = pair.partition("=")
            try:
                found[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                found[key] = value
        if section is not None:
            groups[section].append(name)
    return hosts, groups


def ansible_yaml(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Host variables and groups of a YAML inventory in the shape Ansible's YAML plugin
    wants: `all` with `hosts` (a mapping of name to variables) and `children` (groups,
    each with `hosts`)."""
    loaded = yaml.safe_load(text)
    assert set(loaded) == {"all"}
    everything = loaded["all"] or {}
    children = everything.get("children") or {}
    groups = {name: list((group or {}).get("hosts") or {}) for name, group in children.items()}
    return dict(everything.get("hosts") or {}), groups


# -- the builder ---------------------------------------------------------------------------


def test_groups_by_node_pool_tag_type_status_with_names_ansible_accepts() -> None:
    built = build(
        [
            Host(7, "b", "pve-2", "lxc", "stopped", ("a.b", "a-b", "web")),
            Host(5, "a", "pve1", "qemu", "running", ("web",), pool="team-x", address="10.0.0.5"),
        ]
    )
    assert list(built.hosts) == ["a", "b"]  # vmid order
    assert built.groups == {
        "node_pve1": ["a"],
        "node_pve_2": ["b"],
        "pool_team_x": ["a"],
        "tag_a_b": ["b"],  # two tags that sanitise to one group: the host once
        "tag_web": ["a", "b"],
        "type_lxc": ["b"],
        "type_qemu": ["a"],
        "status_running": ["a"],
        "status_stopped": ["b"],
    }
    assert built.hosts["a"] == {
        "ansible_host": "10.0.0.5",
        "proxmox_vmid": 5,
        "proxmox_node": "pve1",
        "proxmox_type": "qemu",
        "proxmox_status": "running",
        "proxmox_tags": ["web"],
        "proxmox_pool": "team-x",
    }
    assert "ansible_host" not in built.hosts["b"] and "proxmox_pool" not in built.hosts["b"]


def test_shared_names_get_their_vmid_and_never_collide() -> None:
    names = host_names([(203, "test"), (102, "test"), (9, "test-102"), (4, None), (8, "a b")])
    # 102's first choice, test-102, is another guest's own name: it gets the vmid again.
    assert names == {4: "guest-4", 8: "a-b", 9: "test-102", 102: "test-102-102", 203: "test-203"}


def test_the_address_ansible_would_reach() -> None:
    interfaces = [
        {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
        {
            "name": "ens18",
            "ip-addresses": [
                {"ip-address": "fe80::1", "prefix": 64},
                {"ip-address": "169.254.3.4", "prefix": 16},
                {"ip-address": "2001:db8::5", "prefix": 64},
                {"ip-address": "192.0.2.7", "prefix": 24},
            ],
        },
        {"name": "ens19", "ip-addresses": [{"ip-address": "198.51.100.1", "prefix": 24}]},
    ]
    assert agent_address(interfaces) == "192.0.2.7"
    assert agent_address([interfaces[0]]) is None
    assert agent_address("not a list") is None
    assert static_address("ip=10.1.2.3/24,gw=10.1.2.1") == "10.1.2.3"
    assert static_address("name=eth0,bridge=vmbr0,ip=10.9.9.9/16,type=veth") == "10.9.9.9"
    assert static_address("ip=dhcp,ip6=auto") is None
    assert static_address(None) is None
    assert [agent_enabled(v) for v in ("1", "0", "enabled=1,fstrim_cloned_disks=1", None)] == [
        True,
        False,
        True,
        False,
    ]
    assert agent_enabled("fstrim_cloned_disks=1") is False


def test_both_formats_read_back_as_built_whatever_the_strings_look_like() -> None:
    built = build(
        [
            # Strings a YAML or INI reader would otherwise take for a number, a boolean or
            # null, a comment or two words.
            Host(1, "true", "10", "qemu", "running", ("1.5", "null"), pool="x#y"),
            Host(2, "web", "pve1", "lxc", "stopped", address="10.0.0.2"),
        ]
    )
    for parse, text in ((ansible_yaml, render_yaml(built)), (ansible_ini, render_ini(built))):
        hosts, groups = parse(text)
        assert hosts == built.hosts, text
        assert groups == built.groups, text
    assert ansible_yaml(render_yaml(build([]))) == ({}, {})
    assert render_ini(build([])) == ""


# -- the tool ----------------------------------------------------------------------------


pytestmark = pytest.mark.anyio


def agent_reads(session: Session) -> set[int]:
    return {
        int(path.split("/")[4])
        for method, path, _, _ in session.calls
        if path.endswith("/agent/network-get-interfaces")
    }


async def test_agent_address_else_cloud_init_static_address(session: Session) -> None:
    static = "ip=192.0.2.10/24,gw=192.0.2.1"
    for vmid in (101, 102):  # 101 is stopped; 102 runs, but its agent does not answer
        ok(
            await call(
                session, "proxmox_guest_config_update", vmid=vmid, values={"ipconfig0": static}
            )
        )
    nic = ok(await call(session, "proxmox_agent_list", vmid=100, what="network"))["interfaces"][0]
    found = ok(await call(session, "proxmox_inventory_export"))
    hosts, groups = ansible_yaml(found["inventory"])
    assert hosts["web01"]["ansible_host"] == nic["ips"][0].split("/")[0]
    assert hosts["web02"]["ansible_host"] == hosts["test-102"]["ansible_host"] == "192.0.2.10"
    assert "test-203" in hosts and "tmpl-deb12" not in hosts  # templates are left out
    assert "ansible_host" not in hosts["db02"] and "db02" in found["without_ip"]
    assert groups["tag_test"] == ["test-102", "test-203"]
    assert (found["hosts"], found["groups"], found["format"]) == (13, len(groups), "yaml")
    # Only running VMs whose config enables the agent are asked (105 is paused); 102's
    # silent agent is asked too, and fails, which the recorder (answers only) leaves out.
    assert agent_reads(session) == {100, 104, 106}


async def test_filters_and_ini_without_ips(session: Session) -> None:
    found = ok(
        await call(session, "proxmox_inventory_export", format="ini", tag="prod", with_ips=False)
    )
    hosts, groups = ansible_ini(found["inventory"])
    assert list(hosts) == ["web01", "web02", "db01", "db02"]
    assert hosts["db02"]["proxmox_status"] == "paused" and "ansible_host" not in hosts["db02"]
    assert groups["node_pve2"] == ["db01", "db02"] and "without_ip" not in found
    reads = {path for method, path, _, _ in session.calls if "/config" in path or "/agent/" in path}
    assert not reads, "with_ips false reads no config and asks no agent"
    narrow = ok(
        await call(session, "proxmox_inventory_export", node="pve3", type="lxc", status="running")
    )
    # A filtered export names a host as the whole one does, so the two can be combined.
    assert list(ansible_yaml(narrow["inventory"])[0]) == ["test-203"]
    none = ok(await call(session, "proxmox_inventory_export", pool="nosuchpool"))
    assert none["hosts"] == 0 and ansible_yaml(none["inventory"]) == ({}, {})


async def test_a_bad_filter_names_its_field(session: Session) -> None:
    error = error_of(await call(session, "proxmox_inventory_export", tag="no spaces"))
    assert error is not None and error["code"] == "invalid_argument" and error["field"] == "tag"


async def test_beyond_the_output_cap_the_whole_is_an_artifact(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    cluster = cluster_for(sim, ssh=SshConfig(output_cap=1024))
    gateway = make_gateway({"demo": cluster}, tmp_path / "audit.jsonl", (sim.token_secret,))
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            result = await client.call_tool("proxmox_inventory_export", {"with_ips": False})
            found = result.structured_content
            assert found is not None and found["truncated"] is True
            assert len(found["inventory"].encode()) <= 1024
            assert found["inventory"].endswith("\n")  # whole lines only
            whole = (await client.read_resource(found["artifact"])).contents[0]
            text = base64.b64decode(whole.blob).decode()  # type: ignore[union-attr]
            assert text.startswith(found["inventory"])
            assert len(ansible_yaml(text)[0]) == found["hosts"] == 13
    finally:
        await gateway.aclose()
