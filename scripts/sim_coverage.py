"""How much of the PVE API the simulator serves: its routes against the schema's methods,
by area (the figure issue 12 asks for in its note).

    .venv/bin/python scripts/sim_coverage.py
"""

from __future__ import annotations

import re
from collections import Counter

from pvemcp.pveapi import load_index
from pvemcp.simulator.endpoints import ROUTES


def _shape(template: str) -> str:
    """A template with its variables unnamed, so `{vmid}` and `{id}` compare equal."""
    return re.sub(r"\{[^}]+\}", "{}", template)


def _area(template: str) -> str:
    parts = template.strip("/").split("/")
    if parts[0] == "nodes" and len(parts) > 2:
        return f"nodes/{parts[2]}"
    if parts[0] == "cluster" and len(parts) > 1:
        return f"cluster/{parts[1]}"
    return parts[0]


def main() -> None:
    schema = {(endpoint.method, _shape(endpoint.template)) for endpoint in load_index()}
    served = {(route.method, _shape(route.path)) for route in ROUTES}
    covered = served & schema
    total = Counter(_area(path) for _, path in schema)
    done = Counter(_area(path) for _, path in covered)
    print(
        f"simulator: {len(covered)} of the schema's {len(schema)} methods"
        f" ({len(served - schema)} routes not in the schema)"
    )
    for area in sorted(total, key=lambda a: (-done[a], -total[a], a)):
        print(f"  {area:24} {done[area]:3} / {total[area]}")


if __name__ == "__main__":
    main()
