"""The structural index of the PVE API: load it, match a request to its method.

The index (`data/pve-<version>.index.json.gz`, built by `scripts/gen_pveapi_index.py`, see
`build.py`) is read on first use and kept, so importing this module costs nothing and the
first call pays the load once (about 10 ms). A path is matched through a trie of the
path templates, one segment at a time, literals before `{variables}` as PVE's router
does; a path or method the API does not have is refused with the closest names.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from pvemcp.pveapi.build import INDEX_FORMAT, build_index

DATA_DIR = Path(__file__).resolve().parent / "data"
METHODS = ("GET", "POST", "PUT", "DELETE")


def data_path(version: str) -> Path:
    """Where the shipped index of PVE `version` lives."""
    return DATA_DIR / f"pve-{version}.index.json.gz"


def closest(name: str, candidates: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """Up to `n` names from `candidates` that look like `name` (for "did you mean")."""
    import difflib  # noqa: PLC0415 - only a refusal needs it; imports stay cheap

    return tuple(difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6))


class Endpoint(NamedTuple):
    """One method of the API: `method` on the path `template`, with its structural facts.

    A named tuple rather than a dataclass: it is as immutable and builds no code at import,
    which keeps importing this package cheap."""

    method: str
    template: str
    info: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"Endpoint({self.method} {self.template})"

    @property
    def name(self) -> str:
        """PVE's name for the method (`vm_config`, `create_snapshot`, ...)."""
        return str(self.info.get("name", ""))

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The parameters' object schema (path parameters included, as in PVE)."""
        params: Mapping[str, Any] = self.info.get("parameters") or {}
        return params

    @property
    def properties(self) -> Mapping[str, Any]:
        props: Mapping[str, Any] = self.parameters.get("properties") or {}
        return props

    @property
    def returns(self) -> Mapping[str, Any]:
        returns: Mapping[str, Any] = self.info.get("returns") or {}
        return returns

    @property
    def permissions(self) -> Mapping[str, Any] | None:
        """`check` and/or `user` as PVE states them; None for root@pam-only methods."""
        permissions: Mapping[str, Any] | None = self.info.get("permissions")
        return permissions

    @property
    def protected(self) -> bool:
        """Whether pveproxy forwards it to the privileged pvedaemon."""
        return bool(self.info.get("protected"))

    @property
    def proxyto(self) -> str | None:
        """The parameter naming the node the call is forwarded to (usually `node`)."""
        value = self.info.get("proxyto")
        return str(value) if value else None

    @property
    def allowtoken(self) -> bool:
        """Whether API tokens may call it (a handful of login/password methods refuse)."""
        return bool(self.info.get("allowtoken", 1))

    @property
    def description(self) -> str | None:
        """The method's description: only in a schema a node served (`node.py`)."""
        text = self.info.get("description")
        return text if isinstance(text, str) else None

    @property
    def upid(self) -> bool:
        """Whether it returns a task UPID as its plain string result."""
        return bool(self.info.get("upid"))


class RouteError(LookupError):
    """A request the API has no method for: `field` is `path` or `method`."""

    def __init__(self, field: str, message: str, closest: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.closest = closest


class _Node:
    __slots__ = ("literals", "methods", "template", "variables")

    def __init__(self, template: str) -> None:
        self.template = template
        self.literals: dict[str, _Node] = {}
        self.variables: dict[str, _Node] = {}
        self.methods: dict[str, Endpoint] = {}


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


class Index:
    """The API's methods by template, and a route trie over the templates.

    `source` says where it came from, for the answers that show it: `shipped 9.2` (the
    package's own), `file` (the cluster's `api_schema`) or `node 9.2.0` (fetched from
    the node)."""

    def __init__(self, data: Mapping[str, Any], source: str | None = None) -> None:
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"index format {data.get('format')!r}, expected {INDEX_FORMAT}")
        self.version = str(data.get("pve", ""))
        self.source = source or f"shipped {self.version}"
        self._root = _Node("")
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        for template, methods in data["paths"].items():
            node = self._root
            for part in _split(template):
                children = node.variables if part.startswith("{") else node.literals
                key = part[1:-1] if part.startswith("{") else part
                node = children.setdefault(key, _Node(f"{node.template}/{part}"))
            for method, info in methods.items():
                endpoint = Endpoint(method, template, info)
                node.methods[method] = endpoint
                self._endpoints[method, template] = endpoint

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints.values())

    def __len__(self) -> int:
        return len(self._endpoints)

    def endpoint(self, method: str, template: str) -> Endpoint | None:
        """The method on exactly this template, or None."""
        return self._endpoints.get((method, template))

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
        """The method serving `path` (concrete, `%XX` escapes allowed in a segment) and the
        values of its `{variables}`; raises `RouteError` naming the closest path segment
        or the methods the path has."""
        segments = [unquote(part) for part in _split(path.split("?", 1)[0])]
        values: dict[str, str] = {}
        deepest: list[tuple[int, _Node]] = [(-1, self._root)]
        node = self._walk(self._root, segments, 0, values, deepest)
        if node is None:
            depth, parent = deepest[0]
            raise _no_path(path, segments[depth] if depth < len(segments) else None, parent)
        endpoint = node.methods.get(method)
        if endpoint is None:
            has = [name for name in METHODS if name in node.methods]
            raise RouteError(
                "method",
                f"{node.template} has no {method}; it has {', '.join(has) or 'no methods'}",
                tuple(has),
            )
        return endpoint, values

    def _walk(
        self,
        node: _Node,
        segments: list[str],
        depth: int,
        values: dict[str, str],
        deepest: list[tuple[int, _Node]],
    ) -> _Node | None:
        """The node `segments[depth:]` lead to, literals first; remembers the deepest
        node where matching failed, for the error."""
        if depth == len(segments):
            if node.methods:
                return node
            if depth > deepest[0][0]:
                deepest[0] = (depth, node)
            return None
        segment = segments[depth]
        child = node.literals.get(segment)
        if child is not None:
            found = self._walk(child, segments, depth + 1, values, deepest)
            if found is not None:
                return found
        for name, variable in node.variables.items():
            values[name] = segment
            found = self._walk(variable, segments, depth + 1, values, deepest)
            if found is not None:
                return found
            del values[name]
        if depth > deepest[0][0]:
            deepest[0] = (depth, node)
        return None


