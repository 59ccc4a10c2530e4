"""High availability: resources, rules, the manager's status, and a CRM that acts.

Follows pve-ha-manager (`src/PVE/API2/HA/{Resources,Rules,Groups,Status}.pm`,
`src/PVE/HA/Config.pm`, `Rules/NodeAffinity.pm`, `Rules/ResourceAffinity.pm`) as PVE 9.x
runs it: HA groups have been migrated to rules, so a resource's `group` is refused with
PVE's words. The groups methods are still in the 9.2 schema, but on such a cluster each
only refuses (`cannot index groups: ha groups have been migrated to rules`), so the
simulator does not serve them (its conformance test wants every route to answer).

A managed guest's start, stop and shutdown are handed to ha-manager (`hastart`/`hastop`
workers, as qemu-server's and pve-container's API handlers do) and the simulated CRM
carries them out: after
`CRM_DELAY` (the real CRM loop runs every 10 s) the local resource manager runs the
action as root@pam (`qmstart`, `vzshutdown`, `qmigrate`...), and `relocate` is a
shutdown, an offline migration and a start on the target. Resource states: started,
stopped, disabled (stopped and kept so), ignored (left alone, as if unmanaged).

Not modelled: fencing, node failures and recovery, `max_restart`/`max_relocate` retries,
failback by node priority, the CRS scheduler, and resource-affinity co-migration (a
migrate answers `comigrated-resources` from the rules, but moves only the one resource).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import migrate, power
from .errors import ApiError, check_digest, failure, param_error
from .model import Guest, GuestKind
from .router import Context, Params, Result, Route, api, text
from .tasks import Plan

if TYPE_CHECKING:
    from .state import ClusterState

CRM_DELAY = 2.0
"""Seconds (before the time scale) from a request to the LRM's worker taking it up."""
REQUEST_SECONDS = 0.5
"""How long a `hastart`/`hastop`/`hamigrate` worker runs: it only runs `ha-manager`."""
MASTER = "pve1"
"""The node whose CRM is the master."""
LRM_USER = "root@pam"

RESOURCE_OPTIONS = ("state", "comment", "max_restart", "max_relocate", "failback", "auto-rebalance")
"""What a resource stores (`group` is refused: groups have been migrated to rules)."""
RULE_OPTIONS = ("resources", "nodes", "strict", "affinity", "disable", "comment")
_TYPES: dict[GuestKind, str] = {"qemu": "vm", "lxc": "ct"}
_KINDS: dict[str, GuestKind] = {"vm": "qemu", "ct": "lxc"}
_GROUPS_MIGRATED = "ha groups have been migrated to rules"

Job = Callable[[float], Plan]


@dataclass
class Service:
    """One HA resource: its config (`resources.cfg`) and what the CRM sees of it."""

    sid: str
    vmid: int
    kind: GuestKind
    options: dict[str, Any] = field(default_factory=dict)
    crm_state: str = "started"
    """The CRM's service state: started, stopped, request_stop, migrate, relocate..."""
    target: str | None = None
    busy: bool = False
    """An LRM worker acts on it now."""

    @property
    def type(self) -> str:
        return _TYPES[self.kind]

    @property
    def requested(self) -> str:
        """The requested state (`enabled` is the old word for `started`)."""
        state = str(self.options.get("state", "started"))
        return "started" if state == "enabled" else state


@dataclass
class Rule:
    """One HA rule (`rules.cfg`): node-affinity or resource-affinity."""

    id: str
    type: str
    resources: list[str]
    nodes: dict[str, int | None] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    """strict, affinity, disable, comment: as given."""
    order: int = 0


