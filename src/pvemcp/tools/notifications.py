"""Notifications (issue 12): where PVE sends its notifications, and a test of one target.

PVE's notification system (pve-manager `PVE/API2/Cluster/Notifications.pm` over
proxmox-notify) has endpoints (sendmail, gotify, smtp, webhook), which are the targets,
and matchers that route each notification to targets by severity, field and calendar.
Reading them is what an operator asks ("where do backup failures go?"); the one write is
a test through a target. PVE's GET already withholds tokens, passwords and webhook
secret values; the rows here carry only named, non-secret fields besides.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    ApiCall,
    Empty,
    Plan,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WriteInput,
    matching,
    read_as,
    tool,
)

TOOLSET = "notifications"
BASE = "/cluster/notifications"
TYPES = ("sendmail", "gotify", "smtp", "webhook")
_ROWS = TypeAdapter(list[dict[str, Any]])
_SHOWN = ("mailto", "mailto-user", "from-address", "server", "port", "mode", "url", "method")
"""The endpoint fields a row shows: where it sends, never how it authenticates."""

Name = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9_\-]{1,63}", "a target name")]


class EndpointRow(ToolOutput):
    name: str
    type: str
    disabled: bool | None = None
    origin: str | None = None
    comment: str | None = None
    sends_to: dict[str, Any] | None = None


class MatcherRow(ToolOutput):
    name: str
    targets: list[str]
    mode: str | None = None
    severities: list[str] | None = None
    fields: list[str] | None = None
    calendar: list[str] | None = None
    inverted: bool | None = None
    disabled: bool | None = None
    comment: str | None = None


class Notifications(ToolOutput):
    endpoints: list[EndpointRow]
    matchers: list[MatcherRow]


def _flag(row: dict[str, Any], key: str) -> bool | None:
    return bool(int(row[key])) or None if key in row else None


@tool(
    "proxmox_notification_list",
    title="List notification targets and matchers",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=Empty,
    output=Notifications,
    idempotent=True,
    examples=[{}],
    api=[f"GET {BASE}/endpoints/{kind}" for kind in TYPES] + [f"GET {BASE}/matchers"],
)
async def notification_list(ctx: ToolContext, args: Empty) -> Notifications:
    """Notification endpoints (targets: sendmail, gotify, smtp, webhook; where each sends,
    no secrets) and the matchers that route notifications to them by severity/field."""
    endpoints = []
    for kind in TYPES:
        for row in await read_as(ctx, _ROWS, f"{BASE}/endpoints/{kind}"):
            shown = {k: row[k] for k in _SHOWN if k in row}
            endpoints.append(EndpointRow(
                name=str(row["name"]), type=kind, disabled=_flag(row, "disable"),
                origin=row.get("origin"), comment=row.get("comment"), sends_to=shown or None,
            ))  # fmt: skip
    matchers = [
        MatcherRow(
            name=str(row["name"]),
            targets=list(row.get("target") or []),
            mode=row.get("mode"),
            severities=row.get("match-severity"),
            fields=row.get("match-field"),
            calendar=row.get("match-calendar"),
            inverted=_flag(row, "invert-match"),
            disabled=_flag(row, "disable"),
            comment=row.get("comment"),
        )
        for row in await read_as(ctx, _ROWS, f"{BASE}/matchers")
    ]
    return Notifications(endpoints=endpoints, matchers=matchers)


class TestArgs(WriteInput):
    target: Annotated[Name, Field(description="Target (endpoint) name.")]


class Tested(ToolOutput):
    summary: str


async def _plan_test(ctx: ToolContext, args: TestArgs) -> Plan:
    targets = {str(t["name"]): t for t in await read_as(ctx, _ROWS, f"{BASE}/targets")}
    found = targets.get(args.target)
    if found is None:
        raise ToolFailure(
            "not_found",
            f"no notification target {args.target!r}",
            field="target",
            hint=f"Targets: {', '.join(sorted(targets)) or 'none'}.",
        )
    warnings = ["the target is disabled: PVE may not deliver"] if found.get("disable") else []
    return Plan(
        summary=f"send a test notification through {found.get('type')} target {args.target}",
        target=Target(name=args.target),
        calls=[ApiCall.to("POST", BASE + "/targets/{name}/test", name=args.target)],
        warnings=warnings,
    )


@tool(
    "proxmox_notification_test",
    title="Send a test notification",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=TestArgs,
    output=Tested,
    planner=_plan_test,
    examples=[{"target": "mail-to-root"}],
    rejects=[({"target": "nope"}, "not_found"), ({"target": "-x"}, "invalid_argument")],
    api=[f"POST {BASE}/targets/{{name}}/test"],
)
async def notification_test(ctx: ToolContext, args: TestArgs) -> Tested:
    """Send a test notification through one target (endpoint) to check it delivers."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    await ctx.call("POST", plan.calls[0].path)
    return Tested(summary=plan.summary.replace("send a", "sent a", 1))


TOOLS = (notification_list, notification_test)
