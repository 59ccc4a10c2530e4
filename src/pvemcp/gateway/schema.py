"""JSON schemas as the model reads them: compact, plain objects at the root.

pydantic adds a `title` to every property, wraps optional fields in `anyOf` with null and
marks models `additionalProperties: false`; all of it costs bytes in every conversation and
tells the model nothing it needs (see the tool-design notes). Optional fields are simply
not required; unknown fields are still rejected by validation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

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
        if key == "additionalProperties" and value is False:
            continue  # strictness is enforced server-side; saying so costs bytes per tool
        out[key] = (
            _strip(value)
            if key not in ("properties", "$defs")
            else {name: _strip(sub) for name, sub in value.items()}
        )
    return out


def compact_schema(model: type[BaseModel], *, bare: bool = True) -> dict[str, Any]:
    """The model's JSON schema without titles, null branches or null defaults; a tool
    input's `bare_fields` with their type alone (unless `bare` is false: the reference
    docs describe them)."""
    schema: dict[str, Any] = _strip(model.model_json_schema())
    schema.setdefault("type", "object")
    if issubclass(model, ToolInput):
        # The tool's description is what the model reads; an input class's docstring is
        # for the code's readers.
        schema.pop("description", None)
        properties = schema.get("properties", {})
        for name in bare_fields(model) if bare else ():
            if "type" in properties.get(name, {}):
                properties[name] = {"type": properties[name]["type"]}
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
