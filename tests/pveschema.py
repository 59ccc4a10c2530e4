"""Check API requests and answers against Proxmox VE's own published schema.

The apidoc tree (`pve-9.2-apidoc.json`, the JSON behind PVE's API viewer) lives beside the
project in `../shared/pve-api/` and is AGPL-derived data, so it is read from there at test
time and never copied in; `PVEMCP_PVE_API_DIR` points elsewhere. Tests that need it call
`require_schema()`, which skips with the reason when the file is absent.

The checks speak PVE's schema dialect (`optional: 1`, `additionalProperties: 0`, 0/1
booleans, named formats such as `pve-node`, indexed names such as `net[n]`):

- `check_request(method, path, params)`: would PVE accept these parameters (path and
  query/body together, as strings or JSON values)? Strict, like PVE's own verifier.
- `check_response(method, path, data)`: does `data` fit the method's `returns` schema?
  Lenient where the schema is loose: undeclared properties pass unless the schema says
  `additionalProperties: 0`, and prose defaults are ignored.

Both return a list of problems, empty when all is well, so a failing assert shows them all.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCHEMA_FILE = "pve-9.2-apidoc.json"
DIR_ENV = "PVEMCP_PVE_API_DIR"
METHODS = ("GET", "POST", "PUT", "DELETE")

_PERL_FLAGS_RE = re.compile(r"\(\?\^([a-z]*):")
_INTEGER_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LIST_SPLIT_RE = re.compile(r"[;,\s\0]+")
_FORMATS: Mapping[str, re.Pattern[str]] = {
    "pve-node": re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"),
    "pve-vmid": re.compile(r"[1-9][0-9]{2,8}"),
    "pve-storage-id": re.compile(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])"),
    "pve-configid": re.compile(r"(?i:[a-z][a-z0-9_-]+)"),
    "pve-storage-content": re.compile(r"images|rootdir|vztmpl|iso|backup|snippets|import|none"),
    "pve-task-status-type": re.compile(r"(?i:ok|error|warning|unknown)"),
    "pve-tag": re.compile(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)"),
}
"""Named formats checked here; any other format (CIDR, property strings...) passes."""


def schema_dir() -> Path:
    """`$PVEMCP_PVE_API_DIR`, else `<repo>/../shared/pve-api`."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[1]
    return repo.parent / "shared" / "pve-api"


def schema_path() -> Path:
    """Where the 9.2 apidoc is expected."""
    return schema_dir() / SCHEMA_FILE


def skip_reason() -> str | None:
    """Why schema tests cannot run here, or None when the schema file is present."""
    path = schema_path()
    if path.is_file():
        return None
    return (
        f"PVE API schema not found at {path} (AGPL-derived data kept outside the project; "
        f"put {SCHEMA_FILE} in ../shared/pve-api/ or set {DIR_ENV})"
    )


@dataclass(frozen=True)
class Endpoint:
    """One method of the tree: `method` on the template `path`, with its `info` entry."""

    method: str
    path: str
    info: Mapping[str, Any]

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The `parameters` schema (an object schema)."""
        params: Mapping[str, Any] = self.info.get("parameters") or {}
        return params

    @property
    def returns(self) -> Mapping[str, Any]:
        """The `returns` schema."""
        returns: Mapping[str, Any] = self.info.get("returns") or {}
        return returns


def _python_regex(pattern: str) -> re.Pattern[str] | None:
    """PVE's Perl pattern as a Python regex; None if it cannot be translated."""

    def flags(match: re.Match[str]) -> str:
        kept = match.group(1).replace("u", "")
        return f"(?{kept}:" if kept else "(?:"

    try:
        return re.compile(_PERL_FLAGS_RE.sub(flags, pattern).replace(r"\z", r"\Z"))
    except re.error:
        return None


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _is_var(part: str) -> bool:
    return part.startswith("{") and part.endswith("}")


