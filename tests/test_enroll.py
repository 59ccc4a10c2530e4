"""`pvemcp enroll` against the simulator over HTTPS (its self-signed certificate): the
printed config starts a gateway that answers through the MCP SDK client; a wrong password
or an unpinned certificate creates nothing and (for the certificate) sends no password;
a re-run rotates the token; `--revoke` removes what enrolment made."""

from __future__ import annotations

import io
import json
import os
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult

from pvemcp import cli
from pvemcp.config import load_settings
from pvemcp.enroll import (
    OPERATOR_PRIVILEGES,
    OPERATOR_ROLE,
    EnrollError,
    EnrollOptions,
    Prompts,
    SshTarget,
    VaultTarget,
    run_async,
)
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.server import (
    SimulatorHandle,
    SimulatorOptions,
    serve_simulator,
    simulator_in_thread,
)
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.secrets.baoserver import ROOT_TOKEN, bao_binary, free_port_pair, running_bao
from tests.support.sshd import running_sshd, unavailable_reason

PASSWORD = "correct horse battery"
WRONG_PIN = ":".join(["AB"] * 32)


@pytest.fixture
async def sim(anyio_backend: str) -> AsyncIterator[SimulatorHandle]:
    """A fresh simulator per test (enrolment changes its users), root@pam's password set."""
    async with serve_simulator(SimulatorOptions(time_scale=0.0)) as simulator:
        simulator.state.access.passwords["root@pam"] = PASSWORD
        yield simulator


class Operator:
    """Answers the prompts as a person at the terminal would, and records them."""

    def __init__(self, password: str = PASSWORD, *, confirm: bool = True) -> None:
        self.asked: list[str] = []
        self._password = password
        self._confirm = confirm

    def prompts(self, interactive: bool = True) -> Prompts:
        def password(prompt: str) -> str:
            self.asked.append(prompt)
            return self._password

        def confirm(question: str) -> bool:
            self.asked.append(question)
            return self._confirm

        return Prompts(interactive=interactive, password=password, confirm=confirm)


def options(sim: SimulatorHandle, secret_file: Path, **changes: object) -> EnrollOptions:
    values: dict[str, object] = {"url": sim.url, "profile": "operator", "secret_file": secret_file}
    values.update(changes)
    return EnrollOptions(**values)  # type: ignore[arg-type]


async def call_through_gateway(
    config: str, tmp_path: Path, tool: str, arguments: dict[str, object]
) -> CallToolResult:
    """Start a gateway from `config` (plus an audit path and the operator policy for the
    local caller, so that PVE's answer is what decides) and call `tool` through the MCP
    SDK client."""
    path = tmp_path / "pvemcp.toml"
    audit = tmp_path / "audit.jsonl"
    path.write_text(
        f"{config}\n[audit]\npath = {json.dumps(str(audit))}\n"
        '[policy]\nprofile = "operator"\nprofile_subjects = ["local"]\n'
    )
    async with open_gateway(load_settings(path), Redactor()) as gateway:
        server = build_mcp_server(gateway, local_principal)
        async with Client(server) as client:
            return await client.call_tool(tool, arguments)


async def status_through_gateway(config: str, tmp_path: Path) -> dict[str, object]:
    result = await call_through_gateway(config, tmp_path, "proxmox_cluster_status", {})
    assert not result.is_error, result.content
    structured: dict[str, object] | None = result.structured_content
    assert structured is not None
    return structured


async def version_with(sim: SimulatorHandle, token: str) -> int:
    async with httpx2.AsyncClient(verify=False) as client:
        answer = await client.get(
            f"{sim.url}/api2/json/version", headers={"Authorization": f"PVEAPIToken={token}"}
        )
    return answer.status_code


def secret_of(path: Path) -> str:
    data = tomllib.loads(path.read_text())
    return f"{data['token_id']}={data['token_secret']}"


pytestmark = pytest.mark.anyio


