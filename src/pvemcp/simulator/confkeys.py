"""The configuration keys of VMs and containers, as PVE's schema declares them.

Structural facts only (type, range, enum, pattern, format name; no prose), for PUT/POST
`.../config`: the conformance test checks every entry against the official 9.2 schema,
so a drift fails there. Property-string formats (`net[n]`, `scsi[n]`, ...) are dicts in
the schema and are not parsed here: their values are kept verbatim. Indexed keys carry
how many PVE allows (`net0`..`net31`), from qemu-server's and pve-container's `MAX_*`.

Until the structural index of the whole API ships as package data (design §4.2), these two
tables are the one hand-kept copy; they are the simulator's, not shared with the client.
"""

from __future__ import annotations

from collections.abc import Mapping

from .model import GuestKind
from .params import NODE, SKIPLOCK, VMID, Param, indexed

QEMU_KEYS: Mapping[str, Param] = {
    "acpi": Param("boolean", optional=True),
    "affinity": Param("string", optional=True, format="pve-cpuset"),
    "agent": Param("string", optional=True),
    "allow-ksm": Param("boolean", optional=True),
    "amd-sev": Param("string", optional=True, format="pve-qemu-sev-fmt"),
    "arch": Param("string", optional=True, enum=("x86_64", "aarch64")),
    "args": Param("string", optional=True),
    "audio0": Param("string", optional=True),
    "autostart": Param("boolean", optional=True),
    "balloon": Param("integer", optional=True, minimum=0),
    "bios": Param("string", optional=True, enum=("seabios", "ovmf")),
    "boot": Param("string", optional=True, format="pve-qm-boot"),
    "bootdisk": Param(
        "string", optional=True, pattern="(ide|sata|scsi|virtio)\\d+", format="pve-qm-bootdisk"
    ),
    "cdrom": Param("string", optional=True, format="pve-qm-ide"),
    "cicustom": Param("string", optional=True, format="pve-qm-cicustom"),
    "cipassword": Param("string", optional=True),
    "citype": Param("string", optional=True, enum=("configdrive2", "nocloud", "opennebula")),
    "ciupgrade": Param("boolean", optional=True),
    "ciuser": Param("string", optional=True),
    "cores": Param("integer", optional=True, minimum=1),
    "cpu": Param("string", optional=True, format="pve-vm-cpu-conf"),
    "cpulimit": Param("number", optional=True, minimum=0, maximum=128),
    "cpuunits": Param("integer", optional=True, minimum=1, maximum=262144),
    "description": Param("string", optional=True, max_length=8192),
    "efidisk0": Param("string", optional=True),
    "freeze": Param("boolean", optional=True),
    "hookscript": Param("string", optional=True, format="pve-volume-id"),
    "hostpci[n]": Param("string", optional=True, format="pve-qm-hostpci", count=16),
    "hotplug": Param("string", optional=True, format="pve-hotplug-features"),
    "hugepages": Param("string", optional=True, enum=("any", "2", "1024")),
    "ide[n]": Param("string", optional=True, count=4),
    "intel-tdx": Param("string", optional=True, format="pve-qemu-tdx-fmt"),
    "ipconfig[n]": Param("string", optional=True, format="pve-qm-ipconfig", count=32),
    "ivshmem": Param("string", optional=True),
    "keephugepages": Param("boolean", optional=True),
    "keyboard": Param(
        "string",
        optional=True,
        enum=(
            "de",
            "de-ch",
            "da",
            "en-gb",
            "en-us",
            "es",
            "fi",
            "fr",
            "fr-be",
            "fr-ca",
            "fr-ch",
            "hu",
            "is",
            "it",
            "ja",
            "lt",
            "mk",
            "nl",
            "no",
            "pl",
            "pt",
            "pt-br",
            "sv",
            "sl",
            "tr",
        ),
    ),
    "kvm": Param("boolean", optional=True),
    "localtime": Param("boolean", optional=True),
    "lock": Param(
        "string",
        optional=True,
        enum=(
            "backup",
            "clone",
            "create",
            "migrate",
            "rollback",
            "snapshot",
            "snapshot-delete",
            "suspending",
            "suspended",
        ),
    ),
    "machine": Param("string", optional=True),
    "memory": Param("string", optional=True),
    "migrate_downtime": Param("number", optional=True, minimum=0),
    "migrate_speed": Param("integer", optional=True, minimum=0),
    "name": Param("string", optional=True, format="dns-name"),
    "nameserver": Param("string", optional=True, format="address-list"),
    "net[n]": Param("string", optional=True, count=32),
    "numa": Param("boolean", optional=True),
    "numa[n]": Param("string", optional=True, count=8),
    "onboot": Param("boolean", optional=True),
    "ostype": Param(
        "string",
        optional=True,
        enum=(
            "other",
            "wxp",
            "w2k",
            "w2k3",
            "w2k8",
            "wvista",
            "win7",
            "win8",
            "win10",
            "win11",
            "l24",
            "l26",
            "solaris",
        ),
    ),
    "parallel[n]": Param(
        "string", optional=True, pattern="/dev/parport\\d+|/dev/usb/lp\\d+", count=3
    ),
    "protection": Param("boolean", optional=True),
    "reboot": Param("boolean", optional=True),
    "rng0": Param("string", optional=True, format="pve-qm-rng"),
    "sata[n]": Param("string", optional=True, count=6),
    "scsi[n]": Param("string", optional=True, count=31),
    "scsihw": Param(
        "string",
        optional=True,
        enum=("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi"),
    ),
    "searchdomain": Param("string", optional=True),
    "serial[n]": Param("string", optional=True, pattern="(/dev/[^,]+|socket)", count=4),
    "shares": Param("integer", optional=True, minimum=0, maximum=50000),
    "smbios1": Param("string", optional=True, max_length=512, format="pve-qm-smbios1"),
    "smp": Param("integer", optional=True, minimum=1),
    "sockets": Param("integer", optional=True, minimum=1),
    "spice_enhancements": Param("string", optional=True),
    "sshkeys": Param("string", optional=True, format="urlencoded"),
    "startdate": Param(
        "string",
        optional=True,
        pattern="(now|\\d{4}-\\d{1,2}-\\d{1,2}(T\\d{1,2}:\\d{1,2}:\\d{1,2})?)",
    ),
    "startup": Param("string", optional=True, format="pve-startup-order"),
    "tablet": Param("boolean", optional=True),
    "tags": Param("string", optional=True, format="pve-tag-list"),
    "tdf": Param("boolean", optional=True),
    "template": Param("boolean", optional=True),
    "tpmstate0": Param("string", optional=True),
    "unused[n]": Param("string", optional=True, count=256),
    "usb[n]": Param("string", optional=True, count=14),
    "vcpus": Param("integer", optional=True, minimum=1),
    "vga": Param("string", optional=True),
    "virtio[n]": Param("string", optional=True, count=16),
    "virtiofs[n]": Param("string", optional=True, count=10),
    "vmgenid": Param(
        "string",
        optional=True,
        pattern="(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])",
    ),
    "vmstatestorage": Param("string", optional=True, format="pve-storage-id"),
    "watchdog": Param("string", optional=True, format="pve-qm-watchdog"),
}

