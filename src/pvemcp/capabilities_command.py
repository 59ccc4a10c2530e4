"""`pvemcp policy explain --capabilities` (imported by the CLI for that option only): what
a subject may do on a target, as `proxmox_capabilities_list` answers it.

Policy alone cannot say it: the PVE side needs, from the cluster, the privileges of the
token the subject's calls use (its own when an identity mapping names the subject or one
of its `--group`s, else the gateway's). So the command calls the tool through a gateway
built from the configuration (or the embedded simulator with `demo`), and policy and audit
see it as any call. It lives apart from `pvemcp.policy.commands`, which decides with the
engine alone and must not import the runtime.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from pvemcp.config import Settings
from pvemcp.logsetup import configure_logging
from pvemcp.policy.commands import EXIT_ALLOW, EXIT_DENY, EXIT_INVALID
from pvemcp.policy.principal import Principal
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor

CAPABILITIES_TOOL = "proxmox_capabilities_list"
_CAPABILITY_KEYS = ("cluster", "vmid", "node", "pool", "path", "tool", "toolset")


def capabilities(
    settings: Settings,
    *,
    tool: str | None = None,
    subject: str = "local",
    groups: Sequence[str] = (),
    scopes: Sequence[str] = (),
    client_id: str | None = None,
    args_json: str = "{}",
    demo: bool = False,
    as_json: bool = False,
) -> int:
    """`explain --capabilities`: what `subject` may do on the target in `args_json` (keys
    cluster, vmid, node, pool, path, tool, toolset; `tool` narrows to one): policy ∩ the
    PVE privileges of the token its calls use (an identity mapping's for a mapped subject
    or group, else the gateway's), as proxmox_capabilities_list answers it. The tool is
    called through a gateway built from the config (or the embedded simulator with
    `demo`), so policy and audit see it as any call. Exit: 0 answered, 1 refused or
    failed, 2 invalid input."""
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        print(f"--args is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not isinstance(args, dict) or set(args) - set(_CAPABILITY_KEYS):
        print(f"--args must be a JSON object with keys among {_CAPABILITY_KEYS}", file=sys.stderr)
        return EXIT_INVALID
    if tool is not None:
        args["tool"] = tool
    principal = Principal(
        subject=subject,
        transport="stdio" if subject == "local" else "http",
        client_id=client_id,
        scopes=frozenset(scopes),
        groups=frozenset(groups),
    )

    redactor = Redactor()
    configure_logging(settings.log_level, redactor)  # JSON lines on stderr, stdout stays clean

    async def ask() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        async with open_gateway(settings, redactor, simulate=demo) as gateway:
            result = await gateway.invoke(principal, CAPABILITIES_TOOL, args)
            return result.data, result.error

    data, error = anyio.run(ask)
    if data is None:
        error = error or {}
        field = f" (field {error['field']})" if error.get("field") else ""
        print(f"pvemcp: {error.get('code')}: {error.get('message')}{field}", file=sys.stderr)
        return EXIT_DENY
    print(json.dumps(data, indent=2) if as_json else _capabilities_text(principal, data))
    return EXIT_ALLOW


def _capabilities_text(principal: Principal, data: Mapping[str, Any]) -> str:
    who = "the local operator" if principal.is_local else f"subject {principal.subject!r}"
    lines = [
        f"{who} on {data['path']} (PVE identity {data['pve_user']})",
        f"  PVE privileges there: {', '.join(data['privileges']) or '(none)'}",
        f"  allowed:  {', '.join(data['allowed']) or '-'}",
        f"  confirm:  {', '.join(data['confirm']) or '-'}",
        "  refused:" + ("" if data["refused"] else "  -"),
        *(f"    {tool}: {why}" for tool, why in data["refused"].items()),
        f"  unknown (PVE's answer not known here): {', '.join(data['unknown']) or '-'}",
    ]
    if data.get("left_off"):
        lines.append(f"  ({data['left_off']} more tools left off: narrow with tool or toolset)")
    return "\n".join(lines)
