"""Cold start and memory of a stdio start, next to the SDK's hello-world server.

Run: `.venv/bin/python bench/cold_start.py` (`--runs N`, default 9). Three servers, spawned
in turn (interleaved, so the machine's load hits each alike):

- floor: `bench/hello_server.py`, one trivial tool on the same MCP SDK;
- `pvemcp serve` over stdio against a simulator already running in this process (the real
  stdio start: no embedded simulator);
- `pvemcp demo`, which starts its embedded simulator first.

For each spawn: wall time from spawn to the `tools/list` answer over stdio (raw JSON-RPC
lines, so no client-side cost differs), and the peak RSS (`VmHWM` in /proc/PID/status)
right after that answer; once per server, the number of modules it had imported (an atexit
hook in a wrapper). Printed: medians, the floor's, the difference and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread

HELLO = str(Path(__file__).with_name("hello_server.py"))

_HANDSHAKE: list[dict[str, Any]] = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]

# Runs the server's command the way `python -m` / `python FILE` would, and writes the
# names of the modules it had imported to argv[1] at exit.
_COUNT_MODULES = """
import atexit, runpy, sys
out, kind, target = sys.argv[1:4]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
if kind == "module":
    sys.argv = [target, *sys.argv[4:]]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = [target, *sys.argv[4:]]
    runpy.run_path(target, run_name="__main__")
"""


@dataclass
class Server:
    """One server to spawn: a label, how to run it (module or script) and its env."""

    label: str
    kind: str  # "module" (python -m target) or "path" (python target)
    target: str
    args: list[str]
    env: dict[str, str]
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_kib: list[int] = field(default_factory=list)
    modules: int = 0

    def command(self) -> list[str]:
        head = ["-m", self.target] if self.kind == "module" else [self.target]
        return [sys.executable, *head, *self.args]


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/PID/status (Linux only)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _talk(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Spawn, handshake, `tools/list`: seconds to the answer, CPU seconds used by then
    and the peak RSS then (KiB)."""
    started = time.perf_counter()
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        answer: dict[str, object] = {}
        for message in _HANDSHAKE:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" in message:
                answer = json.loads(proc.stdout.readline())
        elapsed = time.perf_counter() - started
        cpu, peak = _cpu_seconds(proc.pid), _peak_kib(proc.pid)
        proc.stdin.close()
        proc.wait(timeout=30)
    result = answer.get("result")
    assert isinstance(result, dict), f"no tools/list answer: {answer}"
    assert result.get("tools"), f"no tools in the answer: {answer}"
    return elapsed, cpu, peak


def _count_modules(server: Server, tmp: Path) -> int:
    out = tmp / f"modules-{server.label}.txt"
    command = [sys.executable, "-c", _COUNT_MODULES, str(out), server.kind, server.target]
    _talk([*command, *server.args], server.env)
    return len(out.read_text().split())


@contextmanager
def servers(tmp: Path, others: dict[str, Path]) -> Iterator[list[Server]]:
    """The three servers, with a simulator running for `pvemcp serve` meanwhile; plus, for
    each of `others` (label: a `src` directory, e.g. an older commit's), its `pvemcp serve`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PVEMCP_")}
    # Bytecode cached as in any install (this machine's env may forbid writing it): the
    # unmeasured first spawn of each server fills a private cache.
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    base["PVEMCP_AUDIT__PATH"] = str(tmp / "audit.jsonl")
    base["PVEMCP_LOG_LEVEL"] = "WARNING"
    with simulator_in_thread(SimulatorOptions(time_scale=0)) as sim:
        serve_env = {
            **base,
            "PVEMCP_API_URL": sim.url,
            "PVEMCP_TOKEN_ID": sim.token_id,
            "PVEMCP_TOKEN_SECRET": sim.token_secret,
            "PVEMCP_TLS": "fingerprint",
            "PVEMCP_FINGERPRINT": sim.fingerprint,
        }
        yield [
            Server("floor", "path", HELLO, [], base),
            Server("serve", "module", "pvemcp", ["serve"], serve_env),
            Server("demo", "module", "pvemcp", ["demo"], base),
            *(
                Server(label, "module", "pvemcp", ["serve"], {**serve_env, "PYTHONPATH": str(src)})
                for label, src in others.items()
            ),
        ]


def measure(runs: int, others: dict[str, Path] | None = None) -> list[Server]:
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp), others or {}) as spawned:
        for server in spawned:  # once each, unmeasured: bytecode caches, page cache
            _talk(server.command(), server.env)
        for _ in range(runs):
            for server in spawned:
                seconds, cpu, peak = _talk(server.command(), server.env)
                server.seconds.append(seconds)
                server.cpu.append(cpu)
                server.peak_kib.append(peak)
        for server in spawned:
            server.modules = _count_modules(server, Path(tmp))
    return spawned


def _figure(label: str, unit: str, values: list[float], floor: float) -> str:
    cells = "".join(f"{v:10.1f} {v - floor:+8.1f} (x{v / floor:4.2f})" for v in values)
    return f"  {label:<26}{floor:8.1f} {unit:<4}{cells}"


def report(spawned: list[Server], runs: int) -> list[str]:
    """One line a figure: the floor's value, then each pvemcp server's with the difference
    and the ratio to the floor."""
    floor, others = spawned[0], spawned[1:]

    def medians(pick: Callable[[Server], list[float]], scale: float) -> list[float]:
        return [statistics.median(pick(server)) * scale for server in spawned]

    figures = (
        ("spawn -> tools/list (wall)", "ms", medians(lambda s: s.seconds, 1000)),
        ("CPU used by then", "ms", medians(lambda s: s.cpu, 1000)),
        ("peak RSS (VmHWM)", "MiB", medians(lambda s: [k / 1024 for k in s.peak_kib], 1)),
        ("modules imported", "", [float(server.modules) for server in spawned]),
    )
    header = "".join(f"{s.label + ' (vs floor)':>30}" for s in others)
    lines = [
        f"cold start over stdio: median of {runs} interleaved spawns of each server",
        f"  {'figure':<26}{floor.label:>8}     {header}",
    ]
    lines += [_figure(label, unit, values[1:], values[0]) for label, unit, values in figures]
    lines.append(
        "  floor: bench/hello_server.py (one trivial tool, same SDK); serve: pvemcp serve"
        " against a simulator already running; demo: pvemcp demo (embedded simulator)"
    )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="spawns of each server")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also spawn `pvemcp serve` from another source tree (its src/ directory, e.g."
        " `git archive COMMIT src | tar -x -C DIR`), interleaved with the others",
    )
    args = parser.parse_args()
    others = {label: Path(src) for label, src in (item.split("=", 1) for item in args.also)}
    print("\n".join(report(measure(args.runs, others), args.runs)))
