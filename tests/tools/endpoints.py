"""The endpoints a tool call sent, against the tool's declared `api=` (issue 13: policy on
endpoints only holds if every tool says what it sends).

`test_examples.py` calls `undeclared` after each example: every request that changed
something (not a GET) and every call the plan listed (the audit intent's `calls`) must be
among the tool's declared endpoints, and a tool that reached the API at all must declare
something. Each GET is not required: every write planner reads to resolve its target
(the guest list, its config), and a read tool's declaration names the endpoints it is
about, which is what an `api` rule on reads is for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pvemcp.gateway.registry import AnySpec
from pvemcp.pveapi import RouteError, load_index


def _template(method: str, path: str) -> str:
    try:
        endpoint, _ = load_index().match(method, path)
    except RouteError:
        return path  # the schema check of test_examples names it
    return endpoint.template


def planned(audit: Path) -> list[tuple[str, str]]:
    """The (method, template) of every call the audit intents of `audit` planned."""
    if not audit.is_file():
        return []
    found = []
    for line in audit.read_text().splitlines():
        record: dict[str, Any] = json.loads(line)
        if record.get("phase") != "intent":
            continue
        for call in (record.get("where") or {}).get("target", {}).get("calls", []):
            found.append((call["method"], call["template"]))
    return found


def undeclared(spec: AnySpec, sent: Iterable[tuple[str, str]], audit: Path) -> list[str]:
    """What `spec` sent (non-GET `(method, path)` requests) or planned beyond its `api`,
    each worded as the declaration to add."""
    if spec.calls_of is not None:
        return []  # the generic API tools send whatever their arguments name
    sent = list(sent)
    seen = {(method, _template(method, path)) for method, path in sent if method != "GET"}
    seen |= set(planned(audit))
    if not spec.api and not seen and sent:
        reads = sorted({_template(method, path) for method, path in sent})
        return [
            f"{spec.name} reads the API but declares no endpoint: add api=[...] with the "
            f"GETs it is about, of {', '.join(reads)}"
        ]
    missing = sorted(seen - set(spec.api))
    return [
        f'{spec.name} sends {method} {template}: add "{method} {template}" to its api=...'
        for method, template in missing
    ]
