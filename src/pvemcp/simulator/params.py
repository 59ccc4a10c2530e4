"""Parameter specs for the simulated endpoints and PVE's way of checking them.

PVE validates every request against the method's JSON schema before the handler runs and
answers 400 with one message per bad parameter. A route's specs come from the structural
index of the PVE API that pvemcp ships (`pvemcp.pveapi`, the one copy of the schema):
`schema_params` reads them on first use, adding only the facts the schema states in prose
(which options only root may set, how many `net[n]` there are). `validate` then reproduces
PVE's checks (pve-common `PVE::JSONSchema::check_prop`), their order and their error
texts, property strings included, and converts the strings of a query or form into typed
values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from pvemcp.pveapi import load_index

from .errors import param_error

ParamType = Literal["string", "integer", "number", "boolean", "array"]
Value = str | int | float | bool | list[str]

_INTEGER_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LIST_SPLIT_RE = re.compile(r"[;,\s\0]+")
_PERL_FLAGS_RE = re.compile(r"\(\?\^([a-z]*):")
_INDEXED_RE = re.compile(r"([a-z]+)(0|[1-9][0-9]*)")

MISSING = "property is missing and it is not optional"
NOT_IN_SCHEMA = (
    "property is not defined in schema and the schema does not allow additional properties"
)
ROOT_ONLY = "Only root may use this option."


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter, in the vocabulary of PVE's schema."""

    type: ParamType
    optional: bool = False
    minimum: int | float | None = None
    maximum: int | float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    format: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    keys: Mapping[str, Param] | None = None
    """For a property string (`scsi0: local-lvm:32,discard=on`): its keys."""
    default_key: bool = False
    """This key of a property string may be given without `key=` (`scsi0`'s `file`)."""
    alias: str | None = None
    """This key of a property string stands for another (`volume` for `file`)."""
    key_alias: str | None = None
    """Where an alias keeps its own name (`virtio=MAC` sets `macaddr`, and `model=virtio`)."""
    root_only: bool = False
    """The handler refuses a true value from anyone but root@pam (a token is not root@pam)."""
    count: int | None = None
    """For an indexed name (`net[n]`): how many PVE allows, `net0` to `net{count-1}`."""
    requires: str | None = None
    """Another parameter that must be given with this one (qemu config's `force`)."""


def _node_name(value: str) -> str | None:
    if re.fullmatch(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?", value):
        return None
    return "value does not look like a valid node name"


def _vmid(value: str) -> str | None:
    if re.fullmatch(r"[1-9][0-9]{2,8}", value):
        return None
    return "value does not look like a valid VM ID"


def _storage_id(value: str) -> str | None:
    if re.fullmatch(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])", value):
        return None
    return f"storage ID '{value}' contains illegal characters"


def _config_id(value: str) -> str | None:
    if re.fullmatch(r"(?i:[a-z][a-z0-9_-]+)", value):
        return None
    return f"invalid configuration ID '{value}'"


_CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
_TASK_STATUS_TYPES = ("ok", "error", "warning", "unknown")


def _content_type(value: str) -> str | None:
    return None if value in _CONTENT_TYPES else f"invalid content type '{value}'"


def _task_status_type(value: str) -> str | None:
    return None if value.lower() in _TASK_STATUS_TYPES else f"invalid status type '{value}'"


FORMATS: Mapping[str, Callable[[str], str | None]] = {
    "pve-node": _node_name,
    "pve-vmid": _vmid,
    "pve-storage-id": _storage_id,
    "pve-configid": _config_id,
    "pve-storage-content": _content_type,
    "pve-task-status-type": _task_status_type,
}
"""Named formats the simulator verifies; others (CIDR, property strings) pass unchecked."""


def _check_format(fmt: str, value: str) -> str | None:
    if fmt.endswith("-list") and fmt[: -len("-list")] in FORMATS:
        verify = FORMATS[fmt[: -len("-list")]]
        for item in _LIST_SPLIT_RE.split(value.strip()):
            if item and (problem := verify(item)) is not None:
                return problem
        return None
    verify_one = FORMATS.get(fmt)
    return verify_one(value) if verify_one else None


