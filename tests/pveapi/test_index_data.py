"""The shipped index: in step with the official schema, free of its prose, loaded lazily.

The schema (`../shared/pve-api/`) is AGPL-derived data kept outside the project; the tests
that need it skip with the reason when it is absent (see `tests/pveschema.py`)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.pveapi import load_index, read_index_file
from pvemcp.pveapi.build import (
    SchemaShapeError,
    build_index,
    encode_index,
    strip_schema,
    upid_methods_of,
)
from pvemcp.pveapi.index import data_path
from tests.pveschema import require_schema, schema_dir

PROSE_KEYS = ("description", "verbose_description", "title", "typetext", "format_description")


def _tree() -> list[dict[str, Any]]:
    require_schema()
    tree: list[dict[str, Any]] = json.loads((schema_dir() / "pve-9.2-apidoc.json").read_text())
    return tree


def _upids() -> list[tuple[str, str]]:
    return upid_methods_of(json.loads((schema_dir() / "upid-endpoints-9.2.json").read_text()))


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _prose(value: Any) -> Iterator[str]:
    """Every prose text of the schema: descriptions, titles, type texts, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PROSE_KEYS and isinstance(item, str):
                yield item
            else:
                yield from _prose(item)
    elif isinstance(value, list):
        for item in value:
            yield from _prose(item)


def test_shipped_index_is_in_step_with_the_schema() -> None:
    """Regenerating from ../shared gives the shipped file, byte for byte."""
    expected = encode_index(build_index(_tree(), _upids(), "9.2"))
    shipped = data_path("9.2").read_bytes()
    assert shipped == expected, "the index is stale: run scripts/gen_pveapi_index.py"


def test_index_holds_no_description_text() -> None:
    """No string of the index equals or contains a description (or title, type text) of
    the schema longer than 20 characters: the schema's prose stays out of the project."""
    index = json.loads(gzip.decompress(data_path("9.2").read_bytes()))
    haystack = "\0".join(_strings(index))
    # A single token (`write_fadvise_dontneed` as a type text) is a name the index must
    # keep, not a sentence.
    prose = {text for text in _prose(_tree()) if len(text) > 20 and " " in text.strip()}
    assert len(prose) > 2000  # the check really looked at the schema's sentences
    leaked = [text[:80] for text in prose if text in haystack]
    assert not leaked, leaked


def test_every_method_is_indexed_with_its_facts() -> None:
    index = load_index()
    tree_methods = {
        (method, node["path"]) for node in _walk(_tree()) for method in node.get("info") or {}
    }
    assert {(e.method, e.template) for e in index} == tree_methods
    assert {(e.method, e.template) for e in index if e.upid} == set(_upids())
    clone = index.endpoint("POST", "/nodes/{node}/qemu/{vmid}/clone")
    assert clone is not None
    assert (clone.upid, clone.protected, clone.proxyto, clone.allowtoken) == (
        True,
        True,
        "node",
        True,
    )
    assert clone.permissions is not None and "check" in clone.permissions
    assert "description" not in clone.permissions
    ticket = index.endpoint("POST", "/access/ticket")
    assert ticket is not None and not ticket.allowtoken
    assert clone.properties["newid"]["minimum"] == 100
    assert clone.returns == {"type": "string"}


def _walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children") or [])


def test_a_schema_key_nobody_decided_about_fails_the_build() -> None:
    with pytest.raises(SchemaShapeError, match="frobnicate"):
        strip_schema({"type": "string", "frobnicate": 1}, "POST /x")


def test_defaults_in_words_are_dropped_values_kept() -> None:
    """PVE states some defaults as sentences; those are prose, not values."""
    worded = {"type": "integer", "default": "clone limit from datacenter or storage config"}
    assert strip_schema(worded, "x") == {"type": "integer"}
    assert strip_schema({"type": "string", "default": "vmbr0"}, "x")["default"] == "vmbr0"
    assert strip_schema({"type": "integer", "default": 1}, "x")["default"] == 1


def test_an_index_or_an_apidoc_can_be_read_from_a_file(tmp_path: Path) -> None:
    """A configured schema: the generator's file, or a node's raw apidoc tree (whose UPID
    methods come from the shipped index, since the schema cannot tell them)."""
    tree = _tree()
    raw = tmp_path / "apidoc.json"
    raw.write_text(json.dumps(tree))
    from_raw = read_index_file(raw)
    assert len(from_raw) == len(load_index())
    assert {(e.method, e.template) for e in from_raw if e.upid} == set(_upids())
    packed = tmp_path / "index.json.gz"
    packed.write_bytes(data_path("9.2").read_bytes())
    assert read_index_file(packed).endpoint("GET", "/version") is not None


def test_unknown_version_names_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match=r"pve-9\.2\.index"):
        load_index("7.0")


def test_the_index_is_not_loaded_at_import() -> None:
    """Cold start does not grow: importing the package and the gateway's context reads no
    index; the first request does."""
    code = (
        "import pvemcp.gateway.context, pvemcp.pveapi.index as i;"
        "print(i.load_index.cache_info().currsize)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "0"
