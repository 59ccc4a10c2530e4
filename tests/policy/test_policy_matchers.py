"""The matchers under the rules: argv patterns, path globs, hosts, vmid ranges, selectors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvemcp.policy.principal import Principal
from pvemcp.policy.rules import (
    Selector,
    VmidRange,
    argv_matches,
    canonical_host,
    host_matches,
    parse_argv_pattern,
    parse_host_pattern,
    parse_path_glob,
    path_matches,
    split_path,
)

PVESH_NODES = ["pvesh", "get", "path:/nodes/**", "--output-format", "json"]
TRICKS = ["..", ".", "", "%2e%2e", "nodes/.."]


@pytest.mark.parametrize(
    ("pattern", "argv", "fits"),
    [
        (["qm", "status", "*"], ["qm", "status", "101"], True),
        (["qm", "status", "*"], ["qm", "status"], False),
        (["qm", "status", "*"], ["qm", "status", "101", "102"], False),
        (["qm", "status", "*"], ["qm", "stop", "101"], False),
        (["qm", "status", "*"], ["QM", "status", "101"], False),
        # Option injection: a wildcard never stands for an option.
        (["qm", "status", "*"], ["qm", "status", "--help"], False),
        (["qm", "status", "*"], ["qm", "status", "-x"], False),
        (["qm", "status", "*"], ["qm", "status", "-"], False),
        (["qm", "status", "*"], ["qm", "status", ""], False),
        (["qm", "list", "**"], ["qm", "list"], True),
        (["qm", "list", "**"], ["qm", "list", "a", "b"], True),
        (["qm", "list", "**"], ["qm", "list", "a", "--full"], False),
        # Options spelled out in the pattern are fine.
        (["qm", "list", "--full", "*"], ["qm", "list", "--full", "1"], True),
        # After a literal `--` everything is an operand.
        (["pct", "exec", "*", "--", "**"], ["pct", "exec", "101", "--", "ls", "-la"], True),
        (["pct", "exec", "*", "--", "*"], ["pct", "exec", "101", "--", "-rf"], True),
        (["pct", "exec", "*", "--", "**"], ["pct", "exec", "-x", "--", "ls"], False),
        (["pct", "exec", "*", "--", "**"], ["pct", "exec", "101", "ls"], False),
        (["pct", "exec", "*", "--", "**"], ["pct", "exec", "101", "-s", "--", "ls"], False),
        # Tokens are literal: no globbing, no shell meaning.
        (["ls", "/etc/*"], ["ls", "/etc/passwd"], False),
        (["echo", "*"], ["echo", "$(reboot)"], True),
        # `path:` tokens: one canonical absolute path, matched as `paths` globs are.
        (PVESH_NODES, ["pvesh", "get", "/nodes", "--output-format", "json"], True),
        (PVESH_NODES, ["pvesh", "get", "/nodes/pve1/qemu", "--output-format", "json"], True),
        (PVESH_NODES, ["pvesh", "get", "/nodes-evil/x", "--output-format", "json"], False),
        (PVESH_NODES, ["pvesh", "get", "/access/users", "--output-format", "json"], False),
        (PVESH_NODES, ["pvesh", "get", "nodes/pve1", "--output-format", "json"], False),
        (PVESH_NODES, ["pvesh", "get", "/nodes/pve1", "--human-readable"], False),
        (PVESH_NODES, ["pvesh", "set", "/nodes/pve1/config", "--output-format", "json"], False),
        (["pvesh", "get", "path:/nodes/*/qemu"], ["pvesh", "get", "/nodes/pve1/qemu"], True),
        (["pvesh", "get", "path:/nodes/*/qemu"], ["pvesh", "get", "/nodes/a/b/qemu"], False),
        (["pvesh", "get", "path:/nodes/*"], ["pvesh", "get", "-/nodes/x"], False),
        (["qm", "path:/etc/pve"], ["qm", "/etc/pve"], True),
        (["qm", "path:/etc/pve"], ["qm", "path:/etc/pve"], False),
    ],
)
def test_argv_patterns(pattern: list[str], argv: list[str], fits: bool) -> None:
    assert argv_matches(parse_argv_pattern(pattern), tuple(argv)) is fits


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ([], "program name"),
        (["*", "status"], "literal program"),
        (["**"], "literal program"),
        (["qm", "**", "x"], "last token"),
        (["qm", ""], "non-empty"),
        (["qm", "a\nb"], "printable"),
        (["path:/usr/bin/*", "x"], "literal program"),
        (["pvesh", "get", "path:nodes/**"], "token 2: 'nodes/\\*\\*' is not an absolute"),
        (["pvesh", "get", "path:/nodes/../access"], "not an absolute canonical"),
        (["pvesh", "get", "path:/nodes/x**"], "whole path component"),
    ],
)
def test_bad_argv_patterns(pattern: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_argv_pattern(pattern)


@pytest.mark.parametrize(
    "path",
    [
        "/nodes/../access",
        "/nodes/pve1/../../access/users",
        "/nodes/./../access",
        "/nodes//access",
        "//nodes/x",
        "/nodes/x/",
        "/nodes/\0/x",
    ],
)
def test_path_tokens_refuse_dot_dot_and_other_non_canonical_tricks(path: str) -> None:
    assert not argv_matches(
        parse_argv_pattern(PVESH_NODES), ("pvesh", "get", path, *PVESH_NODES[3:])
    )


@given(
    st.lists(st.sampled_from(["pve1", "qemu", "100", "access", *TRICKS]), max_size=6),
    st.booleans(),
)
def test_a_path_token_matches_exactly_the_canonical_paths_under_its_prefix(
    components: list[str], trailing_slash: bool
) -> None:
    """A matched token is canonical and lies under /nodes component-wise, so the program
    cannot read it as anything outside /nodes; every other token is refused."""
    path = "/nodes/" + "/".join(components) + ("/" if trailing_slash else "")
    argv = ("pvesh", "get", path, "--output-format", "json")
    parts = split_path(path)
    expected = parts is not None and parts[0] == "nodes"
    assert argv_matches(parse_argv_pattern(PVESH_NODES), argv) is expected
    if expected:
        assert parts is not None and ".." not in parts and "." not in parts and "" not in parts


@pytest.mark.parametrize(
    ("glob", "path", "fits"),
    [
        ("/etc/pve/**", "/etc/pve/qemu-server/100.conf", True),
        ("/etc/pve/**", "/etc/pve", True),
        ("/etc/pve/**", "/etc/pve-evil/x", False),
        ("/etc/pve/**", "/etc/pvex", False),
        ("/etc/pve/*", "/etc/pve/a", True),
        ("/etc/pve/*", "/etc/pve/a/b", False),
        ("/etc/pve/*.conf", "/etc/pve/x.conf", True),
        ("/etc/pve/*.conf", "/etc/pve/sub/x.conf", False),
        ("/var/**/*.log", "/var/log/syslog.log", True),
        ("/var/**/*.log", "/var/a/b/c.log", True),
        ("/var/**/*.log", "/var/a/b/c.txt", False),
        ("/**", "/anything/at/all", True),
        ("/", "/", True),
        ("/", "/etc", False),
    ],
)
def test_path_globs_by_component(glob: str, path: str, fits: bool) -> None:
    parts = split_path(path)
    assert parts is not None
    assert path_matches(parse_path_glob(glob), parts) is fits


@pytest.mark.parametrize(
    "path", ["etc/pve", "/etc/../shadow", "/etc/./pve", "//etc", "/etc/", "/etc\0x", ""]
)
def test_non_canonical_paths(path: str) -> None:
    assert split_path(path) is None


@pytest.mark.parametrize(
    "glob", ["etc/pve/**", "/etc/pve/../x", "/etc//pve", "/etc/pve/", "/etc/pve**", "/a/**b"]
)
def test_bad_path_globs(glob: str) -> None:
    with pytest.raises(ValueError, match=r"canonical|whole path component"):
        parse_path_glob(glob)


@pytest.mark.parametrize(
    ("pattern", "host", "fits"),
    [
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "evilexample.com", False),
        ("*.example.com", "example.com.evil.net", False),
    ],
)
def test_hosts(pattern: str, host: str, fits: bool) -> None:
    name = canonical_host(host)
    assert name is not None
    assert host_matches(parse_host_pattern(pattern), name) is fits


def test_host_canonical_form() -> None:
    assert canonical_host("Www.Example.COM.") == "www.example.com"
    assert parse_host_pattern("*.Example.com") == "*.example.com"
    for bad in ("user@example.com", "example.com:443", "exa mple.com", "", "-a.com", "a..b"):
        assert canonical_host(bad) is None
    for bad in ("*", "*.", "a.*.com", "**.a.com", "https://a.com"):
        with pytest.raises(ValueError, match="host name"):
            parse_host_pattern(bad)


def test_vmid_ranges() -> None:
    assert 150 in VmidRange.parse("100-199")
    assert 200 not in VmidRange.parse("100-199")
    assert 100 in VmidRange.parse(100)
    assert str(VmidRange.parse("100-100")) == "100"
    for bad in ("199-100", "5-10", True, 1.5, "100", "a-b", 99, 1_000_000_000):
        with pytest.raises(ValueError, match="vmid"):
            VmidRange.parse(bad)


def test_selectors() -> None:
    alice = Principal(
        "alice", "http", client_id="c", groups=frozenset({"g"}), scopes=frozenset({"s"})
    )
    cases = {
        "*": True,
        "local": False,
        "sub:alice": True,
        "sub:bob": False,
        "group:g": True,
        "scope:s": True,
        "client:c": True,
        "client:d": False,
    }
    for text, fits in cases.items():
        selector = Selector.parse(text)
        assert selector.matches(alice) is fits, text
        assert str(selector) == text
    assert [
        Selector.parse(t).explicit
        for t in ("*", "scope:s", "local", "sub:a", "group:g", "client:c")
    ] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    for bad in ("alice", "user:alice", "sub:", "sub: alice", "SUB:alice", "**", "sub:a\tb"):
        with pytest.raises(ValueError, match="not a subject selector"):
            Selector.parse(bad)
