"""Cloud-init of QEMU VMs: set the user, SSH keys, IP configs and DNS (a config change
underneath, `planners.guest_config_change`), show the data the drive holds, regenerate it.

The password is never an argument: `password_secret` names a secret an operator provided
to the gateway (`ToolContext.guest_secret`), so the value is in no plan, result or audit.
SSH keys are sent URL-encoded, one per line, as qemu-server's API wants them (it
`uri_unescape`s `sshkeys` before `validate_ssh_public_keys`, `PVE/API2/Qemu.pm`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import AfterValidator, Field, TypeAdapter

from pvemcp.tools.kit import (
    Answer,
    ApiCall,
    Change,
    GuestRef,
    GuestTarget,
    Plan,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolOutput,
    WriteInput,
    action,
    matching,
    planners,
    read_as,
    tool,
)

SshKey = Annotated[
    str,
    matching(
        r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9-]+@openssh\.com)"
        r" [A-Za-z0-9+/]+=*( [^\n]{0,200})?",
        "an OpenSSH public key (type, base64, optional comment)",
    ),
]


def _ipconfig(value: str) -> str:
    """PVE's `ipconfigN` (`pve-qm-ipconfig`): `ip=dhcp|IPv4/CIDR`, `gw=IPv4`, `ip6=dhcp|auto|
    IPv6/CIDR`, `gw6=IPv6`, comma-separated. Checked here: the API index keeps the format
    opaque, and a wrong address would only fail inside the guest at boot."""
    seen: set[str] = set()
    for part in value.split(","):
        key, _, text = part.partition("=")
        if key not in ("ip", "gw", "ip6", "gw6") or key in seen:
            raise ValueError(f"{part!r}: give each of ip=, gw=, ip6=, gw6= at most once")
        seen.add(key)
        try:
            if key == "ip" and text != "dhcp":
                ipaddress.IPv4Interface(text if "/" in text else "missing/prefix")
            elif key == "ip6" and text not in ("dhcp", "auto"):
                ipaddress.IPv6Interface(text if "/" in text else "missing/prefix")
            elif key == "gw":
                ipaddress.IPv4Address(text)
            elif key == "gw6":
                ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not a valid {key} (CIDR for ip/ip6)") from None
    return value


IpConfig = Annotated[str, AfterValidator(_ipconfig)]
NicIndex = Annotated[str, matching(r"[0-9]|[12][0-9]|3[01]", "a NIC index, 0 to 31")]
Text = Annotated[str, Field(max_length=256)]


def _vm_only(target: GuestTarget, field: str) -> None:
    if target.type != "qemu":
        raise ToolFailure(
            "unsupported",
            f"{target.vmid} is a container: cloud-init is for VMs",
            field=field,
            hint="Set a container's DNS or network with proxmox_guest_config_update.",
        )


class _CloudinitItem(Answer):
    """One key of GET .../cloudinit: the value on the drive, and what replaces it."""

    key: str
    value: str | None = None
    pending: str | None = None
    delete: int | None = None


_ITEMS = TypeAdapter(list[_CloudinitItem])


async def _drive_changes(ctx: ToolContext, target: GuestTarget) -> list[Change]:
    """The keys that differ from what the drive was generated with (PVE's own list)."""
    items = await read_as(ctx, _ITEMS, f"{target.path}/cloudinit")
    return [
        Change(field=item.key, before=item.value, after=item.pending)
        for item in items
        if item.delete or item.pending is not None
    ]


class SetArgs(WriteInput, GuestRef):
    user: Annotated[str | None, matching(r"[a-z_][a-z0-9_-]{0,31}", "a user name")] = None
    ssh_keys: list[SshKey] | None = None
    ipconfig: Annotated[
        dict[NicIndex, IpConfig] | None,
        Field(description='By NIC: {"0": "ip=10.0.0.5/24,gw=10.0.0.1"} or "ip=dhcp".'),
    ] = None
    nameserver: Text | None = None
    searchdomain: Text | None = None
    password_secret: Annotated[
        str | None,
        matching(r"[A-Za-z][A-Za-z0-9_-]{0,63}", "a secret name"),
        Field(description="Name of a guest secret the operator provided."),
    ] = None


async def _plan_set(ctx: ToolContext, args: SetArgs) -> Plan:
    target = planners.guest_target(await planners.resolve_guest(ctx, args))
    _vm_only(target, planners.ref_field(args))
    values: dict[str, str] = {}
    if args.user is not None:
        values["ciuser"] = args.user
    if args.ssh_keys is not None:
        values["sshkeys"] = quote("\n".join(args.ssh_keys) + "\n", safe="")
    for index, ipconfig in sorted((args.ipconfig or {}).items()):
        values[f"ipconfig{int(index)}"] = ipconfig
    if args.nameserver is not None:
        values["nameserver"] = args.nameserver
    if args.searchdomain is not None:
        values["searchdomain"] = args.searchdomain
    if args.password_secret is not None:
        values["cipassword"] = ctx.guest_secret(args.password_secret, field="password_secret")
    if not values:
        raise ToolFailure(
            "invalid_argument",
            "nothing to set",
            field="user",
            hint="Give user, ssh_keys, ipconfig, nameserver, searchdomain or password_secret.",
        )
    return await planners.guest_config_change(ctx, args, values)


cloudinit_set = action(
    "proxmox_cloudinit_set",
    title="Set a VM's cloud-init user, keys, IPs and DNS",
    description="""Set a VM's cloud-init user, SSH keys (replacing them), IP config per NIC,
    DNS; a password only as the name of an operator-provided secret. A running VM sees them
    after proxmox_cloudinit_regenerate and a boot.""",
    tier=Tier.WRITE,
    toolset="cloudinit",
    api=("PUT /nodes/{node}/qemu/{vmid}/config",),
    input=SetArgs,
    output=TaskOutcome,
    planner=_plan_set,
    examples=[
        {
            "vmid": 9000,
            "user": "ops",
            "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx7 ops@example"],
            "ipconfig": {"0": "ip=192.0.2.10/24,gw=192.0.2.1"},
            "nameserver": "192.0.2.53",
        }
    ],
    rejects=[
        ({"vmid": 200, "user": "ops"}, "unsupported"),
        ({"vmid": 9000, "ipconfig": {"0": "ip=300.1.1.1/24"}}, "invalid_argument"),
        ({"vmid": 9000, "ssh_keys": ["not a key"]}, "invalid_argument"),
        ({"vmid": 9000, "password_secret": "nope"}, "secret_not_found"),
    ],
)


class ShowArgs(GuestRef):
    what: Literal["user", "network", "meta"] = "user"


# The generated cloud-init data, and the keys changed since the drive was generated
# (before: on the drive; after: the new value, null when deleted).
class CloudinitData(ToolOutput):
    vmid: int
    node: str
    what: str
    data: str
    changed: list[Change] | None = None


@tool(
    "proxmox_cloudinit_show",
    title="Show a VM's generated cloud-init data",
    tier=Tier.READ,
    toolset="cloudinit",
    api=("GET /nodes/{node}/qemu/{vmid}/cloudinit", "GET /nodes/{node}/qemu/{vmid}/cloudinit/dump"),
    input=ShowArgs,
    output=CloudinitData,
    idempotent=True,
    examples=[{"vmid": 9000}, {"name": "tmpl-deb12", "what": "network"}],
    rejects=[
        ({"vmid": 200}, "unsupported"),
        ({"vmid": 9000, "what": "vendor"}, "invalid_argument"),
    ],
)
async def cloudinit_show(ctx: ToolContext, args: ShowArgs) -> CloudinitData:
    """The cloud-init user-data, network config or meta-data PVE generates for a VM, and
    changed: keys that differ from what its drive holds (regenerate to apply)."""
    target = planners.guest_target(await planners.resolve_guest(ctx, args))
    _vm_only(target, planners.ref_field(args))
    data = await ctx.get(f"{target.path}/cloudinit/dump", {"type": args.what})
    changed = await _drive_changes(ctx, target)
    return CloudinitData(
        vmid=target.vmid, node=target.node, what=args.what, data=str(data), changed=changed or None
    )


class RegenerateArgs(WriteInput, GuestRef):
    pass


async def _plan_regenerate(ctx: ToolContext, args: RegenerateArgs) -> Plan:
    row = await planners.resolve_unlocked(ctx, args)
    target = planners.guest_target(row)
    field = planners.ref_field(args)
    _vm_only(target, field)
    config = (await planners.read_config(ctx, target)).current
    if not any(f"vm-{target.vmid}-cloudinit" in value for value in config.values()):
        # PVE answers success and does nothing (vmconfig_update_cloudinit_drive).
        raise ToolFailure(
            "no_cloudinit_drive",
            f"VM {target.vmid} has no cloud-init drive: there is nothing to regenerate",
            field=field,
            hint="Add one with proxmox_guest_config_update, e.g. values "
            '{"ide2": "local-lvm:cloudinit"}.',
        )
    call = ApiCall.to(
        "PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", node=target.node, vmid=target.vmid
    )
    warnings = []
    if row.get("status") == "running":
        warnings.append("the VM is running: cloud-init in the guest applies most changes at boot")
    return Plan(
        summary=f"regenerate the cloud-init drive of VM {target.vmid} ({target.name or '?'})",
        changes=await _drive_changes(ctx, target),
        target=target,
        calls=[call],
        warnings=warnings,
    )


cloudinit_regenerate = action(
    "proxmox_cloudinit_regenerate",
    title="Regenerate a VM's cloud-init drive",
    description="""Rewrite a VM's cloud-init drive from its current settings (the plan lists
    what changes on it): for a running VM; a stopped one gets them at its next start anyway.""",
    tier=Tier.WRITE,
    toolset="cloudinit",
    api=("PUT /nodes/{node}/qemu/{vmid}/cloudinit",),
    input=RegenerateArgs,
    output=TaskOutcome,
    planner=_plan_regenerate,
    idempotent=True,
    examples=[{"vmid": 9000}],
    rejects=[({"vmid": 101}, "no_cloudinit_drive"), ({"vmid": 200}, "unsupported")],
)

TOOLS = (cloudinit_set, cloudinit_show, cloudinit_regenerate)
