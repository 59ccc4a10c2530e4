"""`pvemcp inventory` (imported by the CLI for that command only): the Ansible inventory
of the configured cluster (or of the embedded simulator with `--demo`), written to stdout
or a file.

The command calls the gateway's `proxmox_inventory_export` tool as the `local` principal, the
operator who started the process, rather than reading the API itself: the policy decides
it and the audit log records it as it would the same call over stdio, so an inventory
taken from a shell is no way around either. The `inventory` toolset is enabled for this
one call (it is not in the default set MCP callers see); policy still decides the tool.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import structlog

from pvemcp.config import Settings
from pvemcp.gateway.artifacts import URI_PREFIX
from pvemcp.gateway.invoke import Gateway
from pvemcp.logsetup import configure_logging
from pvemcp.policy.principal import Principal
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor

log = structlog.get_logger(__name__)

TOOL = "proxmox_inventory_export"
FILTERS = ("node", "pool", "tag", "status", "type")


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The tool call's arguments from the command line's."""
    call: dict[str, Any] = {"format": args.format, "with_ips": not args.no_ips}
    call |= {name: getattr(args, name) for name in FILTERS if getattr(args, name) is not None}
    if args.cluster is not None:
        call["cluster"] = args.cluster
    return call


async def export(gateway: Gateway, call: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The whole inventory text (from the artifact when it was beyond the inline cap), or
    None and the tool's error."""
    principal = Principal.local()
    gateway.catalogue.enable(principal, "inventory")
    result = await gateway.invoke(principal, TOOL, call)
    if result.data is None:
        return None, result.error or {}
    uri = result.data.get("artifact")
    if uri:
        kept = gateway.artifacts.get(principal, str(uri).removeprefix(URI_PREFIX))
        if kept is None:
            return None, {"code": "artifact_lost", "message": f"{uri} is no longer kept"}
        return kept.data.decode(), result.data
    return str(result.data["inventory"]), result.data


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Export and write; the log (JSON lines on stderr, as every command's) says how many
    hosts and which have no address."""
    redactor = Redactor(key.get_secret_value() for key in settings.http.static_keys.values())
    configure_logging(settings.log_level, redactor)  # JSON lines on stderr, stdout stays clean

    async def go() -> tuple[str | None, dict[str, Any]]:
        async with open_gateway(settings, redactor, simulate=args.demo) as gateway:
            return await export(gateway, arguments(args))

    text, facts = anyio.run(go)
    if text is None:
        field = f" (field {facts['field']})" if facts.get("field") else ""
        hint = f"\n{facts['hint']}" if facts.get("hint") else ""
        print(f"pvemcp: {facts.get('code')}: {facts.get('message')}{field}{hint}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    log.info(
        "inventory_written",
        output=str(args.output or "-"),
        hosts=facts.get("hosts"),
        groups=facts.get("groups"),
        without_ip=facts.get("without_ip"),
    )
    return 0
