"""The read cache: coalescing and a freshness window for read tools, never for decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.gateway.readcache import ReadCache
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.loader import parse_policy
from pvemcp.policy.principal import Principal
from pvemcp.proxmox.backend import ApiResult
from pvemcp.proxmox.errors import NotFound
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle
from pvemcp.tools import all_tools, tier_map
from tests.conftest import cluster_for

pytestmark = pytest.mark.anyio

LOCAL = Principal.local("memory")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Upstream:
    """A fetch that counts its calls and can be held open until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()
        self.hold = False
        self.fail: Exception | None = None

    def fetch(self, value: Any) -> Callable[[], Awaitable[ApiResult]]:
        async def run() -> ApiResult:
            self.calls += 1
            if self.hold:
                await self.release.wait()
            if self.fail is not None:
                raise self.fail
            return ApiResult(data=value)

        return run


async def test_concurrent_identical_reads_share_one_request() -> None:
    cache, upstream = ReadCache(0), Upstream()
    upstream.hold = True
    answers: list[Any] = []

    async def read() -> None:
        answers.append((await cache.get("/nodes", None, upstream.fetch(["pve1"]))).data)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert upstream.calls == 1
    assert answers == [["pve1"]] * 5
    # ttl 0: nothing is kept once the request is answered.
    assert len(cache) == 0
    await cache.get("/nodes", None, upstream.fetch(["pve1"]))
    assert upstream.calls == 2


async def test_answers_are_reused_within_the_window_only() -> None:
    clock, upstream = Clock(), Upstream()
    cache = ReadCache(1.0, clock=clock)
    await cache.get("/nodes/pve1/status", None, upstream.fetch({"cpu": 0.1}))
    clock.now += 0.9
    second = await cache.get("/nodes/pve1/status", None, upstream.fetch({"cpu": 0.9}))
    assert (upstream.calls, second.data) == (1, {"cpu": 0.1})
    clock.now += 0.2
    third = await cache.get("/nodes/pve1/status", None, upstream.fetch({"cpu": 0.5}))
    assert (upstream.calls, third.data) == (2, {"cpu": 0.5})


async def test_parameters_are_part_of_the_key() -> None:
    cache, upstream = ReadCache(10.0), Upstream()
    await cache.get("/cluster/resources", {"type": "vm"}, upstream.fetch("vms"))
    other = await cache.get("/cluster/resources", {"type": "storage"}, upstream.fetch("st"))
    again = await cache.get("/cluster/resources", {"type": "vm"}, upstream.fetch("new"))
    assert (upstream.calls, other.data, again.data) == (2, "st", "vms")


async def test_invalidate_during_a_flight_keeps_its_answer_out() -> None:
    cache, upstream = ReadCache(10.0), Upstream()
    upstream.hold = True
    async with anyio.create_task_group() as group:
        group.start_soon(cache.get, "/nodes", None, upstream.fetch("before the write"))
        await anyio.wait_all_tasks_blocked()
        cache.invalidate()  # a write finished while the read was on the wire
        upstream.release.set()
    assert len(cache) == 0
    upstream.hold = False
    fresh = await cache.get("/nodes", None, upstream.fetch("after the write"))
    assert fresh.data == "after the write"


async def test_errors_reach_every_waiter_and_are_not_kept() -> None:
    cache, upstream = ReadCache(10.0), Upstream()
    upstream.hold, upstream.fail = True, NotFound("no such node")
    failures: list[str] = []

    async def read() -> None:
        try:
            await cache.get("/nodes/x/status", None, upstream.fetch(None))
        except NotFound as exc:
            failures.append(str(exc))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert upstream.calls == 1
    assert len(failures) == 3
    upstream.fail = None
    assert (await cache.get("/nodes/x/status", None, upstream.fetch("up"))).data == "up"


async def test_a_cancelled_sender_does_not_fail_its_waiters() -> None:
    cache, upstream = ReadCache(10.0), Upstream()
    upstream.hold = True
    got: list[Any] = []
    leader = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(_cancellable, leader, cache, upstream)
        await anyio.wait_all_tasks_blocked()

        async def waiter() -> None:
            got.append((await cache.get("/version", None, upstream.fetch("v9"))).data)

        group.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
        await anyio.wait_all_tasks_blocked()
        upstream.release.set()
    assert got == ["v9"]
    assert upstream.calls == 2  # the waiter sent its own request once the first was gone


