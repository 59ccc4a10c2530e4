"""The secrets manager: current credentials per cluster, rotation, degraded start.

- `current(name)` is a plain dict read: callers take the credentials once per request, so a
  call in flight finishes with the credentials it started with while new calls see the new
  ones. A reload replaces the whole `ClusterCredentials` object (an atomic swap).
- Reloads happen on SIGHUP (`install_sighup`), on each source's `refresh_interval`, and when
  Proxmox rejects a token (`after_unauthorized`, at most once per cooldown). Each change is
  logged (`secret_rotated`: which secret, which source, never the value) and reported to
  `on_rotation(cluster, secret_name, source)` for the audit log.
- A source that fails at start does not stop the process: the cluster is not ready, its
  calls fail with "credentials unavailable", and a background task retries with backoff
  until it loads. A later failure keeps the last good credentials.
- Every loaded value joins the redaction set before it is used.
- A cluster's identity mappings (`[[clusters.NAME.identities]]`: a caller's own PVE token)
  are loaded, retried, re-read and rotated exactly as the cluster's own credentials, each
  from its own source; `identity(cluster, mapping)` is None while one cannot be loaded,
  and the caller's calls then fail (they never fall back to the gateway token). A mapping
  that fails does not make its cluster (or the gateway) not ready: only its caller is
  refused.

Use it as `async with SecretsManager(...) as manager:` (or `start()` and `aclose()` from
the same task): it owns a task group for its background work.
"""

from __future__ import annotations

import inspect
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog
from pydantic import SecretStr

from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.source import (
    ClusterLike,
    SecretSource,
    build_identity_source,
    build_source,
)
from pvemcp.secrets.types import ApiToken, ClusterCredentials, SecretSourceError

log = structlog.get_logger(__name__)

RotationCallback = Callable[[str, str, str], Awaitable[None] | None]
"""`on_rotation(cluster, secret_name, source)`: `secret_name` is `token_secret`,
`token_id`, `ssh_private_key`, ... (`identities.MAPPING.token_secret` for an identity
mapping's token); `source` describes where it came from (no value).
Called after the swap, so `manager.version(cluster, secret_name)` is the new version (KV v2).
May be sync or async; an exception is logged, not raised."""


class TokenLike(Protocol):
    @property
    def token_id(self) -> str: ...

    @property
    def secret(self) -> SecretStr: ...


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


@dataclass(slots=True)
class _State:
    name: str
    """The cluster."""
    source: SecretSource
    identity: str | None = None
    """The identity mapping whose token this is; None for the cluster's own credentials."""
    current: ClusterCredentials | None = None
    problem: str | None = None
    generation: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    last_unauthorized_refresh: float = -math.inf
    recovering: bool = False

    @property
    def labels(self) -> dict[str, str]:
        """Log fields naming whose credentials these are."""
        return {"cluster": self.name} | ({"identity": self.identity} if self.identity else {})


