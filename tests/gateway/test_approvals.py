"""The four-eyes approval store: every bad input of issue 14 refused, audited, and the store
shared safely between processes (the gateway and `pvemcp approvals`)."""

from __future__ import annotations

import json
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pvemcp.gateway.approvals import (
    MAX_OPEN_PER_REQUESTER,
    SETTLED_KEPT,
    ApprovalRequest,
    ApprovalStore,
)
from pvemcp.gateway.errors import ToolFailure
from pvemcp.policy.audit import AuditLog
from pvemcp.policy.audit_verify import verify_files
from pvemcp.policy.principal import Principal
from tests.conftest import read_audit

IDP = "https://idp.example"
ALICE = Principal("alice", "http", issuer=IDP, client_id="agent", groups=frozenset({"ops"}))
ALICE_OTHER_CLIENT = Principal("alice", "http", issuer=IDP, client_id="laptop")
BOB = Principal("bob", "http", issuer=IDP, groups=frozenset({"secops"}))
CAROL = Principal("carol", "http", issuer=IDP, groups=frozenset({"ops"}))
LOCAL = Principal.local()
BINDING = "b" * 64
ACCOUNT = pwd.getpwuid(os.geteuid()).pw_name
"""The OS account these tests run as (what a local decision records)."""


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "audit.jsonl")


@pytest.fixture
def store(tmp_path: Path, audit: AuditLog, clock: Clock) -> ApprovalStore:
    return ApprovalStore(tmp_path / "audit" / "approvals", 600, audit, clock=clock)


def hold(store: ApprovalStore, *approvers: str, by: Principal = ALICE) -> ApprovalRequest:
    return store.create(
        tool="proxmox_guest_delete",
        cluster="demo",
        binding=BINDING,
        plan={"summary": "delete VM 101", "calls": []},
        arguments={"vmid": 101},
        requester=by,
        approvers=approvers or ("group:secops", "local"),
        rule_ids=("four-eyes",),
    )


def refused(excinfo: pytest.ExceptionInfo[ToolFailure], code: str) -> ToolFailure:
    failure = excinfo.value
    assert failure.code == code, failure.payload()
    assert failure.hint
    return failure


def approval_records(audit: AuditLog) -> list[dict[str, Any]]:
    assert audit.path is not None
    return [r for r in read_audit(audit.path) if r["phase"] == "approval"]


def test_a_request_is_a_private_file_with_a_random_id_and_an_audit_record(
    store: ApprovalStore, audit: AuditLog, clock: Clock
) -> None:
    request = hold(store)
    clock.now += 1
    other = hold(store)
    assert request.id != other.id and len(request.id) == 24
    assert request.status == "pending" and request.expires == request.created + 600
    assert request.requester == {
        "sub": "alice",
        "transport": "http",
        "iss": IDP,
        "client_id": "agent",
        "groups": ["ops"],
    }
    path = store.directory / f"{request.id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert store.get(request.id) == request
    assert ApprovalRequest.from_json(request.to_json()) == request
    assert [r.id for r in store.list("pending")] == [request.id, other.id]
    first = approval_records(audit)[0]
    assert first["what"]["action"] == "requested"
    assert first["who"]["sub"] == "alice"
    assert first["what"]["approvers"] == ["group:secops", "local"]
    assert first["where"] == {"cluster": "demo"}


def test_a_named_approver_approves_and_the_call_is_consumed_once(
    store: ApprovalStore, audit: AuditLog, clock: Clock
) -> None:
    request = hold(store)
    approved = store.approve(request.id, BOB, "checked the plan")
    assert approved.status == "approved" and approved.reason == "checked the plan"
    assert approved.decided_by is not None and approved.decided_by["sub"] == "bob"
    # Another process (the gateway) reads the same directory.
    again = ApprovalStore(store.directory, 600, audit, clock=clock)
    used = again.consume(request.id, BINDING, ALICE)
    assert used.status == "used"
    with pytest.raises(ToolFailure) as second:
        store.consume(request.id, BINDING, ALICE)
    assert "already used" in refused(second, "approval_decided").message
    actions = [(r["what"]["action"], r["outcome"]["status"]) for r in approval_records(audit)]
    assert actions == [
        ("requested", "pending"),
        ("approved", "approved"),
        ("used", "used"),
        ("refused", "used"),
    ]
    approval = approval_records(audit)[1]
    assert approval["who"]["sub"] == "bob"
    assert approval["outcome"]["reason"] == "checked the plan"
    assert approval["what"]["requester"]["sub"] == "alice"


