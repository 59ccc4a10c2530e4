"""The official MCP Inspector CLI (npm, under Node 22) against `pvemcp serve --mode http`:
a second, independent client implementation listing and calling tools with a bearer
header, on the handshake-era protocol the Inspector speaks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_both_mode import free_port
from tests.e2e.test_http_serve import KEY, env_for, running, wait_healthy

pytestmark = pytest.mark.slow

INSPECTOR = Path(__file__).resolve().parents[1] / "support" / "inspector" / "node_modules" / ".bin"


def inspector(
    tmp_path: Path, url: str, *args: str, token: str = KEY
) -> subprocess.CompletedProcess[str]:
    if not (INSPECTOR / "mcp-inspector").exists():
        if os.environ.get("CI"):
            pytest.fail("the Inspector is not installed: scripts/bootstrap should have done it")
        pytest.skip("the MCP Inspector is not installed (run scripts/bootstrap)")
    env = {
        **os.environ,
        # Node 22 from the npm package first; the Inspector writes under HOME.
        "PATH": f"{INSPECTOR}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),
    }
    return subprocess.run(
        [
            "mcp-inspector",
            "--cli",
            url,
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {token}",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_inspector_lists_and_calls_tools_over_http(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(tmp_path, "http", env_for(tmp_path, port=str(port))) as process:
        wait_healthy(base, process)
        listed = inspector(tmp_path, f"{base}/mcp", "--method", "tools/list")
        assert listed.returncode == 0, listed.stderr
        names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
        # A static-key caller is not the local operator: it sees the read tools only.
        assert "proxmox_guest_list" in names
        assert "proxmox_guest_power" not in names
        called = inspector(
            tmp_path,
            f"{base}/mcp",
            "--method",
            "tools/call",
            "--tool-name",
            "proxmox_guest_get",
            "--tool-arg",
            "vmid=104",
        )
        assert called.returncode == 0, called.stderr
        result = json.loads(called.stdout)
        assert result["structuredContent"]["name"] == "db01"
        refused = inspector(tmp_path, f"{base}/mcp", "--method", "tools/list", token="wrong")
        assert refused.returncode != 0
