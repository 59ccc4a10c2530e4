"""What one typed tool costs in source: its lines of code and of test, tool by tool.

Run: `.venv/bin/python bench/tool_cost.py` (`--json` for one object per tool). Nothing is
sent anywhere: the tool modules and tests are read, not run.

How it counts. Each tool is found through its `ToolSpec` (`pvemcp.tools.all_tools()`):
its module is the handler's or planner's, and its declaration is the statement of that
module whose registry call (`tool("name", ...)` or `action("name", ...)`) names it. From
the declaration, every module-level definition it names is followed, transitively
(input and output models, planner, handler, inverse, the helpers and constants they use):
what only this tool reaches is its own; what several tools of the module reach is shared
there and divided among them. A line counts when it is not blank, not a comment and not
in a docstring or a tool's description (`description=`, or the handler's docstring for
`tool`): prose for the model is measured by `bench/tool_bytes.py`. Imports, the module
docstring and the `TOOLS` tuple are left out. The shared helpers every tool leans on
(`gateway/planners.py`, `tools/common.py`) are counted once, separately.

Tests: every `test_*` function under tests/ whose string constants name the tool (the
whole name, so `proxmox_guest_config` is not counted for `proxmox_guest_config_update`).
A test function that names k tools gives each 1/k of its lines, so the per-tool figures
add up to the lines of those tests. Registry-driven tests (examples and rejects, the
catalogue contract) name no tool and are not in these figures: a tool's `examples=` and
`rejects=` are counted in its declaration (column `ex`).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from pvemcp.gateway import planners
from pvemcp.gateway.registry import AnySpec
from pvemcp.policy.tiers import Tier
from pvemcp.tools import all_tools, common

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SHARED = (planners, common)
"""The helper modules every tool leans on, counted once."""


def _prose_lines(node: ast.AST) -> set[int]:
    """Lines of docstrings (any string statement) inside `node`."""
    lines: set[int] = set()
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Expr)
            and isinstance(child.value, ast.Constant)
            and isinstance(child.value.value, str)
        ):
            lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _span(node: ast.AST) -> range:
    """The node's lines, its decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return range(first, (node.end_lineno or node.lineno) + 1)  # type: ignore[attr-defined]


def code_lines(source: list[str], lines: Iterable[int], prose: set[int]) -> int:
    """Lines (1-based) that hold code: not blank, not comments, not prose."""
    return sum(
        1
        for n in lines
        if n not in prose and (text := source[n - 1].strip()) and not text.startswith("#")
    )


def _names(node: ast.AST) -> set[str]:
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}


@dataclass
class Module:
    """A tool module's top-level definitions by name, and its source lines."""

    module: ModuleType
    source: list[str]
    defs: dict[str, ast.stmt]
    statements: list[ast.stmt]

    @classmethod
    def read(cls, name: str) -> Module:
        module = importlib.import_module(name)
        text = inspect.getsource(module)
        tree = ast.parse(text)
        defs: dict[str, ast.stmt] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defs[stmt.name] = stmt
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        defs[target.id] = stmt
        return cls(module, text.splitlines(), defs, tree.body)

    def declaration(self, tool: str) -> tuple[ast.stmt, ast.Call]:
        """The statement that registers `tool`, and its registry call."""
        for stmt in self.statements:
            for node in ast.walk(stmt):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("tool", "action")
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == tool
                ):
                    return stmt, node
        raise LookupError(f"no declaration of {tool}")

    def reached(self, stmt: ast.stmt) -> set[str]:
        """The module-level definitions `stmt` names, transitively (itself excluded)."""
        seen: set[str] = set()
        todo = [stmt]
        while todo:
            for name in _names(todo.pop()):
                found = self.defs.get(name)
                if found is not None and found is not stmt and name not in seen:
                    seen.add(name)
                    todo.append(found)
        return seen

    def is_model(self, name: str) -> bool:
        """Whether `name` is a pydantic model (arguments, a result, an answer read)."""
        found = getattr(self.module, name, None)
        return isinstance(found, type) and issubclass(found, BaseModel)

    def lines_of(self, stmt: ast.stmt) -> int:
        return code_lines(self.source, _span(stmt), _prose_lines(stmt))


@dataclass
class Cost:
    """One tool's lines: declaration (of which examples/rejects), its own models and
    logic, its share of what its module's tools share, and its tests."""

    name: str
    tier: str
    module: str
    decl: int = 0
    ex: int = 0
    models: int = 0
    logic: int = 0
    shared: float = 0.0
    tests: int = 0
    test_lines: float = 0.0
    own: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return self.decl + self.models + self.logic


def _decl_lines(module: Module, stmt: ast.stmt, call: ast.Call) -> tuple[int, int, int]:
    """(declaration, of which examples/rejects, handler) lines of a registry statement:
    for `tool`, the decorator is the declaration and the function the handler."""
    prose = _prose_lines(stmt)
    for keyword in call.keywords:
        if keyword.arg == "description":
            prose.update(range(keyword.value.lineno, (keyword.value.end_lineno or 0) + 1))
    ex = sum(
        code_lines(module.source, range(k.value.lineno, (k.value.end_lineno or 0) + 1), prose)
        for k in call.keywords
        if k.arg in ("examples", "rejects")
    )
    decl_span = range(call.lineno, (call.end_lineno or call.lineno) + 1)
    if isinstance(stmt, ast.AsyncFunctionDef | ast.FunctionDef):
        decl = code_lines(module.source, decl_span, prose)
        handler = code_lines(module.source, range(stmt.lineno, (stmt.end_lineno or 0) + 1), prose)
        return decl, ex, handler
    return code_lines(module.source, _span(stmt), prose), ex, 0


