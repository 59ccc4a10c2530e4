"""The tool author's one import: what a tool module needs from the gateway, policy and
the shared argument types, so a domain module imports this and nothing else of pvemcp.

A write whose behaviour is plain API calls is an `action` with a planner from `planners`
(its calls are what dry run shows, the confirmation binds and the audit intent records)
and no handler: the gateway's default runner sends the calls and answers a `TaskOutcome`.
"""

from __future__ import annotations

from pvemcp.gateway import leftovers, planners, undo
from pvemcp.gateway.answers import OBJECT, Answer, answer_as, read_as, tag_list
from pvemcp.gateway.context import CommandRecord, ToolContext, check_api_request
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import ApiCall, Change, GuestTarget, Plan, Target
from pvemcp.gateway.planners import is_secret
from pvemcp.gateway.registry import (
    ToolInput,
    ToolOutput,
    WriteInput,
    action,
    generic_tier,
    tool,
)
from pvemcp.gateway.run import TaskOutcome
from pvemcp.policy.tiers import Tier
from pvemcp.proxmox.errors import ProxmoxError
from pvemcp.tools.common import (
    Applied,
    Empty,
    GuestName,
    GuestRef,
    GuestType,
    NodeName,
    StorageId,
    Timeout,
    Upid,
    Vmid,
    WaitInput,
    apply_plan,
    as_float,
    as_int,
    cluster_default,
    gib,
    guest_disks,
    matching,
    mib,
    node_or_default,
    node_statuses,
    pct,
    utc_time,
)

__all__ = [
    "OBJECT",
    "Answer",
    "ApiCall",
    "Applied",
    "Change",
    "CommandRecord",
    "Empty",
    "GuestName",
    "GuestRef",
    "GuestTarget",
    "GuestType",
    "NodeName",
    "Plan",
    "ProxmoxError",
    "StorageId",
    "Target",
    "TaskOutcome",
    "Tier",
    "Timeout",
    "ToolContext",
    "ToolFailure",
    "ToolInput",
    "ToolOutput",
    "Upid",
    "Vmid",
    "WaitInput",
    "WriteInput",
    "action",
    "answer_as",
    "apply_plan",
    "as_float",
    "as_int",
    "check_api_request",
    "cluster_default",
    "generic_tier",
    "gib",
    "guest_disks",
    "is_secret",
    "leftovers",
    "matching",
    "mib",
    "node_or_default",
    "node_statuses",
    "pct",
    "planners",
    "read_as",
    "tag_list",
    "tool",
    "undo",
    "utc_time",
]
