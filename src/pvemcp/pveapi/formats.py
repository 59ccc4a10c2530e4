"""PVE's named formats, list formats and Perl patterns, as the server checks them.

PVE (`PVE::JSONSchema::check_format`) checks a string parameter against a *named format*
registered in Perl (`pve-vmid`, `pve-node`, `mac-addr`, ...), a `<name>-list` of those
(split on commas, semicolons, whitespace or NUL, as `PVE::Tools::split_list` does), a
`<name>-opt` (empty allowed), or a property string (a dict of keys, see `validate.py`).
The schema names the format but not its rule, so the common rules are restated here from
pve-common, pve-access-control, pve-storage and qemu-server. A named format the schema uses
that is not restated here is accepted unchecked and listed in `UNCHECKED_FORMATS`, so what
is and is not checked is visible (a test keeps that list in step with the index).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping

FormatCheck = Callable[[str], str | None]
"""A check of one value: None when valid, else what is wrong, in a few words."""

VMID_MIN = 100
VMID_MAX = 999_999_999
"""PVE's VM/CT id range (`pve_verify_vmid`: `^[1-9][0-9]{2,8}$`)."""

_HOSTNAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME = rf"(?:{_HOSTNAME}\.)*{_HOSTNAME}"
_REALM = r"[A-Za-z][A-Za-z0-9.\-_]+"
_STORAGE_ID = r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])"
_LIST_SPLIT_RE = re.compile(r"[,;\s]+")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.\d+|\d+\.|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_PERL_FLAGS_RE = re.compile(r"\(\?\^([a-z]*):")