LXC_KEYS: Mapping[str, Param] = {
    "arch": Param(
        "string", optional=True, enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")
    ),
    "cmode": Param("string", optional=True, enum=("shell", "console", "tty")),
    "console": Param("boolean", optional=True),
    "cores": Param("integer", optional=True, minimum=1, maximum=8192),
    "cpulimit": Param("number", optional=True, minimum=0, maximum=8192),
    "cpuunits": Param("integer", optional=True, minimum=0, maximum=500000),
    "debug": Param("boolean", optional=True),
    "description": Param("string", optional=True, max_length=8192),
    "dev[n]": Param("string", optional=True, count=256),
    "entrypoint": Param("string", optional=True, pattern="(?^:[^\\x00-\\x08\\x0a-\\x1F\\x7F]+)"),
    "env": Param(
        "string",
        optional=True,
        pattern="(?^:(?:\\w+=[^\\x00-\\x08\\x0a-\\x1F\\x7F]*)(?:\\0\\w+=[^\\x00-\\x08\\x0a-\\x1F\\x7F]*)*)",
    ),
    "features": Param("string", optional=True),
    "hookscript": Param("string", optional=True, format="pve-volume-id"),
    "hostname": Param("string", optional=True, max_length=255, format="dns-name"),
    "lock": Param(
        "string",
        optional=True,
        enum=(
            "backup",
            "create",
            "destroyed",
            "disk",
            "fstrim",
            "migrate",
            "mounted",
            "rollback",
            "snapshot",
            "snapshot-delete",
        ),
    ),
    "memory": Param("integer", optional=True, minimum=16),
    "mp[n]": Param("string", optional=True, count=256),
    "nameserver": Param("string", optional=True, format="lxc-ip-with-ll-iface-list"),
    "net[n]": Param("string", optional=True, count=32),
    "onboot": Param("boolean", optional=True),
    "ostype": Param(
        "string",
        optional=True,
        enum=(
            "debian",
            "devuan",
            "ubuntu",
            "centos",
            "fedora",
            "opensuse",
            "archlinux",
            "alpine",
            "gentoo",
            "nixos",
            "unmanaged",
        ),
    ),
    "protection": Param("boolean", optional=True),
    "rootfs": Param("string", optional=True),
    "searchdomain": Param("string", optional=True, format="dns-name-list"),
    "startup": Param("string", optional=True, format="pve-startup-order"),
    "swap": Param("integer", optional=True, minimum=0),
    "tags": Param("string", optional=True, format="pve-tag-list"),
    "template": Param("boolean", optional=True),
    "timezone": Param("string", optional=True, format="pve-ct-timezone"),
    "tty": Param("integer", optional=True, minimum=0, maximum=6),
    "unprivileged": Param("boolean", optional=True),
    "unused[n]": Param("string", optional=True, count=256),
}

