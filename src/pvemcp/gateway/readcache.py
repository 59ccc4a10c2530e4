"""A short-lived cache of the API reads that read-tier tools make, one per cluster.

Why: agents call the same reads (a node's status, the guest list) many times a minute,
often several at once, and every Proxmox API request costs the cluster a pveproxy worker
and the gateway a TLS round trip. Two things cut that without serving anything a caller
could not have got a moment earlier:

- *Coalescing*: identical GETs in flight at the same time share one request.
- *Freshness window*: a successful answer is reused for `ttl` seconds (the cluster's
  `read_cache_ttl`; 0 keeps only the coalescing).

What keeps it honest:
- Only read-tier tools use it. Planners, risky tools and task polling read fresh, so
  policy always decides on current state and a wait never sees an old task status.
- Any risky call on the cluster empties the cache when it finishes (and so does a task
  wait), and a generation number keeps an answer fetched before that out of the cache.
- Errors are never cached; each caller coalesced onto a failed request gets the error.
- Bounded: at most `max_entries` answers; the oldest go first.

- Keyed by the PVE identity too: a caller mapped to its own API token
  (`[[clusters.NAME.identities]]`) may see less (PVE filters lists by the token's rights)
  or be refused, so an answer is only ever reused, or shared in flight, for calls of the
  same identity mapping sent with the same token id (`scope`). Invalidation stays per
  cluster: a change made through any token changes what every token reads.

Callers must treat what they get as read-only: it is shared with other calls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from pvemcp.proxmox.backend import ApiResult, Params

MAX_ENTRIES = 512
"""Answers kept per cluster: far more distinct reads than agents make within a window."""

Key = tuple[str, str, tuple[tuple[str, str], ...]]


def cache_key(path: str, params: Params | None, scope: str = "") -> Key:
    """The identity of a GET: the PVE identity it is sent with (`scope`: identity mapping
    and token id), its path and its parameters in a fixed order."""
    items = tuple(sorted((name, repr(value)) for name, value in (params or {}).items()))
    return scope, path, items


@dataclass(eq=False)
class _Flight:
    """One GET in progress that later callers wait on instead of sending their own."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: ApiResult | None = None
    error: BaseException | None = None


class ReadCache:
    """Coalesced, briefly cached GETs for one cluster (see the module docstring)."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._answers: dict[Key, tuple[float, ApiResult]] = {}
        self._flights: dict[Key, _Flight] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._answers)

    def invalidate(self) -> None:
        """Forget every answer, and keep any GET already in flight out of the cache:
        something on the cluster has (or may have) changed."""
        self._answers.clear()
        self._flights.clear()
        self._generation += 1

    async def get(
        self,
        path: str,
        params: Params | None,
        fetch: Callable[[], Awaitable[ApiResult]],
        *,
        scope: str = "",
    ) -> ApiResult:
        """The answer to `GET path params` sent with the PVE identity `scope` names: a fresh
        cached one, a shared in-flight one, or one `fetch()` makes now."""
        key = cache_key(path, params, scope)
        while True:
            cached = self._answers.get(key)
            if cached is not None:
                if self._clock() < cached[0]:
                    self.hits += 1
                    return cached[1]
                del self._answers[key]
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.result is not None:
                self.hits += 1
                return flight.result
            if flight.error is not None:
                raise flight.error
            # The caller that sent it was cancelled: try again (one of us sends it now).
        self.misses += 1
        return await self._fetch(key, fetch)

    async def _fetch(self, key: Key, fetch: Callable[[], Awaitable[ApiResult]]) -> ApiResult:
        flight = _Flight()
        self._flights[key] = flight
        generation = self._generation
        try:
            flight.result = await fetch()
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()
        if self.ttl > 0 and generation == self._generation:
            if len(self._answers) >= self._max_entries:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = (self._clock() + self.ttl, flight.result)
        return flight.result
