"""proxmox_file_read / proxmox_file_write over SFTP on the real sshd: policy on canonical
paths, traversal and symlink escapes, the built-in deny list, caps, atomic writes."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway.invoke import Gateway, ToolResult
from pvemcp.policy.principal import Principal
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.support.sshd import Sshd

from .conftest import escape_gateway, failed, ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
POLICY = """
version = 1

[[rules]]
id = "files"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_file_read", "proxmox_file_write"]
paths = ["{base}/allowed/**"]

[[rules]]
id = "etc-read"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_file_read"]
paths = ["/etc/**"]

[[rules]]
id = "confirm-conf"
effect = "confirm"
subjects = ["local"]
tools = ["proxmox_file_write"]
paths = ["{base}/allowed/conf/**"]
"""


@pytest.fixture
def base(sshd: Sshd) -> Iterator[Path]:
    """A tree the test user owns, outside pytest's private tmp (which it cannot enter)."""
    root = Path(tempfile.mkdtemp(prefix="pvemcp-files-")).resolve()
    root.chmod(0o755)
    user = pwd.getpwnam(sshd.user)

    def own(path: Path) -> None:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    for name in ("allowed", "allowed/conf", "allowed-evil", "outside"):
        (root / name).mkdir()
        own(root / name)
    for relative, content in (
        ("allowed/notes.txt", b"one\ntwo\n"),
        ("allowed/blob.bin", b"\x00\x01\xffdata"),
        ("allowed/conf/app.conf", b"old = 1\nkeep = yes\n"),
        ("allowed-evil/x.txt", b"evil"),
        ("outside/secret.txt", b"secret"),
    ):
        (root / relative).write_bytes(content)
        own(root / relative)
    links = {
        "allowed/to-outside": "../outside/secret.txt",
        "allowed/outdir": "../outside",
        "allowed/to-shadow": "/etc/shadow",
        "allowed/link.txt": "notes.txt",
    }
    for relative, target in links.items():
        (root / relative).symlink_to(target)
        own(root / relative)
    yield root
    shutil.rmtree(root)


@pytest.fixture
async def gw(
    ssh_sim: SimulatorHandle, sshd: Sshd, base: Path, tmp_path: Path, audit_path: Path
) -> AsyncIterator[Gateway]:
    async with escape_gateway(
        ssh_sim,
        sshd,
        audit=audit_path,
        policy=POLICY.replace("{base}", str(base)),
        secrets_dir=tmp_path,
        output_cap=1024,
        file_max_bytes=2048,
    ) as gateway:
        yield gateway


async def read(gw: Gateway, path: str | Path) -> ToolResult:
    return await gw.invoke(LOCAL, "proxmox_file_read", {"node": "pve1", "path": str(path)})


async def write(gw: Gateway, path: str | Path, **args: Any) -> ToolResult:
    return await gw.invoke(LOCAL, "proxmox_file_write", {"node": "pve1", "path": str(path), **args})


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".pvemcp-" in p.name]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_read_text_is_audited_by_canonical_path(
    gw: Gateway, base: Path, audit_path: Path
) -> None:
    data = ok(await read(gw, base / "allowed" / "link.txt"))
    path = str(base / "allowed" / "notes.txt")
    assert data["path"] == path and data["encoding"] == "utf-8"
    assert data["content"] == "one\ntwo\n" and data["sha256"] == sha(b"one\ntwo\n")
    intent, outcome = [
        r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_file_read"
    ]
    assert intent["where"]["target"] == {"paths": [path]}
    assert outcome["where"]["target"] == {"path": path, "operation": "read"}
    assert outcome["where"]["ssh_user"] and outcome["where"]["host_key"].startswith("SHA256:")
    assert outcome["outcome"]["out_bytes"] == 8
    assert outcome["outcome"]["out_sha256"] == sha(b"one\ntwo\n")


async def test_read_binary_is_base64_and_flagged(gw: Gateway, base: Path) -> None:
    data = ok(await read(gw, base / "allowed" / "blob.bin"))
    assert data["encoding"] == "base64"
    assert base64.b64decode(data["content"]) == b"\x00\x01\xffdata"


