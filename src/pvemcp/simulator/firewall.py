"""The firewall: options, rules, security groups, IP sets, aliases, refs and the log of the
cluster, each node and each guest, as pve-firewall serves them.

Read from pve-firewall `src/PVE/API2/Firewall/{Rules,IPSet,Aliases,Groups,Cluster,Host,
VM}.pm` and `src/PVE/Firewall.pm` (2026-01): the state is one `FwConf` per file PVE keeps
(`cluster.fw` with its groups, `nodes/<node>/host.fw`, `firewall/<vmid>.fw`), and the
behaviour follows the handlers:

- Lists answer `copy_list_with_digest`: every item carries the SHA-1 of the whole list
  (each item's sorted `key:value` lines), and a change that takes a `digest` refuses a
  stale one with `assert_if_modified`'s `detected modified configuration - file changed by
  other user? Try again.` Options answer `copy_opject_with_digest` the same way.
- Creating a rule ignores `pos` and `digest` (`create_rule` copies the rule, verifies it
  and `unshift`s it: a new rule is always rule 0) and stores `enable: 0` unless given.
  `PUT .../{pos}` with `moveto` moves the rule in front of the rule that *was* at
  `moveto` (so moving 0 to 2 lands it at 1) and ignores the other arguments.
- `verify_rule` checks in PVE's order and raises the first problem as a parameter error
  (types per rule_env, actions, iface, macro, protocol, ports, icmp-type, addresses, and
  that an `+ipset` or alias reference exists in the scope or the cluster).
- IP set entries are normalised as `create_ip` does (`clean_cidr`, a `/32` dropped), a
  duplicate is refused on `cidr`; deleting a non-empty IP set needs `force`; nothing in
  PVE's API refuses deleting an IP set or alias a rule still uses (the tools do).
- The guest routes do not check that the guest exists, on that node or of that type: PVE
  reads `/etc/pve/firewall/<vmid>.fw` whatever the path says (only `log` is proxied to the
  node). The node routes proxy to the node.
- The log is `/var/log/pve-firewall.log` of the node, computed like the journal
  (`simulator/logs.py`): one line per dropped packet every 20 minutes, from a hash of
  (vmid, time), for each guest on the node whose options log incoming traffic
  (`log_level_in`), and for the host when its options do; paged as
  `PVE::Tools::dump_logfile` (`{n, t}`, `limit` 50, a `no content` line when empty).

Where this module is unsure of PVE's exact words (Net::IP's error texts), it says so.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import MODIFIED, failure, param_error
from .router import Context, Params, Result, Route, api, integer, text

if TYPE_CHECKING:
    from .state import ClusterState

Item = dict[str, str | int]

_NAME = r"[A-Za-z][A-Za-z0-9\-\_]+"
"""`$ipset_name_pattern`, `$ip_alias_pattern` and `$security_group_name_pattern`."""
MAX_NAME = 64
"""`$max_ipset_name_length` and `$max_alias_name_length`."""

RULE_KEYS = ("type", "action", "macro", "iface", "source", "dest", "proto", "enable", "log",
             "sport", "dport", "comment", "icmp-type")  # fmt: skip
"""`$rule_properties` that a rule keeps (`pos` and `digest` are copied but never saved)."""

_TYPES = {
    "vm": ("in", "out", "group"),
    "ct": ("in", "out", "group"),
    "group": ("in", "out", "forward"),
    "cluster": ("in", "out", "forward", "group"),
    "host": ("in", "out", "forward", "group"),
}
"""`$rule_env_direction_lookup`."""

PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47, "esp": 50,
             "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "ospf": 89, "vrrp": 112, "sctp": 132,
             "udplite": 136, "dccp": 33}  # fmt: skip
"""A node's /etc/protocols, the part a demo needs (by name; the numbers count too)."""
_WITH_PORTS = {"udp", "17", "udplite", "136", "tcp", "6", "dccp", "33", "sctp", "132"}
SERVICES = {"ssh": 22, "domain": 53, "http": 80, "https": 443, "smtp": 25, "ntp": 123,
            "postgresql": 5432, "mysql": 3306, "ldap": 389, "snmp": 161, "imaps": 993,
            "submission": 587}  # fmt: skip
"""A node's /etc/services, the part a demo needs."""
ICMP_TYPES = frozenset({"any", "echo-reply", "destination-unreachable", "echo-request",
                        "time-exceeded", "parameter-problem", "redirect", "source-quench",
                        "timestamp-request", "timestamp-reply"})  # fmt: skip
ICMPV6_TYPES = frozenset({"destination-unreachable", "packet-too-big", "time-exceeded",
                          "echo-request", "echo-reply", "router-solicitation",
                          "router-advertisement", "neighbour-solicitation",
                          "neighbour-advertisement"})  # fmt: skip

MACROS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "SSH": ("Secure shell traffic", (("tcp", "22"),)),
    "HTTP": ("Hypertext Transfer Protocol (WWW)", (("tcp", "80"),)),
    "HTTPS": ("Hypertext Transfer Protocol (WWW) over SSL", (("tcp", "443"),)),
    "Web": ("WWW traffic (HTTP and HTTPS)", (("tcp", "80"), ("tcp", "443"))),
    "DNS": ("Domain Name System traffic (upd and tcp)", (("udp", "53"), ("tcp", "53"))),
    "Ping": ("ICMP echo request", (("icmp", "echo-request"),)),
    "SMTP": ("Simple Mail Transfer Protocol", (("tcp", "25"),)),
    "NTP": ("Network Time Protocol (ntpd)", (("udp", "123"),)),
    "MySQL": ("MySQL server", (("tcp", "3306"),)),
    "PostgreSQL": ("PostgreSQL server", (("tcp", "5432"),)),
    "RDP": ("Microsoft Remote Desktop Protocol traffic", (("tcp", "3389"),)),
    "Ceph": ("Ceph Storage Cluster traffic", (("tcp", "6789"), ("tcp", "3300"),
                                              ("tcp", "6800:7300"))),
}  # fmt: skip
"""Some of `$pve_fw_macros` (Firewall.pm): name, description, (proto, dport or icmp type)."""

