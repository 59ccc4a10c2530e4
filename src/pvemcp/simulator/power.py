"""Start, stop, shutdown, reboot, suspend and resume of VMs and containers.

Each action mirrors where PVE checks what: some checks run in the API handler before the
worker is forked (a direct HTTP 500: `CT 200 already running`, `VM is paused - cannot
shutdown`), the rest run inside the worker once it holds the guest's lock (HTTP 200 with a
UPID, then a task that ends in `TASK ERROR: VM 100 already running`). Note the quirks kept
from qemu-server: stopping or shutting down a stopped VM is a successful no-op task, and a
missing VM fails inside the task; pve-container checks the run state up front instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from . import ha
from .errors import failure
from .locks import locked_message
from .model import GiB, Guest, GuestKind
from .network import BRIDGE_TYPES
from .params import Value
from .state import ClusterState, lxc_config_missing, qemu_config_missing
from .tasks import FAILURE_SECONDS, Plan, fail
from .volumes import detach_removed

ACTIONS = ("start", "stop", "shutdown", "reboot", "suspend", "resume")
SECONDS = {"start": 3.0, "stop": 1.0, "shutdown": 6.0, "reboot": 8.0, "suspend": 1.0}
"""Realistic durations of the successful tasks, before the time scale."""
RESUME_SECONDS = 1.0
HIBERNATE_SECONDS = 5.0
NOTHING_TO_DO = Plan(FAILURE_SECONDS)

Job = Callable[[float], Plan]
"""A worker's body: called with the time it gets its locks, it checks and plans."""
Action = Callable[[Mapping[str, Value]], tuple[str, Job]]


def start_running(state: ClusterState, guest: Guest, at: float) -> None:
    """The guest runs from `at` (a start, a resume from disk, a rollback to RAM state)."""
    guest.status = "running"
    guest.paused = False
    guest.checkpointed = False
    guest.started_at = at
    guest.pid = state.new_worker_pid(state.nodes[guest.node])
    guest.config.pop("lock", None)


def _apply_pending(state: ClusterState, guest: Guest) -> None:
    """The pending config changes apply, as a start does first; a disk whose deletion was
    pending is detached to `unusedN` then (`vmconfig_apply_pending`)."""
    before, forced = dict(guest.config), dict(guest.pending_delete)
    guest.apply_pending()
    detach_removed(state.volumes, guest, before, forced, force=False)


def _cold_start(state: ClusterState, guest: Guest, at: float) -> None:
    """A start from stopped: the pending config changes apply first, as on PVE."""
    _apply_pending(state, guest)
    start_running(state, guest, at)


def halt(guest: Guest) -> None:
    """The guest stops (a stop, a shutdown, the stop before a rollback)."""
    guest.status = "stopped"
    guest.paused = False
    guest.started_at = None
    guest.pid = None


def _start_lines(guest: Guest) -> tuple[tuple[float, str], ...]:
    """What a QEMU start writes to the task log: only swtpm speaks, for VMs with a TPM."""
    if "tpmstate0" not in guest.config:
        return ()
    return ((0.2, "swtpm_setup: Not overwriting existing state file."),)


_NIC_BRIDGE = re.compile(r"(?:^|,)bridge=([^,]+)")


def _missing_bridge(state: ClusterState, guest: Guest) -> str | None:
    """A bridge a NIC of the config the start applies names that the node does not run (not
    in its active interfaces, not a running SDN VNet), or None. qemu-server's
    `config_to_command` reads each virtio NIC's bridge MTU first (`read_bridge_mtu`,
    pve-common PVE/Network.pm: `bridge 'vmbr9' does not exist`); other models fail later in
    the `pve-bridge` script with QEMU's own words, which are not modelled (the same text is
    used). A running VM's hotplug of such a NIC (`hotplug problem - ...`, the value kept
    pending, the PUT a parameter error) is not modelled: the tools refuse it first."""
    running = {n for n, d in state.networks[guest.node].active.items() if d["type"] in BRIDGE_TYPES}
    running |= {str(vnet["iface"]) for vnet in state.sdn.local_vnets(guest.node)}
    for key, value in sorted({**guest.config, **guest.pending}.items()):
        if re.fullmatch(r"net\d+", key) and key not in guest.pending_delete:
            found = _NIC_BRIDGE.search(str(value))
            if found and found.group(1) not in running:
                return found.group(1)
    return None


def _not_found(node: str, vmid: int) -> str:
    # qemu-server's check_running on a VM whose config is not on this node.
    return f"unable to find configuration file for VM {vmid} on node '{node}'"


