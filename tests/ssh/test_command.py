"""Command strings, operand guards, text rendering and host-key lines, without a server."""

from __future__ import annotations

import hashlib
import math
import shlex
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pvemcp.config import SshConfig
from pvemcp.proxmox.errors import SshHostKeyError
from pvemcp.proxmox.ssh import CommandResult, check_operand, node_address, printable, wire_command
from pvemcp.proxmox.ssh.hostkeys import HostKeyPins

HOSTILE = ["a; rm -rf /", "$(id)", "`id`", "x\ny", "'\"", "*", "~root", "a b", "--x", "\\"]


def test_wire_command_is_timeout_wrapped_and_quoted() -> None:
    assert wire_command(["pvesh", "get", "/version"], 60) == (
        "timeout --kill-after=5s 60s pvesh get /version"
    )
    assert wire_command(["sleep", "1"], 1.5).startswith("timeout --kill-after=5s 1.5s ")


@pytest.mark.parametrize("value", HOSTILE)
def test_wire_command_round_trips_through_a_shell_parser(value: str) -> None:
    wire = wire_command(["printf", "%s", value], 10)
    assert shlex.split(wire) == ["timeout", "--kill-after=5s", "10s", "printf", "%s", value]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ([], ValueError),
        (["-rf"], ValueError),
        (["echo", "a\x00b"], ValueError),
        ([""], ValueError),
    ],
)
def test_wire_command_refuses_unusable_argv(argv: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        wire_command(argv, 10)


def test_wire_command_refuses_a_shell_string_and_a_bad_timeout() -> None:
    with pytest.raises(TypeError, match="not a shell string"):
        wire_command("echo hi; id", 10)
    with pytest.raises(ValueError, match="at least 1"):
        wire_command(["true"], 0)


@pytest.mark.parametrize("timeout", [0.0004, 0.0001, 0.5, 0.9999999, -3, math.nan, math.inf])
def test_a_timeout_under_one_second_or_not_finite_is_refused(timeout: float) -> None:
    """0.0004 used to become `0s`, which GNU timeout reads as "no timeout"."""
    with pytest.raises(ValueError, match="at least 1"):
        wire_command(["sleep", "60"], timeout)


@pytest.mark.parametrize(
    ("timeout", "text"),
    [
        (1, "1s"),
        (1.0, "1s"),
        (1.0004, "1.0004s"),
        (2.5, "2.5s"),
        (86400, "86400s"),
        (1.0000000001, "1.0000000001s"),
        (1e16, "10000000000000000s"),
    ],
)
def test_timeout_durations_are_written_exactly(timeout: float, text: str) -> None:
    assert shlex.split(wire_command(["true"], timeout))[2] == text


@given(st.floats(min_value=1, max_value=86_400, allow_nan=False, allow_infinity=False))
def test_every_accepted_timeout_reads_back_as_itself(timeout: float) -> None:
    duration = shlex.split(wire_command(["true"], timeout))[2]
    assert duration.endswith("s") and float(duration[:-1]) == timeout
    assert "e" not in duration and not duration.startswith("0")


@pytest.mark.parametrize("name", ["pve1.example.com", "-oProxyCommand=x", "pve 1", "", "a" * 64])
def test_configured_node_names_are_dns_labels(name: str) -> None:
    """A name the SSH pool would refuse at every call is refused when the config loads."""
    with pytest.raises(ValidationError, match="nodes"):
        SshConfig(nodes={name: "10.0.0.1"})
    assert SshConfig(nodes={"pve-1": "10.0.0.1", "2130706435": "x"}).nodes["pve-1"] == "10.0.0.1"


def test_command_timeout_setting_has_the_same_minimum() -> None:
    with pytest.raises(ValidationError, match="command_timeout"):
        SshConfig(command_timeout=0.5)
    assert SshConfig(command_timeout=1).command_timeout == 1


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("-x", "option"),
        ("--delete", "option"),
        ("a\nb", "control"),
        ("nul\x00", "control"),
        ("", "empty"),
    ],
)
def test_check_operand_refuses_options_and_controls(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_operand(value, "vmid")


def test_check_operand_passes_ordinary_values() -> None:
    assert check_operand("/nodes/pve1", "path") == "/nodes/pve1"
    assert check_operand("a-b", "name") == "a-b"


def test_printable_strips_escapes_and_controls_but_keeps_lines() -> None:
    raw = b"ok\x1b[31mred\x1b[0m\x1b]0;title\x07\r\nnext\tcol\x00\x07\rover\xff\xe2\x80\xae"
    assert printable(raw) == "okred\nnext\tcolover\ufffd"


def _result(stdout: bytes, stderr: bytes = b"", *, overflow: bool = False) -> CommandResult:
    return CommandResult(
        node="pve1",
        user="u",
        host_key_fingerprint="SHA256:x",
        connection_id=1,
        argv=("cat",),
        command="timeout --kill-after=5s 1s cat",
        timeout=1.0,
        output_cap=4,
        exit_code=0,
        signal=None,
        timed_out=False,
        stdout=stdout,
        stderr=stderr,
        stdout_overflow=overflow,
        stderr_overflow=False,
        duration=0.01,
    )


def test_result_caps_hashes_and_audit_fields() -> None:
    small = _result(b"abcd")
    assert not small.truncated and not small.capture_truncated
    big = _result(b"abcdef\x1b[2J")
    assert big.truncated and not big.capture_truncated and big.stdout_text == "abcd"
    assert _result(b"abcd", overflow=True).capture_truncated
    fields = big.audit_fields()
    assert fields["stdout_sha256"] == hashlib.sha256(b"abcdef\x1b[2J").hexdigest()
    assert fields["stdout_bytes"] == 10 and fields["truncated"] is True
    assert "stdout" not in fields


def test_node_address_forms() -> None:
    config = SshConfig(nodes={"a": "10.0.0.1", "b": "10.0.0.2:2222", "c": "[fd00::1]:23"}, port=22)
    assert node_address(config, "a") == ("10.0.0.1", 22)
    assert node_address(config, "b") == ("10.0.0.2", 2222)
    assert node_address(config, "c") == ("fd00::1", 23)
    assert node_address(config, "pve9") == ("pve9", 22)


def _public_line() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key("openssh").decode().strip()


def test_credential_lines_bind_by_node_with_or_without_a_host_field() -> None:
    bare = _public_line()
    hosted = "pve1 " + _public_line()
    ca = "@cert-authority * " + _public_line()
    pins = HostKeyPins("pve1", [bare, hosted, ca], None, host="10.9.9.9")
    trusted, authorities, revoked = pins("10.9.9.9", "10.9.9.9", None)
    assert len(trusted) == 2 and len(authorities) == 1 and revoked == []


@pytest.mark.parametrize("line", ["pve1 ssh-ed25519 notbase64!", "@trusted " + "ssh-ed25519 AAAA"])
def test_bad_credential_lines_are_refused(line: str) -> None:
    with pytest.raises(SshHostKeyError, match=r"ssh_host_keys\.pve1"):
        HostKeyPins("pve1", [line], None, host="pve1")


def test_unreadable_known_hosts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SshHostKeyError, match="known_hosts file"):
        HostKeyPins("pve1", [], tmp_path / "missing", host="pve1")


def test_known_hosts_entries_match_the_configured_host_not_the_resolved_address(
    tmp_path: Path,
) -> None:
    """Matching by the resolved address trusted every other name of that address with the
    node's key (`localhost`, `2130706435` for 127.0.0.1)."""
    by_address, by_name, by_cidr = _public_line(), _public_line(), _public_line()
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:2222 {by_address}\n[pve3.example]:2222 {by_name}\n127.0.0.0/8 {by_cidr}\n"
    )

    def trusted(host: str, asked_host: str, addr: str) -> list[str]:
        keys = HostKeyPins("pve3", [], known, host=host)(asked_host, addr, 2222)[0]
        return [" ".join(k.export_public_key("openssh").decode().split()[:2]) for k in keys]

    for alias in ("localhost", "2130706433", "0x7f000001", "017700000001"):
        assert trusted(alias, alias, "127.0.0.1") == []
    assert trusted("pve3.example", "pve3.example", "127.0.0.1") == [by_name]
    assert trusted("127.0.0.1", "127.0.0.1", "127.0.0.1") == [by_address, by_cidr]