@dataclass
class HaStore:
    """The cluster's HA configuration and the manager's view, changed under the state lock."""

    services: dict[str, Service] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    next_order: int = 1
    forks: list[Callable[[], None]] = field(default_factory=list)
    """Workers the manager will fork (`_lrm`), started by `settle`: a task's end runs
    inside the task table's pass, which must not start tasks itself."""

    def settle(self, state: ClusterState, now: float) -> None:
        """Fork the queued workers, and advance the tasks again until none is queued
        (a worker that ends at once may queue the next step)."""
        while self.forks:
            while self.forks:
                self.forks.pop(0)()
            state.tasks.advance(now)

    def managed(self, vmid: int) -> Service | None:
        """The resource of guest `vmid` if HA acts on it (an `ignored` one it leaves alone,
        as `vm_is_ha_managed` says)."""
        service = self.service_of(vmid)
        if service is None or service.requested == "ignored":
            return None
        return service

    def service_of(self, vmid: int) -> Service | None:
        """The configured resource of guest `vmid`, whatever its state."""
        return next((s for s in self.services.values() if s.vmid == vmid), None)

    def resources_digest(self) -> str:
        """The digest of `resources.cfg` as the API reports it (SHA-1 of the content)."""
        body = {sid: s.options for sid, s in sorted(self.services.items())}
        return _sha1(body)

    def rules_digest(self) -> str:
        body = {r.id: [r.type, r.resources, r.nodes, r.options] for r in self._ordered()}
        return _sha1(body)

    def _ordered(self) -> list[Rule]:
        return sorted(self.rules.values(), key=lambda rule: rule.order)

    def drop(self, vmid: int) -> None:
        """A destroyed guest's resource and its place in rules go (`purge`)."""
        service = self.service_of(vmid)
        if service is not None:
            self._delete(service.sid, purge=True)

    def _delete(self, sid: str, *, purge: bool) -> None:
        # Config.pm delete_service_from_config: a rule left without resources goes too.
        del self.services[sid]
        if not purge:
            return
        for rule in list(self.rules.values()):
            if sid in rule.resources:
                rule.resources.remove(sid)
                if not rule.resources:
                    del self.rules[rule.id]


