"""`pvemcp serve --mode http|both`: refusals at start, and a signal's clean stop.

Run as `pvemcp demo`, which is `serve` with the embedded simulator as its cluster (`serve`
itself refuses to start without a configured cluster: tests/test_cli.py).

The CLI's exit code and message for a refused configuration or a busy port (in-process:
it refuses before starting anything), and, as a real process, that SIGTERM stops HTTP (and
stdio, even while its client keeps stdin open) with the audit log closed and the port
released.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from pvemcp.cli import main
from tests.conftest import read_audit
from tests.e2e.test_both_mode import free_port, listening, payload

pytestmark = pytest.mark.slow

KEY = "serve-test-key-0123456789"


def env_for(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0",
        "PVEMCP_HTTP__AUTH": "static",
        "PVEMCP_HTTP__STATIC_KEYS": f'["{KEY}"]',
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    env.update({f"PVEMCP_HTTP__{name.upper()}": value for name, value in settings.items()})
    return env


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI in-process (it refuses before starting anything): its stderr."""
    assert main(["demo", "--mode", "http", *args]) == 2
    return capsys.readouterr().err


def test_exposing_or_impossible_starts_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PVEMCP_HTTP__AUTH", "static")
    monkeypatch.setenv("PVEMCP_HTTP__STATIC_KEYS", f'["{KEY}"]')
    assert 'http.auth must be "oidc"' in refused(capsys, "--host", "0.0.0.0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in refused(capsys, "--port", str(port))
    monkeypatch.setenv("PVEMCP_HTTP__AUTH", "none")
    message = refused(capsys)
    assert message.startswith("pvemcp: ") and "allow_unauthenticated" in message


@contextmanager
def running(tmp_path: Path, mode: str, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "stderr.log").open("wb") as errlog:
        process = subprocess.Popen(
            [sys.executable, "-m", "pvemcp", "demo", "--mode", mode],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            assert process.stdin is not None
            process.stdin.close()


def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start"
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server did not become healthy")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["http", "both"])
async def test_sigterm_stops_cleanly_and_frees_the_port(tmp_path: Path, mode: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(tmp_path, mode, env_for(tmp_path, port=str(port))) as process:
        wait_healthy(base, process)
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            assert payload(await client.call_tool("proxmox_node_list", {}))["nodes"]
        # In `both` mode stdin stays open: the signal alone must stop the stdio side too.
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    assert not listening(port)
    log = (tmp_path / "stderr.log").read_text()
    assert '"signal": "SIGTERM"' in log
    assert "Traceback" not in log
    records = read_audit(tmp_path / "audit.jsonl")
    assert records[-1]["phase"] == "checkpoint", "a clean stop closes the audit log"


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_the_real_process_cuts_off_a_huge_header_and_a_silent_connection(
    tmp_path: Path,
) -> None:
    """Issue 10 item 14 in the process as deployed (uvloop, not the tests' asyncio loop):
    an unfinished 200 MB header grew the gateway from 92 to 508 MB, a silent connection
    stayed open."""
    port = free_port()
    env = env_for(tmp_path, port=str(port), head_timeout="1")
    with running(tmp_path, "http", env) as process:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        before = rss_mib(process.pid)
        with socket.create_connection(("127.0.0.1", port)) as huge:
            huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            sent = 0
            try:
                while sent < 200 * 1024 * 1024:
                    huge.sendall(b"a" * 65536)
                    sent += 65536
            except (ConnectionResetError, BrokenPipeError):
                pass  # the server has closed it
        assert sent < 16 * 1024 * 1024, "what the kernel buffers, not the whole header"
        assert rss_mib(process.pid) < before + 32

        with socket.create_connection(("127.0.0.1", port)) as silent:
            silent.settimeout(5)
            started = time.monotonic()
            assert silent.recv(1) == b"", "closed by the server"
            assert time.monotonic() - started < 3
        assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