async def test_read_caps_inline_and_refuses_too_large(gw: Gateway, base: Path) -> None:
    big = base / "allowed" / "big.txt"
    big.write_text("x" * 1500)
    data = ok(await read(gw, big))
    assert data["truncated"] is True and len(data["content"]) == 1024
    assert data["artifact"].startswith("pvemcp://artifacts/")
    found = gw.artifacts.get(LOCAL, data["artifact"].rsplit("/", 1)[1])
    assert found is not None and found.data == b"x" * 1500
    big.write_text("x" * 3000)
    error = failed(await read(gw, big))
    assert error["code"] == "file_too_large"


async def test_etc_is_readable_by_rule(gw: Gateway) -> None:
    assert ok(await read(gw, "/etc/hostname"))["content"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("{base}/allowed/../outside/secret.txt", "invalid_argument"),
        ("allowed/notes.txt", "invalid_argument"),
        ("{base}/allowed//notes.txt", "invalid_argument"),
        ("{base}/allowed/./notes.txt", "invalid_argument"),
        ("{base}/allowed/notes.txt/", "invalid_argument"),
        ("{base}/allowed/\x00", "invalid_argument"),
        ("{base}/allowed/to-outside", "denied"),
        ("{base}/allowed/outdir/secret.txt", "denied"),
        ("{base}/allowed-evil/x.txt", "denied"),
        ("{base}/outside/secret.txt", "denied"),
        ("{base}/allowed/to-shadow", "path_refused"),
        ("/etc/shadow", "path_refused"),
        ("/etc/gshadow", "path_refused"),
        ("/root/.ssh/authorized_keys", "path_refused"),
        ("/etc/pve/priv/authkey.key", "path_refused"),
        ("/var/lib/pve-cluster/config.db", "path_refused"),
    ],
)
async def test_escapes_are_refused(gw: Gateway, base: Path, path: str, code: str) -> None:
    target = path.replace("{base}", str(base))
    assert failed(await read(gw, target))["code"] == code
    assert failed(await write(gw, target, content="pwned"))["code"] in (code, "path_refused")
    assert (base / "outside" / "secret.txt").read_bytes() == b"secret"
    assert (base / "allowed-evil" / "x.txt").read_bytes() == b"evil"


