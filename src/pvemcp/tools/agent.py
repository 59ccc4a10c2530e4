"""Reads through a VM's QEMU guest agent: ping, OS, hostname, network interfaces and
filesystems (`GET|POST /nodes/{node}/qemu/{vmid}/agent/<command>`, answering
`{"result": ...}`, qemu-server `PVE/API2/Qemu/Agent.pm`).

When the agent cannot answer, PVE says why in one of three sentences
(`assert_agent_available` in `PVE/QemuServer/Agent.pm`); each becomes an
`agent_unavailable` failure with what to do about it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, TypeAdapter

from pvemcp.tools.kit import (
    Answer,
    GuestRef,
    GuestTarget,
    ProxmoxError,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    answer_as,
    gib,
    planners,
    tool,
)

T = TypeVar("T")

_UNAVAILABLE = {
    "No QEMU guest agent configured": "Enable it (proxmox_guest_config_update values "
    '{"agent": "1"}), install qemu-guest-agent in the guest, then restart the VM.',
    "is not running": "Start the VM (proxmox_guest_power), then try again.",
    "QEMU guest agent is not running": "Install or start qemu-guest-agent in the guest (it "
    "may still be booting; a paused VM's agent cannot answer) and try again.",
}


async def _vm(ctx: ToolContext, ref: GuestRef) -> GuestTarget:
    target = planners.guest_target(await planners.resolve_guest(ctx, ref))
    if target.type != "qemu":
        raise ToolFailure(
            "unsupported",
            f"{target.vmid} is a container: only VMs have a QEMU guest agent",
            field=planners.ref_field(ref),
            hint="Read a container with proxmox_guest_get.",
        )
    return target


class _Result(Answer):
    result: Any = None


_RESULT = TypeAdapter(_Result)


async def _agent(
    ctx: ToolContext, target: GuestTarget, command: str, field: str, adapter: TypeAdapter[T]
) -> T:
    """The agent's `result` for `command` as the adapter's type; PVE's refusals become
    `agent_unavailable`."""
    method: Literal["GET", "POST"] = "POST" if command == "ping" else "GET"
    path = f"{target.path}/agent/{command}"
    try:
        answer = (await ctx.call(method, path)).data
    except ProxmoxError as exc:
        # The most specific sentence first: "QEMU guest agent is not running" also ends
        # like "VM 100 is not running".
        for sentence, hint in sorted(_UNAVAILABLE.items(), key=lambda item: -len(item[0])):
            if sentence in exc.message:
                raise ToolFailure(
                    "agent_unavailable", exc.message.strip(), field=field, hint=hint
                ) from None
        raise
    result = answer_as(_RESULT, answer, method=method, path=path).result
    return answer_as(adapter, result, method=method, path=path)


InfoField = Literal["ping", "os", "hostname"]
_DEFAULT_FIELDS: tuple[InfoField, ...] = ("os", "hostname")


class InfoArgs(GuestRef):
    fields: Annotated[
        list[InfoField], Field(min_length=1, max_length=3, description="What to read.")
    ] = Field(default_factory=lambda: list(_DEFAULT_FIELDS))


class AgentInfo(ToolOutput):
    vmid: int
    node: str
    responding: bool | None = None
    hostname: str | None = None
    os: str | None = None
    os_id: str | None = None
    os_version: str | None = None
    kernel: str | None = None
    arch: str | None = None


class _OsInfo(Answer):
    id: str | None = None
    pretty_name: str | None = Field(None, alias="pretty-name")
    version_id: str | None = Field(None, alias="version-id")
    kernel_release: str | None = Field(None, alias="kernel-release")
    machine: str | None = None


class _HostName(Answer):
    host_name: str | None = Field(None, alias="host-name")


_OS = TypeAdapter(_OsInfo)
_HOST = TypeAdapter(_HostName)
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


@tool(
    "proxmox_agent_info",
    title="Ask a VM's guest agent: ping, OS, hostname",
    tier=Tier.READ,
    toolset="agent",
    api=(
        "POST /nodes/{node}/qemu/{vmid}/agent/ping",
        "GET /nodes/{node}/qemu/{vmid}/agent/get-osinfo",
        "GET /nodes/{node}/qemu/{vmid}/agent/get-host-name",
    ),
    input=InfoArgs,
    output=AgentInfo,
    idempotent=True,
    examples=[{"vmid": 100}, {"name": "db01", "fields": ["ping"]}],
    rejects=[
        ({"vmid": 101}, "agent_unavailable"),
        ({"vmid": 105}, "agent_unavailable"),
        ({"vmid": 200}, "unsupported"),
    ],
)
async def agent_info(ctx: ToolContext, args: InfoArgs) -> AgentInfo:
    """Ask a running VM's QEMU guest agent: ping, OS and hostname as the guest reports them.
    agent_unavailable says what to do when the agent is not configured or silent, or the VM
    stopped."""
    target = await _vm(ctx, args)
    field = planners.ref_field(args)
    info = AgentInfo(vmid=target.vmid, node=target.node)
    if "ping" in args.fields:
        await _agent(ctx, target, "ping", field, _ANY)
        info.responding = True
    if "hostname" in args.fields:
        info.hostname = (await _agent(ctx, target, "get-host-name", field, _HOST)).host_name
    if "os" in args.fields:
        found = await _agent(ctx, target, "get-osinfo", field, _OS)
        info.os, info.os_id, info.os_version = found.pretty_name, found.id, found.version_id
        info.kernel, info.arch = found.kernel_release, found.machine
    return info


class _Address(Answer):
    ip_address: str = Field(alias="ip-address")
    prefix: int | None = None

    def __str__(self) -> str:
        return self.ip_address if self.prefix is None else f"{self.ip_address}/{self.prefix}"


class _Interface(Answer):
    name: str
    hardware_address: str | None = Field(None, alias="hardware-address")
    ip_addresses: list[_Address] = Field(default_factory=list, alias="ip-addresses")


class _Filesystem(Answer):
    name: str | None = None
    mountpoint: str
    type: str | None = None
    total_bytes: int | None = Field(None, alias="total-bytes")
    used_bytes: int | None = Field(None, alias="used-bytes")


_INTERFACES = TypeAdapter(list[_Interface])
_FILESYSTEMS = TypeAdapter(list[_Filesystem])


class Interface(ToolOutput):
    name: str
    mac: str | None = None
    ips: list[str]


class Filesystem(ToolOutput):
    mountpoint: str
    type: str | None = None
    device: str | None = None
    total_gib: float | None = None
    used_gib: float | None = None


class ListArgs(GuestRef):
    what: Literal["network", "filesystems"]


class AgentList(ToolOutput):
    vmid: int
    node: str
    interfaces: list[Interface] | None = None
    filesystems: list[Filesystem] | None = None


@tool(
    "proxmox_agent_list",
    title="List a VM's network interfaces or filesystems (guest agent)",
    tier=Tier.READ,
    toolset="agent",
    api=(
        "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "GET /nodes/{node}/qemu/{vmid}/agent/get-fsinfo",
    ),
    input=ListArgs,
    output=AgentList,
    idempotent=True,
    examples=[{"vmid": 100, "what": "network"}, {"name": "gitlab", "what": "filesystems"}],
    rejects=[({"vmid": 100, "what": "disks"}, "invalid_argument")],
)
async def agent_list(ctx: ToolContext, args: ListArgs) -> AgentList:
    """A running VM's network interfaces (name, MAC, IPs; no loopback) or mounted
    filesystems (type, size, use), as its QEMU guest agent reports them: e.g. the address
    DHCP gave it."""
    target = await _vm(ctx, args)
    field = planners.ref_field(args)
    result = AgentList(vmid=target.vmid, node=target.node)
    if args.what == "network":
        nics = await _agent(ctx, target, "network-get-interfaces", field, _INTERFACES)
        result.interfaces = [
            Interface(
                name=nic.name, mac=nic.hardware_address, ips=[str(a) for a in nic.ip_addresses]
            )
            for nic in nics
            if nic.name != "lo"
        ]
        return result
    filesystems = await _agent(ctx, target, "get-fsinfo", field, _FILESYSTEMS)
    result.filesystems = [
        Filesystem(
            mountpoint=fs.mountpoint,
            type=fs.type,
            device=fs.name,
            total_gib=gib(fs.total_bytes),
            used_gib=gib(fs.used_bytes),
        )
        for fs in filesystems
    ]
    return result


TOOLS = (agent_info, agent_list)
