"""A stdio server imports only what stdio needs (issue 15's cold start).

The real `pvemcp serve` runs as a subprocess over stdio against a configured REST cluster,
answers initialize and tools/list, and stops at stdin EOF; on exit it writes the modules it
had imported. None of the stacks a stdio start against a REST cluster does not use may be
among them: each is a few dozen modules and tens of milliseconds on every client launch.
Nor may it collect garbage before its start-up heap is frozen (`cli._serve`). The figures
against the SDK's hello-world server are bench/cold_start.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOT_FOR_STDIO = (
    "asyncssh",  # only a cluster with [ssh]
    "joserfc",  # only HTTP with OIDC
    "prometheus_client",  # only the HTTP app's /metrics
    "pvemcp.simulator",  # only `pvemcp demo`
    "pvemcp.transports.edge",  # only http / both
    "pvemcp.transports.http",
    "hvac",  # only a Vault secret source
    # The REST client's HTTP stack loads with the first call to a cluster, which listing
    # tools never makes (the SDK imports httpx2 itself, but not its connection layer).
    "pvemcp.proxmox.rest",
    "pvemcp.proxmox.tls",
    "httpcore2",
    "h11",
    "truststore",
    "pvemcp.proxmox.pvesh",  # only a cluster with [ssh] backend = "pvesh"
    "pvemcp.transports.approvals_http",  # only HTTP
    # Other commands' modules: audit reports, enrolment, the generated references.
    "pvemcp.policy.audit_report",
    "pvemcp.enroll",
    "pvemcp.tooldoc",
    "pvemcp.configdoc",
    "jsonschema",  # the SDK client's output validation; a server never validates with it
)

# Runs `pvemcp serve`; at exit writes the modules it imported, then a line counting the
# garbage collections made while the start-up heap was being built (the SDK imported,
# nothing frozen yet) and one counting those made after it was frozen.
RUN = """
import atexit, gc, runpy, sys
out = sys.argv[1]
counts = {"building": 0, "serving": 0}
def count(phase, info):
    if phase == "start" and "mcp" in sys.modules:
        counts["serving" if gc.get_freeze_count() else "building"] += 1
gc.callbacks.append(count)
atexit.register(lambda: open(out, "w").write(
    "\\n".join([*sorted(sys.modules), f"gc {counts['building']} {counts['serving']}"])))
sys.argv = ["pvemcp", "serve"]
runpy.run_module("pvemcp", run_name="__main__")
"""


def test_a_stdio_start_imports_no_unused_stack(tmp_path: Path) -> None:
    modules = tmp_path / "modules.txt"
    env = {
        **os.environ,
        "PVEMCP_API_URL": "https://127.0.0.1:9",
        "PVEMCP_TOKEN_ID": "pvemcp@pve!gateway",
        "PVEMCP_TOKEN_SECRET": "00000000-0000-0000-0000-000000000000",
        "PVEMCP_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
    }
    env.pop("PVEMCP_CONFIG", None)
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    requests: list[dict[str, object]] = [
        hello,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    with subprocess.Popen(
        [sys.executable, "-c", RUN, str(modules)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    ) as server:
        assert server.stdin is not None and server.stdout is not None
        answers = []
        for request in requests:
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            if "id" in request:
                answers.append(json.loads(server.stdout.readline()))
        server.stdin.close()
        assert server.wait(timeout=30) == 0
    assert answers[1]["result"]["tools"], "the server answered tools/list"
    *names, collections = modules.read_text().splitlines()
    loaded = set(names)
    assert "mcp" in loaded, "the module list is the server's"
    found = sorted(m for m in loaded if m.split(".")[0] in NOT_FOR_STDIO or m in NOT_FOR_STDIO)
    assert found == [], f"a stdio start imported {found}"
    _, building, serving = collections.split()
    # The start collects no garbage (cli._serve), and collection resumes once it is frozen:
    # loading the tools for tools/list makes enough objects for at least one.
    assert (int(building), int(serving) > 0) == (0, True), collections
