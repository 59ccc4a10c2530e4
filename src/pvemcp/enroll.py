"""`pvemcp enroll`: give the gateway its own least-privilege PVE token, never through the model.

An administrator runs it once per cluster at a terminal. It

1. reads the node's TLS certificate and pins its SHA-256 fingerprint: the operator confirms
   what is printed, or passes `--fingerprint` (which must match); without either, or on a
   mismatch, it stops before any credential is sent. Every request after that goes through
   `PinnedTransport`, so a certificate swapped between the check and the login is refused
   too;
   With `--ssh`, the node's SSH host key is shown and confirmed (or must match
   `--ssh-fingerprint`) the same way, and its known_hosts line is written at the end;
2. logs in with an administrator's password read by `getpass` (never an argument), or a
   one-time API token from `--admin-token-file`;
3. makes (or keeps) the dedicated user, the profile's role and the ACL on `/`, deletes the
   user's token of that name if it exists (so a re-run rotates it) and creates it again;
4. writes the secret to a mode-0600 file or a Vault/OpenBao KV secret, and prints the
   config to add, which names where the secret is and never holds it.

Profiles (the role given on `/`, propagated):

- `read-only`: PVE's built-in `PVEAuditor`.
- `operator`: the custom role `McpOperator` (`OPERATOR_PRIVILEGES`): what the typed
  write and destructive tools need for guests, their disks, snapshots, backups and
  migration, and reading everything; no node, user, permission or storage administration.
  (PVE refuses custom role names starting with `PVE`, hence not `PVEMCPOperator`.)
- `admin`: PVE's built-in `PVEAdmin`: everything except `Sys.PowerMgmt`, `Sys.Modify`,
  `Permissions.Modify`, `Realm.Allocate` and `Mapping.Modify`, which stay with root.

The token is made with privilege separation off (`privsep=0`): it has exactly its user's
privileges, and the user exists only for this token, so one ACL entry (the user's) is all
there is to keep right; with separation on, the same role would have to be granted twice.

`--revoke` deletes the token; with confirmation (or `--yes`) also the user (PVE drops its
ACL entries with it) and the custom role.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import ssl
import stat
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio
import httpx2

from pvemcp.config import FINGERPRINT_RE
from pvemcp.proxmox.tls import CertificatePinError, PinnedTransport, colon_fingerprint
from pvemcp.secrets.types import TOKEN_ID_RE

Profile = Literal["read-only", "operator", "admin"]

OPERATOR_ROLE = "McpOperator"
OPERATOR_PRIVILEGES = (
    "Datastore.Audit",
    "Datastore.AllocateSpace",
    "Mapping.Audit",
    "Mapping.Use",
    "Pool.Audit",
    "SDN.Audit",
    "SDN.Use",
    "Sys.Audit",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
)
"""The `operator` profile's role: guests' lifecycle, configuration, disks, snapshots,
backups, clones and migration, plus reading every object (the `Audit` privileges)."""

ROLES: dict[Profile, str] = {
    "read-only": "PVEAuditor",
    "operator": OPERATOR_ROLE,
    "admin": "PVEAdmin",
}
CUSTOM_ROLES: dict[str, tuple[str, ...]] = {OPERATOR_ROLE: OPERATOR_PRIVILEGES}
TIMEOUT = 30.0


class EnrollError(Exception):
    """A refusal or failure: a stable code, a message naming what is wrong, and the fix."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        hint = f"\n  hint: {self.hint}" if self.hint else ""
        return f"error [{self.code}]: {self.message}{hint}"


@dataclass(frozen=True)
class Prompts:
    """How the command talks to the operator: a terminal in the CLI, functions in tests."""

    interactive: bool
    password: Callable[[str], str]
    confirm: Callable[[str], bool]


