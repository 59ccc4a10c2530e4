"""Request paths and parameters in the exact form the PVE HTTP server expects.

Paths come partly from tool arguments, so every segment is checked and re-encoded here: a
caller must not be able to climb out of the intended API path (`..`, `%2e%2e`), smuggle a
query (`?`, `#`) or send control characters. Parameters follow PVE's HTTP rules, which are
stricter than the CLI: booleans only as `1`/`0`, arrays as repeated keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlencode

# RFC 3986 path characters PVE identifiers use literally (UPIDs, `user@realm!token`,
# volume ids); everything else outside the unreserved set is percent-encoded.
_SEGMENT_SAFE = ":@!,="
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MAX_PATH_LENGTH = 2048


class PathError(ValueError):
    """A request path that is refused before anything is sent."""


def _check_segment(raw: str, decoded: str) -> None:
    """Refuse a decoded segment that could change the request's meaning on the server."""
    if _CONTROL_RE.search(decoded):
        raise PathError(f"path segment {raw!r} contains a control character")
    if "?" in decoded or "#" in decoded:
        raise PathError(f"path segment {raw!r} contains '?' or '#'; pass parameters in params")
    # A segment may carry an encoded '/' (a volume id such as local:iso%2Fx.iso); none of
    # its pieces may be a dot segment either, in case the server decodes before routing.
    for piece in decoded.split("/"):
        if piece in {".", ".."}:
            raise PathError(f"path segment {raw!r} is a dot segment ('.' or '..')")
    if decoded.startswith("/") or decoded.endswith("/") or "//" in decoded:
        raise PathError(f"path segment {raw!r} contains an empty component")


def encode_path(path: str) -> str:
    """Check `path` (`/nodes/pve1/qemu/100/status`) and return it percent-encoded.

    Each segment may already contain `%XX` escapes (needed for a `/` inside one segment,
    as in volume ids); it is decoded, checked and encoded again, so `%2e%2e` is refused
    like `..`. Raises `PathError` for an empty segment (`//`, a trailing `/`), a dot
    segment, `?`, `#`, a control character or a malformed escape.
    """
    if not path.startswith("/"):
        raise PathError(f"path {path[:80]!r} must start with '/'")
    if len(path) > _MAX_PATH_LENGTH:
        raise PathError(f"path is longer than {_MAX_PATH_LENGTH} characters")
    encoded: list[str] = []
    for raw in path[1:].split("/"):
        if not raw:
            raise PathError(f"path {path[:80]!r} has an empty segment ('//' or a trailing '/')")
        if _BAD_ESCAPE_RE.search(raw):
            raise PathError(f"path segment {raw!r} has a '%' that is not a %XX escape")
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise PathError(f"path segment {raw!r} decodes to invalid UTF-8") from None
        _check_segment(raw, decoded)
        encoded.append(quote(decoded, safe=_SEGMENT_SAFE))
    return "/" + "/".join(encoded)


def _scalar(key: str, value: object) -> str:
    """One value as PVE's HTTP server parses it (booleans as 1/0, never `true`)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {key!r} is not a finite number")
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"parameter {key!r} contains a NUL character")
        return value
    raise TypeError(f"parameter {key!r} has unsupported type {type(value).__name__}")


def param_pairs(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Flatten `params` into (key, value) pairs: None dropped, lists as repeated keys.

    Raises `ValueError` for a value PVE cannot receive (NUL, NaN) and `TypeError` for a
    type that has no PVE encoding (nested lists, mappings), which is a caller bug.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if not isinstance(key, str) or not key or _CONTROL_RE.search(key):
            raise ValueError(f"parameter name {key!r} is not valid")
        if value is None:
            continue
        if isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, list | tuple | Mapping):
                    raise TypeError(f"parameter {key!r} contains a nested collection")
                if item is not None:
                    pairs.append((key, _scalar(key, item)))
        else:
            pairs.append((key, _scalar(key, value)))
    return pairs


def encode_form(params: Mapping[str, Any] | None) -> str:
    """`application/x-www-form-urlencoded` text for a query string or a POST/PUT body.

    Spaces become `%20`, never `+`, so any decoder reads the value back unchanged.
    """
    return urlencode(param_pairs(params), quote_via=quote, safe="")
