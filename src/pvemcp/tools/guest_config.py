"""A guest's configuration: read it (current, pending, or a snapshot's), and change it with
PVE's `digest` as the precondition (`planners.guest_config_change`)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from pvemcp.tools.kit import (
    OBJECT,
    GuestRef,
    Plan,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WriteInput,
    is_secret,
    matching,
    planners,
    read_as,
    tool,
    undo,
)

_KEY = r"[a-z][a-z0-9_-]{0,31}"
_MAX_KEYS = 64
ConfigKey = Annotated[str, matching(_KEY, "a configuration key")]


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Keys and values PVE takes: a key name each, and a string or integer value."""
    if len(values) > _MAX_KEYS:
        raise ValueError(f"at most {_MAX_KEYS} keys at once")
    for key, value in values.items():
        if not re.fullmatch(_KEY, key):
            raise ValueError(f"{key[:40]!r} is not a configuration key")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"{key}: give a string or an integer (booleans as 0 or 1)")
    return values


class ConfigArgs(GuestRef):
    snapshot: Annotated[
        str | None,
        matching(r"[A-Za-z][A-Za-z0-9_-]{1,39}", "a snapshot name"),
        Field(description="Read this snapshot's."),
    ] = None


# A guest's configuration: keys and values in effect, pending changes and deletions (at
# the next start), and the digest a change may be conditioned on. (A comment: a docstring
# would be the schema's description, in every tools/list.)
class GuestConfig(ToolOutput):
    vmid: int
    type: str
    node: str
    config: dict[str, Any]
    pending: dict[str, str] | None = None
    pending_delete: list[str] | None = None
    digest: str | None = None
    snapshot: str | None = None


@tool(
    "proxmox_guest_config",
    title="Read a guest's configuration",
    tier=Tier.READ,
    toolset="guests",
    api=(
        "GET /nodes/{node}/{type}/{vmid}/pending",
        "GET /nodes/{node}/{type}/{vmid}/snapshot/{snapname}/config",
    ),
    input=ConfigArgs,
    output=GuestConfig,
    idempotent=True,
    examples=[{"vmid": 100}, {"name": "web01", "snapshot": "pre-upgrade"}],
    rejects=[({"vmid": 100, "name": "web01"}, "invalid_argument"), ({"vmid": 999}, "not_found")],
)
async def guest_config(ctx: ToolContext, args: ConfigArgs) -> GuestConfig:
    """A guest's configuration: keys in effect, pending values and deletions (applied at the
    next start), and the digest for proxmox_guest_config_update. With snapshot: that
    snapshot's config."""
    target = planners.guest_target(await planners.resolve_guest(ctx, args))
    found = dict(vmid=target.vmid, type=target.type, node=target.node)
    if args.snapshot is None:
        config = await planners.read_config(ctx, target)
        pending = {k: v for k, v in config.pending.items() if v is not None}
        deleted = sorted(k for k, v in config.pending.items() if v is None)
        return GuestConfig(
            **found,
            config=config.current,
            pending=pending or None,
            pending_delete=deleted or None,
            digest=config.digest,
        )
    saved = await read_as(ctx, OBJECT, f"{target.path}/config", {"snapshot": args.snapshot})
    saved = dict(saved)  # a read tool's answer may be shared: never change it in place
    digest = saved.pop("digest", None)
    return GuestConfig(**found, config=saved, digest=digest, snapshot=args.snapshot)


class UpdateArgs(WriteInput, GuestRef):
    values: Annotated[
        dict[str, Any],
        AfterValidator(_scalars),
        Field(default_factory=dict, description="Keys to set, in PVE's syntax."),
    ]
    delete: Annotated[list[ConfigKey], Field(default_factory=list)]
    revert: Annotated[
        list[ConfigKey], Field(default_factory=list, description="Pending changes to drop.")
    ]
    digest: Annotated[
        str | None,
        matching(r"[0-9a-f]{40,64}", "a digest"),
        Field(description="From proxmox_guest_config: refuse if the config changed since."),
    ] = None
    snapshot_first: Annotated[
        bool, Field(description="Snapshot the guest first, to roll back to.")
    ] = False


def _no_secrets(values: dict[str, Any]) -> None:
    """Secrets never travel as plain arguments: they would sit in the model's context."""
    secret = next((key for key in sorted(values) if is_secret(key)), None)
    if secret is not None:
        raise ToolFailure(
            "invalid_argument",
            f"{secret} is a secret and cannot be passed as a value",
            field="values",
            hint="Set a cloud-init password with proxmox_cloudinit_set's password_secret.",
        )


async def _plan_update(ctx: ToolContext, args: UpdateArgs) -> Plan:
    _no_secrets(args.values)
    if not (args.values or args.delete or args.revert):
        raise ToolFailure(
            "invalid_argument",
            "nothing to change: give values, delete or revert",
            field="values",
            hint="Read the keys with proxmox_guest_config first.",
        )
    plan = await planners.guest_config_change(
        ctx, args, args.values, args.delete, revert=args.revert, digest=args.digest
    )
    return await planners.snapshot_first(
        ctx, plan, asked=args.snapshot_first, short="config", field="snapshot_first"
    )


@tool(
    "proxmox_guest_config_update",
    title="Change a guest's configuration",
    tier=Tier.WRITE,
    toolset="guests",
    api=("PUT /nodes/{node}/{type}/{vmid}/config", "POST /nodes/{node}/{type}/{vmid}/snapshot"),
    input=UpdateArgs,
    output=planners.SnapshottedOutcome,
    planner=_plan_update,
    inverse=undo.config_inverse,
    examples=[
        {"vmid": 102, "values": {"memory": 3072, "description": "test box"}, "delete": ["onboot"]},
        {"name": "proxy01", "values": {"cores": 2}, "dry_run": True},
        {"vmid": 102, "values": {"memory": 3072}, "snapshot_first": True},
    ],
    rejects=[
        ({"vmid": 102, "values": {"memroy": 3072}}, "invalid_argument"),
        ({"vmid": 102, "values": {"cipassword": "x"}}, "invalid_argument"),
        ({"vmid": 102, "values": {"cores": 2}, "digest": "0" * 40}, "config_changed"),
        ({"vmid": 102}, "invalid_argument"),
        ({"vmid": 9000, "values": {"cores": 4}, "snapshot_first": True}, "unsupported"),
    ],
)
async def guest_config_update(ctx: ToolContext, args: UpdateArgs) -> TaskOutcome:
    """Set or delete a guest's config keys (memory, cores, net0, tags... in PVE's syntax)
    or revert pending ones; the plan shows before and after. A running guest may apply
    some at next start. Not for disk sizes or passwords."""
    assert ctx.plan is not None  # a write's handler runs on its confirmed plan
    return await planners.run_snapshot_first(ctx, args, ctx.plan)


TOOLS = (guest_config, guest_config_update)
