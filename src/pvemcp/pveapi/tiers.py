"""The least risk tier a call of an API method can have.

The HTTP method gives a first answer (GET reads, POST and PUT change state, DELETE loses
something), which is wrong for a few dozen methods in both directions, so those are named
here with a reason each. A typed tool may declare a higher tier than its methods' floor,
never a lower one; a generic API call gets at least the floor, so it cannot do through
the back door what a typed tool asks a confirmation for. Tier names are the policy's
(`read`, `write`, `destructive`, `escape`); this package imports nothing of pvemcp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

TierName = Literal["read", "write", "destructive", "escape"]

BY_METHOD: Mapping[str, TierName] = {
    "GET": "read",
    "POST": "write",
    "PUT": "write",
    "DELETE": "destructive",
}

_GUEST = ("/nodes/{node}/qemu/{vmid}", "/nodes/{node}/lxc/{vmid}")

RAISED: Mapping[tuple[str, str], tuple[TierName, str]] = {
    # A shell, console or raw channel into a node or guest: whatever it runs is unseen.
    ("POST", "/nodes/{node}/execute"): ("escape", "runs a batch of API calls as root"),
    ("POST", "/nodes/{node}/termproxy"): ("escape", "opens a root shell on the node"),
    ("POST", "/nodes/{node}/vncshell"): ("escape", "opens a root shell on the node"),
    ("POST", "/nodes/{node}/spiceshell"): ("escape", "opens a root shell on the node"),
    ("GET", "/nodes/{node}/vncwebsocket"): ("escape", "connects to a node shell"),
    **{
        (method, f"{guest}/{name}"): ("escape", "opens a console on the guest")
        for guest in _GUEST
        for method, name in (
            ("POST", "termproxy"),
            ("POST", "vncproxy"),
            ("POST", "spiceproxy"),
            ("GET", "vncwebsocket"),
        )
    },
    ("POST", "/nodes/{node}/qemu/{vmid}/monitor"): (
        "escape",
        "sends raw commands to the QEMU monitor",
    ),
    ("PUT", "/nodes/{node}/qemu/{vmid}/sendkey"): ("escape", "types keys into the console"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/exec"): (
        "escape",
        "runs a command inside the guest",
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status"): (
        "escape",
        "returns a guest command's output",
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read"): (
        "escape",
        "reads any file inside the guest",
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write"): (
        "escape",
        "writes any file inside the guest",
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/set-user-password"): (
        "escape",
        "sets a guest account's password",
    ),
    ("GET", "/nodes/{node}/storage/{storage}/file-restore/download"): (
        "escape",
        "reads any file out of a backup",
    ),
    # Software and files the node will trust or run.
    ("POST", "/nodes/{node}/apt/repositories"): (
        "escape",
        "changes where the node installs packages from",
    ),
    ("PUT", "/nodes/{node}/apt/repositories"): (
        "escape",
        "adds a package repository to the node",
    ),
    ("POST", "/nodes/{node}/storage/{storage}/upload"): (
        "escape",
        "puts an uploaded file on the node",
    ),
    ("POST", "/nodes/{node}/hosts"): ("escape", "rewrites the node's /etc/hosts"),
    ("POST", "/nodes/{node}/certificates/custom"): (
        "escape",
        "replaces the node's TLS key and certificate",
    ),
    # Credentials: minting or changing them hands out access beyond this gateway's view. (A
    # new API token's secret too, but the typed tool hands it to the person, never the
    # model, so it is a write; the generic call refuses it: see CREDENTIALS.)
    ("POST", "/access/ticket"): ("escape", "mints a login ticket"),
    ("POST", "/access/vncticket"): ("escape", "mints a console ticket"),
    ("PUT", "/access/password"): ("escape", "changes a user's password"),
    ("POST", "/access/tfa/{userid}"): ("escape", "adds a second factor to an account"),
    ("PUT", "/access/tfa/{userid}/{id}"): ("escape", "changes a second factor"),
    # Writes whose effect is lost data or availability, not a reversible change.
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"): (
        "destructive",
        "pulls the plug on the VM",
    ),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/stop"): (
        "destructive",
        "kills the container",
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reset"): (
        "destructive",
        "hard-resets the VM",
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback"): (
        "destructive",
        "discards the state since the snapshot",
    ),
    ("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"): (
        "destructive",
        "discards the state since the snapshot",
    ),
    ("POST", "/nodes/{node}/status"): ("destructive", "reboots or shuts down the node"),
    ("POST", "/nodes/{node}/stopall"): ("destructive", "stops every guest on the node"),
    ("PUT", "/nodes/{node}/disks/wipedisk"): ("destructive", "wipes a disk"),
    ("POST", "/nodes/{node}/disks/initgpt"): ("destructive", "overwrites a disk's partition table"),
}
"""Methods whose tier is above their HTTP method's, with the reason."""

