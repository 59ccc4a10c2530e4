"""The validator agrees with the test-only oracle `tests/pveschema.py`, which reads the
full official apidoc, on requests generated for every method of the schema.

For each method a valid request is built from sample values (its path parameters and its
required parameters, plus each optional scalar parameter that can be sampled), then
broken one way at a time: a required parameter dropped, an unknown name added, an integer
that is not one, a value outside an enum, a number below its minimum. The validator and
the oracle must say the same (accepted or refused) for every request, and route each
path to the same template."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pvemcp.pveapi import Endpoint, load_index, validate
from tests.pveschema import ApiSchema, require_schema

SAMPLES = {
    "pve-node": "pve1",
    "pve-vmid": "100",
    "pve-storage-id": "local",
    "pve-configid": "net0",
    "pve-poolid": "pool1",
    "pve-tag": "web",
    "pve-userid": "root@pam",
    "pve-realm": "pam",
    "pve-groupid": "admins",
    "pve-roleid": "Admin",
    "pve-iface": "eth0",
    "pve-bridge-id": "vmbr0",
    "pve-volume-id": "local:iso/x.iso",
    "pve-storage-content": "images",
    "pve-task-status-type": "ok",
    "ipv4": "10.0.0.1",
    "ipv6": "fd00::1",
    "ip": "10.0.0.1",
    "CIDR": "10.0.0.0/24",
    "mac-addr": "BC:24:11:00:00:01",
    "dns-name": "pve1.example.com",
    "address": "10.0.0.1",
    "disk-size": "32G",
    "urlencoded": "abc",
}
"""A valid value of each named format that the generated requests use."""


def sample(schema: Mapping[str, Any]) -> Any:
    """A value `schema` accepts, or None when none can be made without knowing more."""
    if schema.get("oneOf") or schema.get("instance-types") or schema.get("requires"):
        return None
    kind = schema.get("type")
    if isinstance(schema.get("enum"), list):
        return schema["enum"][0]
    if kind == "boolean":
        return 1
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = low if low is not None else 1
        return value if high is None or float(value) <= float(high) else high
    if kind == "string":
        if schema.get("pattern") is not None:
            return None
        fmt = schema.get("format")
        if fmt is None:
            return "x" * max(1, int(schema.get("minLength") or 1))
        if isinstance(fmt, str):
            return SAMPLES.get(fmt.removesuffix("-list"))
        return None
    return None


def concrete(endpoint: Endpoint) -> tuple[str, dict[str, Any]] | None:
    """The template with sample values in its `{variables}`, and those values."""
    values: dict[str, Any] = {}
    for name in re.findall(r"\{([^}]+)\}", endpoint.template):
        value = sample(endpoint.properties.get(name) or {})
        if value is None:
            return None
        values[name] = value
    path = re.sub(r"\{([^}]+)\}", lambda m: str(values[m.group(1)]), endpoint.template)
    return path, values


def requests(endpoint: Endpoint) -> Iterator[tuple[str, dict[str, Any]]]:
    """A valid request and its one-way breakages, as (what, params)."""
    base: dict[str, Any] = {}
    for name, prop in endpoint.properties.items():
        if prop.get("optional") or "[n]" in name:
            continue
        value = sample(prop)
        if value is None:
            return
        base[name] = value
    yield "valid", base
    for name, prop in endpoint.properties.items():
        if name in base or "[n]" in name or prop.get("alias"):
            continue
        value = sample(prop)
        if value is not None:
            yield f"with {name}", {**base, name: value}
    for name in base:
        if not endpoint.properties[name].get("optional"):
            yield f"without {name}", {k: v for k, v in base.items() if k != name}
    yield "unknown name", {**base, "zzz_unknown": "1"}
    for name, prop in endpoint.properties.items():
        if prop.get("type") == "integer" and "[n]" not in name:
            yield f"{name} not an integer", {**base, name: "abc"}
        if isinstance(prop.get("enum"), list):
            yield f"{name} outside its enum", {**base, name: "zzz-not-in-enum"}
        if isinstance(prop.get("minimum"), int) and prop.get("type") == "integer":
            yield f"{name} below its minimum", {**base, name: prop["minimum"] - 1}


@pytest.fixture(scope="module")
def oracle() -> ApiSchema:
    return require_schema()


def test_validator_agrees_with_the_oracle(oracle: ApiSchema) -> None:
    index = load_index()
    checked = refused = 0
    disagreements: list[str] = []
    for endpoint in index:
        made = concrete(endpoint)
        if made is None:
            continue
        path, path_values = made
        matched, found = index.match(endpoint.method, path)
        routed = oracle.endpoint(endpoint.method, path)
        assert routed is not None and routed.path == matched.template
        if matched.template != endpoint.template:
            continue  # a sample value that is also a literal sibling (covered above)
        for what, params in requests(endpoint):
            body = {k: v for k, v in params.items() if k not in path_values}
            ours = validate(matched, body, found)
            theirs = oracle.check_request(endpoint.method, path, body)
            checked += 1
            refused += bool(theirs)
            if bool(ours) != bool(theirs):
                disagreements.append(f"{endpoint.method} {path} {what}: {ours} vs {theirs}")
    assert not disagreements, "\n".join(disagreements[:20])
    # The generated requests cover most of the API, accepted and refused.
    assert checked > 3000 and refused > 1000, (checked, refused)
