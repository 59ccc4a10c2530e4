"""Remote commands exactly as the node's login shell will parse them, and output as text.

sshd hands the command to the user's shell as one string, so that string is only ever
built here, with `shlex.join` from an argv list: no caller can pass a shell string, and
`;`, `$(...)`, backticks or newlines inside an argument arrive as literal text. Quoting
does not stop *option* injection (an argument `--delete` is still an option to the
program), so builders pass user-supplied operands through `check_operand` or use the
`--name=value` form.

Closing a non-PTY channel does not stop the remote process, so every command runs under
coreutils `timeout`, which signals the command's whole process group on the node.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from decimal import Decimal

KILL_AFTER = 5.0
"""Seconds between the remote SIGTERM at the timeout and the SIGKILL that follows."""
MIN_TIMEOUT = 1.0
"""The shortest command timeout: below it a duration is a typo or an attack on `timeout`
(whose `0s` means "never"), not a limit anyone needs on a node."""
TIMEOUT_EXIT_CODES = frozenset({124, 137})
"""`timeout`'s exit status after a SIGTERM (124) or the SIGKILL that followed it (128+9)."""

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# ANSI escape sequences (CSI, OSC, and the two-byte ones), then any other C0/C1 control
# but tab and newline, and the Unicode bidi overrides that reorder what a reader sees.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_UNPRINTABLE_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check_operand(value: str, what: str) -> str:
    """Return `value` if it cannot be read as an option or break the command line.

    Raises `ValueError` for an empty value, a leading `-` (option injection: put `--`
    before operands or refuse) and control characters (NUL, newline).
    """
    if not value:
        raise ValueError(f"{what} is empty")
    if value.startswith("-"):
        raise ValueError(f"{what} {value[:40]!r} starts with '-' and would be read as an option")
    if _CONTROL_RE.search(value):
        raise ValueError(f"{what} contains a control character")
    return value


def _seconds(value: float) -> str:
    """A duration for coreutils `timeout` (`90s`, `1.5s`), exactly the float given: the
    shortest decimal that reads back as `value`, never rounded (a rounded `0s` would mean
    no timeout at all)."""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "s"


def wire_command(argv: Sequence[str], timeout: float) -> str:
    """The exact string sent to the node: `timeout --kill-after=5s <N>s <argv...>`, quoted.

    `timeout` stops parsing its own options at the duration, so the wrapped argv cannot
    reach them. Raises `ValueError` for an empty argv, a program name starting with `-`,
    a NUL (no shell can carry it) or a timeout below `MIN_TIMEOUT` or not finite.
    """
    if isinstance(argv, str):
        raise TypeError("argv must be a sequence of arguments, not a shell string")
    args = list(argv)
    if not args or not all(isinstance(arg, str) for arg in args):
        raise ValueError("argv must be a non-empty list of strings")
    check_operand(args[0], "the program name")
    if any("\x00" in arg for arg in args):
        raise ValueError("an argument contains a NUL character")
    if not (math.isfinite(timeout) and timeout >= MIN_TIMEOUT):
        raise ValueError(
            f"the command timeout must be a finite number of seconds, at least {MIN_TIMEOUT:g}"
        )
    return shlex.join(["timeout", f"--kill-after={_seconds(KILL_AFTER)}", _seconds(timeout), *args])


def printable(data: bytes) -> str:
    """Output as text for a person or a model: UTF-8 (bad bytes replaced), without escape
    sequences or control characters that could hide or rewrite what is displayed.

    CR LF becomes LF and a lone CR is dropped (it would overwrite the line on a terminal).
    """
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return _UNPRINTABLE_RE.sub("", _ANSI_RE.sub("", text))
