"""The configuration keys of VMs and containers, from the index of PVE's API.

The keys, their types, ranges, enums, formats and property-string keys are those of PUT
`.../config` in the structural index pvemcp ships (`pvemcp.pveapi`), the one copy of the
schema in the project; the conformance test checks the routes against the official
schema. What the schema says only in prose is kept here: how many of each indexed key PVE
allows, the parameters of an update that are not config keys, and the keys a config file
has that no update takes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from .model import GuestKind
from .params import Param, SchemaParams, indexed

COUNTS: Mapping[GuestKind, Mapping[str, int]] = {
    # qemu-server PVE/QemuServer.pm and its Drive/USB/PCI/... modules: MAX_NETS,
    # MAX_IDE_DISKS, MAX_SCSI_DISKS, MAX_VIRTIO_DISKS, MAX_SATA_DISKS, MAX_UNUSED_DISKS,
    # MAX_HOSTPCI_DEVICES, MAX_SERIAL_PORTS, MAX_PARALLEL_PORTS, MAX_NUMA, MAX_USB_DEVICES,
    # MAX_VIRTIOFS; `ipconfig[n]` goes with the NICs (MAX_NETS).
    "qemu": {
        "hostpci[n]": 16,
        "ide[n]": 4,
        "ipconfig[n]": 32,
        "net[n]": 32,
        "numa[n]": 8,
        "parallel[n]": 3,
        "sata[n]": 6,
        "scsi[n]": 31,
        "serial[n]": 4,
        "unused[n]": 256,
        "usb[n]": 14,
        "virtio[n]": 16,
        "virtiofs[n]": 10,
    },
    # pve-container src/PVE/LXC/Config.pm: MAX_LXC_NETWORKS, MAX_MOUNT_POINTS,
    # MAX_UNUSED_DISKS, MAX_DEVICES.
    "lxc": {"dev[n]": 256, "mp[n]": 256, "net[n]": 32, "unused[n]": 256},
}
"""How many of each indexed key PVE allows (`net0`..`net31`): only in prose in the schema."""

_CONTROL: Mapping[GuestKind, frozenset[str]] = {
    "qemu": frozenset(
        {
            "node",
            "vmid",
            "background_delay",
            "delete",
            "digest",
            "force",
            "import-working-storage",
            "revert",
            "skiplock",
        }
    ),
    "lxc": frozenset({"node", "vmid", "delete", "digest", "revert"}),
}
"""The parameters of a config update that are not config keys."""

_INTERNAL: Mapping[GuestKind, frozenset[str]] = {
    "qemu": frozenset(
        {"meta", "parent", "runningcpu", "runningmachine", "snapstate", "snaptime", "vmstate"}
    ),
    "lxc": frozenset({"parent", "snapstate", "snaptime"}),
}
"""Keys the config file has but the update schema does not take; `delete` accepts them
(qemu-server's `option_exists` reads the full `confdesc`, e.g. `delete=vmstate`)."""


def _config_path(kind: GuestKind) -> str:
    return f"/nodes/{{node}}/{kind}/{{vmid}}/config"


@functools.cache
def update_params(kind: GuestKind, *, asynchronous: bool = False) -> Mapping[str, Param]:
    """The parameters of PUT (or, for QEMU, the asynchronous POST) `.../config`."""
    method = "POST" if asynchronous else "PUT"
    root_only = ("skiplock",) if kind == "qemu" else ()
    return SchemaParams(method, _config_path(kind), root_only=root_only, counts=COUNTS[kind])


@functools.cache
def config_keys(kind: GuestKind) -> Mapping[str, Param]:
    """The settable config keys of a guest kind (indexed ones as `net[n]`)."""
    return {name: spec for name, spec in update_params(kind).items() if name not in _CONTROL[kind]}


def option_exists(kind: GuestKind, key: str) -> bool:
    """Whether `key` names a config option of this guest kind (PVE's `option_exists`)."""
    keys = config_keys(kind)
    return key in keys or key in _INTERNAL[kind] or indexed(keys, key) is not None
