"""Escape hatches for files on a node, through a helper program run over SSH.

The planner resolves the path on the node first (symlinks followed), so policy `paths`
rules judge the canonical path, the one that will actually be read or replaced; a write
plan shows sizes, hashes and a diff of what will change, hashes and diff only to a caller
who may read the file. The file rules themselves (deny list, no symlink followed after
the check, regular files only, caps, atomic replacement) are enforced below the tools, in
`pvemcp.proxmox.ssh.fileops`, whatever policy says.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import Change, Plan, Target
from pvemcp.gateway.registry import ToolOutput, WriteInput, tool
from pvemcp.policy.rules import split_path
from pvemcp.policy.tiers import Tier
from pvemcp.tools.common import NodeName, node_or_default

DIFF_LINES = 60
DIFF_WIDTH = 200
_TEXT_CONTROLS = frozenset("\t\n\r\f")
_HIDDEN = "hidden:"
_HIDING_KEY = secrets.token_bytes(32)
"""Keys the stand-in for a content hash a caller may not see: random per process, like the
confirmation tokens that bind it, so it tells only whether the content changed."""


def _absolute(value: str) -> str:
    if split_path(value) is None or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(
            "must be an absolute path without '.', '..', '//', a trailing '/' or control characters"
        )
    return value


RemotePath = Annotated[
    str,
    AfterValidator(_absolute),
    Field(max_length=4096, description="Absolute path on the node."),
]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


def as_text(data: bytes) -> str | None:
    """`data` as text when it is UTF-8 without control characters (but tab, newlines and
    form feed), else None: such content is returned as base64, byte for byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any((ord(ch) < 0x20 and ch not in _TEXT_CONTROLS) or ord(ch) == 0x7F for ch in text):
        return None
    return text


class FileReadArgs(WriteInput):
    node: NodeName | None = None
    path: RemotePath


class FileContent(ToolOutput):
    node: str
    path: str
    """The canonical path that was read (symlinks resolved)."""
    size: int
    sha256: str
    encoding: Literal["utf-8", "base64"]
    content: str
    """The first `output_cap` bytes; base64 when the file is binary."""
    truncated: bool = False
    artifact: str | None = None
    """The whole file, when `content` is cut."""


class FileWriteArgs(WriteInput):
    node: NodeName | None = None
    path: RemotePath
    content: Annotated[str | None, Field(description="New content as text (UTF-8).")] = None
    content_base64: Annotated[
        str | None, Field(description="New content as base64, for binary files.")
    ] = None
    expected_sha256: Annotated[
        Sha256 | None,
        Field(description="Write only if the current content has this SHA-256."),
    ] = None
    mode: Annotated[
        str | None,
        Field(
            pattern=r"^0?[0-7]{3}$",
            description='Permissions, e.g. "0640"; default: keep (new files 0644).',
        ),
    ] = None

    @model_validator(mode="after")
    def _one_content(self) -> Self:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of content or content_base64")
        if self.content_base64 is not None:
            try:
                base64.b64decode(self.content_base64, validate=True)
            except binascii.Error:
                raise ValueError("content_base64 is not valid base64") from None
        return self

    @property
    def data(self) -> bytes:
        if self.content is not None:
            return self.content.encode("utf-8")
        return base64.b64decode(self.content_base64 or "", validate=True)


class FileWritten(ToolOutput):
    node: str
    path: str
    size: int
    sha256: str
    mode: str
    created: bool
    before_sha256: str | None = None