def _shown(raw: object) -> str:
    """A value as PVE's Perl would print it in `got '...'`."""
    if isinstance(raw, bool):
        return "1" if raw else ""
    return str(raw)


def _convert(spec: Param, raw: object) -> Value | None:
    """The typed value, or None when the type check fails (PVE's check_type)."""
    match spec.type:
        case "integer":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and _INTEGER_RE.fullmatch(raw):
                return int(raw)
        case "number":
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and _NUMBER_RE.fullmatch(raw):
                return float(raw)
        case "boolean":
            # HTTP is stricter than the CLI: only 0/1 or JSON booleans.
            if isinstance(raw, bool):
                return raw
            if raw in (0, 1, "0", "1"):
                return raw in (1, "1")
        case "string":
            if isinstance(raw, str):
                return raw
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return str(raw)
    return None


def _string_array(raw: object) -> list[str] | None:
    """Only string arrays are simulated (agent exec's `command`); a single form value is
    an array of one."""
    items = raw if isinstance(raw, list) else [raw]
    if all(isinstance(item, str) for item in items):
        return [str(item) for item in items]
    return None


def _python_pattern(pattern: str) -> str:
    """A Perl pattern as the schema prints it (`(?^:...)`, `(?^i:...)`) in Python's syntax."""
    return _PERL_FLAGS_RE.sub(lambda m: f"(?{m.group(1)}:" if m.group(1) else "(?:", pattern)


def _check_value(spec: Param, raw: object, path: str) -> tuple[Value | None, str | None]:
    """The converted value and the first problem, checked in PVE's order (`check_prop`:
    type, format, pattern, length, range, enum)."""
    value = _string_array(raw) if spec.type == "array" else _convert(spec, raw)
    if value is None:
        return None, f"type check ('{spec.type}') failed - got '{_shown(raw)}'"
    if isinstance(value, list):
        return value, None
    text = _shown(value)
    if spec.keys is not None and (problem := _property_string(spec.keys, text, path)):
        return None, f"invalid format - {problem}"
    if spec.format is not None and (problem := _check_format(spec.format, text)) is not None:
        return None, f"invalid format - {problem}\n"
    if spec.pattern is not None and not re.fullmatch(_python_pattern(spec.pattern), text):
        return None, "value does not match the regex pattern"
    if spec.max_length is not None and len(text) > spec.max_length:
        return None, f"value may only be {spec.max_length} characters long"
    if spec.min_length is not None and len(text) < spec.min_length:
        return None, f"value must be at least {spec.min_length} characters long"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.maximum is not None and value > spec.maximum:
            return None, f"value must have a maximum value of {spec.maximum}"
        if spec.minimum is not None and value < spec.minimum:
            return None, f"value must have a minimum value of {spec.minimum}"
    if spec.enum is not None and text not in spec.enum:
        allowed = ", ".join(spec.enum)
        return None, f"value '{text}' does not have a value in the enumeration '{allowed}'"
    return value, None


def _boolean_text(value: str) -> str:
    """pve-common's `parse_boolean` on a property-string value, or the value unchanged."""
    lowered = value.lower()
    if lowered in ("1", "on", "yes", "true"):
        return "1"
    if lowered in ("0", "off", "no", "false"):
        return "0"
    return value


def _set_key(keys: Mapping[str, Param], parsed: dict[str, str], key: str, value: str) -> str | None:
    """One `key=value` of a property string into `parsed`, or the message PVE dies with."""
    if key in parsed:
        return f"duplicate key in comma-separated list property: {key}\n"
    spec = keys.get(key)
    if spec is not None and spec.alias is not None:
        if spec.key_alias is not None:
            if spec.key_alias in parsed:
                return f"key alias '{spec.key_alias}' is already defined\n"
            parsed[spec.key_alias] = key
        key, spec = spec.alias, keys.get(spec.alias)
        if key in parsed:
            return f"key '{key}' is already defined (via alias)\n"
    if spec is None:
        return f"invalid key in comma-separated list property: {key}\n"
    parsed[key] = _boolean_text(value) if spec.type == "boolean" else value
    return None


