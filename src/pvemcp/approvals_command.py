"""`pvemcp approvals list | show ID | approve ID --reason .. | deny ID --reason ..`: the
four-eyes approval of held calls from a shell on the gateway's machine (imported by the
CLI for that command only).

The command opens the same approval store and audit log as the gateway (`[approvals]`,
`[audit]` of the configuration) and acts as the principal `local`: the operator of this
machine, who can read that 0700 directory. A policy's approvers name `local` to let that
operator decide; the store records the OS account that ran the command beside it. The
requester is refused even here: a call a stdio client (also `local`) asked for needs
another named approver.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from pvemcp.config import Settings
from pvemcp.gateway.approvals import ApprovalRequest, ApprovalStore
from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.principal import Principal

EXIT_OK, EXIT_REFUSED = 0, 1


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _who(who: dict[str, object] | None) -> str:
    if not who:
        return "-"
    text = str(who.get("sub", "?"))
    if "os_user" in who:
        text += f" ({who['os_user']})"
    elif "iss" in who:
        text += f" @{who['iss']}"
    return text


def _line(request: ApprovalRequest, now: float) -> str:
    left = f"{max(0, int(request.expires - now))}s" if request.status == "pending" else "-"
    return (
        f"{request.id}  {request.status:<8}  {request.tool}  @{request.cluster}  "
        f"by {_who(request.requester)}  approvers {','.join(request.approvers)}  "
        f"expires in {left}"
    )


def _details(request: ApprovalRequest) -> str:
    lines = [
        f"id:         {request.id}",
        f"status:     {request.status}",
        f"tool:       {request.tool} @{request.cluster}",
        f"requester:  {_who(request.requester)}",
        f"approvers:  {', '.join(request.approvers)} (rules {', '.join(request.rule_ids)})",
        f"created:    {_when(request.created)}",
        f"expires:    {_when(request.expires)}",
    ]
    if request.decided_by is not None:
        lines.append(
            f"decided:    {_when(request.decided_at)} by {_who(request.decided_by)}: "
            f"{request.reason}"
        )
    lines.append("arguments:  " + json.dumps(request.arguments, sort_keys=True))
    lines.append("plan:")
    lines += ["  " + row for row in json.dumps(request.plan, indent=2).splitlines()]
    return "\n".join(lines)


def _refused(failure: ToolFailure) -> int:
    print(f"pvemcp: {failure.code}: {failure.message}", file=sys.stderr)
    if failure.hint:
        print(f"hint: {failure.hint}", file=sys.stderr)
    return EXIT_REFUSED


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out one `pvemcp approvals` subcommand; 0 done, 1 refused (a structured error
    on stderr, and an audit record), 2 for a configuration error (raised to the CLI)."""
    audit = AuditLog.from_config(settings.audit)
    store = ApprovalStore.from_settings(settings, audit)
    try:
        return _run(store, args)
    except ToolFailure as failure:
        return _refused(failure)
    finally:
        audit.close()


def _run(store: ApprovalStore, args: argparse.Namespace) -> int:
    now = time.time()
    if args.approvals_command == "list":
        requests = store.list(args.status)
        if args.json:
            print(json.dumps([request.to_json() for request in requests], indent=2))
        elif not requests:
            print("no approval requests" + (f" with status {args.status}" if args.status else ""))
        else:
            for request in requests:
                print(_line(request, now))
        return EXIT_OK
    if args.approvals_command == "show":
        request = store.get(args.id)
        print(json.dumps(request.to_json(), indent=2) if args.json else _details(request))
        return EXIT_OK
    operator = Principal.local()
    if args.approvals_command == "approve":
        decided = store.approve(args.id, operator, args.reason)
    else:
        decided = store.deny(args.id, operator, args.reason)
    print(f"{decided.id} {decided.status}: {decided.tool} @{decided.cluster}")
    return EXIT_OK
