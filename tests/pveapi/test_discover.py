"""Finding and explaining API methods from the structural index (no Proxmox prose)."""

from __future__ import annotations

import json

import pytest

from pvemcp.pveapi import load_index
from pvemcp.pveapi.discover import (
    PARAM_LIMIT,
    describe,
    param_text,
    permission_text,
    returns_text,
    search,
)


@pytest.mark.parametrize(
    ("query", "top"),
    [
        ("how do I set a VM's description", "PUT /nodes/{node}/qemu/{vmid}/config"),
        ("rename a container", "PUT /nodes/{node}/lxc/{vmid}/config"),
        ("delete a vm", "DELETE /nodes/{node}/qemu/{vmid}"),
        ("start a container", "POST /nodes/{node}/lxc/{vmid}/status/start"),
        ("stop vm", "POST /nodes/{node}/qemu/{vmid}/status/stop"),
        ("/lxc/ snapshot rollback", "POST /nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"),
        ("list storage on a node", "GET /nodes/{node}/storage"),
        ("upid log", "GET /nodes/{node}/tasks/{upid}/log"),
        ("firewall ipset", "GET /cluster/firewall/ipset"),
    ],
)
def test_search_ranks_the_method_meant_first(query: str, top: str) -> None:
    found, total = search(load_index(), query)
    assert found and f"{found[0].method} {found[0].template}" == top
    assert total >= len(found)


def test_search_matches_parameters_and_property_keys_and_caps_rows() -> None:
    found, _ = search(load_index(), "net0 bridge", limit=3)
    assert len(found) == 3
    assert all("net[n]" in endpoint.properties for endpoint in found)
    assert search(load_index(), "zzzz qqqq") == ([], 0)


def test_a_parameter_in_a_few_words() -> None:
    index = load_index()
    props = index.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config").properties  # type: ignore[union-attr]
    assert param_text("description", props["description"]) == "string, <=8192 chars"
    assert param_text("vmid", props["vmid"]) == (
        "integer, 100..999999999, format pve-vmid, required"
    )
    assert param_text("ostype", props["ostype"]).startswith("enum other|wxp|")
    assert param_text("ostype", props["ostype"]).endswith("|..., default other")
    assert param_text("net[n]", props["net[n]"]).startswith("property string (model=...): ")


def test_permissions_and_returns_in_a_few_words() -> None:
    index = load_index()
    stop = index.endpoint("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
    assert stop is not None
    assert permission_text(stop.permissions) == "/vms/{vmid} VM.PowerMgmt"
    assert returns_text(stop.returns, stop.upid).startswith("task (UPID")
    listed = index.endpoint("GET", "/nodes/{node}/qemu")
    assert listed is not None
    assert permission_text(listed.permissions).startswith("any authenticated user")
    assert returns_text(listed.returns, False).startswith("array of object: ")
    assert permission_text(None) == "root@pam only"


def test_describe_is_capped_and_filters_by_name() -> None:
    endpoint = load_index().endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
    assert endpoint is not None
    shown = describe(endpoint, tier="write", covered_by=["proxmox_guest_config_update"])
    assert len(shown["params"]) == PARAM_LIMIT and shown["params_more"] == 88 - PARAM_LIMIT
    assert list(shown["params"])[:2] == ["node", "vmid"], "required ones first"
    assert shown["typed_tools"] == ["proxmox_guest_config_update"]
    assert len(json.dumps(shown)) < 2400
    only = describe(endpoint, tier="write", match="net")
    assert list(only["params"]) == ["net[n]"] and "params_more" not in only