def _parse_property_string(keys: Mapping[str, Param], text: str) -> dict[str, str] | str:
    """The keys and values of `text` as pve-common's `parse_property_string` splits them
    (aliases resolved, booleans normalised), or the message it dies with."""
    parsed: dict[str, str] = {}
    default_key: str | None = None
    for part in text.split(","):
        if not part.strip():
            continue
        key, equals, value = part.partition("=")
        if key and value:  # /^([^=]+)=(.+)$/
            if (problem := _set_key(keys, parsed, key, value)) is not None:
                return problem
        elif not equals:
            if default_key is not None:
                return f"duplicate key in comma-separated list property: {default_key}\n"
            default_key = next((name for name, spec in keys.items() if spec.default_key), None)
            if default_key is None:
                return "value without key, but schema does not define a default key\n"
            if parsed.get(default_key) not in (None, "", "0"):  # Perl: `if !$res->{$key}`
                return f"duplicate key in comma-separated list property: {default_key}\n"
            boolean = keys[default_key].type == "boolean"
            parsed[default_key] = _boolean_text(part) if boolean else part
        else:
            return "missing key in comma-separated list property\n"
    return parsed


def _property_string(keys: Mapping[str, Param], text: str, path: str) -> str | None:
    """What checking a property string dies with, or None: the parse, then `check_object`
    on its keys, whose errors PVE's exception prints one per line after `format error`."""
    parsed = _parse_property_string(keys, text)
    if isinstance(parsed, str):
        return parsed
    errors: dict[str, str] = {}
    for name, spec in keys.items():
        where = f"{path}.{name}"
        if spec.alias is not None:
            continue
        if name not in parsed:
            if not spec.optional:
                errors[where] = MISSING
            continue
        _, problem = _check_value(spec, parsed[name], where)
        if problem is not None:
            errors[where] = problem
        if spec.requires is not None and spec.requires not in parsed:
            errors[f"{path}.{spec.requires}"] = f"missing property required by '{where}'"
    if not errors:
        return None
    return "format error\n" + "".join(f"{where}: {errors[where]}\n" for where in sorted(errors))


def validate(specs: Mapping[str, Param], raw: Mapping[str, object]) -> dict[str, Value]:
    """Check `raw` against `specs` like PVE does; typed values, or ApiError 400 with all errors.

    A JSON null counts as absent. A repeated query or form key arrives as a list, which no
    simulated parameter accepts.
    """
    concrete = {name: spec for name, spec in specs.items() if spec.count is None}
    for name in raw:
        if name not in specs and (spec := indexed(specs, name)) is not None:
            concrete[name] = spec
    errors = _undeclared_or_unmet(concrete, raw)
    values: dict[str, Value] = {}
    for name, spec in concrete.items():
        item = raw.get(name)
        if isinstance(item, list) and spec.type != "array":
            if len(item) != 1:
                errors[name] = f"type check ('{spec.type}') failed - got an array"
                continue
            item = item[0]
        if item is None:
            if not spec.optional:
                errors[name] = MISSING
            continue
        value, problem = _check_value(spec, item, name)
        if problem is not None:
            errors[name] = problem
        elif value is not None:
            values[name] = value
    if errors:
        raise param_error(errors)
    return values


def _undeclared_or_unmet(specs: Mapping[str, Param], raw: Mapping[str, object]) -> dict[str, str]:
    """Errors for parameters the method does not declare, or given without what they need."""
    errors: dict[str, str] = {}
    for name in raw:
        if name not in specs:
            errors[name] = NOT_IN_SCHEMA
        elif (needed := specs[name].requires) is not None and raw.get(needed) is None:
            # pve-common JSONSchema.pm check_object, on the required property's name.
            errors[needed] = f"missing property required by '{name}'"
    return errors