def test_the_requester_may_not_approve_even_when_named_nor_from_another_client(
    store: ApprovalStore, audit: AuditLog
) -> None:
    request = hold(store, "sub:alice", "group:secops")
    for who in (ALICE, ALICE_OTHER_CLIENT):
        with pytest.raises(ToolFailure) as excinfo:
            store.approve(request.id, who, "fine by me")
        refused(excinfo, "approval_self")
    with pytest.raises(ToolFailure) as excinfo:
        store.deny(request.id, ALICE, "never mind")
    refused(excinfo, "approval_self")
    assert store.get(request.id).status == "pending"
    refusals = [r for r in approval_records(audit) if r["what"]["action"] == "refused"]
    assert [r["outcome"]["error"] for r in refusals] == ["approval_self"] * 3
    assert {r["who"].get("client_id") for r in refusals} == {"agent", "laptop"}


def test_local_cannot_approve_what_local_asked(store: ApprovalStore) -> None:
    request = hold(store, "local", by=LOCAL)
    with pytest.raises(ToolFailure) as excinfo:
        store.approve(request.id, LOCAL, "ok")
    refused(excinfo, "approval_self")


def test_someone_not_named_is_refused_and_a_group_member_may_approve(
    store: ApprovalStore, audit: AuditLog
) -> None:
    request = hold(store, "group:secops")
    for who in (CAROL, LOCAL):
        with pytest.raises(ToolFailure) as excinfo:
            store.approve(request.id, who, "looks fine")
        assert "group:secops" in refused(excinfo, "approval_not_approver").message
    refusal = approval_records(audit)[-1]
    assert refusal["who"] == {"sub": "local", "transport": "stdio", "os_user": ACCOUNT}
    assert store.approve(request.id, BOB, "ok").status == "approved"


def test_the_local_operator_approves_as_local_with_the_os_user_recorded(
    store: ApprovalStore, audit: AuditLog
) -> None:
    request = hold(store)
    approved = store.approve(request.id, LOCAL, "reviewed at the console")
    assert approved.decided_by == {
        "sub": "local",
        "transport": "stdio",
        "os_user": ACCOUNT,
    }
    assert approval_records(audit)[-1]["who"]["os_user"] == ACCOUNT


def test_an_expired_request_is_refused_and_its_expiry_audited(
    store: ApprovalStore, audit: AuditLog, clock: Clock
) -> None:
    pending = hold(store)
    approved = hold(store)
    store.approve(approved.id, BOB, "ok")
    clock.now += 601
    with pytest.raises(ToolFailure) as excinfo:
        store.approve(pending.id, BOB, "too late")
    refused(excinfo, "approval_expired")
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(approved.id, BINDING, ALICE)
    refused(excinfo, "approval_expired")
    assert {r.status for r in store.list()} == {"expired"}
    expiries = [r for r in approval_records(audit) if r["what"]["action"] == "expired"]
    assert sorted(r["what"]["approval_id"] for r in expiries) == sorted([pending.id, approved.id])
    assert all("who" not in r and r["what"]["requester"]["sub"] == "alice" for r in expiries)


def test_a_decided_request_cannot_be_decided_again(store: ApprovalStore) -> None:
    request = hold(store)
    store.deny(request.id, BOB, "not during business hours")
    for decide in (store.approve, store.deny):
        with pytest.raises(ToolFailure) as excinfo:
            decide(request.id, LOCAL, "overrule")
        assert "already denied" in refused(excinfo, "approval_decided").message
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(request.id, BINDING, ALICE)
    assert "not during business hours" in refused(excinfo, "approval_denied").message


def test_a_pending_request_does_not_run(store: ApprovalStore) -> None:
    request = hold(store)
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(request.id, BINDING, ALICE)
    assert "proxmox_approval_status" in str(refused(excinfo, "approval_pending").hint)


def test_changed_arguments_are_a_mismatch_and_leave_the_approval_usable(
    store: ApprovalStore, audit: AuditLog
) -> None:
    request = hold(store)
    store.approve(request.id, BOB, "ok")
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(request.id, "c" * 64, ALICE)
    refused(excinfo, "approval_mismatch")
    assert approval_records(audit)[-1]["outcome"]["error"] == "approval_mismatch"
    assert store.consume(request.id, BINDING, ALICE).status == "used"


