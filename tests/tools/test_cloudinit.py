"""The cloud-init tools end to end: the MCP SDK client, the gateway and a fresh simulator
each. The declared examples and rejects run in test_examples.py; these show the keys
as PVE stores them (SSH keys URL-encoded), the password taken from an operator's secret
and found in no plan, result or audit record, and a regeneration with its plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.tools.calls import call, ok
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

TEMPLATE = 9000  # pve2, tmpl-deb12: a cloud-init drive, ciuser debian
KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMx7 ops@example",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= backup key",
]
PASSWORD = "correct horse battery staple"


async def test_set_stores_keys_as_pve_wants_and_the_password_only_from_a_secret(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVEMCP_GUEST_SECRET_WEB_ADMIN", PASSWORD)
    arguments: dict[str, Any] = {
        "vmid": TEMPLATE,
        "user": "ops",
        "ssh_keys": KEYS,
        "ipconfig": {"0": "ip=192.0.2.10/24,gw=192.0.2.1"},
        "nameserver": "192.0.2.53",
        "searchdomain": "corp.example",
        "password_secret": "web-admin",
    }
    plan = ok(await call(session, "proxmox_cloudinit_set", **arguments, dry_run=True))
    changes = {c["field"]: c for c in plan["plan"]["changes"]}
    assert changes["ciuser"] == {"field": "ciuser", "before": "debian", "after": "ops"}
    assert changes["cipassword"]["after"] == "[REDACTED]"
    done = ok(await call(session, "proxmox_cloudinit_set", **arguments))
    assert (done["vmid"], done["node"]) == (TEMPLATE, "pve2")

    config = ok(await call(session, "proxmox_guest_config", vmid=TEMPLATE))["config"]
    assert config["sshkeys"] == quote("\n".join(KEYS) + "\n", safe="")
    assert config["ipconfig0"] == "ip=192.0.2.10/24,gw=192.0.2.1"
    assert config["cipassword"] == "[REDACTED]"  # PVE shows stars; the gateway masks by key
    user = ok(await call(session, "proxmox_cloudinit_show", vmid=TEMPLATE))
    assert "user: ops\n" in user["data"] and f"  - {KEYS[1]}\n" in user["data"]
    assert "fqdn: tmpl-deb12.corp.example\n" in user["data"]
    changed = {c["field"] for c in user["changed"]}
    assert {"ciuser", "sshkeys", "cipassword", "nameserver", "searchdomain"} <= changed

    sent = [params for method, _, params, _ in session.calls if method == "PUT"]
    assert sent and sent[0]["cipassword"] == PASSWORD, "PVE got the secret's value"
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "cloudinit_set" in audit and PASSWORD not in audit
    assert PASSWORD not in str(plan) and PASSWORD not in str(done)


async def test_a_missing_secret_and_bad_addresses_name_their_field(session: Session) -> None:
    missing = error_of(await call(session, "proxmox_cloudinit_set", vmid=TEMPLATE,
                                  password_secret="nope"))  # fmt: skip
    assert missing is not None and missing["code"] == "secret_not_found"
    assert missing["field"] == "password_secret"
    assert "PVEMCP_GUEST_SECRET_NOPE" in missing["hint"]
    for ipconfig in ({"0": "ip=192.0.2.10"}, {"0": "gw=dhcp"}, {"32": "ip=dhcp"}):
        bad = error_of(await call(session, "proxmox_cloudinit_set", vmid=TEMPLATE,
                                  ipconfig=ipconfig))  # fmt: skip
        assert bad is not None and bad["code"] == "invalid_argument", ipconfig
        assert "ipconfig" in bad["message"] or bad.get("field", "").startswith("ipconfig")
    assert session.writes() == []


async def test_regenerate_shows_what_changes_on_the_drive(session: Session) -> None:
    ok(await call(session, "proxmox_cloudinit_set", vmid=TEMPLATE, user="ops",
                  nameserver="192.0.2.53"))  # fmt: skip
    plan = ok(await call(session, "proxmox_cloudinit_regenerate", vmid=TEMPLATE, dry_run=True))
    changes = {c["field"]: c for c in plan["plan"]["changes"]}
    assert changes["ciuser"] == {"field": "ciuser", "before": "debian", "after": "ops"}
    assert changes["nameserver"] == {"field": "nameserver", "after": "192.0.2.53"}
    assert [c["method"] for c in plan["plan"]["calls"]] == ["PUT"]
    ok(await call(session, "proxmox_cloudinit_regenerate", vmid=TEMPLATE))
    after = ok(await call(session, "proxmox_cloudinit_show", vmid=TEMPLATE, what="network"))
    assert "changed" not in after
    assert "      - '192.0.2.53'\n" in after["data"]
    again = ok(await call(session, "proxmox_cloudinit_regenerate", vmid=TEMPLATE, dry_run=True))
    assert again["plan"]["changes"] == []