def indexed(specs: Mapping[str, Param], name: str) -> Param | None:
    """The spec of `net[n]` for `net3`, when the index is below PVE's count for it."""
    match = _INDEXED_RE.fullmatch(name)
    if match is None:
        return None
    spec = specs.get(f"{match.group(1)}[n]")
    if spec is None or spec.count is None or int(match.group(2)) >= spec.count:
        return None
    return spec


def refuse_root_only(specs: Mapping[str, Param], values: Mapping[str, Value], user: str) -> None:
    """Raise PVE's 400 for root-only options set by anyone but root@pam (tokens included)."""
    if user == "root@pam":
        return
    errors = {
        name: ROOT_ONLY
        for name, spec in specs.items()
        if spec.root_only and values.get(name) not in (None, False, 0, "")
    }
    if errors:
        raise param_error(errors)


_TYPES = frozenset({"string", "integer", "number", "boolean", "array"})


def _number(value: object) -> int | float | None:
    """A bound as the index holds it (PVE writes some as strings: `minimum => '0'`)."""
    if value is None or isinstance(value, int | float):
        return value
    number = float(str(value))
    return int(number) if number.is_integer() else number


def from_schema(schema: Mapping[str, Any]) -> Param:
    """The spec of one parameter (or property-string key) as the index declares it."""
    kind = schema.get("type", "string")
    if kind not in _TYPES:
        raise ValueError(f"the simulator does not check parameters of type {kind!r}")
    fmt, enum, requires = schema.get("format"), schema.get("enum"), schema.get("requires")
    return Param(
        cast(ParamType, kind),
        optional=bool(schema.get("optional")),
        minimum=_number(schema.get("minimum")),
        maximum=_number(schema.get("maximum")),
        enum=tuple(str(option) for option in enum) if isinstance(enum, list) else None,
        pattern=schema.get("pattern"),
        format=fmt if isinstance(fmt, str) else None,
        max_length=schema.get("maxLength"),
        min_length=schema.get("minLength"),
        keys={k: from_schema(v) for k, v in fmt.items()} if isinstance(fmt, Mapping) else None,
        default_key=bool(schema.get("default_key")),
        alias=schema.get("alias"),
        key_alias=schema.get("keyAlias"),
        requires=requires if isinstance(requires, str) else None,
    )


class SchemaParams(Mapping[str, Param]):
    """The parameters of one PVE method, read from the shipped index of the API on first
    use (so a simulator pays the index's load once, at its first request, not at import).

    The schema states two facts only in prose, so a route gives them: `root_only`, the
    options its handler refuses to anyone but root@pam, and `counts`, how many of each
    indexed name PVE allows (`net[n]`: 32, from qemu-server's and pve-container's `MAX_*`).
    A name in either that the method lacks, or an indexed name without a count, fails at
    the first use (the conformance test uses every route's specs)."""

    def __init__(
        self,
        method: str,
        template: str,
        *,
        root_only: Iterable[str] = (),
        counts: Mapping[str, int] | None = None,
    ) -> None:
        self.method = method
        self.template = template
        self._root_only = frozenset(root_only)
        self._counts = dict(counts or {})

    @functools.cached_property
    def _specs(self) -> dict[str, Param]:
        where = f"{self.method} {self.template}"
        endpoint = load_index().endpoint(self.method, self.template)
        if endpoint is None:
            raise LookupError(f"{where} is not a method of PVE's API")
        specs: dict[str, Param] = {}
        for name, schema in endpoint.properties.items():
            spec = from_schema(schema)
            if "[n]" in name:
                if name not in self._counts:
                    raise ValueError(f"{where}: how many {name} PVE allows is not given")
                spec = replace(spec, count=self._counts[name])
            if name in self._root_only:
                spec = replace(spec, root_only=True)
            specs[name] = spec
        unknown = sorted((self._root_only | set(self._counts)) - set(specs))
        if unknown:
            raise ValueError(f"{where} has no parameters {unknown}")
        return specs

    def __getitem__(self, name: str) -> Param:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)
