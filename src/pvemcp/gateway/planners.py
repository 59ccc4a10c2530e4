"""The common planners, written once: what a write on a guest will send and change.

A tool declares its arguments and picks a planner; the planner resolves the guest (by
vmid or name) with fresh reads, so policy decides on its real node, pool and tags, and
returns a `Plan` whose `calls` are exactly what the default runner (`gateway/run.py`)
will send. Tools never build REST paths in their handlers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol, Required, cast

from pydantic import ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict

from pvemcp.gateway.answers import Answer, read_as, tag_list
from pvemcp.gateway.context import ToolContext, check_api_request
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import ApiCall, Change, GuestTarget, Plan
from pvemcp.gateway.registry import WriteInput
from pvemcp.gateway.run import TaskOutcome, Waits, run_planned
from pvemcp.proxmox.backend import Method
from pvemcp.proxmox.errors import NotFound, TaskFailed
from pvemcp.secrets.redaction import MASK, is_secret_key


def is_secret(key: str) -> bool:
    """Whether a config key holds a secret (cipassword, password...): its value is never
    shown in a plan, and tools refuse it as a plain argument."""
    return is_secret_key(key)


class GuestLookup(Protocol):
    """How a call names a guest: by vmid or by name (tools' `GuestRef` fits)."""

    @property
    def vmid(self) -> int | None: ...

    @property
    def name(self) -> str | None: ...


@with_config(ConfigDict(coerce_numbers_to_str=True))
class GuestResource(TypedDict, total=False):
    """A guest's row in /cluster/resources: what the guest tools and planners read.

    A TypedDict, validated as leniently as an `Answer` but into plain dicts: on a
    10,000-guest cluster, a model per row and its `model_dump` cost about 100 ms a call."""

    vmid: Required[int]
    type: Required[str]
    node: Required[str]
    name: str | None
    status: str
    tags: str | None
    pool: str | None
    template: bool | None
    hastate: str | None
    lock: str | None
    cpu: float | None
    maxcpu: float | None
    mem: float | None
    maxmem: float | None
    disk: float | None
    maxdisk: float | None
    uptime: float | None
    netin: float | None
    netout: float | None
    diskread: float | None
    diskwrite: float | None


_RESOURCES = TypeAdapter(list[GuestResource])


async def guest_resources(ctx: ToolContext) -> list[dict[str, Any]]:
    """The cluster's guests by vmid, as validated rows (None members left out)."""
    rows = await read_as(ctx, _RESOURCES, "/cluster/resources", {"type": "vm"})
    return [
        _present(row)
        for row in sorted(rows, key=itemgetter("vmid"))
        if row["type"] in ("qemu", "lxc")
    ]


def _present(row: GuestResource) -> dict[str, Any]:
    """The row without its None members. PVE sends none, so as a rule the row itself:
    rebuilding every row cost about 25 ms at 10,000 guests."""
    if None in row.values():
        return {key: value for key, value in row.items() if value is not None}
    return cast(dict[str, Any], row)


def guest_target(row: Mapping[str, Any]) -> GuestTarget:
    """A guest's resource row as the plan target policy decides on (node, pool, tags)."""
    return GuestTarget(
        node=str(row["node"]),
        vmid=int(row["vmid"]),
        type=row["type"],
        name=row.get("name"),
        pool=row.get("pool"),
        tags=tag_list(row.get("tags")) or [],
    )


async def resolve_guest(ctx: ToolContext, ref: GuestLookup) -> dict[str, Any]:
    """Find the guest's resource row (node and type); errors list what exists instead."""
    rows = await guest_resources(ctx)
    if ref.vmid is not None:
        for row in rows:
            if int(row["vmid"]) == ref.vmid:
                return row
        raise ToolFailure(
            "not_found",
            f"no guest with vmid {ref.vmid} in cluster {ctx.cluster_name}",
            field="vmid",
            hint="List guests with proxmox_guest_list.",
        )
    exact = [r for r in rows if r.get("name") == ref.name]
    found = exact or [r for r in rows if str(r.get("name", "")).lower() == str(ref.name).lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ToolFailure(
            "not_found",
            f"no guest named {ref.name!r} in cluster {ctx.cluster_name}",
            field="name",
            hint="List guests with proxmox_guest_list (its name filter matches substrings).",
        )
    candidates = [
        {
            "vmid": int(r["vmid"]),
            "type": r.get("type"),
            "node": r.get("node"),
            "status": r.get("status"),
        }
        for r in found
    ]
    raise ToolFailure(
        "ambiguous_name",
        f"{len(found)} guests are named {ref.name!r}",
        field="name",
        hint="Call again with vmid: " + ", ".join(str(c["vmid"]) for c in candidates),
        details={"candidates": candidates},
    )


def _label(target: GuestTarget) -> str:
    return f"{target.type} {target.vmid} ({target.name or '?'}) on {target.node}"


def _endpoint(target: GuestTarget, rest: str) -> str:
    """The API's template for `rest` under the guest (`/nodes/{node}/qemu/{vmid}/...`)."""
    return f"/nodes/{{node}}/{target.type}/{{vmid}}/{rest}"


async def guest_action(
    ctx: ToolContext,
    ref: GuestLookup,
    verb: str,
    endpoint: str,
    *,
    method: Method = "POST",
    params: dict[str, Any] | None = None,
    status: tuple[str, str] | None = None,
    check: Callable[[GuestTarget], None] | None = None,
    warnings: Sequence[str] = (),
) -> Plan:
    """An action on one guest that starts a task: `method endpoint` under the guest's
    path (e.g. `status/start`). `status` is the guest state it expects and leaves
    (`("stopped", "running")`): the plan warns when the guest is not in the first, and the
    runner reports (and for HA waits for) the second. `check` may refuse the resolved
    guest (a `ToolFailure`) before anything is planned."""
    row = await resolve_guest(ctx, ref)
    if check is not None:
        check(guest_target(row))
    return guest_call(
        row, verb, endpoint, method=method, params=params, status=status, warnings=warnings
    )


def guest_call(
    row: Mapping[str, Any],
    verb: str,
    endpoint: str,
    *,
    method: Method = "POST",
    params: dict[str, Any] | None = None,
    status: tuple[str, str] | None = None,
    changes: Sequence[Change] = (),
    warnings: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
) -> Plan:
    """The plan of one task call on a guest already resolved (`resolve_guest`), for a
    planner that reads more of the guest first (its snapshots) to refuse or explain the
    call: `guest_action` without the lookup, with the planner's own `changes`. `where`
    fills the endpoint's other placeholders (`snapshot/{snapname}/rollback`): the call's
    template stays the API's, which policy's `api` rules and the audit know it by."""
    target = guest_target(row)
    values: dict[str, str | int] = {**(where or {}), "node": target.node, "vmid": target.vmid}
    call = ApiCall.to(method, _endpoint(target, endpoint), params=params, task=True, **values)
    planned, noted = list(changes), list(warnings)
    if status is not None:
        expected, after = status
        now = str(row.get("status", "unknown"))
        if now != expected:
            noted.insert(0, f"the guest is {now}, not {expected}: the task may fail or do nothing")
        planned.append(Change(field="status", before=now, after=after))
    return Plan(
        summary=f"{verb} {_label(target)}",
        changes=planned,
        target=target,
        calls=[call],
        warnings=noted,
    )


def ref_field(ref: GuestLookup) -> str:
    """The argument that named the guest (`vmid` or `name`): what an error about it names."""
    return "vmid" if ref.vmid is not None else "name"


def require_unlocked(row: Mapping[str, Any], field: str) -> None:
    """Refuse a guest that holds a config `lock` (a snapshot, backup, clone or migration
    is running on it, or one failed and left it): PVE's `check_lock` would fail the call
    with `VM is locked (snapshot)`, so it is refused before anything is sent."""
    lock = row.get("lock")
    if not lock:
        return
    kind = "VM" if row.get("type") == "qemu" else "CT"
    raise ToolFailure(
        "guest_locked",
        f"{kind} is locked ({lock}): {_label(guest_target(row))}",
        field=field,
        hint=f"Wait for the guest's running {lock} task to end, then call again; a lock "
        "left by a failed task is removed on the node (qm unlock / pct unlock).",
        details={"lock": lock},
    )


async def resolve_unlocked(ctx: ToolContext, ref: GuestLookup) -> dict[str, Any]:
    """The guest's resource row (`resolve_guest`) for a write that PVE would refuse on a
    locked guest: a lock is refused naming the argument that named the guest."""
    row = await resolve_guest(ctx, ref)
    require_unlocked(row, ref_field(ref))
    return row


class _Iface(Answer):
    iface: str
    active: int = 0
    """1 once the node runs it: a bridge only in the pending interfaces file is listed
    too, but a guest cannot use it until the network config is applied."""


_IFACES = TypeAdapter(list[_Iface])


@dataclass(frozen=True, slots=True)
class NodeBridges:
    """What a guest NIC may name on a node (GET /nodes/{node}/network?type=any_bridge):
    the bridges and applied SDN VNets it runs, and those only in its pending interfaces."""

    node: str
    active: list[str]
    pending: list[str]

    def require(self, bridge: str, field: str) -> None:
        """Refuse a bridge the node does not run, naming `field`: PVE takes it into the
        config and fails only at the NIC's hotplug (`bridge 'vmbr1' does not exist`,
        pve-common PVE/Network.pm) or the guest's next start."""
        if bridge in self.active:
            return
        listed = ", ".join(self.active) or "none"
        if bridge in self.pending:
            raise ToolFailure(
                "invalid_argument",
                f"bridge {bridge!r} on node {self.node} is a pending change, not applied",
                field=field,
                hint=f"Apply it first with proxmox_network_apply, or use an active bridge: "
                f"{listed}.",
            )
        raise ToolFailure(
            "not_found",
            f"bridge {bridge!r} does not exist on node {self.node}",
            field=field,
            hint=f"Use one of the node's active bridges: {listed}.",
        )


async def node_bridges(ctx: ToolContext, node: str) -> NodeBridges:
    """The node's bridges (with applied VNets), active and pending-only, in one read."""
    found = await read_as(ctx, _IFACES, f"/nodes/{node}/network", {"type": "any_bridge"})
    return NodeBridges(
        node=node,
        active=sorted(item.iface for item in found if item.active),
        pending=sorted(item.iface for item in found if not item.active),
    )


_NIC_BRIDGE = re.compile(r"(?:^|,)bridge=([^,]+)")


async def _check_nic_bridges(ctx: ToolContext, node: str, values: Mapping[str, Any]) -> None:
    """Each `netN` set names a bridge the node runs (`NodeBridges.require`); a NIC without
    `bridge=` (QEMU's user-mode networking) is left to PVE. Read only when a NIC changes."""
    nics = {key: m.group(1) for key, value in values.items()
            if re.fullmatch(r"net\d+", key) and (m := _NIC_BRIDGE.search(str(value)))}  # fmt: skip
    if not nics:
        return
    bridges = await node_bridges(ctx, node)
    for key, bridge in sorted(nics.items()):
        bridges.require(bridge, key)


class _PendingItem(Answer):
    """One key of GET .../pending: its current value, a pending value or deletion."""

    key: str
    value: str | None = None
    pending: str | None = None
    delete: int | None = None


_PENDING = TypeAdapter(list[_PendingItem])


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """A guest's configuration as GET .../pending tells it: the values in effect, the
    pending ones (None: deleted at the next start), and the `digest` of the file."""

    current: dict[str, str]
    pending: dict[str, str | None]
    digest: str | None

    def effective(self) -> dict[str, str]:
        """The configuration once the pending changes apply."""
        merged = {**self.current, **self.pending}
        return {key: value for key, value in merged.items() if value is not None}


async def read_config(ctx: ToolContext, target: GuestTarget) -> GuestConfig:
    """The guest's configuration with its pending changes and digest, in one read."""
    items = await read_as(ctx, _PENDING, f"{target.path}/pending")
    current = {item.key: item.value for item in items if item.value is not None}
    pending: dict[str, str | None] = {
        item.key: None if item.delete else item.pending
        for item in items
        if item.delete or item.pending is not None
    }
    digest = current.pop("digest", None)
    return GuestConfig(current=current, pending=pending, digest=digest)


async def guest_config_change(
    ctx: ToolContext,
    ref: GuestLookup,
    values: Mapping[str, Any],
    delete: Sequence[str] = (),
    *,
    revert: Sequence[str] = (),
    digest: str | None = None,
    method: Method = "PUT",
) -> Plan:
    """A change of a guest's configuration: the config is read with its pending changes
    and `digest` (GET .../pending), the plan lists each key's before (its pending value if
    any) and after, and the one call sends only the keys that change plus `delete`,
    `revert` (pending changes dropped) and the `digest`, so PVE refuses it if the
    configuration changed since it was planned (someone else's edit is never overwritten).
    A caller's `digest` (from a read) must still be the config's, and a locked guest is
    refused (PVE's `check_lock`, unless `skiplock`, which only root may), as is a `netN` on
    a bridge the node does not run (`NodeBridges.require`). The call is checked
    against the PVE API's index here, so a dry run already names an unknown key with the
    closest valid ones. `method` POST is QEMU's asynchronous update (a task); PUT answers
    at once. A secret key's values (`cipassword`) are masked in the changes; the call's
    parameters are redacted by key wherever the plan is shown or recorded."""
    for given, name in ((delete, "delete"), (revert, "revert")):
        both = sorted(set(values) & set(given))
        if both:
            raise ToolFailure(
                "invalid_argument",
                f"{both[0]} is both set and in {name}",
                field=name,
                hint=f"Either set a key or {name} it, not both.",
            )
    row = await resolve_unlocked(ctx, ref)
    target = guest_target(row)
    config = await read_config(ctx, target)
    now, pending, found_digest = config.effective(), config.pending, config.digest
    if digest is not None and digest != found_digest:
        raise ToolFailure(
            "config_changed",
            f"the configuration of {_label(target)} changed since it was read (digest)",
            field="digest",
            hint="Read it again with proxmox_guest_config and plan the change on what it is now.",
        )
    setting = {
        key: value
        for key, value in sorted(values.items())
        if key not in now or str(now[key]) != str(value)
    }
    await _check_nic_bridges(ctx, target.node, setting)
    removed = [key for key in delete if key in now]
    reverted = [key for key in revert if key in pending]

    def shown(key: str, value: Any) -> Any:
        return MASK if value is not None and is_secret(key) else value

    changes = [
        Change(field=key, before=shown(key, now.get(key)), after=shown(key, value))
        for key, value in setting.items()
    ]
    changes += [Change(field=key, before=shown(key, now[key])) for key in removed]
    changes += [
        Change(
            field=key,
            before=shown(key, pending[key]),
            after=shown(key, config.current.get(key)),
        )
        for key in reverted
    ]
    warnings = [f"{key} is not set: nothing to delete" for key in delete if key not in now]
    warnings += [f"{key} has no pending change: nothing to revert" for key in revert
                 if key not in pending]  # fmt: skip
    if not changes:
        return Plan(
            summary=f"no change to the configuration of {_label(target)}",
            target=target,
            warnings=warnings,
        )
    params: dict[str, Any] = dict(setting)
    if removed:
        params["delete"] = ",".join(removed)
    if reverted:
        params["revert"] = ",".join(reverted)
    if found_digest is not None:
        params["digest"] = found_digest
    call = ApiCall.to(
        method,
        _endpoint(target, "config"),
        params=params,
        task=method == "POST",
        node=target.node,
        vmid=target.vmid,
    )
    check_api_request(call.method, call.path, call.params)
    return Plan(
        summary=f"change {len(changes)} configuration key(s) of {_label(target)}",
        changes=changes,
        target=target,
        calls=[call],
        warnings=warnings,
    )


# -- a snapshot before a risky change ---------------------------------------------------

SNAPSHOT_TYPES = frozenset({"lvmthin", "zfspool", "zfs", "rbd", "btrfs"})
"""Storage types that snapshot every volume (pve-storage `volume_has_feature` of
LvmThinPlugin, ZFSPoolPlugin, ZFSPlugin, RBDPlugin, BTRFSPlugin)."""

QCOW2_TYPES = frozenset({"dir", "nfs", "cifs", "glusterfs", "lvm"})
"""Storage types that snapshot only qcow2 volumes (Plugin.pm: `snapshot => {current =>
{qcow2 => 1}}`, so a raw or vmdk file cannot; LVMPlugin.pm the same: qcow2 on LVM is PVE
9's `snapshot-as-volume-chain`). Other types (iSCSI, a bind mount, a device) cannot."""

_VOLUME_KEY = re.compile(r"(?:scsi|virtio|sata|ide|efidisk|tpmstate)\d+|rootfs|mp\d+")


class _NodeStorage(Answer):
    storage: str
    type: str


_NODE_STORAGES = TypeAdapter(list[_NodeStorage])


def _unsnapshottable(config: Mapping[str, str], types: Mapping[str, str]) -> list[str]:
    """The disks PVE's `has_feature('snapshot')` would refuse (qemu-server QemuConfig.pm
    and pve-container LXC/Config.pm: every volume but CD-ROMs must have the feature), as
    `key (volid on storage, type)`. A storage the node does not list (the token may not
    audit it) is left to PVE: its task then fails before anything else is sent."""
    found = []
    for key, value in sorted(config.items()):
        if not _VOLUME_KEY.fullmatch(key) or "media=cdrom" in value:
            continue
        volid = value.split(",", 1)[0].removeprefix("volume=").removeprefix("file=")
        storage, colon, volname = volid.partition(":")
        kind = types.get(storage) if colon else "not a storage volume"
        if kind is None or kind in SNAPSHOT_TYPES:
            continue
        if kind in QCOW2_TYPES and volname.endswith(".qcow2"):
            continue
        found.append(f"{key} ({volid}{f' on {storage}, {kind}' if colon else ''})")
    return found


async def snapshot_first(
    ctx: ToolContext, plan: Plan, *, asked: bool, short: str, field: str
) -> Plan:
    """`plan` with a snapshot of the guest taken first, so the change can be rolled back
    (proxmox_snapshot_rollback), when the caller `asked` (argument `field`) or the
    cluster's `snapshot_before_change` requires it. The name, `pre-<short>-<digest>`,
    follows from the config it saves: planning again for a confirmation token gives the
    same calls. Refused naming `field` before anything is sent where PVE cannot snapshot:
    a template, a disk on storage without snapshots (`_unsnapshottable`), a taken name. A
    plan that changes nothing gets no snapshot. `run_snapshot_first` runs the result."""
    target = plan.target
    required = ctx.cluster.snapshot_before_change
    if not (asked or required) or not plan.calls or not isinstance(target, GuestTarget):
        return plan
    without = (
        f"Ask an operator: cluster {ctx.cluster_name} requires a snapshot before a change "
        "(snapshot_before_change)"
        if required
        else f"Call without {field}"
    )
    word = "VM" if target.type == "qemu" else "CT"
    config = await read_config(ctx, target)
    if config.current.get("template") == "1":
        raise ToolFailure(
            "unsupported",
            f"{_label(target)} is a template: PVE cannot take a template's snapshots",
            field=field,
            hint=f"{without}; a template's config can be restored from a backup.",
        )
    # Not the clock: a confirmation plans again and must find the same name (a server
    # that sends no digest gets the time).
    stamp = (config.digest or time.strftime("%Y%m%d%H%M%S", time.gmtime()))[:12]
    name = f"pre-{short}-{stamp}"
    storages = await read_as(ctx, _NODE_STORAGES, f"/nodes/{target.node}/storage")
    blocked = _unsnapshottable(config.current, {s.storage: s.type for s in storages})
    if blocked:
        raise ToolFailure(
            "unsupported",
            f"snapshot feature is not available for {word} {target.vmid}: " + ", ".join(blocked),
            field=field,
            hint=f"{without} (a backup, proxmox_backup_start, can be the way back), or "
            "move the disk to storage with snapshots (LVM-thin, ZFS, Ceph RBD, qcow2 on a "
            "directory).",
            details={"disks": blocked},
        )
    taken = await read_as(ctx, _NAMES, f"{target.path}/snapshot")
    if any(snap.name == name for snap in taken):
        raise ToolFailure(
            "already_exists",
            f"snapshot name '{name}' already used",
            field=field,
            hint=f"A snapshot of this exact config exists: roll back to {name}, or delete "
            "it (proxmox_snapshot_delete) and call again.",
        )
    call = ApiCall.to(
        "POST",
        _endpoint(target, "snapshot"),
        params={"snapname": name, "description": f"before {plan.summary}"[:200]},
        task=True,
        node=target.node,
        vmid=target.vmid,
    )
    return plan.model_copy(
        update={
            "summary": f"take snapshot '{name}', then {plan.summary}",
            "calls": [call, *plan.calls],
            "warnings": [
                *plan.warnings,
                f"snapshot '{name}' is taken first and kept: proxmox_snapshot_rollback to "
                "it restores the disks and config as they are now",
            ],
        }
    )


class _Named(Answer):
    name: str


_NAMES = TypeAdapter(list[_Named])


# What a change that took a snapshot first did: the outcome of the change, and the
# snapshot to roll back to. (A comment: a docstring would be the schema's description.)
class SnapshottedOutcome(TaskOutcome):
    snapshot: str | None = None


async def run_snapshot_first(ctx: ToolContext, args: WriteInput, plan: Plan) -> TaskOutcome:
    """Run a plan: as the default runner does, or, when `snapshot_first` put a snapshot
    first, take it (always waited for), then send the rest. A failed snapshot sends
    nothing else. A snapshot changes the config's `digest`, so the change's digest is
    replaced by the one the snapshot left, once the config is shown to be as planned:
    the planned digest before the snapshot, and the same keys and values after it."""
    first = plan.calls[0] if plan.calls else None
    target = plan.target
    if (
        first is None
        or not first.template.endswith("/snapshot")
        or not isinstance(target, GuestTarget)
    ):
        return await run_planned(ctx, args, plan)
    name = str(first.params["snapname"])
    rest = plan.calls[1:]
    before = await read_config(ctx, target)
    planned = next((c.params["digest"] for c in rest if "digest" in c.params), None)
    if planned is not None and before.digest != planned:
        raise _changed(target, "since it was planned; nothing was sent")
    waiting = args.model_copy(update={"wait": True}) if isinstance(args, Waits) else args
    try:
        await run_planned(ctx, waiting, plan.model_copy(update={"calls": [first]}))
    except TaskFailed as exc:
        raise ToolFailure(
            "task_failed",
            f"snapshot '{name}' failed ({exc.message}); the change was not sent",
            hint="Read the task log (proxmox_task_log); call without snapshot_first only if "
            "no way back is needed.",
            details={"upid": exc.upid, "exitstatus": exc.exitstatus},
        ) from exc
    after = await read_config(ctx, target)
    unchanged = {k: v for k, v in before.current.items() if k != "parent"} == {
        k: v for k, v in after.current.items() if k != "parent"
    } and before.pending == after.pending
    if not unchanged:
        raise _changed(target, f"while snapshot '{name}' was taken; the change was not sent")
    sent = [
        c.model_copy(update={"params": {**c.params, "digest": after.digest}})
        if "digest" in c.params and after.digest is not None
        else c
        for c in rest
    ]
    outcome = await run_planned(ctx, args, plan.model_copy(update={"calls": sent}))
    rollback = f"proxmox_snapshot_rollback snapname {name} goes back"
    return SnapshottedOutcome(
        **outcome.model_dump(exclude={"note"}),
        note=f"{outcome.note}; {rollback}" if outcome.note else rollback,
        snapshot=name,
    )


def _changed(target: GuestTarget, when: str) -> ToolFailure:
    return ToolFailure(
        "config_changed",
        f"the configuration of {_label(target)} changed {when}",
        field="digest",
        hint="Read it again with proxmox_guest_config and plan the change on what it is now.",
    )


# -- storages: where a plan puts new volumes ----------------------------------------------

_GIB = 1024**3


class StorageStatus(Answer):
    """GET /nodes/{node}/storage/{storage}/status: what a plan that puts volumes there reads."""

    content: str = ""
    total: int = 0
    avail: int = 0


_STORAGE_STATUS = TypeAdapter(StorageStatus)


def _gib(size: int) -> float:
    return round(size / _GIB, 2)


async def storage_status(
    ctx: ToolContext, node: str, storage: str, *, field: str, content: str | None = None
) -> StorageStatus:
    """The storage's status on `node`; an unknown one, or one whose content does not include
    `content` (images, rootdir...), is refused naming `field`. Only PVE's "does not exist"
    means unknown: any other failure (a 5xx, a timeout) is reported as itself."""
    try:
        status = await read_as(ctx, _STORAGE_STATUS, f"/nodes/{node}/storage/{storage}/status")
    except NotFound:
        raise ToolFailure(
            "not_found",
            f"storage {storage!r} does not exist on node {node}",
            field=field,
            hint="The node's storages are listed by proxmox_node_status.",
        ) from None
    if content is not None and content not in status.content.split(","):
        raise ToolFailure(
            "invalid_argument",
            f"storage {storage!r} does not hold {content}",
            field=field,
            hint=f"Choose a storage whose content includes {content}.",
        )
    return status


async def storage_room(
    ctx: ToolContext,
    node: str,
    wanted: Sequence[tuple[str, int, str]],
    *,
    content: str | None = None,
    storage_field: str | None = None,
) -> list[Change]:
    """Each storage's free GiB before and after the new volumes `wanted` ((storage, bytes,
    field) each), or `storage_full` naming the field of the first volume that does not fit:
    the plan shows what a create, clone or new disk leaves, and PVE's own refusal (after
    part of the work) is not reached. An unknown or unfit storage is refused naming
    `storage_field` (default: the volume's field)."""
    statuses: dict[str, StorageStatus] = {}
    taken: dict[str, int] = {}
    for storage, size, field in wanted:
        if storage not in statuses:
            statuses[storage] = await storage_status(
                ctx, node, storage, field=storage_field or field, content=content
            )
        taken[storage] = taken.get(storage, 0) + size
        avail = statuses[storage].avail
        if taken[storage] > avail:
            raise ToolFailure(
                "storage_full",
                f"storage {storage!r} on {node} has {_gib(avail)} GiB free, "
                f"{_gib(taken[storage])} GiB needed",
                field=field,
                hint="Choose another storage or smaller sizes, or free space first.",
            )
    return [
        Change(
            field=f"{storage} free GiB",
            before=_gib(statuses[storage].avail),
            after=_gib(statuses[storage].avail - size),
        )
        for storage, size in taken.items()
    ]