def _prop_schema(props: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The property schema for `name`, mapping `net0` onto `net[n]`."""
    if name in props:
        schema: Mapping[str, Any] = props[name]
        return schema
    match = re.fullmatch(r"([a-zA-Z_-]+?)(\d+)", name)
    if match is not None:
        indexed: Mapping[str, Any] | None = props.get(f"{match.group(1)}[n]")
        return indexed
    return None


class _Checker:
    """Walks a value against a schema, collecting problems with their locations."""

    def __init__(self, request: bool) -> None:
        self.request = request
        self.problems: list[str] = []

    def add(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")

    def value(self, where: str, value: Any, schema: Mapping[str, Any]) -> None:
        converted = self._typed(where, value, schema)
        if converted is None:
            return
        kind = schema.get("type")
        if kind == "object" or isinstance(converted, dict):
            if isinstance(converted, dict):
                self.object(where, converted, schema)
            return
        if kind == "array" or isinstance(converted, list):
            items = schema.get("items")
            if isinstance(converted, list) and isinstance(items, Mapping):
                for index, item in enumerate(converted):
                    self.value(f"{where}[{index}]", item, items)
            return
        self._scalar(where, converted, schema)

    def object(self, where: str, data: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
        props: Mapping[str, Any] = schema.get("properties") or {}
        for name, prop in props.items():
            if "[n]" in name or prop.get("optional") or prop.get("alias"):
                continue
            if data.get(name) is None and prop.get("type") != "null":
                self.add(f"{where}.{name}", "property is missing and it is not optional")
        closed = schema.get("additionalProperties") in (0, False)
        for name, item in data.items():
            prop = _prop_schema(props, name)
            if prop is None:
                if closed:
                    self.add(f"{where}.{name}", "property is not defined in schema")
                continue
            if item is None and prop.get("optional"):
                continue
            self.value(f"{where}.{name}", item, prop)

    def _typed(self, where: str, value: Any, schema: Mapping[str, Any]) -> Any:
        """The value in its schema type, or None after recording a type problem."""
        kind = schema.get("type")
        result = self._convert(kind, value)
        if result is _BAD:
            self.add(where, f"type check ('{kind}') failed - got {value!r}")
            return None
        return result

    def _convert(self, kind: Any, value: Any) -> Any:
        if kind in (None, "any"):
            return value
        if kind == "null":
            return value if value is None else _BAD
        if value is None:
            return _BAD
        if self.request:
            return _convert_request(kind, value)
        return _convert_response(kind, value)

    def _scalar(self, where: str, value: Any, schema: Mapping[str, Any]) -> None:
        if isinstance(value, bool) or schema.get("type") == "boolean":
            return
        if isinstance(value, int | float):
            low, high = schema.get("minimum"), schema.get("maximum")
            if low is not None and value < float(low):
                self.add(where, f"value must have a minimum value of {low}")
            if high is not None and value > float(high):
                self.add(where, f"value must have a maximum value of {high}")
        text = str(value)
        enum = schema.get("enum")
        if enum is not None and text not in [str(option) for option in enum]:
            self.add(where, f"value '{text}' does not have a value in the enumeration {enum}")
        if isinstance(value, str):
            self._string(where, value, schema)

    def _string(self, where: str, value: str, schema: Mapping[str, Any]) -> None:
        max_length, min_length = schema.get("maxLength"), schema.get("minLength")
        if max_length is not None and len(value) > int(max_length):
            self.add(where, f"value may only be {max_length} characters long")
        if min_length is not None and len(value) < int(min_length):
            self.add(where, f"value must be at least {min_length} characters long")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            regex = _python_regex(pattern)
            if regex is not None and regex.fullmatch(value) is None:
                self.add(where, f"value {value!r} does not match the regex pattern {pattern!r}")
        fmt = schema.get("format")
        if isinstance(fmt, str) and not _format_ok(fmt, value):
            self.add(where, f"invalid format {fmt!r} - got {value!r}")


class _Bad:
    """Marks a value that failed its type check."""


_BAD = _Bad()


def _convert_request(kind: str, value: Any) -> Any:
    """A request value (a query/form string or a JSON value) in the schema's type."""
    if isinstance(value, list) and kind != "array":
        # PVE joins an array given for a `*-list` string; other scalars take one value.
        return ",".join(map(str, value)) if kind == "string" else _BAD
    match kind:
        case "integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            return int(value) if isinstance(value, str) and _INTEGER_RE.fullmatch(value) else _BAD
        case "number":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
            return float(value) if isinstance(value, str) and _NUMBER_RE.fullmatch(value) else _BAD
        case "boolean":
            if isinstance(value, bool):
                return value
            return value in (1, "1") if value in (0, 1, "0", "1") else _BAD
        case "string":
            if isinstance(value, str):
                return value
            return (
                str(value)
                if isinstance(value, int | float) and not isinstance(value, bool)
                else _BAD
            )
        case "array":
            return value if isinstance(value, list) else [value]
        case "object":
            return value if isinstance(value, dict) else _BAD
    return value


def _convert_response(kind: str, value: Any) -> Any:
    """A decoded JSON value, accepted only in the schema's type (booleans as 0/1 too)."""
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool) or value in (0, 1),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(kind, True)
    return value if ok else _BAD


