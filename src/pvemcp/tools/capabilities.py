"""proxmox_capabilities_list (the issue's `proxmox_capabilities`; tool names are
proxmox_<domain>_<verb>): what the caller may do on a target, before it tries.

Two gates stand between a call and its effect, and an agent should see both: our policy
(the engine's decision on an imagined call of each tool on the target, made without
calling anything) and PVE's own permissions for the API token the caller's calls use (the
gateway's, or the caller's own from an identity mapping, `gateway/clusters.py`; its privileges
on the target path, `GET /access/permissions`, checked against what the tool's declared
endpoints (`api=`) need by the API index's `permissions.check`, evaluated as
pve-access-control's `RPCEnvironment::exec_api2_perm_check` does).

PVE's side is `unknown` where it cannot be told from here: a tool without `api=`, an
endpoint whose check needs a path parameter the target does not give (`{storage}` with
only a vmid), or a check form not evaluated here (`perm-modify`, `userid-group`,
`userid-param`). A method without `permissions` is root@pam only, which no API token is
(PVE compares the user id): `no` (the simulator lets its root@pam demo token through).
The same data is printed by `pvemcp policy explain --capabilities`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from pvemcp.gateway.context import PolicyView
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyRequest
from pvemcp.pveapi import Index
from pvemcp.tools.kit import (
    NodeName,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    matching,
    tool,
)

MAX_PATHS = 6
"""Distinct ACL paths whose privileges one answer reads (one request each)."""
MAX_PRIVILEGES = 16
"""Privileges named in one answer (root has about 50)."""
MAX_ROWS = 40
"""Tools named in one answer; the rest are counted in `left_off`."""

Verdict = Literal["yes", "no", "unknown"]
Privileges = Callable[[str], Awaitable[Mapping[str, Any] | None]]
"""The token's privileges on an ACL path (None: more paths than one answer reads)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What the caller asks about, with what a guest's entry adds (its node, pool, tags)."""

    vmid: int | None = None
    node: str | None = None
    pool: str | None = None
    path: str | None = None
    tags: frozenset[str] | None = None
    kind: str | None = None
    """A guest's type (qemu or lxc): a tool's endpoints for the other type do not apply."""

    @property
    def acl_path(self) -> str:
        """The ACL path the target is: the given path, else the guest, pool or node."""
        if self.path:
            return self.path
        if self.vmid is not None:
            return f"/vms/{self.vmid}"
        if self.pool:
            return f"/pool/{self.pool}"
        return f"/nodes/{self.node}" if self.node else "/"

    def values(self) -> dict[str, str]:
        """Values for the `{...}` of a check's path template."""
        found: dict[str, str] = {}
        if self.vmid is not None:
            found["vmid"] = str(self.vmid)
        if self.node:
            found["node"] = self.node
        if self.pool:
            found["poolid"] = self.pool
        if self.path and (match := re.fullmatch(r"/storage/([^/]+)", self.path)):
            found["storage"] = match.group(1)
        return found


@dataclass
class _Outcome:
    verdict: Verdict
    missing: list[str] = field(default_factory=list)


async def _check(check: Sequence[Any], target: Target, privileges: Privileges) -> _Outcome:
    """One `permissions.check` evaluated on the target's values (tri-state)."""
    test = check[0]
    if test in ("and", "or"):
        parts = [await _check(sub, target, privileges) for sub in check[1:]]
        verdicts = {part.verdict for part in parts}
        missing = [text for part in parts for text in part.missing]
        decisive: Verdict = "no" if test == "and" else "yes"
        if decisive in verdicts:
            return _Outcome(decisive, missing if decisive == "no" else [])
        return _Outcome(
            "unknown" if "unknown" in verdicts else ("yes" if test == "and" else "no"), missing
        )
    if test != "perm":
        return _Outcome("unknown")
    values = target.values()
    names = re.findall(r"\{(\w+)\}", str(check[1]))
    if any(name not in values for name in names):
        return _Outcome("unknown")
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], str(check[1]))
    held = await privileges(path)
    if held is None:
        return _Outcome("unknown")
    privs = [str(priv) for priv in check[2]]
    options = dict(zip(check[3::2], check[4::2], strict=False))
    if options.get("any"):
        if any(priv in held for priv in privs):
            return _Outcome("yes")
        return _Outcome("no", [f"{'|'.join(privs)} on {path}"])
    lacking = [priv for priv in privs if priv not in held]
    return _Outcome("no", [f"{p} on {path}" for p in lacking]) if lacking else _Outcome("yes")


