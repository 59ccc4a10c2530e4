"""The simulator's fault injection (`pvemcp.simulator.faults`), seen by a plain HTTPS client.

What each fault kind puts on the wire, how faults match and run out, that clearing one ends
the connection it holds, and the `--faults` admin endpoint of `pvemcp simulate`. What the
gateway makes of these answers is tests/e2e/test_tool_faults.py.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pvemcp.simulator import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.simulator.faults import ADMIN_PATH, Cut, Hang, Huge, Respond, Trickle

from .conftest import trust
from .test_server import _banner, _lines

VERSION = "/api2/json/version"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as handle:
        yield handle


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[httpx2.Client]:
    headers = {"Authorization": sim.authorization}
    with httpx2.Client(base_url=sim.url, verify=trust(sim), headers=headers, timeout=5) as c:
        yield c
    sim.faults.clear()


def test_pve_and_html_errors_and_odd_bodies(sim: SimulatorHandle, client: httpx2.Client) -> None:
    sim.faults.inject(Respond.pve_error(500, "got timeout"), path="/version", times=1)
    answer = client.get(VERSION)
    assert (answer.status_code, answer.reason_phrase) == (500, "got timeout")
    assert answer.json() == {"data": None, "message": "got timeout\n"}
    assert client.get(VERSION).status_code == 200  # times=1: used up
    sim.faults.inject(Respond.html(502), method="GET")
    answer = client.get("/api2/json/nodes")
    assert answer.status_code == 502 and answer.headers["content-type"] == "text/html"
    assert "<h1>502</h1>" in answer.text
    sim.faults.inject(Respond.not_json(), path="/nodes")  # newest wins
    assert client.get("/api2/json/nodes").text == "this is not JSON"
    assert client.get(VERSION).status_code == 502  # the older, global fault
    assert client.post("/api2/json/nodes/pve1/qemu/100/status/start").status_code != 502


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "truncated"])
def test_a_cut_answer_breaks_mid_body(sim: SimulatorHandle, reset: bool) -> None:
    """Read with asyncio's TLS, as the gateway does: the blocking `ssl` module reports a
    reset after a TLS record as a plain end of file."""
    fault = sim.faults.inject(Cut(keep=5, reset=reset), path="/cluster/resources")

    async def read() -> None:
        headers = {"Authorization": sim.authorization}
        async with (
            httpx2.AsyncClient(base_url=sim.url, verify=trust(sim), headers=headers) as client,
            client.stream("GET", "/api2/json/cluster/resources") as answer,
        ):
            assert answer.status_code == 200  # the real head, then 5 of its bytes
            await answer.aread()

    expected = httpx2.ReadError if reset else httpx2.RemoteProtocolError
    with pytest.raises(expected, match=None if reset else "received 5 bytes"):
        asyncio.run(read())
    assert fault.hits == 1
    sim.faults.clear()


def test_a_hang_holds_until_the_client_gives_up_or_it_is_cleared(
    sim: SimulatorHandle, client: httpx2.Client
) -> None:
    fault = sim.faults.inject(Hang(), path="/version")
    with pytest.raises(httpx2.ReadTimeout):
        client.get(VERSION, timeout=0.3)
    threading.Timer(0.3, sim.faults.clear).start()
    started = time.monotonic()
    with pytest.raises(httpx2.RemoteProtocolError):  # dropped without an answer
        client.get(VERSION)
    assert 0.25 < time.monotonic() - started < 2
    assert fault.hits == 2 and not fault.active and sim.faults.list() == []
    assert client.get(VERSION).status_code == 200


def test_a_trickle_sends_the_real_answer_slowly(
    sim: SimulatorHandle, client: httpx2.Client
) -> None:
    sim.faults.inject(Trickle(interval=0.01), path="/version")
    started = time.monotonic()
    answer = client.get(VERSION)
    assert answer.json()["data"]["version"]
    assert time.monotonic() - started > 0.01 * len(answer.content) * 0.9


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "chunked"])
def test_a_huge_answer(sim: SimulatorHandle, client: httpx2.Client, declare: bool) -> None:
    sim.faults.inject(Huge(3_000_000, declare_length=declare), path="/nodes")
    answer = client.get("/api2/json/nodes")
    assert len(answer.content) == 3_000_000
    assert ("content-length" in answer.headers) is declare
    assert answer.json()["data"] == "x" * (3_000_000 - 11)


def test_the_admin_endpoint_is_off_unless_asked_for(
    sim: SimulatorHandle, client: httpx2.Client
) -> None:
    assert client.post(ADMIN_PATH, json={"kind": "hang"}).status_code == 404
    assert sim.faults.list() == []


def test_simulate_faults_serves_the_admin_endpoint(tmp_path: Path) -> None:
    """`pvemcp simulate --faults`: another process breaks and mends the API over HTTP."""
    cert = tmp_path / "simulator.pem"
    command = [sys.executable, "-m", "pvemcp.simulator", "--port", "0", "--faults",
               "--time-scale", "0", "--token-secret", "s3cr3t",
               "--cert-out", str(cert)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = _banner(_lines(process.stdout), time.monotonic() + 20)
            headers = {"Authorization": "PVEAPIToken=root@pam!pvemcp=s3cr3t"}
            verify = ssl.create_default_context(cafile=str(cert))
            with httpx2.Client(base_url=banner["URL"], verify=verify, timeout=5) as http:
                assert http.post(ADMIN_PATH, json={"kind": "hang"}).status_code == 401
                bad = http.post(ADMIN_PATH, json={"kind": "boom"}, headers=headers)
                assert bad.status_code == 400 and bad.json()["error"].startswith("kind: one of")
                bad = http.post(ADMIN_PATH, json={"kind": "hang", "path": "("}, headers=headers)
                assert bad.status_code == 400 and bad.json()["error"].startswith("path:")
                spec = {"kind": "pve_error", "status": 503, "path": "/version", "times": 2}
                added = http.post(ADMIN_PATH, json=spec, headers=headers)
                assert added.status_code == 201
                assert added.json() == {"method": None, "path": "/version", "action": "respond",
                                        "times": 2, "hits": 0}  # fmt: skip
                assert http.get(VERSION, headers=headers).status_code == 503
                listed = http.get(ADMIN_PATH, headers=headers).json()
                assert [fault["hits"] for fault in listed] == [1]
                assert http.delete(ADMIN_PATH, headers=headers).json() == []
                assert http.get(VERSION, headers=headers).status_code == 200
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0


def test_http_stops_and_serves_again_on_the_same_port_with_the_same_state() -> None:
    """A pveproxy restart: connections refused meanwhile, then the same cluster again."""
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as sim:
        headers = {"Authorization": sim.authorization}
        with httpx2.Client(base_url=sim.url, verify=trust(sim), headers=headers) as client:
            config = "/api2/json/nodes/pve1/qemu/100/config"
            assert client.put(config, data={"description": "kept"}).status_code == 200
            asyncio.run(sim.stop_http())
            with pytest.raises(httpx2.ConnectError):
                client.get(VERSION)
            asyncio.run(sim.start_http())
            assert client.get(config).json()["data"]["description"] == "kept"