CLUSTER_OPTIONS = ("enable", "ebtables", "log_ratelimit", "policy_in", "policy_out",
                   "policy_forward")  # fmt: skip
HOST_OPTIONS = ("enable", "log_level_forward", "log_level_in", "log_level_out",
                "log_nf_conntrack", "ndp", "nf_conntrack_allow_invalid",
                "nf_conntrack_helpers", "nf_conntrack_max",
                "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_syn_recv",
                "nftables", "nosmurfs", "protection_synflood", "protection_synflood_burst",
                "protection_synflood_rate", "smurf_log_level", "tcp_flags_log_level",
                "tcpflags")  # fmt: skip
GUEST_OPTIONS = ("dhcp", "enable", "ipfilter", "log_level_in", "log_level_out", "macfilter",
                 "ndp", "policy_in", "policy_out", "radv")  # fmt: skip
"""Each scope's `$option_properties`: what PUT .../options sets and `delete` may name."""


@dataclass
class FwConf:
    """One firewall file: options, rules, IP sets (entries, comments) and aliases (by
    lower-case name, as PVE keys them)."""

    options: dict[str, str | int] = field(default_factory=dict)
    rules: list[Item] = field(default_factory=list)
    ipset: dict[str, list[Item]] = field(default_factory=dict)
    ipset_comments: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, Item] = field(default_factory=dict)


@dataclass
class Firewall:
    """The cluster's firewall files."""

    cluster: FwConf = field(default_factory=FwConf)
    groups: dict[str, list[Item]] = field(default_factory=dict)
    group_comments: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, FwConf] = field(default_factory=dict)
    guests: dict[int, FwConf] = field(default_factory=dict)

    def host(self, node: str) -> FwConf:
        return self.hosts.setdefault(node, FwConf())

    def guest(self, vmid: int) -> FwConf:
        return self.guests.setdefault(vmid, FwConf())

    def clone_guest(self, vmid: int, newid: int) -> None:
        """`clone_vmfw_conf` (qemu-server's and pve-container's clone, before the worker
        forks): the clone starts with a copy of the source's firewall file."""
        if vmid in self.guests:
            self.guests[newid] = copy.deepcopy(self.guests[vmid])

    def forget_guest(self, vmid: int) -> None:
        """`remove_vmfw_conf` (both destroys): the guest's firewall file goes with it, so
        a guest that later gets the vmid starts without its rules."""
        self.guests.pop(vmid, None)


def _rule(type_: str, action: str, **keys: str | int) -> Item:
    """A rule as PVE loads it from a file: enabled unless said, `icmp_type` for `icmp-type`."""
    rule: Item = {"type": type_, "action": action, "enable": 1}
    rule |= {key.replace("_", "-"): value for key, value in keys.items()}
    return rule


def demo_firewall() -> Firewall:
    """The demo cluster's firewall: off cluster-wide (PVE's default) with a management IP
    set and an SSH rule, a `webserver` security group, an alias for the backup server,
    web01 (100) filtered with logging, db01 (104) open to an IP set of its own."""
    management: list[Item] = [{"cidr": "10.10.10.0/24", "comment": "cluster network"}]
    return Firewall(
        cluster=FwConf(
            options={"enable": 0, "policy_in": "DROP", "policy_out": "ACCEPT"},
            rules=[_rule("in", "ACCEPT", macro="SSH", source="+management", ipversion=4,
                         comment="admins")],
            ipset={"management": management},
            ipset_comments={"management": "hosts that may manage the cluster"},
            aliases={"backup-server": {"name": "backup-server", "cidr": "10.10.10.50",
                                       "ipversion": 4, "comment": "nfs-backup"}},
        ),
        groups={"webserver": [_rule("in", "ACCEPT", macro="HTTPS"),
                              _rule("in", "ACCEPT", macro="HTTP")]},
        group_comments={"webserver": "HTTP and HTTPS from anywhere"},
        guests={
            100: FwConf(
                options={"enable": 1, "policy_in": "DROP", "log_level_in": "info"},
                rules=[_rule("group", "webserver"),
                       _rule("in", "ACCEPT", proto="tcp", dport="22", source="+management",
                             ipversion=4),
                       _rule("in", "ACCEPT", macro="Ping", enable=0, comment="debugging")],
            ),
            104: FwConf(
                options={"enable": 1, "policy_in": "DROP"},
                rules=[_rule("in", "ACCEPT", proto="tcp", dport="5432", source="+app-servers",
                             ipversion=4, comment="PostgreSQL")],
                ipset={"app-servers": [{"cidr": "10.10.20.101"}, {"cidr": "10.10.20.100"}]},
            ),
        },
    )  # fmt: skip


# --- digests -------------------------------------------------------------------------


def _lines(item: Item) -> bytes:
    return "".join(f"{key}:{item[key]}\n" for key in sorted(item)).encode()


def list_digest(items: list[Item]) -> str:
    """`copy_list_with_digest`'s digest: SHA-1 of every item's sorted `key:value` lines."""
    sha = hashlib.sha1(usedforsecurity=False)
    for item in items:
        sha.update(_lines(item))
    return sha.hexdigest()