def _sha1(body: Any) -> str:
    return hashlib.sha1(
        json.dumps(body, sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()


def demo_ha(store_guests: dict[int, Guest]) -> HaStore:
    """The seeded HA setup: container 203 managed (started), VM 104 configured but
    ignored, and a node-affinity rule that keeps 203 on pve3, else pve2."""
    store = HaStore()
    guest = store_guests[203]
    store.services["ct:203"] = Service(
        "ct:203", 203, guest.kind, {"state": "started", "max_restart": 1, "max_relocate": 1}
    )
    # db01 is under HA but ignored (as during maintenance): HA leaves it alone, and rules
    # may still name it.
    store.services["vm:104"] = Service("vm:104", 104, "qemu", {"state": "ignored"})
    store.rules["prefer-pve3"] = Rule(
        "prefer-pve3",
        "node-affinity",
        ["ct:203"],
        {"pve3": 2, "pve2": 1},
        {"comment": "dns next to the storage"},
        order=1,
    )
    store.next_order = 2
    return store


# --- sids and guests -----------------------------------------------------------------


def parse_sid(state: ClusterState, raw: str) -> tuple[str, str, int]:
    """`parse_sid`: `vm:100`, `ct:203` or a bare vmid looked up in the cluster."""
    if raw.isdigit():
        guest = state.guests.get(int(raw))
        if guest is None:
            raise failure(f"unable to detect SID from VMID - VM/CT {raw} does not exist")
        return f"{_TYPES[guest.kind]}:{raw}", _TYPES[guest.kind], int(raw)
    type_, _, name = raw.partition(":")
    if not type_ or not name or " " in raw:
        raise failure(f"unable to parse service id '{raw}'")
    if type_ not in _KINDS:
        # PVE::HA::Resources->lookup: no plugin for the type.
        raise failure(f"unknown resource type '{type_}'")
    if not name.isdigit():
        raise failure(f"invalid VMID '{name}'")
    return raw, type_, int(name)


def _guest(state: ClusterState, service: Service) -> Guest | None:
    guest = state.guests.get(service.vmid)
    return guest if guest is not None and guest.kind == service.kind else None


# --- the CRM and LRM -----------------------------------------------------------------


def _then(job: Job, after: Callable[[float], None]) -> Job:
    """`job`, then `after` when it ends OK (whatever the job's own change was)."""

    def wrapped(begin: float) -> Plan:
        plan = job(begin)
        if plan.error is not None:
            return plan
        first = plan.apply

        def apply(at: float) -> None:
            if first is not None:
                first(at)
            after(at)

        return replace(plan, apply=apply)

    return wrapped


def _delayed(job: Job) -> Job:
    """The LRM's worker: it starts once the CRM has picked the request up."""

    def wrapped(begin: float) -> Plan:
        plan = job(begin)
        seconds = plan.seconds + CRM_DELAY
        shift = CRM_DELAY / seconds
        lines = tuple((shift + f * (1 - shift), t) for f, t in plan.lines)
        return replace(plan, seconds=seconds, lines=lines)

    return wrapped


def _lrm(
    state: ClusterState,
    service: Service,
    task_type: str,
    job: Job,
    *,
    node: str,
    after: Callable[[float], None] | None = None,
    at: float | None,
) -> None:
    """Run `job` as the LRM's worker on `node` for the service, forked at `at` (None:
    now); `after` once it ends OK (the service is free again by then, so `after` may
    start the next step)."""
    service.busy = True

    def finish(at: float) -> None:
        service.busy = False
        if after is not None:
            after(at)

    def worker(begin: float) -> Plan:
        plan = _then(job, finish)(begin)
        if plan.error is not None:
            # A failed action: the CRM would retry, then set `error`; the simulator stops.
            service.busy = False
            service.crm_state = "error" if service.requested == "started" else "stopped"
        return plan

    def fork() -> None:
        state.start_task(node, task_type, service.vmid, LRM_USER, _delayed(worker), at=at)

    state.ha.forks.append(fork)


def _settled(service: Service, word: str) -> Callable[[float], None]:
    def settle(_at: float) -> None:
        service.crm_state = word

    return settle


def reconcile(state: ClusterState, service: Service, at: float | None = None) -> None:
    """What the CRM does for a resource whose request or guest changed (at `at`; None:
    now): start a stopped guest that should run, stop one that should not, nothing for
    `ignored`."""
    guest = _guest(state, service)
    if guest is None or service.busy or service.requested == "ignored":
        return
    if service.requested == "started" and guest.status != "running":
        service.crm_state = "started"
        task_type, job = power.worker(state, guest.kind, guest.node, guest.vmid, "start")
        _lrm(state, service, task_type, job, node=guest.node, at=at)
    elif service.requested in ("stopped", "disabled") and guest.status == "running":
        service.crm_state = "request_stop"
        task_type, job = power.worker(state, guest.kind, guest.node, guest.vmid, "shutdown")
        settle = _settled(service, service.requested)
        _lrm(state, service, task_type, job, node=guest.node, after=settle, at=at)
    else:
        service.crm_state = "started" if guest.status == "running" else service.requested


def move(
    state: ClusterState,
    service: Service,
    target: str,
    *,
    relocate: bool,
    at: float | None = None,
) -> None:
    """`migrate`/`relocate` as the CRM does them (asked at `at`; None: now): a running VM
    migrates live, a running container by restart; a relocation stops the guest, moves it
    offline and starts it on the target."""
    guest = _guest(state, service)
    if guest is None:
        return
    service.crm_state, service.target = ("relocate" if relocate else "migrate"), target
    source, kind, vmid = guest.node, guest.kind, guest.vmid

    def arrived(at: float) -> None:
        service.target = None
        service.crm_state = "started" if guest.status == "running" else service.requested
        reconcile(state, service, at)

    def migration(at: float | None) -> None:
        running = guest.status == "running"
        online, restart = running and kind == "qemu", running and kind == "lxc"
        task_type, job = migrate.worker(
            state, kind, source, vmid, target, online=online, restart=restart
        )
        _lrm(state, service, task_type, job, node=source, after=arrived, at=at)

    if relocate and guest.status == "running":
        stop_type, stop_job = power.worker(state, kind, source, vmid, "shutdown")
        _lrm(state, service, stop_type, stop_job, node=source, after=migration, at=at)
    else:
        migration(at)


def request(
    state: ClusterState, kind: GuestKind, node: str, vmid: int, action: str, *, user: str
) -> str | None:
    """qemu-server's and pve-container's API handlers for a managed guest: start, stop
    and shutdown become an `hastart`/`hastop` worker that hands the request to
    ha-manager; the UPID, or None when HA does not manage the guest or the action."""
    service = state.ha.managed(vmid)
    if service is None or service.kind != kind or action not in ("start", "stop", "shutdown"):
        return None
    label = "VM" if kind == "qemu" else "CT"
    start = action == "start"
    line = f"Requesting HA {'start' if start else 'stop'} for {label} {vmid}"

    def job(_begin: float) -> Plan:
        def hand_over(at: float) -> None:
            # `ha-manager set --state started`, or `crm-command stop`, which the manager
            # turns into the requested state `stopped`.
            service.options["state"] = "started" if start else "stopped"
            reconcile(state, service, at)

        return Plan(REQUEST_SECONDS, lines=((0.0, line),), apply=hand_over)

    task_type = "hastart" if start else "hastop"
    upid = state.start_task(node, task_type, vmid, user, job, locks=()).upid
    state.advance()  # the manager forks what the request asked for
    return upid


def request_migration(
    state: ClusterState, kind: GuestKind, node: str, vmid: int, target: str, *, user: str
) -> str | None:
    """A managed guest's own migrate call (qemu-server `migrate_vm`, pve-container's):
    an `hamigrate` worker that runs `ha-manager migrate`; None when HA does not manage it."""
    service = state.ha.managed(vmid)
    if service is None or service.kind != kind:
        return None
    label = "VM" if kind == "qemu" else "CT"
    line = f"Requesting HA migration for {label} {vmid} to node {target}"

    def job(_begin: float) -> Plan:
        def hand_over(at: float) -> None:
            guest = _guest(state, service)
            if guest is not None and guest.node != target and not service.busy:
                move(state, service, target, relocate=False, at=at)

        return Plan(REQUEST_SECONDS, lines=((0.0, line),), apply=hand_over)

    upid = state.start_task(node, "hamigrate", vmid, user, job, locks=()).upid
    state.advance()
    return upid


# --- resources -----------------------------------------------------------------------


def _service(state: ClusterState, raw: str) -> Service:
    sid, _type, _vmid = parse_sid(state, raw)
    service = state.ha.services.get(sid)
    if service is None:
        raise failure(f"no such resource '{sid}'")
    return service


def _resource_view(state: ClusterState, service: Service) -> dict[str, Any]:
    return {
        "sid": service.sid,
        "type": service.type,
        "digest": state.ha.resources_digest(),
        **service.options,
    }


def _options(params: Params, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: params[name] for name in names if name in params}


def _no_group(params: Params) -> None:
    if "group" in params:
        raise failure(f"invalid parameter 'group': {_GROUPS_MIGRATED}")


def _list_resources(ctx: Context, params: Params) -> Result:
    wanted = params.get("type")
    services = sorted(ctx.state.ha.services.values(), key=lambda s: s.sid)
    return Result([_resource_view(ctx.state, s) for s in services if wanted in (None, s.type)])


def _read_resource(ctx: Context, params: Params) -> Result:
    return Result(_resource_view(ctx.state, _service(ctx.state, text(params, "sid"))))


def _create_resource(ctx: Context, params: Params) -> Result:
    state = ctx.state
    sid, type_, vmid = parse_sid(state, text(params, "sid"))
    if "type" in params and params["type"] != type_:
        raise failure("types does not match")
    _no_group(params)
    guest = state.guests.get(vmid)
    if guest is None or _TYPES[guest.kind] != type_:
        # PVEVM.pm / PVECT.pm exists(): the guest must exist (as that type).
        label = "VM" if type_ == "vm" else "CT"
        raise failure(f"{label} {vmid} does not exist")
    if sid in state.ha.services:
        raise failure(f"create resource failed: resource ID '{sid}' already defined")
    service = Service(sid, vmid, guest.kind, _options(params, RESOURCE_OPTIONS))
    state.ha.services[sid] = service
    reconcile(state, service)
    state.advance()
    return Result(None)


def _delete_keys(raw: Any, allowed: tuple[str, ...], options: dict[str, Any]) -> None:
    for key in [k for k in str(raw or "").replace(";", ",").split(",") if k.strip()]:
        if key.strip() not in allowed:
            raise failure(f"no such option '{key.strip()}'")
        options.pop(key.strip(), None)


def _update_resource(ctx: Context, params: Params) -> Result:
    state = ctx.state
    _no_group(params)
    service = _service(state, text(params, "sid"))
    if service.crm_state == "error" and params.get("state") != "disabled":
        raise failure(f"service '{service.sid}' in error state, must be disabled and fixed first")
    try:
        check_digest(params.get("digest"), state.ha.resources_digest())
        options = dict(service.options)
        options.update(_options(params, RESOURCE_OPTIONS))
        _delete_keys(params.get("delete"), RESOURCE_OPTIONS, options)
    except ApiError as err:
        raise failure(f"update resources config failed: {err.message.strip()}") from err
    service.options = options
    reconcile(state, service)
    state.advance()
    return Result(None)


def _delete_resource(ctx: Context, params: Params) -> Result:
    state = ctx.state
    sid, _type, _vmid = parse_sid(state, text(params, "sid"))
    if sid not in state.ha.services:
        raise failure(f"cannot delete service '{sid}', not HA managed!")
    state.ha._delete(sid, purge=bool(params.get("purge", 1)))
    return Result(None)


def _move(relocate: bool) -> Callable[[Context, Params], Result]:
    def handler(ctx: Context, params: Params) -> Result:
        state = ctx.state
        sid, _type, _vmid = parse_sid(state, text(params, "sid"))
        node = text(params, "node")
        service = state.ha.services.get(sid)
        if service is None or service.requested == "ignored":
            raise failure(f"resource '{sid}' is not HA managed")
        if service.crm_state == "error":
            raise failure(f"service '{sid}' in error state, must be disabled and fixed first")
        guest = _guest(state, service)
        if node not in state.nodes:
            # The CRM ignores a command naming an unknown node; `crm-command` checks first.
            raise failure(f"node '{node}' is not a cluster member")
        if guest is not None and guest.node != node and not service.busy:
            move(state, service, node, relocate=relocate)
            state.advance()
        together = _together(state, sid)
        answer: dict[str, Any] = {"sid": sid, "requested-node": node}
        if together:
            answer["comigrated-resources"] = together
        return Result(answer)

    return handler


def _together(state: ClusterState, sid: str) -> list[str]:
    """The resources in positive affinity with `sid` (`get_resource_motion_info`)."""
    found: set[str] = set()
    for rule in state.ha.rules.values():
        positive = rule.type == "resource-affinity" and rule.options.get("affinity") == "positive"
        if positive and not rule.options.get("disable") and sid in rule.resources:
            found |= set(rule.resources) - {sid}
    return sorted(s for s in found if s in state.ha.services)


# --- rules ---------------------------------------------------------------------------


def _rule_view(state: ClusterState, rule: Rule, errors: dict[str, str] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "rule": rule.id,
        "type": rule.type,
        "digest": state.ha.rules_digest(),
        "order": rule.order,
        "resources": ",".join(sorted(rule.resources)),
        "disable": 0,
        **rule.options,
    }
    if rule.type == "node-affinity":
        view.setdefault("strict", 0)
        view["nodes"] = ",".join(f"{n}:{p}" if p else n for n, p in sorted(rule.nodes.items()))
    if errors:
        view["errors"] = errors
    return view


def _feasibility(state: ClusterState) -> dict[str, dict[str, str]]:
    """`check_feasibility`: each rule's problems by option, as the checks word them."""
    problems: dict[str, dict[str, list[str]]] = {}
    users: dict[str, list[str]] = {}
    for rule in state.ha.rules.values():
        if rule.type == "node-affinity":
            for sid in rule.resources:
                users.setdefault(sid, []).append(rule.id)
        elif len(rule.resources) < 2:
            problems.setdefault(rule.id, {}).setdefault("resources", []).append(
                "rule is ineffective as there are less than two resources"
            )
        elif rule.options.get("affinity") == "negative" and len(rule.resources) > len(state.nodes):
            problems.setdefault(rule.id, {}).setdefault("resources", []).append(
                "rule defines more resources than available nodes"
            )
    for sid, ruleids in sorted(users.items()):
        if len(ruleids) > 1:
            for ruleid in ruleids:
                problems.setdefault(ruleid, {}).setdefault("resources", []).append(
                    f"resource '{sid}' is already used in another node affinity rule"
                )
    return {rid: {k: ", ".join(v) for k, v in opts.items()} for rid, opts in problems.items()}


def _rule(state: ClusterState, ruleid: str) -> Rule:
    rule = state.ha.rules.get(ruleid)
    if rule is None:
        raise failure(f"no such ha rule '{ruleid}'")
    return rule


def _list_rules(ctx: Context, params: Params) -> Result:
    state = ctx.state
    errors = _feasibility(state)
    wanted_type, resource = params.get("type"), params.get("resource")
    rows = [
        _rule_view(state, rule, errors.get(rule.id))
        for rule in state.ha._ordered()
        if wanted_type in (None, rule.type) and resource in (None, *rule.resources)
    ]
    return Result(rows)


def _read_rule(ctx: Context, params: Params) -> Result:
    rule = _rule(ctx.state, text(params, "rule"))
    return Result(_rule_view(ctx.state, rule, _feasibility(ctx.state).get(rule.id)))


def _parse_resources(state: ClusterState, raw: Any) -> list[str]:
    sids = [parse_sid(state, part.strip())[0] for part in str(raw).split(",") if part.strip()]
    if not sids:
        raise failure("no resources were specified")
    unmanaged = [sid for sid in sorted(set(sids)) if sid not in state.ha.services]
    if unmanaged:
        raise failure(f"cannot use unmanaged resource(s) {', '.join(unmanaged)}.")
    return sorted(set(sids))


def _parse_nodes(state: ClusterState, raw: Any) -> dict[str, int | None]:
    nodes: dict[str, int | None] = {}
    for part in str(raw).split(","):
        name, _, prio = part.strip().partition(":")
        if name:
            nodes[name] = int(prio) if prio else None
    if not nodes:
        raise failure("no nodes were specified")
    missing = [n for n in sorted(nodes) if n not in state.nodes]
    if missing:
        raise failure(f"cannot use non-existent node(s) {', '.join(missing)}.")
    return nodes


def _assert_feasible(state: ClusterState, ruleid: str) -> None:
    errors = _feasibility(state).get(ruleid)
    if errors:
        raise ApiError(400, f"Rule '{ruleid}' is invalid.", errors)


def _fill(state: ClusterState, rule: Rule, params: Params) -> None:
    if "resources" in params:
        rule.resources = _parse_resources(state, params["resources"])
    if "nodes" in params:
        if rule.type != "node-affinity":
            raise param_error({"nodes": "property is not defined in schema and the schema "
                                        "does not allow additional properties"})  # fmt: skip
        rule.nodes = _parse_nodes(state, params["nodes"])
    if "affinity" in params and rule.type != "resource-affinity":
        raise param_error({"affinity": "property is not defined in schema and the schema "
                                       "does not allow additional properties"})  # fmt: skip
    rule.options.update(_options(params, ("strict", "affinity", "disable", "comment")))


def _create_rule(ctx: Context, params: Params) -> Result:
    state = ctx.state
    ruleid, type_ = text(params, "rule"), text(params, "type")
    rule = Rule(ruleid, type_, [], order=state.ha.next_order)
    missing = [k for k in (("nodes",) if type_ == "node-affinity" else ("affinity",))
               if k not in params]  # fmt: skip
    if missing:
        raise param_error({k: "property is missing and it is not optional" for k in missing})
    if ruleid in state.ha.rules:
        raise failure(f"HA rule '{ruleid}' already defined")
    _fill(state, rule, params)
    state.ha.rules[ruleid] = rule
    try:
        _assert_feasible(state, ruleid)
    except ApiError:
        del state.ha.rules[ruleid]
        raise
    state.ha.next_order += 1
    return Result(None)


def _update_rule(ctx: Context, params: Params) -> Result:
    state = ctx.state
    check_digest(params.get("digest"), state.ha.rules_digest())
    rule = state.ha.rules.get(text(params, "rule"))
    if rule is None:
        raise failure(f"HA rule '{text(params, 'rule')}' does not exist")
    if "type" in params and params["type"] != rule.type:
        raise failure("types does not match")
    before = replace(rule, resources=list(rule.resources), nodes=dict(rule.nodes),
                     options=dict(rule.options))  # fmt: skip
    _fill(state, rule, params)
    _delete_keys(params.get("delete"), ("strict", "disable", "comment"), rule.options)
    try:
        _assert_feasible(state, rule.id)
    except ApiError:
        state.ha.rules[rule.id] = before
        raise
    return Result(None)


def _delete_rule(ctx: Context, params: Params) -> Result:
    ctx.state.ha.rules.pop(text(params, "rule"), None)
    return Result(None)


# --- status --------------------------------------------------------------------------


def _ctime(at: float) -> str:
    return time.ctime(int(at))


def _lrm_active(state: ClusterState, node: str) -> bool:
    return any(
        (g := _guest(state, s)) is not None and g.node == node and s.requested != "ignored"
        for s in state.ha.services.values()
    )


def guest_fields(state: ClusterState, vmid: int) -> tuple[str, dict[str, Any]] | None:
    """A managed guest's `hastate` in /cluster/resources and its status's `ha` object
    (`get_service_status`: the manager's state); None for a guest HA leaves alone."""
    service = state.ha.managed(vmid)
    if service is None:
        return None
    return _verbose(service), {"managed": 1, "state": service.crm_state}


def _verbose(service: Service) -> str:
    # PVE::HA::Tools::get_verbose_service_state
    if service.requested == "ignored":
        return "ignored"
    if service.requested == "disabled" and service.crm_state == "stopped":
        return "disabled"
    return service.crm_state


def _status(ctx: Context, params: Params) -> Result:
    state, now = ctx.state, ctx.now
    managed = bool(state.ha.services)
    rows: list[dict[str, Any]] = [
        {"id": "quorum", "type": "quorum", "node": MASTER, "status": "OK", "quorate": 1},
    ]
    crm = "active" if managed else "idle"
    rows.append({"id": "master", "type": "master", "node": MASTER, "timestamp": int(now),
                 "status": f"{MASTER} ({crm}, {_ctime(now)})"})  # fmt: skip
    armed = "armed" if managed else "standby"
    dog = "active" if managed else "standby"
    rows.append({"id": "fencing", "type": "fencing", "node": MASTER, "armed-state": armed,
                 "status": f"{armed} (CRM watchdog {dog})"})  # fmt: skip
    for name in sorted(state.nodes):
        word, lrm_dog = ("active", "active") if _lrm_active(state, name) else ("idle", "standby")
        rows.append({"id": f"lrm:{name}", "type": "lrm", "node": name, "timestamp": int(now),
                     "status": f"{name} ({word}, watchdog {lrm_dog}, {_ctime(now)})"})  # fmt: skip
    for sid, service in sorted(state.ha.services.items()):
        guest = _guest(state, service)
        node = guest.node if guest is not None else "---"
        verbose = _verbose(service)
        row: dict[str, Any] = {
            "id": f"service:{sid}", "type": "service", "sid": sid, "node": node,
            "crm_state": service.crm_state, "state": verbose,
            "status": f"{sid} ({node}, {verbose})",
            "request_state": service.options.get("state", "started"),
        }  # fmt: skip
        for key in ("max_restart", "max_relocate", "failback", "comment"):
            if key in service.options:
                row[key] = service.options[key]
        rows.append(row)
    return Result(rows)


def _manager_status(ctx: Context, params: Params) -> Result:
    state, now = ctx.state, int(ctx.now)
    services: dict[str, Any] = {}
    for sid, service in sorted(state.ha.services.items()):
        guest = _guest(state, service)
        entry: dict[str, Any] = {"node": guest.node if guest else "", "state": service.crm_state,
                                 "uid": _sha1(sid)[:22]}  # fmt: skip
        if service.target:
            entry["target"] = service.target
        services[sid] = entry
    lrm: dict[str, Any] = {}
    for name in sorted(state.nodes):
        lrm_state = "active" if _lrm_active(state, name) else "wait_for_agent_lock"
        lrm[name] = {"mode": "active", "state": lrm_state, "timestamp": now, "results": {}}
    return Result({
        "manager_status": {
            "master_node": MASTER,
            "timestamp": now,
            "node_status": dict.fromkeys(sorted(state.nodes), "online"),
            "service_status": services,
        },
        "quorum": {"node": MASTER, "quorate": 1},
        "lrm_status": lrm,
    })  # fmt: skip


def _index(names: tuple[str, ...]) -> Callable[[Context, Params], Result]:
    def handler(ctx: Context, params: Params) -> Result:
        return Result([{"id": name} for name in names])

    return handler


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/ha", _index(("resources", "status", "rules"))),
    api("GET", "/cluster/ha/resources", _list_resources),
    api("POST", "/cluster/ha/resources", _create_resource),
    api("GET", "/cluster/ha/resources/{sid}", _read_resource),
    api("PUT", "/cluster/ha/resources/{sid}", _update_resource),
    api("DELETE", "/cluster/ha/resources/{sid}", _delete_resource),
    api("POST", "/cluster/ha/resources/{sid}/migrate", _move(relocate=False)),
    api("POST", "/cluster/ha/resources/{sid}/relocate", _move(relocate=True)),
    api("GET", "/cluster/ha/rules", _list_rules),
    api("POST", "/cluster/ha/rules", _create_rule),
    api("GET", "/cluster/ha/rules/{rule}", _read_rule),
    api("PUT", "/cluster/ha/rules/{rule}", _update_rule),
    api("DELETE", "/cluster/ha/rules/{rule}", _delete_rule),
    api("GET", "/cluster/ha/status", _index(("current", "manager_status"))),
    api("GET", "/cluster/ha/status/current", _status),
    api("GET", "/cluster/ha/status/manager_status", _manager_status),
)
