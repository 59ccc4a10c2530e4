"""Snippet files (cloud-init user data) read and written as typed tools, over SSH.

PVE's API lists and deletes snippets (proxmox_storage_content, _volume_delete) but can
neither read nor write their text (`upload` takes iso, vztmpl and import only), so these
tools use the node's file helper (`pvemcp.proxmox.ssh.fileops`) as the escape file tools
do, with the same symlink-safe resolution, atomic replacement and caps. Unlike those tools
they are confined: the storage must hold `snippets` (its config, as PVE checks), the name
is a plain file name, and the canonical path must be exactly `<storage path>/snippets/
<name>` with the storage path itself resolved on the node: a symlinked snippets directory
or file is refused. That confinement is why reading one is the read tier. A cluster
without `[ssh]` gets `ssh_not_configured`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field, model_validator

from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyRequest
from pvemcp.tools.files import as_text, sha256_of, text_diff
from pvemcp.tools.kit import (
    Change,
    NodeName,
    Plan,
    StorageId,
    Target,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    WriteInput,
    matching,
    node_or_default,
    tool,
)
from pvemcp.tools.storage import storage_config

MAX_BYTES = 64 * 1024
"""Cloud-init user data is small; a larger snippet is for the escape file tools."""
NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"

SnippetName = Annotated[
    str,
    matching(NAME, "a plain file name ([A-Za-z0-9._-], not starting with a dot)"),
    Field(max_length=255, description="File name in the snippets directory."),
]


class SnippetArgs(ToolInput):
    node: NodeName | None = None
    storage: StorageId
    name: SnippetName


class Snippet(ToolOutput):
    node: str
    volid: str
    path: str
    size: int
    sha256: str
    content: str
    truncated: bool = False
    artifact: str | None = None
    """The whole file, when `content` is cut."""


async def _snippet_path(ctx: ToolContext, node: str, storage: str, name: str) -> tuple[str, bool]:
    """The canonical path of snippet `name` on `storage` and whether it exists; refused when
    the storage holds no snippets or the path leaves its snippets directory."""
    config = await storage_config(ctx, storage, "storage")
    if "snippets" not in config.content.split(",") or config.path is None:
        raise ToolFailure(
            "invalid_argument",
            f"storage {storage!r} does not hold snippets",
            field="storage",
            hint="Choose a file storage whose content includes snippets (proxmox_storage_list "
            "content=snippets).",
        )
    base = (await ctx.resolve_path(node, config.path)).canonical
    configured = f"{config.path.rstrip('/')}/snippets"
    directory = await ctx.resolve_path(node, configured)
    if directory.kind is None:
        raise ToolFailure(
            "not_found",
            f"storage {storage!r} has no snippets directory on node {node} ({configured})",
            field="storage",
            hint="PVE makes it when the storage is activated with content snippets; or "
            "choose another storage.",
        )
    wanted = f"{base.rstrip('/')}/snippets/{name}"
    resolved = await ctx.resolve_path(node, f"{configured}/{name}")
    if (
        directory.kind != "directory"
        or resolved.canonical != wanted
        or resolved.kind not in (None, "file")
    ):
        raise ToolFailure(
            "path_refused",
            f"{storage}:snippets/{name} leads to {resolved.canonical}, not a file in "
            f"{base}/snippets",
            field="name",
            hint="Snippets are regular files in the storage's snippets directory, never "
            "reached through a symlink.",
        )
    return wanted, resolved.exists


@tool(
    "proxmox_snippet_read",
    title="Read a snippet file",
    tier=Tier.READ,
    toolset="storage",
    input=SnippetArgs,
    output=Snippet,
    api=["GET /storage/{storage}"],
    rejects=[
        ({"storage": "local", "name": "../x.yaml"}, "invalid_argument"),
        ({"storage": "local", "name": ".hidden"}, "invalid_argument"),
        ({"storage": "local-lvm", "name": "u.yaml"}, "invalid_argument"),
    ],
)
async def snippet_read(ctx: ToolContext, args: SnippetArgs) -> Snippet:
    """Read a snippet (cloud-init user data) of a storage, over SSH. Only regular files in
    its snippets directory; list snippets with proxmox_storage_content content=snippets."""
    node = node_or_default(ctx, args.node)
    path, exists = await _snippet_path(ctx, node, args.storage, args.name)
    if not exists:
        raise ToolFailure(
            "not_found",
            f"{args.storage}:snippets/{args.name} does not exist on node {node}",
            field="name",
            hint="List snippets with proxmox_storage_content content=snippets.",
        )
    data = await ctx.read_file(node, path, canonical=path)
    text = as_text(data)
    if text is None:
        raise ToolFailure(
            "invalid_content",
            f"{path} is not UTF-8 text",
            field="name",
            hint="A binary file is read with proxmox_file_read (escape toolset).",
        )
    cap = ctx.output_limits.output_cap
    return Snippet(
        node=node,
        volid=f"{args.storage}:snippets/{args.name}",
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content=data[:cap].decode("utf-8", errors="ignore"),
        truncated=len(data) > cap,
        artifact=ctx.keep_artifact(data) if len(data) > cap else None,
    )


class SnippetWriteArgs(WriteInput, SnippetArgs):
    content: Annotated[str, Field(description="The file's new text (UTF-8, up to 64 KiB).")]
    expected_sha256: Annotated[
        str | None,
        matching(r"[0-9a-fA-F]{64}", "a SHA-256 in hex"),
        Field(description="Replace only if the current content has this SHA-256."),
    ] = None

    @model_validator(mode="after")
    def _small_text(self) -> SnippetWriteArgs:
        size = len(self.content.encode("utf-8"))
        if size > MAX_BYTES:
            raise ValueError(f"content has {size} bytes, more than {MAX_BYTES}")
        if as_text(self.content.encode("utf-8")) is None:
            raise ValueError("content has control characters (only tab and newlines)")
        return self


class SnippetWritten(ToolOutput):
    node: str
    volid: str
    path: str
    size: int
    sha256: str
    created: bool
    before_sha256: str | None = None
    use: str
    """How a VM uses it as cloud-init user data."""


def _may_read(ctx: ToolContext, node: str, path: str) -> bool:
    """Whether policy lets this caller read the snippet at `path` outright: a replace's plan
    shows the current content (diff, hash), which a write grant alone must not reveal."""
    view = ctx.policy_view
    if view is None:
        return False
    asked = PolicyRequest(
        tool="proxmox_snippet_read",
        tier=Tier.READ,
        cluster=ctx.cluster_name,
        node=node,
        paths=(path,),
    )
    return view.decide(asked).effect is Effect.ALLOW


async def _plan_write(ctx: ToolContext, args: SnippetWriteArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    path, exists = await _snippet_path(ctx, node, args.storage, args.name)
    # Policy decides on the canonical path before its content is read for the diff.
    ctx.authorize(node, [path])
    if exists and not _may_read(ctx, node, path):
        raise ToolFailure(
            "denied",
            f"policy does not let this caller read {args.storage}:snippets/{args.name}, "
            "so it may not replace it (the plan would show its content)",
            field="name",
            hint="Write a new snippet under another name, or ask an operator to allow "
            "proxmox_snippet_read.",
        )
    before = await ctx.read_current(node, path, canonical=path) if exists else None
    if args.expected_sha256 is not None and sha256_of(before) != args.expected_sha256.lower():
        raise ToolFailure(
            "precondition_failed",
            f"{path} does not have the expected content (sha256 {sha256_of(before) or 'no file'}); "
            "nothing was written",
            field="expected_sha256",
            hint="Read the snippet again, apply the change to its current content, then retry.",
        )
    after = args.content.encode("utf-8")
    volid = f"{args.storage}:snippets/{args.name}"
    warnings = [] if before is None else [f"replaces {volid}: guests using it get the new text"]
    return Plan(
        summary=f"{'replace' if before is not None else 'create'} {volid} ({path}) on node "
        f"{node} ({len(after)} bytes, atomic)",
        changes=[
            Change(
                field="size", before=len(before) if before is not None else None, after=len(after)
            ),
            Change(field="sha256", before=sha256_of(before), after=sha256_of(after)),
        ],
        target=Target(node=node),
        paths=[path],
        diff=text_diff(path, before, after),
        warnings=warnings,
    )


@tool(
    "proxmox_snippet_write",
    title="Write a snippet file",
    tier=Tier.WRITE,
    toolset="storage",
    input=SnippetWriteArgs,
    output=SnippetWritten,
    planner=_plan_write,
    api=["GET /storage/{storage}"],
    rejects=[
        ({"storage": "local", "name": "a/b.yaml", "content": "x"}, "invalid_argument"),
        ({"storage": "local", "name": "..", "content": "x"}, "invalid_argument"),
        ({"storage": "local-lvm", "name": "u.yaml", "content": "x"}, "invalid_argument"),
        ({"storage": "nope", "name": "u.yaml", "content": "x"}, "not_found"),
    ],
)
async def snippet_write(ctx: ToolContext, args: SnippetWriteArgs) -> SnippetWritten:
    """Create or replace a snippet (cloud-init user data) atomically over SSH; dry_run shows
    the diff, expected_sha256 guards a replace. Use it via cicustom user=<volid>."""
    plan = ctx.plan
    assert plan is not None, "the gateway plans every write"
    assert plan.target.node is not None
    node, path = plan.target.node, plan.paths[0]
    before = next(c.before for c in plan.changes if c.field == "sha256")
    written = await ctx.write_file(
        node,
        path,
        args.content.encode("utf-8"),
        canonical=path,
        mode=None,
        before_sha256=before if isinstance(before, str) else None,
    )
    volid = f"{args.storage}:snippets/{args.name}"
    return SnippetWritten(
        node=node,
        volid=volid,
        path=written.path,
        size=written.size,
        sha256=written.sha256,
        created=written.created,
        before_sha256=written.before_sha256,
        use=f"proxmox_guest_config_update with cicustom 'user={volid}'",
    )


TOOLS = (snippet_read, snippet_write)