def object_digest(item: Item) -> str:
    """`copy_opject_with_digest`'s digest of an options object."""
    return hashlib.sha1(_lines(item), usedforsecurity=False).hexdigest()


def _with_digest(items: list[Item]) -> list[dict[str, object]]:
    digest = list_digest(items)
    return [{**item, "digest": digest} for item in items]


def _check_digest(current: str, params: Params) -> None:
    """`PVE::Tools::assert_if_modified`: a given digest must be the current one."""
    given = params.get("digest")
    if given and given != current:
        raise failure(MODIFIED)


# --- checks as verify_rule and the formats make them ---------------------------------


def _ip_version(element: str) -> int:
    """The IP version of one address, CIDR or range (`a-b`), as Net::IP accepts them; a
    network with host bits set is refused as Net::IP does (its words are approximated)."""
    try:
        if "-" in element:
            first, last = (ipaddress.ip_address(part) for part in element.split("-", 1))
            if first.version != last.version or int(first) > int(last):
                raise ValueError(f"Invalid range {element}")
            return first.version
        return ipaddress.ip_network(element, strict=True).version
    except ValueError as exc:
        raise ValueError(f"invalid IP address: {exc}") from None


def address_version(text_: str) -> int | None:
    """`parse_address_list`: None for an `+ipset` or alias reference, else the one IP
    version of the comma-separated list; ValueError with PVE's message."""
    if text_.startswith("+") and not re.search(r"\s", text_):
        if len(text_) > MAX_NAME + 1:
            raise ValueError("ipset name too long")
        return None
    if re.fullmatch(rf"(dc/|guest/)?{_NAME}", text_):
        if len(text_) > MAX_NAME:
            raise ValueError("alias name too long")
        return None
    elements = text_.split(",")
    if any(not element for element in elements):
        raise ValueError("extraneous commas in list")
    versions = set()
    for element in elements:
        versions.add(_ip_version(element))
        if len(versions) > 1:
            raise ValueError(f"detected mixed ipv4/ipv6 addresses in address list '{text_}'")
    if len(elements) > 1 and any("-" in element for element in elements):
        raise ValueError("you can't use a range in a list")
    return versions.pop()


def check_ports(text_: str, icmp: bool) -> None:
    """`parse_port_name_number_or_range`: numbers, `a:b` ranges and service names, at
    most 15 numbers; with an ICMP protocol a dport may be an ICMP type name."""
    elements = text_.split(",")
    if any(not element for element in elements):
        raise ValueError("extraneous commas in list")
    count, icmp_port = 0, False
    for item in elements:
        if match := re.fullmatch(r"([0-9]+):([0-9]+)", item):
            count += 2
            low, high = int(match.group(1)), int(match.group(2))
            for port in (low, high):
                if port > 65535:
                    raise ValueError(f"invalid port '{port}'")
            if low > high:
                raise ValueError(
                    f"backwards range '{low}:{high}' not allowed, did you mean '{high}:{low}'?"
                )
        elif item.isdigit():
            count += 1
            if int(item) > 65535:
                raise ValueError(f"invalid port '{item}'")
        elif icmp and (item in ICMP_TYPES or item in ICMPV6_TYPES):
            icmp_port = True
        elif item not in SERVICES:
            raise ValueError(f"invalid port '{item}'")
    if icmp_port and count > 0:
        raise ValueError("ICMP ports not allowed in port range")
    if count > 15:
        raise ValueError("too many entries in port list (> 15 numbers)")


def _known_protocol(proto: str) -> bool:
    return proto in PROTOCOLS or (proto.isdigit() and int(proto) in PROTOCOLS.values())


@dataclass(frozen=True)
class RuleSet:
    """Where a rule lives: its rule_env, the live list, and the files whose IP sets and
    aliases a rule may name (PVE's `$cluster_conf` is undef at the cluster level)."""

    env: str
    rules: list[Item]
    local: FwConf | None
    cluster: FwConf | None


def _has_ipset(rules: RuleSet, name: str) -> bool:
    return any(conf is not None and name in conf.ipset for conf in (rules.cluster, rules.local))


def _alias(rules: RuleSet, scope: str, name: str) -> Item | None:
    local, cluster = rules.local, rules.cluster
    if cluster is None:  # the cluster level: its own file holds the cluster's aliases
        local, cluster = None, local
    found = local.aliases.get(name) if scope != "dc/" and local is not None else None
    if found is None and scope != "guest/" and cluster is not None:
        found = cluster.aliases.get(name)
    return found