@dataclass(frozen=True)
class VaultTarget:
    """A KV secret in Vault or OpenBao, written with a token from a file."""

    url: str
    path: str
    token_file: Path
    mount: str = "secret"
    kv_version: Literal[1, 2] = 2
    ca_file: Path | None = None


@dataclass(frozen=True)
class SshTarget:
    """A node's SSH server whose host key is to be pinned in a known_hosts file."""

    node: str
    host: str
    known_hosts: Path
    port: int = 22
    fingerprint: str | None = None
    """The expected `SHA256:...` (`ssh-keygen -lf` on the node); else the operator confirms."""

    @property
    def host_field(self) -> str:
        """How docs/ssh.md matches a line: `host`, or `[host]:port` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class EnrollOptions:
    url: str
    profile: Profile = "read-only"
    user: str = "pvemcp@pve"
    token_name: str = "gateway"  # noqa: S105 - a token name, not a secret
    cluster: str = "pve"
    secret_file: Path | None = None
    vault: VaultTarget | None = None
    fingerprint: str | None = None
    admin_user: str = "root@pam"
    admin_token_file: Path | None = None
    revoke: bool = False
    yes: bool = False
    ssh: SshTarget | None = None

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}"


def _address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnrollError(
            "bad_url", f"--url {url!r} is not an https:// URL", "give https://HOST:8006"
        )
    return parts.hostname, parts.port or 8006


def _normalized(fingerprint: str) -> str:
    """64 lower-case hex digits, from `AA:BB:...` or bare hex."""
    if not FINGERPRINT_RE.fullmatch(fingerprint.strip()):
        raise EnrollError(
            "bad_fingerprint",
            "--fingerprint must be a SHA-256 fingerprint: 32 hex bytes, colons optional",
            "read it on the node: pvenode cert info",
        )
    return fingerprint.strip().replace(":", "").lower()


def _probe(host: str, port: int) -> str:
    """The SHA-256 of the leaf certificate the server presents (no HTTP is sent)."""
    try:
        pem = ssl.get_server_certificate((host, port), timeout=TIMEOUT)
    except OSError as exc:
        raise EnrollError(
            "unreachable",
            f"cannot read the TLS certificate of {host}:{port}: {exc.strerror or exc}",
            "check --url and that pveproxy answers on that port",
        ) from None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def pin(options: EnrollOptions, prompts: Prompts, out: TextIO) -> str:
    """The fingerprint to pin, confirmed by the operator or matching `--fingerprint`;
    nothing else is sent to the node before this returns."""
    host, port = _address(options.url)
    expected = _normalized(options.fingerprint) if options.fingerprint else None
    seen = _probe(host, port)
    if expected is not None:
        if not hmac.compare_digest(seen, expected):
            raise EnrollError(
                "tls_mismatch",
                f"the certificate of {host}:{port} has SHA-256 fingerprint "
                f"{colon_fingerprint(seen)}, not {colon_fingerprint(expected)}; "
                "no credential was sent",
                "check on the node (pvenode cert info): a different certificate may mean "
                "the connection is intercepted",
            )
        return seen
    if not prompts.interactive:
        raise EnrollError(
            "tls_unpinned",
            f"the certificate of {host}:{port} (SHA-256 {colon_fingerprint(seen)}) is not "
            "pinned and there is no terminal to confirm it; no credential was sent",
            "compare it with `pvenode cert info` on the node, then pass --fingerprint",
        )
    print(f"The node {host}:{port} presents a certificate with SHA-256 fingerprint", file=out)
    print(f"  {colon_fingerprint(seen)}", file=out)
    print("Compare it with `pvenode cert info` on the node.", file=out)
    if not prompts.confirm("Is this the node's certificate?"):
        raise EnrollError("not_confirmed", "the certificate was not confirmed; nothing was sent")
    return seen


async def pin_ssh(target: SshTarget, prompts: Prompts, out: TextIO) -> str:
    """The node's host key as a known_hosts line, confirmed by the operator or matching
    `--ssh-fingerprint`, like the certificate (no login is attempted)."""
    import asyncssh  # noqa: PLC0415 - only --ssh needs it

    try:
        key = await asyncssh.get_server_host_key(target.host, target.port)
    except (OSError, asyncssh.Error) as exc:
        raise EnrollError(
            "ssh_unreachable",
            f"cannot read the SSH host key of {target.host}:{target.port}: {exc}",
            "check --ssh-host/--ssh-port and that sshd runs on the node",
        ) from None
    if key is None:
        raise EnrollError("ssh_unreachable", f"{target.host}:{target.port} sent no host key")
    seen = str(key.get_fingerprint("sha256"))
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    line = f"{target.host_field} {algorithm} {blob}"
    if target.fingerprint is not None:
        if not hmac.compare_digest(seen, target.fingerprint.strip()):
            raise EnrollError(
                "ssh_mismatch",
                f"the SSH host key of {target.host}:{target.port} is {seen}, not "
                f"{target.fingerprint}; nothing was sent",
                "check on the node: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
            )
        return line
    if not prompts.interactive:
        raise EnrollError(
            "ssh_unpinned",
            f"the SSH host key of {target.host}:{target.port} ({seen}) is not pinned and "
            "there is no terminal to confirm it; nothing was sent",
            "compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the node, "
            "then pass --ssh-fingerprint",
        )
    print(f"The node's SSH server presents the {algorithm} host key {seen}", file=out)
    if not prompts.confirm("Is this the node's SSH host key?"):
        raise EnrollError("not_confirmed", "the SSH host key was not confirmed; nothing was sent")
    return line


def _write_known_hosts(target: SshTarget, line: str) -> None:
    """Put `line` in the known_hosts file, replacing the lines for the same host."""
    path = target.known_hosts
    kept: list[str] = []
    if path.exists():
        kept = [
            old
            for old in path.read_text().splitlines()
            if not old.split(maxsplit=1) or old.split(maxsplit=1)[0] != target.host_field
        ]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # public keys: readable, like ~/.ssh/known_hosts
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join([*kept, line]) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Api:
    """The admin session: every request over the pinned transport, errors as EnrollError."""

    def __init__(self, url: str, fingerprint: str) -> None:
        self._client = httpx2.AsyncClient(
            base_url=url.rstrip("/") + "/api2/json",
            transport=PinnedTransport(fingerprint, limits=httpx2.Limits()),
            timeout=TIMEOUT,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def login(self, options: EnrollOptions, prompts: Prompts) -> None:
        if options.admin_token_file is not None:
            value = _read_admin_token(options.admin_token_file)
            self._client.headers["Authorization"] = f"PVEAPIToken={value}"
            return
        password = prompts.password(f"Password for {options.admin_user}: ")
        try:
            answer = await self._client.post(
                "/access/ticket", data={"username": options.admin_user, "password": password}
            )
        except (CertificatePinError, httpx2.HTTPError) as exc:
            raise EnrollError("unreachable", f"login failed: {exc}") from None
        if answer.status_code == 401:
            raise EnrollError(
                "auth_failed",
                f"{options.admin_user}: authentication failure (wrong password or user); "
                "nothing was created",
                "check the user (root@pam, or admin@pve with --admin-user) and its password",
            )
        data = self._data(answer, "POST", "/access/ticket")
        self._client.cookies.set("PVEAuthCookie", str(data["ticket"]))
        self._client.headers["CSRFPreventionToken"] = str(data["CSRFPreventionToken"])

    async def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            if method in ("GET", "DELETE"):
                answer = await self._client.request(method, path, params=params)
            else:
                answer = await self._client.request(method, path, data=params)
        except (CertificatePinError, httpx2.HTTPError) as exc:
            raise EnrollError("unreachable", f"{method} {path}: {exc}") from None
        return self._data(answer, method, path)

    @staticmethod
    def _data(answer: httpx2.Response, method: str, path: str) -> Any:
        if answer.status_code == 401:
            raise EnrollError(
                "auth_failed",
                f"{method} {path}: authentication failure",
                "the admin token or ticket was refused: check --admin-token-file",
            )
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not answer.is_success:
            message = str(body.get("message") or answer.reason_phrase).strip()
            errors = body.get("errors")
            detail = f" {json.dumps(errors, sort_keys=True)}" if errors else ""
            raise EnrollError(
                "pve_refused",
                f"{method} {path}: {answer.status_code} {message}{detail}",
                "the admin account needs User.Modify and Permissions.Modify on / "
                "(root@pam has them)"
                if answer.status_code == 403
                else "",
            )
        return body.get("data")


def _read_admin_token(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise EnrollError(
            "bad_admin_token", f"--admin-token-file {path}: {exc.strerror or exc}"
        ) from None
    token_id, _, secret = value.partition("=")
    if not TOKEN_ID_RE.match(token_id) or not secret:
        raise EnrollError(
            "bad_admin_token",
            f"--admin-token-file {path} must hold one line USER@REALM!TOKENID=SECRET",
        )
    return value


# --- secret destinations ------------------------------------------------------------


def _check_secret_file(path: Path) -> None:
    """Refuse an existing file others can read or that is not a regular file, before
    anything is changed on the node."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise EnrollError(
                "secret_file", f"--secret-file {path}: directory {path.parent} does not exist"
            ) from None
        return
    if not stat.S_ISREG(info.st_mode):
        raise EnrollError("secret_file", f"--secret-file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise EnrollError(
            "secret_file",
            f"--secret-file {path} is accessible by group or others (mode {mode:04o}); "
            "refusing to write a secret there",
            f"chmod 600 {path}, or choose a new file",
        )