@pytest.mark.parametrize(
    "forged",
    ["A" * 24, "../../../../etc/passwd", "", "x" * 10_000, ".lock", "A" * 23 + "/"],
)
def test_a_forged_or_unknown_id_is_not_found_and_audited(
    store: ApprovalStore, audit: AuditLog, forged: str
) -> None:
    hold(store)
    acts: list[Callable[[], ApprovalRequest]] = [
        lambda: store.approve(forged, BOB, "ok"),
        lambda: store.deny(forged, BOB, "no"),
        lambda: store.consume(forged, BINDING, ALICE),
    ]
    for act in acts:
        with pytest.raises(ToolFailure) as excinfo:
            act()
        assert len(refused(excinfo, "approval_not_found").message) < 200
    with pytest.raises(ToolFailure) as excinfo:
        store.get(forged)
    refused(excinfo, "approval_not_found")
    refusals = approval_records(audit)[1:]
    assert [r["outcome"]["error"] for r in refusals] == ["approval_not_found"] * 3
    assert all(len(r["what"]["approval_id"]) <= 64 for r in refusals)


def test_a_reason_is_required(store: ApprovalStore) -> None:
    request = hold(store)
    for reason in ("", "   ", "two\nlines", "x" * 1001):
        with pytest.raises(ToolFailure) as excinfo:
            store.approve(request.id, BOB, reason)
        assert refused(excinfo, "invalid_argument").field == "reason"
    assert store.get(request.id).status == "pending"


def test_an_unwritable_audit_log_means_no_request(tmp_path: Path, clock: Clock) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the audit directory should be")
    store = ApprovalStore(tmp_path / "approvals", 600, AuditLog(blocked / "audit.jsonl"))
    with pytest.raises(ToolFailure) as excinfo:
        hold(store)
    refused(excinfo, "audit_unavailable")
    assert store.list() == []


def test_the_audit_chain_verifies_after_every_kind_of_step(
    store: ApprovalStore, audit: AuditLog, clock: Clock
) -> None:
    done = hold(store)
    store.approve(done.id, BOB, "ok")
    store.consume(done.id, BINDING, ALICE)
    store.deny(hold(store).id, LOCAL, "no")
    hold(store)
    clock.now += 601
    store.list()
    with pytest.raises(ToolFailure):
        store.approve("A" * 24, BOB, "ok")
    assert audit.path is not None
    report = verify_files([audit.path])
    assert report.ok, report.problems
    actions = [r["what"]["action"] for r in approval_records(audit)]
    assert actions == [
        "requested",
        "approved",
        "used",
        "requested",
        "denied",
        "requested",
        "expired",
        "refused",
    ]


def test_list_rejects_an_unknown_status(store: ApprovalStore) -> None:
    with pytest.raises(ToolFailure) as excinfo:
        store.list("maybe")
    assert excinfo.value.code == "invalid_argument" and excinfo.value.field == "status"


def test_a_caller_sees_only_requests_they_made_or_may_decide(
    store: ApprovalStore, audit: AuditLog
) -> None:
    request = hold(store, "group:secops")
    assert store.get(request.id, ALICE) == request
    assert store.get(request.id, BOB) == request
    for stranger in (CAROL, LOCAL):
        with pytest.raises(ToolFailure) as excinfo:
            store.get(request.id, stranger)
        refused(excinfo, "approval_not_found")
    store.approve(request.id, BOB, "ok")
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(request.id, BINDING, CAROL)
    refused(excinfo, "approval_not_found")
    refusals = [r for r in approval_records(audit) if r["what"]["action"] == "refused"]
    assert [(r["who"]["sub"], r["outcome"]["error"]) for r in refusals] == [
        ("carol", "approval_not_found"),
        ("local", "approval_not_found"),
        ("carol", "approval_not_found"),
    ]
    assert store.get(request.id).status == "approved"


