"""The firewall endpoints over real HTTPS, as pve-firewall's handlers behave.

Rules: a new rule is always rule 0 (create ignores `pos`), `moveto` lands in front of the
rule that was there, digests refuse a stale change, `verify_rule` refuses what PVE
refuses, naming the parameter. IP sets: CIDRs normalised, duplicates and bad CIDRs
refused, a non-empty set kept without `force`. Aliases, groups, options and the log.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pvemcp.simulator.firewall import Item, list_digest

from .conftest import get_data, post_upid

pytestmark = pytest.mark.anyio

RULES = "/cluster/firewall/rules"
WEB01 = "/nodes/pve1/qemu/100/firewall"


async def _send(client: httpx2.AsyncClient, method: str, path: str, **params: Any) -> Any:
    if method in ("GET", "DELETE"):
        response = await client.request(method, path, params=params)
    else:
        response = await client.request(method, path, data=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _refused(
    client: httpx2.AsyncClient, method: str, path: str, **params: Any
) -> tuple[int, str, dict[str, str]]:
    if method in ("GET", "DELETE"):
        response = await client.request(method, path, params=params)
    else:
        response = await client.request(method, path, data=params)
    body = response.json()
    return response.status_code, body["message"].strip(), body.get("errors") or {}


async def _comments(client: httpx2.AsyncClient, path: str) -> list[Any]:
    return [rule.get("comment") for rule in await get_data(client, path)]


async def test_a_new_rule_is_rule_0_whatever_pos_says_and_is_off_unless_enabled(
    fresh_client: httpx2.AsyncClient,
) -> None:
    before = await get_data(fresh_client, f"{WEB01}/rules")
    await _send(fresh_client, "POST", f"{WEB01}/rules", type="in", action="DROP", pos="2",
                proto="tcp", dport="23", comment="telnet")  # fmt: skip
    rules = await get_data(fresh_client, f"{WEB01}/rules")
    assert len(rules) == len(before) + 1
    assert rules[0]["comment"] == "telnet" and rules[0]["enable"] == 0 and rules[0]["pos"] == 0
    assert [r["pos"] for r in rules] == list(range(len(rules)))
    assert len({r["digest"] for r in rules}) == 1
    stored: list[Item] = [{k: v for k, v in r.items() if k not in ("pos", "digest")}
                          for r in rules]  # fmt: skip
    assert rules[0]["digest"] == list_digest(stored)


async def test_moveto_lands_in_front_of_the_rule_that_was_there(
    fresh_client: httpx2.AsyncClient,
) -> None:
    for name in ("c", "b", "a"):
        await _send(fresh_client, "POST", RULES, type="in", action="ACCEPT", comment=name)
    assert await _comments(fresh_client, RULES) == ["a", "b", "c", "admins"]
    await _send(fresh_client, "PUT", f"{RULES}/0", moveto="2", comment="ignored")
    assert await _comments(fresh_client, RULES) == ["b", "a", "c", "admins"]
    await _send(fresh_client, "PUT", f"{RULES}/0", moveto="9")
    assert await _comments(fresh_client, RULES) == ["a", "c", "admins", "b"]
    await _send(fresh_client, "PUT", f"{RULES}/3", moveto="0")
    assert await _comments(fresh_client, RULES) == ["b", "a", "c", "admins"]


async def test_a_stale_digest_is_refused_and_changes_nothing(
    fresh_client: httpx2.AsyncClient,
) -> None:
    digest = (await get_data(fresh_client, RULES))[0]["digest"]
    await _send(fresh_client, "POST", RULES, type="out", action="ACCEPT")
    for method, params in (("PUT", {"comment": "x"}), ("DELETE", {})):
        status, message, _ = await _refused(
            fresh_client, method, f"{RULES}/0", digest=digest, **params
        )
        assert (status, message) == (
            500,
            "detected modified configuration - file changed by other user? Try again.",
        )
    assert len(await get_data(fresh_client, RULES)) == 2
    options = await get_data(fresh_client, "/cluster/firewall/options")
    await _send(fresh_client, "PUT", "/cluster/firewall/options", enable="1",
                digest=options["digest"])  # fmt: skip
    status, _, _ = await _refused(fresh_client, "PUT", "/cluster/firewall/options",
                                  enable="0", digest=options["digest"])  # fmt: skip
    assert status == 500
    assert (await get_data(fresh_client, "/cluster/firewall/options"))["enable"] == 1


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"type": "in", "action": "ALLOW"}, "action", "unknown action 'ALLOW'"),
        ({"type": "forward", "action": "ACCEPT"}, "type",
         "invalid rule type 'forward' for rule_env 'vm'"),
        ({"type": "in", "action": "ACCEPT", "dport": "22"}, "proto",
         "missing property - 'dport' requires this property"),
        ({"type": "in", "action": "ACCEPT", "proto": "icmp", "sport": "22"}, "sport",
         "protocol 'icmp' does not support ports"),
        ({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "70000"}, "dport",
         "invalid port '70000'"),
        ({"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "90:80"}, "dport",
         "backwards range '90:80' not allowed, did you mean '80:90'?"),
        ({"type": "in", "action": "ACCEPT", "source": "+nope"}, "source", "no such ipset 'nope'"),
        ({"type": "in", "action": "ACCEPT", "dest": "nope"}, "dest", "no such alias 'nope'"),
        ({"type": "in", "action": "ACCEPT", "source": "10.0.0.1/8"}, "source",
         "invalid IP address: 10.0.0.1/8 has host bits set"),
        ({"type": "in", "action": "ACCEPT", "source": "10.0.0.1,fd00::1"}, "source",
         "detected mixed ipv4/ipv6 addresses in address list '10.0.0.1,fd00::1'"),
        ({"type": "in", "action": "ACCEPT", "iface": "eth0"}, "iface",
         "value does not match the regex pattern 'net\\d+'"),
        ({"type": "in", "action": "ACCEPT", "macro": "Telnet"}, "macro", "unknown macro 'Telnet'"),
        ({"type": "in", "action": "ACCEPT", "macro": "SSH", "dport": "2222", "proto": "tcp"},
         "dport", "parameter 'dport' already define in macro (value = '22')"),
    ],
)  # fmt: skip
async def test_verify_rule_refuses_as_pve_naming_the_parameter(
    client: httpx2.AsyncClient, params: dict[str, str], field: str, message: str
) -> None:
    before = await get_data(client, f"{WEB01}/rules")
    status, top, errors = await _refused(client, "POST", f"{WEB01}/rules", **params)
    assert (status, top, errors) == (400, "Parameter verification failed.", {field: message})
    assert await get_data(client, f"{WEB01}/rules") == before


async def test_a_rule_may_name_the_guests_own_ip_set_and_the_clusters_alias(
    fresh_client: httpx2.AsyncClient,
) -> None:
    db01 = "/nodes/pve2/qemu/104/firewall"
    await _send(fresh_client, "POST", f"{db01}/rules", type="in", action="ACCEPT",
                source="+app-servers", dest="dc/backup-server", macro="ssh")  # fmt: skip
    rule = (await get_data(fresh_client, f"{db01}/rules"))[0]
    assert rule["macro"] == "SSH" and rule["ipversion"] == 4
    status, _, errors = await _refused(fresh_client, "POST", f"{WEB01}/rules", type="in",
                                       action="ACCEPT", source="+app-servers")  # fmt: skip
    assert (status, errors) == (400, {"source": "no such ipset 'app-servers'"})


async def test_update_delete_and_their_bounds(fresh_client: httpx2.AsyncClient) -> None:
    path = f"{WEB01}/rules"
    await _send(fresh_client, "PUT", f"{path}/1", dport="2222", delete="source,comment")
    rule = await get_data(fresh_client, f"{path}/1")
    assert rule["dport"] == "2222" and "source" not in rule and "ipversion" not in rule
    for method in ("GET", "PUT", "DELETE"):
        status, message, _ = await _refused(fresh_client, method, f"{path}/3")
        assert (status, message) == (500, "no rule at position 3")
    _, _, errors = await _refused(fresh_client, "PUT", f"{path}/0", delete="action")
    assert errors == {"delete": "unable to delete required property 'action'"}
    await _send(fresh_client, "DELETE", f"{path}/0")
    assert [r["action"] for r in await get_data(fresh_client, path)] == ["ACCEPT", "ACCEPT"]


async def test_ip_set_entries_are_normalised_and_refused_as_pve_does(
    fresh_client: httpx2.AsyncClient,
) -> None:
    base = "/cluster/firewall/ipset"
    _, _, errors = await _refused(fresh_client, "POST", base, name="management")
    assert errors == {"name": "IPSet 'management' already exists"}
    await _send(fresh_client, "POST", base, name="office", comment="HQ")
    await _send(fresh_client, "POST", f"{base}/office", cidr="192.0.2.77/24")
    await _send(fresh_client, "POST", f"{base}/office", cidr="198.51.100.7/32", nomatch="1")
    entries = await get_data(fresh_client, f"{base}/office")
    assert [(e["cidr"], e.get("nomatch")) for e in entries] == [
        ("198.51.100.7", 1), ("192.0.2.0/24", None)]  # fmt: skip
    _, _, errors = await _refused(fresh_client, "POST", f"{base}/office", cidr="192.0.2.0/24")
    assert errors == {"cidr": "address '192.0.2.0/24' already exists"}
    _, _, errors = await _refused(fresh_client, "POST", f"{base}/office", cidr="10.0.0.300")
    assert errors == {"cidr": "invalid format - '10.0.0.300' does not appear to be an "
                              "IPv4 or IPv6 network\n"}  # fmt: skip
    _, _, errors = await _refused(fresh_client, "POST", f"{base}/office", cidr="0.0.0.0/0")
    assert errors == {"cidr": "a zero prefix is not allowed in ipset entries"}
    status, message, _ = await _refused(fresh_client, "DELETE", f"{base}/office")
    assert (status, message) == (500, "IPSet 'office' is not empty")
    refs = await get_data(fresh_client, "/cluster/firewall/refs", type="ipset")
    assert {"type": "ipset", "name": "office", "ref": "+office", "scope": "dc",
            "comment": "HQ"} in refs  # fmt: skip
    await _send(fresh_client, "DELETE", f"{base}/office", force="1")
    assert [s["name"] for s in await get_data(fresh_client, base)] == ["management"]


async def test_aliases_groups_and_options(fresh_client: httpx2.AsyncClient) -> None:
    aliases = "/cluster/firewall/aliases"
    _, _, errors = await _refused(fresh_client, "POST", aliases, name="Backup-Server",
                                  cidr="10.0.0.1")  # fmt: skip
    assert errors == {"name": "alias 'Backup-Server' already exists"}
    await _send(fresh_client, "POST", aliases, name="v6gw", cidr="fd00::1/128")
    assert await get_data(fresh_client, f"{aliases}/v6gw") == {
        "name": "v6gw", "cidr": "fd00::1", "ipversion": 6}  # fmt: skip
    status, message, _ = await _refused(
        fresh_client, "DELETE", "/cluster/firewall/groups/webserver"
    )
    assert (status, message) == (500, "Security group 'webserver' is not empty")
    await _send(fresh_client, "POST", "/cluster/firewall/groups", group="web", rename="webserver")
    assert (await get_data(fresh_client, f"{WEB01}/rules"))[0]["action"] == "web"
    _, _, errors = await _refused(fresh_client, "PUT", f"{WEB01}/options", delete="bogus")
    assert errors == {"delete": "no such option 'bogus'"}
    await _send(fresh_client, "PUT", f"{WEB01}/options", enable="0", delete="log_level_in")
    options = await get_data(fresh_client, f"{WEB01}/options")
    assert options.pop("digest") and options == {"enable": 0, "policy_in": "DROP"}


async def test_the_log_holds_the_drops_of_logging_guests_paged(client: httpx2.AsyncClient) -> None:
    lines = await get_data(client, f"{WEB01}/log", limit="0")
    assert len(lines) > 100 and all(line["t"].startswith("100 6 tap100i0-IN ") for line in lines)
    assert "policy DROP: IN=fwbr100i0" in lines[0]["t"]
    page = await get_data(client, f"{WEB01}/log", start="10", limit="5")
    assert [line["n"] for line in page] == [11, 12, 13, 14, 15] and page == lines[10:15]
    assert await get_data(client, "/nodes/pve2/qemu/104/firewall/log") == [
        {"n": 1, "t": "no content"}]  # fmt: skip
    node = await get_data(client, "/nodes/pve1/firewall/log", limit="0")
    assert node == lines
    response = await client.get("/nodes/pve9/firewall/log")
    assert response.status_code == 500


async def test_a_clone_copies_the_firewall_file_and_a_destroy_removes_it(
    fresh_client: httpx2.AsyncClient,
) -> None:
    """qemu-server's clone calls `clone_vmfw_conf`, its destroy `remove_vmfw_conf`: a
    guest that later gets the vmid must not inherit the old rules."""
    rules = await get_data(fresh_client, f"{WEB01}/rules")
    await post_upid(fresh_client, "/nodes/pve1/qemu/100/clone", newid="150", name="copy")
    copied = "/nodes/pve1/qemu/150/firewall"
    assert await get_data(fresh_client, f"{copied}/rules") == rules
    assert (await get_data(fresh_client, f"{copied}/options"))["log_level_in"] == "info"
    response = await fresh_client.delete("/nodes/pve1/qemu/150")
    assert response.status_code == 200, response.text
    assert await get_data(fresh_client, f"{copied}/rules") == []
    assert await get_data(fresh_client, f"{WEB01}/rules") == rules
