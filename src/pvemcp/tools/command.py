"""What the command tools share: argv arguments, the result model, and escape plans.

An argv is a list of tokens passed to the program as they are (no shell parses them), so
`;`, `$(...)` or spaces inside a token are text. What stays possible is *option*
injection (`--force` as a "value"): the policy's `argv` patterns decide that, and their
wildcards never match a token starting with `-`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from pvemcp.gateway.context import ShapedOutput, ToolContext
from pvemcp.gateway.registry import ToolOutput

MAX_TOKENS = 256
MAX_TOKEN_CHARS = 4096


def _token(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters (NUL, newline, escape)")
    return value


Token = Annotated[str, AfterValidator(_token), Field(max_length=MAX_TOKEN_CHARS)]
Argv = Annotated[
    list[Token],
    Field(
        min_length=1,
        max_length=MAX_TOKENS,
        description="Program and arguments, one token each (no shell).",
    ),
]
CommandTimeout = Annotated[
    float,
    # At least 1 s, as `wire_command` requires: a shorter one is no limit a node can keep.
    Field(ge=1, le=3600, description="Seconds before it is killed; default: the cluster's."),
]


class CommandOutput(ToolOutput):
    """What a command did. Output beyond the inline cap is in the `*_artifact` resources."""

    node: str
    exit_code: int | None = None
    signal: str | None = None
    stdout: str
    stderr: str
    parsed: Any = None
    """stdout as JSON, when it was complete JSON (`--output-format json`)."""
    truncated: bool = False
    stdout_artifact: str | None = None
    stderr_artifact: str | None = None
    seconds: float | None = None


def command_output(
    node: str,
    shaped: ShapedOutput,
    *,
    exit_code: int | None,
    signal: str | None,
    seconds: float | None,
) -> CommandOutput:
    return CommandOutput(
        node=node,
        exit_code=exit_code,
        signal=signal,
        stdout=shaped.stdout,
        stderr=shaped.stderr,
        parsed=shaped.parsed,
        truncated=shaped.truncated,
        stdout_artifact=shaped.stdout_artifact,
        stderr_artifact=shaped.stderr_artifact,
        seconds=round(seconds, 3) if seconds is not None else None,
    )


async def run_on_node(
    ctx: ToolContext, node: str, argv: list[str], timeout: float | None
) -> CommandOutput:
    """Run `argv` on `node` over SSH and shape its output."""
    result = await ctx.ssh_run(node, argv, timeout=timeout)
    return command_output(
        node,
        ctx.shape_output(result.stdout, result.stderr, cut_at_source=result.capture_truncated),
        exit_code=result.exit_code,
        signal=result.signal,
        seconds=result.duration,
    )
