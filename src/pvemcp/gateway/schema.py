"""JSON schemas as the model reads them: compact, plain objects at the root.

pydantic adds a `title` to every property, wraps optional fields in `anyOf` with null and
marks models `additionalProperties: false`; all of it costs bytes in every conversation and
tells the model nothing it needs (see the tool-design notes). Optional fields are simply
not required; unknown fields are still rejected by validation.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from pvemcp.gateway.registry import ToolInput

_DROP = frozenset({"title"})

SHARED_FIELDS = ("cluster", "dry_run", "confirm_token")
"""Fields every tool (or every write) has: the server instructions say what they mean, and
the tools reference leaves them out."""


def bare_fields(model: type[BaseModel]) -> frozenset[str]:
    """The input fields `model` advertises with their type alone: the union of its base
    classes' `advertised_bare` (shared fields such as `cluster`, a guest's `vmid`/`name`,
    a task's `wait`/`timeout`, which were over a third of all input-schema bytes)."""
    names: set[str] = set()
    for cls in model.__mro__:
        names.update(vars(cls).get("advertised_bare", ()))
    return frozenset(names)


def _strip(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        non_null = [branch for branch in any_of if branch != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(non_null[0])
            node = merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not isinstance(value, dict):
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            # false: strictness is enforced server-side, saying so costs bytes per tool;
            # true is JSON Schema's default.
            continue
        out[key] = (
            _strip(value)
            if key not in ("properties", "$defs")
            else {name: _strip(sub) for name, sub in value.items()}
        )
    return out


_REF = "#/$defs/"


def _refs(node: Any) -> list[str]:
    """The names of the `$defs` entries `node` refers to, once per reference."""
    if isinstance(node, list):
        return [name for item in node for name in _refs(item)]
    if not isinstance(node, dict):
        return []
    ref = node.get("$ref")
    own = [ref.removeprefix(_REF)] if isinstance(ref, str) and ref.startswith(_REF) else []
    return own + [name for value in node.values() for name in _refs(value)]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each `$defs` entry used once written in place of its `$ref` (every
    nested model of a tool is): a reference costs bytes and a client a lookup. A
    definition used twice, or by itself, stays."""
    defs: dict[str, Any] = schema.get("$defs", {})
    used = _refs(schema)
    once = {name for name, sub in defs.items() if used.count(name) == 1 and name not in _refs(sub)}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix(_REF) in once:
            node = {**walk(defs[ref.removeprefix(_REF)]), **node}
            del node["$ref"]
        return {key: walk(value) for key, value in node.items() if key != "$defs"}

    out: dict[str, Any] = walk(schema)
    kept = {name: walk(sub) for name, sub in defs.items() if name not in once}
    if kept:
        out["$defs"] = kept
    return out


_VALIDATION_ONLY = frozenset({"pattern", "maxLength", "minLength", "maxItems", "minItems"})
"""Input keywords the gateway enforces and a model does not need to read: a value that
breaks one is refused with the field and the constraint (`field_hint` reads the full
schema). Ranges (`minimum`, `maximum`), enums and defaults stay: they tell what to send."""


def _advertised(node: Any, *, output: bool) -> Any:
    """What a model reads of a compact schema: an input without `_VALIDATION_ONLY`
    keywords and without `default: false` (what an unset flag means anyway); an output
    without `required`, defaults (a result carries its values) and its models' docstrings
    (written for the code's readers; a field's own description stays)."""
    if isinstance(node, list):
        return [_advertised(item, output=output) for item in node]
    if not isinstance(node, dict):
        return node

    def left_out(key: str, value: Any) -> bool:
        if output:
            docstring = key == "description" and "properties" in node
            return key in ("required", "default") or docstring
        return key in _VALIDATION_ONLY or (key == "default" and value is False)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "$defs"):
            out[key] = {name: _advertised(sub, output=output) for name, sub in value.items()}
        elif not left_out(key, value):
            out[key] = _advertised(value, output=output)
    return out


class _Generator(GenerateJsonSchema):
    """pydantic's JSON schema generator, with plain JSON defaults written as they are.

    pydantic builds a `TypeAdapter` to encode every field's default, which was about a
    third of building the schemas at the first tools/list (so of every stdio client's
    start); for `None`, `str`, `int`, `bool` and a finite `float` its answer is the value
    itself. Anything else (enums, lists, models) still goes through pydantic."""

    def encode_default(self, dft: Any) -> Any:
        kind = type(dft)
        if dft is None or kind in (str, int, bool) or (kind is float and math.isfinite(dft)):
            return dft
        return super().encode_default(dft)


@functools.cache
def _pydantic_schema(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's JSON schema of `model`, written once per model: tools share models (a
    task's outcome, an empty input, a command's output), and a listing asks for each
    tool's. Read only: `_strip` copies every dict and list of it."""
    return model.model_json_schema(schema_generator=_Generator)


def compact_schema(model: type[BaseModel], *, bare: bool = True) -> dict[str, Any]:
    """The model's JSON schema without titles, null branches or null defaults, nested
    models in place; as advertised (`bare`, the default) also without what only validation
    or the code's readers need (`_advertised`), and with a tool input's `bare_fields` as
    their type alone. `bare=False` is the full schema, for the reference docs and the hints
    of a refused argument."""
    schema: dict[str, Any] = _inline(_strip(_pydantic_schema(model)))
    schema.setdefault("type", "object")
    is_input = issubclass(model, ToolInput)
    if is_input:
        # The tool's description is what the model reads; an input class's docstring is
        # for the code's readers.
        schema.pop("description", None)
    if not bare:
        return schema
    schema = _advertised(schema, output=not is_input)
    properties = schema.get("properties", {})
    for name in bare_fields(model) if is_input else ():
        if "type" in properties.get(name, {}):
            properties[name] = {"type": properties[name]["type"]}
    for name in getattr(model, "unadvertised", ()):
        properties.pop(name, None)
    return schema


def field_hint(schema: dict[str, Any], field: str) -> str | None:
    """A one-line description of what `field` accepts, from its compact schema."""
    prop = schema.get("properties", {}).get(field)
    if not isinstance(prop, dict):
        return None
    if "enum" in prop:
        return f"{field} must be one of: " + ", ".join(map(str, prop["enum"]))
    kind = prop.get("type", "value")
    if kind == "array":
        items = prop.get("items", {})
        if isinstance(items, dict) and "enum" in items:
            return f"{field} is a list of: " + ", ".join(map(str, items["enum"]))
        return f"{field} is a list"
    parts = [f"{field} is a{'n' if str(kind)[0] in 'aeiou' else ''} {kind}"]
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        parts.append(f"from {low} to {high}")
    elif low is not None:
        parts.append(f">= {low}")
    elif high is not None:
        parts.append(f"<= {high}")
    if "pattern" in prop:
        parts.append(f"matching {prop['pattern']}")
    if "maxLength" in prop:
        parts.append(f"of at most {prop['maxLength']} characters")
    return " ".join(parts)