async def _plan_read(ctx: ToolContext, args: FileReadArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    resolved = await ctx.resolve_path(node, args.path)
    warnings = []
    if resolved.canonical != args.path:
        warnings.append(f"{args.path} resolves to {resolved.canonical}")
    return Plan(
        summary=f"read {resolved.canonical} on node {node}",
        target=Target(node=node),
        paths=[resolved.canonical],
        warnings=warnings,
    )


def sha256_of(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _shown_sha(data: bytes | None, readable: bool) -> str | None:
    """The current content's SHA-256 for a plan, or for a caller who may not read the file
    a keyed stand-in: it still binds a confirmation to that content, but a hash would let
    the caller test guesses of content they may only overwrite."""
    if data is None or readable:
        return sha256_of(data)
    return _HIDDEN + hmac.new(_HIDING_KEY, data, hashlib.sha256).hexdigest()[:32]


def _shown_size(data: bytes | None, readable: bool) -> int | str | None:
    """The current content's size for a plan: "hidden" to a caller who may not read it."""
    if data is None:
        return None
    return len(data) if readable else "hidden"


def _diff_lines(path: str, before: bytes | None, after: bytes) -> Iterator[str] | None:
    """A unified diff's lines when both sides are text."""
    old = as_text(before) if before is not None else ""
    new = as_text(after)
    if old is None or new is None:
        return None
    return difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=path, tofile=path, n=2, lineterm=""
    )


def text_diff(path: str, before: bytes | None, after: bytes) -> str | None:
    """The start of a unified diff when both sides are text (what a plan shows)."""
    lines = _diff_lines(path, before, after)
    if lines is None:
        return None
    shown = [line[:DIFF_WIDTH] for _, line in zip(range(DIFF_LINES + 1), lines, strict=False)]
    if len(shown) > DIFF_LINES:
        shown[-1] = "... (diff cut)"
    return "\n".join(shown)


async def _plan_write(ctx: ToolContext, args: FileWriteArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    resolved = await ctx.resolve_path(node, args.path)
    path = resolved.canonical
    # Decide on the canonical path before telling anything about it (its type, its
    # content): a caller policy denies learns only that.
    ctx.authorize(node, [path])
    if resolved.kind not in (None, "file"):
        raise ToolFailure(
            "path_refused",
            f"{args.path} is a {resolved.kind}; only regular files are written (and never "
            "through a symlink)",
            field="path",
            hint="Name the file itself: its canonical path, if policy allows it.",
        )
    after = args.data
    limit = ctx.ssh_config.file_max_bytes
    if len(after) > limit:
        raise ToolFailure(
            "file_too_large",
            f"the new content has {len(after)} bytes, more than the {limit} allowed",
            field="content",
            hint="The cluster's ssh.file_max_bytes caps what the file tools write.",
        )
    # Hashes, size and the diff show the current content: only to a caller who may read it.
    readable = ctx.may_read(node, [path])
    if args.expected_sha256 is not None and not readable:
        # Matched or not, the answer would test a guess of content this caller may not
        # read (a dry run changes nothing, so guesses would be free).
        raise ToolFailure(
            "invalid_argument",
            f"expected_sha256 needs read access to {path}, which policy does not give this caller",
            field="expected_sha256",
            hint="Leave expected_sha256 out: the plan binds a confirmation to the current "
            "content without showing it.",
        )
    before = await ctx.read_current(node, args.path, canonical=path) if resolved.exists else None
    if args.expected_sha256 is not None and sha256_of(before) != args.expected_sha256.lower():
        raise ToolFailure(
            "precondition_failed",
            f"{path} does not have the expected content (sha256 {sha256_of(before) or 'no file'}); "
            "nothing was written",
            field="expected_sha256",
            hint="Read the file again, apply the change to its current content, then retry.",
        )
    old_mode = f"{resolved.mode:04o}" if before is not None and resolved.mode is not None else None
    if args.mode:
        new_mode = f"{int(args.mode, 8):04o}"
    else:
        # Kept without set-uid, set-gid and sticky (the helper applies the same rule to the
        # mode it finds): new content is not the program someone once made set-uid.
        new_mode = f"{int(old_mode, 8) & 0o777:04o}" if old_mode else "0644"
    changes = [
        Change(field="size", before=_shown_size(before, readable), after=len(after)),
        Change(field="sha256", before=_shown_sha(before, readable), after=sha256_of(after)),
    ]
    if new_mode != old_mode:
        changes.append(Change(field="mode", before=old_mode, after=new_mode))
    diff = text_diff(path, before, after) if readable else None
    warnings = []
    if resolved.canonical != args.path:
        warnings.append(f"{args.path} resolves to {resolved.canonical}")
    if not readable:
        warnings.append(
            "no diff or hash of the current content shown: policy does not let this caller "
            "read the file"
        )
    elif diff is None:
        warnings.append("binary content: no diff shown")
    if old_mode is not None and new_mode != old_mode and not args.mode:
        warnings.append(
            f"mode {old_mode} becomes {new_mode}: set-uid, set-gid and sticky are not kept"
        )
    return Plan(
        summary=f"{'replace' if before is not None else 'create'} {path} on node {node} "
        f"({len(after)} bytes, atomic)",
        changes=changes,
        target=Target(node=node),
        paths=[path],
        diff=diff,
        warnings=warnings,
    )


def _keep_contents(ctx: ToolContext, path: str, before: bytes | None) -> None:
    """Add a write's replaced content and the whole diff to what the evidence store keeps
    (`after` is recorded with the write itself); `before` None when there was no file or
    it is not known to be the one replaced."""
    record = ctx.command
    if record is None or "after" not in record.contents:
        return
    if before is not None:
        record.contents["before"] = before
    lines = _diff_lines(path, before, record.contents["after"])
    if lines is not None:
        record.contents["diff"] = "\n".join(lines).encode()


def _planned(ctx: ToolContext) -> tuple[str, str]:
    """The node and canonical path the gateway decided on."""
    plan = ctx.plan
    assert plan is not None, "the gateway plans every file call"
    assert plan.target.node is not None
    return plan.target.node, plan.paths[0]


@tool(
    "proxmox_file_read",
    title="Read a file on a node",
    tier=Tier.ESCAPE,
    toolset="escape",
    input=FileReadArgs,
    output=FileContent,
    planner=_plan_read,
)
async def file_read(ctx: ToolContext, args: FileReadArgs) -> FileContent:
    """Read a regular file on a node: text, or base64 if binary. Policy judges the path with
    symlinks resolved; keys and shadow are always refused. A file beyond the inline cap is
    an artifact."""
    node, path = _planned(ctx)
    data = await ctx.read_file(node, args.path, canonical=path)
    cap = ctx.output_limits.output_cap
    text = as_text(data)
    inline = data[:cap]
    artifact = ctx.keep_artifact(data) if len(data) > cap else None
    return FileContent(
        node=node,
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        encoding="utf-8" if text is not None else "base64",
        content=(
            inline.decode("utf-8", errors="ignore")
            if text is not None
            else base64.b64encode(inline).decode()
        ),
        truncated=len(data) > cap,
        artifact=artifact,
    )


@tool(
    "proxmox_file_write",
    title="Write a file on a node",
    tier=Tier.ESCAPE,
    toolset="escape",
    input=FileWriteArgs,
    output=FileWritten,
    planner=_plan_write,
)
async def file_write(ctx: ToolContext, args: FileWriteArgs) -> FileWritten:
    """Create or replace a file on a node atomically, never through a symlink, keeping owner
    and mode unless mode is set. dry_run shows the diff; expected_sha256 guards against
    concurrent edits."""
    node, path = _planned(ctx)
    assert ctx.plan is not None
    # Apply exactly the change that was planned (and maybe confirmed): the content the
    # diff was made against must still be there.
    shown = next(c.before for c in ctx.plan.changes if c.field == "sha256")
    before_sha256 = shown
    hidden = isinstance(shown, str) and shown.startswith(_HIDDEN)
    # The content replaced, for the evidence store (the full diff a reviewer reads).
    current = await ctx.read_current(node, args.path, canonical=path) if shown else None
    if hidden:
        # The plan holds a stand-in: the content must still be the one it stands for.
        if _shown_sha(current, readable=False) != shown:
            raise ToolFailure(
                "precondition_failed",
                f"{path} changed since the write was planned; nothing was written",
                hint="Plan the write again.",
            )
        before_sha256 = sha256_of(current)
    written = await ctx.write_file(
        node,
        args.path,
        args.data,
        canonical=path,
        mode=int(args.mode, 8) if args.mode else None,
        before_sha256=before_sha256,
    )
    _keep_contents(ctx, path, current if sha256_of(current) == written.before_sha256 else None)
    return FileWritten(
        node=node,
        path=written.path,
        size=written.size,
        sha256=written.sha256,
        mode=f"{written.mode:04o}",
        created=written.created,
        before_sha256=None if hidden else written.before_sha256,
    )


TOOLS = (file_read, file_write)