async def test_enrolment_prints_a_config_whose_gateway_works(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pve.toml"
    person = Operator()
    out = io.StringIO()
    config = await run_async(options(sim, secret_file), person.prompts(), out)
    assert config is not None
    # The fingerprint was shown and confirmed before the password was asked.
    assert sim.fingerprint_colons in out.getvalue()
    assert person.asked == ["Is this the node's certificate?", "Password for root@pam: "]
    parsed = tomllib.loads(config)["clusters"]["pve"]
    assert parsed["tls"] == "fingerprint"
    assert parsed["fingerprint"] == sim.fingerprint_colons
    assert parsed["token_id"] == "pvemcp@pve!gateway"
    assert parsed["credentials"] == {"source": "file", "path": str(secret_file)}
    # The secret is in the 0600 file, never in the config.
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    secret = tomllib.loads(secret_file.read_text())["token_secret"]
    assert secret not in config and secret not in out.getvalue()
    # What PVE now holds: the user, the operator role, the ACL on /, a privsep=0 token.
    store = sim.state.access
    assert store.roles()[OPERATOR_ROLE] == frozenset(OPERATOR_PRIVILEGES)
    assert store.acl["/"][("user", "pvemcp@pve")] == {OPERATOR_ROLE: True}
    token = store.token("pvemcp@pve!gateway")
    assert token is not None and token.privsep is False
    status = await status_through_gateway(config, tmp_path)
    assert status["nodes_total"] == 3


async def test_a_wrong_password_creates_nothing(sim: SimulatorHandle, tmp_path: Path) -> None:
    secret_file = tmp_path / "pve.toml"
    with pytest.raises(EnrollError) as caught:
        await run_async(options(sim, secret_file), Operator("hunter2-x").prompts(), io.StringIO())
    assert caught.value.code == "auth_failed"
    assert "nothing was created" in caught.value.message
    assert "hunter2-x" not in str(caught.value)
    assert sim.state.access.logins == ["root@pam"]
    assert "pvemcp@pve" not in sim.state.access.users
    assert OPERATOR_ROLE not in sim.state.access.roles()
    assert not secret_file.exists()


async def test_a_certificate_not_pinned_is_refused_before_the_password_is_sent(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pve.toml"
    person = Operator()
    with pytest.raises(EnrollError) as mismatch:
        await run_async(
            options(sim, secret_file, fingerprint=WRONG_PIN), person.prompts(), io.StringIO()
        )
    assert mismatch.value.code == "tls_mismatch"
    assert sim.fingerprint_colons in mismatch.value.message
    # No terminal and no --fingerprint: no trust on first use.
    with pytest.raises(EnrollError) as unpinned:
        await run_async(options(sim, secret_file), person.prompts(False), io.StringIO())
    assert unpinned.value.code == "tls_unpinned"
    assert "--fingerprint" in unpinned.value.hint
    # The operator says no.
    with pytest.raises(EnrollError) as declined:
        await run_async(options(sim, secret_file), Operator(confirm=False).prompts(), io.StringIO())
    assert declined.value.code == "not_confirmed"
    assert person.asked == []
    assert sim.state.access.logins == []
    assert "pvemcp@pve" not in sim.state.access.users


async def test_a_secret_file_others_can_read_is_refused_first(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pve.toml"
    secret_file.write_text("")
    secret_file.chmod(0o644)
    with pytest.raises(EnrollError) as caught:
        await run_async(options(sim, secret_file), Operator().prompts(), io.StringIO())
    assert caught.value.code == "secret_file"
    assert f"chmod 600 {secret_file}" in caught.value.hint
    assert sim.state.access.logins == []


async def test_a_rerun_rotates_the_token_and_revoke_removes_it(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pve.toml"
    pinned = options(sim, secret_file, fingerprint=sim.fingerprint_colons)
    first = await run_async(pinned, Operator().prompts(False), io.StringIO())
    old = secret_of(secret_file)
    assert await version_with(sim, old) == 200
    # An [ssh] table added to the file by hand survives the rotation.
    secret_file.write_text(secret_file.read_text() + '\n[ssh]\nuser = "pvemcp"\n')
    out = io.StringIO()
    second = await run_async(pinned, Operator().prompts(False), out)
    assert second == first
    assert "deleted the old token pvemcp@pve!gateway (rotation)" in out.getvalue()
    new = secret_of(secret_file)
    assert new != old
    assert tomllib.loads(secret_file.read_text())["ssh"] == {"user": "pvemcp"}
    assert await version_with(sim, old) == 401
    assert await version_with(sim, new) == 200

    # Revoking finds the role from the user's ACL entries, whatever --profile says now.
    revoke = options(
        sim, secret_file, fingerprint=sim.fingerprint_colons, revoke=True, yes=True,
        profile="read-only",
    )  # fmt: skip
    assert await run_async(revoke, Operator().prompts(False), io.StringIO()) is None
    assert await version_with(sim, new) == 401
    assert "pvemcp@pve" not in sim.state.access.users
    assert OPERATOR_ROLE not in sim.state.access.roles()
    assert ("user", "pvemcp@pve") not in sim.state.access.acl.get("/", {})


async def test_revoke_without_confirmation_deletes_only_the_token(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pve.toml"
    pinned = options(sim, secret_file, fingerprint=sim.fingerprint, profile="read-only")
    await run_async(pinned, Operator().prompts(False), io.StringIO())
    revoke = options(sim, secret_file, fingerprint=sim.fingerprint, revoke=True)
    await run_async(revoke, Operator(confirm=False).prompts(), io.StringIO())
    assert sim.state.access.token("pvemcp@pve!gateway") is None
    assert sim.state.access.acl["/"][("user", "pvemcp@pve")] == {"PVEAuditor": True}


def test_the_cli_enrols_with_a_one_time_admin_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pvemcp enroll` as a script would run it: no terminal, the pin and a token file."""
    with simulator_in_thread(SimulatorOptions(time_scale=0.0)) as sim:
        admin = tmp_path / "admin-token"
        admin.write_text(f"{sim.token_id}={sim.token_secret}\n")
        secret_file = tmp_path / "pve.toml"
        argv = ["enroll", "--url", sim.url, "--profile", "read-only", "--cluster", "lab",
                "--fingerprint", sim.fingerprint_colons, "--admin-token-file", str(admin),
                "--secret-file", str(secret_file)]  # fmt: skip
        assert cli.main(argv) == 0
        printed = capsys.readouterr()
        lab = tomllib.loads(printed.out)["clusters"]["lab"]
        assert lab["credentials"]["path"] == str(secret_file)
        assert sim.state.access.acl["/"][("user", "pvemcp@pve")] == {"PVEAuditor": True}
        assert sim.token_secret not in printed.out + printed.err
        # Without the pin and without a terminal: refused, exit 1, a structured message.
        assert cli.main(argv[:7] + argv[9:]) == 1
        assert "error [tls_unpinned]" in capsys.readouterr().err


# --- the simulator's login and custom roles, which enrolment relies on -----------------


async def test_the_simulator_logs_in_with_a_ticket_and_its_csrf_token(
    sim: SimulatorHandle,
) -> None:
    async with httpx2.AsyncClient(base_url=f"{sim.url}/api2/json", verify=False) as client:
        refused = await client.post(
            "/access/ticket", data={"username": "root@pam", "password": "nope"}
        )
        assert (refused.status_code, refused.reason_phrase) == (401, "authentication failure")
        login = await client.post(
            "/access/ticket", data={"username": "root", "realm": "pam", "password": PASSWORD}
        )
        data = login.json()["data"]
        assert data["username"] == "root@pam"
        client.cookies.set("PVEAuthCookie", data["ticket"])
        assert (await client.get("/version")).status_code == 200
        role = {"roleid": "Watcher", "privs": "VM.Audit"}
        # A change without the CSRF prevention token is not authenticated.
        assert (await client.post("/access/roles", data=role)).status_code == 401
        csrf = {"CSRFPreventionToken": data["CSRFPreventionToken"]}
        assert (await client.post("/access/roles", data=role, headers=csrf)).status_code == 200
        again = await client.post("/access/roles", data=role, headers=csrf)
        assert again.json()["message"] == "create role failed: role 'Watcher' already exists\n"
        reserved = await client.post("/access/roles", data={"roleid": "PVEWatcher"}, headers=csrf)
        assert "'PVE' namespace" in reserved.json()["errors"]["roleid"]
        builtin = await client.delete("/access/roles/PVEAuditor", headers=csrf)
        assert "is a built-in role" in builtin.json()["message"]
    assert sim.state.access.roles()["Watcher"] == frozenset({"VM.Audit"})
    assert sim.state.access.logins == ["root@pam", "root@pam"]


async def test_ssh_host_key_is_shown_confirmed_and_pinned(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Against the real sshd fixture: the operator sees the key's fingerprint before the
    password is asked; the known_hosts line lands in the file and the config names it; a
    wrong --ssh-fingerprint stops before any login."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    known_hosts = tmp_path / "known_hosts"
    with running_sshd() as server:
        target = SshTarget(node="pve1", host="127.0.0.1", port=server.port, known_hosts=known_hosts)
        wrong = SshTarget(
            node="pve1", host="127.0.0.1", port=server.port, known_hosts=known_hosts,
            fingerprint="SHA256:" + "A" * 43,
        )  # fmt: skip
        with pytest.raises(EnrollError) as caught:
            await run_async(
                options(sim, tmp_path / "pve.toml", ssh=wrong), Operator().prompts(), io.StringIO()
            )
        assert caught.value.code == "ssh_mismatch"
        assert server.fingerprint in caught.value.message
        assert sim.state.access.logins == []
        person = Operator()
        out = io.StringIO()
        config = await run_async(
            options(sim, tmp_path / "pve.toml", ssh=target), person.prompts(), out
        )
        assert config is not None
        assert server.fingerprint in out.getvalue()
        assert person.asked[1:] == ["Is this the node's SSH host key?", "Password for root@pam: "]
        assert known_hosts.read_text() == server.host_key_line + "\n"
        ssh = tomllib.loads(config)["clusters"]["pve"]["ssh"]
        assert ssh == {
            "known_hosts": str(known_hosts),
            "nodes": {"pve1": f"127.0.0.1:{server.port}"},
        }


async def test_the_secret_goes_to_openbao_and_a_refused_vault_token_stops_first(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Against a real OpenBao dev server: the KV v2 secret holds the new token, the config
    names the mount and path; a Vault token Vault refuses stops before the node is asked."""
    assert bao_binary() is not None, "the bao binary is missing (scripts/bootstrap)"
    token_file = tmp_path / "vault-token"
    with running_bao(free_port_pair(), tmp_path / "bao.log") as bao:
        token_file.write_text("not-a-vault-token\n")
        target = VaultTarget(url=bao.url, path="pvemcp/lab", token_file=token_file)
        refused = EnrollOptions(url=sim.url, vault=target, fingerprint=sim.fingerprint)
        with pytest.raises(EnrollError) as caught:
            await run_async(refused, Operator().prompts(False), io.StringIO())
        assert caught.value.code == "vault"
        assert sim.state.access.logins == []
        token_file.write_text(ROOT_TOKEN + "\n")
        config = await run_async(refused, Operator().prompts(False), io.StringIO())
        assert config is not None
        stored = bao.root.secrets.kv.v2.read_secret_version(
            path="pvemcp/lab", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
    assert stored["token_id"] == "pvemcp@pve!gateway"
    assert await version_with(sim, f"{stored['token_id']}={stored['token_secret']}") == 200
    credentials = tomllib.loads(config)["clusters"]["pve"]["credentials"]
    assert credentials == {
        "source": "vault",
        "url": bao.url,
        "mount": "secret",
        "path": "pvemcp/lab",
        "kv_version": 2,
    }
    assert stored["token_secret"] not in config


@pytest.mark.parametrize(("profile", "allowed"), [("read-only", False), ("operator", True)])
async def test_the_profiles_role_is_what_pve_enforces(
    sim: SimulatorHandle, tmp_path: Path, profile: str, allowed: bool
) -> None:
    """The enrolled token powers a guest with the operator profile; with read-only PVE
    itself refuses, naming the privilege (the simulator's permission model)."""
    secret_file = tmp_path / "pve.toml"
    pinned = options(sim, secret_file, fingerprint=sim.fingerprint, profile=profile)
    config = await run_async(pinned, Operator().prompts(False), io.StringIO())
    assert config is not None
    start = {"vmid": 101, "action": "start"}
    result = await call_through_gateway(config, tmp_path, "proxmox_guest_power", start)
    assert result.is_error is not allowed, result.content
    if not allowed:
        text = result.content[0].text  # type: ignore[union-attr]
        assert "VM.PowerMgmt" in text