async def pve_side(spec: AnySpec, index: Index, target: Target, privileges: Privileges) -> _Outcome:
    """Whether PVE lets the token send every endpoint the tool declares, on the target."""
    if not spec.api:
        return _Outcome("unknown")
    outcomes = []
    other = {"qemu": "/lxc/", "lxc": "/qemu/"}.get(target.kind or "")
    for method, template in spec.api:
        if other is not None and other in template:
            continue
        endpoint = index.endpoint(method, template)
        if endpoint is None:
            outcomes.append(_Outcome("unknown"))
            continue
        permissions = endpoint.permissions
        if permissions is None:
            outcomes.append(_Outcome("no", [f"root@pam only ({method} {template})"]))
        elif permissions.get("user") in ("all", "world"):
            outcomes.append(_Outcome("yes"))
        elif permissions.get("check"):
            outcomes.append(await _check(permissions["check"], target, privileges))
        else:
            outcomes.append(_Outcome("unknown"))
    missing = list(dict.fromkeys(text for o in outcomes for text in o.missing))
    verdicts = {o.verdict for o in outcomes}
    if "no" in verdicts:
        return _Outcome("no", missing)
    return _Outcome("unknown" if "unknown" in verdicts else "yes")


class CapabilitiesArgs(ToolInput):
    vmid: Vmid | None = None
    node: NodeName | None = None
    pool: Annotated[str | None, Field(max_length=64)] = None
    path: Annotated[
        str | None,
        # The length before the pattern: pydantic applies a constraint that follows a
        # validator to None as well, and raises TypeError there.
        Field(max_length=128, description="ACL path, e.g. /storage/local."),
        matching(r"/[A-Za-z0-9.\-_/]*", "an ACL path"),
    ] = None
    tool: Annotated[str | None, Field(max_length=64, description="Only this tool.")] = None
    toolset: Annotated[str | None, Field(max_length=32, description="Only this toolset.")] = None


class Capabilities(ToolOutput):
    path: str
    """The ACL path the target is."""
    pve_user: str
    """The API token your calls use, whose PVE privileges were checked."""
    privileges: list[str]
    """Its privileges on path (at most 16)."""
    allowed: list[str]
    confirm: list[str]
    """Allowed once a human confirms."""
    refused: dict[str, str]
    """tool -> 'policy: <rule>' or 'pve: <privilege> on <path>'."""
    unknown: list[str]
    """Policy allows; PVE's answer unknown here."""
    left_off: int | None = None


def _candidates(view: PolicyView, args: CapabilitiesArgs) -> list[AnySpec]:
    if args.tool is not None:
        spec = view.catalogue.find(args.tool)
        if spec is None:
            raise ToolFailure(
                "invalid_argument",
                f"tool: no tool named {args.tool!r}",
                field="tool",
                hint="Names are those of tools/list (proxmox_toolset_enable lists them all).",
            )
        return [spec]
    if args.toolset is not None:
        if args.toolset not in view.catalogue.toolsets:
            raise ToolFailure(
                "invalid_argument",
                f"toolset: no toolset named {args.toolset!r}",
                field="toolset",
                hint=f"toolset must be one of: {', '.join(view.catalogue.toolsets)}",
            )
        names: Iterable[str] = (args.toolset,)
    else:
        names = sorted(view.enabled)
    return [spec for spec in view.catalogue.specs(names) if view.could_allow(spec)]


