"""Paths and parameters as PVE's HTTP server reads them; hostile paths refused."""

from __future__ import annotations

import pytest

from pvemcp.proxmox.encoding import PathError, encode_form, encode_path, param_pairs


def test_param_pairs_follow_pve_http_rules() -> None:
    pairs = param_pairs(
        {
            "force": True,
            "skiplock": False,
            "vmid": 100,
            "cores": 2.5,
            "name": "web 1",
            "description": None,
            "net": ["virtio", None, "e1000"],
            "tags": (),
        }
    )
    assert pairs == [
        ("force", "1"),
        ("skiplock", "0"),
        ("vmid", "100"),
        ("cores", "2.5"),
        ("name", "web 1"),
        ("net", "virtio"),
        ("net", "e1000"),
    ]


def test_param_pairs_none_and_empty() -> None:
    assert param_pairs(None) == []
    assert param_pairs({}) == []


def test_encode_form_uses_percent_twenty_and_repeats_keys() -> None:
    form = encode_form({"name": "a b+c&d=e", "ids": [1, 2], "on": True, "x": "ü/:"})
    assert form == "name=a%20b%2Bc%26d%3De&ids=1&ids=2&on=1&x=%C3%BC%2F%3A"


@pytest.mark.parametrize(
    "params",
    [{"name": "a\x00b"}, {"ratio": float("nan")}, {"ratio": float("inf")}, {"": 1}, {"a\n": 1}],
)
def test_values_pve_cannot_receive(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        param_pairs(params)


@pytest.mark.parametrize("params", [{"conf": {"a": 1}}, {"ids": [[1]]}, {"blob": b"x"}])
def test_types_without_pve_encoding_are_caller_bugs(params: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="parameter"):
        param_pairs(params)


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("/nodes/pve1/qemu/100/status/start", "/nodes/pve1/qemu/100/status/start"),
        ("/version", "/version"),
        (
            "/nodes/pve1/tasks/UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstop:100:u@pve!tok:/status",
            "/nodes/pve1/tasks/UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstop:100:u@pve!tok:/status",
        ),
        (
            "/nodes/pve1/storage/local/content/local:iso%2Fdebian 12.iso",
            "/nodes/pve1/storage/local/content/local:iso%2Fdebian%2012.iso",
        ),
        ("/pools/caf%C3%A9", "/pools/caf%C3%A9"),
        ("/pools/café", "/pools/caf%C3%A9"),
        ("/access/users/a+b", "/access/users/a%2Bb"),
        ("/nodes/pve1/..a/x", "/nodes/pve1/..a/x"),
    ],
)
def test_encode_path(path: str, encoded: str) -> None:
    assert encode_path(path) == encoded


@pytest.mark.parametrize(
    "path",
    [
        "/nodes/../access",
        "/nodes/pve1/..",
        "/nodes/%2e%2e/access",
        "/nodes/%2E%2e/access",
        "/nodes/./pve1",
        "/nodes/%2e/pve1",
        "/nodes/pve1/content/a%2F..%2Fb",
        "/nodes//pve1",
        "//nodes",
        "/nodes/pve1/",
        "/",
        "nodes/pve1",
        "",
        "/nodes/pve1?x=1",
        "/nodes/pve1%3Fx=1",
        "/nodes/pve1#frag",
        "/nodes/pve1%23frag",
        "/nodes/pve1\n/x",
        "/nodes/pve1%0d%0aX-Evil: 1",
        "/nodes/pve1\x00",
        "/nodes/pve1%00",
        "/nodes/pve1%zz",
        "/nodes/100%",
        "/nodes/%ff",
        "/x/" + "a" * 3000,
    ],
)
def test_encode_path_refuses(path: str) -> None:
    with pytest.raises(PathError):
        encode_path(path)


def test_path_error_is_a_value_error() -> None:
    assert issubclass(PathError, ValueError)
