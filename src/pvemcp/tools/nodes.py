"""Node operations: what a node runs and holds (services, packages, disks, certificates,
DNS/time/hosts, subscription, the cluster's join information), its services, its package
lists, and reboot/shutdown.

One tool per tier: `proxmox_node_info` reads any of these by `kind` (the changelog of a
package too), `proxmox_node_service` and `proxmox_node_apt_refresh` write, and
`proxmox_node_power` is destructive. Answers are curated: facts, never secrets.

- Certificates: subject, SANs, issuer, validity, fingerprint and key type only. PVE's
  `certificates/info` holds no private key; the PEM text is left out too (it is long and
  says nothing the facts do not).
- Join information: node names, ids, addresses, fingerprints, votes and the totem
  settings that are not secret (a whitelist: corosync allows an inline `key` there). The
  cluster's auth key travels only in the answer of POST /cluster/config/nodes/{node}
  (a node joining), which no tool sends.
- Subscription: status, level, product, dates and server id; never the key, which would
  activate another server.

Refusals, decided here and documented in docs/architecture.md:
- a service stop PVE refuses anyway (pveproxy, pvedaemon, pve-cluster), and a stop of
  `sshd` or `corosync`: the first cuts off SSH (this gateway's command and file tools, and
  the operator's way back in), the second takes the node out of the quorum (with HA armed,
  its watchdog then fences it: a hard reset). Restart and reload are allowed.
- a reboot or shutdown that leaves fewer than a majority of the nodes online: the cluster
  loses quorum, guests cannot start and /etc/pve turns read-only. Do that at the console.
- a shutdown of the node this gateway talks to: nothing could power it on again through
  the API, and the gateway would lose the whole cluster. A reboot of it is allowed, with a
  warning that calls fail until it is back.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    NodeName,
    Plan,
    ProxmoxError,
    Target,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WaitInput,
    WriteInput,
    action,
    matching,
    node_or_default,
    read_as,
    tool,
    utc_time,
)

TOOLSET = "nodes"
GIB = 1024**3

SERVICES = (
    "chrony", "corosync", "cron", "ksmtuned", "lxcfs", "postfix", "proxmox-firewall",
    "pve-cluster", "pve-firewall", "pve-ha-crm", "pve-ha-lrm", "pve-lxc-syscalld",
    "pvedaemon", "pvefw-logger", "pveproxy", "pvescheduler", "pvestatd", "qmeventd",
    "spiceproxy", "sshd", "syslog", "systemd-journald", "systemd-timesyncd",
)  # fmt: skip
"""pve-manager `PVE/API2/Services.pm`'s `$service_name_list`: the units its API manages
(checked in code, not advertised as an enum: the list would cost 400 bytes of schema)."""
ServiceName = Annotated[
    str,
    matching(
        "|".join(map(re.escape, SERVICES)), "one of PVE's services (" + ", ".join(SERVICES) + ")"
    ),
    Field(description="e.g. chrony, cron, pveproxy (node info kind services lists them)."),
]
ESSENTIAL = frozenset({"pveproxy", "pvedaemon", "pve-cluster"})
"""Services.pm's `$essential_services`: PVE refuses to stop them."""
KEEP_RUNNING = {
    "sshd": "it cuts off SSH to the node (this gateway's command and file tools, and your "
    "own way back in)",
    "corosync": "the node leaves the quorum, and with HA armed its watchdog resets it",
}
"""Services this gateway refuses to stop, and why (see the module docstring)."""
_TOTEM_KEYS = (
    "cluster_name", "config_version", "ip_version", "link_mode", "secauth", "version",
    "crypto_cipher", "crypto_hash", "transport",
)  # fmt: skip
"""Totem settings passed on; anything else (an inline `key`) is not."""


# --- shared reads --------------------------------------------------------------------


class _Node(Answer):
    node: str
    status: str = "unknown"


_NODES = TypeAdapter(list[_Node])


class _Member(Answer):
    type: str
    name: str | None = None
    online: int = 0
    local: int = 0


_STATUS = TypeAdapter(list[_Member])


