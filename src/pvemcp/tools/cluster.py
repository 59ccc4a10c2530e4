"""Cluster-wide and node tools: status, nodes, the next free VMID.

Each answer is read through a small model of the fields the tool uses (`Answer`), so an
odd answer is `bad_upstream_answer` naming the path, never a crash.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from pvemcp.tools.kit import (
    Answer,
    Empty,
    NodeName,
    ProxmoxError,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    answer_as,
    as_int,
    gib,
    mib,
    node_or_default,
    pct,
    read_as,
    tool,
)


class _StatusEntry(Answer):
    """One entry of /cluster/status: the cluster itself or a node."""

    type: str
    name: str | None = None
    online: bool | None = None
    ip: str | None = None
    quorate: bool | None = None


class _Version(Answer):
    version: str | None = None


class _NodeRow(Answer):
    node: str
    status: str = "unknown"
    cpu: float | None = None
    maxcpu: float | None = None
    mem: float | None = None
    maxmem: float | None = None
    uptime: float | None = None


class _Usage(Answer):
    used: float | None = None
    total: float | None = None


class _CpuInfo(Answer):
    model: str | None = None
    cpus: float | None = None


class _NodeStatus(Answer):
    uptime: float | None = None
    cpu: float | None = None
    memory: _Usage = _Usage()
    swap: _Usage = _Usage()
    rootfs: _Usage = _Usage()
    cpuinfo: _CpuInfo = _CpuInfo()
    loadavg: list[float] | None = None
    pveversion: str | None = None
    kversion: str | None = None


_STATUS_ENTRIES = TypeAdapter(list[_StatusEntry])
_VERSION = TypeAdapter(_Version)
_NODE_ROWS = TypeAdapter(list[_NodeRow])
_NODE_STATUS = TypeAdapter(_NodeStatus)
_NEXT_ID = TypeAdapter(int)


class NodeBrief(ToolOutput):
    name: str
    online: bool
    ip: str | None = None


class ClusterStatus(ToolOutput):
    cluster: str | None = None
    quorate: bool | None = None
    nodes_online: int
    nodes_total: int
    nodes: list[NodeBrief]
    pve_version: str | None = None


@tool(
    "proxmox_cluster_status",
    title="Cluster status",
    tier=Tier.READ,
    toolset="core",
    api=("GET /cluster/status", "GET /version"),
    input=Empty,
    output=ClusterStatus,
    idempotent=True,
    examples=[{}],
)
async def cluster_status(ctx: ToolContext, args: Empty) -> ClusterStatus:
    """Cluster name, quorum, online nodes and PVE version. Call it first to check that the
    cluster is healthy before acting on it."""
    status, version = await ctx.get_many("/cluster/status", "/version")
    entries = answer_as(_STATUS_ENTRIES, status, method="GET", path="/cluster/status")
    cluster = next((e for e in entries if e.type == "cluster"), None)
    nodes = [
        NodeBrief(name=str(e.name), online=bool(e.online), ip=e.ip)
        for e in entries
        if e.type == "node"
    ]
    nodes.sort(key=lambda n: n.name)
    return ClusterStatus(
        cluster=cluster.name if cluster else None,
        quorate=bool(cluster.quorate) if cluster else None,
        nodes_online=sum(n.online for n in nodes),
        nodes_total=len(nodes),
        nodes=nodes,
        pve_version=answer_as(_VERSION, version, method="GET", path="/version").version,
    )


class NodeSummary(ToolOutput):
    node: str
    status: str
    cpu_pct: float | None = None
    cpus: int | None = None
    mem_mib: int | None = None
    maxmem_mib: int | None = None
    uptime_s: int | None = None


class NodeList(ToolOutput):
    nodes: list[NodeSummary]


@tool(
    "proxmox_node_list",
    title="List nodes",
    tier=Tier.READ,
    toolset="core",
    api=("GET /nodes",),
    input=Empty,
    output=NodeList,
    idempotent=True,
    examples=[{}],
)
async def node_list(ctx: ToolContext, args: Empty) -> NodeList:
    """Every node with online status, CPU load and memory use. Use it to pick a node."""
    nodes = [
        NodeSummary(
            node=row.node,
            status=row.status,
            cpu_pct=pct(row.cpu),
            cpus=as_int(row.maxcpu),
            mem_mib=mib(row.mem),
            maxmem_mib=mib(row.maxmem),
            uptime_s=as_int(row.uptime),
        )
        for row in await read_as(ctx, _NODE_ROWS, "/nodes")
    ]
    nodes.sort(key=lambda n: n.node)
    return NodeList(nodes=nodes)


class NodeArgs(ToolInput):
    node: NodeName | None = None
    """Default: the cluster's default_node."""


