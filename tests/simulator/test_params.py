"""Route parameters read from the shipped index of PVE's API (`params.SchemaParams`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pvemcp.simulator.params import SchemaParams


def test_building_the_routes_does_not_load_the_index() -> None:
    # The index loads at the first request that needs a route's parameters, not at import:
    # a simulator started and never asked pays nothing for it.
    code = (
        "import pvemcp.simulator.endpoints\n"
        "from pvemcp.pveapi import load_index\n"
        "print(load_index.cache_info().currsize)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "0"


def test_the_facts_only_in_prose_are_given_by_the_route() -> None:
    specs = SchemaParams(
        "PUT", "/nodes/{node}/lxc/{vmid}/config", counts={"net[n]": 32, "mp[n]": 256,
                                                         "dev[n]": 256, "unused[n]": 256},
    )  # fmt: skip
    assert specs["net[n]"].count == 32
    assert specs["memory"].minimum == 16
    assert specs["net[n]"].keys is not None and "bridge" in specs["net[n]"].keys
    assert not specs["memory"].root_only


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (SchemaParams("GET", "/nodes/{node}/bogus"), "GET /nodes/{node}/bogus is not a method"),
        (SchemaParams("PUT", "/nodes/{node}/lxc/{vmid}/config"),
         "how many dev[n] PVE allows is not given"),
        (SchemaParams("GET", "/version", root_only=("skiplock",)),
         "GET /version has no parameters ['skiplock']"),
    ],
)  # fmt: skip
def test_a_route_that_does_not_fit_the_index_fails_at_first_use(
    specs: SchemaParams, message: str
) -> None:
    with pytest.raises((LookupError, ValueError), match=message.replace("[", r"\[")):
        len(specs)
