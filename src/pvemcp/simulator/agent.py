"""The QEMU guest agent of the simulated VMs: `agent/exec` and `agent/exec-status`.

Nothing is executed. A tiny fake guest knows a few programs and answers them the way a
Linux guest's agent would: `echo`, `true`, `false` (exit 1), `cat` (echoes the input
data), `hostname`, and `sleep N`, which keeps running for N seconds of the injected clock
so callers can see `exited: false` and time out. Any other program fails to start, with
the agent's own error. As in qemu-guest-agent, a process is forgotten once its exit has
been reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ApiError, failure
from .model import Guest

FIRST_PID = 1200


@dataclass
class GuestProcess:
    """One command started through the agent."""

    pid: int
    ends: float
    exitcode: int
    out: str = ""
    err: str = ""


def _behaviour(guest: Guest, command: Sequence[str], stdin: str) -> tuple[float, int, str, str]:
    """(seconds, exit code, stdout, stderr) of `command` in the fake guest."""
    program, args = command[0], list(command[1:])
    if program == "echo":
        return 0.0, 0, " ".join(args) + "\n", ""
    if program in ("true", "false"):
        return 0.0, int(program == "false"), "", ""
    if program == "cat" and not args:
        return 0.0, 0, stdin, ""
    if program == "hostname" and not args:
        return 0.0, 0, guest.name + "\n", ""
    if program == "sleep" and len(args) == 1:
        try:
            return float(args[0]), 0, "", ""
        except ValueError:
            return 0.0, 1, "", f"sleep: invalid time interval '{args[0]}'\n"
    raise failure(
        f"Agent error: Failed to execute child process \u201c{program}\u201d "
        "(No such file or directory)"
    )


class GuestAgents:
    """The agent processes of every simulated VM, by vmid and pid."""

    def __init__(self) -> None:
        self._processes: dict[int, dict[int, GuestProcess]] = {}
        self._next_pid: dict[int, int] = {}

    @staticmethod
    def _check(guest: Guest) -> None:
        if guest.config.get("agent") != "1":
            raise failure("No QEMU guest agent configured")
        if guest.status != "running":
            raise failure(f"VM {guest.vmid} is not running")

    def start(self, guest: Guest, command: Sequence[str], stdin: str, now: float) -> int:
        """Start `command` in the guest; its pid."""
        self._check(guest)
        if not command or not command[0]:
            raise ApiError(400, "Parameter verification failed.", {"command": "empty command"})
        seconds, exitcode, out, err = _behaviour(guest, command, stdin)
        pid = self._next_pid.get(guest.vmid, FIRST_PID)
        self._next_pid[guest.vmid] = pid + 1
        self._processes.setdefault(guest.vmid, {})[pid] = GuestProcess(
            pid, now + seconds, exitcode, out, err
        )
        return pid

    def status(self, guest: Guest, pid: int, now: float) -> dict[str, object]:
        """`exec-status` for `pid`: running, or its result (then it is forgotten)."""
        self._check(guest)
        process = self._processes.get(guest.vmid, {}).get(pid)
        if process is None:
            raise failure("Agent error: Invalid parameter 'pid'")
        if now < process.ends:
            return {"exited": False}
        del self._processes[guest.vmid][pid]
        answer: dict[str, object] = {"exited": True, "exitcode": process.exitcode}
        if process.out:
            answer["out-data"] = process.out
        if process.err:
            answer["err-data"] = process.err
        return answer
