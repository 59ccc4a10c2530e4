"""The evidence store on the real sshd: the full output of escape calls kept redacted and
content-addressed, its hashes in the audit outcome, `audit verify` checking every blob,
caps, retention, and a store that cannot be written refusing escape calls before they run."""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_commands import show_evidence_command, verify_command
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.evidence import DAY, EvidenceStore, Pruned, blob_path
from pvemcp.policy.principal import Principal
from pvemcp.secrets.redaction import MASK
from pvemcp.simulator.server import SimulatorHandle
from tests.conftest import read_audit
from tests.support.sshd import Sshd

from .conftest import escape_gateway, failed, ok
from .test_escape_guests import PCT_STANDIN

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LOCAL = Principal.local("memory")
POLICY = """
version = 1

[[rules]]
id = "shell"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_shell_run", "proxmox_file_write", "proxmox_file_read"]

[[rules]]
id = "guests"
effect = "allow"
subjects = ["local"]
tools = ["proxmox_ct_exec", "proxmox_vm_exec"]
"""


@asynccontextmanager
async def gateway_with(
    sim: SimulatorHandle,
    server: Sshd,
    tmp: Path,
    audit: Path,
    store: EvidenceStore,
    *,
    policy: str = POLICY,
) -> AsyncIterator[Gateway]:
    async with escape_gateway(
        sim, server, audit=audit, policy=policy, secrets_dir=tmp, output_cap=1024
    ) as gateway:
        gateway.evidence = store
        yield gateway


def outcome_of(audit: Path, event_id: str) -> dict[str, Any]:
    (found,) = [
        r for r in read_audit(audit) if r["event_id"] == event_id and r["phase"] == "outcome"
    ]
    return dict(found["outcome"])


def verify(audit: Path, root: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = verify_command([audit], default_log=None, evidence_root=root, out=out, err=err)
    return code, out.getvalue() + err.getvalue()


async def test_shell_output_is_kept_redacted_and_verified(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    root = tmp_path / "evidence"
    secret = ssh_sim.token_secret  # loaded from the secrets file: in the redaction set
    command = f"echo start {secret}; seq 1 400; echo oops {secret} >&2; exit 3"
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, EvidenceStore(root)) as gw:
        result = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": command})
    data = ok(result)
    assert data["exit_code"] == 3 and data["truncated"], "the answer is capped at 1024 bytes"
    outcome = outcome_of(audit_path, result.event_id)
    refs = {ref["kind"]: ref for ref in outcome["evidence"]}
    assert set(refs) == {"stdout", "stderr"}
    stdout = blob_path(root, refs["stdout"]["sha256"]).read_bytes()
    stderr = blob_path(root, refs["stderr"]["sha256"]).read_bytes()
    # The whole output, not the capped answer; the secret masked before hashing.
    assert stdout == f"start {MASK}\n".encode() + b"".join(b"%d\n" % i for i in range(1, 401))
    assert stderr == f"oops {MASK}\n".encode()
    assert secret.encode() not in stdout + stderr
    for ref, blob in ((refs["stdout"], stdout), (refs["stderr"], stderr)):
        assert ref["sha256"] == hashlib.sha256(blob).hexdigest()
        assert ref["bytes"] == len(blob) and ref["truncated"] is False
        path = blob_path(root, ref["sha256"])
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
    assert root.stat().st_mode & 0o777 == 0o700
    code, text = verify(audit_path, root)
    assert code == 0, text
    assert "evidence: 2 blob(s) checked" in text
    printed = io.BytesIO()
    assert show_evidence_command(refs["stdout"]["sha256"], evidence_root=root, out=printed) == 0
    assert printed.getvalue() == stdout


async def test_a_blob_over_the_cap_is_cut_and_says_so(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    root = tmp_path / "evidence"
    store = EvidenceStore(root, max_blob_bytes=100)
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
        result = await gw.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "seq 1 500"}
        )
    ok(result)
    (ref,) = outcome_of(audit_path, result.event_id)["evidence"]
    assert ref["kind"] == "stdout" and ref["bytes"] == 100 and ref["truncated"] is True
    assert (
        blob_path(root, ref["sha256"]).read_bytes()
        == b"".join(b"%d\n" % i for i in range(1, 501))[:100]
    )
    assert verify(audit_path, root)[0] == 0