async def _online_node(ctx: ToolContext, name: str | None) -> str:
    """The node named (or the default) when the cluster has it online; else `not_found`
    or `precondition_failed` naming the field."""
    node = node_or_default(ctx, name)
    nodes = {row.node: row.status for row in await read_as(ctx, _NODES, "/nodes")}
    if node not in nodes:
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no node {node!r}",
            field="node",
            hint=f"Use one of its nodes: {', '.join(sorted(nodes))}.",
        )
    if nodes[node] != "online":
        raise ToolFailure(
            "precondition_failed",
            f"node {node} is {nodes[node]}: its API cannot be reached",
            field="node",
            hint="Check proxmox_node_list; a rebooting node answers again after its boot.",
        )
    return node


def _gib(value: Any) -> float | None:
    return round(value / GIB, 1) if isinstance(value, int | float) else None


def _pick(row: dict[str, Any], **names: str) -> dict[str, Any]:
    """`row`'s fields renamed (new=old), those it has and not empty."""
    return {new: row[old] for new, old in names.items() if row.get(old) not in (None, "")}


# --- info ----------------------------------------------------------------------------

Kind = Literal[
    "services", "updates", "versions", "changelog", "disks", "smart", "zfs", "lvm",
    "lvmthin", "certificates", "dns", "time", "hosts", "subscription", "join",
]  # fmt: skip
_NEEDS: dict[str, str] = {"smart": "disk", "changelog": "package"}
_ONLY: dict[str, tuple[str, ...]] = {
    "disk": ("smart",),
    "pool": ("zfs",),
    "package": ("changelog",),
    "version": ("changelog",),
}
MAX_TEXT = 8000
"""Characters of a changelog or hosts file returned (the start: the newest entries)."""


class InfoArgs(ToolInput):
    node: Annotated[NodeName | None, Field(description="Default: the cluster's node.")] = None
    kind: Kind
    disk: Annotated[
        str | None,
        matching(r"/dev/[A-Za-z0-9/_.-]{1,64}", "a device path like /dev/sda"),
        Field(description="smart: the device, e.g. /dev/sda."),
    ] = None
    pool: Annotated[
        str | None,
        matching(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", "a ZFS pool name"),
        Field(description="zfs: one pool's vdevs and state."),
    ] = None
    package: Annotated[
        str | None,
        matching(r"[a-z0-9][-+.a-z0-9:]+", "a Debian package name"),
        Field(description="changelog: the package."),
    ] = None
    version: Annotated[str | None, matching(r"[A-Za-z0-9.+:~-]{1,64}", "a package version")] = None

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        needed = _NEEDS.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"kind {self.kind} needs {needed}")
        for name, kinds in _ONLY.items():
            if getattr(self, name) is not None and self.kind not in kinds:
                raise ValueError(f"{name} is for kind {' or '.join(kinds)} only")
        return self


class NodeInfo(ToolOutput):
    node: str
    kind: str
    rows: list[dict[str, Any]] | None = None
    facts: dict[str, Any] | None = None
    text: str | None = None


_ROWS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])
_TEXT: TypeAdapter[str] = TypeAdapter(str)


async def _rows(ctx: ToolContext, path: str, params: dict[str, Any] | None = None) -> Any:
    return await read_as(ctx, _ROWS, path, params)


def _service_row(row: dict[str, Any]) -> dict[str, Any]:
    return _pick(row, name="service", state="state", active="active-state", unit="unit-state")


