"""Artifacts: tool output too large to return inline, kept for a while for its caller only.

A command's stdout can be megabytes; a model's context cannot take that, and truncating
without a way to get the rest loses what the operator may need. So the gateway returns
the first `output_cap` bytes inline and keeps the whole capture here, under an
unguessable id served as the MCP resource `pvemcp://artifacts/{id}`.

An artifact is readable only by the principal whose call produced it: anyone else gets
"not found", exactly as for an id that never existed, so ids cannot be probed. Artifacts
expire after their TTL (`ssh.artifact_ttl`) and the store keeps at most `max_total_bytes`,
dropping the oldest first. They live in this process's memory only: a restart or another
replica behind a load balancer does not have them (the audit record keeps their hashes).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pvemcp.policy.principal import Principal

URI_PREFIX = "pvemcp://artifacts/"
DEFAULT_MAX_TOTAL_BYTES = 256 * 1024 * 1024

_Owner = tuple[bool, str | None, str, str | None]


def _owner(principal: Principal) -> _Owner:
    """Who may read an artifact: the same local operator, or the same token subject from
    the same issuer and client."""
    return (principal.is_local, principal.issuer, principal.subject, principal.client_id)


@dataclass(frozen=True, slots=True)
class Artifact:
    id: str
    data: bytes
    expires: float
    owner: _Owner

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.id


class ArtifactStore:
    """In-memory artifacts with an owner, a TTL and a total size cap. Thread-safe."""

    def __init__(
        self,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._items: OrderedDict[str, Artifact] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, owner: Principal, data: bytes, *, ttl: float) -> Artifact | None:
        """Keep `data` for `owner` for `ttl` seconds; None when it alone exceeds the cap."""
        if len(data) > self.max_total_bytes:
            return None
        artifact = Artifact(
            id=secrets.token_urlsafe(18),
            data=data,
            expires=self._clock() + ttl,
            owner=_owner(owner),
        )
        with self._lock:
            self._expire()
            while self._items and self._size + len(data) > self.max_total_bytes:
                self._drop(next(iter(self._items)))
            self._items[artifact.id] = artifact
            self._size += len(data)
        return artifact

    def get(self, reader: Principal, artifact_id: str) -> Artifact | None:
        """The artifact if it exists, has not expired and `reader` produced it."""
        with self._lock:
            self._expire()
            found = self._items.get(artifact_id)
        if found is None or found.owner != _owner(reader):
            return None
        return found

    def _expire(self) -> None:
        now = self._clock()
        for artifact_id in [key for key, item in self._items.items() if item.expires <= now]:
            self._drop(artifact_id)

    def _drop(self, artifact_id: str) -> None:
        removed = self._items.pop(artifact_id)
        self._size -= len(removed.data)