def measure(specs: list[AnySpec]) -> list[Cost]:
    """Each tool's cost in its module (see the module docstring)."""
    modules: dict[str, Module] = {}
    costs: list[Cost] = []
    reach: dict[str, set[str]] = {}
    for spec in specs:
        found = spec.handler or spec.planner
        assert found is not None  # a tool without either is refused at declaration
        where = found.__module__
        if where not in modules:
            modules[where] = Module.read(where)
        module = modules[where]
        stmt, call = module.declaration(spec.name)
        cost = Cost(spec.name, spec.tier.value, where)
        cost.decl, cost.ex, cost.logic = _decl_lines(module, stmt, call)
        reach[spec.name] = module.reached(stmt)
        costs.append(cost)
    users: dict[tuple[str, str], list[Cost]] = defaultdict(list)
    for cost in costs:
        for name in reach[cost.name]:
            users[cost.module, name].append(cost)
    for (where, name), using in users.items():
        module = modules[where]
        lines = module.lines_of(module.defs[name])
        if len(using) == 1:
            (cost,) = using
            cost.own.append(name)
            if module.is_model(name):
                cost.models += lines
            else:
                cost.logic += lines
        else:
            for cost in using:
                cost.shared += lines / len(using)
    return costs


def _test_functions() -> Iterator[tuple[set[str], int]]:
    """(string constants, code lines) of every test function under tests/."""
    for path in sorted(TESTS.rglob("test_*.py")):
        if "node_modules" in path.parts:
            continue
        text = path.read_text()
        source = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                strings = {
                    c.value
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
                yield strings, code_lines(source, _span(node), _prose_lines(node))


def count_tests(costs: list[Cost]) -> None:
    """Add to each cost the test functions that name its tool and their share of lines."""
    by_name = {cost.name: cost for cost in costs}
    word = re.compile(r"\bproxmox_[a-z0-9_]+\b")
    for strings, lines in _test_functions():
        named = {m for s in strings for m in word.findall(s) if m in by_name}
        for name in named:
            by_name[name].tests += 1
            by_name[name].test_lines += lines / len(named)


def shared_helpers() -> dict[str, int]:
    """Code lines of the helper modules every tool leans on (docstrings, comments,
    imports left out)."""
    found = {}
    for module in SHARED:
        text = inspect.getsource(module)
        tree = ast.parse(text)
        body = [s for s in tree.body if not isinstance(s, ast.Import | ast.ImportFrom)]
        lines = {n for stmt in body for n in _span(stmt)}
        prose = set().union(*(_prose_lines(stmt) for stmt in body))
        found[module.__name__] = code_lines(text.splitlines(), sorted(lines), prose)
    return found


def _spread(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.0f}, "
        f"min {min(values):.0f}, max {max(values):.0f}"
    )


def report(costs: list[Cost]) -> None:
    print(f"{'code':>5} {'decl':>5} {'ex':>4} {'model':>5} {'logic':>5} {'shared':>6}"
          f" {'tests':>5} {'t.lines':>7}  tier         tool")  # fmt: skip
    for c in sorted(costs, key=lambda c: (c.code, c.name)):
        print(
            f"{c.code:>5} {c.decl:>5} {c.ex:>4} {c.models:>5} {c.logic:>5} {c.shared:>6.1f}"
            f" {c.tests:>5} {c.test_lines:>7.1f}  {c.tier:<12} {c.name}"
        )
    print(f"\n{len(costs)} tools in {len({c.module for c in costs})} modules")
    print(_spread("code lines per tool (decl + models + logic)", [c.code for c in costs]))
    shared = [c.code + c.shared for c in costs]
    print(_spread("  with its share of its module's shared code", shared))
    print(_spread("declaration lines", [c.decl for c in costs]))
    print(_spread("test functions naming the tool", [c.tests for c in costs]))
    print(_spread("test lines per tool", [c.test_lines for c in costs]))
    writes = [c for c in costs if c.tier != Tier.READ.value]
    cheapest = min(writes, key=lambda c: (c.code, c.name))
    print(
        f"cheapest write tool: {cheapest.name}, {cheapest.code} lines (declaration "
        f"{cheapest.decl}, of which {cheapest.ex} examples/rejects; models {cheapest.models}; "
        f"logic {cheapest.logic}) + {cheapest.test_lines:.0f} of test in {cheapest.tests} "
        "test functions"
    )
    for name, lines in shared_helpers().items():
        print(f"shared, counted once: {name} {lines} lines")
    code = statistics.median([c.code for c in costs])
    test = statistics.median([c.test_lines for c in costs])
    print(f"one new typed tool: {code:.0f} lines of code + {test:.0f} of test (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per tool")
    costs = measure(all_tools())
    count_tests(costs)
    if parser.parse_args().json:
        for cost in costs:
            print(json.dumps({**asdict(cost), "code": cost.code}))
        return
    report(costs)


if __name__ == "__main__":
    main()