_TOKEN_LINE = re.compile(r"^\s*(token_id|token_secret)\s*=")


def _write_secret_file(path: Path, token_id: str, secret: str) -> None:
    """Write `token_id` and `token_secret` (mode 0600, replaced atomically). A file from an
    earlier run keeps its other content (an `[ssh]` table, say): only the two top-level
    keys are replaced."""
    lines: list[str] = []
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if not _TOKEN_LINE.match(line)]
    # TOML basic strings take JSON's escapes, so json.dumps quotes them correctly.
    head = [f"token_id = {json.dumps(token_id)}", f"token_secret = {json.dumps(secret)}"]
    text = "\n".join([*head, *lines]) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _vault_client(target: VaultTarget) -> Any:
    import hvac  # noqa: PLC0415 - only the Vault target needs it

    try:
        token = target.token_file.read_text().strip()
    except OSError as exc:
        raise EnrollError(
            "vault", f"--vault-token-file {target.token_file}: {exc.strerror or exc}"
        ) from None
    verify: bool | str = str(target.ca_file) if target.ca_file else True
    return hvac.Client(url=target.url, token=token, verify=verify, timeout=TIMEOUT)


def _check_vault(target: VaultTarget) -> None:
    client = _vault_client(target)
    try:
        authenticated = client.is_authenticated()
    except Exception as exc:  # hvac raises requests' and its own exceptions
        raise EnrollError("vault", f"Vault at {target.url}: {type(exc).__name__}") from None
    if not authenticated:
        raise EnrollError(
            "vault", f"Vault at {target.url} refused the token of {target.token_file}"
        )