def _format_ok(fmt: str, value: str) -> bool:
    base = fmt.removesuffix("-list")
    regex = _FORMATS.get(base)
    if regex is None:
        return True
    if base == fmt:
        return regex.fullmatch(value) is not None
    return all(regex.fullmatch(item) for item in _LIST_SPLIT_RE.split(value.strip()) if item)


class ApiSchema:
    """The apidoc tree, indexed by (METHOD, template path)."""

    def __init__(self, tree: list[Mapping[str, Any]]) -> None:
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        for node in _walk(tree):
            for method, info in (node.get("info") or {}).items():
                self._endpoints[method, node["path"]] = Endpoint(method, node["path"], info)

    @classmethod
    def load(cls, path: Path | None = None) -> ApiSchema:
        """Read the tree from `path` (default: `schema_path()`)."""
        with (path or schema_path()).open(encoding="utf-8") as handle:
            return cls(json.load(handle))

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints.values())

    def has(self, method: str, template: str) -> bool:
        """Whether `method` exists on exactly this template path."""
        return (method, template) in self._endpoints

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        """The method serving a concrete path (`{x}` matches one segment; literals win)."""
        return self._resolve(method, path)[0]

    def _resolve(self, method: str, path: str) -> tuple[Endpoint | None, dict[str, str]]:
        segments = _segments(path)
        best: tuple[tuple[int, ...], Endpoint, dict[str, str]] | None = None
        for (candidate_method, template), endpoint in self._endpoints.items():
            parts = _segments(template)
            if candidate_method != method or len(parts) != len(segments):
                continue
            found: dict[str, str] = {}
            score: list[int] = []
            for part, segment in zip(parts, segments, strict=True):
                if _is_var(part):
                    found[part[1:-1]] = segment
                    score.append(0)
                elif part == segment:
                    score.append(1)
                else:
                    break
            else:
                if best is None or tuple(score) > best[0]:
                    best = (tuple(score), endpoint, found)
        return (best[1], best[2]) if best is not None else (None, {})

    def check_request(self, method: str, path: str, params: Mapping[str, Any] | None) -> list[str]:
        """Problems PVE's verifier would report for these parameters (empty = accepted)."""
        endpoint, path_params = self._resolve(method, path)
        if endpoint is None:
            return [f"{method} {path}: no such method in the schema"]
        given: dict[str, Any] = {**(params or {}), **path_params}
        schema = endpoint.parameters
        checker = _Checker(request=True)
        props: Mapping[str, Any] = schema.get("properties") or {}
        for name, prop in props.items():
            if given.get(name) is None and not prop.get("optional") and "[n]" not in name:
                checker.add(name, "property is missing and it is not optional")
        for name, value in given.items():
            prop = _prop_schema(props, name)
            if prop is None:
                if schema.get("additionalProperties") in (0, False):
                    checker.add(name, "property is not defined in schema")
            elif value is not None:
                checker.value(name, value, prop)
        return checker.problems

    def check_response(self, method: str, path: str, data: Any) -> list[str]:
        """Problems of `data` (the answer's `data`) against the method's `returns` schema."""
        endpoint = self.endpoint(method, path)
        if endpoint is None:
            return [f"{method} {path}: no such method in the schema"]
        checker = _Checker(request=False)
        returns = endpoint.returns
        if data is None and returns.get("type") not in (None, "null", "any"):
            if not returns.get("optional"):
                checker.add("data", f"null, but the schema returns {returns.get('type')}")
            return checker.problems
        checker.value("data", data, returns)
        return checker.problems


def _walk(nodes: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children") or [])


@functools.cache
def load_schema() -> ApiSchema:
    """The default schema, read once per test session; FileNotFoundError when absent."""
    return ApiSchema.load()


def require_schema() -> ApiSchema:
    """The default schema, or skip the calling test with the reason it is missing."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return load_schema()


def check_request(method: str, path: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """`ApiSchema.check_request` on the default schema (path relative to `/api2/json`)."""
    return load_schema().check_request(method, path, params)


def check_response(method: str, path: str, data: Any) -> list[str]:
    """`ApiSchema.check_response` on the default schema (path relative to `/api2/json`)."""
    return load_schema().check_response(method, path, data)
