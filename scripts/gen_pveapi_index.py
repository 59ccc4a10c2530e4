#!/usr/bin/env python3
"""Regenerate src/pvemcp/pveapi/data/pve-<version>.index.json.gz from the official schema.

    .venv/bin/python scripts/gen_pveapi_index.py [--schema-dir ../shared/pve-api] [--version 9.2]

Reads `pve-<version>-apidoc.json` and `upid-endpoints-<version>.json` (AGPL-derived data
kept outside the project) and writes the prose-free structural index the product ships
(see `pvemcp.pveapi.build`). The output is byte-stable: run it twice, get the same file;
`tests/pveapi/test_index_data.py` fails when the shipped file is out of step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvemcp.pveapi.build import build_index, encode_index, upid_methods_of
from pvemcp.pveapi.index import data_path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema-dir", type=Path, default=REPO.parent / "shared" / "pve-api")
    parser.add_argument("--version", default="9.2")
    args = parser.parse_args()
    apidoc = args.schema_dir / f"pve-{args.version}-apidoc.json"
    upids = args.schema_dir / f"upid-endpoints-{args.version}.json"
    tree = json.loads(apidoc.read_text(encoding="utf-8"))
    upid_methods = upid_methods_of(json.loads(upids.read_text(encoding="utf-8")))
    index = build_index(tree, upid_methods, args.version)
    data = encode_index(index)
    target = data_path(args.version)
    target.write_bytes(data)
    methods = sum(len(entry) for entry in index["paths"].values())
    print(f"{target.relative_to(REPO)}: {len(data)} bytes, {methods} methods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
