"""`compact_schema` writes plain JSON defaults itself instead of through pydantic's
`TypeAdapter` (a third of the first tools/list, gateway/schema.py's `_Generator`): every
schema must stay exactly the one pydantic writes."""

from __future__ import annotations

import enum
import math

from pydantic import BaseModel

from pvemcp.gateway.schema import _Generator, _pydantic_schema, compact_schema
from pvemcp.tools import all_tools


class _Colour(enum.Enum):
    RED = "red"


class _Defaults(BaseModel):
    none: int | None = None
    text: str = "x"
    number: int = 3
    flag: bool = True
    ratio: float = 0.5
    infinite: float = math.inf
    colour: _Colour = _Colour.RED
    items: list[int] = [1, 2]
    nested: dict[str, _Colour] = {"a": _Colour.RED}


def test_defaults_of_every_kind_are_written_as_pydantic_writes_them() -> None:
    ours = _Defaults.model_json_schema(schema_generator=_Generator)
    assert ours == _Defaults.model_json_schema()
    assert ours["properties"]["colour"]["default"] == "red"


def test_every_tool_schema_is_pydantics_own() -> None:
    for spec in all_tools():
        for model in (spec.input_model, spec.output_model):
            assert model.model_json_schema(schema_generator=_Generator) == (
                model.model_json_schema()
            ), spec.name


class _Shared(BaseModel):
    """A model several tools would share (as they share a task's outcome)."""

    rows: list[_Defaults]
    flag: bool | None = None


def test_a_shared_models_schema_is_written_once_and_each_caller_gets_its_own() -> None:
    """pydantic writes a model's schema once (`_pydantic_schema`); what `compact_schema`
    returns is the caller's to change (the gateway drops `cluster` from an input schema
    when there is one cluster) without changing the next caller's."""
    first = compact_schema(_Shared)
    expected = compact_schema(_Shared)
    first["properties"]["rows"]["items"]["properties"].clear()
    first["properties"].pop("flag")
    assert compact_schema(_Shared) == expected
    assert compact_schema(_Shared, bare=False)["properties"]["rows"]["items"]["properties"]
    assert _pydantic_schema.cache_info().hits >= 3
