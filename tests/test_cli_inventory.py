"""`pvemcp inventory` as a subprocess against the embedded simulator: YAML on stdout, INI
to a file, both parsed as Ansible reads them; the call audited as the local principal's;
a bad filter a usage error naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import read_audit
from tests.tools.test_inventory import ansible_ini, ansible_yaml


def inventory(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PVEMCP_", "PYTHONWARN"))}
    env["PVEMCP_AUDIT__PATH"] = str(tmp_path / "audit.jsonl")
    return subprocess.run(
        [sys.executable, "-m", "pvemcp", "inventory", "--demo", *args],
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_yaml_on_stdout_audited_as_the_local_principal(tmp_path: Path) -> None:
    done = inventory(tmp_path)
    assert done.returncode == 0, done.stderr
    hosts, groups = ansible_yaml(done.stdout)
    assert len(hosts) == 13 and hosts["web01"]["ansible_host"].startswith("10.")
    assert hosts["web01"]["proxmox_pool"] == "prod" and groups["tag_test"] == [
        "test-102",
        "test-203",
    ]
    logged = [json.loads(line) for line in done.stderr.splitlines()]  # JSON lines only
    (written,) = [line for line in logged if line["event"] == "inventory_written"]
    assert written["hosts"] == 13 and "db02" in written["without_ip"]
    records = read_audit(tmp_path / "audit.jsonl")
    calls = [r for r in records if r.get("what", {}).get("tool") == "proxmox_inventory_export"]
    assert calls and all(r["who"]["sub"] == "local" for r in calls), calls
    assert calls[-1]["outcome"]["status"] == "ok"


def test_ini_to_a_file_with_filters(tmp_path: Path) -> None:
    out = tmp_path / "hosts.ini"
    done = inventory(tmp_path, "--format", "ini", "--tag", "prod", "--no-ips", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    hosts, groups = ansible_ini(out.read_text())
    assert list(hosts) == ["web01", "web02", "db01", "db02"]
    assert hosts["web01"]["proxmox_vmid"] == 100 and hosts["web01"]["proxmox_tags"] == [
        "prod",
        "web",
    ]
    assert groups["status_paused"] == ["db02"]


def test_a_bad_filter_is_refused_naming_the_field(tmp_path: Path) -> None:
    done = inventory(tmp_path, "--tag", "two words")
    assert done.returncode == 1 and done.stdout == ""
    assert "pvemcp: invalid_argument:" in done.stderr and "tag" in done.stderr
