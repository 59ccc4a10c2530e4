"""Fixtures shared by the whole suite: a real simulator over HTTPS and gateways on it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, TlsMode
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.loader import load_policy
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import all_tools, tier_map

# Tasks take realistic durations x this: a VM start lasts ~0.4 s, long enough for several
# progress notifications, short enough for a quick suite.
TIME_SCALE = 0.15


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorHandle]:
    """One simulator for the session; tests that change state use their own guests."""
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE)) as handle:
        yield handle


def cluster_for(handle: SimulatorHandle, **changes: Any) -> ClusterConfig:
    values: dict[str, Any] = {
        "api_url": handle.url,
        "token_id": handle.token_id,
        "token_secret": SecretStr(handle.token_secret),
        "tls": TlsMode.FINGERPRINT,
        "fingerprint": handle.fingerprint,
        "default_node": "pve1",
        "read_timeout": 5.0,
        "task_timeout": 30.0,
        # The shipped schema, which the tests' expectations (nothing sent for a refused
        # call) assume; tests/pveapi/test_node_schema.py turns the node's own schema on.
        "api_schema_fetch": False,
    }
    values.update(changes)
    return ClusterConfig(**values)


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def operator_policy() -> PolicyEngine:
    """The default policy: the local operator may power guests, destructive calls confirmed."""
    return load_policy(
        profile="operator", profile_subjects=["local"], file=None, known_tools=tier_map()
    )


def make_gateway(
    clusters: dict[str, ClusterConfig], audit_path: Path | None, secrets: tuple[str, ...] = ()
) -> Gateway:
    return Gateway(
        tools=all_tools(),
        clusters=ClusterPool(clusters, next(iter(clusters)) if len(clusters) == 1 else None),
        policy=operator_policy(),
        audit=AuditLog(audit_path),
        redactor=Redactor(secrets),
    )


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
async def gateway(sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway({"demo": cluster_for(sim)}, audit_path, (sim.token_secret,))
    try:
        yield gw
    finally:
        await gw.aclose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite golden files (tests/tools/catalogue.golden) instead of comparing",
    )
