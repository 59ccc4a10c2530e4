"""Cluster-wide and node tools: status, nodes, the next free VMID."""

from __future__ import annotations

from typing import Any

import anyio

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.registry import ToolInput, ToolOutput, tool
from pvemcp.policy.tiers import Tier
from pvemcp.tools.common import NodeName, as_float, as_int

MIB = 1024 * 1024
GIB = 1024 * MIB


def pct(value: Any) -> float | None:
    """PVE's 0..1 load fraction as a percentage with one decimal."""
    number = as_float(value)
    return None if number is None else round(number * 100, 1)


def mib(value: Any) -> int | None:
    number = as_int(value)
    return None if number is None else number // MIB


def gib(value: Any) -> float | None:
    number = as_int(value)
    return None if number is None else round(number / GIB, 1)


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


class Empty(ToolInput):
    pass


@tool(
    "proxmox_cluster_status",
    title="Cluster status",
    tier=Tier.READ,
    input=Empty,
    output=ClusterStatus,
    idempotent=True,
)
async def cluster_status(ctx: ToolContext, args: Empty) -> ClusterStatus:
    """Cluster name, quorum, which nodes are online, and the PVE version. Start here to see
    whether the cluster is healthy before acting on it."""
    entries: list[dict[str, Any]] = []
    version: dict[str, Any] = {}

    async def fetch_status() -> None:
        entries.extend(await ctx.get("/cluster/status"))

    async def fetch_version() -> None:
        version.update(await ctx.get("/version"))

    async with anyio.create_task_group() as group:
        group.start_soon(fetch_status)
        group.start_soon(fetch_version)

    cluster = next((e for e in entries if e.get("type") == "cluster"), None)
    nodes = [
        NodeBrief(name=str(e.get("name")), online=bool(e.get("online")), ip=e.get("ip"))
        for e in entries
        if e.get("type") == "node"
    ]
    nodes.sort(key=lambda n: n.name)
    return ClusterStatus(
        cluster=cluster.get("name") if cluster else None,
        quorate=bool(cluster.get("quorate")) if cluster else None,
        nodes_online=sum(n.online for n in nodes),
        nodes_total=len(nodes),
        nodes=nodes,
        pve_version=version.get("version"),
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
    input=Empty,
    output=NodeList,
    idempotent=True,
)
async def node_list(ctx: ToolContext, args: Empty) -> NodeList:
    """Every node with online status, CPU load and memory use. Use it to pick a node."""
    rows = await ctx.get("/nodes")
    nodes = [
        NodeSummary(
            node=str(row.get("node")),
            status=str(row.get("status", "unknown")),
            cpu_pct=pct(row.get("cpu")),
            cpus=as_int(row.get("maxcpu")),
            mem_mib=mib(row.get("mem")),
            maxmem_mib=mib(row.get("maxmem")),
            uptime_s=as_int(row.get("uptime")),
        )
        for row in rows
    ]
    nodes.sort(key=lambda n: n.node)
    return NodeList(nodes=nodes)


class NodeArgs(ToolInput):
    node: NodeName


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
    input=NodeArgs,
    output=NodeStatus,
    idempotent=True,
)
async def node_status(ctx: ToolContext, args: NodeArgs) -> NodeStatus:
    """One node's load, memory, swap, root disk, uptime and versions."""
    data = await ctx.get(f"/nodes/{args.node}/status")
    memory = data.get("memory") or {}
    swap = data.get("swap") or {}
    rootfs = data.get("rootfs") or {}
    cpuinfo = data.get("cpuinfo") or {}
    loadavg = [f for f in (as_float(v) for v in data.get("loadavg") or []) if f is not None]
    return NodeStatus(
        node=args.node,
        uptime_s=as_int(data.get("uptime")),
        cpu_pct=pct(data.get("cpu")),
        cpu_model=cpuinfo.get("model"),
        cpus=as_int(cpuinfo.get("cpus")),
        loadavg=loadavg or None,
        mem_used_mib=mib(memory.get("used")),
        mem_total_mib=mib(memory.get("total")),
        swap_used_mib=mib(swap.get("used")),
        swap_total_mib=mib(swap.get("total")),
        rootfs_used_gib=gib(rootfs.get("used")),
        rootfs_total_gib=gib(rootfs.get("total")),
        pve_version=data.get("pveversion"),
        kernel=data.get("kversion"),
    )


class NextVmid(ToolOutput):
    vmid: int


@tool(
    "proxmox_next_vmid",
    title="Next free VMID",
    tier=Tier.READ,
    input=Empty,
    output=NextVmid,
)
async def next_vmid(ctx: ToolContext, args: Empty) -> NextVmid:
    """The lowest free guest id in the cluster, for creating a VM or container. It is not
    reserved: another caller may take it first."""
    value = as_int(await ctx.get("/cluster/nextid"))
    if value is None:
        raise ValueError("PVE returned a non-numeric next id")
    return NextVmid(vmid=value)


TOOLS = (cluster_status, node_list, node_status, next_vmid)
