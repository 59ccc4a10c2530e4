"""Check a request's parameters against the index, as PVE's verifier would, in words a
model can act on.

PVE (`PVE::JSONSchema::check_prop` / `parse_property_string`) refuses a request whose
parameters do not fit the method's schema: unknown names (the parameter objects are
closed), missing required ones, wrong types, out-of-range numbers, values outside an enum,
strings failing a pattern or a named format, and property strings (`scsi0:
"local-lvm:32,discard=on"`) with unknown or malformed keys. This module finds the same
problems before anything is sent, each as a `Problem` naming the field (`scsi0.discrad`)
and the closest valid names.

Values are taken as a client sends them: Python values that the backends encode for PVE
(`True` as `1`), or the strings PVE itself receives. Like PVE, integers may come as
decimal strings and booleans as `0`/`1`; unlike the CLI, PVE's HTTP server takes no
`true`/`yes` outside property strings, so neither does this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from pvemcp.pveapi.formats import check_format, is_number, parse_boolean, perl_pattern
from pvemcp.pveapi.index import Endpoint, Index, closest

_INTEGER_RE = re.compile(r"[+-]?\d+")
_INDEXED_RE = re.compile(r"(.*?)(0|[1-9]\d*)")


class Problem(NamedTuple):
    """One reason PVE would refuse a request: the field (`name`, `net0.tag`), what is
    wrong, and the closest valid names or values when there are any."""

    field: str
    message: str
    closest: tuple[str, ...] = ()


def _lookup(props: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The schema of `name`, mapping an indexed name (`net0`) onto `net[n]`."""
    schema: Mapping[str, Any] | None = props.get(name)
    if schema is None:
        match = _INDEXED_RE.fullmatch(name)
        if match is not None:
            schema = props.get(f"{match.group(1)}[n]")
    return schema


def _candidates(props: Mapping[str, Any], name: str) -> list[str]:
    """The names `name` could have meant: indexed ones with `name`'s index (or 0)."""
    match = _INDEXED_RE.fullmatch(name)
    index = match.group(2) if match else "0"
    return [key.replace("[n]", index) for key in props]


class _Facts(NamedTuple):
    required: tuple[str, ...]
    default_key: str | None


_FACTS: dict[int, tuple[Mapping[str, Any], _Facts]] = {}
_FACTS_MAX = 50_000


def _facts(props: Mapping[str, Any]) -> _Facts:
    """The required names and the default key of a set of properties, worked out once per
    schema: scanning a VM config's 150 properties on every request was most of the cost.
    Entries hold their schema, so an id is never reused while it is cached."""
    entry = _FACTS.get(id(props))
    if entry is not None and entry[0] is props:
        return entry[1]
    facts = _Facts(
        required=tuple(
            name
            for name, prop in props.items()
            if "[n]" not in name
            and not prop.get("optional")
            and not prop.get("alias")
            and prop.get("type") != "null"
        ),
        default_key=next((name for name, prop in props.items() if prop.get("default_key")), None),
    )
    if len(_FACTS) >= _FACTS_MAX:
        _FACTS.clear()
    _FACTS[id(props)] = (props, facts)
    return facts


