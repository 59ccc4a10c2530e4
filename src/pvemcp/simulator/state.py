"""The simulated cluster as one thread-safe object: seeded data, tasks and the clock.

The app calls `advance` at the start of every request, under `lock`, so each answer sees
every task that has ended by then (state changes are applied lazily, at the task's end
time on the injected clock). Tests that look at the state directly use the locking
accessor `find_guest`, which advances too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .access import AccessStore, demo_store
from .agent import GuestAgents
from .ceph import Ceph, demo_ceph
from .errors import ApiError, failure
from .firewall import Firewall, demo_firewall
from .mappings import Mappings, demo_mappings
from .model import Guest, GuestKind, Node
from .network import NodeNetwork, demo_networks
from .notify import Notify, demo_notify
from .sdn import Sdn, demo_sdn
from .seed import CLUSTER_NAME, MEDIA, SILENT_AGENTS, Scale, build_demo
from .tasks import LockKey, Plan, Task, TaskTable, encode_upid, guest_lock
from .volumes import Volumes, seed_media, seed_volumes

if TYPE_CHECKING:
    from .ha import HaStore
    from .jobs import BackupJobs
    from .replication import Replication

Clock = Callable[[], float]


def replication_advance(state: ClusterState, now: float) -> None:
    """Due replication runs and removals (`replication.advance`), imported on first use
    for the same reason as the stores."""
    from .replication import advance  # noqa: PLC0415

    advance(state, now)


def qemu_config_missing(node: str, vmid: int) -> str:
    """PVE's message when a VM's config is not on the node asked."""
    return f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"


def lxc_config_missing(node: str, vmid: int) -> str:
    """PVE's message when a container's config is not on the node asked."""
    return f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"


class ClusterState:
    """The demo cluster: nodes, guests, storages and tasks, driven by an injectable clock."""

    def __init__(
        self,
        seed: int = 1,
        *,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        ssl_fingerprint: str | None = None,
        ceph: bool = False,
        scale: Scale | None = None,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.lock = threading.RLock()
        """Held by the app for a whole request; re-entrant for the accessors below."""
        self._clock: Clock = clock or time.time
        self.name = CLUSTER_NAME
        self.ssl_fingerprint = ssl_fingerprint
        demo = build_demo(seed, self._clock(), scale)
        self.nodes: dict[str, Node] = demo.nodes
        self.guests: dict[int, Guest] = demo.guests
        self.storages = demo.storages
        self.ceph: Ceph | None = (
            demo_ceph(self.storages, list(self.nodes), self._clock()) if ceph else None
        )
        """Ceph on the nodes (`ceph.py`), only when asked for: most clusters run without."""
        self.volumes = Volumes(self.storages)
        seed_volumes(self.volumes, self.guests.values(), self._clock())
        seed_media(self.volumes, MEDIA, self._clock())
        from .backups import seed_backups  # noqa: PLC0415 - backups imports power, which imports this

        seed_backups(self.volumes, self.guests.values(), demo.history)
        self.access: AccessStore = demo_store(demo.pools)
        """Users, groups, tokens, ACLs, realms and pools (`access.py`)."""
        self.pools = self.access.pools
        """The pools by name (the same dict as `access.pools`)."""
        self.firewall: Firewall = demo_firewall()
        from .nodes import Systems, demo_systems  # noqa: PLC0415 - nodes imports power, which imports this

        self.systems: Systems = demo_systems(self.nodes.values(), time_scale)
        """Each node's services, packages, disks and power state (`nodes.py`)."""
        self.networks: dict[str, NodeNetwork] = demo_networks(self.nodes.values())
        """Each node's interfaces, active and pending (`network.py`)."""
        self.sdn: Sdn = demo_sdn()
        """SDN zones, VNets and subnets: the config and what the last apply made run."""
        self.time_scale = time_scale
        """Real seconds per simulated second of work (tasks, the HA manager, replication)."""
        from .ha import demo_ha  # noqa: PLC0415 - ha imports power, which imports this
        from .replication import demo_replication  # noqa: PLC0415 - likewise (migrate)

        self.ha: HaStore = demo_ha(self.guests)
        """HA resources and rules, and the manager's view of them (`ha.py`)."""
        self.replication: Replication = demo_replication(self._clock())
        """Storage replication jobs and their state (`replication.py`)."""
        from .jobs import demo_jobs  # noqa: PLC0415 - jobs imports backups (power)

        self.backup_jobs: BackupJobs = demo_jobs()
        """The cluster's backup jobs (`jobs.py`)."""
        self.notify: Notify = demo_notify()
        """Notification endpoints and matchers, and the tests sent (`notify.py`)."""
        self.mappings: Mappings = demo_mappings()
        """PCI and USB hardware mappings (`mappings.py`)."""
        self.tasks = TaskTable(time_scale)
        self.agents = GuestAgents()
        self.agents.silent.update(SILENT_AGENTS)
        for task in demo.history:
            self.tasks.add_history(task)

    def advance(self) -> float:
        """Finish every task whose end time has passed; returns the clock time used."""
        with self.lock:
            now = self._clock()
            self.tasks.advance(now)
            self._wake(now)
            self.ha.settle(self, now)
            replication_advance(self, now)
            return now

    def node(self, name: str) -> Node:
        """The node, or PVE's 500 for a name it cannot resolve, or the proxy's 595 for a
        node that is down (every node route proxies)."""
        node = self.nodes.get(name)
        if node is None:
            raise failure(
                f"hostname lookup '{name}' failed - failed to get address info for: "
                f"{name}: Name or service not known"
            )
        if not node.online:
            from .nodes import offline  # noqa: PLC0415

            raise offline()
        return node

    def _wake(self, now: float) -> None:
        """Bring back the rebooted nodes whose boot is over (`nodes.wake`)."""
        from .nodes import wake  # noqa: PLC0415

        wake(self, now)

    def guest_on(self, node: str, kind: GuestKind, vmid: int) -> Guest | None:
        """The guest if its config lives on `node` with that kind (PVE reads local configs)."""
        guest = self.guests.get(vmid)
        if guest is None or guest.node != node or guest.kind != kind:
            return None
        return guest

    def require_guest(self, node: str, kind: GuestKind, vmid: int) -> Guest:
        """The guest, or PVE's 500 `Configuration file ... does not exist`."""
        guest = self.guest_on(node, kind, vmid)
        if guest is None:
            missing = qemu_config_missing if kind == "qemu" else lxc_config_missing
            raise ApiError(500, missing(node, vmid))
        return guest

    def find_guest(self, vmid: int) -> Guest | None:
        """The guest with this vmid anywhere in the cluster, with tasks advanced first."""
        with self.lock:
            self.advance()
            return self.guests.get(vmid)

    def new_worker_pid(self, node: Node) -> int:
        """A fresh PID on `node`, for a worker task or a guest process."""
        node.next_pid += 1 + node.next_pid % 5
        return node.next_pid

    def start_task(
        self,
        node_name: str,
        type_: str,
        vmid: int | str | None,
        user: str,
        job: Callable[[float], Plan],
        *,
        locks: Sequence[LockKey] | None = None,
        hold: bool = True,
        at: float | None = None,
    ) -> Task:
        """Fork a worker for `vmid`: a UPID now, the plan when it gets its locks.

        The locks default to the guest's own config flock; a worker that also needs
        another guest, a storage or a node names them all. `hold=False`: the worker
        takes them only to start (see `TaskTable.add`). A task of no one guest (vzdump
        of several) has `vmid` None and an empty id in its UPID, as PVE's; a task of
        something else names it (`networking` for a network reload). `at`: the time a
        worker forked from another task's end says it started (the HA manager's), since
        a task's end is applied when the state is next read, maybe later.
        """
        with self.lock:
            now = self._clock() if at is None else at
            node = self.node(node_name)
            pid = self.new_worker_pid(node)
            pstart = int((now - node.boot_time) * 100)
            starttime = int(now)
            upid = encode_upid(
                node_name, pid, pstart, starttime, type_=type_, id_=str(vmid or ""), user=user
            )
            task = Task(
                upid=upid,
                node=node_name,
                pid=pid,
                pstart=pstart,
                starttime=starttime,
                type=type_,
                id=str(vmid or ""),
                user=user,
                created=now,
                job=job,
            )
            if locks is None:
                assert isinstance(vmid, int), "a task of no guest names its locks"
                locks = (guest_lock(vmid),)
            self.tasks.add(task, locks, hold=hold)
            self.tasks.advance(now)
            return task
