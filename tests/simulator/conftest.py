"""Fixtures for the simulator tests: a live HTTPS simulator, a client that trusts it, a clock.

Every test talks to the simulator over a real TLS connection, trusting only the
simulator's own self-signed certificate, as the gateway's client does.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from pvemcp.simulator import (
    SimulatorHandle,
    SimulatorOptions,
    serve_simulator,
    simulator_in_thread,
)

START = 1_780_000_000.0
"""An arbitrary fixed epoch second for injected clocks."""


class FakeClock:
    """A clock the test moves by hand; the simulator's tasks advance only when it does."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def trust(simulator: SimulatorHandle) -> ssl.SSLContext:
    """A TLS context that trusts exactly the simulator's certificate."""
    return ssl.create_default_context(cadata=simulator.cert_pem.decode())


def client_for(simulator: SimulatorHandle, *, authorized: bool = True) -> httpx2.AsyncClient:
    """An HTTPS client for `/api2/json`, with the simulator's token unless told otherwise."""
    headers = {"Authorization": simulator.authorization} if authorized else {}
    return httpx2.AsyncClient(
        base_url=simulator.url + "/api2/json", verify=trust(simulator), headers=headers
    )


async def get_data(client: httpx2.AsyncClient, path: str, **params: Any) -> Any:
    """GET `path` and return PVE's `data`, asserting a 200."""
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def post_upid(client: httpx2.AsyncClient, path: str, **params: Any) -> str:
    """POST `path` (a form, as PVE clients send) and return the task's UPID."""
    response = await client.post(path, data=params)
    assert response.status_code == 200, response.text
    upid = response.json()["data"]
    assert isinstance(upid, str)
    return upid


async def task_status(client: httpx2.AsyncClient, upid: str) -> dict[str, Any]:
    """GET the task's status on the node its UPID names."""
    node = upid.split(":")[1]
    status: dict[str, Any] = await get_data(client, f"/nodes/{node}/tasks/{upid}/status")
    return status


@pytest.fixture
def clock() -> FakeClock:
    """A hand-driven clock starting at `START`."""
    return FakeClock()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorHandle]:
    """One simulator per module (tasks finish at once, the clock stands still at `START`).

    For tests that only read, or that change guests no other test of the module relies
    on: a uvicorn shutdown takes over 0.1 s, more than most tests themselves.
    """
    options = SimulatorOptions(time_scale=0.0, clock=FakeClock())
    with simulator_in_thread(options) as simulator:
        yield simulator


@pytest.fixture
async def fresh_sim(anyio_backend: str) -> AsyncIterator[SimulatorHandle]:
    """A simulator of the test's own, whose tasks finish at once (time scale 0)."""
    async with serve_simulator(SimulatorOptions(time_scale=0.0)) as simulator:
        yield simulator


@pytest.fixture
async def timed_sim(anyio_backend: str, clock: FakeClock) -> AsyncIterator[SimulatorHandle]:
    """A simulator of the test's own with real task durations on the hand-driven `clock`."""
    async with serve_simulator(SimulatorOptions(time_scale=1.0, clock=clock)) as simulator:
        yield simulator


@pytest.fixture
async def client(shared_sim: SimulatorHandle) -> AsyncIterator[httpx2.AsyncClient]:
    """An authorized client of the module's `shared_sim`."""
    async with client_for(shared_sim) as http:
        yield http


@pytest.fixture
async def fresh_client(fresh_sim: SimulatorHandle) -> AsyncIterator[httpx2.AsyncClient]:
    """An authorized client of `fresh_sim`."""
    async with client_for(fresh_sim) as http:
        yield http


@pytest.fixture
async def timed_client(timed_sim: SimulatorHandle) -> AsyncIterator[httpx2.AsyncClient]:
    """An authorized client of `timed_sim`."""
    async with client_for(timed_sim) as http:
        yield http