class _Check:
    """One run of `verify_rule`: the first problem raises PVE's parameter error, and the IP
    version the rule's parts imply is collected (mixed versions are refused)."""

    def __init__(self, rule: Item, rules: RuleSet) -> None:
        self.rule, self.rules, self.version = rule, rules, 0

    def fail(self, param: str, message: str) -> None:
        raise param_error({param: message})

    def value(self, key: str) -> str:
        return str(self.rule.get(key, ""))

    def set_version(self, found: int | None, param: str) -> None:
        if found:
            if self.version and self.version != found:
                self.fail(param, "detected mixed ipv4/ipv6 addresses in rule")
            self.version = found

    def kind(self) -> None:
        """The type for the rule_env, then the action for the type."""
        env, type_, action = self.rules.env, self.value("type"), self.value("action")
        if not type_:
            self.fail("type", "missing property")
        if not action:
            self.fail("action", "missing property")
        if type_ not in _TYPES[env]:
            self.fail("type", f"invalid rule type '{type_}' for rule_env '{env}'")
        if type_ == "group":
            if not re.fullmatch(_NAME, action):
                self.fail("action", "invalid characters in security group name")
            return
        if type_ == "forward" and action == "REJECT":
            self.fail("action", "cannot define REJECT rules on forward chain")
        if action not in ("ACCEPT", "DROP", "REJECT"):
            self.fail("action", f"unknown action '{action}'")

    def iface_and_macro(self) -> None:
        env, iface, macro = self.rules.env, self.value("iface"), self.value("macro")
        if iface:
            if env == "group":
                self.fail("type", "parameter -i not allowed for this rule type")
            if env in ("vm", "ct") and not re.fullmatch(r"net\d+", iface):
                self.fail("iface", "value does not match the regex pattern 'net\\d+'")
        if macro:
            preferred = next((name for name in MACROS if name.lower() == macro.lower()), None)
            if preferred is None:
                self.fail("macro", f"unknown macro '{macro}'")
            else:
                self.rule["macro"] = preferred

    def protocol(self) -> None:
        """proto, dport, sport and icmp-type, and what each requires of the others."""
        proto = self.value("proto")
        is_icmp = proto in ("icmp", "icmpv6", "ipv6-icmp", "1", "58")
        if proto:
            if not _known_protocol(proto):
                self.fail("proto", f"unknown protocol '{proto}'")
            self.set_version({"icmp": 4, "icmpv6": 6, "ipv6-icmp": 6}.get(proto), "proto")
        for key in ("dport", "sport"):
            if not self.value(key):
                continue
            try:
                check_ports(self.value(key), is_icmp and key == "dport")
            except ValueError as exc:
                self.fail(key, str(exc))
            if not proto:
                self.fail("proto", f"missing property - '{key}' requires this property")
            if proto not in _WITH_PORTS and not (is_icmp and key == "dport"):
                self.fail(key, f"protocol '{proto}' does not support ports")
        icmp_type = self.value("icmp-type")
        if icmp_type:
            if not is_icmp:
                self.fail("proto", "missing property - 'icmp-type' requires this property")
            if self.value("dport"):
                self.fail("icmp-type", "'icmp-type' cannot be specified together with 'dport'")
            names = ICMP_TYPES if proto in ("icmp", "1") else ICMPV6_TYPES
            if icmp_type not in names:
                self.fail("icmp-type", f"invalid icmp-type '{icmp_type}' for proto '{proto}'")

    def address(self, where: str) -> None:
        """source or dest: an address list, or an IP set or alias that exists."""
        value = self.value(where)
        if not value:
            return
        try:
            self.set_version(address_version(value), where)
        except ValueError as exc:
            self.fail(where, str(exc))
        if ref := re.fullmatch(rf"\+(guest/|dc/|sdn/)?({_NAME})", value):
            if not _has_ipset(self.rules, ref.group(2)):
                self.fail(where, f"no such ipset '{ref.group(2)}'")
        elif value.startswith("+"):
            self.fail(where, f"invalid ipset name '{value}'")
        elif named := re.fullmatch(rf"(dc/|guest/)?({_NAME})", value):
            found = _alias(self.rules, named.group(1) or "", named.group(2).lower())
            if found is None:
                self.fail(where, f"no such alias '{value}'")
            else:
                self.set_version(int(found["ipversion"]), where)


def verify_rule(rule: Item, rules: RuleSet) -> None:
    """`verify_rule` without `noerr`: the first problem, in PVE's order, as its parameter
    error; sets the rule's `ipversion` (and the macro's preferred spelling) as PVE does."""
    check = _Check(rule, rules)
    check.kind()
    check.iface_and_macro()
    check.protocol()
    check.address("source")
    check.address("dest")
    if check.version:
        rule["ipversion"] = check.version
    if rule.get("macro"):
        _apply_macro(rule, MACROS[str(rule["macro"])][1])


def _apply_macro(rule: Item, templates: tuple[tuple[str, str], ...]) -> None:
    """`$apply_macro` with verify: a rule may not set a proto or dport its macro fixes."""
    for proto, port in templates:
        fixed = {"proto": proto, "icmp-type" if proto == "icmp" else "dport": port}
        for key, value in fixed.items():
            if key in rule and str(rule[key]) != value:
                raise param_error({key: f"parameter '{key}' already define in macro "
                                        f"(value = '{value}')"})  # fmt: skip


def ip_or_cidr(value: str) -> str:
    """`pve_verify_ip_or_cidr` then `create_ip`'s normalisation (`clean_cidr`, `/32` and
    `/128` dropped); ValueError with PVE's message (Net::IP's own words approximated)."""
    if not re.fullmatch(r"[0-9A-Fa-f:.]+(/\d+)?", value):
        raise ValueError("value does not look like a valid IP address or CIDR network")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if "/" not in value or network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _format_error(name: str, message: str) -> Exception:
    """A format check's failure, as `check_prop` words it for the parameter."""
    return param_error({name: f"invalid format - {message}\n"})


# --- rules ---------------------------------------------------------------------------

Locate = Callable[[Context, Params], RuleSet]


def _cluster_rules(ctx: Context, params: Params) -> RuleSet:
    conf = ctx.state.firewall.cluster
    return RuleSet("cluster", conf.rules, conf, None)


def _group_rules(ctx: Context, params: Params) -> RuleSet:
    fw, group = ctx.state.firewall, text(params, "group")
    if group not in fw.groups:
        raise failure(f"no such security group '{group}'")
    return RuleSet("group", fw.groups[group], fw.cluster, None)


