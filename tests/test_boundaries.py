"""The design's one-way imports, checked on the source so a stray import fails CI.

Every way of naming a pvemcp module counts: `import pvemcp.x (as y)`, `from pvemcp.x import
...`, `from pvemcp import x`, relative imports (resolved against the importing module's
package) and `importlib.import_module("pvemcp.x")` / `__import__` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pvemcp"
ROOT = "__init__"
"""What an import of the `pvemcp` package itself (`from pvemcp import __version__`) is
counted as; every part may use it, since importing any part runs it anyway."""

# subpackage -> pvemcp subpackages/modules it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "simulator": {"pveapi"},
    "policy": set(),
    "secrets": set(),
    "pveapi": set(),
    "proxmox": {"config", "pveapi"},
    "gateway": {"policy", "proxmox", "pveapi", "secrets", "config"},
    "tools": {"gateway", "proxmox", "policy", "pveapi"},
    "transports": {"gateway", "policy", "config"},
}


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted name of the module in `path` and whether it is a package (`__init__`)."""
    parts = ["pvemcp", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _part(dotted: str) -> str | None:
    """The part of pvemcp (`config`, `gateway`, ... or ROOT) a dotted name lies in."""
    parts = dotted.split(".")
    if parts[0] != "pvemcp":
        return None
    if len(parts) == 1:
        return ROOT
    name = parts[1]
    exists = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return name if exists else ROOT  # an attribute of the package, e.g. __version__


def _import_call(node: ast.Call) -> str | None:
    """The literal module name of `importlib.import_module(...)` or `__import__(...)`."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in {"import_module", "__import__"} or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def from_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of the module a `from ... import` in `module` imports from."""
    if not node.level:
        return node.module or ""
    anchor = (module if is_package else module.rpartition(".")[0]).split(".")
    assert node.level - 1 < len(anchor), f"{module}: relative import above pvemcp"
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """The parts of pvemcp that `source`, the text of `module`, imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_module(node, module, is_package)
            # `from X import y` may import the module X.y, or take the attribute y of X.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and (literal := _import_call(node)):
            names = [literal]
        found.update(part for name in names if (part := _part(name)) is not None)
    return found


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        ("pvemcp.simulator.app", False, "from ..config import Settings", {"config"}),
        ("pvemcp.simulator.app", False, "from .. import runtime", {ROOT, "runtime"}),
        ("pvemcp.simulator.app", False, "from .http11 import X", {"simulator"}),
        ("pvemcp.simulator", True, "from .state import ClusterState", {"simulator"}),
        ("pvemcp.simulator", True, "from ..gateway import invoke", {"gateway"}),
        ("pvemcp.policy.audit", False, "from pvemcp import __version__", {ROOT}),
        ("pvemcp.policy.audit", False, "from pvemcp import config", {ROOT, "config"}),
        ("pvemcp.policy.audit", False, "import pvemcp.config as settings", {"config"}),
        ("pvemcp.policy.audit", False, "from pvemcp.gateway.invoke import Gateway", {"gateway"}),
        ("pvemcp.policy.audit", False, "importlib.import_module('pvemcp.tools')", {"tools"}),
        ("pvemcp.policy.audit", False, "__import__('pvemcp.secrets.manager')", {"secrets"}),
        ("pvemcp.policy.audit", False, "import json, pvemcp.runtime", {"runtime"}),
    ],
)
def test_every_import_form_is_seen(
    module: str, is_package: bool, source: str, expected: set[str]
) -> None:
    assert imports_of(source, module, is_package) == expected


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_are_one_way(subpackage: str) -> None:
    bad = {}
    for path in (PACKAGE / subpackage).rglob("*.py"):
        found = imports_of(path.read_text(), *module_of(path))
        extra = found - ALLOWED[subpackage] - {subpackage, ROOT}
        if extra:
            bad[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert not bad, f"imports that break the design's boundaries: {bad}"


def test_tools_use_proxmox_for_types_only() -> None:
    """Tools reach Proxmox through the gateway's ToolContext, never a backend directly."""
    for path in (PACKAGE / "tools").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and _part(from_module(node, *module_of(path))) == "proxmox"
            ):
                for alias in node.names:
                    assert alias.name[0].isupper(), f"{path.name} imports {alias.name} from proxmox"