class _Checker:
    """Walks values against schemas, collecting problems."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, near: tuple[str, ...] = ()) -> None:
        self.problems.append(Problem(where, message, near))

    def object(
        self, where: str, data: Mapping[str, Any], schema: Mapping[str, Any], *, closed: bool
    ) -> None:
        """Check `data` against an object schema; `closed` refuses undeclared names."""
        props: Mapping[str, Any] = schema.get("properties") or {}
        prefix = f"{where}." if where else ""
        for name in _facts(props).required:
            if data.get(name) is None:
                self.add(f"{prefix}{name}", "is required and missing")
        for name, value in data.items():
            field = f"{prefix}{name}"
            prop = _lookup(props, name)
            if prop is None:
                if closed:
                    near = closest(name, _candidates(props, name))
                    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
                    self.add(field, f"unknown parameter {name!r}{hint}", near)
                continue
            if value is None:
                continue
            if isinstance(prop.get("alias"), str):
                prop = props.get(prop["alias"]) or {}
            self._instance(field, data, prop)
            requires = prop.get("requires")
            if isinstance(requires, str) and data.get(requires) is None:
                self.add(f"{prefix}{requires}", f"is required when {name} is given")
            self.value(field, value, prop)

    def _instance(self, field: str, data: Mapping[str, Any], prop: Mapping[str, Any]) -> None:
        """A section-config property that only some types take (`instance-types`)."""
        types, key = prop.get("instance-types"), prop.get("type-property")
        if isinstance(types, list) and isinstance(key, str):
            kind = data.get(key)
            if kind is not None and str(kind) not in types:
                self.add(field, f"is only for {key} {' or '.join(types)}, not {kind!r}")

    def value(self, where: str, value: Any, schema: Mapping[str, Any]) -> None:
        alternatives = schema.get("oneOf")
        if isinstance(alternatives, list) and alternatives:
            self._one_of(where, value, alternatives)
            return
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items")
            for n, item in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(items, Mapping):
                    self.value(f"{where}[{n}]", item, items)
            return
        if kind == "object" or isinstance(value, dict):
            if not isinstance(value, dict):
                self.add(where, f"must be an object, got {value!r}")
            elif kind == "object":
                closed = schema.get("additionalProperties") in (0, False)
                self.object(where, value, schema, closed=closed)
            else:
                self.add(where, f"must be a single {kind or 'value'}, got an object")
            return
        text = self._text(where, value, kind)
        if text is not None:
            self._scalar(where, text, schema)

    def _one_of(self, where: str, value: Any, alternatives: list[Mapping[str, Any]]) -> None:
        """Accept what any alternative accepts; otherwise report the first one's problems."""
        first: list[Problem] | None = None
        for alternative in alternatives:
            trial = _Checker()
            trial.value(where, value, alternative)
            if not trial.problems:
                return
            first = first if first is not None else trial.problems
        self.problems.extend(first or [])

    def _text(self, where: str, value: Any, kind: Any) -> str | None:
        """`value` as the text PVE receives, or None after a type problem."""
        if isinstance(value, list):
            if kind == "string":
                # Repeated keys: PVE's HTTP server joins them with NUL, as `-list` expects.
                return "\0".join(str(item) for item in value)
            self.add(where, f"must be a single {kind or 'value'}, got a list")
            return None
        if kind == "boolean":
            text = str(int(value)) if isinstance(value, bool) else str(value)
            if isinstance(value, int | str) and text in ("0", "1"):
                return text
            self.add(where, f"must be a boolean (true/false or 0/1), got {value!r}")
            return None
        if isinstance(value, bool):
            if kind in (None, "any"):
                return "1" if value else "0"
            self.add(where, f"must be {_A.get(kind, kind)}, got a boolean")
            return None
        text = value if isinstance(value, str) else str(value)
        if kind == "integer" and not (
            isinstance(value, int) or (isinstance(value, str) and _INTEGER_RE.fullmatch(value))
        ):
            self.add(where, f"must be an integer, got {value!r}")
            return None
        if kind == "number" and not (isinstance(value, int | float) or is_number(text)):
            self.add(where, f"must be a number, got {value!r}")
            return None
        if kind == "string" and not isinstance(value, str | int | float):
            self.add(where, f"must be a string, got {type(value).__name__}")
            return None
        return text

    def _scalar(self, where: str, text: str, schema: Mapping[str, Any]) -> None:
        """PVE's checks of a plain value: enum, range, length, pattern, format."""
        enum = schema.get("enum")
        if isinstance(enum, list) and text not in [str(option) for option in enum]:
            options = [str(option) for option in enum]
            self.add(where, f"must be one of {', '.join(options)}", closest(text, options))
        if is_number(text):
            low, high = schema.get("minimum"), schema.get("maximum")
            if low is not None and float(text) < float(low):
                self.add(where, f"must be >= {low}, got {text}")
            if high is not None and float(text) > float(high):
                self.add(where, f"must be <= {high}, got {text}")
        longest, shortest = schema.get("maxLength"), schema.get("minLength")
        if longest is not None and len(text) > int(longest):
            self.add(where, f"must be at most {longest} characters long")
        if shortest is not None and len(text) < int(shortest):
            self.add(where, f"must be at least {shortest} characters long")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            regex = perl_pattern(pattern)
            if regex is not None and regex.search(text) is None:
                self.add(where, f"{text[:80]!r} does not match PVE's pattern {pattern}")
        fmt = schema.get("format")
        if isinstance(fmt, Mapping):
            self._property_string(where, text, fmt)
        elif isinstance(fmt, str):
            problem = check_format(fmt, text)
            if problem is not None:
                self.add(where, f"{text[:80]!r} is {problem}")

    def _property_string(self, where: str, text: str, keys: Mapping[str, Any]) -> None:
        """A `key=value,...` string (with an optional leading value for the default key),
        parsed as `PVE::JSONSchema::parse_property_string` does, then checked key by key."""
        default_key = _facts(keys).default_key
        parsed: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, equals, value = part.partition("=")
            if not equals:
                if default_key is None:
                    self.add(where, f"{part!r} has no key (write key=value)")
                    continue
                name, value = default_key, part
            elif not name or not value:
                self.add(where, f"{part!r} needs a key and a value (key=value)")
                continue
            key = keys.get(name)
            if key is not None and isinstance(key.get("alias"), str):
                if isinstance(key.get("keyAlias"), str):
                    self._set(where, parsed, key["keyAlias"], name)
                name = key["alias"]
                key = keys.get(name)
            if key is None:
                near = closest(name, [k for k, v in keys.items() if not v.get("keyAlias")])
                hint = f" (did you mean {' or '.join(near)}?)" if near else ""
                self.add(f"{where}.{name}", f"unknown key {name!r}{hint}", near)
                continue
            if key.get("type") == "boolean":
                flag = parse_boolean(value)
                value = value if flag is None else str(int(flag))
            self._set(where, parsed, name, value)
        self.object(where, parsed, {"properties": keys}, closed=False)

    def _set(self, where: str, parsed: dict[str, str], name: str, value: str) -> None:
        if name in parsed:
            self.add(f"{where}.{name}", f"key {name!r} is given twice")
        else:
            parsed[name] = value


_A = {"integer": "an integer", "number": "a number", "string": "a string"}


def validate(
    endpoint: Endpoint,
    params: Mapping[str, Any] | None,
    path_params: Mapping[str, str] | None = None,
) -> list[Problem]:
    """What PVE would refuse in a call of `endpoint` with `params` (None values are not
    sent) and the values of its path's `{variables}`; empty when all is well."""
    given = {name: value for name, value in (params or {}).items() if value is not None}
    given.update(path_params or {})
    checker = _Checker()
    schema = endpoint.parameters
    checker.object("", given, schema, closed=schema.get("additionalProperties") in (0, False))
    return checker.problems


def check_request(
    index: Index, method: str, path: str, params: Mapping[str, Any] | None
) -> tuple[Endpoint, list[Problem]]:
    """Match `method path` in `index` and validate `params`; raises `RouteError` when the
    API has no such method."""
    endpoint, path_params = index.match(method, path)
    return endpoint, validate(endpoint, params, path_params)
