"""What the PVE API index costs: loading it once, and matching + validating each request.

Run: `.venv/bin/python bench/pveapi.py` (add `--quick` for fewer iterations).

- load: `load_index()` from the shipped gzip'd JSON (decompress, parse, build the route
  trie), in this process with its cache cleared, median of several loads; and the first
  call's load in a fresh interpreter, as the first tool call of a gateway pays it.
- match + validate: `check_request` per request for three requests (a read with a query
  parameter, a power action, a VM config update with property strings), the median of
  batches, next to a floor measured in the same run: one dict lookup plus `json.loads`
  of a small answer, the least any request handling costs in Python.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pvemcp.pveapi import check_request, load_index

REQUESTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("read", "GET", "/cluster/resources", {"type": "vm"}),
    ("power", "POST", "/nodes/pve1/qemu/100/status/start", {"timeout": 60}),
    (
        "config",
        "POST",
        "/nodes/pve1/qemu/100/config",
        {
            "cores": 4,
            "memory": "4096",
            "scsi0": "local-lvm:32,discard=on,ssd=1",
            "net0": "virtio,bridge=vmbr0,tag=10,firewall=1",
            "tags": "web;prod",
            "delete": "ide2",
            "digest": "0123456789abcdef0123456789abcdef01234567",
        },
    ),
]

FIRST_LOAD = (
    "import time, pvemcp.pveapi as p;"
    "t = time.perf_counter(); p.load_index(); print(time.perf_counter() - t)"
)


def per_call_us(fn: Callable[[], object], batch: int, batches: int) -> float:
    """Median over `batches` of the mean time of one call in a batch of `batch`, in µs."""
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - started) / batch)
    return statistics.median(samples) * 1e6


def main(quick: bool) -> None:
    loads = 5 if quick else 20
    batches = 30 if quick else 200
    samples = []
    for _ in range(loads):
        load_index.cache_clear()
        started = time.perf_counter()
        index = load_index()
        samples.append(time.perf_counter() - started)
    print(
        f"load_index, in process: median {statistics.median(samples) * 1e3:.1f} ms of {loads} "
        f"({len(index)} methods)"
    )
    fresh = [
        float(
            subprocess.run(
                [sys.executable, "-c", FIRST_LOAD], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3 if quick else 7)
    ]
    first = statistics.median(fresh) * 1e3
    print(f"load_index, first call in a fresh interpreter: median {first:.1f} ms")

    table = {"vm": {"status": "running"}}
    body = '{"data":{"status":"running","vmid":100,"cpu":0.01,"mem":1073741824}}'
    floor = per_call_us(lambda: (table.get("vm"), json.loads(body)), 1000, batches)
    print(f"floor (dict lookup + json.loads of a {len(body)}-byte answer): {floor:.1f} us")
    for name, method, path, params in REQUESTS:
        endpoint, problems = check_request(index, method, path, params)
        assert not problems, problems
        cost = per_call_us(
            functools.partial(check_request, index, method, path, params), 1000, batches
        )
        print(
            f"match + validate, {name} ({len(params)} params, {endpoint.template}): "
            f"{cost:.1f} us ({cost / floor:.1f}x floor)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