def _host_rules(ctx: Context, params: Params) -> RuleSet:
    node = ctx.state.node(text(params, "node")).name  # proxied to the node
    fw = ctx.state.firewall
    conf = fw.host(node)
    return RuleSet("host", conf.rules, conf, fw.cluster)


def _guest_rules(env: str) -> Locate:
    def locate(ctx: Context, params: Params) -> RuleSet:
        fw = ctx.state.firewall
        conf = fw.guest(integer(params, "vmid"))
        return RuleSet(env, conf.rules, conf, fw.cluster)

    return locate


def _position(rules: RuleSet, params: Params) -> int:
    pos = integer(params, "pos")
    if pos >= len(rules.rules):
        raise failure(f"no rule at position {pos}")
    return pos


def _copy_rule_data(rule: Item, params: Params) -> None:
    """`copy_rule_data`: given keys set, '' or '-' deletes one; booleans as PVE's 0/1."""
    for key in RULE_KEYS:
        if key not in params:
            continue
        value = params[key]
        if value in ("", "-"):
            rule.pop(key, None)
        elif isinstance(value, bool | int):
            rule[key] = int(value)
        else:
            rule[key] = str(value)


def _rule_routes(base: str, one: str, locate: Locate) -> list[Route]:
    """The five rule methods of one scope: list at `base`, one rule at `one`."""

    def listing(ctx: Context, params: Params) -> Result:
        items = _with_digest(locate(ctx, params).rules)
        return Result([{**item, "pos": pos} for pos, item in enumerate(items)])

    def get(ctx: Context, params: Params) -> Result:
        rules = locate(ctx, params)
        pos = _position(rules, params)
        return Result({**_with_digest(rules.rules)[pos], "pos": pos})

    def create(ctx: Context, params: Params) -> Result:
        rules = locate(ctx, params)
        rule: Item = {}
        _copy_rule_data(rule, params)
        verify_rule(rule, rules)
        rule.setdefault("enable", 0)
        rules.rules.insert(0, rule)
        return Result(None)

    def update(ctx: Context, params: Params) -> Result:
        rules = locate(ctx, params)
        _check_digest(list_digest(rules.rules), params)
        pos = _position(rules, params)
        rule = rules.rules[pos]
        moveto = params.get("moveto")
        if isinstance(moveto, int) and moveto != pos:
            moved = [r for i, r in enumerate(rules.rules) if i != pos]
            at = min(moveto if moveto < pos else moveto - 1, len(moved))
            moved.insert(at, rule)
            rules.rules[:] = moved
            return Result(None)
        changed = dict(rule)
        _copy_rule_data(changed, params)
        for key in re.split(r"[;,\s]+", str(params.get("delete", ""))):
            if not key:
                continue
            if key not in RULE_KEYS and key not in ("pos", "digest"):
                raise param_error({"delete": f"no such property ('{key}')"})
            if key in ("type", "action"):
                raise param_error({"delete": f"unable to delete required property '{key}'"})
            changed.pop(key, None)
        changed.pop("ipversion", None)
        verify_rule(changed, rules)
        rules.rules[pos] = changed
        return Result(None)

    def delete(ctx: Context, params: Params) -> Result:
        rules = locate(ctx, params)
        _check_digest(list_digest(rules.rules), params)
        del rules.rules[_position(rules, params)]
        return Result(None)

    return [
        api("GET", base, listing),
        api("POST", base, create),
        api("GET", one, get),
        api("PUT", one, update),
        api("DELETE", one, delete),
    ]


# --- security groups ---------------------------------------------------------------


def _group_list(fw: Firewall) -> list[Item]:
    items: list[Item] = []
    for group in sorted(fw.groups):
        item: Item = {"group": group}
        if comment := fw.group_comments.get(group):
            item["comment"] = comment
        items.append(item)
    return items


def _groups(ctx: Context, params: Params) -> Result:
    return Result(_with_digest(_group_list(ctx.state.firewall)))


def _group_create(ctx: Context, params: Params) -> Result:
    fw, group = ctx.state.firewall, text(params, "group")
    comment = params.get("comment")
    rename = params.get("rename")
    if rename:
        _check_digest(list_digest(_group_list(fw)), params)
        old = str(rename)
        if old not in fw.groups:
            raise param_error({"group": f"Security group '{old}' does not exist"})
        if group in fw.groups and group != old:
            raise param_error({"group": f"Security group '{group}' does already exist"})
        if group != old:
            fw.groups[group] = fw.groups.pop(old)
            if old in fw.group_comments:
                fw.group_comments[group] = fw.group_comments.pop(old)
            for conf in (fw.cluster, *fw.hosts.values(), *fw.guests.values()):
                for rule in conf.rules:
                    if rule["type"] == "group" and rule["action"] == old:
                        rule["action"] = group
    elif group in fw.groups:
        raise param_error({"group": f"Security group '{group}' already exists"})
    else:
        fw.groups[group] = []
    if comment is not None:
        fw.group_comments[group] = str(comment)
    return Result(None)


def _group_delete(ctx: Context, params: Params) -> Result:
    fw = ctx.state.firewall
    rules = _group_rules(ctx, params).rules
    group = text(params, "group")
    if rules:
        raise failure(f"Security group '{group}' is not empty")
    del fw.groups[group]
    fw.group_comments.pop(group, None)
    return Result(None)


# --- IP sets -------------------------------------------------------------------------

ConfOf = Callable[[Context, Params], tuple[FwConf, FwConf | None]]
"""The file of a scope and, for a guest, the cluster's (for aliases an entry names)."""


def _cluster_conf(ctx: Context, params: Params) -> tuple[FwConf, FwConf | None]:
    return ctx.state.firewall.cluster, None


