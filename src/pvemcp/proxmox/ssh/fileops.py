"""Files on a node: canonical paths, a built-in deny list, capped reads and atomic writes,
done by a small Perl program run over the SSH channel so no symlink is ever followed
that the gateway did not judge.

Policy judges file access by path, so the path it sees must be the one the node touches.
SFTP (v3) cannot promise that: its `realpath` fails on long symlink chains and long
expansions (the rest of the path was then taken as text), and its path operations follow
a symlink swapped in between the check and the use. So every operation runs
`fileops.pl` on the node (`perl -e <script> -- OP ARGS`; Perl is part of every Proxmox VE
host, which is written in it), through the same `SshPool.run` as commands, under the
command timeout:

- `resolve` canonicalises the path component by component (lstat, readlink, at most 40
  links like the kernel); only components whose lstat says ENOENT below an existing
  directory are appended as given, any other failure refuses (`path_refused`);
- `read` and `write` resolve the requested path again in the same run and insist it
  still leads to the canonical path policy allowed, then walk that path from `/` with
  every directory opened `O_NOFOLLOW|O_DIRECTORY` and entered with `fchdir`, open the
  file `O_NOFOLLOW`, and check it is the object just resolved (device and inode). A
  component swapped for a symlink meanwhile makes the call fail instead of being followed;
- a write creates its temporary file `O_CREAT|O_EXCL|O_NOFOLLOW` in the directory it holds
  open (its cwd), writes, gives it the replaced file's owner and the planned mode through
  the descriptor, fsyncs, checks the target is still the content the write was planned
  against, and renames within that directory; any failure removes the temporary file.

What remains open (hard links, directory renames, privileged users) is in docs/ssh.md.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.resources import files
from typing import TYPE_CHECKING, Literal

from pvemcp.proxmox.errors import SshError, SshTimeout
from pvemcp.proxmox.ssh.command import printable
from pvemcp.proxmox.ssh.result import CommandResult

if TYPE_CHECKING:
    from pvemcp.proxmox.ssh.pool import SshPool

DENIED: tuple[str, ...] = (
    "/etc/pve/priv",
    "/etc/pve/pve-www.key",
    "/etc/pve/nodes/*/pve-ssl.key",
    "/etc/pve/nodes/*/pveproxy-ssl.key",
    "/etc/corosync/authkey",
    "/etc/ssh/ssh_host_*_key",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/etc/ssh/authorized_keys",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/var/lib/pve-cluster",
)
"""Paths no file tool touches, nor anything below them: cluster, corosync and API private
keys (and `/var/lib/pve-cluster`, whose config.db is the database behind all of
`/etc/pve`, private keys and token secrets included), what decides who logs in over SSH
and who becomes root (sshd's configuration and its central authorized keys, sudoers),
and password hashes."""

DENIED_NAMES: tuple[str, ...] = (".ssh",)
"""Components that deny a path wherever they appear: every user's SSH directory, service
users' (`/var/lib/*/.ssh`, `/srv/*/.ssh`) included, holds the keys that would let a write
grant itself a login."""

MAX_PATH = 4096
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
HELPER = files("pvemcp.proxmox.ssh").joinpath("fileops.pl").read_text(encoding="utf-8")
"""The Perl program every file operation runs on the node (sent as `perl -e` text)."""
_HELPER_FAILED = 3
"""The helper's exit status for a refusal it explains on stderr (`CODE NUL MESSAGE`)."""
_NO_PROGRAM = 127

FileKind = Literal["file", "directory", "symlink", "other"]
_KINDS: dict[str, FileKind] = {
    "file": "file",
    "directory": "directory",
    "symlink": "symlink",
    "other": "other",
}


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


class Unresolvable(PathRefused):
    """The node cannot tell where the path leads (a symlink loop, more than 40 links, a
    name too long, no permission to look): refused, since policy would judge one path
    while the kernel opened another."""

    hint = (
        "Name the file by a path without long symlink chains that the SSH user can look "
        "up, or ask an operator to fix the links on the node."
    )


class PathChanged(RemoteFileError):
    """The path leads somewhere else, or a component was replaced, since it was judged."""

    code = "path_changed"
    hint = "Call again to plan (and be allowed) on the current path."


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


_ERRORS: dict[str, type[RemoteFileError]] = {
    "file_error": RemoteFileError,
    "path_refused": PathRefused,
    "unresolvable": Unresolvable,
    "path_changed": PathChanged,
    "not_found": RemoteFileNotFound,
    "file_too_large": FileTooLarge,
    "precondition_failed": FileChanged,
}
"""The helper's failure codes and the errors they raise."""


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
    for name in DENIED_NAMES:
        if name in parts:
            return f"any {name} directory"
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
    """Of the object at `canonical`, when there is one."""
    mode: int | None = None
    """Permission bits with set-uid, set-gid and sticky (`0o4755`) of that object."""
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


def _refuse_denied(node: str, *paths: str) -> None:
    for path in paths:
        entry = denied(path)
        if entry is not None:
            raise PathRefused(
                f"node {node}: {path} is covered by the built-in deny list ({entry}), which "
                "no policy can open",
                node=node,
            )


def _int(field: str) -> int | None:
    return int(field) if field else None


@dataclass
class NodeFiles:
    """The file operations on one node; `last` is the helper run that did the latest one
    (who ran it, on which host key), for the audit record."""

    pool: SshPool
    node: str
    max_bytes: int
    last: CommandResult | None = None

    async def _run(self, op: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run the helper's `op`; its stdout, or the error it names."""
        node = self.node
        argv = ["perl", "-e", HELPER, "--", op, *args]
        try:
            result = await self.pool.run(node, argv, stdin=stdin)
        except SshTimeout as exc:
            self.last = exc.result
            raise
        self.last = result
        if result.capture_truncated:
            raise RemoteFileError(
                f"node {node}: the helper's answer is larger than ssh.artifact_max_bytes, "
                "which the gateway reads at most; keep ssh.file_max_bytes below it",
                node=node,
            )
        if result.exit_code == 0:
            return result.stdout
        if result.exit_code == _HELPER_FAILED and b"\0" in result.stderr:
            code, _, message = result.stderr.partition(b"\0")
            error = _ERRORS.get(code.decode("ascii", errors="replace"), RemoteFileError)
            raise error(f"node {node}: {printable(message)}", node=node)
        if result.exit_code == _NO_PROGRAM:
            raise RemoteFileError(
                f"node {node}: perl is not on the SSH user's PATH; the file tools need it "
                "(every Proxmox VE node has it)",
                node=node,
            )
        raise RemoteFileError(
            f"node {node}: the file helper failed (exit {result.exit_code}, signal "
            f"{result.signal}): {printable(result.stderr[:500].strip()) or 'no message'}",
            node=node,
        )

    async def resolve(self, path: str) -> ResolvedPath:
        """Canonicalise `path` on the node and describe what is there.

        Raises `PathRefused` for a malformed path or one on the deny list (requested or
        canonical), `Unresolvable` when the node cannot say where it leads.
        """
        node = self.node
        problem = _path_problem(path)
        if problem is not None:
            raise PathRefused(f"node {node}: path {path[:200]!r} {problem}", node=node)
        _refuse_denied(node, path)
        answer = (await self._run("resolve", path)).decode("utf-8", errors="surrogateescape")
        canonical, kind, size, mode, uid, gid = answer.split("\0")
        if _path_problem(canonical) is not None:
            raise Unresolvable(f"node {node}: {path} cannot be resolved on the node", node=node)
        _refuse_denied(node, canonical)
        return ResolvedPath(
            requested=path,
            canonical=canonical,
            kind=_KINDS.get(kind),
            size=_int(size),
            mode=_int(mode),
            uid=_int(uid),
            gid=_int(gid),
        )

    async def read(self, path: str, canonical: str) -> bytes:
        """The content of the regular file `path` leads to, which must still be
        `canonical` (what policy allowed), at most `max_bytes`.

        Raises `PathChanged`, `RemoteFileNotFound`, `PathRefused` (not a regular file),
        `FileTooLarge`.
        """
        _refuse_denied(self.node, path, canonical)
        return await self._run("read", path, canonical, str(self.max_bytes))

    async def write(
        self,
        path: str,
        canonical: str,
        data: bytes,
        *,
        mode: int | None,
        before_sha256: str | None,
    ) -> Written:
        """Replace (or create) the file `path` leads to, which must still be `canonical`,
        with `data`, atomically; an existing file keeps its owner and group.

        `mode` None keeps the replaced file's permissions without set-uid, set-gid and
        sticky (`4755` becomes `0755`: new content is not the program someone made
        set-uid), 0644 for a new file. `before_sha256` is the content the write was planned
        against (None: no file may exist); anything else there refuses with `FileChanged`.
        Nothing is left behind on failure: the temporary file is removed, the target is
        untouched.
        """
        node = self.node
        _refuse_denied(node, path, canonical)
        if len(data) > self.max_bytes:
            raise FileTooLarge(
                f"node {node}: the new content has {len(data)} bytes, more than the "
                f"{self.max_bytes} allowed",
                node=node,
            )
        name = canonical.rsplit("/", 1)[1]
        temp = f".{name[:200]}.pvemcp-{secrets.token_hex(6)}.tmp"
        answer = await self._run(
            "write",
            path,
            canonical,
            "keep" if mode is None else f"{mode:04o}",
            before_sha256 or "absent",
            temp,
            str(self.max_bytes),
            stdin=data,
        )
        status, before, bits = answer.decode("ascii").split("\0")
        return Written(
            path=canonical,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            mode=int(bits, 8),
            created=status == "created",
            before_sha256=before or None,
        )