async def test_deleting_or_altering_a_blob_fails_verify_naming_it(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    root = tmp_path / "evidence"
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, EvidenceStore(root)) as gw:
        first = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo one"})
        second = await gw.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo two"}
        )
    ok(first), ok(second)
    (one,) = outcome_of(audit_path, first.event_id)["evidence"]
    (two,) = outcome_of(audit_path, second.event_id)["evidence"]
    assert verify(audit_path, root)[0] == 0
    blob_path(root, one["sha256"]).unlink()
    blob_path(root, two["sha256"]).write_bytes(b"TWO\n")  # same size, other content
    code, text = verify(audit_path, root)
    assert code == 1
    assert f"evidence_missing: evidence blob {one['sha256']} is missing" in text
    assert f"evidence_altered: evidence blob {two['sha256']} was altered" in text
    report = verify_files([audit_path], evidence_root=root)
    assert [p.kind for p in report.problems] == ["evidence_missing", "evidence_altered"]
    assert report.problems[0].file == audit_path and report.problems[0].line is not None
    printed, err = io.BytesIO(), io.StringIO()
    assert show_evidence_command(two["sha256"], evidence_root=root, out=printed, err=err) == 1
    assert "was altered" in err.getvalue()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "ab", "0" * 63 + "/"])
def test_show_evidence_refuses_an_id_that_is_not_a_hash(tmp_path: Path, bad: str) -> None:
    err = io.StringIO()
    code = show_evidence_command(bad, evidence_root=tmp_path, out=io.BytesIO(), err=err)
    if bad == "A" * 64:  # upper-case hex is the same id: looked up, not found
        assert code == 1 and "no evidence blob" in err.getvalue()
    else:
        assert code == 2 and "bad evidence id" in err.getvalue()


@pytest.mark.parametrize("broken", ["not_a_directory", "no_disk_space"])
async def test_an_unusable_store_refuses_the_call_before_it_runs(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path, broken: str
) -> None:
    if broken == "not_a_directory":
        (tmp_path / "file").write_text("")
        store = EvidenceStore(tmp_path / "file" / "evidence")  # cannot be created
    else:
        store = EvidenceStore(tmp_path / "evidence", min_free_bytes=1 << 62)
    marker = Path(tempfile.mkdtemp(prefix="pvemcp-evidence-")) / "ran"
    marker.parent.chmod(0o777)
    try:
        async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
            result = await gw.invoke(
                LOCAL, "proxmox_shell_run", {"node": "pve1", "command": f"touch {marker}"}
            )
        assert not marker.exists(), "the command must not run"
    finally:
        shutil.rmtree(marker.parent)
    error = failed(result)
    assert error["code"] == "evidence_unavailable"
    assert ("evidence_min_free_bytes" if broken == "no_disk_space" else "cannot write") in error[
        "message"
    ]
    (record,) = [r for r in read_audit(audit_path) if r["event_id"] == result.event_id]
    assert record["phase"] == "record", "refused before any intent"
    assert record["outcome"]["error"] == "evidence_unavailable"


async def test_a_full_store_refuses_the_next_call(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    output = b"".join(b"%d\n" % i for i in range(1, 251))
    store = EvidenceStore(tmp_path / "evidence", max_total_bytes=len(output))
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
        first = await gw.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "seq 1 250"}
        )
        second = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo x"})
    ok(first)
    assert store.total_bytes() == len(output), "the first call filled the store exactly"
    error = failed(second)
    assert error["code"] == "evidence_unavailable" and "is full" in error["message"]


async def test_a_write_failure_after_the_run_is_recorded_not_raised(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    root = tmp_path / "evidence"
    output = b"hello evidence\n"
    shard = root / hashlib.sha256(output).hexdigest()[:2]
    root.mkdir(mode=0o700)
    shard.write_text("in the way")  # the blob's directory cannot be made
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, EvidenceStore(root)) as gw:
        result = await gw.invoke(
            LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo hello evidence"}
        )
    assert ok(result)["stdout"] == output.decode(), "the command ran: its answer is due"
    outcome = outcome_of(audit_path, result.event_id)
    assert "evidence" not in outcome
    assert outcome["evidence_error"]["code"] == "evidence_unavailable"
    assert str(root) in outcome["evidence_error"]["message"]
    assert outcome["out_sha256"] == hashlib.sha256(output).hexdigest()


