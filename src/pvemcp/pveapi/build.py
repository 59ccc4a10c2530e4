"""Build the structural index of the PVE API from the apidoc tree PVE publishes.

The apidoc (`apidoc.js` on every node, `../shared/pve-api/pve-9.2-apidoc.json` for the
tests) is AGPL-derived data: its descriptions are Proxmox's sentences. The index keeps only
the facts a client needs to send a valid call, and no prose: path templates, methods,
parameter names and their type, format, enum, range, length, pattern, optional/default,
property-string keys, return shapes, permissions, `protected`, `proxyto`, `allowtoken`, and
whether a method returns a task UPID (which the schema itself cannot tell; the caller
passes the list of those methods).

Every key of the schema is either kept or dropped by name here, so a schema version that
brings a new key fails the build instead of silently leaking or losing it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

INDEX_FORMAT = 1
"""Bumped when the layout of the index changes (the loader refuses other layouts)."""

_KEPT = frozenset(
    {
        "type",
        "format",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "optional",
        "default",
        "default_key",
        "alias",
        "keyAlias",
        "items",
        "properties",
        "additionalProperties",
        "requires",
        "instance-types",
        "type-property",
        "oneOf",
    }
)
"""Schema keys with structural meaning for PVE's verifier (`PVE::JSONSchema`)."""

_DROPPED = frozenset(
    {
        # Prose: Proxmox's own sentences, never copied.
        "description",
        "verbose_description",
        "title",
        "typetext",
        "format_description",
        # Presentation for the web UI and the CLI, not checked by the server.
        "links",
        "renderer",
        # Misspelt `minimum`/`maximum` in two schemas: PVE's verifier ignores them.
        "min",
        "max",
    }
)

_METHOD_KEPT = frozenset(
    {
        "name",
        "parameters",
        "returns",
        "permissions",
        "protected",
        "proxyto",
        "allowtoken",
        "expose_credentials",
        "download_allowed",
    }
)
_METHOD_DROPPED = frozenset({"description", "method"})
"""`method` repeats the key the entry is stored under."""

_PERMISSION_KEPT = frozenset({"check", "user"})


class SchemaShapeError(ValueError):
    """The apidoc has a key or shape this builder has not decided about."""


def _default(schema: Mapping[str, Any]) -> Any:
    """The default when it is a value, None when it is a sentence.

    PVE's schema sometimes states a default in words ("clone limit from datacenter or
    storage config" for an integer); those are prose and stay out."""
    value = schema["default"]
    kind = schema.get("type")
    if isinstance(value, bool) or kind == "boolean":
        return value if value in (0, 1) else None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and not any(char.isspace() for char in value):
        if kind in ("integer", "number"):
            try:
                float(value)
            except ValueError:
                return None
        return value
    return None


def strip_schema(schema: Mapping[str, Any], where: str, prose: bool = False) -> dict[str, Any]:
    """A copy of one JSON schema with only its structural keys, recursively; with `prose`,
    its `description` too (a node's own schema, kept in the operator's cache only)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if prose and key == "description" and isinstance(value, str):
            out[key] = value
            continue
        if key in _DROPPED:
            continue
        if key not in _KEPT:
            raise SchemaShapeError(f"{where}: unknown schema key {key!r}")
        if key == "default":
            kept = _default(schema)
            if kept is not None:
                out[key] = kept
        elif key == "properties" or (key == "format" and isinstance(value, Mapping)):
            out[key] = {
                name: strip_schema(sub, f"{where}.{name}", prose) for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties", "requires") and isinstance(value, Mapping):
            out[key] = strip_schema(value, f"{where}.{key}", prose)
        elif key == "oneOf":
            out[key] = [strip_schema(sub, f"{where}|{n}", prose) for n, sub in enumerate(value)]
        else:
            out[key] = value
    return out


def _permissions(permissions: Mapping[str, Any]) -> dict[str, Any]:
    """`check` and `user` of a method's permissions; its `description` is prose."""
    return {key: value for key, value in permissions.items() if key in _PERMISSION_KEPT}


def _method(info: Mapping[str, Any], where: str, upid: bool, prose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if prose and key == "description" and isinstance(value, str):
            out[key] = value
            continue
        if key in _METHOD_DROPPED:
            continue
        if key not in _METHOD_KEPT:
            raise SchemaShapeError(f"{where}: unknown method key {key!r}")
        if key in ("parameters", "returns"):
            out[key] = strip_schema(value, f"{where} {key}", prose)
        elif key == "permissions":
            out[key] = _permissions(value)
        else:
            out[key] = value
    if upid:
        out["upid"] = 1
    return out


def _walk(nodes: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children") or [])


def build_index(
    tree: Iterable[Mapping[str, Any]],
    upid_methods: Iterable[tuple[str, str]],
    version: str,
    *,
    prose: bool = False,
) -> dict[str, Any]:
    """The index of `tree` (the apidoc's list of nodes) as plain JSON data.

    `upid_methods` are the `(METHOD, template)` pairs that return a task UPID; each must
    exist in the tree. With `prose`, the methods' and parameters' descriptions are kept:
    only for a schema a node served to this gateway (`node.py`), never for the shipped
    index."""
    upids = set(upid_methods)
    paths: dict[str, dict[str, Any]] = {}
    for node in _walk(tree):
        info = node.get("info") or {}
        if info:
            path = node["path"]
            paths[path] = {
                method: _method(entry, f"{method} {path}", (method, path) in upids, prose)
                for method, entry in info.items()
            }
    missing = sorted(f"{m} {p}" for m, p in upids if m not in paths.get(p, {}))
    if missing:
        raise SchemaShapeError(f"UPID methods not in the schema: {missing}")
    return {"format": INDEX_FORMAT, "pve": version, "paths": paths}


def upid_methods_of(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The `(METHOD, template)` pairs of an `upid-endpoints-*.json` document."""
    return [(item["method"], item["path"]) for item in document["upid_string_endpoints"]]


def encode_index(index: Mapping[str, Any]) -> bytes:
    """The index as gzip'd compact JSON, byte-stable: sorted keys, ASCII only, and a
    fixed gzip header (no file name, mtime 0), so that regenerating it from the same
    schema yields the same file."""
    text = json.dumps(index, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0)
