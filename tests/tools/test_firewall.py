"""The firewall tools end to end: the MCP SDK client, the gateway and a fresh simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's firewall
scenario (an IP set, a rule using it added at 0, moved, both deleted), the bad inputs
that must send nothing, the digest a plan binds, the lock-out risk a plan flags and the
log's paging.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

WEB01 = "qemu 100 (web01) on pve1"
SEEDED = [
    "0: GROUP webserver",
    "1: IN ACCEPT -source +management -p tcp -dport 22",
    "2: |IN Ping(ACCEPT) # debugging",
]


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then the call with the
    token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def _rules(session: Session, **scope: Any) -> list[str]:
    rules: list[str] = ok(await call(session, "proxmox_firewall_get", **scope))["rules"]
    return rules


async def test_scenario_ip_set_rule_at_0_moved_then_both_deleted(session: Session) -> None:
    made = ok(await call(session, "proxmox_firewall_ipset", vmid=100, ipset="web-clients",
                         op="create", cidr="192.0.2.77/24"))  # fmt: skip
    assert made == {"scope": WEB01, "now": ["192.0.2.0/24"]}
    rule = "IN ACCEPT -source +web-clients -p tcp -dport 443 # web"
    added = ok(await call(session, "proxmox_firewall_rule", vmid=100, type="in",
                          action="ACCEPT", source="+web-clients", proto="tcp", dport="443",
                          comment="web", pos=0))  # fmt: skip
    assert added["now"] == [f"0: {rule}", *(f"{i + 1}:{r.split(':', 1)[1]}"
                                            for i, r in enumerate(SEEDED))]  # fmt: skip
    plan = ok(await call(session, "proxmox_firewall_rule", name="web01", op="move", pos=0,
                         to=2, dry_run=True))["plan"]  # fmt: skip
    (change,) = plan["changes"]
    assert change["field"] == "rules" and change["before"] == added["now"]
    assert change["after"][2] == f"2: {rule}"
    (move,) = plan["calls"]
    assert move["method"] == "PUT" and move["path"] == "/nodes/pve1/qemu/100/firewall/rules/0"
    assert move["params"]["moveto"] == 3 and len(move["params"]["digest"]) == 40
    moved = ok(await call(session, "proxmox_firewall_rule", name="web01", op="move", pos=0, to=2))
    assert moved["now"] == change["after"]
    in_use = refused(await call(session, "proxmox_firewall_delete", vmid=100, ipset="web-clients"))
    assert (in_use["code"], in_use["field"]) == ("in_use", "ipset")
    assert in_use["details"]["rules"] == [f"rule 2 of {WEB01}: {rule}"]
    gone = await _confirmed(session, "proxmox_firewall_rule_delete", vmid=100, pos=2)
    assert gone["now"] == SEEDED
    await _confirmed(session, "proxmox_firewall_delete", vmid=100, ipset="web-clients")
    left = ok(await call(session, "proxmox_firewall_get", vmid=100, show="ipsets"))
    assert left["ipsets"] == []
    assert await _rules(session, vmid=100) == SEEDED
    assert [w for w in session.writes() if "/firewall/" in w] == [
        "POST /nodes/pve1/qemu/100/firewall/ipset",
        "POST /nodes/pve1/qemu/100/firewall/ipset/web-clients",
        "POST /nodes/pve1/qemu/100/firewall/rules",
        "PUT /nodes/pve1/qemu/100/firewall/rules/0",
        "DELETE /nodes/pve1/qemu/100/firewall/rules/2",
        "DELETE /nodes/pve1/qemu/100/firewall/ipset/web-clients",
    ]
    assert not session.schema_problems(), "\n".join(session.schema_problems())


async def test_adding_at_a_position_is_create_then_moveto(session: Session) -> None:
    plan = ok(await call(session, "proxmox_firewall_rule", vmid=100, type="in", action="DROP",
                         proto="tcp", dport="23", pos=3, dry_run=True))["plan"]  # fmt: skip
    create, move = plan["calls"]
    assert create["method"] == "POST" and create["params"]["enable"] == 1
    assert move["params"] == {"moveto": 4}
    done = ok(await call(session, "proxmox_firewall_rule", vmid=100, type="in", action="DROP",
                         proto="tcp", dport="23", pos=3))  # fmt: skip
    assert done["now"] == [*SEEDED, "3: IN DROP -p tcp -dport 23"]
    group = ok(await call(session, "proxmox_firewall_rule", group="webserver", type="in",
                          action="ACCEPT", macro="ssh", pos=1))  # fmt: skip
    assert group["now"] == ["0: IN HTTPS(ACCEPT)", "1: IN SSH(ACCEPT)", "2: IN HTTP(ACCEPT)"]


@pytest.mark.parametrize(
    ("tool", "arguments", "code", "field"),
    [
        ("proxmox_firewall_rule", {"vmid": 100, "type": "in", "action": "ACCEPT", "proto": "tcp",
                                   "dport": "22", "source": "+management"},
         "already_exists", "action"),
        ("proxmox_firewall_ipset", {"ipset": "management", "op": "create"}, "already_exists",
         "ipset"),
        ("proxmox_firewall_ipset", {"ipset": "management", "op": "add", "cidr": "10.1.2.300"},
         "invalid_argument", "cidr"),
        ("proxmox_firewall_rule", {"type": "in", "action": "ACCEPT", "dest": "10.0.0.0/33"},
         "invalid_argument", "dest"),
        ("proxmox_firewall_rule", {"vmid": 100, "type": "in", "action": "ACCEPT", "pos": 4},
         "invalid_argument", "pos"),
        ("proxmox_firewall_rule", {"vmid": 100, "op": "move", "pos": 1, "to": 3},
         "invalid_argument", "to"),
        ("proxmox_firewall_rule_delete", {"group": "webserver", "pos": 2}, "invalid_argument",
         "pos"),
        ("proxmox_firewall_rule", {"vmid": 104, "type": "in", "action": "ACCEPT",
                                   "source": "+app-server"}, "not_found", "source"),
        ("proxmox_firewall_options", {"node": "pve2", "policy_out": "DROP"},
         "invalid_argument", "policy_out"),
    ],
)  # fmt: skip
async def test_bad_input_names_the_field_and_sends_nothing(
    session: Session, tool: str, arguments: dict[str, Any], code: str, field: str
) -> None:
    error = refused(await call(session, tool, **arguments))
    assert (error["code"], error.get("field")) == (code, field), error
    assert error["hint"]
    assert session.writes() == []


async def test_a_position_out_of_range_says_which_are_valid(session: Session) -> None:
    error = refused(await call(session, "proxmox_firewall_rule", vmid=100, op="update", pos=3,
                               comment="x"))  # fmt: skip
    assert error["message"] == "position 3 is out of range: the list has 3 rule(s)"
    assert error["hint"].startswith("Valid positions: 0..2")


async def test_the_plan_binds_the_rules_digest(session: Session) -> None:
    """A delete approved on one rule list is not applied to another: the rule at that
    position may have changed in between."""
    ask = error_of(await call(session, "proxmox_firewall_rule_delete", vmid=100, pos=1))
    assert ask is not None and ask["code"] == "confirmation_required"
    state = session.sim.state
    with state.lock:
        state.firewall.guest(100).rules.insert(0, {"type": "out", "action": "DROP", "enable": 1})
    token = ask["details"]["confirm_token"]
    error = refused(await call(session, "proxmox_firewall_rule_delete", vmid=100, pos=1,
                               confirm_token=token))  # fmt: skip
    assert error["code"] != "confirmation_required"
    assert session.writes() == []
    assert await _rules(session, vmid=100) == ["0: OUT DROP", *(
        f"{i + 1}:{r.split(':', 1)[1]}" for i, r in enumerate(SEEDED))]  # fmt: skip
    digest = ok(await call(session, "proxmox_firewall_get", vmid=100))["digest"]
    with state.lock:
        state.firewall.guest(100).rules.pop(0)
    stale = refused(await call(session, "proxmox_firewall_rule", vmid=100, type="out",
                               action="ACCEPT", digest=digest))  # fmt: skip
    assert (stale["code"], stale["field"]) == ("config_changed", "digest")
    assert session.writes() == []


async def test_enabling_a_drop_policy_without_a_web_ui_rule_is_flagged(session: Session) -> None:
    plan = ok(await call(session, "proxmox_firewall_options", enable=True, dry_run=True))["plan"]
    assert plan["changes"] == [{"field": "enable", "before": 0, "after": 1}]
    assert len(plan["warnings"]) == 3
    assert all("8006 (web UI/API)" in w and "22 (SSH)" not in w for w in plan["warnings"])
    assert plan["warnings"][0].startswith("risk: node pve1 will drop incoming 8006")
    ok(await call(session, "proxmox_firewall_rule", type="in", action="ACCEPT", proto="tcp",
                  dport="8006", source="+management"))  # fmt: skip
    again = ok(await call(session, "proxmox_firewall_options", enable=True, dry_run=True))
    assert again["plan"]["warnings"] == []
    done = ok(await call(session, "proxmox_firewall_options", enable=True))
    assert "enable: 1" in done["now"]
    node = ok(await call(session, "proxmox_firewall_options", node="pve3", enable=False,
                         dry_run=True))["plan"]  # fmt: skip
    assert node["warnings"] == []


async def test_delete_refuses_what_rules_use_and_names_every_rule(session: Session) -> None:
    error = refused(await call(session, "proxmox_firewall_delete", ipset="management"))
    assert error["details"]["rules"] == [
        "rule 0 of cluster: IN SSH(ACCEPT) -source +management # admins",
        "rule 1 of qemu 100 (web01): IN ACCEPT -source +management -p tcp -dport 22",
    ]
    assert error["message"].endswith("and 1 more")
    group = refused(await call(session, "proxmox_firewall_delete", group="webserver"))
    assert group["details"]["rules"] == ["rule 0 of qemu 100 (web01): GROUP webserver"]
    ok(await call(session, "proxmox_firewall_group", group="spare"))
    await _confirmed(session, "proxmox_firewall_delete", group="spare")
    groups = ok(await call(session, "proxmox_firewall_get", show="groups"))["groups"]
    assert [g["group"] for g in groups] == ["webserver"]


async def test_aliases_are_defined_used_and_changed(session: Session) -> None:
    made = ok(await call(session, "proxmox_firewall_alias", alias="dns", cidr="10.10.10.53/32"))
    assert made["now"] == ["backup-server 10.10.10.50 # nfs-backup", "dns 10.10.10.53"]
    ok(await call(session, "proxmox_firewall_rule", vmid=100, type="out", action="ACCEPT",
                  macro="DNS", dest="dns"))  # fmt: skip
    plan = ok(await call(session, "proxmox_firewall_alias", alias="dns", cidr="10.10.10.54",
                         dry_run=True))["plan"]  # fmt: skip
    assert plan["calls"][0]["method"] == "PUT"
    assert plan["changes"][0]["after"] == ["backup-server 10.10.10.50 # nfs-backup",
                                           "dns 10.10.10.54"]  # fmt: skip
    in_use = refused(await call(session, "proxmox_firewall_delete", alias="DNS"))
    assert in_use["code"] == "in_use"


async def test_the_log_pages_a_guests_drops(session: Session) -> None:
    first = ok(await call(session, "proxmox_firewall_log", vmid=100, limit=5))
    assert first["scope"] == WEB01 and len(first["lines"]) == 5
    assert first["total"] > 100 and first["next_start"] == 5
    assert all(line.startswith("100 6 tap100i0-IN ") for line in first["lines"])
    second = ok(await call(session, "proxmox_firewall_log", vmid=100, start=5, limit=5))
    assert second["lines"][0] != first["lines"][-1] and second["next_start"] == 10
    quiet = ok(await call(session, "proxmox_firewall_log", name="db01"))
    assert (quiet["lines"], quiet["total"]) == ([], 0) and "next_start" not in quiet


async def test_update_sets_and_clears_fields_as_pve_names_them(session: Session) -> None:
    added = ok(await call(session, "proxmox_firewall_rule", vmid=102, type="in", action="ACCEPT",
                          proto="icmp", icmp_type="echo-request", log="info"))  # fmt: skip
    assert added["now"] == ["0: IN ACCEPT -p icmp -icmp-type echo-request -log info"]
    change = {"op": "update", "pos": 0, "clear": ["icmp_type", "log"], "comment": "ping"}
    plan = ok(await call(session, "proxmox_firewall_rule", vmid=102, **change, dry_run=True))
    assert plan["plan"]["calls"][0]["params"]["delete"] == "icmp-type,log"
    done = ok(await call(session, "proxmox_firewall_rule", vmid=102, **change))
    assert done["now"] == ["0: IN ACCEPT -p icmp # ping"]
    wrong = refused(await call(session, "proxmox_firewall_rule", vmid=102, op="update", pos=0,
                               clear=["action"]))  # fmt: skip
    assert (wrong["code"], wrong["field"]) == ("invalid_argument", "clear.0")
