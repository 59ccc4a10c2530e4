"""The typed tool catalogue: toolsets, each of one or more modules per Proxmox domain.

`TOOLSETS` is the one declaration of the toolsets, in the order tools/list shows them.
Each loader imports its modules only when called, so a gateway imports (and builds the
schemas of) only the toolsets a caller needs; `pvemcp tools`, the docs and the tests load
them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from pvemcp.gateway.registry import AnySpec, Toolset
from pvemcp.gateway.toolsets import Catalogue


def _core() -> Sequence[AnySpec]:
    from pvemcp.tools import (  # noqa: PLC0415 - on first need
        approvals,
        capabilities,
        cluster,
        toolsets,
        undo,
    )

    return (*cluster.TOOLS, *toolsets.TOOLS, *undo.TOOLS, *capabilities.TOOLS, *approvals.TOOLS)


def _guests() -> Sequence[AnySpec]:
    from pvemcp.tools import guest_config, guests, migrate  # noqa: PLC0415

    return (*guests.TOOLS, *guest_config.TOOLS, *migrate.TOOLS)


def _lifecycle() -> Sequence[AnySpec]:
    from pvemcp.tools import clone, lifecycle  # noqa: PLC0415

    return (*lifecycle.TOOLS, *clone.TOOLS)


def _tasks() -> Sequence[AnySpec]:
    from pvemcp.tools import tasks  # noqa: PLC0415

    return tasks.TOOLS


def _snapshots() -> Sequence[AnySpec]:
    from pvemcp.tools import snapshots  # noqa: PLC0415

    return snapshots.TOOLS


def _backup() -> Sequence[AnySpec]:
    from pvemcp.tools import backup, backup_jobs  # noqa: PLC0415

    return (*backup.TOOLS, *backup_jobs.TOOLS)


def _storage() -> Sequence[AnySpec]:
    from pvemcp.tools import snippets, storage  # noqa: PLC0415

    return (*storage.TOOLS, *snippets.TOOLS)


def _disks() -> Sequence[AnySpec]:
    from pvemcp.tools import disks  # noqa: PLC0415

    return disks.TOOLS


def _cloudinit() -> Sequence[AnySpec]:
    from pvemcp.tools import cloudinit  # noqa: PLC0415

    return cloudinit.TOOLS


def _agent() -> Sequence[AnySpec]:
    from pvemcp.tools import agent  # noqa: PLC0415

    return agent.TOOLS


def _monitoring() -> Sequence[AnySpec]:
    from pvemcp.tools import monitoring  # noqa: PLC0415

    return monitoring.TOOLS


def _diagnostics() -> Sequence[AnySpec]:
    from pvemcp.tools import diagnostics  # noqa: PLC0415

    return diagnostics.TOOLS


def _access() -> Sequence[AnySpec]:
    from pvemcp.tools import access  # noqa: PLC0415

    return access.TOOLS


def _firewall() -> Sequence[AnySpec]:
    from pvemcp.tools import firewall  # noqa: PLC0415

    return firewall.TOOLS


def _network() -> Sequence[AnySpec]:
    from pvemcp.tools import network  # noqa: PLC0415

    return network.TOOLS


def _ha() -> Sequence[AnySpec]:
    from pvemcp.tools import ha  # noqa: PLC0415

    return ha.TOOLS


def _replication() -> Sequence[AnySpec]:
    from pvemcp.tools import replication  # noqa: PLC0415

    return replication.TOOLS


def _nodes() -> Sequence[AnySpec]:
    from pvemcp.tools import nodes  # noqa: PLC0415

    return nodes.TOOLS


def _sdn() -> Sequence[AnySpec]:
    from pvemcp.tools import sdn  # noqa: PLC0415

    return sdn.TOOLS


def _notifications() -> Sequence[AnySpec]:
    from pvemcp.tools import notifications  # noqa: PLC0415

    return notifications.TOOLS


def _ceph() -> Sequence[AnySpec]:
    from pvemcp.tools import ceph  # noqa: PLC0415

    return ceph.TOOLS


def _mappings() -> Sequence[AnySpec]:
    from pvemcp.tools import mappings  # noqa: PLC0415

    return mappings.TOOLS


def _inventory() -> Sequence[AnySpec]:
    from pvemcp.tools import inventory  # noqa: PLC0415

    return inventory.TOOLS


def _api() -> Sequence[AnySpec]:
    from pvemcp.tools import api  # noqa: PLC0415

    return api.TOOLS


def _escape() -> Sequence[AnySpec]:
    from pvemcp.tools import files, guest_exec, node_cli  # noqa: PLC0415

    return (*node_cli.TOOLS, *files.TOOLS, *guest_exec.TOOLS)


TOOLSETS = (
    Toolset("core", "Cluster and node status, the next VMID, toolsets, undo, approvals.", _core),
    Toolset(
        "guests",
        "VMs and containers: list, inspect, configure, power, migrate, make templates.",
        _guests,
    ),
    Toolset("lifecycle", "Create, clone and delete VMs and containers.", _lifecycle),
    Toolset("tasks", "Your Proxmox tasks: list, status, log, wait, stop.", _tasks),
    Toolset(
        "snapshots", "Snapshots of VMs and containers: list, take, roll back, delete.", _snapshots
    ),
    Toolset("backup", "Back up guests (vzdump), list and restore backups; backup jobs.", _backup),
    Toolset(
        "storage",
        "Storages and usage, content, volumes (delete), snippets, URL downloads, appliances.",
        _storage,
    ),
    Toolset("disks", "Add, grow, move and detach guests' disks on storages.", _disks),
    Toolset("cloudinit", "VM cloud-init: user, SSH keys, IPs, DNS, generated data.", _cloudinit),
    Toolset("agent", "Read a VM through its guest agent: OS, hostname, NICs, filesystems.", _agent),
    Toolset(
        "monitoring",
        "Metrics over time (nodes, guests, storages), task history, node system logs.",
        _monitoring,
    ),
    Toolset(
        "diagnostics",
        "What needs attention: node pressure, guest health (backups, snapshots, agents).",
        _diagnostics,
    ),
    Toolset(
        "access",
        "Pools, users, groups, roles, ACLs, API tokens, realms; who may do what where.",
        _access,
    ),
    Toolset(
        "firewall",
        "Firewall of the cluster, nodes and guests: rules, IP sets, aliases, groups, log.",
        _firewall,
    ),
    Toolset(
        "network",
        "Node interfaces (bridges, bonds, VLANs): pending changes, apply, revert.",
        _network,
    ),
    Toolset(
        "ha",
        "High availability: manager status, HA resources and their moves, HA rules (PVE 9).",
        _ha,
    ),
    Toolset(
        "replication",
        "Storage replication jobs between nodes (ZFS): list, status and log, create, run, delete.",
        _replication,
    ),
    Toolset(
        "nodes",
        "Node services, APT updates, disks/SMART/ZFS/LVM, certificates, reboot/shutdown.",
        _nodes,
    ),
    Toolset("sdn", "SDN zones, VNets and subnets of the cluster; apply them.", _sdn),
    Toolset(
        "ceph", "Ceph: status and health, OSDs, pools, daemons, CephFS; OSD in/out, pools.", _ceph
    ),
    Toolset(
        "notifications",
        "Notification targets (sendmail, gotify, smtp, webhook) and matchers; test a target.",
        _notifications,
    ),
    Toolset("mappings", "PCI and USB hardware mappings for passthrough to VMs.", _mappings),
    Toolset(
        "inventory", "An Ansible inventory (YAML or INI) of the guests, with their IPs.", _inventory
    ),
    Toolset(
        "api",
        "Any PVE API method, checked against PVE's schema; find and describe methods.",
        _api,
    ),
    Toolset(
        "escape",
        "Commands, shells and files on nodes and in guests (policy must name you).",
        _escape,
    ),
)

TOOLSET_NAMES = tuple(toolset.name for toolset in TOOLSETS)


def catalogue(enabled: Iterable[str] | None = None) -> Catalogue:
    """The catalogue with toolsets `enabled` (all when None), nothing loaded yet."""
    return Catalogue(TOOLSETS, enabled)


def all_tools() -> list[AnySpec]:
    """Every tool, in the order tools/list shows them (imports every tool module)."""
    return [spec for toolset in TOOLSETS for spec in toolset.load()]


class _TierMap(Mapping[str, str]):
    """Each tool's tier by name, computed on first use: only a policy file reads it, so a
    start without one imports no tool module for it."""

    def __init__(self) -> None:
        self._tiers: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._tiers is None:
            # A generic API tool's tier is its call's: the loader gets every one it can be.
            self._tiers = {spec.name: ",".join(spec.tiers) for spec in all_tools()}
        return self._tiers

    def __getitem__(self, name: str) -> str:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def tier_map() -> Mapping[str, str]:
    """Each tool's declared tier by name: what the policy loader checks rules against."""
    return _TierMap()