def _write_vault(target: VaultTarget, token_id: str, secret: str) -> None:
    client = _vault_client(target)
    payload = {"token_id": token_id, "token_secret": secret}
    try:
        if target.kv_version == 2:
            client.secrets.kv.v2.create_or_update_secret(
                path=target.path, secret=payload, mount_point=target.mount
            )
        else:
            client.secrets.kv.v1.create_or_update_secret(
                path=target.path, secret=payload, mount_point=target.mount
            )
    except Exception as exc:  # the message may quote the request, never print it
        raise EnrollError(
            "vault",
            f"writing {target.mount}/{target.path} failed ({type(exc).__name__}); the new "
            "token exists on the node: re-run to rotate it once Vault accepts the write",
        ) from None


def _credentials_toml(options: EnrollOptions) -> list[str]:
    section = f"[clusters.{options.cluster}.credentials]"
    if options.vault is not None:
        vault = options.vault
        lines = [
            section,
            'source = "vault"',
            f"url = {json.dumps(vault.url)}",
            f"mount = {json.dumps(vault.mount)}",
            f"path = {json.dumps(vault.path)}",
            f"kv_version = {vault.kv_version}",
        ]
        if vault.ca_file is not None:
            lines.append(f"ca_file = {json.dumps(str(vault.ca_file))}")
        lines.append("# and an [auth] table for the gateway's own login: see docs/secrets.md")
        return lines
    assert options.secret_file is not None
    return [section, 'source = "file"', f"path = {json.dumps(str(options.secret_file))}"]


