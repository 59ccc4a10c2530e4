"""Fixtures for the Proxmox backend tests: the fake PVE server and cluster configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, TlsMode
from pvemcp.simulator.certs import SelfSigned, make_self_signed

from .fake_pve import SECRET, TOKEN_ID, FakePve, bound_socket


@pytest.fixture(scope="session")
def certs() -> SelfSigned:
    return make_self_signed()


@pytest.fixture(scope="session")
def pve_server(certs: SelfSigned, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePve]:
    server = FakePve(certs, tmp_path_factory.mktemp("fake-pve"))
    server.start(bound_socket())
    yield server
    server.stop()


@pytest.fixture
def pve(pve_server: FakePve) -> Iterator[FakePve]:
    """The session's fake server, with no routes and no recorded requests."""
    pve_server.reset()
    yield pve_server
    pve_server.reset()


@pytest.fixture
def make_cluster(pve: FakePve) -> Callable[..., ClusterConfig]:
    """Cluster configs for the fake server: pinned, short timeouts, overridable."""

    def make(**changes: Any) -> ClusterConfig:
        values: dict[str, Any] = {
            "api_url": pve.url,
            "token_id": TOKEN_ID,
            "token_secret": SecretStr(SECRET),
            "tls": TlsMode.FINGERPRINT,
            "fingerprint": pve.certs.fingerprint_colons,
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "retries": 2,
        }
        values.update(changes)
        return ClusterConfig(**values)

    return make