def _guest_conf(ctx: Context, params: Params) -> tuple[FwConf, FwConf | None]:
    fw = ctx.state.firewall
    return fw.guest(integer(params, "vmid")), fw.cluster


def _ipset_list(conf: FwConf) -> list[Item]:
    items: list[Item] = []
    for name in sorted(conf.ipset):
        item: Item = {"name": name}
        if comment := conf.ipset_comments.get(name):
            item["comment"] = comment
        items.append(item)
    return items


def _entries(conf: FwConf, params: Params) -> list[Item]:
    name = text(params, "name")
    if name not in conf.ipset:
        raise failure(f"no such IPSet '{name}'")
    return conf.ipset[name]


def _ipset_routes(base: str, conf_of: ConfOf) -> list[Route]:
    """The IP set methods of one scope (the cluster's, or a guest's): the sets here, their
    entries in `_entry_routes`."""

    def index(ctx: Context, params: Params) -> Result:
        return Result(_with_digest(_ipset_list(conf_of(ctx, params)[0])))

    def create(ctx: Context, params: Params) -> Result:
        conf = conf_of(ctx, params)[0]
        name, rename = text(params, "name"), params.get("rename")
        if rename:
            _check_digest(list_digest(_ipset_list(conf)), params)
            old = str(rename)
            if old not in conf.ipset:
                raise param_error({"name": f"IPSet '{old}' does not exist"})
            if name in conf.ipset and name != old:
                raise param_error({"name": f"IPSet '{name}' does already exist"})
            conf.ipset[name] = conf.ipset.pop(old)
            if old in conf.ipset_comments:
                conf.ipset_comments[name] = conf.ipset_comments.pop(old)
        elif name in conf.ipset:
            raise param_error({"name": f"IPSet '{name}' already exists"})
        else:
            conf.ipset[name] = []
        if "comment" in params:
            conf.ipset_comments[name] = str(params["comment"])
        return Result(None)

    def delete_set(ctx: Context, params: Params) -> Result:
        conf = conf_of(ctx, params)[0]
        if _entries(conf, params) and not params.get("force"):
            raise failure(f"IPSet '{text(params, 'name')}' is not empty")
        del conf.ipset[text(params, "name")]
        conf.ipset_comments.pop(text(params, "name"), None)
        return Result(None)

    return [
        api("GET", base, index),
        api("POST", base, create),
        api("DELETE", f"{base}/{{name}}", delete_set),
        *_entry_routes(f"{base}/{{name}}", conf_of),
    ]


def _entry_routes(one: str, conf_of: ConfOf) -> list[Route]:
    """The entries of an IP set: list and add at `one`, one entry at `one/{cidr}`."""
    entry = f"{one}/{{cidr}}"

    def listing(ctx: Context, params: Params) -> Result:
        return Result(_with_digest(_entries(conf_of(ctx, params)[0], params)))

    def add(ctx: Context, params: Params) -> Result:
        conf, cluster = conf_of(ctx, params)
        entries = _entries(conf, params)
        cidr = text(params, "cidr")
        if alias := re.fullmatch(rf"(dc/|guest/)?({_NAME})", cidr):
            owner = RuleSet("cluster" if cluster is None else "vm", [], conf, cluster)
            if _alias(owner, alias.group(1) or "", alias.group(2).lower()) is None:
                raise failure(f"no such alias '{alias.group(2)}'")
        else:
            try:
                cidr = ip_or_cidr(cidr)
            except ValueError as exc:
                raise _format_error("cidr", str(exc)) from None
        if any(item["cidr"] == cidr for item in entries):
            raise param_error({"cidr": f"address '{cidr}' already exists"})
        if re.search(r"/0+$", cidr):
            raise param_error({"cidr": "a zero prefix is not allowed in ipset entries"})
        item: Item = {"cidr": cidr}
        if params.get("nomatch"):
            item["nomatch"] = 1
        if params.get("comment"):
            item["comment"] = str(params["comment"])
        entries.insert(0, item)
        return Result(None)

    def found(entries: list[Item], params: Params) -> Item:
        for item in entries:
            if item["cidr"] == params["cidr"]:
                return item
        raise param_error({"cidr": "no such IP/Network"})

    def read(ctx: Context, params: Params) -> Result:
        entries = _entries(conf_of(ctx, params)[0], params)
        found(entries, params)
        return Result(next(i for i in _with_digest(entries) if i["cidr"] == params["cidr"]))

    def update(ctx: Context, params: Params) -> Result:
        entries = _entries(conf_of(ctx, params)[0], params)
        _check_digest(list_digest(entries), params)
        item = found(entries, params)
        item.pop("nomatch", None)
        item.pop("comment", None)
        if params.get("nomatch"):
            item["nomatch"] = 1
        if params.get("comment"):
            item["comment"] = str(params["comment"])
        return Result(None)

    def remove(ctx: Context, params: Params) -> Result:
        entries = _entries(conf_of(ctx, params)[0], params)
        _check_digest(list_digest(entries), params)
        entries[:] = [item for item in entries if item["cidr"] != params["cidr"]]
        return Result(None)

    return [
        api("GET", one, listing),
        api("POST", one, add),
        api("GET", entry, read),
        api("PUT", entry, update),
        api("DELETE", entry, remove),
    ]


# --- aliases -------------------------------------------------------------------------


def _alias_items(conf: FwConf) -> list[Item]:
    return [conf.aliases[key] for key in sorted(conf.aliases)]


