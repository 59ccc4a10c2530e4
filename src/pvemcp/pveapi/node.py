"""The API schema a node serves itself: fetched once per PVE version, kept on disk.

Every PVE node with pve-docs installed serves its API viewer's data without a login at
`/pve-docs/api-viewer/apidoc.js`. pve-docs' Makefile concatenates `apidata.js` (which
`scripts/extractapi.pl` prints as `const apiSchema = <JSON array>;`) and the viewer's code
(`PVEAPI.js`), so the array is read out of it with a JSON decoder: the script is never
run. It becomes an index that keeps the descriptions (the node's own text, which
`proxmox_api_describe` shows), written to the cache directory as
`pve-<version>-<sha256 of apidoc.js>.index.json.gz` (0600): a restart reads it instead of
fetching again, and a node upgraded to another version gets its own. The text stays in
the operator's cache; the shipped index has none.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import httpx2

from pvemcp.pveapi.build import SchemaShapeError, encode_index
from pvemcp.pveapi.index import Index, RouteError, index_of_tree, load_index

APIDOC_PATH = "/pve-docs/api-viewer/apidoc.js"
"""Where pveproxy serves the API viewer's data (pve-docs installs it, unauthenticated)."""

_ASSIGNMENT = re.compile(r"\b(?:const|let|var)\s+apiSchema\s*=\s*")
_UNSAFE = re.compile(r"[^A-Za-z0-9.+~_-]")
_BROKEN = (OSError, ValueError, EOFError, LookupError, TypeError, AttributeError)
"""What reading a cache file raises when it is not a whole index (not gzip, cut short, not
JSON, or JSON of another shape: no `paths`, a list...): it is then fetched again."""


class NodeSchema:
    """One cluster's node schema in one gateway (its cluster pool holds it), resolved on
    the cluster's first use: a lock so that concurrent first calls fetch once, and the
    index once known (the node's own, or the shipped one after a failed fetch)."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.index: Index | None = None


class ApidocError(ValueError):
    """An apidoc.js that cannot be used: too big, not found, or not the API viewer's data."""


def parse_apidoc(raw: bytes) -> list[Any]:
    """The `apiSchema` array of an `apidoc.js`, decoded as JSON (never evaluated); the
    viewer code after it is ignored. `ApidocError` when there is no such array."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApidocError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    found = _ASSIGNMENT.search(text)
    if found is None:
        raise ApidocError("no 'const apiSchema = [...]' in it")
    try:
        tree, end = json.JSONDecoder().raw_decode(text, found.end())
    except json.JSONDecodeError as exc:
        raise ApidocError(f"apiSchema is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not text[end:].lstrip().startswith(";"):
        raise ApidocError("apiSchema's array is not followed by ';'")
    if not tree or not isinstance(tree, list) or not all(_is_path(node) for node in tree):
        raise ApidocError("apiSchema is not a list of API paths")
    return tree


def _is_path(node: object) -> bool:
    return isinstance(node, dict) and isinstance(node.get("path"), str)


def node_index(raw: bytes, version: str) -> tuple[Index, bytes]:
    """The index of a fetched `apidoc.js` of PVE `version`, and its cache file's bytes.
    `ApidocError` when it does not parse or has a shape the index builder refuses."""
    try:
        data = index_of_tree(parse_apidoc(raw), version, prose=True)
    except SchemaShapeError as exc:
        raise ApidocError(f"unexpected schema shape: {exc}") from None
    index = Index(data, source=f"node {version}")
    moved = _moved(index)
    if moved is not None:
        raise ApidocError(moved)
    return index, encode_index(data)


def _moved(index: Index) -> str | None:
    """Why `index` (a node's) may not be used, or None: a path the shipped index knows that
    it matches to another template, either way round. The tier tables, the credential
    refusals and typed tools' floors are keyed by the shipped templates, and a call is
    rebuilt from the template it matched, so a schema that served `/nodes/{node}/termproxy`
    as `/nodes/{node}/{x}`, or a literal `/access/users/root@pam/token/agent` beside
    `/access/users/{userid}/token/{tokenid}`, would make a console proxy or a token's
    creation a plain POST. A path the node lacks (an older version) is fine: it is
    refused; one the shipped index lacks (a newer version) is tiered by its method."""
    shipped = load_index()
    for known, other in ((shipped, index), (index, shipped)):
        for endpoint in known:
            try:
                found, _ = other.match(endpoint.method, endpoint.template)
            except RouteError:
                continue
            if found.template != endpoint.template:
                node, ours = (found, endpoint) if known is shipped else (endpoint, found)
                return (
                    f"it serves {ours.method} {ours.template} as {node.template}, "
                    "unlike the shipped schema"
                )
    return None


def _stem(version: str) -> str:
    return f"pve-{_UNSAFE.sub('_', version)}-"


def cache_file(directory: Path, version: str, raw: bytes) -> Path:
    """Where the index of `raw` (an apidoc.js of PVE `version`) is cached."""
    return directory / f"{_stem(version)}{hashlib.sha256(raw).hexdigest()}.index.json.gz"


def read_cached(directory: Path, version: str, max_bytes: int) -> Index | None:
    """The cached index of PVE `version` (the newest file, when a node's pve-docs changed
    within one version), or None. A file that is unreadable, too big, or of another
    version or index format is passed over: it is fetched again."""
    stem = _stem(version)
    with contextlib.suppress(OSError):
        found = [path for path in directory.iterdir() if path.name.startswith(stem)]
        for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
            with contextlib.suppress(*_BROKEN):
                with gzip.open(path, "rb") as file:
                    raw = file.read(max_bytes + 1)
                data = json.loads(raw) if len(raw) <= max_bytes else None
                if isinstance(data, dict) and data.get("pve") == version:
                    index = Index(data, source=f"node {version}")
                    if _moved(index) is None:
                        return index
    return None


def write_cached(path: Path, encoded: bytes) -> None:
    """Write a cache file: private (0600, its directory 0700), whole or not at all."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(encoded)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


async def fetch_apidoc(
    api_url: str, transport: httpx2.AsyncBaseTransport, *, max_bytes: int, timeout: float
) -> bytes:
    """GET `apidoc.js` from the node at `api_url` over `transport` (the cluster's TLS
    settings and pin), reading at most `max_bytes`; `ApidocError` for any other answer
    than 200 or a body over the cap. No credential is sent: pveproxy serves it to anyone.
    The caller bounds the whole exchange in time; `timeout` bounds each step.

    The body is asked for uncompressed; a node (or a proxy) that compresses anyway is
    still held to the cap on the DECODED bytes as they stream: httpx2 inflates each
    network chunk in pieces of at most 1 MiB (`_decoders.MAX_DECODE_CHUNK_SIZE`) yielded
    one by one, so a gzip bomb is cut off a piece past the cap, never inflated whole."""
    async with (
        httpx2.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        ) as client,
        client.stream(
            "GET", api_url.rstrip("/") + APIDOC_PATH, headers={"Accept-Encoding": "identity"}
        ) as response,
    ):
        if response.status_code != 200:
            raise ApidocError(f"HTTP {response.status_code} {response.reason_phrase}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ApidocError(f"{declared} bytes, over the cap of {max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise ApidocError(f"over the cap of {max_bytes} bytes")
    return bytes(body)
