"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, pinned by
tests/support/conformance/package-lock.json) against `pvemcp demo --mode http`, for each
protocol version: the handshake era (2025-11-25) and the stateless era (2026-07-28).

Each version runs `conformance server --requirements VERSION`: exactly the scenarios that
revision requires, at its own wire, plus the ones it runs without scoring (the Tasks
extension). Its results are judged against tests/support/conformance/expected.json: a
scenario marked "pass" must have no failing check, any other may fail only the checks
listed for it, with the reason. A check that passed and now fails fails this test; one
listed as failing that now passes is printed, so the file can be tightened.

The server runs as shipped: `auth = "none"` on loopback (the suite sends no credentials)
and the default rate limit, never raised here. Each scenario is one client's session (an
initialize, lists, a few calls), and each must fit the limit; but for 2025-11-25 the suite
runs 33 such clients back to back from one address, about 150 requests in half a second,
which is a flood by the limiter's measure. So a scenario refused with 429 is run again
alone, after the second its `Retry-After` asks for, as a client honouring 429 would, and
the test prints which were. Each version gets its own server (its own buckets).

The suite tests servers over HTTP only (`--url`; there is no stdio command), so the stdio
transport is covered by tests/e2e/test_stdio_demo.py (the SDK's own client) and
tests/e2e/test_stdio_malformed.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_both_mode import free_port
from tests.e2e.test_http_serve import env_for, running, wait_healthy

pytestmark = pytest.mark.slow

SUITE = Path(__file__).resolve().parents[1] / "support" / "conformance"
BIN = SUITE / "node_modules" / ".bin"
EXPECTED: dict[str, Any] = json.loads((SUITE / "expected.json").read_text())
# The suite counts a WARNING (a SHOULD not met) as a failure in its own baselines; so do we.
FAILING = {"FAILURE", "WARNING"}
# How a check reports a refusal by the rate limiter: pvemcp's 429 body, or the status.
RATE_LIMITED = re.compile(r"rate limit exceeded|\b429\b")
TIMEOUT = ("--timeout", "10000")  # per scenario, in ms: a hung one fails in seconds


def installed_version() -> str:
    package = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "package.json"
    if not package.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm/Node is not installed: the conformance suite cannot be installed")
        pytest.fail("the conformance suite is not installed: run scripts/bootstrap --test")
    version: str = json.loads(package.read_text())["version"]
    return version


def run_suite(url: str, out: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    """`conformance server` on `selection` (e.g. `--requirements VERSION`), results in `out`."""
    env = {
        **os.environ,
        # Node 22 from the npm package first: the suite needs it (the machine may have 20).
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(out.parent / "home"),
    }
    return subprocess.run(
        [str(BIN / "conformance"), "server", "--url", url, *selection, *TIMEOUT, "-o", str(out)],
        env=env,
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def failing_checks(out: Path) -> dict[str, dict[str, str]]:
    """Scenario -> {id: message} of its checks that did not pass, from the suite's
    per-scenario `server-<scenario>-<timestamp>/checks.json`."""
    found: dict[str, dict[str, str]] = {}
    for checks_file in out.glob("server-*/checks.json"):
        name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name)
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text())
        found[name.removeprefix("server-")] = {
            check["id"]: str(check.get("errorMessage") or check.get("description", ""))[:200]
            for check in checks
            if check["status"] in FAILING
        }
    return found


def judge(
    expected: dict[str, Any], found: dict[str, dict[str, str]]
) -> tuple[list[str], list[str]]:
    """(regressions, now passing) of one run against its expected results."""
    regressions: list[str] = []
    now_passing: list[str] = []
    for scenario in sorted(expected.keys() - found.keys()):
        regressions.append(f"{scenario}: expected to run, but the suite gave no result")
    for scenario, failing in sorted(found.items()):
        entry = expected.get(scenario)
        if entry is None:
            regressions.append(f"{scenario}: not in expected.json (failing: {sorted(failing)})")
            continue
        allowed = set() if entry == "pass" else set(entry["fails"])
        regressions.extend(
            f"{scenario}: {check} failed: {message}"
            for check, message in sorted(failing.items())
            if check not in allowed
        )
        now_passing.extend(f"{scenario}: {check}" for check in sorted(allowed - failing.keys()))
    return regressions, now_passing


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
def test_conformance_suite_over_http(tmp_path: Path, version: str) -> None:
    assert installed_version() == EXPECTED["suite"], (
        "expected.json was written for another release of the suite: re-run it and update"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(tmp_path, port=str(port), auth="none", allow_unauthenticated="true")
    for name in list(env):
        if name.startswith("PVEMCP_HTTP__RATE_LIMIT") or name == "PVEMCP_HTTP__STATIC_KEYS":
            del env[name]  # the shipped defaults, whatever the caller's environment says
    with running(tmp_path, "http", env) as process:
        wait_healthy(base, process)
        run = run_suite(f"{base}/mcp", tmp_path / "results", "--requirements", version)
        found = failing_checks(tmp_path / "results")
        assert found, f"the suite gave no results (exit {run.returncode}):\n{run.stderr[-3000:]}"
        limited = sorted(
            scenario
            for scenario, failing in found.items()
            if any(RATE_LIMITED.search(message) for message in failing.values())
        )
        for scenario in limited:
            time.sleep(1)  # the Retry-After of the 429
            alone = tmp_path / f"alone-{scenario}"
            again = ("--scenario", scenario, "--spec-version", version, "--force")  # extensions too
            run_suite(f"{base}/mcp", alone, *again)
            found[scenario] = failing_checks(alone).get(scenario, {"not run": "no result"})
    if limited:
        print(f"conformance {version}: 429 back to back, run again alone:", *limited, sep="\n  ")
    regressions, now_passing = judge(EXPECTED[version], found)
    if now_passing:
        print(
            f"conformance {version}: now passing, tighten expected.json:", *now_passing, sep="\n  "
        )
    assert not regressions, f"conformance {version} regressed:\n  " + "\n  ".join(regressions)
