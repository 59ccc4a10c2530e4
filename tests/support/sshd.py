"""A private OpenSSH server on 127.0.0.1 for tests and benchmarks (Debian's `sshd`).

The server gets its own config, ed25519 host key, authorized keys and a `pvesh` stand-in
on its PATH; the system sshd and its config are never touched. It logs in one test user
(`pvemcptest`, shell /bin/sh so a command costs no rc files), created if missing. Root is
needed (sshd's privilege separation, `useradd`); `unavailable_reason()` says why not when
it cannot run, so callers can skip.

Everything lives in a world-traversable temporary directory, since sshd reads the
authorized keys and the test user runs the stand-in from it. The stand-in is copied
there and run by the system Python: the project's venv interpreter may sit under a home
the test user cannot enter, and the stand-in needs only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from pvemcp.simulator.server import SimulatorHandle

SSHD = Path("/usr/sbin/sshd")
TEST_USER = "pvemcptest"
PASSPHRASE = "correct horse battery staple"
STANDIN = Path(__file__).with_name("pvesh_standin.py")
START_TIMEOUT = 10.0


def unavailable_reason() -> str | None:
    """Why the test sshd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return (
            "the SSH tests start their own sshd and a test user, which needs root "
            "(CI runs as root; .ci/run installs openssh-server)"
        )
    if not SSHD.is_file():
        return f"{SSHD} is missing: apt-get install --no-install-recommends openssh-server"
    return None


def ensure_test_user() -> None:
    """Create the test user if missing and unlock it: sshd without PAM refuses a user whose
    password field is `!` (useradd's default) even for key logins."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True)
    subprocess.run(["usermod", "-p", "*", TEST_USER], check=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, deepest last, read from /proc (Linux)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children = [int(x) for x in task.read_text().split()]
                found.extend(children)
                pending.extend(children)
    return found


def _world_runnable(path: Path) -> bool:
    """Whether any user can run `path`: o+x on it and on every directory above it."""
    try:
        return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))
    except OSError:
        return False


def _python_for(user: str) -> str:
    """A Python 3 the test user can run (the venv's may live under a private /root)."""
    candidates = [
        "/usr/bin/python3",
        shutil.which("python3") or "",
        os.path.realpath(sys.executable),
    ]
    for candidate in candidates:
        if candidate and _world_runnable(Path(candidate)):
            return candidate
    raise RuntimeError(f"no python3 that {user} can run for the pvesh stand-in (install python3)")


@dataclass
class ClientKeys:
    """Private key files a test can log in with (OpenSSH format)."""

    plain: Path
    encrypted: Path
    """The same kind of key, protected with `PASSPHRASE`."""
    stranger: Path
    """A valid key that is not authorized."""


@dataclass
class Sshd:
    """One running sshd; `start()`/`stop()`/`restart()`, always stopped by its PID."""

    root: Path
    port: int
    host_key: asyncssh.SSHKey
    keys: ClientKeys
    bin_dir: Path
    user: str = TEST_USER
    max_sessions: int = 10
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key_line(self) -> str:
        """The known_hosts line that pins this server: `[127.0.0.1]:PORT ssh-ed25519 ...`."""
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}"

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    @property
    def log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        config = self.root / "sshd_config"
        with (self.root / "sshd.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start:\n{self.log[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                if sock.recv(8).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}:\n{self.log[-2000:]}")

    def stop(self) -> None:
        """Kill the listener and every session process it forked (by PID)."""
        process, self.process = self.process, None
        if process is None:
            return
        children = _descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        # Parents first: the session's sshd must die before the command it runs, or it may
        # still report the command's (killed) exit status and the client sees a clean end
        # instead of a lost connection.
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(5)

    def restart(self) -> None:
        """Stop everything (live sessions included) and start again on the same port."""
        self.stop()
        self.start()


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _write_key(path: Path, key: asyncssh.SSHKey, passphrase: str | None = None) -> None:
    # 16 bcrypt rounds, as ssh-keygen does (asyncssh defaults to 128: slow to decrypt).
    data = key.export_private_key("openssh", passphrase, rounds=16, ignore_few_rounds=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _config(root: Path, bin_dir: Path, user: str, max_sessions: int) -> str:
    # SetEnv puts the stand-in first on PATH for every session, the way pvesh sits in
    # /usr/bin on a real node; nothing else in the session changes.
    return "\n".join(
        [
            "ListenAddress 127.0.0.1",
            f"HostKey {root / 'ssh_host_ed25519_key'}",
            "PidFile none",
            "UsePAM no",
            "StrictModes no",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {user}",
            f"MaxSessions {max_sessions}",
            "MaxStartups 100:30:200",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            f"SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "",
        ]
    )


def _install_standin(bin_dir: Path, simulator: SimulatorHandle) -> None:
    """`pvesh` on the server's PATH: a shell wrapper that sets the stand-in's settings
    (sshd passes no environment) and runs it with an isolated system Python."""
    user = pwd.getpwnam(TEST_USER)
    script = bin_dir / "pvesh_standin.py"
    shutil.copyfile(STANDIN, script)
    script.chmod(0o644)
    ca = bin_dir / "simulator-ca.pem"
    ca.write_bytes(simulator.cert_pem)
    ca.chmod(0o644)
    env = {
        "PVEMCP_SIM_URL": simulator.url,
        "PVEMCP_SIM_TOKEN": f"{simulator.token_id}={simulator.token_secret}",
        "PVEMCP_SIM_CA": str(ca),
    }
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    python = shlex.join([_python_for(TEST_USER), "-I", "-S", str(script)])
    wrapper = bin_dir / "pvesh"
    _write(wrapper, f'#!/bin/sh\n{exports}exec {python} "$@"\n', 0o700)
    # The wrapper holds the simulator's token: readable by the test user only.
    os.chown(wrapper, user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def running_sshd(
    *, simulator: SimulatorHandle | None = None, max_sessions: int = 10
) -> Iterator[Sshd]:
    """Start a private sshd with fresh keys; stop it (and its sessions) at exit.

    With `simulator`, the `pvesh` stand-in on the server's PATH drives that simulator.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    ensure_test_user()
    root = Path(tempfile.mkdtemp(prefix="pvemcp-sshd-"))
    try:
        root.chmod(0o755)
        bin_dir = root / "bin"
        bin_dir.mkdir(mode=0o755)
        # sshd refuses to start as root without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        _write_key(root / "ssh_host_ed25519_key", host_key)
        plain = asyncssh.generate_private_key("ssh-ed25519", comment="pvemcp-test")
        encrypted = asyncssh.generate_private_key("ssh-ed25519", comment="pvemcp-test-enc")
        stranger = asyncssh.generate_private_key("ssh-ed25519", comment="stranger")
        keys = ClientKeys(root / "id_plain", root / "id_encrypted", root / "id_stranger")
        _write_key(keys.plain, plain)
        _write_key(keys.encrypted, encrypted, PASSPHRASE)
        _write_key(keys.stranger, stranger)
        authorized = b"".join(k.export_public_key("openssh") for k in (plain, encrypted))
        _write(root / "authorized_keys", authorized.decode())
        if simulator is not None:
            _install_standin(bin_dir, simulator)
        port = free_port()
        _write(root / "sshd_config", _config(root, bin_dir, TEST_USER, max_sessions))
        server = Sshd(root, port, host_key, keys, bin_dir, max_sessions=max_sessions)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
