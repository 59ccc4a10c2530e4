"""The design's one-way imports, checked on the source so a stray import fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pvemcp"

# subpackage -> pvemcp subpackages/modules it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "simulator": set(),
    "policy": set(),
    "secrets": set(),
    "proxmox": {"config"},
    "gateway": {"policy", "proxmox", "secrets", "config"},
    "tools": {"gateway", "proxmox", "policy"},
    "transports": {"gateway", "policy", "config"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pvemcp" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_are_one_way(subpackage: str) -> None:
    bad = {}
    for path in (PACKAGE / subpackage).rglob("*.py"):
        extra = imports_of(path) - ALLOWED[subpackage] - {subpackage, "__init__"}
        if extra:
            bad[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert not bad, f"imports that break the design's boundaries: {bad}"


def test_tools_use_proxmox_for_types_only() -> None:
    """Tools reach Proxmox through the gateway's ToolContext, never a backend directly."""
    for path in (PACKAGE / "tools").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "pvemcp.proxmox"
            ):
                for alias in node.names:
                    assert alias.name[0].isupper(), f"{path.name} imports {alias.name} from proxmox"
