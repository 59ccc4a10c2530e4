"""The tier floor of API methods: by HTTP method, raised where the method understates it."""

from __future__ import annotations

import pytest

from pvemcp.pveapi import load_index, tier_floor
from pvemcp.pveapi.tiers import CREDENTIALS, GENERIC_ONLY, LOWERED, RAISED, generic_floor


@pytest.mark.parametrize(
    ("method", "template", "tier"),
    [
        ("GET", "/cluster/resources", "read"),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start", "write"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize", "write"),
        ("DELETE", "/nodes/{node}/qemu/{vmid}", "destructive"),
        # Raised: a hard stop loses state, a shell or a minted ticket escapes the gateway.
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop", "destructive"),
        ("POST", "/nodes/{node}/execute", "escape"),
        ("POST", "/nodes/{node}/termproxy", "escape"),
        ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read", "escape"),
        ("POST", "/access/ticket", "escape"),
        # Lowered: a guest-agent ping is a POST in PVE's API that changes nothing.
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", "read"),
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-freeze", "write"),
    ],
)
def test_floor(method: str, template: str, tier: str) -> None:
    assert tier_floor(method, template) == tier


def test_every_raised_method_exists_and_says_why() -> None:
    """A misspelt template would silently never apply."""
    index = load_index()
    missing = [f"{m} {t}" for m, t in RAISED if index.endpoint(m, t) is None]
    assert not missing
    assert all(reason and len(reason) < 60 for _, reason in RAISED.values())


def test_a_raise_never_lowers_the_method_floor() -> None:
    for method, template in RAISED:
        order = ("read", "write", "destructive", "escape")
        by_method = {"GET": 0, "POST": 1, "PUT": 1, "DELETE": 2}[method]
        assert order.index(tier_floor(method, template)) >= by_method


def test_every_lowered_or_credential_method_exists() -> None:
    index = load_index()
    listed = [*LOWERED, *CREDENTIALS, *GENERIC_ONLY]
    assert [f"{m} {t}" for m, t in listed if index.endpoint(m, t) is None] == []
    assert not set(LOWERED) & set(RAISED), "a method is raised or lowered, not both"


def test_credential_methods_are_those_whose_answer_holds_one() -> None:
    """The schema's return properties name what each answers: a method the list misses
    would hand a ticket or a secret to the generic call's caller."""
    secret = ("ticket", "password", "csrfpreventiontoken", "recovery", "authkey")
    found = set()
    for endpoint in load_index():
        if endpoint.method == "GET":
            continue  # reads: the redactor masks the keys (tested in tests/tools/test_api.py)
        names = [name.lower() for name in endpoint.returns.get("properties") or {}]
        if endpoint.template.endswith("/token/{tokenid}") and "value" in names:
            names.append("password")  # the token's secret is its `value`
        if any(word in name for name in names for word in secret):
            found.add((endpoint.method, endpoint.template))
    assert found <= set(CREDENTIALS), sorted(found - set(CREDENTIALS))


def test_the_generic_call_is_raised_where_only_a_typed_tool_checks() -> None:
    """A URL download is a write through the typed tool (HTTPS, allowed hosts, checksum)
    and an escape through the generic call, which checks none of it."""
    download = ("POST", "/nodes/{node}/storage/{storage}/download-url")
    assert tier_floor(*download) == "write"
    assert generic_floor(*download) == "escape"
    assert generic_floor("POST", "/nodes/{node}/execute") == "escape"
    assert generic_floor("GET", "/cluster/resources") == "read"
    assert tier_floor("DELETE", "/nodes/{node}/network") == "write", "drops staged changes"
    cidr = "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}"
    assert tier_floor("DELETE", cidr) == "write", "an entry of a set, like a rule edit"
    assert tier_floor("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}") == (
        "destructive"
    ), "a whole set stays destructive"


@pytest.mark.parametrize(
    ("method", "template", "params", "tier"),
    [
        ("PUT", "/nodes/{node}/qemu/{vmid}/config", {"description": "x"}, "write"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/config", {"delete": "description,scsi1"}, "write"),
        ("PUT", "/nodes/{node}/qemu/{vmid}/config", {"delete": "numa,unused0"}, "destructive"),
        ("POST", "/nodes/{node}/qemu/{vmid}/config", {"delete": "unused1"}, "destructive"),
        ("PUT", "/nodes/{node}/lxc/{vmid}/config", {"delete": "unused0"}, "destructive"),
        ("POST", "/nodes/{node}/qemu", {"vmid": 120}, "write"),
        ("POST", "/nodes/{node}/qemu", {"archive": "x", "force": 1}, "destructive"),
        ("POST", "/nodes/{node}/lxc", {"restore": 1, "force": True}, "destructive"),
        ("POST", "/nodes/{node}/lxc", {"force": 0}, "write"),
    ],
)
def test_parameters_that_make_a_write_a_loss_raise_the_generic_call(
    method: str, template: str, params: dict[str, object], tier: str
) -> None:
    assert generic_floor(method, template, params) == tier
    assert tier_floor(method, template) == "write", "the method alone stays a write"