async def test_retention_prunes_with_a_record_and_verify_tells_pruned_from_deleted(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    root = tmp_path / "evidence"
    days_later = [0.0]
    store = EvidenceStore(root, retention_days=7, clock=lambda: time.time() + days_later[0] * DAY)
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
        old = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo old"})
        ok(old)
        (ref,) = outcome_of(audit_path, old.event_id)["evidence"]
        path = blob_path(root, ref["sha256"])
        days_later[0] = 8  # past retention, and past the hourly pruning interval
        ok(await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo new"}))
    assert not path.exists()
    (pruned,) = [r for r in read_audit(audit_path) if r["phase"] == "evidence_pruned"]
    assert pruned["what"] == {
        "store": str(root),
        "blobs": [{"sha256": ref["sha256"], "bytes": ref["bytes"]}],
    }
    code, text = verify(audit_path, root)
    assert code == 0, text
    assert "1 pruned by retention" in text


@pytest.fixture
def writable(sshd: Sshd) -> Iterator[Path]:
    """A directory the test user owns (pytest's tmp is private), with one file in it."""
    root = Path(tempfile.mkdtemp(prefix="pvemcp-evidence-")).resolve()
    root.chmod(0o755)
    user = pwd.getpwnam(sshd.user)
    (root / "app.conf").write_text("old = 1\nkeep = yes\n")
    for path in (root, root / "app.conf"):
        os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield root
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("readable", [True, False])
async def test_a_file_write_keeps_before_after_and_the_whole_diff(
    ssh_sim: SimulatorHandle,
    sshd: Sshd,
    tmp_path: Path,
    audit_path: Path,
    *,
    writable: Path,
    readable: bool,
) -> None:
    root = tmp_path / "evidence"
    target = writable / "app.conf"
    secret = ssh_sim.token_secret
    new = f"new = 2\nkeep = yes\ntoken = {secret}\n"
    policy = POLICY if readable else POLICY.replace(', "proxmox_file_read"', "")
    store = EvidenceStore(root)
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store, policy=policy) as gw:
        result = await gw.invoke(
            LOCAL, "proxmox_file_write", {"node": "pve1", "path": str(target), "content": new}
        )
    written = ok(result)
    assert target.read_text() == new
    outcome = outcome_of(audit_path, result.event_id)
    refs = {ref["kind"]: ref for ref in outcome["evidence"]}
    assert set(refs) == {"before", "after", "diff"}
    blobs = {kind: blob_path(root, ref["sha256"]).read_bytes() for kind, ref in refs.items()}
    assert blobs["before"] == b"old = 1\nkeep = yes\n"
    # A caller who may write but not read the file is not told the old content's hash;
    # the evidence keeps the content for the reviewer either way.
    shown = refs["before"]["sha256"] if readable else None
    assert written.get("before_sha256") == shown
    assert blobs["after"] == f"new = 2\nkeep = yes\ntoken = {MASK}\n".encode()
    assert secret.encode() not in b"".join(blobs.values())
    assert b"-old = 1\n+new = 2\n keep = yes\n+token = " + MASK.encode() in blobs["diff"]
    assert verify(audit_path, root)[0] == 0


async def test_guest_exec_and_file_read_output_is_kept(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path, writable: Path
) -> None:
    pct = sshd.bin_dir / "pct"
    pct.write_text(PCT_STANDIN)
    pct.chmod(0o755)
    root = tmp_path / "evidence"
    calls: dict[str, dict[str, Any]] = {
        "proxmox_ct_exec": {"vmid": 203, "argv": ["sh", "-c", "echo in ct $PCT_VMID; echo e >&2"]},
        "proxmox_vm_exec": {"vmid": 106, "argv": ["echo", "hello"]},
        "proxmox_file_read": {"node": "pve1", "path": str(writable / "app.conf")},
    }
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, EvidenceStore(root)) as gw:
        results = {tool: await gw.invoke(LOCAL, tool, args) for tool, args in calls.items()}
    kept = {}
    for tool, result in results.items():
        ok(result)
        refs = outcome_of(audit_path, result.event_id)["evidence"]
        kept[tool] = {ref["kind"]: blob_path(root, ref["sha256"]).read_bytes() for ref in refs}
    assert kept["proxmox_ct_exec"] == {"stdout": b"in ct 203\n", "stderr": b"e\n"}
    assert kept["proxmox_vm_exec"] == {"stdout": b"hello\n"}
    assert kept["proxmox_file_read"] == {"content": b"old = 1\nkeep = yes\n"}
    assert verify(audit_path, root)[0] == 0


def test_verify_reports_a_blob_whose_size_differs_from_its_record(tmp_path: Path) -> None:
    """A writer that recorded the wrong size (or a blob cut and its record resealed by
    hand): the hash matches, the recorded size does not."""
    root, log = tmp_path / "evidence", tmp_path / "audit.jsonl"
    ref = EvidenceStore(root).keep("stdout", b"twelve bytes", lambda data: data)
    wrong = ref.record() | {"bytes": 11}
    audit = AuditLog(log)
    audit.outcome(
        "e1",
        LOCAL,
        tool="proxmox_shell_run",
        tier="escape",
        cluster="lab",
        arguments=None,
        decision=None,
        status="ok",
        duration_ms=1.0,
        evidence=[wrong],
    )
    audit.close()
    report = verify_files([log], evidence_root=root)
    (problem,) = report.problems
    assert problem.kind == "evidence_size_mismatch"
    assert f"evidence blob {ref.sha256} has 12 bytes, the record says 11" in problem.message