def _alias_data(params: Params, name: str) -> Item:
    try:
        cidr = ip_or_cidr(text(params, "cidr"))
    except ValueError as exc:
        raise _format_error("cidr", str(exc)) from None
    version = ipaddress.ip_network(cidr, strict=False).version
    item: Item = {"name": name, "cidr": cidr, "ipversion": version}
    if params.get("comment"):
        item["comment"] = str(params["comment"])
    return item


def _alias_routes(base: str, conf_of: ConfOf) -> list[Route]:
    one = f"{base}/{{name}}"

    def listing(ctx: Context, params: Params) -> Result:
        return Result(_with_digest(_alias_items(conf_of(ctx, params)[0])))

    def create(ctx: Context, params: Params) -> Result:
        conf, name = conf_of(ctx, params)[0], text(params, "name")
        if name.lower() in conf.aliases:
            raise param_error({"name": f"alias '{name}' already exists"})
        conf.aliases[name.lower()] = _alias_data(params, name)
        return Result(None)

    def read(ctx: Context, params: Params) -> Result:
        conf = conf_of(ctx, params)[0]
        item = conf.aliases.get(text(params, "name").lower())
        if item is None:
            raise param_error({"name": "no such alias"})
        return Result(dict(item))

    def update(ctx: Context, params: Params) -> Result:
        conf, name = conf_of(ctx, params)[0], text(params, "name")
        _check_digest(list_digest(_alias_items(conf)), params)
        key = name.lower()
        if key not in conf.aliases:
            raise param_error({"name": "no such alias"})
        data = _alias_data(params, name)
        rename = str(params.get("rename") or "")
        if rename and rename.lower() != key:
            if rename.lower() in conf.aliases:
                raise param_error({"name": f"alias '{rename}' already exists"})
            del conf.aliases[key]
            key, data["name"] = rename.lower(), rename
        conf.aliases[key] = data
        return Result(None)

    def remove(ctx: Context, params: Params) -> Result:
        conf = conf_of(ctx, params)[0]
        _check_digest(list_digest(_alias_items(conf)), params)
        conf.aliases.pop(text(params, "name").lower(), None)
        return Result(None)

    return [
        api("GET", base, listing),
        api("POST", base, create),
        api("GET", one, read),
        api("PUT", one, update),
        api("DELETE", one, remove),
    ]


# --- options, refs, macros, indexes ------------------------------------------------

OptionsOf = Callable[[Context, Params], FwConf]


def _options_routes(path: str, conf_of: OptionsOf, known: tuple[str, ...], env: str) -> list[Route]:
    def get(ctx: Context, params: Params) -> Result:
        options = conf_of(ctx, params).options
        return Result({**options, "digest": object_digest(options)})

    def put(ctx: Context, params: Params) -> Result:
        options = conf_of(ctx, params).options
        _check_digest(object_digest(options), params)
        for key in re.split(r"[;,\s]+", str(params.get("delete", ""))):
            if not key:
                continue
            if key not in known:
                raise param_error({"delete": f"no such option '{key}'"})
            options.pop(key, None)
        for key in known:
            if key not in params:
                continue
            value = params[key]
            if key == "enable" and env == "cluster" and isinstance(value, int) and value > 1:
                value = int(ctx.now)  # the anti-lockout timestamp (Cluster.pm set_options)
            elif key == "enable" and env == "guest":
                value = 1 if value else 0
            options[key] = int(value) if isinstance(value, int) else str(value)
        return Result(None)

    return [api("GET", path, get), api("PUT", path, put)]


def _refs(conf: FwConf, wanted: object, scope: str) -> list[dict[str, str]]:
    """`collect_refs`: the IP sets (`+name`) and aliases a rule may name."""
    refs: list[dict[str, str]] = []
    if wanted in (None, "ipset"):
        for name in sorted(conf.ipset):
            ref = {"type": "ipset", "name": name, "ref": f"+{name}", "scope": scope}
            if comment := conf.ipset_comments.get(name):
                ref["comment"] = comment
            refs.append(ref)
    if wanted in (None, "alias"):
        for key in sorted(conf.aliases):
            alias = conf.aliases[key]
            ref = {"type": "alias", "name": key, "ref": key, "scope": scope}
            if alias.get("comment"):
                ref["comment"] = str(alias["comment"])
            refs.append(ref)
    return refs


def _cluster_refs(ctx: Context, params: Params) -> Result:
    return Result(_refs(ctx.state.firewall.cluster, params.get("type"), "dc"))


def _guest_refs(ctx: Context, params: Params) -> Result:
    fw, wanted = ctx.state.firewall, params.get("type")
    own = fw.guest(integer(params, "vmid"))
    return Result(_refs(fw.cluster, wanted, "dc") + _refs(own, wanted, "guest"))


def _macros(ctx: Context, params: Params) -> Result:
    return Result([{"macro": name, "descr": descr} for name, (descr, _) in MACROS.items()])


def _index(*names: str) -> Callable[[Context, Params], Result]:
    def handler(ctx: Context, params: Params) -> Result:
        if "node" in params:
            ctx.state.node(text(params, "node"))
        return Result([{"name": name} for name in names])

    return handler


# --- the log -------------------------------------------------------------------------

LOG_RETENTION = 2 * 86_400
_LOG_STEP = 1200
_LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
               "info": 6, "debug": 7}  # fmt: skip


def _logging(conf: FwConf | None) -> int | None:
    """The syslog level a scope's dropped incoming packets are logged at, if any."""
    if conf is None or not conf.options.get("enable", 1):
        return None
    return _LOG_LEVELS.get(str(conf.options.get("log_level_in", "nolog")))


