"""Credentials from a TOML or JSON file that only its owner can read.

The permission check runs on the opened file descriptor (no race with a chmod or a swap
between check and read) and refuses any group or other bit, with the `chmod` that fixes it.
Symlinks are followed, as Kubernetes secret volumes and systemd credentials use them.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import anyio

from pvemcp.secrets.models import FileCredentials
from pvemcp.secrets.source import SecretSource
from pvemcp.secrets.types import (
    ClusterCredentials,
    SecretSourceError,
    credentials_from_mapping,
    warn_unknown_keys,
)

MAX_BYTES = 1024 * 1024


def read_private_file(path: Path, what: str) -> bytes:
    """Read a small file that must not be readable by group or others.

    `what` names the file's role in messages ("credentials file", "Vault token file").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise SecretSourceError(
            f"{what} {path} does not exist; create it (mode 600) or fix the configured path"
        ) from None
    except PermissionError:
        raise SecretSourceError(
            f"{what} {path} cannot be read by this process (permission denied); make the "
            "gateway's user its owner (chown) and keep mode 600"
        ) from None
    except OSError as exc:
        raise SecretSourceError(f"{what} {path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretSourceError(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretSourceError(
                f"{what} {path} is accessible by group or others (mode {mode:04o}); "
                f"refusing to read a secret others can read. Fix: chmod 600 {path}"
            )
        if info.st_size > MAX_BYTES:
            raise SecretSourceError(f"{what} {path} is larger than {MAX_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_BYTES:
                raise SecretSourceError(f"{what} {path} is larger than {MAX_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise SecretSourceError(f"{what} {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def parse_document(raw: bytes, path: Path, fmt: str) -> dict[str, Any]:
    """Parse TOML or JSON; errors give the position, never the text around it."""
    kind = fmt if fmt != "auto" else ("json" if path.suffix.lower() == ".json" else "toml")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretSourceError(
            f"credentials file {path} is not UTF-8 text (byte {exc.start})"
        ) from None
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # exc.msg is the parser's phrase; str(exc) would be the same plus the position.
            raise SecretSourceError(
                f"credentials file {path} is not valid JSON: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(data, dict):
            raise SecretSourceError(f"credentials file {path} must hold a JSON object")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages name the problem and position ("Invalid value (at line 2,
        # column 16)"), never the document's text.
        raise SecretSourceError(f"credentials file {path} is not valid TOML: {exc}") from None


class FileSource(SecretSource):
    kind = "file"
    refreshable = True

    def __init__(self, name: str, config: FileCredentials, *, fallback_token_id: str | None):
        self._name = name
        self._config = config
        self._path = config.path.expanduser()
        self._fallback = fallback_token_id
        self.refresh_interval = config.refresh_interval

    def describe(self) -> str:
        return f"file {self._path}"

    def _load_sync(self) -> ClusterCredentials:
        raw = read_private_file(self._path, "credentials file")
        data = parse_document(raw, self._path, self._config.format)
        unknown: list[str] = []
        credentials = credentials_from_mapping(
            data,
            where=f"credentials file {self._path}",
            fallback_token_id=self._fallback,
            origin=self.describe(),
            unknown=unknown,
        )
        warn_unknown_keys(self._name, self.describe(), unknown)
        return credentials

    async def load(self) -> ClusterCredentials:
        return await anyio.to_thread.run_sync(self._load_sync)