def config_toml(options: EnrollOptions, fingerprint: str) -> str:
    """The cluster section to add: where the node is, its pin, the token id and where the
    secret is kept (never the secret)."""
    lines = [
        f"[clusters.{options.cluster}]",
        f"api_url = {json.dumps(options.url.rstrip('/'))}",
        'tls = "fingerprint"',
        f'fingerprint = "{colon_fingerprint(fingerprint)}"',
        f"token_id = {json.dumps(options.token_id)}",
        "",
        *_credentials_toml(options),
    ]
    if options.ssh is not None:
        address = f"{options.ssh.host}:{options.ssh.port}"
        lines += [
            "",
            f"[clusters.{options.cluster}.ssh]",
            f"known_hosts = {json.dumps(str(options.ssh.known_hosts))}",
            f"nodes = {{ {options.ssh.node} = {json.dumps(address)} }}",
            "# the SSH user and key go in the secret source: see docs/ssh.md",
        ]
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------


async def _ensure_role(api: _Api, role: str) -> None:
    privs = CUSTOM_ROLES.get(role)
    if privs is None:
        return  # a built-in role
    existing = {entry["roleid"] for entry in await api.call("GET", "/access/roles")}
    if role in existing:
        await api.call("PUT", f"/access/roles/{role}", {"privs": ",".join(privs)})
    else:
        await api.call("POST", "/access/roles", {"roleid": role, "privs": ",".join(privs)})


async def _token_exists(api: _Api, options: EnrollOptions) -> bool:
    tokens = await api.call("GET", f"/access/users/{options.user}/token")
    return any(entry.get("tokenid") == options.token_name for entry in tokens or [])


async def _enroll(api: _Api, options: EnrollOptions, out: TextIO) -> str:
    """Make the user, role, ACL and a fresh token; the token's secret."""
    users = {entry["userid"] for entry in await api.call("GET", "/access/users")}
    role = ROLES[options.profile]
    if options.user not in users:
        await api.call(
            "POST", "/access/users", {"userid": options.user, "comment": "pvemcp gateway"}
        )
        print(f"created user {options.user}", file=out)
    await _ensure_role(api, role)
    await api.call(
        "PUT", "/access/acl", {"path": "/", "users": options.user, "roles": role, "propagate": 1}
    )
    print(f"granted {role} on / to {options.user}", file=out)
    path = f"/access/users/{options.user}/token/{options.token_name}"
    if await _token_exists(api, options):
        await api.call("DELETE", path)
        print(f"deleted the old token {options.token_id} (rotation)", file=out)
    created = await api.call("POST", path, {"privsep": 0, "comment": "pvemcp gateway"})
    print(f"created token {options.token_id} (privsep=0)", file=out)
    return str(created["value"])