class SecretsManager:
    """Credentials for every configured cluster, kept current."""

    def __init__(
        self,
        clusters: Mapping[str, ClusterLike],
        redactor: Redactor,
        *,
        on_rotation: RotationCallback | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        unauthorized_cooldown: float = 10.0,
        load_timeout: float = 30.0,
        sources: Mapping[str, SecretSource] | None = None,
    ) -> None:
        """`sources` replaces the configured source of some clusters (tests)."""
        self._redactor = redactor
        self._on_rotation = on_rotation
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._cooldown = unauthorized_cooldown
        self._load_timeout = load_timeout
        overrides = dict(sources or {})
        self._states: dict[str, _State] = {
            name: _State(
                name,
                overrides.get(name) or build_source(name, cluster, sink=self._add_secret),
            )
            for name, cluster in clusters.items()
        }
        self._identities: dict[tuple[str, str], _State] = {
            (name, mapping.name): _State(
                name,
                build_identity_source(name, mapping, sink=self._add_secret),
                identity=mapping.name,
            )
            for name, cluster in clusters.items()
            for mapping in cluster.identities
        }
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def _add_secret(self, value: str) -> None:
        self._redactor.add(value)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> SecretsManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Load every cluster's credentials once (failures leave it degraded, not raised),
        then start the background work: retries, interval reloads, token renewal."""
        if self._stack is not None:
            raise RuntimeError("the secrets manager is already started")
        stack = AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        async with anyio.create_task_group() as first:
            for state in self._every_state():
                first.start_soon(self._refresh_state, state, "start")
        for state in self._every_state():
            if state.current is None:
                self._start_recovery(state)
            if state.source.refreshable and state.source.refresh_interval > 0:
                self._tg.start_soon(self._interval_loop, state)
            self._tg.start_soon(self._maintain_loop, state)

    async def aclose(self) -> None:
        """Stop the background work and release the sources (revoke Vault login tokens)."""
        stack, self._stack = self._stack, None
        if stack is not None and self._tg is not None:
            self._tg.cancel_scope.cancel()
            await stack.aclose()
        self._tg = None
        for state in self._every_state():
            try:
                await state.source.aclose()
            except Exception:
                log.exception("secret_source_close_failed", **state.labels)

    def _every_state(self) -> list[_State]:
        """The clusters' credentials and every identity mapping's."""
        return [*self._states.values(), *self._identities.values()]

    # -- queries ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return sorted(self._states)

    def manages(self, name: str) -> bool:
        return name in self._states

    def current(self, name: str) -> ClusterCredentials | None:
        """The cluster's credentials now, or None while they cannot be loaded."""
        state = self._states.get(name)
        return state.current if state is not None else None

    def token(self, name: str) -> ApiToken | None:
        current = self.current(name)
        return current.token if current is not None else None

    def identity(self, name: str, mapping: str) -> ClusterCredentials | None:
        """The token of cluster `name`'s identity `mapping` now, or None while it cannot
        be loaded (or no such mapping is configured)."""
        state = self._identities.get((name, mapping))
        return state.current if state is not None else None

    def identity_problem(self, name: str, mapping: str) -> str | None:
        """The last load error of an identity mapping (no secret in it), or None."""
        state = self._identities.get((name, mapping))
        return state.problem if state is not None else None

    def version(self, name: str, secret_name: str) -> str | None:
        """The source's version of the secret `on_rotation` named (`token_secret`, or
        `identities.MAPPING.token_secret` for a mapping's: its own source's version, not
        the cluster's), for the audit's rotation record."""
        # The mapping is all between `identities.` and the last dot: names may hold dots,
        # so a prefix test would give `ops.alice`'s rotation the version of `ops`.
        owner, dot, _field = secret_name.removeprefix("identities.").rpartition(".")
        if dot and secret_name.startswith("identities."):
            state = self._identities.get((name, owner))
            if state is not None:
                return state.current.version if state.current is not None else None
        current = self.current(name)
        return current.version if current is not None else None

    def ready(self, name: str | None = None) -> bool:
        """Whether `name` (or, with no name, every cluster) has credentials loaded."""
        if name is None:
            return all(state.current is not None for state in self._states.values())
        state = self._states.get(name)
        return state is not None and state.current is not None

    def problem(self, name: str) -> str | None:
        """The last load error of `name` (no secret in it), or None."""
        state = self._states.get(name)
        return state.problem if state is not None else None

    def describe(self, name: str) -> str:
        return self._states[name].source.describe()

    def source(self, name: str) -> SecretSource:
        return self._states[name].source

    def refreshable(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.source.refreshable

    def status(self) -> dict[str, dict[str, Any]]:
        """Per cluster: ready, source, problem; for `/readyz` and diagnostics."""
        return {
            name: {
                "ready": state.current is not None,
                "source": state.source.describe(),
                "problem": state.problem,
            }
            for name, state in sorted(self._states.items())
        }

    # -- reloading ----------------------------------------------------------------------

    async def refresh(self, name: str, reason: str = "manual") -> bool:
        """Re-read `name`'s source now. True when the credentials changed (or loaded for
        the first time); False when unchanged or when the read failed (logged; the last
        good credentials stay)."""
        return await self._refresh_state(self._states[name], reason)

    async def refresh_identity(self, name: str, mapping: str, reason: str = "manual") -> bool:
        """`refresh` for one identity mapping of cluster `name`."""
        return await self._refresh_state(self._identities[(name, mapping)], reason)

    async def _refresh_state(self, state: _State, reason: str) -> bool:
        async with state.lock:
            return await self._refresh_locked(state, reason)

    async def refresh_all(self, reason: str = "manual") -> dict[str, bool]:
        """Re-read every refreshable source (and retry every degraded one) concurrently."""
        results: dict[str, bool] = {}

        async def one(state: _State) -> None:
            changed = await self._refresh_state(state, reason)
            if state.identity is None:
                results[state.name] = changed

        async with anyio.create_task_group() as tg:
            for state in self._every_state():
                if state.source.refreshable or state.current is None:
                    tg.start_soon(one, state)
        return results

    async def after_unauthorized(
        self, name: str, rejected: TokenLike, *, identity: str | None = None
    ) -> bool:
        """Proxmox answered 401 to `rejected` (the cluster's token, or its `identity`
        mapping's): re-read that source once (not more often than the cooldown) and say
        whether a different token is now current."""
        if identity is None:
            state = self._states.get(name)
        else:
            state = self._identities.get((name, identity))
        if state is None or not state.source.refreshable:
            return False
        async with state.lock:
            if not self._is_rejected(state.current, rejected):
                return True  # another call already picked up a newer token
            now = time.monotonic()
            if now - state.last_unauthorized_refresh < self._cooldown:
                return False
            state.last_unauthorized_refresh = now
            await self._refresh_locked(state, "unauthorized")
            return not self._is_rejected(state.current, rejected)

    @staticmethod
    def _is_rejected(current: ClusterCredentials | None, rejected: TokenLike) -> bool:
        token = current.token if current is not None else None
        return token is None or (
            token.token_id == rejected.token_id
            and token.secret.get_secret_value() == rejected.secret.get_secret_value()
        )

    async def _refresh_locked(self, state: _State, reason: str) -> bool:
        source = state.source
        try:
            with anyio.fail_after(self._load_timeout):
                loaded = await source.load()
        except SecretSourceError as exc:
            return self._failed(state, reason, exc.message)
        except TimeoutError:
            return self._failed(
                state, reason, f"{source.describe()}: no answer within {self._load_timeout:g} s"
            )
        except Exception as exc:
            log.exception("secret_source_crashed", **state.labels, source=source.describe())
            return self._failed(
                state, reason, f"{source.describe()}: unexpected {type(exc).__name__}"
            )
        # Into the redaction set before anything can use (and log) the new values.
        self._redactor.add(*loaded.secret_values())
        previous = state.current
        state.problem = None
        if previous is None:
            state.current = loaded
            state.generation += 1
            log.info(
                "credentials_recovered" if reason != "start" else "credentials_loaded",
                **state.labels,
                source=loaded.origin,
                reason=reason,
                ssh=loaded.ssh is not None,
            )
            return True
        changed = previous.changed_fields(loaded)
        state.current = loaded
        if not changed:
            log.debug("credentials_unchanged", **state.labels, reason=reason)
            return False
        state.generation += 1
        where = source.describe()
        for secret_name in changed:
            log.info(
                "secret_rotated",
                **state.labels,
                secret=secret_name,
                source=where,
                version=loaded.version,
                reason=reason,
            )
            prefix = f"identities.{state.identity}." if state.identity is not None else ""
            await self._notify(state.name, prefix + secret_name, where)
        return True

    def _failed(self, state: _State, reason: str, message: str) -> bool:
        state.problem = self._redactor.text(message)
        log.warning(
            "credentials_load_failed",
            **state.labels,
            source=state.source.describe(),
            reason=reason,
            error=state.problem,
            degraded=state.current is None,
            keeping="last good credentials" if state.current is not None else None,
        )
        return False

    async def _notify(self, cluster: str, secret_name: str, source: str) -> None:
        if self._on_rotation is None:
            return
        try:
            result = self._on_rotation(cluster, secret_name, source)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("rotation_callback_failed", cluster=cluster, secret=secret_name)

    # -- background work ----------------------------------------------------------------

    def _start_recovery(self, state: _State) -> None:
        if state.recovering or self._tg is None:
            return
        state.recovering = True
        self._tg.start_soon(self._recover, state)

    async def _recover(self, state: _State) -> None:
        delay = self._retry_initial
        try:
            while state.current is None:
                await anyio.sleep(_jitter(delay))
                if state.current is None:
                    await self._refresh_state(state, "retry")
                delay = min(delay * 2, self._retry_max)
        finally:
            state.recovering = False

    async def _interval_loop(self, state: _State) -> None:
        interval = state.source.refresh_interval
        while True:
            await anyio.sleep(_jitter(interval))
            if state.current is not None:  # while degraded, the recovery task retries
                await self._refresh_state(state, "interval")

    async def _maintain_loop(self, state: _State) -> None:
        while True:
            try:
                await state.source.maintain()
                return
            except Exception:
                log.exception("secret_source_upkeep_crashed", **state.labels)
                await anyio.sleep(_jitter(5.0))

    async def watch_signal(self, signum: signal.Signals) -> None:
        """Reload every source when `signum` arrives, for the manager's lifetime."""
        if self._tg is None:
            raise RuntimeError("start the secrets manager first")
        await self._tg.start(self._signal_loop, signum)

    async def _signal_loop(
        self,
        signum: signal.Signals,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.open_signal_receiver(signum) as signals:
            task_status.started()
            async for received in signals:
                name = signal.Signals(received).name
                log.info("secrets_reload_requested", signal=name)
                await self.refresh_all(name)


async def install_sighup(manager: SecretsManager) -> bool:
    """Reload all credentials on SIGHUP while `manager` runs (call it after `start`, from
    the event loop's main thread). False where the platform has no SIGHUP."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return False
    await manager.watch_signal(sighup)
    return True
