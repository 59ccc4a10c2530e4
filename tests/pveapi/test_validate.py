"""The validator on the examples of the design and on refusals PVE is known to make.

Each case names the method, the path and the parameters as a tool would pass them to
`ToolContext.call`, and the problems PVE's verifier would report (field, and the closest
valid names where there are some)."""

from __future__ import annotations

from typing import Any

import pytest

from pvemcp.pveapi import Problem, check_request, load_index

CLONE = "/nodes/pve1/qemu/100/clone"
CONFIG = "/nodes/pve1/qemu/100/config"


def problems(method: str, path: str, params: dict[str, Any] | None = None) -> list[Problem]:
    return check_request(load_index(), method, path, params)[1]


def fields(method: str, path: str, params: dict[str, Any] | None = None) -> list[str]:
    return [problem.field for problem in problems(method, path, params)]


def test_an_unknown_parameter_names_the_closest() -> None:
    assert problems("POST", CLONE, {"newid": 101, "nmae": "web03"}) == [
        Problem("nmae", "unknown parameter 'nmae' (did you mean name?)", ("name",))
    ]


def test_a_number_below_its_minimum() -> None:
    found = problems("POST", CLONE, {"newid": 12})
    assert found[0] == Problem("newid", "must be >= 100, got 12")
    assert [p.field for p in found] == ["newid", "newid"]  # the pve-vmid format too


def test_an_unknown_key_of_a_property_string_names_the_closest() -> None:
    assert problems("POST", CONFIG, {"scsi0": "local-lvm:32,discrad=on"}) == [
        Problem("scsi0.discrad", "unknown key 'discrad' (did you mean discard?)", ("discard",))
    ]


def test_required_parameters_are_named() -> None:
    assert problems("POST", CLONE, {}) == [Problem("newid", "is required and missing")]


def test_path_parameters_are_checked_too() -> None:
    assert fields("GET", "/nodes/pve1/qemu/12/status/current") == ["vmid", "vmid"]
    assert fields("GET", "/nodes/bad_node/qemu/100/status/current") == ["node"]


@pytest.mark.parametrize("value", [True, False, 1, 0, "1", "0"])
def test_booleans_as_pve_takes_them(value: object) -> None:
    assert problems("POST", CLONE, {"newid": 101, "full": value}) == []


@pytest.mark.parametrize("value", ["true", "yes", 2, "on"])
def test_booleans_pve_refuses_over_http(value: object) -> None:
    assert fields("POST", CLONE, {"newid": 101, "full": value}) == ["full"]


@pytest.mark.parametrize(("value", "ok"), [(4, True), ("4", True), ("four", False), (4.5, False)])
def test_integers_may_come_as_decimal_strings(value: object, ok: bool) -> None:
    assert (problems("POST", CONFIG, {"cores": value}) == []) is ok


def test_an_enum_value_names_the_closest() -> None:
    (found,) = problems("POST", CONFIG, {"ostype": "l27"})
    assert found.field == "ostype" and "l26" in found.closest


def test_a_list_format_checks_every_item() -> None:
    assert problems("POST", CONFIG, {"delete": "net0,scsi1"}) == []
    assert problems("POST", CONFIG, {"delete": ["net0", "scsi1"]}) == []
    (found,) = problems("POST", CONFIG, {"delete": "net0;1bad"})
    assert found.field == "delete" and "'1bad'" in found.message


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"net0": "virtio,bridge=vmbr0,tag=10,firewall=1"}, []),
        # A model given as a key carries the MAC (`keyAlias`); booleans read as PVE's.
        ({"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=on"}, []),
        ({"net0": "bridge=vmbr0"}, ["net0.model"]),
        ({"net0": "virtio,bridge=vmbr0,tag=5000"}, ["net0.tag"]),
        ({"net0": "virtio,model=e1000"}, ["net0.model"]),
        ({"net0": "virtio=01:00:00:00:00:01"}, ["net0.macaddr"]),
        ({"net0": "virtio,firewall=maybe"}, ["net0.firewall"]),
        ({"net0": "virtio,bridge="}, ["net0"]),
        ({"net0": "virtio,bridge=bad bridge"}, ["net0.bridge"]),
        # Indexed names: any index, written as PVE writes it.
        ({"net12": "virtio"}, []),
        ({"net01": "virtio"}, ["net01"]),
        # A disk: a volume id, or `storage:size` for a new volume (the default key).
        ({"scsi0": "local-lvm:32,discard=on,ssd=1"}, []),
        ({"scsi0": "local-lvm,discard=on"}, ["scsi0.file"]),
        ({"ide2": "none,media=cdrom"}, []),
    ],
)
def test_property_strings(params: dict[str, Any], expected: list[str]) -> None:
    assert fields("POST", CONFIG, params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"tags": "web;prod"}, []),
        ({"tags": "web;-bad"}, ["tags"]),
        ({"name": "web03"}, []),
        ({"name": "web_03"}, ["name"]),  # a DNS name
        ({"description": "x" * 8193}, ["description"]),  # maxLength 8192
        ({"memory": "4096"}, []),
        ({"memory": "current=0"}, ["memory.current"]),  # minimum 16
    ],
)
def test_known_refusals_of_a_vm_config(params: dict[str, Any], expected: list[str]) -> None:
    assert fields("POST", CONFIG, params) == expected


def test_a_section_property_of_another_type_is_refused() -> None:
    """`affinity` belongs to resource-affinity rules only (`instance-types`)."""
    base = {"rule": "r1", "resources": "vm:100"}
    ok = {**base, "type": "resource-affinity", "affinity": "positive"}
    assert problems("POST", "/cluster/ha/rules", ok) == []
    wrong = {**base, "type": "node-affinity", "nodes": "pve1", "affinity": "positive"}
    assert fields("POST", "/cluster/ha/rules", wrong) == ["affinity"]


def test_none_is_not_sent() -> None:
    assert problems("POST", CLONE, {"newid": 101, "name": None}) == []


def test_only_a_closed_parameter_object_refuses_other_names() -> None:
    """Most methods say `additionalProperties: 0`; a few (the SDN fabric and route-map
    methods) leave it out, and PVE's verifier then takes any name."""
    assert fields("GET", "/cluster/resources", {"zzz_extra": 1}) == ["zzz_extra"]
    assert problems("GET", "/cluster/sdn/route-maps", {"zzz_extra": 1}) == []


def test_a_parameter_that_requires_another() -> None:
    """PVE: "missing property - 'append' requires this property"."""
    role = "/access/roles/Admin"
    assert problems("PUT", role, {"append": 1}) == [
        Problem("privs", "is required when append is given")
    ]
    assert problems("PUT", role, {"append": 1, "privs": "VM.Audit"}) == []
