"""Matching a request to its API method through the route trie, and the refusals."""

from __future__ import annotations

import pytest

from pvemcp.pveapi import RouteError, load_index


@pytest.mark.parametrize(
    ("method", "path", "template", "values"),
    [
        ("GET", "/version", "/version", {}),
        ("GET", "/cluster/resources", "/cluster/resources", {}),
        (
            "POST",
            "/nodes/pve1/qemu/100/status/start",
            "/nodes/{node}/qemu/{vmid}/status/start",
            {"node": "pve1", "vmid": "100"},
        ),
        (
            "DELETE",
            "/nodes/pve1/lxc/200/snapshot/before-upgrade",
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
            {"node": "pve1", "vmid": "200", "snapname": "before-upgrade"},
        ),
        # A volume id carries an encoded '/': one segment, decoded for its value.
        (
            "GET",
            "/nodes/pve1/storage/local/content/local:iso%2Fdebian.iso",
            "/nodes/{node}/storage/{storage}/content/{volume}",
            {"node": "pve1", "storage": "local", "volume": "local:iso/debian.iso"},
        ),
        # Literals win over a variable at the same place.
        ("GET", "/nodes/pve1/qemu", "/nodes/{node}/qemu", {"node": "pve1"}),
    ],
)
def test_paths_match_their_template(
    method: str, path: str, template: str, values: dict[str, str]
) -> None:
    endpoint, found = load_index().match(method, path)
    assert (endpoint.method, endpoint.template, found) == (method, template, values)


def test_an_unknown_segment_names_the_closest() -> None:
    with pytest.raises(RouteError) as caught:
        load_index().match("GET", "/nodes/pve1/qemu/100/snapshots")
    assert caught.value.field == "path"
    assert caught.value.closest == ("snapshot",)
    assert "did you mean snapshot?" in caught.value.message
    assert "/nodes/{node}/qemu/{vmid}" in caught.value.message


def test_a_missing_method_names_the_ones_there_are() -> None:
    with pytest.raises(RouteError) as caught:
        load_index().match("DELETE", "/version")
    assert caught.value.field == "method"
    assert caught.value.message == "/version has no DELETE; it has GET"
    assert caught.value.closest == ("GET",)


def test_a_directory_without_methods_lists_what_is_below() -> None:
    with pytest.raises(RouteError, match=r"only holds sub-paths \(\{fabric\}\)"):
        load_index().match("GET", "/nodes/pve1/sdn/fabrics")
    with pytest.raises(RouteError, match=r"access, cluster, nodes"):
        load_index().match("GET", "/")


def test_a_segment_past_a_leaf_is_refused() -> None:
    with pytest.raises(RouteError, match=r"/version has no 'extra'"):
        load_index().match("GET", "/version/extra")