async def capabilities(
    view: PolicyView,
    *,
    index: Index,
    cluster: str,
    target: Target,
    specs: Sequence[AnySpec],
    privileges: Privileges,
) -> tuple[list[str], list[str], dict[str, str], list[str]]:
    """(allowed, confirm, refused, unknown) for `specs` on `target`: policy first, then PVE."""
    allowed: list[str] = []
    confirm: list[str] = []
    refused: dict[str, str] = {}
    unknown: list[str] = []
    for spec in specs:
        decision = view.decide(
            PolicyRequest(
                tool=spec.name,
                tier=spec.tier,
                cluster=cluster,
                node=target.node,
                vmid=target.vmid,
                pool=target.pool,
                tags=target.tags,
                api=tuple((method, template, None) for method, template in spec.api),
            )
        )
        if decision.effect is Effect.DENY:
            refused[spec.name] = "policy: " + ", ".join(decision.rule_ids)
            continue
        pve = await pve_side(spec, index, target, privileges)
        if pve.verdict == "no":
            refused[spec.name] = "pve: " + "; ".join(pve.missing)
        elif pve.verdict == "unknown":
            unknown.append(spec.name)
        else:
            held = decision.effect in (Effect.CONFIRM, Effect.APPROVE)
            (confirm if held else allowed).append(spec.name)
    return allowed, confirm, refused, unknown


async def _resolve(ctx: ToolContext, args: CapabilitiesArgs) -> Target:
    """The target, a guest's node, pool and tags read from /cluster/resources."""
    if args.vmid is None:
        return Target(node=args.node, pool=args.pool, path=args.path)
    result = await ctx.call("GET", "/cluster/resources", {"type": "vm"})
    for entry in result.data if isinstance(result.data, list) else []:
        if isinstance(entry, dict) and entry.get("vmid") == args.vmid:
            tags = frozenset(t for t in re.split(r"[;, ]", str(entry.get("tags", ""))) if t)
            return Target(
                vmid=args.vmid,
                node=str(entry.get("node")) if entry.get("node") else args.node,
                pool=str(entry["pool"]) if entry.get("pool") else args.pool,
                path=args.path,
                tags=tags,
                kind=str(entry.get("type")) if entry.get("type") else None,
            )
    # Not listed: no such guest, or the token lacks VM.Audit on it (PVE filters the list).
    return Target(vmid=args.vmid, node=args.node, pool=args.pool, path=args.path)


def privilege_reader(ctx: ToolContext) -> Privileges:
    """The token's privileges per path, read once each, at most `MAX_PATHS` paths."""
    seen: dict[str, Mapping[str, Any]] = {}

    async def read(path: str) -> Mapping[str, Any] | None:
        if path not in seen:
            if len(seen) >= MAX_PATHS:
                return None
            answer = await ctx.call("GET", "/access/permissions", {"path": path})
            data = answer.data if isinstance(answer.data, dict) else {}
            held = data.get(path)
            seen[path] = held if isinstance(held, dict) else {}
        return seen[path]

    return read


@tool(
    "proxmox_capabilities_list",
    title="What may I do here?",
    tier=Tier.READ,
    toolset="core",
    input=CapabilitiesArgs,
    output=Capabilities,
    idempotent=True,
    api=["GET /cluster/resources", "GET /access/permissions"],
    examples=[{"vmid": 101}, {"node": "pve1", "toolset": "nodes"}, {"tool": "proxmox_guest_power"}],
    rejects=[({"tool": "proxmox_nope"}, "invalid_argument"), ({"path": "vms"}, "invalid_argument")],
)
async def capabilities_tool(ctx: ToolContext, args: CapabilitiesArgs) -> Capabilities:
    """Which tools you may use on a target (vmid, node, pool or ACL path): policy's verdict
    and the PVE privileges of the token your calls use, checked without calling anything.
    Plan first."""
    view = ctx.policy_view
    if view is None:
        raise ToolFailure("internal_error", "this gateway gives tools no view of policy")
    specs = _candidates(view, args)
    target = await _resolve(ctx, args)
    privileges = privilege_reader(ctx)
    held = await privileges(target.acl_path) or {}
    left_off = max(0, len(specs) - MAX_ROWS)
    allowed, confirm, refused, unknown = await capabilities(
        view,
        index=ctx.api_index,
        cluster=ctx.cluster_name,
        target=target,
        specs=specs[:MAX_ROWS],
        privileges=privileges,
    )
    return Capabilities(
        path=target.acl_path,
        pve_user=ctx.pve_token_id or ctx.cluster.token_id,
        privileges=sorted(held)[:MAX_PRIVILEGES],
        allowed=allowed,
        confirm=confirm,
        refused=refused,
        unknown=unknown,
        left_off=left_off or None,
    )


TOOLS = (capabilities_tool,)
