"""Command strings, operand guards, text rendering and host-key lines, without a server."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import asyncssh
import pytest

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
    with pytest.raises(ValueError, match="positive"):
        wire_command(["true"], 0)


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
    pins = HostKeyPins("pve1", [bare, hosted, ca], None)
    trusted, authorities, revoked = pins("10.9.9.9", "10.9.9.9", None)
    assert len(trusted) == 2 and len(authorities) == 1 and revoked == []


@pytest.mark.parametrize("line", ["pve1 ssh-ed25519 notbase64!", "@trusted " + "ssh-ed25519 AAAA"])
def test_bad_credential_lines_are_refused(line: str) -> None:
    with pytest.raises(SshHostKeyError, match=r"ssh_host_keys\.pve1"):
        HostKeyPins("pve1", [line], None)


def test_unreadable_known_hosts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SshHostKeyError, match="known_hosts file"):
        HostKeyPins("pve1", [], tmp_path / "missing")
