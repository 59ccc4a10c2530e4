"""Parameter specs for the simulated endpoints and PVE's way of checking them.

PVE validates every request against the method's JSON schema before the handler runs and
answers 400 with one message per bad parameter. The simulator cannot read the apidoc at run
time, so each route declares its parameters here in a small spec (the conformance test
compares these specs with the real schema); `validate` then reproduces PVE's checks, their
order and their error texts, and converts the strings of a query or form into typed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

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
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    format: str | None = None
    max_length: int | None = None
    root_only: bool = False
    """The handler refuses a true value from anyone but root@pam (a token is not root@pam)."""
    count: int | None = None
    """For an indexed name (`net[n]`): how many PVE allows, `net0` to `net{count-1}`."""
    requires: str | None = None
    """Another parameter that must be given with this one (qemu config's `force`)."""


NODE = Param("string", format="pve-node")
VMID = Param("integer", minimum=100, maximum=999_999_999, format="pve-vmid")
UPID = Param("string")
SKIPLOCK = Param("boolean", optional=True, root_only=True)


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


def _check_value(spec: Param, raw: object) -> tuple[Value | None, str | None]:
    """The converted value and the first problem, checked in PVE's order."""
    value = _string_array(raw) if spec.type == "array" else _convert(spec, raw)
    if value is None:
        return None, f"type check ('{spec.type}') failed - got '{_shown(raw)}'"
    if isinstance(value, list):
        return value, None
    if isinstance(value, str) and spec.max_length is not None and len(value) > spec.max_length:
        return None, f"value may only be {spec.max_length} characters long"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return None, f"value must have a minimum value of {spec.minimum}"
        if spec.maximum is not None and value > spec.maximum:
            return None, f"value must have a maximum value of {spec.maximum}"
    text = _shown(value)
    if spec.enum is not None and text not in spec.enum:
        allowed = ", ".join(spec.enum)
        return None, f"value '{text}' does not have a value in the enumeration '{allowed}'"
    if spec.pattern is not None and not re.fullmatch(_python_pattern(spec.pattern), text):
        return None, "value does not match the regex pattern"
    if spec.format is not None and (problem := _check_format(spec.format, text)) is not None:
        return None, f"invalid format - {problem}\n"
    return value, None


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
        value, problem = _check_value(spec, item)
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
