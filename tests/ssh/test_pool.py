"""The SSH pool against a real OpenSSH server: pinning, auth, limits, reuse, recovery."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import anyio
import asyncssh
import pytest

from pvemcp.proxmox.errors import (
    CredentialsUnavailable,
    SshAuthError,
    SshError,
    SshHostKeyError,
    SshTimeout,
    SshUnreachable,
)
from pvemcp.proxmox.ssh import SshPool
from tests.support.sshd import PASSPHRASE, Sshd, free_port

from .conftest import credentials, ssh_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def other_key_line(server: Sshd) -> str:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    return f"[127.0.0.1]:{server.port} {' '.join(key.split()[:2])}"


async def test_run_reports_everything_the_audit_needs(pool: SshPool, sshd: Sshd) -> None:
    result = await pool.run("pve1", ["echo", "hello"])
    assert result.exit_code == 0 and result.signal is None and not result.timed_out
    assert result.stdout == b"hello\n" and result.stderr == b""
    assert result.command == "timeout --kill-after=5s 15s echo hello"
    assert result.argv == ("echo", "hello")
    assert result.node == "pve1" and result.user == sshd.user
    assert result.host_key_fingerprint == sshd.fingerprint
    assert result.stdout_sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert 0 < result.duration < 5


async def test_non_zero_exit_is_a_result_not_an_error(pool: SshPool) -> None:
    result = await pool.run("pve1", ["sh", "-c", "echo oops >&2; exit 3"])
    assert result.exit_code == 3 and result.stderr == b"oops\n"


async def test_one_connection_is_reused(pool: SshPool) -> None:
    results = [await pool.run("pve1", ["true"]) for _ in range(10)]
    assert len({r.connection_id for r in results}) == 1


async def test_changed_host_key_is_refused_with_the_fingerprint(sshd: Sshd) -> None:
    pinned = other_key_line(sshd)
    login = credentials(sshd, pins=(pinned,))
    ssh = SshPool("lab", ssh_config(sshd), lambda: login)
    with pytest.raises(SshHostKeyError) as caught:
        await ssh.run("pve1", ["true"])
    error = caught.value
    assert error.fingerprint == sshd.fingerprint and error.node == "pve1"
    assert error.pin_line == sshd.host_key_line
    assert sshd.fingerprint in error.message and "differs from the pinned key" in error.message
    assert f'ssh_host_keys.pve1 = ["{sshd.host_key_line}"]' in error.message
    await ssh.aclose()


async def test_pinned_key_of_another_type_is_refused(sshd: Sshd) -> None:
    ecdsa = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key("openssh")
    login = credentials(sshd, pins=(ecdsa.decode().strip(),))
    ssh = SshPool("lab", ssh_config(sshd), lambda: login)
    # sshd drops a client that accepts none of its key types; a probe shows the real key.
    with pytest.raises(SshHostKeyError, match="differs from the pinned key") as caught:
        await ssh.run("pve1", ["true"])
    assert caught.value.fingerprint == sshd.fingerprint
    await ssh.aclose()


async def test_unknown_host_is_refused_not_trusted_on_first_use(sshd: Sshd) -> None:
    login = credentials(sshd, pins=())
    ssh = SshPool("lab", ssh_config(sshd), lambda: login)
    with pytest.raises(SshHostKeyError, match="no host key is pinned") as caught:
        await ssh.run("pve1", ["true"])
    assert caught.value.fingerprint == sshd.fingerprint
    # Still refused the second time: nothing was remembered.
    with pytest.raises(SshHostKeyError):
        await ssh.run("pve1", ["true"])
    await ssh.aclose()


async def test_known_hosts_file_pins_and_refuses(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.host_key_line + "\n")
    login = credentials(sshd, pins=())
    ssh = SshPool("lab", ssh_config(sshd, known_hosts=known), lambda: login)
    assert (await ssh.run("pve1", ["true"])).exit_code == 0
    await ssh.aclose()
    known.write_text(other_key_line(sshd) + "\n")
    ssh = SshPool("lab", ssh_config(sshd, known_hosts=known), lambda: login)
    with pytest.raises(SshHostKeyError, match="differs") as caught:
        await ssh.run("pve1", ["true"])
    assert str(known) in caught.value.message
    await ssh.aclose()


async def test_wrong_client_key_is_refused(sshd: Sshd) -> None:
    login = credentials(sshd, key_path=sshd.keys.stranger)
    ssh = SshPool("lab", ssh_config(sshd), lambda: login)
    with pytest.raises(SshAuthError, match="refused the SSH login"):
        await ssh.run("pve1", ["true"])
    await ssh.aclose()


async def test_passphrase_protected_key(sshd: Sshd) -> None:
    good = credentials(sshd, key_path=sshd.keys.encrypted, passphrase=PASSPHRASE)
    ssh = SshPool("lab", ssh_config(sshd), lambda: good)
    assert (await ssh.run("pve1", ["true"])).exit_code == 0
    await ssh.aclose()
    wrong = credentials(sshd, key_path=sshd.keys.encrypted, passphrase="not it")
    ssh = SshPool("lab", ssh_config(sshd), lambda: wrong)
    with pytest.raises(SshAuthError, match="passphrase is wrong"):
        await ssh.run("pve1", ["true"])
    missing = credentials(sshd, key_path=sshd.keys.encrypted)
    ssh = SshPool("lab", ssh_config(sshd), lambda: missing)
    with pytest.raises(SshAuthError, match="encrypted and no ssh_passphrase"):
        await ssh.run("pve1", ["true"])


async def test_missing_credentials_fail_before_connecting(sshd: Sshd) -> None:
    ssh = SshPool("lab", ssh_config(sshd), lambda: None)
    with pytest.raises(SshAuthError, match="no SSH credentials"):
        await ssh.run("pve1", ["true"])

    def unavailable() -> None:
        raise CredentialsUnavailable("vault is sealed")

    ssh = SshPool("lab", ssh_config(sshd), unavailable)
    with pytest.raises(CredentialsUnavailable):
        await ssh.run("pve1", ["true"])


async def test_unreachable_node(sshd: Sshd) -> None:
    login = credentials(sshd)
    config = ssh_config(sshd, nodes={"pve1": f"127.0.0.1:{free_port()}"})
    ssh = SshPool("lab", config, lambda: login)
    with pytest.raises(SshUnreachable, match="Connection refused"):
        await ssh.run("pve1", ["true"])


async def test_bad_node_name_is_refused(pool: SshPool) -> None:
    with pytest.raises(SshError, match="not a node name"):
        await pool.run("-oProxyCommand=x", ["true"])


async def test_timeout_kills_the_remote_process(pool: SshPool) -> None:
    marker = f"100.{uuid.uuid4().int % 10**6:06d}"
    started = time.monotonic()
    with pytest.raises(SshTimeout, match="timeout") as caught:
        await pool.run("pve1", ["sleep", marker], timeout=1)
    assert time.monotonic() - started < 4
    result = caught.value.result
    assert result is not None and result.timed_out and result.exit_code == 124
    # Over a second channel: no such sleep survives on the node.
    pattern = f"^sleep {marker}$".replace(".", "[.]")
    with anyio.fail_after(5):
        while True:
            check = await pool.run("pve1", ["pgrep", "-f", pattern])
            if check.exit_code == 1:
                break
            await anyio.sleep(0.2)


async def test_output_cap_and_capture_cap(sshd: Sshd) -> None:
    login = credentials(sshd)
    ssh = SshPool(
        "lab", ssh_config(sshd, output_cap=1024, artifact_max_bytes=1 << 20), lambda: login
    )
    whole = await ssh.run("pve1", ["sh", "-c", "yes | head -c 200000"])
    assert whole.exit_code == 0 and len(whole.stdout) == 200_000
    assert whole.truncated and not whole.capture_truncated
    assert len(whole.stdout_text) == 1024
    await ssh.aclose()
    ssh = SshPool("lab", ssh_config(sshd, output_cap=1024, artifact_max_bytes=65536), lambda: login)
    cut = await ssh.run("pve1", ["cat", "/dev/zero"], timeout=10)
    assert cut.stdout_overflow and cut.truncated and cut.capture_truncated
    assert len(cut.stdout) == 65536 and not cut.timed_out
    assert cut.duration < 5
    await ssh.aclose()


async def test_binary_output_is_kept_raw(pool: SshPool) -> None:
    result = await pool.run("pve1", ["printf", r"\000\001\377\033[2Jend"])
    assert result.stdout == b"\x00\x01\xff\x1b[2Jend"
    assert result.stdout_text == "\ufffdend"


@pytest.mark.parametrize(
    "value",
    ["a; touch {canary}", "$(touch {canary})", "`touch {canary}`", "x\ntouch {canary}", "'\"\\"],
)
async def test_injection_through_argv_arrives_literally(
    pool: SshPool, value: str, tmp_path: Path
) -> None:
    canary = f"/tmp/pvemcp-canary-{uuid.uuid4().hex}"
    text = value.format(canary=canary)
    result = await pool.run("pve1", ["printf", "%s", text])
    assert result.stdout == text.encode()
    assert not Path(canary).exists()


async def test_stdin_is_sent_and_closed(pool: SshPool) -> None:
    result = await pool.run("pve1", ["cat"], stdin=b"secret input\n")
    assert result.stdout == b"secret input\n"


async def test_channel_cap_queues_calls(sshd: Sshd) -> None:
    login = credentials(sshd)
    ssh = SshPool("lab", ssh_config(sshd, max_channels=2), lambda: login)
    results = []
    started = time.monotonic()

    async def one() -> None:
        results.append(await ssh.run("pve1", ["sleep", "0.3"]))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert time.monotonic() - started >= 0.85  # 6 calls, 2 at a time, 0.3 s each
    assert len(results) == 6 and all(r.exit_code == 0 for r in results)
    assert len({r.connection_id for r in results}) == 1
    await ssh.aclose()


async def test_sshd_restart_mid_session_recovers(pool: SshPool, sshd: Sshd) -> None:
    before = await pool.run("pve1", ["true"])
    sshd.restart()
    after = await pool.run("pve1", ["echo", "back"])
    assert after.stdout == b"back\n" and after.connection_id != before.connection_id
    again = await pool.run("pve1", ["true"])
    assert again.connection_id == after.connection_id


async def test_sshd_dying_mid_command_is_an_error_then_recovers(pool: SshPool, sshd: Sshd) -> None:
    await pool.run("pve1", ["true"])  # the connection exists before the race starts

    async def restart_soon() -> None:
        # Restart only once the remote command runs (sshd is on this machine, so its
        # processes are visible here); a fixed delay raced the connection set-up under load.
        with anyio.fail_after(10):
            for _ in range(200):
                found = await anyio.run_process(["pgrep", "-f", "sleep 4.321"], check=False)
                if found.returncode == 0:
                    break
                await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(sshd.restart)

    async with anyio.create_task_group() as tg:
        tg.start_soon(restart_soon)
        with pytest.raises(SshError, match="may or may not have completed"):
            await pool.run("pve1", ["sleep", "4.321"])
    assert (await pool.run("pve1", ["true"])).exit_code == 0


async def test_rotated_credentials_get_a_new_connection(sshd: Sshd) -> None:
    logins = [credentials(sshd)]
    ssh = SshPool("lab", ssh_config(sshd), lambda: logins[-1])
    first = await ssh.run("pve1", ["true"])
    logins.append(credentials(sshd, key_path=sshd.keys.encrypted, passphrase=PASSPHRASE))
    second = await ssh.run("pve1", ["true"])
    assert second.connection_id != first.connection_id
    await ssh.aclose()


async def test_idle_connection_is_evicted(sshd: Sshd) -> None:
    login = credentials(sshd)
    ssh = SshPool("lab", ssh_config(sshd), lambda: login, idle_timeout=0.2)
    first = await ssh.run("pve1", ["true"])
    await anyio.sleep(0.5)
    second = await ssh.run("pve1", ["true"])
    assert second.connection_id != first.connection_id
    await ssh.aclose()