async def _cancellable(scope: anyio.CancelScope, cache: ReadCache, upstream: Upstream) -> None:
    with scope:
        await cache.get("/version", None, upstream.fetch("v9"))


async def test_the_oldest_answers_go_first_when_full() -> None:
    cache, upstream = ReadCache(10.0, max_entries=3), Upstream()
    for index in range(4):
        await cache.get(f"/nodes/pve{index}/status", None, upstream.fetch(index))
    assert len(cache) == 3
    await cache.get("/nodes/pve0/status", None, upstream.fetch(0))
    await cache.get("/nodes/pve3/status", None, upstream.fetch(3))
    assert upstream.calls == 5  # pve0 was evicted and fetched again; pve3 was kept


# -- through the gateway, against the simulator --------------------------------------------


@pytest.fixture
async def cached_gateway(sim: SimulatorHandle, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A long freshness window, so only invalidation can explain a fresh answer."""
    rules = parse_policy(
        """
        [[rules]]
        id = "operator"
        subjects = ["local"]
        tiers = ["read", "write"]
        effect = "allow"

        [[rules]]
        id = "hands-off-frozen"
        subjects = ["*"]
        tiers = ["write"]
        tags = ["frozen"]
        effect = "deny"
        """,
        source="test.toml",
        known_tools=tier_map(),
    )
    policy = PolicyEngine(rules)
    gateway = Gateway(
        tools=all_tools(),
        clusters=ClusterPool({"demo": cluster_for(sim, read_cache_ttl=60.0)}),
        policy=policy,
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor((sim.token_secret,)),
    )
    try:
        yield gateway
    finally:
        await gateway.aclose()


async def guest_status(gateway: Gateway, vmid: int) -> str:
    result = await gateway.invoke(
        LOCAL, "proxmox_guest_get", {"vmid": vmid, "include_config": False}
    )
    assert result.data is not None, result.error
    status: str = result.data["status"]
    return status


async def test_read_tools_reuse_answers_until_a_write_empties_the_cache(
    sim: SimulatorHandle, cached_gateway: Gateway
) -> None:
    guest = sim.state.find_guest(201)
    assert guest is not None
    assert guest.status == "stopped"
    assert await guest_status(cached_gateway, 201) == "stopped"
    cache = cached_gateway.clusters.read_cache("demo")
    misses = cache.misses
    assert await guest_status(cached_gateway, 201) == "stopped"
    assert cache.misses == misses  # answered from the cache

    started = await cached_gateway.invoke(
        LOCAL, "proxmox_guest_power", {"vmid": 201, "action": "start", "wait": True}
    )
    assert started.data is not None, started.error
    assert await guest_status(cached_gateway, 201) == "running"  # not the cached "stopped"
    stopped = await cached_gateway.invoke(
        LOCAL, "proxmox_guest_power", {"vmid": 201, "action": "shutdown", "wait": True}
    )
    assert stopped.data is not None, stopped.error


async def test_policy_decides_on_fresh_state_not_on_the_cache(
    sim: SimulatorHandle, cached_gateway: Gateway
) -> None:
    listed = await cached_gateway.invoke(LOCAL, "proxmox_guest_list", {"tag": "frozen"})
    assert listed.data is not None
    assert listed.data["guests"] == []  # cached: no guest carries the tag yet
    guest = sim.state.find_guest(103)
    assert guest is not None
    with sim.state.lock:
        tags = str(guest.config.get("tags", ""))
        guest.config["tags"] = ";".join(filter(None, [tags, "frozen"]))
    try:
        refused = await cached_gateway.invoke(
            LOCAL, "proxmox_guest_power", {"vmid": 103, "action": "start", "dry_run": True}
        )
        assert refused.error is not None
        assert refused.error["code"] == "denied"
        assert "hands-off-frozen" in str(refused.error)
    finally:
        with sim.state.lock:
            guest.config["tags"] = tags
