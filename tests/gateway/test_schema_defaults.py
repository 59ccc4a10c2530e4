"""`compact_schema` writes plain JSON defaults itself instead of through pydantic's
`TypeAdapter` (a third of the first tools/list, gateway/schema.py's `_Generator`): every
schema must stay exactly the one pydantic writes."""

from __future__ import annotations

import enum
import math

from pydantic import BaseModel

from pvemcp.gateway.schema import _Generator
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
