"""Routes of the simulated API and the segment trie that finds them.

A route is one PVE method: its path template, its parameter specs and its handler. The
router builds a trie of path segments once, so a lookup costs one dict step per segment
whatever the number of routes (a linear scan that split every template on every request
would not scale to hundreds of endpoints). As in PVE's `find_handler`, a literal segment
wins over a `{variable}` one.

PVE has no 404 or 405 in its API: pve-manager's `PVE/HTTPServer.pm` `rest_handler`
answers 501 `Method 'GET /nodes/x/bogus' not implemented` for an unknown path and for a
known path without that method alike, so the app answers every miss that way, whether PVE
lacks the method or only the simulator does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .model import GuestKind
from .params import Param, SchemaParams, Value

if TYPE_CHECKING:
    from .state import ClusterState

KINDS: tuple[GuestKind, ...] = ("qemu", "lxc")


@dataclass(frozen=True)
class Context:
    """What a handler needs besides its parameters."""

    state: ClusterState
    user: str
    """The authenticated user id; for a token `user@realm!token`."""
    now: float


@dataclass(frozen=True)
class Result:
    """PVE's `data`, `total` for paged lists, and `changes` (the pending diff a node's
    network list carries, as PVE's `set_result_attrib`)."""

    data: Any
    total: int | None = None
    changes: str | None = None


Params = Mapping[str, Value]
Handler = Callable[[Context, Params], Result]


@dataclass(frozen=True)
class Route:
    """One API method: `method` on the PVE path template `path` (`{x}` = one segment)."""

    method: str
    path: str
    params: Mapping[str, Param]
    handler: Handler


def api(method: str, path: str, handler: Handler, *, root_only: Iterable[str] = ()) -> Route:
    """A route taking exactly PVE's parameters for the method, from the index of the API
    (read on first use); `root_only` names the options only root@pam may set, which the
    schema says in prose only."""
    return Route(method, path, SchemaParams(method, path, root_only=root_only), handler)


def for_kinds(
    method: str,
    template: str,
    params: Callable[[GuestKind], Mapping[str, Param]] | None,
    handler: Callable[[GuestKind], Handler],
    kinds: Iterable[GuestKind] = KINDS,
) -> list[Route]:
    """One route per guest kind for a template with `{kind}` (qemu and lxc by default).

    PVE's qemu and lxc trees are separate methods with their own parameters, so each kind
    gets its own specs (`params`, or None for PVE's own from the index) and a handler that
    knows its kind.
    """
    routes = []
    for kind in kinds:
        path = template.replace("{kind}", kind)
        specs = params(kind) if params is not None else SchemaParams(method, path)
        routes.append(Route(method, path, specs, handler(kind)))
    return routes


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    variable: tuple[str, _Node] | None = None
    methods: dict[str, Route] = field(default_factory=dict)


class Router:
    """The routes in a segment trie, built once."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._root = _Node()
        for route in routes:
            self._add(route)

    def _add(self, route: Route) -> None:
        node = self._root
        for part in route.path.strip("/").split("/"):
            if part.startswith("{") and part.endswith("}"):
                name = part[1:-1]
                if node.variable is None:
                    node.variable = (name, _Node())
                elif node.variable[0] != name:
                    raise ValueError(
                        f"{route.path}: {{{name}}} clashes with {{{node.variable[0]}}}"
                    )
                node = node.variable[1]
            else:
                node = node.literal.setdefault(part, _Node())
        if route.method in node.methods:
            raise ValueError(f"{route.method} {route.path} is declared twice")
        node.methods[route.method] = route

    def find(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
        """The route for `method` and the path segments, with its path parameters."""
        found: dict[str, str] = {}
        route = self._walk(self._root, method, segments, 0, found)
        return (route, found) if route is not None else None

    def _walk(
        self, node: _Node, method: str, segments: list[str], at: int, found: dict[str, str]
    ) -> Route | None:
        if at == len(segments):
            return node.methods.get(method)
        segment = segments[at]
        child = node.literal.get(segment)
        if child is not None:
            route = self._walk(child, method, segments, at + 1, found)
            if route is not None:
                return route
        if node.variable is not None:
            name, child = node.variable
            route = self._walk(child, method, segments, at + 1, found)
            if route is not None:
                found[name] = segment
                return route
        return None


def text(params: Params, name: str) -> str:
    """A validated string parameter."""
    return str(params[name])


def integer(params: Params, name: str) -> int:
    """A validated integer parameter."""
    value = params[name]
    assert isinstance(value, int)
    return value


def deleted_keys(params: Params) -> list[str]:
    """The keys a PUT's comma-separated `delete` parameter names, blanks dropped."""
    return [k.strip() for k in str(params.get("delete", "")).split(",") if k.strip()]
