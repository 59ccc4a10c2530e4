"""Escape hatches into guests: a command in a container (`pct exec` over SSH on its node)
or in a VM (the QEMU guest agent, through the REST agent endpoints).

Containers have no exec API (`/lxc/{vmid}/exec` is 501), so `pct exec <vmid> -- argv`
runs on the node that hosts the container. VMs need the guest agent: POST `agent/exec`
starts the command and answers a pid, `agent/exec-status` says when it has exited. For
policy both look like the CLI command an operator would type, `pct exec <vmid> -- ...`
and `qm guest exec <vmid> -- ...`, so one `argv` rule style covers both.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import anyio
from pydantic import Field

from pvemcp.tools.command import Argv, CommandOutput, CommandTimeout, command_output, run_on_node
from pvemcp.tools.kit import (
    CommandRecord,
    GuestRef,
    Plan,
    Tier,
    ToolContext,
    ToolFailure,
    WriteInput,
    planners,
    tool,
)

POLL_FIRST = 0.1
POLL_MAX = 1.0
INPUT_MAX = 64 * 1024


class CtExecArgs(GuestRef, WriteInput):
    argv: Argv
    timeout: CommandTimeout | None = None


class VmExecArgs(GuestRef, WriteInput):
    argv: Argv
    input_data: Annotated[
        str | None,
        Field(max_length=INPUT_MAX, description="Text passed to the command's stdin."),
    ] = None
    timeout: CommandTimeout | None = None


async def _guest(ctx: ToolContext, ref: GuestRef, kind: str, instead: str) -> dict[str, Any]:
    row = await planners.resolve_guest(ctx, ref)
    if row["type"] != kind:
        raise ToolFailure(
            "wrong_guest_type",
            f"guest {row['vmid']} is a {row['type']} guest, not {kind}",
            field="vmid",
            hint=f"Use {instead} for it.",
        )
    return row


def _pct_exec(vmid: int, argv: list[str]) -> list[str]:
    return ["pct", "exec", str(vmid), "--", *argv]


async def _plan_ct(ctx: ToolContext, args: CtExecArgs) -> Plan:
    row = await _guest(ctx, args, "lxc", "proxmox_vm_exec")
    target = planners.guest_target(row)
    argv = _pct_exec(int(row["vmid"]), list(args.argv))
    warnings = []
    if row.get("status") != "running":
        warnings.append(f"the container is {row.get('status')}: pct exec will fail")
    return Plan(
        summary=f"run in container {target.vmid} ({target.name}) on {target.node}: "
        f"{shlex.join(args.argv)}",
        target=target,
        argv=argv,
        command=ctx.wire_command([*ctx.ssh_config.cli_prefix, *argv], args.timeout),
        warnings=warnings,
    )


async def _plan_vm(ctx: ToolContext, args: VmExecArgs) -> Plan:
    row = await _guest(ctx, args, "qemu", "proxmox_ct_exec")
    target = planners.guest_target(row)
    status = await ctx.get(f"/nodes/{target.node}/qemu/{target.vmid}/status/current")
    warnings = []
    if status.get("status") != "running":
        warnings.append(f"the VM is {status.get('status')}: the guest agent cannot run it")
    if not status.get("agent"):
        warnings.append("the VM has no guest agent configured (agent: 1)")
    return Plan(
        summary=f"run in VM {target.vmid} ({target.name}) through the guest agent: "
        f"{shlex.join(args.argv)}",
        target=target,
        argv=["qm", "guest", "exec", str(target.vmid), "--", *args.argv],
        warnings=warnings,
    )


def _planned(ctx: ToolContext) -> tuple[str, int]:
    assert ctx.plan is not None, "the gateway plans every exec"
    target = ctx.plan.target
    assert target.node is not None
    assert target.vmid is not None
    return target.node, target.vmid


@tool(
    "proxmox_ct_exec",
    title="Run a command in a container",
    tier=Tier.ESCAPE,
    toolset="escape",
    input=CtExecArgs,
    output=CommandOutput,
    planner=_plan_ct,
)
async def ct_exec(ctx: ToolContext, args: CtExecArgs) -> CommandOutput:
    """Run an argv (no shell) inside an LXC container with pct exec on its node; policy sees
    ["pct", "exec", "<vmid>", "--", ...]. Returns exit code and capped output."""
    node, vmid = _planned(ctx)
    argv = [*ctx.ssh_config.cli_prefix, *_pct_exec(vmid, list(args.argv))]
    return await run_on_node(ctx, node, argv, args.timeout)


@tool(
    "proxmox_vm_exec",
    title="Run a command in a VM through the guest agent",
    tier=Tier.ESCAPE,
    toolset="escape",
    api=(
        "POST /nodes/{node}/qemu/{vmid}/agent/exec",
        "GET /nodes/{node}/qemu/{vmid}/agent/exec-status",
    ),
    input=VmExecArgs,
    output=CommandOutput,
    planner=_plan_vm,
)
async def vm_exec(ctx: ToolContext, args: VmExecArgs) -> CommandOutput:
    """Run an argv inside a QEMU VM through its guest agent and wait for it to exit; policy
    sees ["qm", "guest", "exec", "<vmid>", "--", ...]. Returns exit code and capped output."""
    node, vmid = _planned(ctx)
    base = f"/nodes/{node}/qemu/{vmid}/agent"
    seconds = args.timeout if args.timeout is not None else ctx.output_limits.command_timeout
    started = anyio.current_time()
    ctx.command = CommandRecord(node=node, argv=tuple(args.argv))
    reply = await ctx.post(
        f"{base}/exec", {"command": list(args.argv), "input-data": args.input_data}
    )
    pid = int(reply["pid"])
    ctx.command.facts["guest_pid"] = pid
    status: dict[str, Any] = {}
    delay = POLL_FIRST
    with anyio.move_on_after(seconds):
        while not (status := await ctx.get(f"{base}/exec-status", {"pid": pid})).get("exited"):
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
    if not status.get("exited"):
        ctx.command.timed_out = True
        raise ToolFailure(
            "guest_command_timeout",
            f"the command in VM {vmid} had not exited after {seconds:g} s (guest pid {pid}); "
            "it keeps running in the guest: the agent cannot stop it",
            hint="Stop it from inside the guest (for example another proxmox_vm_exec with "
            "kill), or retry with a longer timeout.",
            details={"pid": pid},
        )
    out = str(status.get("out-data") or "").encode()
    err = str(status.get("err-data") or "").encode()
    signal = status.get("signal")
    cut = bool(status.get("out-truncated") or status.get("err-truncated"))
    ctx.command.exit_code = status.get("exitcode")
    ctx.command.signal = str(signal) if signal is not None else None
    ctx.command.timed_out = False
    ctx.command.out, ctx.command.err = out, err
    shaped = ctx.shape_output(out, err, cut_at_source=cut)
    ctx.command.truncated = shaped.truncated
    return command_output(
        node,
        shaped,
        exit_code=ctx.command.exit_code,
        signal=ctx.command.signal,
        seconds=anyio.current_time() - started,
    )


TOOLS = (ct_exec, vm_exec)