class NodeStatus(ToolOutput):
    node: str
    uptime_s: int | None = None
    cpu_pct: float | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    loadavg: list[float] | None = None
    mem_used_mib: int | None = None
    mem_total_mib: int | None = None
    swap_used_mib: int | None = None
    swap_total_mib: int | None = None
    rootfs_used_gib: float | None = None
    rootfs_total_gib: float | None = None
    pve_version: str | None = None
    kernel: str | None = None


@tool(
    "proxmox_node_status",
    title="Node status",
    tier=Tier.READ,
    toolset="core",
    api=("GET /nodes/{node}/status",),
    input=NodeArgs,
    output=NodeStatus,
    idempotent=True,
    examples=[{"node": "pve2"}, {}],
    rejects=[({"node": "pve9"}, "not_found"), ({"node": "-x"}, "invalid_argument")],
)
async def node_status(ctx: ToolContext, args: NodeArgs) -> NodeStatus:
    """One node's load, memory, swap, root disk, uptime and versions (default: the
    cluster's default node)."""
    node = node_or_default(ctx, args.node)
    try:
        data = await read_as(ctx, _NODE_STATUS, f"/nodes/{node}/status")
    except ProxmoxError:
        await _require_node(ctx, node)
        raise
    return NodeStatus(
        node=node,
        uptime_s=as_int(data.uptime),
        cpu_pct=pct(data.cpu),
        cpu_model=data.cpuinfo.model,
        cpus=as_int(data.cpuinfo.cpus),
        loadavg=data.loadavg or None,
        mem_used_mib=mib(data.memory.used),
        mem_total_mib=mib(data.memory.total),
        swap_used_mib=mib(data.swap.used),
        swap_total_mib=mib(data.swap.total),
        rootfs_used_gib=gib(data.rootfs.used),
        rootfs_total_gib=gib(data.rootfs.total),
        pve_version=data.pveversion,
        kernel=data.kversion,
    )


async def _require_node(ctx: ToolContext, node: str) -> None:
    """After a failed node call: `not_found` listing the nodes when `node` is none of them
    (PVE answers an unknown node with a 500 "hostname lookup failed"). Returns when the
    node exists or the list cannot be read, so the caller raises the original failure."""
    try:
        names = sorted(row.node for row in await read_as(ctx, _NODE_ROWS, "/nodes"))
    except ProxmoxError:
        return
    if node not in names:
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no node {node!r}",
            field="node",
            hint=f"Use one of its nodes: {', '.join(names)}.",
            details={"nodes": names},
        )


class NextVmid(ToolOutput):
    vmid: int


@tool(
    "proxmox_next_vmid",
    title="Next free VMID",
    tier=Tier.READ,
    toolset="core",
    api=("GET /cluster/nextid",),
    input=Empty,
    output=NextVmid,
    examples=[{}],
)
async def next_vmid(ctx: ToolContext, args: Empty) -> NextVmid:
    """The lowest free guest id, for a new VM or container. Not reserved: another caller may
    take it first."""
    return NextVmid(vmid=await read_as(ctx, _NEXT_ID, "/cluster/nextid"))


TOOLS = (cluster_status, node_list, node_status, next_vmid)
