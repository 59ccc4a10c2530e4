"""The QEMU guest agent of the simulated VMs: `agent/exec` and `agent/exec-status`, and
the reads `ping`, `get-osinfo`, `get-host-name`, `network-get-interfaces`, `get-fsinfo`.

Every command first passes qemu-server's `assert_agent_available`
(`PVE/QemuServer/Agent.pm`): no `agent` key is "No QEMU guest agent configured", a stopped
VM "VM N is not running", and an agent that does not answer `guest-ping` (switched off
with `enabled=0`, or a paused VM, whose vCPUs cannot run it) "QEMU guest agent is not
running". The reads answer `{"result": ...}` (`PVE/API2/Qemu/Agent.pm`), derived from the
guest's config: its name, OS type, NICs (with the cloud-init `ipconfigN` address when
static) and disks.

Nothing is executed. A tiny fake guest knows a few programs and answers them the way a
Linux guest's agent would: `echo`, `true`, `false` (exit 1), `cat` (echoes the input
data), `hostname`, and `sleep N`, which keeps running for N seconds of the injected clock
so callers can see `exited: false` and time out. Any other program fails to start, with
the agent's own error. As in qemu-guest-agent, a process is forgotten once its exit has
been reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, failure
from .model import Guest
from .router import Context, Handler, Params, Result, Route, api, integer, text

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
        self.silent: set[int] = set()
        """VMs whose qemu-ga does not answer `guest-ping` although their config enables
        it (not installed in the guest, or hung): what a test sets to see that case."""

    def check(self, guest: Guest) -> None:
        """`check_available`, with the agents in `silent` not answering."""
        check_available(guest)
        if guest.vmid in self.silent:
            raise failure("QEMU guest agent is not running")

    def start(self, guest: Guest, command: Sequence[str], stdin: str, now: float) -> int:
        """Start `command` in the guest; its pid."""
        self.check(guest)
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
        self.check(guest)
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


def _agent_enabled(value: object) -> bool:
    """The `agent` property string's `enabled` (`1`, `enabled=1,fstrim_cloned_disks=1`)."""
    first = str(value).split(",")[0]
    return first.removeprefix("enabled=") in ("1", "on", "yes", "true")


def check_available(guest: Guest) -> None:
    """qemu-server `PVE::QemuServer::Agent::assert_agent_available`, in its order."""
    if "agent" not in guest.config:
        raise failure("No QEMU guest agent configured")
    if guest.status != "running":
        raise failure(f"VM {guest.vmid} is not running")
    if not _agent_enabled(guest.config["agent"]) or guest.paused:
        raise failure("QEMU guest agent is not running")


_NET_KEY = re.compile(r"net(\d+)")
_DISK_KEY = re.compile(r"(scsi|virtio|sata|ide)(\d+)")
_MAC = re.compile(r"=([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})")
_SIZE = re.compile(r"size=(\d+)([KMGT])")
_STATIC = re.compile(r"ip=(\d+\.\d+\.\d+\.\d+)/(\d+)")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _address(guest: Guest, index: int) -> tuple[str, int]:
    """The NIC's IPv4 address: the static cloud-init one, else a DHCP lease from the vmid."""
    found = _STATIC.search(str(guest.config.get(f"ipconfig{index}", "")))
    if found:
        return found.group(1), int(found.group(2))
    return f"10.{10 + index}.{guest.vmid // 256 % 256}.{guest.vmid % 256}", 24


def _interfaces(guest: Guest) -> list[dict[str, Any]]:
    """`guest-network-get-interfaces`: the loopback, then one `ensN` per NIC (PCI slot 18+)."""
    items: list[dict[str, Any]] = [
        {"name": "lo", "hardware-address": "00:00:00:00:00:00",
         "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                          {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}]}
    ]  # fmt: skip
    nics = sorted(int(m.group(1)) for key in guest.config if (m := _NET_KEY.fullmatch(key)))
    for index in nics:
        mac = _MAC.search(str(guest.config[f"net{index}"]))
        address, prefix = _address(guest, index)
        items.append(
            {
                "name": f"ens{18 + index}",
                "hardware-address": mac.group(1).lower() if mac else "00:00:00:00:00:00",
                "ip-addresses": [
                    {"ip-address-type": "ipv4", "ip-address": address, "prefix": prefix}
                ],
            }
        )
    return items


def _filesystems(guest: Guest) -> list[dict[str, Any]]:
    """`guest-get-fsinfo`: a filesystem on each disk (the first is the root), used 40 %,
    or the root's the guest's `disk_used` when set (PVE itself reports that figure for
    containers only; a VM's usage is what its agent says)."""
    windows = str(guest.config.get("ostype", "")).startswith("win")
    disks = sorted(
        (m.group(1), int(m.group(2)), str(value))
        for key, value in guest.config.items()
        if (m := _DISK_KEY.fullmatch(key)) and "media=cdrom" not in str(value)
    )
    items: list[dict[str, Any]] = []
    for number, (bus, unit, value) in enumerate(disks):
        size = _SIZE.search(value)
        total = int(size.group(1)) * _UNITS[size.group(2)] if size else 8 << 30
        letter = chr(ord("a") + number)
        if windows:
            name, fstype = f"\\\\?\\Volume{{{number:08d}}}\\", "NTFS"
            mount = f"{chr(ord('C') + number)}:\\"
        else:
            name, fstype = f"sd{letter}1", "ext4"
            mount = "/" if number == 0 else f"/srv/disk{number}"
        items.append(
            {
                "name": name,
                "mountpoint": mount,
                "type": fstype,
                "total-bytes": total,
                "used-bytes": min(guest.disk_used, total)
                if number == 0 and guest.disk_used
                else total * 2 // 5,
                "disk": [{"bus-type": bus, "bus": 0, "target": 0, "unit": unit,
                          "dev": f"/dev/sd{letter}1"}],
            }
        )  # fmt: skip
    return items


def _osinfo(guest: Guest) -> dict[str, str]:
    """`guest-get-osinfo` as qemu-ga reports the guest's OS (by its `ostype`)."""
    if str(guest.config.get("ostype", "")).startswith("win"):
        return {"id": "mswindows", "name": "Microsoft Windows", "pretty-name": "Windows 11 Pro",
                "version": "Microsoft Windows 11", "version-id": "11", "variant": "client",
                "variant-id": "client", "kernel-release": "22631", "kernel-version": "10.0",
                "machine": "x86_64"}  # fmt: skip
    return {"id": "debian", "name": "Debian GNU/Linux",
            "pretty-name": "Debian GNU/Linux 12 (bookworm)", "version": "12 (bookworm)",
            "version-id": "12", "kernel-release": "6.1.0-28-amd64",
            "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
            "machine": "x86_64"}  # fmt: skip


_READS: dict[str, Callable[[Guest], object]] = {
    "ping": lambda guest: {},
    "get-osinfo": _osinfo,
    "get-host-name": lambda guest: {"host-name": guest.name},
    "network-get-interfaces": _interfaces,
    "get-fsinfo": _filesystems,
}


def _read(command: str) -> Handler:
    def handler(ctx: Context, params: Params) -> Result:
        ctx.state.node(text(params, "node"))
        guest = ctx.state.require_guest(text(params, "node"), "qemu", integer(params, "vmid"))
        ctx.state.agents.check(guest)
        return Result({"result": _READS[command](guest)})

    return handler


ROUTES: tuple[Route, ...] = tuple(
    api(
        "POST" if command == "ping" else "GET",
        f"/nodes/{{node}}/qemu/{{vmid}}/agent/{command}",
        _read(command),
    )
    for command in _READS
)
