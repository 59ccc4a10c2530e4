"""Escape hatches on a node: a Proxmox CLI command as an argv, or a shell command line.

Both run over SSH on the node under `timeout` (killed on the node when it runs too long),
are decided by policy on their argv before anything connects, and leave the exact command
string in the audit intent before they run.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.plan import Plan, Target
from pvemcp.gateway.registry import WriteInput, tool
from pvemcp.policy.tiers import Tier
from pvemcp.tools.command import Argv, CommandOutput, CommandTimeout, run_on_node
from pvemcp.tools.common import NodeName, node_or_default

FAMILIES = frozenset(
    {
        "qm",
        "pct",
        "pvesm",
        "pvecm",
        "pvesh",
        "vzdump",
        "ha-manager",
        "pveceph",
        "pvesr",
        "pveum",
        "pvenode",
        "pveversion",
        "pvesubscription",
        "pveam",
        "pve-firewall",
        "pvereport",
    }
)
"""The Proxmox command families proxmox_cli_run runs, by bare name (the node's PATH
finds them); anything else on a node is proxmox_shell_run's, under its own policy."""


class CliRunArgs(WriteInput):
    node: NodeName | None = None
    argv: Annotated[
        Argv,
        Field(description='Proxmox command and arguments, e.g. ["qm", "status", "100"].'),
    ]
    timeout: CommandTimeout | None = None

    @model_validator(mode="after")
    def _family(self) -> Self:
        if self.argv[0] not in FAMILIES:
            raise ValueError(
                f"{self.argv[0][:40]!r} is not a Proxmox command; use one of "
                + ", ".join(sorted(FAMILIES))
            )
        return self


def _shell_text(value: str) -> str:
    if any((ord(ch) < 0x20 and ch not in "\t\n") or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters other than tab and newline")
    if value.startswith("-"):
        # `sh -c -x` would read it as an option to sh, not as the command line.
        raise ValueError("must not start with '-'")
    return value


class ShellRunArgs(WriteInput):
    node: NodeName | None = None
    command: Annotated[
        str,
        AfterValidator(_shell_text),
        Field(min_length=1, max_length=16384, description="Command line for `sh -c`."),
    ]
    timeout: CommandTimeout | None = None


def _plan(
    ctx: ToolContext, node: str, argv: list[str], program: list[str], timeout: float | None
) -> Plan:
    return Plan(
        summary=f"run on node {node}: {shlex.join(argv)}",
        target=Target(node=node),
        argv=argv,
        command=ctx.wire_command(program, timeout),
    )


async def _plan_cli(ctx: ToolContext, args: CliRunArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    program = [*ctx.ssh_config.cli_prefix, *args.argv]
    return _plan(ctx, node, list(args.argv), program, args.timeout)


async def _plan_shell(ctx: ToolContext, args: ShellRunArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    argv = ["sh", "-c", args.command]
    return _plan(ctx, node, argv, argv, args.timeout)


def _node(ctx: ToolContext) -> str:
    assert ctx.plan is not None, "the gateway plans every command"
    assert ctx.plan.target.node is not None
    return ctx.plan.target.node


@tool(
    "proxmox_cli_run",
    title="Run a Proxmox CLI command on a node",
    tier=Tier.ESCAPE,
    toolset="escape",
    input=CliRunArgs,
    output=CommandOutput,
    planner=_plan_cli,
)
async def cli_run(ctx: ToolContext, args: CliRunArgs) -> CommandOutput:
    """Run a Proxmox command (qm, pct, pvesm, pvesh, vzdump, ha-manager...) on a node as an
    argv, no shell; policy must allow the exact argv. Returns exit code, capped output and
    its JSON parsed. Prefer typed tools."""
    program = [*ctx.ssh_config.cli_prefix, *args.argv]
    return await run_on_node(ctx, _node(ctx), program, args.timeout)


@tool(
    "proxmox_shell_run",
    title="Run a shell command line on a node",
    tier=Tier.ESCAPE,
    toolset="escape",
    input=ShellRunArgs,
    output=CommandOutput,
    planner=_plan_shell,
)
async def shell_run(ctx: ToolContext, args: ShellRunArgs) -> CommandOutput:
    """Run a command line with sh -c on a node: the broadest escape hatch, for host
    diagnostics nothing else covers; policy sees ["sh", "-c", command]. Prefer
    proxmox_cli_run or typed tools."""
    return await run_on_node(ctx, _node(ctx), ["sh", "-c", args.command], args.timeout)


TOOLS = (cli_run, shell_run)
