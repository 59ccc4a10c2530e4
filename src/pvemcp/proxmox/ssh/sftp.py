"""Files on a node over SFTP: canonical paths, a built-in deny list, capped reads and
atomic writes.

Policy judges file access by path, so the path it sees must be the one the node will
touch: `resolve_path` canonicalises on the node (SFTP `realpath`, which resolves every
symlink; for a path that does not exist yet, the nearest existing ancestor plus the rest)
and the gateway decides on that. A few paths are refused here whatever policy says
(`DENIED`): cluster secrets, SSH keys, password hashes.

SFTP (v3) has no `O_NOFOLLOW`, so the rules are built from what it has:
- reads `lstat` the canonical path (a regular file, not a symlink), open it, and check the
  handle's `fstat` agrees (type and size) before reading at most the cap;
- writes refuse a symlink at the final component, write a temporary file in the same
  directory opened with `O_CREAT|O_EXCL` (never follows or reuses anything), fsync it,
  set mode and owner, re-check the directory and the expected content, then
  `posix-rename` it over the target: readers see the old file or the new one, never a
  half-written one, and a failure removes the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import secrets
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import anyio
import asyncssh

from pvemcp.proxmox.errors import SshError
from pvemcp.proxmox.ssh.pool import SftpSession

DENIED: tuple[str, ...] = (
    "/etc/pve/priv",
    "/etc/pve/pve-www.key",
    "/etc/pve/nodes/*/pve-ssl.key",
    "/etc/pve/nodes/*/pveproxy-ssl.key",
    "/root/.ssh",
    "/home/*/.ssh",
    "/etc/ssh/ssh_host_*_key",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/var/lib/pve-cluster",
)
"""Paths no file tool touches, nor anything below them: cluster and API private keys (and
`/var/lib/pve-cluster`, whose config.db is the database behind all of `/etc/pve`, private
keys and token secrets included), the SSH keys that would let a write grant itself a
login, and password hashes."""

MAX_PATH = 4096
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CLEANUP_SECONDS = 5.0

FileKind = Literal["file", "directory", "symlink", "other"]


class RemoteFileError(SshError):
    """A file operation on a node was refused or failed; subclasses name the cause."""

    code = "file_error"
    hint = "Read the message; check the path and the SSH user's permissions on the node."


class PathRefused(RemoteFileError):
    """The path is malformed, on the built-in deny list, or not something files tools handle."""

    code = "path_refused"
    hint = (
        "Use an absolute path without '.', '..', '//' or control characters, to a regular "
        "file outside the built-in deny list (docs/ssh.md)."
    )


class RemoteFileNotFound(RemoteFileError):
    code = "not_found"
    hint = "Check the path on the node (proxmox_cli_run or proxmox_shell_run with ls)."


class FileTooLarge(RemoteFileError):
    code = "file_too_large"
    hint = "The file is above the cluster's ssh.file_max_bytes; read a part with a command."


class FileChanged(RemoteFileError):
    """The file's content is not what the caller expected (`expected_sha256`)."""

    code = "precondition_failed"
    hint = "Read the file again, apply the change to its current content, then retry."


def _path_problem(path: str) -> str | None:
    """Why `path` is not absolute and lexically canonical, or None when it is.

    `.`/`..`/empty components are refused rather than normalised: a caller asking for
    `/srv/../etc/shadow` gets an error, not `/etc/shadow`.
    """
    if not path.startswith("/"):
        return "must be an absolute path"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if _CONTROL_RE.search(path):
        return "contains a control character or NUL"
    if path != "/" and any(part in ("", ".", "..") for part in path[1:].split("/")):
        return "must not contain '.', '..', '//' or a trailing '/'"
    return None


