"""Where the bytes of tools/list go, tool by tool: the whole catalogue as a client receives it.

Run: `.venv/bin/python bench/tool_bytes.py` (`--json` for one object per tool). Every
toolset is enabled and every escape tool granted, so each tool is listed; the list comes
from the SDK's in-memory client, each tool in compact JSON as on the wire (listing tools
sends nothing to a cluster, so the configured one, on 127.0.0.1, need not exist).
Columns: the whole definition, then its description, input schema, output schema and
annotations (bytes), biggest first, and the averages.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, PolicyConfig, Settings, TlsMode
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.logsetup import configure_logging
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.tiers import Tier
from pvemcp.runtime import build_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.tools import all_tools, catalogue
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal

PARTS = ("description", "inputSchema", "outputSchema", "annotations")


def size(value: Any) -> int:
    """Compact JSON bytes, as on the wire."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


async def wire_tools() -> list[dict[str, Any]]:
    """tools/list of the whole catalogue, every tool granted, as the SDK client gets it."""
    configure_logging("WARNING", Redactor())
    with tempfile.TemporaryDirectory() as tmp:
        everything = Path(tmp) / "everything.toml"
        escape = [spec.name for spec in all_tools() if spec.tier is Tier.ESCAPE]
        everything.write_text(
            f'[[rules]]\nid = "all"\neffect = "allow"\nsubjects = ["local"]\n'
            f"tools = {json.dumps(escape)}\n"
        )
        cluster = ClusterConfig(
            api_url="https://127.0.0.1:8006",
            token_id="bench@pve!bytes",
            token_secret=SecretStr("00000000-0000-0000-0000-000000000000"),
            tls=TlsMode.SYSTEM,
        )
        gateway = Gateway(
            tools=catalogue(None),
            clusters=ClusterPool({"bench": cluster}),
            policy=build_policy(Settings(policy=PolicyConfig(file=everything))),
            audit=AuditLog(Path(tmp) / "audit.jsonl"),
            redactor=Redactor(),
        )
        try:
            async with Client(build_mcp_server(gateway, local_principal), mode="legacy") as client:
                tools = (await client.list_tools()).tools
        finally:
            await gateway.aclose()
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


async def main(as_json: bool) -> None:
    tools = await wire_tools()
    rows = [
        {"name": tool["name"], "total": size(tool), **{p: size(tool.get(p, "")) for p in PARTS}}
        for tool in tools
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'total':>6} {'descr':>6} {'input':>6} {'output':>6} {'annot':>6}  tool")
    for row in sorted(rows, key=lambda r: -int(r["total"])):
        figures = " ".join(f"{row[k]:>6}" for k in ("total", *PARTS))
        print(f"{figures}  {row['name']}")
    whole = size(tools)
    print(f"whole list {whole} bytes for {len(tools)} tools: {whole // len(tools)} bytes/tool")
    for part in PARTS:
        print(f"  {part}: {sum(int(r[part]) for r in rows) // len(rows)} bytes/tool on average")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per tool")
    anyio.run(main, parser.parse_args().json)
