"""The `pvemcp` command's offline subcommands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pvemcp.cli import main


def test_tools_lists_every_tool_with_its_tier(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert rows["proxmox_guest_list"] == "read"
    assert rows["proxmox_guest_power"] == "write"
    assert rows["proxmox_guest_stop"] == "destructive"


def test_tools_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "--json"]) == 0
    tools = json.loads(capsys.readouterr().out)
    assert all(t["inputSchema"]["type"] == "object" for t in tools)


def test_console_script_runs_as_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pvemcp", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.startswith("pvemcp ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
