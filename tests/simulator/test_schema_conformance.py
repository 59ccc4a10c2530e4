"""The simulator against Proxmox VE's published API schema (the 9.2 apidoc).

Three guarantees: the simulator serves only methods PVE has, declares the same parameters
PVE declares, and answers every method, driven over real HTTPS, with requests PVE would
accept and `data` in the shape of PVE's `returns`. Skips when the schema is not present.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from pvemcp.simulator import (
    SimulatorHandle,
    SimulatorOptions,
    serve_simulator,
    simulator_in_thread,
)
from pvemcp.simulator.endpoints import ROUTES, find_route
from pvemcp.simulator.params import Param
from tests.pveschema import ApiSchema, require_schema
from tests.simulator.conftest import FakeClock

VM_BACKUP = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"
CT_BACKUP = "nfs-backup:backup/vzdump-lxc-201-2026_11_30-23_01_40.tar.zst"
"""The seeded monthly archives (`simulator/backups.py` SEEDED)."""

GET_CASES: list[tuple[str, dict[str, str]]] = [
    ("/version", {}),
    ("/cluster/status", {}),
    ("/cluster/resources", {}),
    ("/cluster/resources", {"type": "vm"}),
    ("/cluster/resources", {"type": "storage"}),
    ("/cluster/resources", {"type": "node"}),
    ("/cluster/resources", {"type": "sdn"}),
    ("/cluster/nextid", {}),
    ("/cluster/nextid", {"vmid": "4242"}),
    ("/cluster/tasks", {}),
    ("/nodes", {}),
    ("/nodes/pve1/status", {}),
    ("/nodes/pve3/status", {}),
    ("/nodes/pve1/storage", {}),
    ("/nodes/pve2/storage", {"content": "images,rootdir", "format": "1", "enabled": "1"}),
    ("/nodes/pve3/storage", {"target": "pve1", "storage": "nfs-backup"}),
    ("/nodes/pve1/storage/local-lvm/status", {}),
    ("/nodes/pve2/storage/nfs-backup/status", {}),
    ("/nodes/pve1/storage/local-lvm/content", {}),
    # Storage (simulator/storage.py): the config, snippets, the appliance index.
    ("/storage", {}),
    ("/storage", {"type": "nfs"}),
    ("/storage/nfs-backup", {}),
    ("/nodes/pve2/storage/local/content", {"content": "snippets"}),
    ("/nodes/pve1/aplinfo", {}),
    ("/nodes/pve1/network", {}),
    ("/nodes/pve2/network", {"type": "any_bridge"}),
    ("/nodes/pve3/network", {"type": "eth"}),
    ("/nodes/pve1/network/vmbr0", {}),
    ("/cluster/sdn", {}),
    ("/cluster/sdn/zones", {}),
    ("/cluster/sdn/zones", {"type": "simple", "pending": "1"}),
    ("/cluster/sdn/zones/lab", {"running": "1"}),
    ("/cluster/sdn/vnets", {"pending": "1"}),
    ("/cluster/sdn/vnets/labnet", {}),
    ("/cluster/sdn/vnets/labnet/subnets", {"running": "1"}),
    ("/cluster/sdn/vnets/labnet/subnets/lab-10.20.0.0-24", {"pending": "1"}),
    ("/nodes/pve1/network", {"type": "include_sdn"}),
    ("/nodes/pve1/qemu", {}),
    ("/nodes/pve2/qemu", {"full": "1"}),
    ("/nodes/pve1/lxc", {}),
    ("/nodes/pve1/qemu/100/status/current", {}),
    ("/nodes/pve1/qemu/101/status/current", {}),
    ("/nodes/pve2/qemu/105/status/current", {}),
    ("/nodes/pve1/lxc/200/status/current", {}),
    ("/nodes/pve1/lxc/201/status/current", {}),
    ("/nodes/pve1/qemu/100/config", {}),
    ("/nodes/pve1/qemu/103/config", {"current": "1"}),
    ("/nodes/pve2/qemu/9000/config", {}),
    ("/nodes/pve1/qemu/100/config", {"snapshot": "pre-upgrade"}),
    ("/nodes/pve1/lxc/200/config", {}),
    ("/nodes/pve2/lxc/202/config", {"snapshot": "pre-update"}),
    ("/nodes/pve1/qemu/100/snapshot", {}),
    ("/nodes/pve3/qemu/106/snapshot", {}),
    ("/nodes/pve2/lxc/202/snapshot", {}),
    ("/nodes/pve1/tasks", {}),
    ("/nodes/pve1/tasks", {"vmid": "100"}),
    ("/nodes/pve3/tasks", {"source": "all", "start": "1", "limit": "5", "errors": "0",
                           "userfilter": "root", "typefilter": "aptupdate",
                           "statusfilter": "ok,warning", "since": "0", "until": "4000000000"}),
    ("/nodes/pve1/tasks/{upid}/status", {}),
    ("/nodes/pve1/tasks/{upid}/log", {}),
    ("/nodes/pve1/tasks/{upid}/log", {"start": "10", "limit": "10"}),
    ("/nodes/pve1/lxc/201/config", {"current": "1"}),
    ("/nodes/pve1/qemu/100/pending", {}),
    ("/nodes/pve1/lxc/200/pending", {}),
    ("/nodes/pve1/qemu/100/snapshot/pre-upgrade", {}),
    ("/nodes/pve2/lxc/202/snapshot/pre-update", {}),
    ("/nodes/pve1/qemu/100/snapshot/after-upgrade/config", {}),
    ("/nodes/pve2/lxc/202/snapshot/pre-update/config", {}),
    ("/nodes/pve2/qemu/9000/cloudinit", {}),
    ("/nodes/pve2/qemu/9000/cloudinit/dump", {"type": "user"}),
    ("/nodes/pve2/qemu/9000/cloudinit/dump", {"type": "network"}),
    ("/nodes/pve1/qemu/103/cloudinit/dump", {"type": "meta"}),
    ("/nodes/pve1/qemu/100/agent/get-osinfo", {}),
    ("/nodes/pve1/qemu/100/agent/get-host-name", {}),
    ("/nodes/pve1/qemu/100/agent/network-get-interfaces", {}),
    ("/nodes/pve1/qemu/100/agent/get-fsinfo", {}),
    ("/nodes/pve1/qemu/101/migrate", {}),
    ("/nodes/pve1/qemu/100/migrate", {"target": "pve2"}),
    ("/nodes/pve1/lxc/201/migrate", {"target": "pve3"}),
    # Backups (simulator/backups.py): the seeded monthly archives.
    ("/nodes/pve1/storage/nfs-backup/content", {"content": "backup"}),
    ("/nodes/pve3/storage/nfs-backup/content", {"content": "backup", "vmid": "201"}),
    ("/nodes/pve1/vzdump/extractconfig", {"volume": VM_BACKUP}),
    ("/nodes/pve2/vzdump/extractconfig", {"volume": CT_BACKUP}),
    ("/nodes/pve1/storage/nfs-backup/content/" + quote(VM_BACKUP, safe=""), {}),
    ("/nodes/pve2/storage/local/content/iso%2Fdebian-12.9.0-amd64-netinst.iso", {}),
    # Monitoring (simulator/metrics.py, simulator/logs.py).
    ("/nodes/pve1/rrddata", {"timeframe": "hour"}),
    ("/nodes/pve2/rrddata", {"timeframe": "decade", "cf": "MAX"}),
    ("/nodes/pve1/qemu/100/rrddata", {"timeframe": "day", "cf": "AVERAGE"}),
    ("/nodes/pve1/lxc/201/rrddata", {"timeframe": "week"}),
    ("/nodes/pve1/storage/local-lvm/rrddata", {"timeframe": "month", "cf": "MAX"}),
    ("/nodes/pve1/syslog", {}),
    ("/nodes/pve1/syslog", {"start": "3", "limit": "5", "service": "pvedaemon",
                            "since": "2000-01-01", "until": "2100-01-01 00:00:00"}),
    ("/nodes/pve2/journal", {}),
    ("/nodes/pve2/journal", {"lastentries": "5", "until": "4000000000"}),
    ("/nodes/pve3/journal", {"since": "0", "endcursor": "t=0"}),
    ("/nodes/pve3/journal", {"startcursor": "t=0", "until": "4000000000"}),
    # Firewall (simulator/firewall.py): the seeded cluster, group, web01 and db01 files.
    ("/cluster/firewall", {}),
    ("/cluster/firewall/rules", {}),
    ("/cluster/firewall/rules/0", {}),
    ("/cluster/firewall/groups", {}),
    ("/cluster/firewall/groups/webserver", {}),
    ("/cluster/firewall/groups/webserver/1", {}),
    ("/cluster/firewall/ipset", {}),
    ("/cluster/firewall/ipset/management", {}),
    ("/cluster/firewall/ipset/management/10.10.10.0%2F24", {}),
    ("/cluster/firewall/aliases", {}),
    ("/cluster/firewall/aliases/backup-server", {}),
    ("/cluster/firewall/options", {}),
    ("/cluster/firewall/macros", {}),
    ("/cluster/firewall/refs", {}),
    ("/cluster/firewall/refs", {"type": "ipset"}),
    ("/nodes/pve1/firewall", {}),
    ("/nodes/pve1/firewall/rules", {}),
    ("/nodes/pve1/firewall/options", {}),
    ("/nodes/pve1/firewall/log", {}),
    ("/nodes/pve1/qemu/100/firewall", {}),
    ("/nodes/pve1/qemu/100/firewall/rules", {}),
    ("/nodes/pve1/qemu/100/firewall/rules/1", {}),
    ("/nodes/pve1/qemu/100/firewall/options", {}),
    ("/nodes/pve1/qemu/100/firewall/log", {"start": "2", "limit": "3", "since": "0",
                                          "until": "4000000000"}),
    ("/nodes/pve1/qemu/100/firewall/refs", {}),
    ("/nodes/pve1/qemu/100/firewall/aliases", {}),
    ("/nodes/pve2/qemu/104/firewall/ipset", {}),
    ("/nodes/pve2/qemu/104/firewall/ipset/app-servers", {}),
    ("/nodes/pve2/qemu/104/firewall/ipset/app-servers/10.10.20.100", {}),
    # The node's own system (simulator/nodes.py).
    ("/nodes/pve1/services", {}),
    ("/nodes/pve1/services/sshd", {}),
    ("/nodes/pve2/services/postfix/state", {}),
    ("/nodes/pve1/services/systemd-timesyncd/state", {}),
    ("/nodes/pve1/apt/update", {}),
    ("/nodes/pve1/apt/versions", {}),
    ("/nodes/pve1/apt/changelog", {"name": "pve-manager"}),
    ("/nodes/pve1/apt/changelog", {"name": "qemu-server", "version": "9.1.3"}),
    ("/nodes/pve1/disks/list", {}),
    ("/nodes/pve2/disks/list", {"include-partitions": "0", "skipsmart": "1", "type": "unused"}),
    ("/nodes/pve1/disks/smart", {"disk": "/dev/nvme0n1"}),
    ("/nodes/pve3/disks/smart", {"disk": "/dev/sdb", "healthonly": "0"}),
    ("/nodes/pve1/disks/zfs", {}),
    ("/nodes/pve3/disks/zfs", {}),
    ("/nodes/pve3/disks/zfs/rpool", {}),
    ("/nodes/pve1/disks/lvm", {}),
    ("/nodes/pve2/disks/lvmthin", {}),
    ("/nodes/pve1/certificates/info", {}),
    ("/nodes/pve1/dns", {}),
    ("/nodes/pve1/time", {}),
    ("/nodes/pve1/hosts", {}),
    ("/nodes/pve1/subscription", {}),
    ("/nodes/pve3/subscription", {}),
    ("/cluster/config/join", {}),
    ("/cluster/config/join", {"node": "pve2"}),
    # Pools and access (simulator/access.py).
    ("/pools", {}),
    ("/pools", {"poolid": "prod"}),
    ("/pools", {"poolid": "dev", "type": "lxc"}),
    ("/pools/prod", {}),
    ("/pools/prod", {"type": "storage"}),
    ("/access/users", {}),
    ("/access/users", {"enabled": "1", "full": "1"}),
    ("/access/users/bob@pve", {}),
    ("/access/users/bob@pve/token", {}),
    ("/access/users/bob@pve/token/monitoring", {}),
    ("/access/groups", {}),
    ("/access/groups/ops", {}),
    ("/access/roles", {}),
    ("/access/roles/PVEVMUser", {}),
    ("/access/acl", {}),
    ("/access/domains", {}),
    ("/access/domains/pve", {}),
    ("/access/permissions", {}),
    ("/access/permissions", {"userid": "bob@pve"}),
    ("/access/permissions", {"userid": "bob@pve!monitoring", "path": "/vms/100"}),
    # HA and replication (simulator/ha.py, replication.py): the seeded container 203.
    ("/cluster/ha", {}),
    ("/cluster/ha/resources", {}),
    ("/cluster/ha/resources", {"type": "ct"}),
    ("/cluster/ha/resources/ct:203", {}),
    ("/cluster/ha/resources/203", {}),
    ("/cluster/ha/rules", {}),
    ("/cluster/ha/rules", {"type": "node-affinity", "resource": "ct:203"}),
    ("/cluster/ha/rules/prefer-pve3", {}),
    ("/cluster/ha/status", {}),
    ("/cluster/ha/status/current", {}),
    ("/cluster/ha/status/manager_status", {}),
    ("/cluster/replication", {}),
    ("/cluster/replication/203-0", {}),
    ("/nodes/pve3/replication", {}),
    ("/nodes/pve3/replication", {"guest": "203"}),
    ("/nodes/pve3/replication/203-0", {}),
    ("/nodes/pve3/replication/203-0/status", {}),
    ("/nodes/pve3/replication/203-0/log", {"start": "0", "limit": "5"}),
    # Backup jobs (simulator/jobs.py): the seeded nightly job.
    ("/cluster/backup", {}),
    ("/cluster/backup/backup-nightly", {}),
    ("/cluster/backup/backup-nightly/included_volumes", {}),
    ("/cluster/backup-info", {}),
    ("/cluster/backup-info/not-backed-up", {}),
    # Notifications (simulator/notify.py): the built-in sendmail endpoint and matcher.
    ("/cluster/notifications", {}),
    ("/cluster/notifications/endpoints", {}),
    ("/cluster/notifications/endpoints/sendmail", {}),
    ("/cluster/notifications/endpoints/sendmail/mail-to-root", {}),
    ("/cluster/notifications/targets", {}),
    ("/cluster/notifications/matchers", {}),
    ("/cluster/notifications/matchers/default-matcher", {}),
    # Hardware mappings (simulator/mappings.py): the seeded GPU on pve1.
    ("/cluster/mapping", {}),
    ("/cluster/mapping/pci", {}),
    ("/cluster/mapping/pci", {"check-node": "pve2"}),
    ("/cluster/mapping/pci/gpu", {}),
    ("/cluster/mapping/usb", {}),
    # Ceph (simulator/ceph.py; this module's simulators have it).
    ("/cluster/ceph/status", {}),
    ("/cluster/ceph/flags", {}),
    ("/nodes/pve1/ceph/status", {}),
    ("/nodes/pve1/ceph/mon", {}),
    ("/nodes/pve2/ceph/mgr", {}),
    ("/nodes/pve1/ceph/mds", {}),
    ("/nodes/pve1/ceph/fs", {}),
    ("/nodes/pve3/ceph/osd", {}),
    ("/nodes/pve1/ceph/pool", {}),
    ("/nodes/pve1/ceph/pool/rbd", {}),
    ("/nodes/pve1/ceph/pool/rbd/status", {}),
]  # fmt: skip


def _guest_firewall_cases(base: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every firewall method of one guest, in an order that passes on a fresh simulator: an
    alias, an IP set holding it, a rule using the set, options, then all removed."""
    return [
        ("POST", f"{base}/aliases", {"name": "resolver", "cidr": "10.10.10.53"}),
        ("GET", f"{base}/aliases/resolver", {}),
        ("PUT", f"{base}/aliases/resolver", {"cidr": "10.10.10.54", "comment": "c"}),
        ("POST", f"{base}/ipset", {"name": "clients", "comment": "c"}),
        ("POST", f"{base}/ipset/clients", {"cidr": "resolver"}),
        ("POST", f"{base}/ipset/clients", {"cidr": "10.10.30.0/24", "nomatch": "1"}),
        ("GET", f"{base}/ipset/clients/resolver", {}),
        ("PUT", f"{base}/ipset/clients/resolver", {"comment": "r", "digest": "{digest}"}),
        ("POST", f"{base}/rules",
         {"type": "in", "action": "ACCEPT", "macro": "DNS", "source": "+clients",
          "iface": "net0", "enable": "1"}),
        ("GET", f"{base}/rules/0", {}),
        ("PUT", f"{base}/rules/0", {"comment": "dns", "digest": "{digest}"}),
        ("GET", f"{base}/refs", {"type": "alias"}),
        ("PUT", f"{base}/options",
         {"enable": "1", "dhcp": "1", "ipfilter": "0", "macfilter": "1", "ndp": "1",
          "radv": "0", "policy_in": "DROP", "policy_out": "ACCEPT", "log_level_in": "info",
          "log_level_out": "nolog", "digest": "{digest}"}),
        ("GET", f"{base}/log", {"limit": "5"}),
        ("GET", f"{base}/options", {}),
        ("GET", f"{base}/aliases", {}),
        ("GET", f"{base}/ipset", {}),
        ("GET", f"{base}/ipset/clients", {}),
        ("GET", f"{base}/rules", {}),
        ("GET", base, {}),
        ("DELETE", f"{base}/rules/0", {"digest": "{digest}"}),
        ("DELETE", f"{base}/ipset/clients/resolver", {}),
        ("DELETE", f"{base}/ipset/clients", {"force": "1"}),
        ("DELETE", f"{base}/aliases/resolver", {}),
    ]  # fmt: skip


