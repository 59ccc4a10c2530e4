"""docs/tools.md and `pvemcp tools` come from the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvemcp.cli import main
from pvemcp.tooldoc import README_BEGIN, README_END, readme_table, render
from pvemcp.tools import TOOLSETS, all_tools

ROOT = Path(__file__).resolve().parents[2]


def test_tools_reference_is_current() -> None:
    committed = (ROOT / "docs" / "tools.md").read_text()
    assert committed == render(), "docs/tools.md is stale: run `pvemcp tools --markdown`"


def test_readme_lists_every_toolset_and_tool() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    assert 0 <= start < end, "README.md lost its toolsets table markers"
    block = readme[start : end + len(README_END)] + "\n"
    assert block == readme_table(), "README.md's toolsets table is stale: `pvemcp tools --readme`"
    for spec in all_tools():
        assert f"`{spec.name}`" in block


def test_every_tool_and_argument_is_documented() -> None:
    page = render()
    for spec in all_tools():
        assert f"### `{spec.name}` ({spec.tier})" in page
        for name in spec.input_model.model_fields:
            if name not in ("cluster", "dry_run", "confirm_token"):
                assert f"| `{name}` |" in page, f"{spec.name}: {name}"


def test_tools_command_groups_by_toolset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert headers == [toolset.name for toolset in TOOLSETS]
    assert main(["tools", "--json"]) == 0
    tools = json.loads(capsys.readouterr().out)
    assert [(t["toolset"], t["name"]) for t in tools] == [
        (spec.toolset, spec.name) for spec in all_tools()
    ]
    assert main(["tools", "--markdown"]) == 0
    assert capsys.readouterr().out == render()
    assert main(["tools", "--readme"]) == 0
    assert capsys.readouterr().out == readme_table()