_QEMU_CONTROL: Mapping[str, Param] = {
    "background_delay": Param("integer", optional=True, minimum=1, maximum=30),
    "delete": Param("string", optional=True, format="pve-configid-list"),
    "digest": Param("string", optional=True, max_length=40),
    "force": Param("boolean", optional=True, requires="delete"),
    "import-working-storage": Param("string", optional=True, format="pve-storage-id"),
    "revert": Param("string", optional=True, format="pve-configid-list"),
    "skiplock": SKIPLOCK,
}
"""The parameters of a QEMU config update that are not config keys."""

_LXC_CONTROL: Mapping[str, Param] = {
    "delete": Param("string", optional=True, format="pve-configid-list"),
    "digest": Param("string", optional=True, max_length=40),
    "revert": Param("string", optional=True, format="pve-configid-list"),
}

_QEMU_INTERNAL = frozenset(
    {"meta", "parent", "runningcpu", "runningmachine", "snapstate", "snaptime", "vmstate"}
)
"""Keys the config file has but the update schema does not take; `delete` accepts them
(qemu-server's `option_exists` reads the full `confdesc`, e.g. `delete=vmstate`)."""

_LXC_INTERNAL = frozenset({"parent", "snapstate", "snaptime"})


def config_keys(kind: GuestKind) -> Mapping[str, Param]:
    """The settable config keys of a guest kind (indexed ones as `net[n]`)."""
    return QEMU_KEYS if kind == "qemu" else LXC_KEYS


def update_params(kind: GuestKind, *, asynchronous: bool = False) -> dict[str, Param]:
    """The parameters of PUT (or, for QEMU, POST) `.../config`."""
    control = dict(_QEMU_CONTROL if kind == "qemu" else _LXC_CONTROL)
    if not asynchronous:
        control.pop("background_delay", None)
        control.pop("import-working-storage", None)
    return {"node": NODE, "vmid": VMID, **control, **config_keys(kind)}


def option_exists(kind: GuestKind, key: str) -> bool:
    """Whether `key` names a config option of this guest kind (PVE's `option_exists`)."""
    if key in config_keys(kind) or key in (_QEMU_INTERNAL if kind == "qemu" else _LXC_INTERNAL):
        return True
    return indexed(config_keys(kind), key) is not None