async def test_write_creates_atomically(gw: Gateway, base: Path, audit_path: Path) -> None:
    target = base / "allowed" / "new.txt"
    data = ok(await write(gw, target, content="hello\n"))
    assert data == {
        "node": "pve1",
        "path": str(target),
        "size": 6,
        "sha256": sha(b"hello\n"),
        "mode": "0644",
        "created": True,
    }
    assert target.read_bytes() == b"hello\n"
    assert (target.stat().st_mode & 0o777, target.owner()) == (0o644, "pvemcptest")
    assert leftovers(target.parent) == []
    outcome = [r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_file_write"][-1]
    assert outcome["where"]["target"]["sha256"] == sha(b"hello\n")
    assert outcome["where"]["target"]["created"] is True


async def test_write_replaces_keeping_mode_with_expected_hash(gw: Gateway, base: Path) -> None:
    target = base / "allowed" / "notes.txt"
    target.chmod(0o640)
    binary = b"\x00new\xff"
    data = ok(
        await write(
            gw,
            target,
            content_base64=base64.b64encode(binary).decode(),
            expected_sha256=sha(b"one\ntwo\n"),
        )
    )
    assert data["created"] is False and data["mode"] == "0640"
    assert data["before_sha256"] == sha(b"one\ntwo\n")
    assert target.read_bytes() == binary and target.stat().st_mode & 0o777 == 0o640
    ok(await write(gw, target, content="x", mode="0600"))
    assert target.stat().st_mode & 0o777 == 0o600


async def test_refused_writes_leave_nothing_behind(gw: Gateway, base: Path) -> None:
    allowed = base / "allowed"
    notes = allowed / "notes.txt"
    mismatch = failed(await write(gw, notes, content="x", expected_sha256="0" * 64))
    assert mismatch["code"] == "precondition_failed"
    too_large = failed(await write(gw, notes, content="x" * 3000))
    assert too_large["code"] == "file_too_large"
    through_link = failed(await write(gw, allowed / "link.txt", content="x"))
    assert through_link["code"] == "path_refused" and "symlink" in through_link["message"]
    no_dir = failed(await write(gw, allowed / "nope" / "x.txt", content="x"))
    assert no_dir["code"] == "not_found"
    # A failure after the temporary file exists: the SSH user cannot give the new content
    # root's ownership, so the write stops and removes its temporary file.
    rooted = allowed / "rooted.txt"
    rooted.write_text("root's\n")
    owner = failed(await write(gw, rooted, content="x"))
    assert owner["code"] == "file_error" and "uid 0" in owner["message"]
    assert rooted.read_text() == "root's\n"
    assert notes.read_bytes() == b"one\ntwo\n"
    assert not (allowed / "nope").exists()
    assert leftovers(allowed) == []
    assert (allowed / "link.txt").is_symlink()


async def test_write_plan_shows_a_diff_and_confirmation_binds_it(gw: Gateway, base: Path) -> None:
    target = base / "allowed" / "conf" / "app.conf"
    args = {"content": "new = 2\nkeep = yes\n"}
    dry = ok(await write(gw, target, dry_run=True, **args))
    plan = dry["plan"]
    assert plan["paths"] == [str(target)]
    assert "-old = 1" in plan["diff"] and "+new = 2" in plan["diff"]
    assert {"field": "size", "before": 19, "after": 19} in plan["changes"]
    assert target.read_text() == "old = 1\nkeep = yes\n"

    first = failed(await write(gw, target, **args))
    assert first["code"] == "confirmation_required"
    token = first["details"]["confirm_token"]
    # The file changes after the user approved the diff: the approval no longer applies.
    target.write_text("old = 3\nkeep = yes\n")
    stale = failed(await write(gw, target, confirm_token=token, **args))
    assert stale["code"] == "confirmation_invalid"
    assert target.read_text() == "old = 3\nkeep = yes\n"

    again = failed(await write(gw, target, **args))
    ok(await write(gw, target, confirm_token=again["details"]["confirm_token"], **args))
    assert target.read_text() == "new = 2\nkeep = yes\n"


async def test_content_arguments_are_checked(gw: Gateway, base: Path) -> None:
    target = base / "allowed" / "y.txt"
    both = failed(await write(gw, target, content="a", content_base64="YQ=="))
    assert both["code"] == "invalid_argument"
    bad = failed(await write(gw, target, content_base64="not base64!"))
    assert "not valid base64" in bad["message"]
    setuid = failed(await write(gw, target, content="a", mode="4755"))
    assert setuid["field"] == "mode"


async def test_a_writer_who_may_not_read_gets_no_diff(
    ssh_sim: SimulatorHandle, sshd: Sshd, base: Path, tmp_path: Path, audit_path: Path
) -> None:
    writer_only = """
version = 1

[[rules]]
id = "write-only"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_file_write"]
paths = ["{base}/allowed/**"]
""".replace("{base}", str(base))
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=writer_only, secrets_dir=tmp_path
    ) as gateway:
        target = base / "allowed" / "conf" / "app.conf"
        plan = ok(await write(gateway, target, content="", dry_run=True))["plan"]
    assert "diff" not in plan
    assert any("does not let this caller read" in w for w in plan["warnings"])
    assert "old = 1" not in str(plan)


# -- where a path leads: long symlink chains and long expansions (issue 10 A) -------------


def chain(directory: Path, prefix: str, links: int, target: str) -> Path:
    """`prefix0 -> prefix1 -> ... -> target`: `links` symlinks in `directory`, the first
    returned. The kernel follows up to 40; OpenSSH's sftp-server gives up after 32."""
    for i in range(links):
        (directory / f"{prefix}{i}").symlink_to(f"{prefix}{i + 1}" if i < links - 1 else target)
    return directory / f"{prefix}0"


