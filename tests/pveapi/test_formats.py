"""PVE's named formats and Perl patterns, and the lists of what is not checked."""

from __future__ import annotations

import pytest

from pvemcp.pveapi import load_index
from pvemcp.pveapi.formats import (
    UNCHECKED_FORMATS,
    UNTRANSLATED_PATTERNS,
    check_format,
    is_checked,
    perl_pattern,
    split_list,
)


def _walk_formats_and_patterns() -> tuple[set[str], set[str]]:
    formats: set[str] = set()
    patterns: set[str] = set()

    def visit(schema: object) -> None:
        if isinstance(schema, dict):
            if isinstance(schema.get("format"), str):
                formats.add(schema["format"])
            if isinstance(schema.get("pattern"), str):
                patterns.add(schema["pattern"])
            for value in schema.values():
                visit(value)
        elif isinstance(schema, list):
            for item in schema:
                visit(item)

    for endpoint in load_index():
        visit(dict(endpoint.parameters))
        visit(dict(endpoint.returns))
    return formats, patterns


def test_unchecked_formats_are_exactly_the_ones_not_restated() -> None:
    """Every named format the schema uses is either checked or listed as unchecked."""
    formats, _ = _walk_formats_and_patterns()
    assert {name for name in formats if not is_checked(name)} == UNCHECKED_FORMATS


def test_untranslated_patterns_are_exactly_the_ones_re_refuses() -> None:
    _, patterns = _walk_formats_and_patterns()
    assert {p for p in patterns if perl_pattern(p) is None} == UNTRANSLATED_PATTERNS
    assert perl_pattern("(?^i:[a-z]+)") is not None
    assert perl_pattern("(unclosed") is None


def test_a_plain_pattern_is_anchored_as_pve_interpolates_it() -> None:
    """PVE checks `m/^$pattern$/`: a top-level `|` anchors only the outer branches."""
    regex = perl_pattern("/dev/parport\\d+|/dev/usb/lp\\d+")
    assert regex is not None
    assert regex.search("/dev/parport0")
    assert regex.search("/dev/parport0 and more")  # as PVE: `^/dev/parport\d+` matches
    assert not regex.search("x/dev/parport0")


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("pve-node", ["pve1", "a", "node-2"], ["-pve", "pve_1", "pve.example"]),
        ("pve-vmid", ["100", "999999999"], ["99", "0100", "1000000000"]),
        ("pve-configid", ["net0", "Scsi_1"], ["0net", "a"]),
        ("pve-storage-id", ["local-lvm", "nfs.1"], ["1local", "local-"]),
        ("pve-tag", ["web", "_x.y+z"], ["-web", "a b"]),
        ("pve-poolid", ["prod", "team/prod"], ["a b", "a/b/c/d"]),
        ("pve-userid", ["root@pam", "jo.e@pve"], ["root", "root@1pam", f"{'a' * 60}@pam"]),
        ("pve-volume-id", ["local:iso/x.iso"], ["local", "1x:iso"]),
        ("pve-iface", ["eth0", "vmbr0.10"], ["0eth", "e"]),
        ("ipv4", ["10.0.0.1"], ["10.0.0.256", "fd00::1", "010.0.0.1"]),
        ("ipv6", ["fd00::1"], ["10.0.0.1"]),
        ("CIDR", ["10.0.0.0/24", "fd00::/64"], ["10.0.0.0", "10.0.0.0/7", "10.0.0.0/33"]),
        ("FullRangeCIDR", ["0.0.0.0/0"], ["0.0.0.0/33"]),
        ("ipv4mask", ["255.255.255.0"], ["255.0.255.0", "24"]),
        ("mac-addr", ["BC:24:11:00:00:01"], ["01:00:00:00:00:01", "BC:24:11:00:00"]),
        ("dns-name", ["pve1.example.com"], ["-a.example", "a_b"]),
        ("address", ["10.0.0.1", "host.example"], ["a b"]),
        ("disk-size", ["32", "32G", "0.5T"], ["32GB", "-1G"]),
        ("pve-storage-content", ["images", "iso"], ["isos"]),
        (
            "pve-volume-id-or-qm-path",
            ["local-lvm:32", "local:iso/x.iso", "none", "cdrom", "/dev/sdb"],
            ["local-lvm", "32", "1bad:32"],
        ),
        ("pve-volume-id-or-absolute-path", ["local:100/x.qcow2", "/tmp/x.raw"], ["none"]),
        ("pve-vmid-list", ["100,101 102;103"], ["100,abc"]),
        ("email-opt", [""], []),
        ("pve-fw-addr-spec", ["anything at all"], []),  # unchecked: accepted
    ],
)
def test_named_formats(fmt: str, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert check_format(fmt, value) is None, value
    for value in bad:
        assert check_format(fmt, value) is not None, value


def test_lists_split_as_pve_splits_them() -> None:
    assert split_list("a, b;c  d") == ["a", "b", "c", "d"]
    assert split_list("a,b\0c d") == ["a,b", "c d"]