def denied(path: str) -> str | None:
    """The deny-list entry covering `path` (itself or an ancestor), or None."""
    parts = path.strip("/").split("/")
    for entry in DENIED:
        globs = entry.strip("/").split("/")
        if len(parts) >= len(globs) and all(
            fnmatchcase(part, glob) for part, glob in zip(parts, globs, strict=False)
        ):
            return entry
    return None


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A requested path, where it really leads, and what is there now."""

    requested: str
    canonical: str
    """Absolute, symlinks resolved: what policy judges and what is read or replaced."""
    kind: FileKind | None
    """What the final component of `requested` is (not following it); None: nothing."""
    size: int | None = None
    mode: int | None = None
    """Permission bits (`0o644`) of an existing file."""
    uid: int | None = None
    gid: int | None = None

    @property
    def exists(self) -> bool:
        return self.kind is not None


@dataclass(frozen=True, slots=True)
class Written:
    """What a write did."""

    path: str
    size: int
    sha256: str
    mode: int
    created: bool
    before_sha256: str | None


def _kind(attrs: asyncssh.SFTPAttrs) -> FileKind:
    mode = attrs.permissions or 0
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _failure(exc: asyncssh.SFTPError, node: str, path: str, doing: str) -> RemoteFileError:
    """An SFTP status as the error naming its cause."""
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return RemoteFileNotFound(f"node {node}: {path} does not exist", node=node)
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return RemoteFileError(
            f"node {node}: permission denied {doing} {path} for the SSH user", node=node
        )
    return RemoteFileError(f"node {node}: {doing} {path} failed: {exc.reason}", node=node)


async def _lstat(session: SftpSession, path: str) -> asyncssh.SFTPAttrs | None:
    try:
        attrs: asyncssh.SFTPAttrs = await session.client.lstat(path)
    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
        return None
    except asyncssh.SFTPError as exc:
        raise _failure(exc, session.node, path, "examining") from None
    return attrs


async def _realpath(session: SftpSession, path: str) -> str | None:
    try:
        real = await session.client.realpath(path)
    except asyncssh.SFTPError:
        return None
    return str(real)


def _refuse_denied(node: str, *paths: str) -> None:
    for path in paths:
        entry = denied(path)
        if entry is not None:
            raise PathRefused(
                f"node {node}: {path} is covered by the built-in deny list ({entry}), which "
                "no policy can open",
                node=node,
            )


async def resolve_path(session: SftpSession, path: str) -> ResolvedPath:
    """Canonicalise `path` on the node and describe what is there.

    The longest prefix the node can `realpath` is resolved and the remaining components
    (which do not exist, so cannot be symlinks) are appended. Raises `PathRefused` for a
    malformed path or one on the deny list (requested or canonical).
    """
    node = session.node
    problem = _path_problem(path)
    if problem is not None:
        raise PathRefused(f"node {node}: path {path[:200]!r} {problem}", node=node)
    _refuse_denied(node, path)
    parts = [part for part in path.split("/") if part]
    canonical: str | None = None
    for cut in range(len(parts), -1, -1):
        real = await _realpath(session, "/" + "/".join(parts[:cut]))
        if real is not None:
            canonical = posixpath.join(real, *parts[cut:])
            break
    if canonical is None or _path_problem(canonical) is not None:
        raise PathRefused(f"node {node}: {path} cannot be resolved on the node", node=node)
    _refuse_denied(node, canonical)
    attrs = await _lstat(session, path)
    if attrs is None:
        return ResolvedPath(path, canonical, None)
    return ResolvedPath(
        requested=path,
        canonical=canonical,
        kind=_kind(attrs),
        size=attrs.size,
        mode=stat.S_IMODE(attrs.permissions or 0),
        uid=attrs.uid,
        gid=attrs.gid,
    )


async def read_file(session: SftpSession, resolved: ResolvedPath, max_bytes: int) -> bytes:
    """The content of the regular file at `resolved.canonical`, at most `max_bytes`.

    Raises `RemoteFileNotFound`, `PathRefused` (not a regular file), `FileTooLarge`.
    """
    node, path = session.node, resolved.canonical
    attrs = await _lstat(session, path)
    if attrs is None:
        raise RemoteFileNotFound(f"node {node}: {resolved.requested} does not exist", node=node)
    if _kind(attrs) != "file":
        raise PathRefused(f"node {node}: {path} is a {_kind(attrs)}, not a file", node=node)
    _check_size(node, path, attrs.size, max_bytes)
    try:
        async with session.client.open(path, "rb") as handle:
            opened = await handle.stat()
            if _kind(opened) != "file" or opened.size != attrs.size:
                raise RemoteFileError(
                    f"node {node}: {path} changed while it was opened; try again", node=node
                )
            data: bytes = await handle.read(max_bytes + 1)
    except asyncssh.SFTPError as exc:
        raise _failure(exc, node, path, "reading") from None
    _check_size(node, path, len(data), max_bytes)
    return data


def _check_size(node: str, path: str, size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise FileTooLarge(
            f"node {node}: {path} has {size} bytes, more than the {max_bytes} allowed",
            node=node,
        )


async def write_file(
    session: SftpSession,
    resolved: ResolvedPath,
    data: bytes,
    *,
    mode: int | None,
    expected_sha256: str | None,
    max_bytes: int,
) -> Written:
    """Replace (or create) the file at `resolved.canonical` with `data`, atomically.

    `mode` None keeps an existing file's mode (new files get 0644); an existing file keeps
    its owner and group. `expected_sha256` (hex) refuses the write with `FileChanged`
    unless the current content has that hash (a missing file never matches). Nothing is
    left behind on failure: the temporary file is removed, the target is untouched.
    """
    node, path = session.node, resolved.canonical
    _check_size(node, path, len(data), max_bytes)
    directory, name = posixpath.split(path)
    before = await _current(session, resolved, max_bytes)
    _check_expected(node, path, before, expected_sha256)
    if mode is None:
        mode = resolved.mode if resolved.mode is not None else 0o644
    temp = posixpath.join(directory, f".{name}.pvemcp-{secrets.token_hex(6)}.tmp")
    client = session.client
    try:
        handle = await client.open(temp, "xb", asyncssh.SFTPAttrs(permissions=0o600))
    except asyncssh.SFTPError as exc:
        raise _failure(exc, node, directory, "creating a temporary file in") from None
    try:
        async with handle:
            await handle.write(data)
            await _fsync(handle)
            await _set_attributes(session, handle, mode, resolved)
        # What was checked at the start must still hold just before the switch.
        again = await resolve_path(session, resolved.requested)
        if again.canonical != path or await _current(session, again, max_bytes) != before:
            raise FileChanged(f"node {node}: {path} changed during the write", node=node)
        await client.posix_rename(temp, path)
    except BaseException as exc:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_CLEANUP_SECONDS),
            contextlib.suppress(asyncssh.SFTPError),
        ):
            await client.remove(temp)
        if isinstance(exc, asyncssh.SFTPError):
            raise _failure(exc, node, path, "writing") from None
        raise
    return Written(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        mode=mode,
        created=before is None,
        before_sha256=hashlib.sha256(before).hexdigest() if before is not None else None,
    )


async def _current(session: SftpSession, resolved: ResolvedPath, max_bytes: int) -> bytes | None:
    """The content a write would replace (None: no file); refuses what it cannot replace."""
    node = session.node
    if resolved.kind == "symlink":
        raise PathRefused(
            f"node {node}: {resolved.requested} is a symlink; files tools never write "
            f"through one (write its target, {resolved.canonical}, if policy allows)",
            node=node,
        )
    if resolved.kind is None:
        return None
    if resolved.kind != "file":
        raise PathRefused(
            f"node {node}: {resolved.requested} is a {resolved.kind}, not a file", node=node
        )
    return await read_file(session, resolved, max_bytes)


def _check_expected(node: str, path: str, current: bytes | None, expected: str | None) -> None:
    if expected is None:
        return
    actual = hashlib.sha256(current).hexdigest() if current is not None else None
    if actual != expected.lower():
        shown = actual or "no file"
        raise FileChanged(
            f"node {node}: {path} is not the expected content (sha256 {shown}, expected "
            f"{expected.lower()}); nothing was written",
            node=node,
        )


async def _fsync(handle: asyncssh.SFTPClientFile) -> None:
    """Flush to disk before the rename (OpenSSH's fsync@openssh.com), where offered."""
    with contextlib.suppress(asyncssh.SFTPOpUnsupported):
        await handle.fsync()


async def _set_attributes(
    session: SftpSession, handle: asyncssh.SFTPClientFile, mode: int, resolved: ResolvedPath
) -> None:
    """Give the open temporary file the final mode and the replaced file's owner and group
    (through its handle, so nothing can swap the path in between)."""
    attrs = await handle.stat()
    if stat.S_IMODE(attrs.permissions or 0) != mode:
        await handle.chmod(mode)
    uid, gid = resolved.uid, resolved.gid
    if uid is not None and gid is not None and (uid, gid) != (attrs.uid, attrs.gid):
        try:
            await handle.chown(uid, gid)
        except asyncssh.SFTPPermissionDenied:
            raise RemoteFileError(
                f"node {session.node}: {resolved.canonical} belongs to uid {uid} gid {gid}, "
                "which the SSH user cannot give the new content; nothing was "
                "written",
                node=session.node,
            ) from None
