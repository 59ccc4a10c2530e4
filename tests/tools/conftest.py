"""What the tool tests share: a client on a gateway over a simulator of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from pvemcp.gateway.invoke import Gateway
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway
from tests.tools.test_examples import Session, fresh_session


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[Session]:
    """A client on a gateway over a fresh simulator, every request recorded."""
    async with fresh_session(tmp_path) as opened:
        yield opened


@pytest.fixture
def own_sim() -> Iterator[SimulatorHandle]:
    """A simulator of the test's own, for tests that move, clone or add guests."""
    with simulator_in_thread(SimulatorOptions(time_scale=0.05)) as handle:
        yield handle


@pytest.fixture
async def client(own_sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Client]:
    """A client on a gateway over `own_sim`, auditing to `audit_path`."""
    gateway: Gateway = make_gateway({"demo": cluster_for(own_sim)}, audit_path)
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as c:
            yield c
    finally:
        await gateway.aclose()