STORAGE_CONTENT = frozenset(
    {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"}
)


def is_number(value: str) -> bool:
    """PVE's `is_number`: whether range checks apply to `value`."""
    return _NUMBER_RE.fullmatch(value) is not None


def split_list(value: str) -> list[str]:
    """The items of a `-list` value, as `PVE::Tools::split_list` splits them."""
    if "\0" in value:
        return value.split("\0")
    return [item for item in _LIST_SPLIT_RE.split(value) if item]


def parse_boolean(value: str) -> bool | None:
    """A boolean inside a property string, as PVE's `parse_boolean` reads it."""
    lowered = value.lower()
    if lowered in ("1", "on", "yes", "true"):
        return True
    if lowered in ("0", "off", "no", "false"):
        return False
    return None


def _regex(pattern: str, what: str) -> FormatCheck:
    """A check by a regular expression, compiled on first use (by `re`'s own cache), so
    that importing this module compiles none of them."""

    def check(value: str) -> str | None:
        return None if re.fullmatch(pattern, value) else f"not a valid {what}"

    return check


def _ip(version: int | None) -> FormatCheck:
    what = {None: "IP address", 4: "IPv4 address", 6: "IPv6 address"}[version]

    def check(value: str) -> str | None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return f"not a valid {what}"
        return None if version in (None, address.version) else f"not a valid {what}"

    return check


def _cidr(version: int | None, smallest_prefix: int) -> FormatCheck:
    """PVE's CIDR formats: an address with a prefix length, which for `CIDR`/`CIDRv4`/
    `CIDRv6` must be at least 8 (`pve_verify_cidrv4`: `$1 > 7`); `FullRangeCIDR` allows 0."""
    what = {None: "CIDR", 4: "IPv4 CIDR", 6: "IPv6 CIDR"}[version]

    def check(value: str) -> str | None:
        address, slash, prefix = value.partition("/")
        if not slash or not prefix.isdigit():
            return f"not a valid {what} (address/prefix)"
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return f"not a valid {what} (address/prefix)"
        if version not in (None, parsed.version):
            return f"not a valid {what}"
        bits = 32 if parsed.version == 4 else 128
        if not smallest_prefix <= int(prefix) <= bits:
            return f"prefix length must be {smallest_prefix} to {bits}"
        return None

    return check


def _either(*checks: FormatCheck, what: str) -> FormatCheck:
    def check(value: str) -> str | None:
        return None if any(one(value) is None for one in checks) else f"not a valid {what}"

    return check


def _mac(value: str) -> str | None:
    """`pve_verify_mac_addr`: six hex octets with the I/G (multicast) bit clear."""
    if not re.fullmatch(r"(?i:[a-f0-9]{2}(?::[a-f0-9]{2}){5})", value):
        return "not a MAC address (XX:XX:XX:XX:XX:XX)"
    if int(value[:2], 16) & 1:
        return "not a unicast MAC address (the first octet must be even)"
    return None


def _ipv4mask(value: str) -> str | None:
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
    except ValueError:
        return "not a valid IPv4 netmask"
    return None if "." in value else "not a valid IPv4 netmask"


def _userid(value: str) -> str | None:
    """`verify_username`: `name@realm`, shorter than 64 characters."""
    if len(value) >= 64:
        return "user ids are shorter than 64 characters"
    return None if re.fullmatch(rf"[^\s:/]+@{_REALM}", value) else "not a user id (name@realm)"


def _storage_content(value: str) -> str | None:
    if value in STORAGE_CONTENT:
        return None
    return f"not a content type ({', '.join(sorted(STORAGE_CONTENT))})"


def _volume_or(*specials: str, what: str) -> FormatCheck:
    """A volume id, an absolute path, or one of `specials` (qemu-server's
    `verify_volume_id_or_qm_path` takes `none` and `cdrom` too)."""
    volume = _regex(rf"{_STORAGE_ID}:.+", what)

    def check(value: str) -> str | None:
        if value in specials or value.startswith("/"):
            return None
        return volume(value)

    return check


_IP = _ip(None)
_CIDR = _cidr(None, 8)
_DNS = _regex(_DNS_NAME, "DNS name")

CHECKS: Mapping[str, FormatCheck] = {
    "pve-node": _regex(_HOSTNAME, "node name"),
    "pve-vmid": _regex(r"[1-9][0-9]{2,8}", f"VM id ({VMID_MIN} to {VMID_MAX})"),
    "pve-configid": _regex(r"(?i:[a-z][a-z0-9_-]+)", "configuration id"),
    "pve-storage-id": _regex(_STORAGE_ID, "storage id"),
    "pve-bridge-id": _regex(r"[-_.\w]+", "bridge name"),
    "pve-iface": _regex(r"[a-zA-Z][a-zA-Z0-9_]{1,20}(?:[:.]\d+)?", "network interface name"),
    "pve-tag": _regex(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)", "tag"),
    "pve-poolid": _regex(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", "pool id"),
    "pve-groupid": _regex(r"[A-Za-z0-9.\-_]+", "group id"),
    "pve-roleid": _regex(r"[A-Za-z0-9.\-_]+", "role id"),
    "pve-realm": _regex(_REALM, "realm"),
    "pve-userid": _userid,
    "pve-storage-content": _storage_content,
    "pve-task-status-type": _regex(r"(?i:ok|error|warning|unknown)", "task status type"),
    "pve-volume-id": _regex(rf"{_STORAGE_ID}:.+", "volume id (storage:volume)"),
    "pve-volume-id-or-qm-path": _volume_or(
        "none", "cdrom", what="volume id (storage:volume), path, none or cdrom"
    ),
    "pve-volume-id-or-absolute-path": _volume_or(what="volume id (storage:volume) or path"),
    "pve-replication-job-id": _regex(r"[1-9][0-9]{2,8}-\d{1,9}", "replication job id"),
    "disk-size": _regex(r"\d+(?:\.\d+)?[KMGT]?", "size (a number with K, M, G or T)"),
    "urlencoded": _regex(r"[-%a-zA-Z0-9_.!~*'()]*", "URL-encoded string"),
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "ip": _IP,
    "CIDR": _CIDR,
    "CIDRv4": _cidr(4, 8),
    "CIDRv6": _cidr(6, 8),
    "FullRangeCIDR": _cidr(None, 0),
    "IPorCIDR": _either(_IP, _CIDR, what="IP address or CIDR"),
    "ipv4mask": _ipv4mask,
    "mac-addr": _mac,
    "dns-name": _DNS,
    "address": _either(_IP, _DNS, what="IP address or DNS name"),
}
"""The named formats checked here, by their PVE name."""

UNCHECKED_FORMATS = frozenset(
    {
        "IPorCIDRorAlias",
        "backup-fleecing",
        "backup-performance",
        "bridge-pair-list",
        "email-list",
        "email-opt",
        "email-or-username",
        "email-or-username-list",
        "graphite-path",
        "ldap-simple-attr",
        "ldap-simple-attr-list",
        "lxc-ip-with-ll-iface-list",
        "mac-prefix",
        "pem-certificate",
        "pem-certificate-chain",
        "pem-string",
        "proxmox-remote",
        "prune-backups",
        "pve-acme-alias",
        "pve-acme-domain",
        "pve-acme-domain-list",
        "pve-calendar-event",
        "pve-command-batch",
        "pve-cpuset",
        "pve-ct-timezone",
        "pve-day-of-week-list",
        "pve-dir-override-list",
        "pve-fw-addr-spec",
        "pve-fw-conntrack-helper",
        "pve-fw-dport-spec",
        "pve-fw-icmp-type-spec",
        "pve-fw-protocol-spec",
        "pve-fw-sport-spec",
        "pve-ha-node-list",
        "pve-ha-resource-id-list",
        "pve-ha-resource-or-vm-id",
        "pve-hotplug-features",
        "pve-ipv4-config",
        "pve-ipv6-config",
        "pve-lxc-dev-string",
        "pve-lxc-mp-string",
        "pve-phys-bits",
        "pve-priv-list",
        "pve-qemu-sev-fmt",
        "pve-qemu-tdx-fmt",
        "pve-qm-boot",
        "pve-qm-bootdisk",
        "pve-qm-cicustom",
        "pve-qm-hostpci",
        "pve-qm-ide",
        "pve-qm-ipconfig",
        "pve-qm-rng",
        "pve-qm-smbios1",
        "pve-qm-watchdog",
        "pve-sdn-bgp-rt-list",
        "pve-sdn-dhcp-range",
        "pve-sdn-fabric-wireguard-interface",
        "pve-sdn-fabric-id",
        "pve-sdn-isis-net",
        "pve-sdn-prefix-list-id",
        "pve-sdn-route-map-id",
        "pve-sdn-subnet-id",
        "pve-startup-order",
        "pve-storage-options",
        "pve-storage-path",
        "pve-storage-path-in-property-string",
        "pve-storage-portal-dns",
        "pve-storage-portal-dns-list",
        "pve-storage-server",
        "pve-storage-vgname",
        "pve-storage-zfs-blocksize",
        "pve-tfa-config",
        "pve-tokenid-list",
        "pve-vlan-id-or-range-list",
        "pve-vm-cpu-conf",
        "realm-sync-options",
        "storage-pair-list",
        "string-list",
    }
)
"""Named formats the 9.2 schema uses that are accepted unchecked: firewall specs, calendar
events, property strings registered by name (their keys are not in the apidoc), paths and
PEM data, whose rules live in Perl code not worth restating for a first line of defence.
PVE still checks them; the caller then gets PVE's own error."""


def check_format(name: str, value: str) -> str | None:
    """What is wrong with `value` in the named format `name`, or None (also for a format
    that is not checked here)."""
    if name.endswith("-opt"):
        return None if value == "" else check_format(name.removesuffix("-opt"), value)
    single = CHECKS.get(name)
    if single is not None:
        return single(value)
    base, dash, kind = name.rpartition("-")
    if dash and kind in ("list", "alist"):
        check = CHECKS.get(base)
        if check is not None:
            for item in split_list(value):
                problem = check(item)
                if problem is not None:
                    return f"item {item!r}: {problem}"
    return None


def is_checked(name: str) -> bool:
    """Whether `check_format` really checks the named format `name`."""
    base = name.removesuffix("-opt")
    if base in CHECKS:
        return True
    stem, dash, kind = base.rpartition("-")
    return bool(dash) and kind in ("list", "alist") and stem in CHECKS


UNTRANSLATED_PATTERNS: frozenset[str] = frozenset()
"""Perl patterns of the schema that Python's `re` cannot take and that are therefore not
checked. Every pattern in the 9.2 schema translates (Python 3.11 has possessive and atomic
forms; `(?^flags:...)` becomes `(?flags:...)`); a test keeps this set in step with the
index, so a new schema's untranslatable pattern has to be named here to be skipped."""


@functools.lru_cache(maxsize=512)
def perl_pattern(pattern: str) -> re.Pattern[str] | None:
    """PVE's `m/^$pattern$/` as a Python regex to `search` with, None when untranslatable.

    PVE interpolates the pattern between `^` and `$` without a group, so a plain pattern
    with a top-level `|` anchors only its first and last branch; `search` on the same text
    keeps that meaning."""

    def flags(match: re.Match[str]) -> str:
        kept = match.group(1).replace("u", "")
        return f"(?{kept}:" if kept else "(?:"

    try:
        return re.compile(f"^{_PERL_FLAGS_RE.sub(flags, pattern)}$")
    except re.error:
        return None