def _no_path(path: str, wrong: str | None, parent: _Node) -> RouteError:
    """The error for a path that leads nowhere: `wrong` is the first segment no template
    has below `parent` (None when the path ends at a directory without methods)."""
    where = parent.template or "/"
    options = sorted(parent.literals)
    below = ", ".join([*options[:10], *(f"{{{name}}}" for name in parent.variables)])
    if wrong is None:
        return RouteError(
            "path", f"no API method at {path!r}: {where} only holds sub-paths ({below})"
        )
    near = closest(wrong, options)
    message = f"no API path {path!r}: {where} has no {wrong!r}"
    if near:
        message += f" (did you mean {' or '.join(near)}?)"
    elif below:
        message += f"; it has {below}"
    return RouteError("path", message, near or tuple(options[:10]))


MAX_SCHEMA_BYTES = 64 * 1024 * 1024
"""The largest schema file read (PVE 9.2's whole apidoc is 2.3 MB)."""


def read_index_file(path: Path) -> Index:
    """An index from a file: an index as the generator writes it (gzip'd or not), or a
    raw apidoc tree (a JSON list, as `apidoc.js` carries it), whose UPID methods are then
    taken from the shipped index (the schema alone cannot tell them). `ValueError` for a
    file larger than `MAX_SCHEMA_BYTES` or one that is neither."""
    with path.open("rb") as file:
        raw = file.read(MAX_SCHEMA_BYTES + 1)
    if len(raw) > MAX_SCHEMA_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SCHEMA_BYTES} bytes")
    if raw[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unzipped:
            raw = unzipped.read(MAX_SCHEMA_BYTES + 1)
        if len(raw) > MAX_SCHEMA_BYTES:
            raise ValueError(f"{path}: larger than {MAX_SCHEMA_BYTES} bytes once unzipped")
    data = json.loads(raw)
    if isinstance(data, list):
        data = index_of_tree(data, version="")
    return Index(data, source="file")


def index_of_tree(tree: list[Any], version: str, *, prose: bool = False) -> dict[str, Any]:
    """The index data of an apidoc tree (`build_index`), its UPID methods taken from the
    shipped index: the schema alone cannot tell them, and a method that another version
    lacks is simply not marked."""
    known = {(endpoint.method, endpoint.template) for endpoint in load_index() if endpoint.upid}
    data = build_index(tree, [], version=version, prose=prose)
    for template, methods in data["paths"].items():
        for method, info in methods.items():
            if (method, template) in known:
                info["upid"] = 1
    return data


@functools.cache
def schema_index(path: Path | None) -> Index:
    """The index a cluster's requests are checked against: its configured schema file
    (`api_schema`), read once, or the shipped one."""
    return load_index() if path is None else read_index_file(path)


@functools.cache
def load_index(version: str = "9.2") -> Index:
    """The shipped index of PVE `version`, loaded on first use and then kept."""
    path = data_path(version)
    if not path.is_file():
        shipped = sorted(p.name for p in DATA_DIR.glob("pve-*.index.json.gz"))
        raise FileNotFoundError(f"no PVE API index for version {version!r} (shipped: {shipped})")
    return Index(json.loads(gzip.decompress(path.read_bytes())))