async def _services(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    rows = await _rows(ctx, f"/nodes/{node}/services")
    return NodeInfo(node=node, kind=args.kind, rows=[_service_row(r) for r in rows])


async def _updates(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    if args.kind == "versions":
        rows = await _rows(ctx, f"/nodes/{node}/apt/versions")
        found = [_pick(r, package="Package", version="Version") for r in rows]
        return NodeInfo(node=node, kind=args.kind, rows=found)
    rows = await _rows(ctx, f"/nodes/{node}/apt/update")
    found = [
        _pick(r, package="Package", installed="OldVersion", available="Version", origin="Origin")
        for r in sorted(rows, key=lambda r: str(r.get("Package")))
    ]
    note = "As of the last refresh; proxmox_node_apt_refresh updates the package lists."
    return NodeInfo(node=node, kind=args.kind, rows=found, facts={"note": note})


async def _changelog(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    params: dict[str, Any] = {"name": args.package}
    if args.version is not None:
        params["version"] = args.version
    text = await read_as(ctx, _TEXT, f"/nodes/{node}/apt/changelog", params)
    # APT.pm returns apt-get's own error text and `RC: n` (with a 200) when it fails.
    lines = text.rstrip("\n").splitlines()
    if lines and lines[-1].startswith("RC: "):
        error = next((line[3:] for line in lines if line.startswith("E: ")), lines[0])
        field = "version" if "Version" in error else "package"
        raise ToolFailure(
            "not_found",
            f"apt on {node}: {error}",
            field=field,
            hint="kind updates or versions lists the packages and versions the node knows.",
        )
    return NodeInfo(node=node, kind=args.kind, text=text[:MAX_TEXT])


def _disk_row(row: dict[str, Any]) -> dict[str, Any]:
    found = _pick(row, dev="devpath", model="model", type="type", used="used", health="health")
    found["size_gib"] = _gib(row.get("size"))
    if isinstance(row.get("wearout"), int | float):
        found["wearout_pct"] = row["wearout"]
    return found


async def _disks(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    rows = await _rows(ctx, f"/nodes/{node}/disks/list")
    return NodeInfo(node=node, kind=args.kind, rows=[_disk_row(r) for r in rows])


async def _smart(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    disks = {str(r.get("devpath")) for r in await _rows(ctx, f"/nodes/{node}/disks/list")}
    if args.disk not in disks:
        raise ToolFailure(
            "not_found",
            f"node {node} has no disk {args.disk}",
            field="disk",
            hint=f"Its disks: {', '.join(sorted(disks))}.",
        )
    data = await read_as(ctx, OBJECT, f"/nodes/{node}/disks/smart", {"disk": args.disk})
    facts = {"disk": args.disk, "health": data.get("health"), "type": data.get("type")}
    attributes = data.get("attributes")
    rows = None
    if isinstance(attributes, list):
        rows = [
            _pick(a, id="id", name="name", value="normalized", worst="worst",
                  threshold="threshold", raw="raw", fail="fail")
            for a in attributes if isinstance(a, dict)
        ]  # fmt: skip
    text = data.get("text")
    return NodeInfo(
        node=node,
        kind=args.kind,
        facts=facts,
        rows=rows,
        text=text[:MAX_TEXT] if isinstance(text, str) else None,
    )


def _vdevs(children: Any, depth: int, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The vdev tree of `zpool status`, flattened with each vdev's depth."""
    for child in children if isinstance(children, list) else []:
        if isinstance(child, dict):
            row = _pick(child, name="name", state="state", msg="msg")
            row.update(depth=depth, read=child.get("read"), write=child.get("write"))
            row["cksum"] = child.get("cksum")
            out.append(row)
            _vdevs(child.get("children"), depth + 1, out)
    return out


async def _zfs(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    pools = await _rows(ctx, f"/nodes/{node}/disks/zfs")
    if args.pool is None:
        rows = [
            {**_pick(p, name="name", health="health", frag_pct="frag"),
             "size_gib": _gib(p.get("size")), "alloc_gib": _gib(p.get("alloc")),
             "free_gib": _gib(p.get("free"))}
            for p in pools
        ]  # fmt: skip
        return NodeInfo(node=node, kind=args.kind, rows=rows)
    names = sorted(str(p.get("name")) for p in pools)
    if args.pool not in names:
        raise ToolFailure(
            "not_found",
            f"node {node} has no ZFS pool {args.pool!r}",
            field="pool",
            hint=f"Its pools: {', '.join(names)}." if names else "It has no ZFS pool.",
        )
    detail = await read_as(ctx, OBJECT, f"/nodes/{node}/disks/zfs/{args.pool}")
    facts = _pick(detail, name="name", state="state", status="status", action="action",
                  scan="scan", errors="errors")  # fmt: skip
    return NodeInfo(
        node=node, kind=args.kind, facts=facts, rows=_vdevs(detail.get("children"), 0, [])
    )


async def _lvm(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    if args.kind == "lvmthin":
        rows = [
            {**_pick(t, lv="lv", vg="vg"), "size_gib": _gib(t.get("lv_size")),
             "used_gib": _gib(t.get("used")),
             "metadata_used_pct": round(100 * t["metadata_used"] / t["metadata_size"], 1)
             if t.get("metadata_size") else None}
            for t in await _rows(ctx, f"/nodes/{node}/disks/lvmthin")
        ]  # fmt: skip
        return NodeInfo(node=node, kind=args.kind, rows=rows)
    tree = await read_as(ctx, OBJECT, f"/nodes/{node}/disks/lvm")
    children = tree.get("children")
    groups: list[Any] = children if isinstance(children, list) else []
    rows = [
        {"vg": vg.get("name"), "size_gib": _gib(vg.get("size")), "free_gib": _gib(vg.get("free")),
         "pvs": [pv.get("name") for pv in vg.get("children") or [] if isinstance(pv, dict)]}
        for vg in groups if isinstance(vg, dict)
    ]  # fmt: skip
    return NodeInfo(node=node, kind=args.kind, rows=rows)


def _certificate(row: dict[str, Any], now: float) -> dict[str, Any]:
    # A whitelist: facts only (never `pem`, nor anything PVE may add later).
    found = _pick(row, file="filename", subject="subject", issuer="issuer",
                  fingerprint="fingerprint", san="san")  # fmt: skip
    found["not_before"] = utc_time(row.get("notbefore"))
    found["not_after"] = utc_time(row.get("notafter"))
    if isinstance(row.get("notafter"), int | float):
        found["days_left"] = int((row["notafter"] - now) // 86_400)
    if row.get("public-key-type"):
        found["key"] = f"{row['public-key-type']} {row.get('public-key-bits', '')}".strip()
    return found


async def _certificates(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    rows = await _rows(ctx, f"/nodes/{node}/certificates/info")
    time = await read_as(ctx, OBJECT, f"/nodes/{node}/time")
    now = float(time.get("time") or datetime.now(UTC).timestamp())
    return NodeInfo(node=node, kind=args.kind, rows=[_certificate(r, now) for r in rows])


async def _system(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    data = await read_as(ctx, OBJECT, f"/nodes/{node}/{args.kind}")
    if args.kind == "dns":
        servers = [data[k] for k in ("dns1", "dns2", "dns3") if data.get(k)]
        return NodeInfo(node=node, kind=args.kind, facts={"search": data.get("search"),
                                                          "servers": servers})  # fmt: skip
    if args.kind == "time":
        facts = {"timezone": data.get("timezone"), "utc": utc_time(data.get("time"))}
        return NodeInfo(node=node, kind=args.kind, facts=facts)
    if args.kind == "hosts":
        text = str(data.get("data", ""))
        return NodeInfo(node=node, kind=args.kind, text=text[:MAX_TEXT])
    # subscription: never the key (it would activate another server)
    facts = _pick(data, status="status", level="level", product="productname",
                  next_due="nextduedate", registered="regdate", message="message",
                  server_id="serverid")  # fmt: skip
    facts["checked"] = utc_time(data.get("checktime"))
    return NodeInfo(node=node, kind=args.kind, facts=facts)


async def _join(ctx: ToolContext, node: str, args: InfoArgs) -> NodeInfo:
    data = await read_as(ctx, OBJECT, "/cluster/config/join", {"node": node})
    rows = [
        _pick(n, name="name", nodeid="nodeid", address="pve_addr", link0="ring0_addr",
              votes="quorum_votes", fingerprint="pve_fp")
        for n in data.get("nodelist") or [] if isinstance(n, dict)
    ]  # fmt: skip
    raw = data.get("totem")
    totem: dict[str, Any] = raw if isinstance(raw, dict) else {}
    facts = {
        "preferred_node": data.get("preferred_node"),
        "config_digest": data.get("config_digest"),
        "totem": {key: totem[key] for key in _TOTEM_KEYS if key in totem},
        "note": "A new node joins with one address and fingerprint and root's password "
        "(pvecm add, or the join dialog); this gateway never joins nodes.",
    }
    return NodeInfo(node=node, kind=args.kind, rows=sorted(rows, key=str), facts=facts)


_READERS = {
    "services": _services,
    "updates": _updates,
    "versions": _updates,
    "changelog": _changelog,
    "disks": _disks,
    "smart": _smart,
    "zfs": _zfs,
    "lvm": _lvm,
    "lvmthin": _lvm,
    "certificates": _certificates,
    "dns": _system,
    "time": _system,
    "hosts": _system,
    "subscription": _system,
    "join": _join,
}


@tool(
    "proxmox_node_info",
    title="Node facts",
    tier=Tier.READ,
    toolset=TOOLSET,
    input=InfoArgs,
    output=NodeInfo,
    idempotent=True,
    examples=[
        {"node": "pve1", "kind": "services"},
        {"node": "pve2", "kind": "updates"},
        {"node": "pve3", "kind": "smart", "disk": "/dev/sdb"},
        {"node": "pve3", "kind": "zfs", "pool": "rpool"},
        {"node": "pve1", "kind": "changelog", "package": "pve-manager"},
        {"node": "pve1", "kind": "certificates"},
        {"node": "pve1", "kind": "join"},
        {"node": "pve2", "kind": "lvmthin"},
        {"node": "pve1", "kind": "subscription"},
    ],
    rejects=[
        ({"node": "pve9", "kind": "dns"}, "not_found"),
        ({"node": "pve1", "kind": "smart"}, "invalid_argument"),
        ({"node": "pve1", "kind": "smart", "disk": "/dev/sdz"}, "not_found"),
        ({"node": "pve1", "kind": "dns", "disk": "/dev/sda"}, "invalid_argument"),
        ({"node": "pve1", "kind": "zfs", "pool": "tank"}, "not_found"),
        ({"node": "pve1", "kind": "changelog", "package": "no-such-pkg"}, "not_found"),
        ({"node": "pve1", "kind": "smart", "disk": "sda"}, "invalid_argument"),
    ],
    api=[
        "GET /nodes/{node}/services",
        "GET /nodes/{node}/apt/update",
        "GET /nodes/{node}/apt/versions",
        "GET /nodes/{node}/apt/changelog",
        "GET /nodes/{node}/disks/list",
        "GET /nodes/{node}/disks/smart",
        "GET /nodes/{node}/disks/zfs",
        "GET /nodes/{node}/disks/zfs/{name}",
        "GET /nodes/{node}/disks/lvm",
        "GET /nodes/{node}/disks/lvmthin",
        "GET /nodes/{node}/certificates/info",
        "GET /nodes/{node}/dns",
        "GET /nodes/{node}/time",
        "GET /nodes/{node}/hosts",
        "GET /nodes/{node}/subscription",
        "GET /cluster/config/join",
    ],
)
async def info(ctx: ToolContext, args: InfoArgs) -> NodeInfo:
    """A node's services, APT updates/versions/changelog (package), disks, SMART (disk),
    ZFS (pool), LVM, certificates, DNS, time, hosts, subscription or the cluster's join
    info, by kind. Facts only: never keys."""
    node = await _online_node(ctx, args.node)
    return await _READERS[args.kind](ctx, node, args)


# --- services ------------------------------------------------------------------------


class ServiceArgs(WaitInput):
    node: NodeName | None = None
    service: ServiceName
    action: Literal["start", "stop", "restart", "reload"]


async def _local_node(ctx: ToolContext) -> str | None:
    """The node whose API this gateway talks to (`local` in /cluster/status)."""
    members = await read_as(ctx, _STATUS, "/cluster/status")
    return next((m.name for m in members if m.type == "node" and m.local), None)


async def _plan_service(ctx: ToolContext, args: ServiceArgs) -> Plan:
    node = await _online_node(ctx, args.node)
    path = f"/nodes/{node}/services/{args.service}"
    state = await read_as(ctx, OBJECT, f"{path}/state")
    if state.get("unit-state") == "not-found":
        raise ToolFailure(
            "not_found",
            f"{args.service} is not installed on {node}",
            field="service",
            hint="kind services of proxmox_node_info lists what the node runs.",
        )
    if args.action == "stop" and args.service in ESSENTIAL:
        raise ToolFailure(
            "precondition_failed",
            f"PVE refuses to stop its essential service {args.service}",
            field="action",
            hint="Use restart.",
        )
    if args.action == "stop" and args.service in KEEP_RUNNING:
        raise ToolFailure(
            "precondition_failed",
            f"stopping {args.service} on {node} is refused: {KEEP_RUNNING[args.service]}",
            field="action",
            hint="Use restart, or stop it at the node's console.",
        )
    before = str(state.get("state", "unknown"))
    after = {"stop": "dead", "start": "running", "restart": "running", "reload": before}
    warnings = []
    if args.service in ("pveproxy", "pvedaemon") and node == await _local_node(ctx):
        warnings.append(f"this gateway talks to {node}'s API: it drops for a moment")
    call = ApiCall.to("POST", "/nodes/{node}/services/{service}/" + args.action,
                      node=node, service=args.service, task=True)  # fmt: skip
    return Plan(
        summary=f"{args.action} {args.service} on {node}",
        target=Target(node=node, name=args.service),
        changes=[Change(field=f"service {args.service}", before=before, after=after[args.action])],
        calls=[call],
        warnings=warnings,
    )


SERVICE = action(
    "proxmox_node_service",
    title="Start/stop a node service",
    description="""Start, stop, restart or reload one of PVE's services on a node (as a
    task). Stopping pveproxy, pvedaemon, pve-cluster, sshd or corosync is refused; restart
    them instead.""",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=ServiceArgs,
    output=TaskOutcome,
    planner=_plan_service,
    examples=[
        {"node": "pve2", "service": "chrony", "action": "restart"},
        {"node": "pve1", "service": "cron", "action": "stop"},
        {"node": "pve1", "service": "pveproxy", "action": "reload"},
    ],
    rejects=[
        ({"node": "pve1", "service": "pveproxy", "action": "stop"}, "precondition_failed"),
        ({"node": "pve1", "service": "sshd", "action": "stop"}, "precondition_failed"),
        ({"node": "pve1", "service": "systemd-timesyncd", "action": "start"}, "not_found"),
        ({"node": "pve1", "service": "nginx", "action": "start"}, "invalid_argument"),
        ({"node": "pve9", "service": "cron", "action": "start"}, "not_found"),
    ],
    api=[
        "POST /nodes/{node}/services/{service}/start",
        "POST /nodes/{node}/services/{service}/stop",
        "POST /nodes/{node}/services/{service}/restart",
        "POST /nodes/{node}/services/{service}/reload",
    ],
)


# --- APT refresh ---------------------------------------------------------------------


class AptRefreshArgs(WaitInput):
    node: NodeName | None = None


async def _plan_apt_refresh(ctx: ToolContext, args: AptRefreshArgs) -> Plan:
    node = await _online_node(ctx, args.node)
    known = len(await _rows(ctx, f"/nodes/{node}/apt/update"))
    return Plan(
        summary=f"refresh the package lists on {node} (apt-get update); installs nothing",
        target=Target(node=node),
        changes=[Change(field="updates known", before=known, after="as the mirrors say")],
        calls=[ApiCall.to("POST", "/nodes/{node}/apt/update", node=node, task=True)],
    )


APT_REFRESH = action(
    "proxmox_node_apt_refresh",
    title="Refresh APT package lists",
    description="""Run apt-get update on a node (a task), so proxmox_node_info kind updates
    shows what can be upgraded. Installs nothing.""",
    tier=Tier.WRITE,
    toolset=TOOLSET,
    input=AptRefreshArgs,
    output=TaskOutcome,
    planner=_plan_apt_refresh,
    idempotent=True,
    examples=[{"node": "pve1"}, {"node": "pve3", "wait": False}],
    rejects=[({"node": "pve9"}, "not_found"), ({"node": "pve1", "timeout": 0}, "invalid_argument")],
    api=["POST /nodes/{node}/apt/update"],
)


# --- power ---------------------------------------------------------------------------


class PowerArgs(WriteInput):
    node: NodeName
    command: Literal["reboot", "shutdown"]


class _Guest(Answer):
    vmid: int
    type: str
    node: str
    name: str | None = None
    status: str = "unknown"


_GUESTS = TypeAdapter(list[_Guest])


class _HaResource(Answer):
    sid: str
    state: str | None = None


_HA = TypeAdapter(list[_HaResource])


async def _ha_managed(ctx: ToolContext) -> set[int] | None:
    """The vmids HA manages (None when the HA resources cannot be read)."""
    try:
        resources = await read_as(ctx, _HA, "/cluster/ha/resources")
    except ProxmoxError:
        return None
    return {int(r.sid.split(":")[-1]) for r in resources if r.sid.split(":")[-1].isdigit()}


async def _plan_power(ctx: ToolContext, args: PowerArgs) -> Plan:
    node = await _online_node(ctx, args.node)
    members = [m for m in await read_as(ctx, _STATUS, "/cluster/status") if m.type == "node"]
    online = sum(1 for m in members if m.online)
    if len(members) > 1 and 2 * (online - 1) <= len(members):
        raise ToolFailure(
            "precondition_failed",
            f"{args.command} of {node} leaves {online - 1} of {len(members)} nodes online: "
            "the cluster loses quorum (guests cannot start, /etc/pve turns read-only)",
            field="node",
            hint="Bring the other nodes back first, or do this at the node's console.",
        )
    local = next((m.name for m in members if m.local), None)
    warnings = []
    if node == local:
        if args.command == "shutdown":
            raise ToolFailure(
                "precondition_failed",
                f"{node} is the node this gateway talks to: after a shutdown nothing "
                "could power it on through the API, and the gateway would lose the cluster",
                field="node",
                hint="Point the gateway at another node first, or shut down at the console.",
            )
        warnings.append(f"this gateway talks to {node}: calls fail until it is back")
    guests = await read_as(ctx, _GUESTS, "/cluster/resources", {"type": "vm"})
    running = sorted((g for g in guests if g.node == node and g.status == "running"),
                     key=lambda g: g.vmid)  # fmt: skip
    ha = await _ha_managed(ctx)
    if ha is None:
        warnings.append("HA resources could not be read: check proxmox HA before going on")
    elif managed := [g.vmid for g in running if g.vmid in ha]:
        effect = (
            "frozen on the node and started again after the boot"
            if args.command == "reboot"
            else "recovered on other nodes once the node is fenced"
        )
        warnings.append(
            f"HA-managed {', '.join(map(str, managed))}: with the default shutdown_policy "
            f"(conditional) they are {effect}"
        )
    after = (
        "stopped (onboot guests start after the boot)" if args.command == "reboot" else "stopped"
    )
    changes = [
        Change(
            field="node",
            before="online",
            after="rebooting" if args.command == "reboot" else "offline",
        )
    ]
    changes += [Change(field=f"{g.type} {g.vmid} ({g.name})", before="running", after=after)
                for g in running]  # fmt: skip
    return Plan(
        summary=f"{args.command} node {node}: {len(running)} running guest(s) stop",
        target=Target(node=node),
        changes=changes,
        calls=[
            ApiCall.to("POST", "/nodes/{node}/status", node=node, params={"command": args.command})
        ],
        warnings=warnings,
    )


class PowerResult(ToolOutput):
    node: str
    command: str
    stopping: list[int]
    note: str


@tool(
    "proxmox_node_power",
    title="Reboot/shut down a node",
    tier=Tier.DESTRUCTIVE,
    toolset=TOOLSET,
    input=PowerArgs,
    output=PowerResult,
    planner=_plan_power,
    examples=[{"node": "pve3", "command": "reboot"}, {"node": "pve2", "command": "shutdown"}],
    rejects=[
        ({"node": "pve9", "command": "reboot"}, "not_found"),
        ({"node": "pve1", "command": "shutdown"}, "precondition_failed"),
        ({"node": "pve1", "command": "halt"}, "invalid_argument"),
    ],
    api=["POST /nodes/{node}/status"],
)
async def power(ctx: ToolContext, args: PowerArgs) -> PowerResult:
    """Reboot or shut down a node: its running guests stop (the plan lists them and HA
    effects). Refused when the cluster would lose quorum, or to shut down the gateway's
    own node."""
    plan = ctx.plan
    assert plan is not None, "the gateway confirms a plan before a write runs"
    for call in plan.calls:
        await ctx.call(call.method, call.path, call.params or None)
    stopping = [
        int(c.field.split()[1]) for c in plan.changes if c.field.startswith(("qemu", "lxc"))
    ]
    back = (
        "back after its boot; proxmox_node_list shows when"
        if args.command == "reboot"
        else "off until powered on"
    )
    return PowerResult(
        node=args.node,
        command=args.command,
        stopping=stopping,
        note=f"{args.node} stops its guests, goes offline and is {back}.",
    )


TOOLS = (info, SERVICE, APT_REFRESH, power)