async def test_a_chain_of_40_symlinks_is_judged_where_it_leads(
    gw: Gateway, base: Path, audit_path: Path
) -> None:
    allowed = base / "allowed"
    # Before the fix sftp-server's realpath failed on this chain, the path was judged as
    # given (inside the allowed tree) and the node read the secret outside it.
    outward = chain(allowed, "c", 40, "../outside")
    denial = failed(await read(gw, outward / "secret.txt"))
    assert denial["code"] == "denied" and "secret" not in str(denial)
    assert failed(await write(gw, outward / "secret.txt", content="pwned"))["code"] == "denied"
    assert failed(await write(gw, outward / "new.txt", content="pwned"))["code"] == "denied"
    assert sorted(p.name for p in (base / "outside").iterdir()) == ["secret.txt"]
    assert (base / "outside" / "secret.txt").read_bytes() == b"secret"
    # A chain that stays inside is read, and the audit names the file actually read.
    inward = chain(allowed, "k", 40, ".")
    data = ok(await read(gw, inward / "notes.txt"))
    assert data["path"] == str(allowed / "notes.txt") and data["content"] == "one\ntwo\n"
    outcome = [r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_file_read"][-1]
    assert outcome["where"]["target"]["path"] == str(allowed / "notes.txt")


async def test_a_chain_past_the_kernels_limit_is_refused_naming_why(
    gw: Gateway, base: Path
) -> None:
    looped = chain(base / "allowed", "d", 41, ".") / "notes.txt"
    error = failed(await read(gw, looped))
    assert error["code"] == "path_refused" and "more than 40 symlinks" in error["message"]
    assert failed(await write(gw, looped, content="x"))["code"] == "path_refused"
    # Outside what the caller may touch, the reason is not told: only "denied".
    hidden = chain(base / "outside", "d", 41, ".") / "secret.txt"
    for result in (await read(gw, hidden), await write(gw, hidden, content="x")):
        denial = failed(result)
        assert denial["code"] == "denied" and "symlink" not in denial["message"]


async def test_a_chain_into_an_ssh_directory_writes_nothing_there(gw: Gateway, base: Path) -> None:
    keys = base / "outside" / ".ssh"
    keys.mkdir()
    (keys / "id").write_text("private key")
    user = pwd.getpwnam("pvemcptest")
    for path in (keys, keys / "id"):
        os.chown(path, user.pw_uid, user.pw_gid)
    into = chain(base / "allowed", "e", 36, "../outside/.ssh")
    # Before the fix this created outside/.ssh/authorized_keys and read outside/.ssh/id.
    written = failed(await write(gw, into / "authorized_keys", content="ssh-ed25519 AAAA evil"))
    assert written["code"] == "path_refused" and ".ssh" in written["message"]
    assert failed(await read(gw, into / "id"))["code"] == "path_refused"
    assert sorted(p.name for p in keys.iterdir()) == ["id"]


async def test_an_expansion_longer_than_path_max_is_judged_where_it_leads(
    gw: Gateway, base: Path
) -> None:
    allowed = base / "allowed"
    # Each link is well under PATH_MAX, but sftp-server's realpath joins one's target with
    # what is left of the other and fails with ENAMETOOLONG; the kernel follows both.
    (allowed / "l2").symlink_to("./" * 1000 + "../outside")
    (allowed / "l1").symlink_to("l2/" + "./" * 1500)
    assert failed(await read(gw, allowed / "l1" / "secret.txt"))["code"] == "denied"
    assert failed(await write(gw, allowed / "l1" / "secret.txt", content="x"))["code"] == "denied"
    assert failed(await write(gw, allowed / "l1" / "new.txt", content="x"))["code"] == "denied"
    assert sorted(p.name for p in (base / "outside").iterdir()) == ["secret.txt"]
    assert (base / "outside" / "secret.txt").read_bytes() == b"secret"


async def test_a_missing_directory_then_dotdot_is_refused(gw: Gateway, base: Path) -> None:
    allowed = base / "allowed"
    (allowed / "via-missing").symlink_to("nope/../../outside/secret.txt")
    error = failed(await read(gw, allowed / "via-missing"))
    assert error["code"] == "path_refused" and "does not exist" in error["message"]


# -- the built-in deny list -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/corosync/authkey",
        "/etc/sudoers",
        "/etc/sudoers.d",
        "/etc/sudoers.d/pvemcp",
        "/etc/ssh/sshd_config",
        "/etc/ssh/sshd_config.d/10-extra.conf",
        "/etc/ssh/authorized_keys/root",
        "/etc/pve/priv/authorized_keys",
        "/var/lib/backup/.ssh/authorized_keys",
        "/srv/app/.ssh/id_ed25519",
        "/home/someone/.ssh",
        "{base}/allowed/.ssh/authorized_keys",
        "{base}/allowed/to-sudoers",
    ],
)
async def test_the_deny_list_covers_login_and_root_grants(
    gw: Gateway, base: Path, path: str
) -> None:
    (base / "allowed" / "to-sudoers").symlink_to("/etc/sudoers")
    target = path.replace("{base}", str(base))
    # /etc/** is readable and {base}/allowed/** writable by the test policy: only the
    # deny list stands in the way.
    for result in (await read(gw, target), await write(gw, target, content="x")):
        error = failed(result)
        assert error["code"] == "path_refused" and "deny list" in error["message"]
    assert not (base / "allowed" / ".ssh").exists()