def test_a_store_that_cannot_be_used_is_a_structured_refusal(
    tmp_path: Path, audit: AuditLog, clock: Clock
) -> None:
    """A store directory that is a file, or a lock that cannot be opened: every step is
    `approval_unavailable` naming the store (an OSError escaped the store before, out of
    the gateway's pipeline and the HTTP API unstructured, and the held call unrecorded)."""
    not_a_directory = tmp_path / "approvals-file"
    not_a_directory.write_text("")
    with pytest.raises(ToolFailure) as excinfo:
        hold(ApprovalStore(not_a_directory, 600, audit, clock=clock))
    assert str(not_a_directory) in refused(excinfo, "approval_unavailable").message

    broken = ApprovalStore(tmp_path / "broken", 600, audit, clock=clock)
    request = hold(broken, "group:secops")
    lock = broken.directory / ".lock"
    lock.unlink()
    lock.mkdir()  # the lock file cannot be opened
    steps: list[Callable[[], object]] = [
        lambda: hold(broken, "group:secops"),
        lambda: broken.get(request.id, BOB),
        broken.list,
        lambda: broken.approve(request.id, BOB, "ok"),
        lambda: broken.consume(request.id, BINDING, ALICE),
    ]
    for step in steps:
        with pytest.raises(ToolFailure) as excinfo:
            step()
        refused(excinfo, "approval_unavailable")
    assert json.loads((broken.directory / f"{request.id}.json").read_text())["status"] == "pending"


def test_settled_requests_leave_the_store_after_a_week(
    store: ApprovalStore, clock: Clock, audit: AuditLog
) -> None:
    """Denied, used and expired requests are removed a week after their expiry, so the
    store (scanned whole by every list, and by the webhook notifier each second under the
    store's lock) does not grow by one file per held call for ever; it did before. Their
    steps stay in the audit log; a pruned id is `approval_not_found`, so nothing runs."""
    denied = hold(store, "group:secops")
    store.deny(denied.id, BOB, "no")
    used = hold(store, "group:secops")
    store.approve(used.id, BOB, "ok")
    store.consume(used.id, BINDING, ALICE)
    forgotten = hold(store, "group:secops")
    clock.now += store.ttl + SETTLED_KEPT - 1
    fresh = hold(store, "group:secops")
    assert {r.id for r in store.list()} == {denied.id, used.id, forgotten.id, fresh.id}
    clock.now += 2
    assert [r.id for r in store.list()] == [fresh.id]
    assert sorted(p.name for p in store.directory.glob("*.json")) == [f"{fresh.id}.json"]
    with pytest.raises(ToolFailure) as excinfo:
        store.consume(used.id, BINDING, ALICE)
    refused(excinfo, "approval_not_found")
    steps = [(r["what"]["approval_id"], r["what"]["action"]) for r in approval_records(audit)]
    assert (forgotten.id, "expired") in steps and (used.id, "used") in steps


def test_a_requester_has_a_bounded_number_of_open_requests(
    store: ApprovalStore, audit: AuditLog
) -> None:
    """A model that re-sends a held call in a loop made one request (one file, one webhook
    post to the approvers) per call, as fast as the rate limit allows, burying the real
    one. Past `MAX_OPEN_PER_REQUESTER` open requests (pending or approved, not yet used)
    the next is refused, audited, until one is settled; other callers are not affected."""
    held = [hold(store, "group:secops") for _ in range(MAX_OPEN_PER_REQUESTER)]
    with pytest.raises(ToolFailure) as excinfo:
        hold(store, "group:secops")
    assert str(MAX_OPEN_PER_REQUESTER) in refused(excinfo, "approval_limit").message
    assert len(store.list()) == MAX_OPEN_PER_REQUESTER
    last = approval_records(audit)[-1]
    assert (last["what"]["action"], last["who"]["sub"]) == ("refused", "alice")
    assert last["outcome"]["error"] == "approval_limit"
    assert hold(store, "group:secops", by=CAROL).requester["sub"] == "carol"
    store.deny(held[0].id, BOB, "no")
    assert hold(store, "group:secops").status == "pending"


def test_the_os_user_of_a_local_decision_is_the_account_not_the_environment(
    store: ApprovalStore, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LOGNAME`/`USER` are the caller's to set: they named the OS account of a local
    decision before (`getpass.getuser()` believes them), so `USER=alice pvemcp approvals
    approve` was recorded as alice's. The account is the process's effective uid's."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "someone-else")
    request = hold(store)
    approved = store.approve(request.id, LOCAL, "reviewed at the console")
    assert approved.decided_by is not None and approved.decided_by["os_user"] == ACCOUNT
    assert approval_records(audit)[-1]["who"]["os_user"] == ACCOUNT