def _log_line(vmid: int, level: int, at: int) -> str:
    """One `pvefw-logger` line of a dropped packet (the fields a real line has)."""
    seed = zlib.crc32(f"{vmid}:{at}".encode())
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at))
    dport = (23, 3389, 445, 5900, 8080)[seed % 5]
    chain = f"tap{vmid}i0-IN" if vmid else "PVEFW-HOST-IN"
    into = f"IN=fwbr{vmid}i0 OUT=fwbr{vmid}i0 PHYSIN=fwln{vmid}i0 PHYSOUT=tap{vmid}i0" if vmid \
        else "IN=vmbr0 OUT="  # fmt: skip
    return (
        f"{vmid} {level} {chain} {stamp} policy DROP: {into} SRC=203.0.113.{seed % 250 + 1} "
        f"DST=10.10.20.{vmid % 250 if vmid else 11} LEN=60 TOS=0x00 PREC=0x00 TTL=51 "
        f"ID={seed % 65535} DF PROTO=TCP SPT={32768 + seed % 28000} DPT={dport} "
        f"WINDOW=64240 RES=0x00 SYN URGP=0"
    )


def _log_lines(state: ClusterState, node: str, now: float) -> Iterator[tuple[int, str]]:
    """(time, line) of the node's log, oldest first: its guests' and its own drops."""
    fw = state.firewall
    loggers = [(0, level)] if (level := _logging(fw.hosts.get(node))) is not None else []
    for vmid in sorted(state.guests):
        guest = state.guests[vmid]
        level = _logging(fw.guests.get(vmid))
        if guest.node == node and guest.status == "running" and level is not None:
            loggers.append((vmid, level))
    first = (int(now) - LOG_RETENTION) // _LOG_STEP * _LOG_STEP + _LOG_STEP
    for slot in range(first, int(now), _LOG_STEP):
        for vmid, level in loggers:
            at = slot + zlib.crc32(f"{vmid}/{slot}".encode()) % _LOG_STEP
            if at <= now:
                yield at, _log_line(vmid, level, at)


def _log(vmid_of: Callable[[Params], int | None]) -> Callable[[Context, Params], Result]:
    def handler(ctx: Context, params: Params) -> Result:
        node = ctx.state.node(text(params, "node")).name  # proxied to the node
        vmid = vmid_of(params)
        since = integer(params, "since") if "since" in params else None
        until = integer(params, "until") if "until" in params else None
        lines = [
            line
            for at, line in sorted(_log_lines(ctx.state, node, ctx.now))
            if (vmid is None or line.startswith(f"{vmid} "))
            and (since is None or at >= since)
            and (until is None or at <= until)
        ]
        if not lines:
            return Result([{"n": 1, "t": "no content"}], 1)
        start = integer(params, "start") if "start" in params else 0
        limit = integer(params, "limit") if "limit" in params else 50
        page = lines[start:] if limit == 0 else lines[start : start + limit]
        return Result([{"n": start + i + 1, "t": line} for i, line in enumerate(page)], len(lines))

    return handler


def _guest_vmid(params: Params) -> int | None:
    return integer(params, "vmid")


def _no_vmid(params: Params) -> int | None:
    return None


# --- the table -----------------------------------------------------------------------


def _guest_routes(kind: str) -> list[Route]:
    base = f"/nodes/{{node}}/{kind}/{{vmid}}/firewall"
    env = "vm" if kind == "qemu" else "ct"
    return [
        api("GET", base, _index("rules", "aliases", "ipset", "refs", "options")),
        *_rule_routes(f"{base}/rules", f"{base}/rules/{{pos}}", _guest_rules(env)),
        *_ipset_routes(f"{base}/ipset", _guest_conf),
        *_alias_routes(f"{base}/aliases", _guest_conf),
        *_options_routes(f"{base}/options", lambda c, p: _guest_conf(c, p)[0], GUEST_OPTIONS,
                         "guest"),
        api("GET", f"{base}/log", _log(_guest_vmid)),
        api("GET", f"{base}/refs", _guest_refs),
    ]  # fmt: skip


def _host_conf(ctx: Context, params: Params) -> FwConf:
    return ctx.state.firewall.host(ctx.state.node(text(params, "node")).name)


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/firewall",
        _index("aliases", "rules", "options", "groups", "ipset", "macros", "refs")),
    *_rule_routes("/cluster/firewall/rules", "/cluster/firewall/rules/{pos}", _cluster_rules),
    api("GET", "/cluster/firewall/groups", _groups),
    api("POST", "/cluster/firewall/groups", _group_create),
    api("DELETE", "/cluster/firewall/groups/{group}", _group_delete),
    *_rule_routes("/cluster/firewall/groups/{group}", "/cluster/firewall/groups/{group}/{pos}",
                  _group_rules),
    *_ipset_routes("/cluster/firewall/ipset", _cluster_conf),
    *_alias_routes("/cluster/firewall/aliases", _cluster_conf),
    *_options_routes("/cluster/firewall/options", lambda c, p: c.state.firewall.cluster,
                     CLUSTER_OPTIONS, "cluster"),
    api("GET", "/cluster/firewall/macros", _macros),
    api("GET", "/cluster/firewall/refs", _cluster_refs),
    api("GET", "/nodes/{node}/firewall", _index("rules", "options", "log")),
    *_rule_routes("/nodes/{node}/firewall/rules", "/nodes/{node}/firewall/rules/{pos}",
                  _host_rules),
    *_options_routes("/nodes/{node}/firewall/options", _host_conf, HOST_OPTIONS, "host"),
    api("GET", "/nodes/{node}/firewall/log", _log(_no_vmid)),
    *_guest_routes("qemu"),
    *_guest_routes("lxc"),
)  # fmt: skip
