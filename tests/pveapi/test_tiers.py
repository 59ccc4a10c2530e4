"""The tier floor of API methods: by HTTP method, raised where the method understates it."""

from __future__ import annotations

import pytest

from pvemcp.pveapi import load_index, tier_floor
from pvemcp.pveapi.tiers import RAISED


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