CHANGE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    # In this order on a fresh simulator, every call passes PVE's pre-fork checks.
    # "{pid}" is the pid the agent answered last, "{upid}" the first task's UPID.
    ("POST", "/nodes/pve1/qemu/100/agent/exec", {"command": ["echo", "-n", "hi"]}),
    ("GET", "/nodes/pve1/qemu/100/agent/exec-status", {"pid": "{pid}"}),
    ("POST", "/nodes/pve1/qemu/100/agent/exec", {"command": "cat", "input-data": "x"}),
    ("GET", "/nodes/pve1/qemu/100/agent/exec-status", {"pid": "{pid}"}),
    ("POST", "/nodes/pve1/qemu/100/agent/ping", {}),
    ("PUT", "/nodes/pve2/qemu/9000/config", {"ciuser": "ops", "ipconfig0": "ip=dhcp"}),
    ("GET", "/nodes/pve2/qemu/9000/cloudinit", {}),
    ("PUT", "/nodes/pve2/qemu/9000/cloudinit", {}),
    ("POST", "/nodes/pve1/qemu/101/status/start", {"timeout": "30"}),
    ("POST", "/nodes/pve1/qemu/101/status/stop", {"overrule-shutdown": "1", "timeout": "5"}),
    ("POST", "/nodes/pve1/qemu/100/status/shutdown", {"forceStop": "1", "timeout": "60"}),
    ("POST", "/nodes/pve1/qemu/102/status/reboot", {"timeout": "30"}),
    ("POST", "/nodes/pve1/qemu/102/status/suspend", {"todisk": "0"}),
    ("POST", "/nodes/pve1/qemu/102/status/resume", {}),
    ("POST", "/nodes/pve1/lxc/201/status/start", {"debug": "0"}),
    ("POST", "/nodes/pve1/lxc/201/status/stop", {"overrule-shutdown": "0"}),
    ("POST", "/nodes/pve1/lxc/200/status/shutdown", {"timeout": "30", "forceStop": "1"}),
    ("POST", "/nodes/pve2/lxc/202/status/reboot", {"timeout": "20"}),
    ("POST", "/nodes/pve3/lxc/203/status/suspend", {}),
    ("POST", "/nodes/pve3/lxc/203/status/resume", {}),
    ("DELETE", "/nodes/pve1/tasks/{upid}", {}),
    # "{digest}" is the digest of the config at that path just before the call.
    ("PUT", "/nodes/pve1/qemu/102/config",
     {"memory": "1024", "cores": "2", "net1": "virtio,bridge=vmbr0", "delete": "onboot",
      "digest": "{digest}"}),
    ("GET", "/nodes/pve1/qemu/102/pending", {}),
    ("PUT", "/nodes/pve1/qemu/102/config", {"revert": "memory", "skiplock": "0"}),
    ("POST", "/nodes/pve1/qemu/102/config", {"description": "web", "background_delay": "5"}),
    ("POST", "/nodes/pve1/qemu/102/config", {"delete": "net1", "force": "1"}),
    ("PUT", "/nodes/pve1/lxc/201/config",
     {"memory": "1024", "delete": "features", "digest": "{digest}"}),
    # Volumes: a new disk, resize, move, detach to unused, unlink (simulator/volumes.py).
    ("PUT", "/nodes/pve3/qemu/107/config", {"scsi1": "local-lvm:2,discard=on"}),
    ("PUT", "/nodes/pve3/qemu/107/resize", {"disk": "scsi1", "size": "+1G", "skiplock": "0"}),
    ("POST", "/nodes/pve3/qemu/107/move_disk", {"disk": "scsi1", "storage": "local",
                                                "delete": "0", "bwlimit": "0"}),
    ("PUT", "/nodes/pve3/qemu/107/unlink", {"idlist": "unused0,scsi1", "force": "1"}),
    ("PUT", "/nodes/pve3/lxc/204/resize", {"disk": "rootfs", "size": "9G"}),
    ("POST", "/nodes/pve3/lxc/204/move_volume", {"volume": "rootfs", "storage": "local",
                                                 "delete": "1", "bwlimit": "0"}),
    ("GET", "/nodes/pve3/storage/local/status", {}),
    ("GET", "/nodes/pve3/storage/local/content", {"vmid": "204", "content": "rootdir"}),
    ("POST", "/nodes/pve1/qemu/102/snapshot",
     {"snapname": "conf1", "vmstate": "1", "description": "before"}),
    ("PUT", "/nodes/pve1/qemu/102/snapshot/conf1/config", {"description": "checked"}),
    ("GET", "/nodes/pve1/qemu/102/snapshot", {}),
    ("GET", "/nodes/pve1/qemu/102/snapshot/conf1/config", {}),
    ("GET", "/nodes/pve1/qemu/102/config", {"snapshot": "conf1"}),
    ("GET", "/nodes/pve1/qemu/102/config", {}),
    ("POST", "/nodes/pve1/qemu/102/snapshot/conf1/rollback", {"start": "1"}),
    ("DELETE", "/nodes/pve1/qemu/102/snapshot/conf1", {"force": "1"}),
    ("POST", "/nodes/pve1/lxc/201/snapshot", {"snapname": "conf2", "description": "d"}),
    ("PUT", "/nodes/pve1/lxc/201/snapshot/conf2/config", {"description": "e"}),
    ("POST", "/nodes/pve1/lxc/201/snapshot/conf2/rollback", {"start": "0"}),
    ("DELETE", "/nodes/pve1/lxc/201/snapshot/conf2", {}),
    ("POST", "/nodes/pve1/qemu/101/migrate",
     {"target": "pve2", "online": "0", "with-local-disks": "1", "targetstorage": "local-lvm",
      "bwlimit": "0", "with-conntrack-state": "0"}),
    ("POST", "/nodes/pve1/lxc/200/migrate",
     {"target": "pve2", "restart": "1", "timeout": "60", "target-storage": "local-lvm",
      "bwlimit": "1024"}),
    ("POST", "/nodes/pve1/qemu/103/template", {"disk": "scsi0"}),
    ("POST", "/nodes/pve3/lxc/204/template", {}),
    # Clones (simulator/clone.py): linked from a template, full of a running VM and a CT.
    ("POST", "/nodes/pve2/qemu/9000/clone",
     {"newid": "170", "name": "linked", "description": "d", "pool": "dev", "full": "0",
      "bwlimit": "0"}),
    ("POST", "/nodes/pve1/qemu/102/clone",
     {"newid": "171", "storage": "local", "format": "qcow2", "target": "pve1"}),
    ("POST", "/nodes/pve1/lxc/201/clone",
     {"newid": "270", "hostname": "ct-copy", "full": "1", "storage": "local-lvm",
      "bwlimit": "1024"}),
    # Create and destroy (simulator/create.py).
    ("POST", "/nodes/pve1/qemu",
     {"vmid": "160", "name": "new", "scsi0": "local-lvm:1", "net0": "virtio,bridge=vmbr0",
      "ide2": "local:iso/debian-12.9.0-amd64-netinst.iso,media=cdrom", "start": "0",
      "pool": "dev"}),
    ("POST", "/nodes/pve1/lxc",
     {"vmid": "260", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
      "rootfs": "local-lvm:1", "password": "secret1", "unprivileged": "1"}),
    ("GET", "/nodes/pve1/storage/local/content", {"content": "iso"}),
    ("DELETE", "/nodes/pve1/qemu/160", {"purge": "1", "destroy-unreferenced-disks": "1"}),
    ("DELETE", "/nodes/pve1/lxc/260", {"purge": "1", "force": "0"}),
    # Backups and restores (simulator/backups.py).
    ("POST", "/nodes/pve1/vzdump",
     {"vmid": "102", "storage": "nfs-backup", "mode": "stop", "compress": "gzip",
      "notes-template": "{{guestname}} on {{cluster}}", "protected": "1", "remove": "0",
      "ionice": "7", "lockwait": "1", "stdexcludes": "1", "bwlimit": "0", "stopwait": "10",
      "quiet": "0", "mailnotification": "failure", "notification-mode": "auto"}),
    ("POST", "/nodes/pve2/vzdump", {"vmid": "100,102", "compress": "zstd", "zstd": "1"}),
    ("GET", "/nodes/pve1/storage/nfs-backup/content", {"content": "backup", "vmid": "102"}),
    ("POST", "/nodes/pve1/qemu",
     {"vmid": "161", "archive": VM_BACKUP, "storage": "local-lvm", "unique": "1", "start": "1",
      "pool": "dev", "bwlimit": "0", "live-restore": "0"}),
    ("POST", "/nodes/pve1/qemu", {"vmid": "102", "archive": VM_BACKUP, "force": "1"}),
    ("POST", "/nodes/pve1/lxc",
     {"vmid": "261", "ostemplate": CT_BACKUP, "restore": "1", "storage": "local-lvm",
      "unique": "1", "unprivileged": "1", "ignore-unpack-errors": "1"}),
    # Firewall (simulator/firewall.py): an IP set, a rule using it moved and changed, a
    # group renamed, aliases, options; then the same on a VM's and a container's files.
    ("POST", "/cluster/firewall/ipset", {"name": "web-clients", "comment": "c"}),
    ("POST", "/cluster/firewall/ipset/web-clients",
     {"cidr": "192.0.2.0/24", "nomatch": "0", "comment": "x"}),
    ("PUT", "/cluster/firewall/ipset/web-clients/192.0.2.0%2F24",
     {"nomatch": "1", "comment": "y", "digest": "{digest}"}),
    ("POST", "/cluster/firewall/ipset", {"name": "clients", "rename": "web-clients"}),
    ("POST", "/cluster/firewall/rules",
     {"type": "in", "action": "ACCEPT", "source": "+clients", "dest": "10.10.10.0/24",
      "proto": "tcp", "dport": "443", "sport": "1024:65535", "iface": "vmbr0", "pos": "0",
      "enable": "1", "log": "nolog", "comment": "web", "digest": "0" * 40}),
    ("PUT", "/cluster/firewall/rules/0", {"moveto": "2", "digest": "{digest}"}),
    ("PUT", "/cluster/firewall/rules/0",
     {"comment": "w", "delete": "log", "icmp-type": "", "macro": "", "type": "in",
      "action": "DROP", "digest": "{digest}"}),
    ("DELETE", "/cluster/firewall/rules/0", {"digest": "{digest}"}),
    ("DELETE", "/cluster/firewall/ipset/clients/192.0.2.0%2F24", {"digest": "{digest}"}),
    ("DELETE", "/cluster/firewall/ipset/clients", {"force": "1"}),
    ("POST", "/cluster/firewall/aliases", {"name": "gw", "cidr": "10.10.10.1", "comment": "g"}),
    ("PUT", "/cluster/firewall/aliases/gw", {"cidr": "10.10.10.254", "rename": "gateway"}),
    ("DELETE", "/cluster/firewall/aliases/gateway", {}),
    ("POST", "/cluster/firewall/groups", {"group": "db", "comment": "d"}),
    ("POST", "/cluster/firewall/groups/db",
     {"type": "in", "action": "ACCEPT", "macro": "PostgreSQL", "enable": "1"}),
    ("GET", "/cluster/firewall/groups/db/0", {}),
    ("PUT", "/cluster/firewall/groups/db/0", {"enable": "0", "digest": "{digest}"}),
    ("DELETE", "/cluster/firewall/groups/db/0", {}),
    ("POST", "/cluster/firewall/groups", {"group": "database", "rename": "db"}),
    ("DELETE", "/cluster/firewall/groups/database", {}),
    ("PUT", "/cluster/firewall/options",
     {"enable": "1", "policy_in": "DROP", "policy_out": "ACCEPT", "policy_forward": "ACCEPT",
      "ebtables": "1", "log_ratelimit": "enable=1,rate=1/second,burst=5",
      "digest": "{digest}"}),
    ("PUT", "/cluster/firewall/options", {"delete": "ebtables"}),
    ("POST", "/nodes/pve1/firewall/rules",
     {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "8006", "iface": "vmbr0"}),
    ("GET", "/nodes/pve1/firewall/rules/0", {}),
    ("PUT", "/nodes/pve1/firewall/rules/0", {"log": "info", "digest": "{digest}"}),
    ("DELETE", "/nodes/pve1/firewall/rules/0", {}),
    ("PUT", "/nodes/pve1/firewall/options",
     {"enable": "1", "log_level_in": "info", "nosmurfs": "1", "tcpflags": "1",
      "nf_conntrack_max": "262144", "digest": "{digest}"}),
    ("GET", "/nodes/pve1/firewall/log",
     {"start": "0", "limit": "10", "since": "0", "until": "4000000000"}),
    *[case for kind, vmid in (("qemu", "102"), ("lxc", "200"))
      for case in _guest_firewall_cases(f"/nodes/pve1/{kind}/{vmid}/firewall")],
    # Node interfaces (simulator/network.py): the seeded pending change reverted, new
    # pending changes, another revert, then an apply.
    ("DELETE", "/nodes/pve3/network", {}),
    ("POST", "/nodes/pve3/network",
     {"iface": "bond0", "type": "bond", "slaves": "eno2", "bond_mode": "active-backup",
      "bond-primary": "eno2", "mtu": "9000", "autostart": "1", "comments": "c"}),
    ("POST", "/nodes/pve3/network",
     {"iface": "vmbr2", "type": "bridge", "bridge_ports": "bond0", "bridge_vlan_aware": "1",
      "bridge_vids": "10-20", "cidr": "192.0.2.2/24", "cidr6": "2001:db8::2/64"}),
    ("POST", "/nodes/pve3/network",
     {"iface": "vlan30", "type": "vlan", "vlan-raw-device": "vmbr2", "address": "198.51.100.2",
      "netmask": "255.255.255.0"}),
    ("GET", "/nodes/pve3/network", {}),
    ("PUT", "/nodes/pve3/network/vmbr2",
     {"type": "bridge", "delete": "cidr6", "mtu": "9000", "comments": "lab"}),
    ("GET", "/nodes/pve3/network/vmbr2", {}),
    ("DELETE", "/nodes/pve3/network/vlan30", {}),
    ("DELETE", "/nodes/pve3/network", {}),
    ("POST", "/nodes/pve3/network", {"iface": "vmbr3", "type": "bridge"}),
    ("PUT", "/nodes/pve3/network", {"regenerate-frr": "0"}),
    # The node's own system (simulator/nodes.py): services, an APT refresh.
    ("POST", "/nodes/pve2/services/chrony/stop", {}),
    ("POST", "/nodes/pve2/services/chrony/start", {}),
    ("POST", "/nodes/pve2/services/cron/restart", {}),
    ("POST", "/nodes/pve2/services/pveproxy/reload", {}),
    ("POST", "/nodes/pve2/apt/update", {"notify": "0", "quiet": "1"}),
    ("GET", "/nodes/pve2/apt/update", {}),
    # SDN (simulator/sdn.py): a VLAN zone, a VNet and subnet, changes seen pending, an
    # apply, then every removal applied.
    ("POST", "/cluster/sdn/zones",
     {"zone": "dc", "type": "vlan", "bridge": "vmbr1", "mtu": "1500", "nodes": "pve1,pve2",
      "ipam": "pve"}),
    ("PUT", "/cluster/sdn/zones/dc", {"mtu": "1400", "delete": "nodes", "digest": "{digest}"}),
    ("POST", "/cluster/sdn/vnets",
     {"vnet": "v10", "zone": "dc", "tag": "10", "alias": "ten", "isolate-ports": "0",
      "type": "vnet"}),
    ("PUT", "/cluster/sdn/vnets/v10", {"alias": "vlan ten", "digest": "{digest}"}),
    ("POST", "/cluster/sdn/vnets/v10/subnets",
     {"subnet": "10.60.0.0/24", "type": "subnet", "gateway": "10.60.0.1", "snat": "1",
      "dnszoneprefix": "v10"}),
    ("PUT", "/cluster/sdn/vnets/v10/subnets/dc-10.60.0.0-24",
     {"gateway": "10.60.0.254", "delete": "dnszoneprefix", "digest": "{digest}"}),
    ("GET", "/cluster/sdn/vnets", {"pending": "1"}),
    ("GET", "/cluster/sdn/zones", {"pending": "1"}),
    ("GET", "/cluster/sdn/vnets/v10/subnets", {"pending": "1"}),
    ("PUT", "/cluster/sdn", {}),
    ("GET", "/nodes/pve1/network", {"type": "any_bridge"}),
    ("DELETE", "/cluster/sdn/vnets/v10/subnets/dc-10.60.0.0-24", {}),
    ("DELETE", "/cluster/sdn/vnets/v10", {}),
    ("DELETE", "/cluster/sdn/zones/dc", {}),
    ("GET", "/cluster/sdn/vnets", {"pending": "1"}),
    ("PUT", "/cluster/sdn", {"release-lock": "1"}),
    # Pools and access (simulator/access.py): the access scenario, then every removal.
    ("POST", "/access/groups", {"groupid": "qa", "comment": "testers"}),
    ("PUT", "/access/groups/qa", {"comment": "quality"}),
    ("POST", "/access/users",
     {"userid": "erin@pve", "groups": "qa", "firstname": "Erin", "email": "erin@example.com",
      "enable": "1", "expire": "0", "comment": "c", "lastname": "E"}),
    ("PUT", "/access/users/erin@pve", {"groups": "ops", "append": "1", "comment": "d"}),
    ("PUT", "/access/password", {"userid": "erin@pve", "password": "erin-pw-1"}),
    ("POST", "/access/ticket", {"username": "erin", "realm": "pve", "password": "erin-pw-1"}),
    ("POST", "/access/roles", {"roleid": "QaRole", "privs": "VM.Audit,VM.PowerMgmt"}),
    ("PUT", "/access/roles/QaRole", {"privs": "VM.Console", "append": "1"}),
    ("POST", "/pools", {"poolid": "qa", "comment": "test pool"}),
    ("PUT", "/pools", {"poolid": "qa", "vms": "102", "storage": "local"}),
    ("PUT", "/pools/qa", {"vms": "107", "comment": "moved", "allow-move": "1"}),
    ("PUT", "/access/acl",
     {"path": "/pool/qa", "roles": "PVEVMUser", "groups": "qa", "propagate": "1"}),
    ("POST", "/access/users/erin@pve/token/ci",
     {"privsep": "1", "expire": "0", "comment": "ci token"}),
    ("PUT", "/access/acl", {"path": "/vms/102", "roles": "PVEAuditor",
                            "tokens": "erin@pve!ci", "users": "erin@pve"}),
    ("GET", "/access/permissions", {"userid": "erin@pve!ci", "path": "/vms/102"}),
    ("PUT", "/access/acl", {"path": "/pool/qa", "roles": "PVEVMUser", "groups": "qa",
                            "delete": "1"}),
    ("DELETE", "/access/users/erin@pve/token/ci", {}),
    ("PUT", "/pools", {"poolid": "qa", "vms": "102,107", "storage": "local", "delete": "1"}),
    ("DELETE", "/pools", {"poolid": "qa"}),
    ("POST", "/pools", {"poolid": "qa2"}),
    ("DELETE", "/pools/qa2", {}),
    ("DELETE", "/access/users/erin@pve", {}),
    ("DELETE", "/access/groups/qa", {}),
    ("DELETE", "/access/roles/QaRole", {}),
    # Storage (simulator/storage.py): a backup unprotected and removed, a download (port 9
    # on loopback refuses: the task fails, the call answers its UPID), a template fetched.
    ("PUT", f"/nodes/pve1/storage/nfs-backup/content/{quote(VM_BACKUP, safe='')}",
     {"notes": "monthly", "protected": "0"}),
    ("DELETE", f"/nodes/pve1/storage/nfs-backup/content/{quote(VM_BACKUP, safe='')}",
     {"delay": "5"}),
    ("POST", "/nodes/pve1/storage/local/download-url",
     {"url": "http://127.0.0.1:9/x.iso", "content": "iso", "filename": "x.iso",
      "checksum": "0" * 64, "checksum-algorithm": "sha256", "verify-certificates": "0"}),
    ("POST", "/nodes/pve1/aplinfo",
     {"storage": "local", "template": "alpine-3.22-default_20250617_amd64.tar.xz"}),
    # HA (simulator/ha.py): a VM put under HA, rules on it, relocated, migrated, removed.
    ("POST", "/cluster/ha/resources",
     {"sid": "vm:102", "type": "vm", "state": "started", "comment": "c", "max_restart": "2",
      "max_relocate": "1", "failback": "1", "auto-rebalance": "1"}),
    ("PUT", "/cluster/ha/resources/vm:102",
     {"comment": "d", "delete": "max_restart", "state": "started", "max_relocate": "2",
      "failback": "0", "auto-rebalance": "0", "digest": "{digest}"}),
    ("POST", "/cluster/ha/rules",
     {"rule": "apart", "type": "resource-affinity", "resources": "vm:102,ct:203",
      "affinity": "negative", "comment": "c", "disable": "0"}),
    ("PUT", "/cluster/ha/rules/apart",
     {"type": "resource-affinity", "affinity": "positive", "delete": "comment",
      "resources": "vm:102,ct:203", "disable": "0", "digest": "{digest}"}),
    ("POST", "/cluster/ha/rules",
     {"rule": "pin", "type": "node-affinity", "resources": "vm:102", "nodes": "pve1:2,pve2",
      "strict": "1"}),
    ("PUT", "/cluster/ha/rules/pin",
     {"type": "node-affinity", "nodes": "pve1", "strict": "0", "comment": "one node"}),
    ("POST", "/cluster/ha/resources/vm:102/relocate", {"node": "pve2"}),
    ("POST", "/cluster/ha/resources/ct:203/migrate", {"node": "pve2"}),
    ("DELETE", "/cluster/ha/rules/pin", {}),
    ("DELETE", "/cluster/ha/resources/vm:102", {"purge": "1"}),
    # Replication (simulator/replication.py): container 203, now on pve2, replicated back
    # to pve3 by a new job, run now, removed.
    ("DELETE", "/cluster/replication/203-0", {"force": "1"}),
    ("POST", "/cluster/replication",
     {"id": "203-1", "type": "local", "target": "pve3", "schedule": "*/30", "rate": "10",
      "comment": "c", "disable": "0", "source": "pve2"}),
    ("PUT", "/cluster/replication/203-1",
     {"comment": "d", "delete": "rate", "schedule": "*/15", "disable": "0", "source": "pve2",
      "digest": "{digest}"}),
    ("POST", "/nodes/pve2/replication/203-1/schedule_now", {}),
    ("GET", "/nodes/pve2/replication/203-1/log", {}),
    ("DELETE", "/cluster/replication/203-1", {"keep": "1"}),
    # Backup jobs (simulator/jobs.py): a job made, changed and removed.
    ("POST", "/cluster/backup",
     {"id": "weekly", "schedule": "sat 02:30", "pool": "prod", "storage": "local",
      "mode": "snapshot", "compress": "zstd", "enabled": "1", "comment": "c",
      "notes-template": "{{guestname}}", "protected": "0", "repeat-missed": "1"}),
    ("PUT", "/cluster/backup/weekly",
     {"vmid": "100,101", "delete": "comment", "schedule": "mon..fri 22:00", "enabled": "0"}),
    ("GET", "/cluster/backup/weekly/included_volumes", {}),
    ("DELETE", "/cluster/backup/weekly", {}),
    # Notifications (simulator/notify.py): an endpoint of each type, a matcher, a test.
    ("POST", "/cluster/notifications/endpoints/sendmail",
     {"name": "ops-mail", "mailto": ["ops@example.com"], "mailto-user": ["root@pam"],
      "from-address": "pve@example.com", "author": "PVE", "comment": "c", "disable": "0"}),
    ("PUT", "/cluster/notifications/endpoints/sendmail/ops-mail",
     {"delete": ["author"], "comment": "d", "digest": "{digest}"}),
    ("POST", "/cluster/notifications/endpoints/gotify",
     {"name": "phone", "server": "https://gotify.example", "token": "t", "comment": "c"}),
    ("PUT", "/cluster/notifications/endpoints/gotify/phone", {"token": "u", "disable": "1"}),
    ("GET", "/cluster/notifications/endpoints/gotify", {}),
    ("GET", "/cluster/notifications/endpoints/gotify/phone", {}),
    ("POST", "/cluster/notifications/endpoints/smtp",
     {"name": "relay", "server": "mail.example", "from-address": "pve@example.com",
      "mode": "starttls", "port": "587", "username": "pve", "password": "p",
      "mailto": ["ops@example.com"]}),
    ("PUT", "/cluster/notifications/endpoints/smtp/relay", {"port": "2525"}),
    ("GET", "/cluster/notifications/endpoints/smtp", {}),
    ("GET", "/cluster/notifications/endpoints/smtp/relay", {}),
    ("POST", "/cluster/notifications/endpoints/webhook",
     {"name": "chat", "method": "post", "url": "https://chat.example/hook",
      "header": ["name=Content-Type,value=YXBwbGljYXRpb24vanNvbg=="],
      "secret": ["name=key,value=czNjcjN0"], "body": "e30="}),
    ("PUT", "/cluster/notifications/endpoints/webhook/chat", {"secret": ["name=key"]}),
    ("GET", "/cluster/notifications/endpoints/webhook", {}),
    ("GET", "/cluster/notifications/endpoints/webhook/chat", {}),
    ("POST", "/cluster/notifications/matchers",
     {"name": "backups", "target": ["ops-mail", "chat"], "mode": "any",
      "match-severity": ["error", "warning"], "match-field": ["exact:type=vzdump"],
      "invert-match": "0", "comment": "c"}),
    ("PUT", "/cluster/notifications/matchers/backups",
     {"delete": ["comment"], "target": ["ops-mail"], "digest": "{digest}"}),
    ("POST", "/cluster/notifications/targets/ops-mail/test", {}),
    ("DELETE", "/cluster/notifications/matchers/backups", {}),
    ("DELETE", "/cluster/notifications/endpoints/sendmail/ops-mail", {}),
    ("DELETE", "/cluster/notifications/endpoints/gotify/phone", {}),
    ("DELETE", "/cluster/notifications/endpoints/smtp/relay", {}),
    ("DELETE", "/cluster/notifications/endpoints/webhook/chat", {}),
    # Hardware mappings (simulator/mappings.py): a USB mapping made, changed, deleted.
    ("POST", "/cluster/mapping/usb",
     {"id": "dongle", "map": ["node=pve1,id=046d:c52b,path=1-1.2"], "description": "d"}),
    ("PUT", "/cluster/mapping/usb/dongle",
     {"map": ["node=pve1,id=046d:c52b"], "description": "e", "digest": "{digest}"}),
    ("GET", "/cluster/mapping/usb", {"check-node": "pve1"}),
    ("GET", "/cluster/mapping/usb/dongle", {}),
    ("DELETE", "/cluster/mapping/usb/dongle", {}),
    ("POST", "/cluster/mapping/pci",
     {"id": "nic", "map": ["node=pve2,path=0000:03:00.1,id=8086:1521,iommugroup=20"],
      "mdev": "0", "live-migration-capable": "0"}),
    ("PUT", "/cluster/mapping/pci/nic",
     {"map": ["node=pve2,path=0000:03:00.1,id=8086:1521"], "description": "x",
      "mdev": "0", "live-migration-capable": "1"}),
    ("DELETE", "/cluster/mapping/pci/nic", {}),
    # Keep last: the node goes down (simulator/nodes.py), and calls to it fail until back.
    # Ceph (simulator/ceph.py): an OSD out and in, a pool created with its storage, deleted.
    ("POST", "/nodes/pve3/ceph/osd/4/out", {}),
    ("POST", "/nodes/pve3/ceph/osd/4/in", {}),
    ("POST", "/nodes/pve1/ceph/pool",
     {"name": "bench", "size": "3", "min_size": "2", "pg_num": "32", "application": "rbd",
      "pg_autoscale_mode": "on", "add_storages": "1"}),
    ("PUT", "/nodes/pve1/ceph/pool/bench",
     {"size": "2", "min_size": "1", "pg_num": "64", "pg_num_min": "32", "application": "rbd",
      "pg_autoscale_mode": "warn", "crush_rule": "replicated_rule", "target_size": "10G",
      "target_size_ratio": "0.5"}),
    ("DELETE", "/nodes/pve1/ceph/pool/bench", {"remove_storages": "1", "force": "0"}),
    ("POST", "/nodes/pve3/status", {"command": "reboot"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorHandle]:
    """conftest's, with Ceph, so the Ceph routes answer (they fail without it)."""
    with simulator_in_thread(SimulatorOptions(time_scale=0.0, clock=FakeClock(), ceph=True)) as sim:
        yield sim


@pytest.fixture
async def fresh_sim(anyio_backend: str) -> AsyncIterator[SimulatorHandle]:
    """conftest's, with Ceph."""
    async with serve_simulator(SimulatorOptions(time_scale=0.0, ceph=True)) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def schema() -> ApiSchema:
    """PVE 9.2's schema, or a skip saying where it was looked for."""
    return require_schema()


def _seeded_upid(simulator: SimulatorHandle) -> str:
    """A finished backup task of pve1's seeded history."""
    return next(t.upid for t in simulator.state.tasks if t.node == "pve1" and t.type == "vzdump")


def test_every_route_is_in_the_schema(schema: ApiSchema) -> None:
    invented = [f"{route.method} {route.path}" for route in ROUTES if not schema.has(
        route.method, route.path)]  # fmt: skip
    assert invented == []


def _number(value: Any) -> Any:
    """A bound as the simulator declares it: PVE writes some as strings (`minimum => '0'`)."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _spec_problems(name: str, spec: Param, declared: Mapping[str, Any]) -> list[str]:
    fmt = declared.get("format")
    expected = {
        "type": declared.get("type"),
        "optional": bool(declared.get("optional")),
        "minimum": _number(declared.get("minimum")),
        "maximum": _number(declared.get("maximum")),
        # download-url's `compression` has `enum: null` in the dump (a Perl list PVE
        # builds at run time): no enum, as the simulator declares it
        "enum": tuple(declared["enum"]) if declared.get("enum") is not None else None,
        "pattern": declared.get("pattern"),
        "format": fmt if isinstance(fmt, str) else None,
        "max_length": declared.get("maxLength"),
    }
    actual = {key: getattr(spec, key) for key in expected}
    return [
        f"{name}.{key}: simulator {actual[key]!r}, schema {expected[key]!r}"
        for key in expected
        if actual[key] != expected[key]
    ]


def test_route_parameters_match_the_schema(schema: ApiSchema) -> None:
    problems = []
    for route in ROUTES:
        where = f"{route.method} {route.path}"
        endpoint = schema.endpoint(route.method, route.path)
        assert endpoint is not None, where
        declared: Mapping[str, Any] = endpoint.parameters.get("properties") or {}
        if set(route.params) != set(declared):
            problems.append(f"{where}: {sorted(route.params)} != {sorted(declared)}")
            continue
        for name, spec in route.params.items():
            problems += [f"{where} {p}" for p in _spec_problems(name, spec, declared[name])]
    assert problems == []


def test_the_cases_drive_every_route() -> None:
    driven = set()
    for method, path in [("GET", path) for path, _ in GET_CASES] + [
        (method, path) for method, path, _ in CHANGE_CASES
    ]:
        found = find_route(method, [part for part in path.split("/") if part])
        assert found is not None, path
        driven.add((found[0].method, found[0].path))
    assert driven == {(route.method, route.path) for route in ROUTES}


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "params"), GET_CASES)
async def test_get_conforms(
    schema: ApiSchema,
    shared_sim: SimulatorHandle,
    client: httpx2.AsyncClient,
    path: str,
    params: dict[str, str],
) -> None:
    path = path.replace("{upid}", _seeded_upid(shared_sim))
    assert schema.check_request("GET", path, params) == []
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert schema.check_response("GET", path, response.json()["data"]) == []


@pytest.mark.anyio
async def test_changes_conform(schema: ApiSchema, fresh_client: httpx2.AsyncClient) -> None:
    first_upid, pid = "", ""
    for method, template, template_params in CHANGE_CASES:
        path = template.replace("{upid}", first_upid)
        params = {k: pid if v == "{pid}" else v for k, v in template_params.items()}
        if params.get("digest") == "{digest}":
            params["digest"] = (await fresh_client.get(path)).json()["data"]["digest"]
        assert schema.check_request(method, path, params) == [], path
        if method in ("GET", "DELETE"):  # no body on these, as pve-http-server insists
            response = await fresh_client.request(method, path, params=params)
        else:
            response = await fresh_client.request(method, path, data=params or None)
        assert response.status_code == 200, f"{method} {path}: {response.text}"
        data = response.json()["data"]
        assert schema.check_response(method, path, data) == [], path
        if isinstance(data, dict) and "pid" in data:
            pid = str(data["pid"])
        elif isinstance(data, str):
            first_upid = first_upid or data


def test_the_checker_finds_problems(schema: ApiSchema) -> None:
    """Guards against a vacuous checker: known-bad requests and answers are reported."""
    assert schema.check_request("GET", "/nodes/pve1/qemu/abc/status/current", {})
    assert schema.check_request("GET", "/nodes/pve1/qemu", {"full": "true"})
    assert schema.check_request("GET", "/cluster/resources", {"type": "vms"})
    assert schema.check_request("GET", "/nodes/pve1/qemu", {"bogus": "1"})
    assert schema.check_request("POST", "/nodes/pve1/qemu/100/status/start", {"timeout": -1})
    assert schema.check_request("GET", "/nodes/pve1/lxc/200/exec", {})
    assert schema.check_request("GET", "/nodes/pve1/qemu/100/config", {"net0": "x"})
    assert schema.check_response("GET", "/version", {"version": "9.2.0"})
    assert schema.check_response("GET", "/nodes/pve1/qemu", [{"vmid": 100, "status": "up"}])
    assert schema.check_response("GET", "/nodes/pve1/tasks/x/log", [{"n": "1", "t": "x"}])
    assert schema.check_response("GET", "/version", None)
    assert not schema.check_response(
        "GET", "/nodes/pve1/qemu/100/config", {"digest": "0" * 40, "net0": "virtio", "cores": 2}
    )