class _Qemu:
    """qemu-server's API handlers (PVE/API2/Qemu.pm) and what their workers do."""

    def __init__(self, state: ClusterState, node: str, vmid: int) -> None:
        self.state = state
        self.node = node
        self.vmid = vmid

    def _guest(self) -> Guest | None:
        return self.state.guest_on(self.node, "qemu", self.vmid)

    def _require_running(self) -> None:
        """check_running before the fork: the VM must exist here and run."""
        guest = self._guest()
        if guest is None:
            raise failure(_not_found(self.node, self.vmid))
        if guest.status != "running":
            raise failure(f"VM {self.vmid} not running")

    def _paused(self) -> bool:
        guest = self._guest()
        return guest is not None and guest.paused

    def start(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None:
                return fail(qemu_config_missing(self.node, self.vmid))
            if guest.template:
                return fail("you can't start a vm if it's a template")
            if guest.lock != "suspended" and (locked := locked_message(guest)):
                # qemu-server vm_start: check_lock unless the lock is `suspended`.
                return fail(locked)
            if guest.status == "running":
                return fail(f"VM {self.vmid} already running")
            if (bridge := _missing_bridge(self.state, guest)) is not None:
                # vm_start applies the pending changes, then builds the command and dies.
                applied = ((0.0, lambda _at: _apply_pending(self.state, guest)),)
                return Plan(FAILURE_SECONDS, error=f"bridge '{bridge}' does not exist",
                            steps=applied)  # fmt: skip
            return Plan(
                SECONDS["start"],
                lines=_start_lines(guest),
                apply=lambda at: _cold_start(self.state, guest, at),
            )

        return "qmstart", job

    def _stop_job(self, seconds: float, skiplock: bool) -> Job:
        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None:
                return fail(_not_found(self.node, self.vmid))
            if guest.status != "running":
                return NOTHING_TO_DO
            # qemu-server _do_vm_stop: check_lock unless skiplock, once it knows it runs.
            if not skiplock and (locked := locked_message(guest)):
                return fail(locked)
            return Plan(seconds, apply=lambda _at: halt(guest))

        return job

    def stop(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        return "qmstop", self._stop_job(SECONDS["stop"], bool(params.get("skiplock")))

    def shutdown(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        seconds = SECONDS["shutdown"]
        if self._paused():
            if not params.get("forceStop"):
                raise failure("VM is paused - cannot shutdown")
            seconds = SECONDS["stop"]
        return "qmshutdown", self._stop_job(seconds, bool(params.get("skiplock")))

    def reboot(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        if self._paused():
            raise failure("VM is paused - cannot shutdown")
        self._require_running()

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None or guest.status != "running":
                return fail(f"VM {self.vmid} not running")
            # A reboot is a stop and a start: pending changes apply (qemu-server vm_reboot).
            return Plan(
                SECONDS["reboot"],
                lines=_start_lines(guest),
                apply=lambda at: _cold_start(self.state, guest, at),
            )

        return "qmreboot", job

    def suspend(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        self._require_running()
        todisk = bool(params.get("todisk"))
        storage = str(params.get("statestorage", "local-lvm"))

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None or guest.status != "running":
                return fail(f"VM {self.vmid} not running")
            if not todisk:
                return Plan(SECONDS["suspend"], apply=lambda _at: setattr(guest, "paused", True))
            saved = guest.maxmem * guest.mem_fraction / GiB

            def hibernate(_at: float) -> None:
                halt(guest)
                guest.config["lock"] = "suspended"

            lines = (
                (0.0, f"saving VM state and RAM using storage '{storage}'"),
                (0.3, f"{saved * 0.3:.2f} GiB in 1s"),
                (0.7, f"{saved * 0.8:.2f} GiB in 3s"),
                (0.9, f"completed saving the VM state in 4s, saved {saved:.2f} GiB"),
                (0.95, "state saved, quitting"),
            )
            return Plan(HIBERNATE_SECONDS, lines=lines, apply=hibernate)

        return ("qmsuspend" if todisk else "qmpause"), job

    def resume(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        guest = self._guest()
        if guest is None or guest.lock != "suspended":
            self._require_running()

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is not None and guest.lock == "suspended":
                return Plan(SECONDS["start"], apply=lambda at: start_running(self.state, guest, at))
            if guest is None or guest.status != "running":
                return fail(f"VM {self.vmid} not running")
            return Plan(RESUME_SECONDS, apply=lambda _at: setattr(guest, "paused", False))

        return "qmresume", job


class _Lxc:
    """pve-container's API handlers (PVE/API2/LXC/Status.pm) and what their workers do."""

    def __init__(self, state: ClusterState, node: str, vmid: int) -> None:
        self.state = state
        self.node = node
        self.vmid = vmid

    def _guest(self) -> Guest | None:
        return self.state.guest_on(self.node, "lxc", self.vmid)

    def _running(self) -> bool:
        guest = self._guest()
        return guest is not None and guest.status == "running"

    def _require_running(self, message: str) -> None:
        if not self._running():
            raise failure(message)

    def start(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        if self._running():
            raise failure(f"CT {self.vmid} already running")

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None:
                return fail(lxc_config_missing(self.node, self.vmid))
            if guest.template:
                return fail("you can't start a CT if it's a template")
            if locked := locked_message(guest):
                # pve-container API2/LXC/Status.pm vm_start: check_lock in the worker.
                return fail(locked)
            if guest.status == "running":
                return fail(f"CT {self.vmid} already running")
            return Plan(SECONDS["start"], apply=lambda at: _cold_start(self.state, guest, at))

        return "vzstart", job

    def _stop_job(self, seconds: float, skiplock: bool, *, hard: bool) -> Job:
        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None:
                return fail(lxc_config_missing(self.node, self.vmid))
            # pve-container API2/LXC/Status.pm vm_stop/vm_shutdown: check_lock in the
            # worker; a stop skips it with skiplock or a `mounted` lock.
            exempt = hard and (skiplock or guest.lock == "mounted")
            if not exempt and (locked := locked_message(guest)):
                return fail(locked)
            if guest.status != "running":
                return NOTHING_TO_DO
            return Plan(seconds, apply=lambda _at: halt(guest))

        return job

    def stop(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        self._require_running(f"CT {self.vmid} not running")
        return "vzstop", self._stop_job(SECONDS["stop"], bool(params.get("skiplock")), hard=True)

    def shutdown(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        self._require_running(f"CT {self.vmid} not running")
        return "vzshutdown", self._stop_job(SECONDS["shutdown"], skiplock=False, hard=False)

    def reboot(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        # pve-container really says "VM" here.
        self._require_running(f"VM {self.vmid} not running")

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None or guest.status != "running":
                return fail(f"CT {self.vmid} not running")
            return Plan(SECONDS["reboot"], apply=lambda at: _cold_start(self.state, guest, at))

        return "vzreboot", job

    def suspend(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        self._require_running(f"CT {self.vmid} not running")

        def checkpoint(guest: Guest) -> None:
            halt(guest)
            guest.checkpointed = True

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None:
                return fail(lxc_config_missing(self.node, self.vmid))
            return Plan(SECONDS["suspend"], apply=lambda _at: checkpoint(guest))

        return "vzsuspend", job

    def resume(self, params: Mapping[str, Value]) -> tuple[str, Job]:
        if self._running():
            raise failure(f"CT {self.vmid} already running")

        def job(_begin: float) -> Plan:
            guest = self._guest()
            if guest is None or not guest.checkpointed:
                return fail(
                    f"command 'lxc-checkpoint -n {self.vmid} -r --foreground -D "
                    "/var/lib/vz/dump' failed: exit code 1"
                )
            return Plan(RESUME_SECONDS, apply=lambda at: start_running(self.state, guest, at))

        return "vzresume", job


def request_power_action(
    state: ClusterState,
    kind: GuestKind,
    node: str,
    vmid: int,
    action: str,
    *,
    params: Mapping[str, Value],
    user: str,
) -> str:
    """Run the handler's own checks (raising ApiError 500) and fork the task; its UPID.
    For an HA-managed guest, start, stop and shutdown fork the `hastart`/`hastop` worker
    that hands the request to ha-manager instead (`ha.request`)."""
    with state.lock:
        state.node(node)
        if action == "suspend" and params.get("todisk") and state.ha.managed(vmid):
            raise failure("Cannot suspend HA managed VM to disk")  # qemu-server vm_suspend
        handed = ha.request(state, kind, node, vmid, action, user=user)
        if handed is not None:
            return handed
        task_type, job = worker(state, kind, node, vmid, action, params=params)
        return state.start_task(node, task_type, vmid, user, job).upid


def worker(
    state: ClusterState,
    kind: GuestKind,
    node: str,
    vmid: int,
    action: str,
    *,
    params: Mapping[str, Value] | None = None,
) -> tuple[str, Job]:
    """The API handler's checks (raising ApiError 500) and the worker it would fork: the
    task type and job. The HA manager's LRM runs these directly (`ha.py`)."""
    handlers = _Qemu(state, node, vmid) if kind == "qemu" else _Lxc(state, node, vmid)
    actions: dict[str, Action] = {
        "start": handlers.start,
        "stop": handlers.stop,
        "shutdown": handlers.shutdown,
        "reboot": handlers.reboot,
        "suspend": handlers.suspend,
        "resume": handlers.resume,
    }
    return actions[action](params or {})
