"""The pvesh stand-in's command line and output semantics, run directly (no SSH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pvemcp.simulator.server import SimulatorHandle
from tests.support.pvesh_standin import parse_options
from tests.support.sshd import STANDIN

Pvesh = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def pvesh(ssh_sim: SimulatorHandle, tmp_path: Path) -> Pvesh:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(ssh_sim.cert_pem)
    env = {
        **os.environ,
        "PVEMCP_SIM_URL": ssh_sim.url,
        "PVEMCP_SIM_TOKEN": f"{ssh_sim.token_id}={ssh_sim.token_secret}",
        "PVEMCP_SIM_CA": str(ca),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STANDIN), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return run


def test_options_like_pvesh() -> None:
    args = ["--a", "--b", "no", "-c", "x", "--d=-1", "--e", "1", "--e", "2", "--f", "on"]
    assert parse_options(args) == {
        "a": "1",
        "b": "0",
        "c": "x",
        "d": "-1",
        "e": ["1", "2"],
        "f": "1",
    }


def test_output_formats(pvesh: Pvesh) -> None:
    compact = pvesh("get", "/version", "--output-format", "json")
    assert compact.returncode == 0 and compact.stdout.endswith("}\n")
    data = json.loads(compact.stdout)
    assert compact.stdout == json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    pretty = pvesh("get", "version", "--output-format=json-pretty")
    assert json.loads(pretty.stdout) == data and "\n    " in pretty.stdout
    text = pvesh("--noproxy", "get", "/version")
    assert f"release: {data['release']}\n" in text.stdout


def test_null_result_prints_nothing(pvesh: Pvesh) -> None:
    tasks = json.loads(pvesh("get", "/nodes/pve1/tasks", "--output-format", "json").stdout)
    result = pvesh("delete", f"/nodes/pve1/tasks/{tasks[0]['upid']}", "--output-format", "json")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_no_handler_exits_1(pvesh: Pvesh) -> None:
    result = pvesh("get", "/nope/deeper", "--output-format", "json")
    assert result.returncode == 1
    assert result.stderr.strip() == "No 'get' handler defined for '/nope/deeper'"


def test_parameter_errors_exit_255(pvesh: Pvesh) -> None:
    result = pvesh("create", "/nodes/pve1/qemu/100/status/start", "--timeout", "abc")
    assert result.returncode == 255
    lines = result.stderr.splitlines()
    assert lines[0] == "400 Parameter verification failed."
    assert lines[1] == "timeout: type check ('integer') failed - got 'abc'"


def test_async_prints_the_upid_last_and_exits_0_after_a_failed_task(pvesh: Pvesh) -> None:
    first = pvesh("create", "/nodes/pve1/qemu/100/status/start", "--output-format", "json")
    second = pvesh("create", "/nodes/pve1/qemu/100/status/start", "--output-format", "json")
    for result in (first, second):
        assert result.returncode == 0
        assert json.loads(result.stdout.splitlines()[-1]).startswith("UPID:pve1:")
    assert "already running" in second.stderr


def test_ls_and_usage(pvesh: Pvesh) -> None:
    listing = pvesh("ls", "/nodes")
    assert listing.returncode == 0 and "Dr---        pve1" in listing.stdout
    usage = pvesh("usage", "/nodes")
    assert usage.returncode == 0 and usage.stdout.startswith("USAGE: pvesh")