# -- what a plan tells a caller ---------------------------------------------------------


async def test_a_denied_caller_learns_nothing_about_the_path(gw: Gateway, base: Path) -> None:
    # Before the fix the plan said "is a directory" / "is a symlink" before policy decided.
    for target in (base / "outside", base / "allowed-evil"):
        denial = failed(await write(gw, target, content="x"))
        assert denial["code"] == "denied" and "directory" not in denial["message"]


async def test_a_write_only_caller_never_sees_the_current_hash(
    ssh_sim: SimulatorHandle, sshd: Sshd, base: Path, tmp_path: Path, audit_path: Path
) -> None:
    writer_only = """
version = 1

[[rules]]
id = "write-only"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_file_write"]
paths = ["{base}/allowed/**"]

[[rules]]
id = "confirm-conf"
effect = "confirm"
subjects = ["local"]
tools = ["proxmox_file_write"]
paths = ["{base}/allowed/conf/**"]
""".replace("{base}", str(base))
    notes = base / "allowed" / "notes.txt"
    secret_hash = sha(b"one\ntwo\n")
    async with escape_gateway(
        ssh_sim, sshd, audit=audit_path, policy=writer_only, secrets_dir=tmp_path
    ) as gateway:
        plan = ok(await write(gateway, notes, content="new\n", dry_run=True))["plan"]
        before = next(c["before"] for c in plan["changes"] if c["field"] == "sha256")
        assert before.startswith("hidden:") and secret_hash not in str(plan)
        size = next(c["before"] for c in plan["changes"] if c["field"] == "size")
        assert size == "hidden"
        # No guess is tested, right or wrong, dry run or not: the answers would be an oracle.
        # Before, the right guess got a plan (or a write) and a wrong one precondition_failed.
        answers = []
        for guess, dry_run in ((secret_hash, True), ("0" * 64, True), (secret_hash, False)):
            refused = failed(
                await write(gateway, notes, content="new\n", expected_sha256=guess, dry_run=dry_run)
            )
            assert refused["field"] == "expected_sha256"
            answers.append((refused["code"], refused["message"]))
        assert set(answers) == {answers[0]} and answers[0][0] == "invalid_argument"
        assert notes.read_text() == "one\ntwo\n"
        # The write itself works, and its answer keeps the replaced content's hash back.
        done = ok(await write(gateway, notes, content="new\n"))
        assert "before_sha256" not in done and notes.read_text() == "new\n"
        # The stand-in still binds a confirmation to the content it stood for.
        conf = base / "allowed" / "conf" / "app.conf"
        token = failed(await write(gateway, conf, content="x\n"))["details"]["confirm_token"]
        conf.write_text("changed meanwhile\n")
        stale = failed(await write(gateway, conf, content="x\n", confirm_token=token))
        assert stale["code"] == "confirmation_invalid"
        assert conf.read_text() == "changed meanwhile\n"
    outcome = [r for r in read_audit(audit_path) if r["what"]["tool"] == "proxmox_file_write"]
    # The audit log, for operators, keeps the real hash.
    assert any(r["where"].get("target", {}).get("before_sha256") == secret_hash for r in outcome)


@pytest.mark.parametrize(("bits", "kept"), [(0o4755, "0755"), (0o2750, "0750"), (0o1644, "0644")])
async def test_a_replaced_setuid_file_loses_the_bit_unless_mode_is_given(
    gw: Gateway, base: Path, bits: int, kept: str
) -> None:
    target = base / "allowed" / "tool"
    target.write_text("#!/bin/sh\n")
    user = pwd.getpwnam("pvemcptest")
    os.chown(target, user.pw_uid, user.pw_gid)
    target.chmod(bits)
    plan = ok(await write(gw, target, content="#!/bin/sh\necho new\n", dry_run=True))["plan"]
    assert {"field": "mode", "before": f"{bits:04o}", "after": kept} in plan["changes"]
    assert any("set-uid" in w for w in plan["warnings"])
    assert ok(await write(gw, target, content="#!/bin/sh\necho new\n"))["mode"] == kept
    assert f"{target.stat().st_mode & 0o7777:04o}" == kept
    ok(await write(gw, target, content="again\n", mode="0700"))
    assert target.stat().st_mode & 0o7777 == 0o700
