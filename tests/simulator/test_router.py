"""The segment trie that finds a route: PVE's precedence, `{kind}` expansion, bad tables."""

from __future__ import annotations

import pytest

from pvemcp.simulator.endpoints import ROUTER, ROUTES
from pvemcp.simulator.model import GuestKind
from pvemcp.simulator.params import Param
from pvemcp.simulator.router import Context, Handler, Params, Result, Route, Router, for_kinds


def _answer(name: str) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        return Result(name)

    return handler


def _route(method: str, path: str) -> Route:
    return Route(method, path, {}, _answer(path))


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def test_a_literal_segment_wins_and_a_dead_end_falls_back_to_the_variable() -> None:
    router = Router([_route("GET", "/a/{x}/d"), _route("GET", "/a/b"), _route("GET", "/a/b/c")])
    found = router.find("GET", _split("/a/b"))
    assert found is not None and (found[0].path, found[1]) == ("/a/b", {})
    # /a/b/d has no literal route under b, so the walk backs up to {x}.
    found = router.find("GET", _split("/a/b/d"))
    assert found is not None and (found[0].path, found[1]) == ("/a/{x}/d", {"x": "b"})
    assert router.find("POST", _split("/a/b")) is None
    assert router.find("GET", _split("/a")) is None


def test_every_declared_route_is_found_for_a_concrete_path() -> None:
    for route in ROUTES:
        segments = ["sample-1" if "{" in part else part for part in _split(route.path)]
        found = ROUTER.find(route.method, segments)
        assert found is not None and found[0] is route, route.path
        assert set(found[1].values()) <= {"sample-1"}


def test_for_kinds_gives_each_kind_its_route() -> None:
    def params(kind: GuestKind) -> dict[str, Param]:
        return {"vmstate": Param("boolean")} if kind == "qemu" else {}

    routes = for_kinds("GET", "/nodes/{node}/{kind}/{vmid}/x", params, _answer)
    assert [(r.path, sorted(r.params)) for r in routes] == [
        ("/nodes/{node}/qemu/{vmid}/x", ["vmstate"]),
        ("/nodes/{node}/lxc/{vmid}/x", []),
    ]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([_route("GET", "/a/{x}"), _route("GET", "/a/{y}/b")], "{y} clashes with {x}"),
        ([_route("GET", "/a"), _route("GET", "/a")], "GET /a is declared twice"),
    ],
)
def test_a_table_that_cannot_route_is_refused_at_build(routes: list[Route], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Router(routes)
