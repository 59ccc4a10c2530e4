"""Running the simulator: the `pvemcp simulate` command and the background-thread runner."""

from __future__ import annotations

import hashlib
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx2
import pytest

from pvemcp.simulator import SimulatorOptions, main, simulator_in_thread

from .conftest import trust


def test_main_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Lines of `stream`, read by a daemon thread so the test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _banner(lines: queue.Queue[str], deadline: float) -> dict[str, str]:
    """The `Key: value` and `export NAME=value` lines up to `Press Ctrl-C`."""
    found: dict[str, str] = {}
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) != (
        "Press Ctrl-C to stop."
    ):
        key, sep, value = line.removeprefix("export ").partition(": " if ": " in line else "=")
        if sep:
            found[key.strip()] = value.strip().strip("'")
    return found


@pytest.mark.slow
def test_simulate_command_prints_how_to_connect(tmp_path: Path) -> None:
    cert_out = tmp_path / "simulator.pem"
    command = [sys.executable, "-m", "pvemcp.simulator", "--port", "0", "--time-scale", "0",
               "--token-secret", "s3cr3t", "--cert-out", str(cert_out)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = _banner(_lines(process.stdout), time.monotonic() + 20)
            url = banner["URL"]
            assert banner["PVEMCP_API_URL"] == url
            assert banner["Token ID"] == banner["PVEMCP_TOKEN_ID"] == "root@pam!pvemcp"
            assert banner["Token secret"] == banner["PVEMCP_TOKEN_SECRET"] == "s3cr3t"
            assert banner["PVEMCP_TLS"] == "fingerprint"
            host, port = url.removeprefix("https://").rsplit(":", 1)
            pem = ssl.get_server_certificate((host, int(port)))
            digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
            assert banner["Fingerprint"].replace(":", "") == digest
            assert banner["PVEMCP_FINGERPRINT"] == banner["Fingerprint"]
            # --cert-out wrote the served certificate: it is a working CA file for clients.
            context = ssl.create_default_context(cafile=str(cert_out))
            headers = {"Authorization": "PVEAPIToken=root@pam!pvemcp=s3cr3t"}
            response = httpx2.get(f"{url}/api2/json/version", verify=context, headers=headers)
            assert response.status_code == 200
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0


def test_simulator_in_thread_serves_sync_code() -> None:
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as sim:
        assert sim.url == f"https://127.0.0.1:{sim.port}"
        assert len(sim.fingerprint) == 64
        assert sim.fingerprint_colons.replace(":", "").lower() == sim.fingerprint
        headers = {"Authorization": sim.authorization}
        with httpx2.Client(verify=trust(sim), headers=headers) as client:
            response = client.get(f"{sim.url}/api2/json/nodes")
        assert response.status_code == 200
        assert response.headers["server"] == "pve-api-daemon/3.0"
        environment = sim.environment()
        assert environment["PVEMCP_FINGERPRINT"] == sim.fingerprint_colons
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{sim.url}/api2/json/version", verify=trust(sim))