async def test_a_blob_that_vanishes_while_the_store_is_counted_is_no_crash(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    """Several processes may share a store: a blob another one prunes between listing a
    shard and reading its size (a dangling name here) is not counted, and the call runs
    with its record, rather than failing unstructured and unrecorded."""
    root = tmp_path / "evidence"
    gone = blob_path(root, "ab" * 32)
    gone.parent.mkdir(mode=0o700, parents=True)
    gone.symlink_to(tmp_path / "pruned-meanwhile")
    store = EvidenceStore(root)
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
        result = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "echo hi"})
    assert ok(result)["stdout"] == "hi\n"
    (ref,) = outcome_of(audit_path, result.event_id)["evidence"]
    assert store.total_bytes() == ref["bytes"] == 3


def test_a_blob_kept_again_while_a_prune_is_recorded_is_not_left_listed_as_pruned(
    tmp_path: Path,
) -> None:
    """A call keeping the same content as an expired blob while the prune is being written
    to the audit log: its reference must come after the pruning record (it waits, the blob
    is written anew), so deleting the blob later is still reported as missing, not passed
    as retention."""
    root, log = tmp_path / "evidence", tmp_path / "audit.jsonl"
    later = time.time() + 8 * DAY
    store = EvidenceStore(root, retention_days=7, clock=lambda: later)
    output = b"the same output\n"
    old = store.keep("stdout", output, lambda data: data)
    audit = AuditLog(log)
    listed, kept = threading.Event(), threading.Event()

    def record(expired: list[Pruned]) -> None:
        listed.set()
        kept.wait(1.0)  # the window a concurrent call's keep falls into
        audit.evidence_pruned(str(root), [(item.sha256, item.bytes) for item in expired])

    pruner = threading.Thread(target=store.prune, args=(record,))
    pruner.start()
    assert listed.wait(5.0)
    ref = store.keep("stdout", output, lambda data: data)
    kept.set()
    pruner.join()
    audit.outcome(
        "e1",
        LOCAL,
        tool="proxmox_shell_run",
        tier="escape",
        cluster="lab",
        arguments=None,
        decision=None,
        status="ok",
        duration_ms=1.0,
        evidence=[ref.record()],
    )
    audit.close()
    assert ref.sha256 == old.sha256
    assert verify_files([log], evidence_root=root).ok, "the blob is there, kept anew"
    blob_path(root, ref.sha256).unlink()  # tampering
    (problem,) = verify_files([log], evidence_root=root).problems
    assert problem.kind == "evidence_missing", problem


async def test_a_call_that_passed_the_check_keeps_what_fits_when_the_store_fills(
    ssh_sim: SimulatorHandle, sshd: Sshd, tmp_path: Path, audit_path: Path
) -> None:
    """The check before a call only knows the store is not full yet: output bigger than the
    room left is kept cut to that room (`truncated`), not lost after the command ran (a
    model could pad a command's output to make it run without evidence); a stream that
    finds no room left is the record's `evidence_error` beside what was kept; the store
    is then full and the next call is refused before it runs."""
    first = b"".join(b"%d\n" % i for i in range(1, 31))  # 81 bytes
    store = EvidenceStore(tmp_path / "evidence", max_total_bytes=100)
    padded = "echo kept; seq 1 1000; echo oops >&2"
    async with gateway_with(ssh_sim, sshd, tmp_path, audit_path, store) as gw:
        ok(await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "seq 1 30"}))
        ran = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": padded})
        refused = await gw.invoke(LOCAL, "proxmox_shell_run", {"node": "pve1", "command": "id"})
    ok(ran)
    outcome = outcome_of(audit_path, ran.event_id)
    (ref,) = outcome["evidence"]
    room = 100 - len(first)
    assert (ref["kind"], ref["truncated"], ref["bytes"]) == ("stdout", True, room)
    kept = blob_path(store.root, ref["sha256"]).read_bytes()
    assert kept == b"kept\n" + b"".join(b"%d\n" % i for i in range(1, 1001))[: room - 5]
    assert "is full" in outcome["evidence_error"]["message"], "stderr found no room"
    assert failed(refused)["code"] == "evidence_unavailable"
    code, text = verify(audit_path, store.root)
    assert code == 0, text