async def _revoke(api: _Api, options: EnrollOptions, prompts: Prompts, out: TextIO) -> None:
    users = {entry["userid"] for entry in await api.call("GET", "/access/users")}
    if options.user not in users:
        raise EnrollError("not_found", f"user {options.user} does not exist; nothing to revoke")
    if await _token_exists(api, options):
        await api.call("DELETE", f"/access/users/{options.user}/token/{options.token_name}")
        print(f"deleted token {options.token_id}", file=out)
    else:
        print(f"token {options.token_id} does not exist", file=out)
    # The custom roles enrolment made that this user holds and no one else does (whatever
    # --profile says now: the user may have been enrolled with another one).
    acl = await api.call("GET", "/access/acl")
    held = {e["roleid"] for e in acl if e["type"] == "user" and e["ugid"] == options.user}
    shared = {e["roleid"] for e in acl if (e["type"], e["ugid"]) != ("user", options.user)}
    roles = sorted((held & set(CUSTOM_ROLES)) - shared)
    what = f"the user {options.user} (with its ACL entries and other tokens)"
    if roles:
        what += f" and the role {', '.join(roles)}"
    if options.yes or (prompts.interactive and prompts.confirm(f"Also delete {what}?")):
        await api.call("DELETE", f"/access/users/{options.user}")
        print(f"deleted user {options.user}", file=out)
        for role in roles:
            await api.call("DELETE", f"/access/roles/{role}")
            print(f"deleted role {role}", file=out)
    if options.secret_file is not None and options.secret_file.exists():
        print(f"the secret file {options.secret_file} now holds a dead token", file=out)


async def run_async(options: EnrollOptions, prompts: Prompts, out: TextIO) -> str | None:
    """Enrol (the config to add) or revoke (None). Raises EnrollError."""
    if not options.revoke:
        if (options.secret_file is None) == (options.vault is None):
            raise EnrollError(
                "usage", "give exactly one of --secret-file or --vault-path for the secret"
            )
        if options.secret_file is not None:
            _check_secret_file(options.secret_file)
        else:
            assert options.vault is not None
            await anyio.to_thread.run_sync(_check_vault, options.vault)
    fingerprint = await anyio.to_thread.run_sync(pin, options, prompts, out)
    host_key = None
    if options.ssh is not None and not options.revoke:
        host_key = await pin_ssh(options.ssh, prompts, out)
    api = _Api(options.url, fingerprint)
    try:
        await api.login(options, prompts)
        if options.revoke:
            await _revoke(api, options, prompts, out)
            return None
        secret = await _enroll(api, options, out)
    finally:
        await api.aclose()
    if options.secret_file is not None:
        _write_secret_file(options.secret_file, options.token_id, secret)
        print(f"wrote the secret to {options.secret_file} (mode 0600)", file=out)
    else:
        assert options.vault is not None
        await anyio.to_thread.run_sync(_write_vault, options.vault, options.token_id, secret)
        print(f"wrote the secret to Vault {options.vault.mount}/{options.vault.path}", file=out)
    if options.ssh is not None and host_key is not None:
        _write_known_hosts(options.ssh, host_key)
        print(f"pinned the SSH host key in {options.ssh.known_hosts}", file=out)
    return config_toml(options, fingerprint)


def _terminal_prompts() -> Prompts:
    import getpass  # noqa: PLC0415

    def confirm(question: str) -> bool:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return Prompts(interactive=sys.stdin.isatty(), password=getpass.getpass, confirm=confirm)


def main(options: EnrollOptions) -> int:
    """The CLI entry: progress on stderr, the config to add on stdout; 1 on a refusal."""
    try:
        config = anyio.run(run_async, options, _terminal_prompts(), sys.stderr)
    except EnrollError as exc:
        print(f"pvemcp enroll: {exc}", file=sys.stderr)
        return 1
    if config is not None:
        print("Add this to the gateway's config file:", file=sys.stderr)
        sys.stdout.write(config)
    return 0