CREDENTIALS: Mapping[tuple[str, str], str] = {
    ("POST", "/access/ticket"): "a login ticket and CSRF token",
    ("POST", "/access/openid/login"): "a login ticket and CSRF token",
    ("POST", "/access/vncticket"): "a console ticket",
    ("POST", "/access/tfa/{userid}"): "second-factor recovery keys",
    ("POST", "/access/users/{userid}/token/{tokenid}"): "an API token secret",
    ("PUT", "/access/users/{userid}/token/{tokenid}"): "an API token secret",
    ("POST", "/cluster/config/nodes/{node}"): "the cluster's corosync key",
    ("POST", "/nodes/{node}/termproxy"): "a console ticket",
    ("POST", "/nodes/{node}/vncshell"): "a console ticket",
    ("POST", "/nodes/{node}/spiceshell"): "a console password",
    **{
        ("POST", f"{guest}/{name}"): "a console ticket or password"
        for guest in _GUEST
        for name in ("termproxy", "vncproxy", "spiceproxy", "mtunnel")
    },
}
"""Methods whose answer is a credential (the schema's return properties say so): the
generic API call refuses them whatever policy says, since nothing it returns may hand a
model a way around the gateway."""

GENERIC_ONLY: Mapping[tuple[str, str], tuple[TierName, str]] = {
    ("POST", "/nodes/{node}/storage/{storage}/download-url"): (
        "escape",
        "fetches any URL onto the node",
    ),
}
"""Methods raised for the generic API call only: a typed tool that sends them makes the
checks that keep them a plain write (`proxmox_storage_download`: HTTPS, a public host
that policy's `hosts` allow, a checksum), the generic call makes none."""

LOWERED: Mapping[tuple[str, str], tuple[TierName, str]] = {
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"): ("read", "only asks if the agent answers"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-status"): (
        "read",
        "only reads the filesystems' freeze state",
    ),
    ("DELETE", "/nodes/{node}/network"): ("write", "drops pending, unapplied changes only"),
    **{
        ("DELETE", f"{base}/firewall/ipset/{{name}}/{{cidr}}"): (
            "write",
            "takes one address out of a set, as a rule edit does",
        )
        for base in ("/cluster", *_GUEST)
    },
}
"""Methods whose HTTP verb overstates them, with the reason: POSTs that change nothing (PVE
makes every guest-agent command a POST), DELETEs that only drop staged changes or edit
an entry of a firewall set (as changing a rule does, a write)."""

_ORDER: tuple[TierName, ...] = ("read", "write", "destructive", "escape")


def tier_floor(method: str, template: str) -> TierName:
    """The least tier a call of `method` on the path `template` can have."""
    lowered = LOWERED.get((method, template))
    if lowered is not None:
        return lowered[0]
    by_method = BY_METHOD.get(method, "escape")
    raised = RAISED.get((method, template))
    if raised is None:
        return by_method
    return max(by_method, raised[0], key=_ORDER.index)


_UNUSED = re.compile(r"unused\d+")
_CREATES = ("/nodes/{node}/qemu", "/nodes/{node}/lxc")
_CONFIGS = tuple(f"{guest}/config" for guest in _GUEST)


def params_raise(
    method: str, template: str, params: Mapping[str, Any] | None
) -> tuple[TierName, str] | None:
    """The tier a call's parameters raise it to, with the reason, where the same method is
    a write or a loss depending on them: a restore with `force` over an existing guest, a
    config change whose `delete` names an unused disk (PVE frees its volume). The typed
    tools split such calls into two tools of two tiers; the generic call is decided on
    what it sends."""
    given = params or {}
    if method == "POST" and template in _CREATES and str(given.get("force", "")) in _TRUE:
        return "destructive", "restores over an existing guest (force)"
    if method in ("PUT", "POST") and template in _CONFIGS and "delete" in given:
        deleted = re.split(r"[,;\s\0]+", str(given["delete"]))
        if any(_UNUSED.fullmatch(key) for key in deleted):
            return "destructive", "deletes an unused disk's volume"
    return None


_TRUE = ("1", "True", "true", "on", "yes")


def generic_floor(method: str, template: str, params: Mapping[str, Any] | None = None) -> TierName:
    """The least tier of a call of `method template` with `params` through the generic API
    call: its floor, raised further where only a typed tool's own checks keep it lower
    (`GENERIC_ONLY`) and where its parameters make it a loss (`params_raise`)."""
    tiers = [tier_floor(method, template)]
    for raised in (GENERIC_ONLY.get((method, template)), params_raise(method, template, params)):
        if raised is not None:
            tiers.append(raised[0])
    return max(tiers, key=_ORDER.index)
