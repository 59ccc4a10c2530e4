"""Converting a VM or a container into a template.

A template is a guest whose disks became read-only base volumes (`vm-101-disk-0` is
renamed `base-101-disk-0`, as pve-storage's `create_base` does on LVM-thin) and whose
config says `template: 1`; it can be cloned but never started again (`power.py` refuses:
`you can't start a vm if it's a template`). The checks and their order are qemu-server's
`src/PVE/API2/Qemu.pm` `template` (checked before the fork and again in the worker, which
returns a UPID) and pve-container's `src/PVE/API2/LXC.pm` `template` (checked under the
config flock, then a `vztemplate` worker is forked, but the API answers `null`: the task's
UPID is dropped, so a client finds the worker in the node's task list).
"""

from __future__ import annotations

from dataclasses import replace

from .errors import failure
from .locks import locked_message
from .migrate import guest_volumes
from .model import Guest, GuestKind
from .router import Context, Params, Result, Route, api, integer, text
from .state import ClusterState, lxc_config_missing, qemu_config_missing
from .tasks import Plan, fail

SECONDS = 2.0
"""A realistic duration of the conversion, before the time scale."""


def refusal(guest: Guest, running: bool, disk: str | None = None) -> str | None:
    """Why the guest cannot become a template, in PVE's words (None: it can)."""
    word = "VM" if guest.kind == "qemu" else "CT"
    if message := locked_message(guest):
        return message
    if guest.snapshots:
        return f"unable to create template, because {word} contains snapshots"
    if guest.template and disk is None:
        return "you can't convert a template to a template"
    if running:
        if guest.kind == "qemu":
            return "you can't convert a VM to template if VM is running"
        return "you can't convert a CT to template if the CT is running"
    return None


def _base_volumes(guest: Guest, disk: str | None) -> list[tuple[str, str, str]]:
    """(key, volume id, base volume id) of the disks that become base volumes (CD-ROMs
    and the cloud-init drive stay as they are)."""
    found = []
    for volume in guest_volumes(guest):
        if volume.cdrom or volume.key.startswith("unused") or (disk and volume.key != disk):
            continue
        storage, name = volume.volid.split(":", 1)
        if not name.startswith(f"vm-{guest.vmid}-") and f"/vm-{guest.vmid}-" not in name:
            continue  # already a base volume
        base = name.replace(f"vm-{guest.vmid}-", f"base-{guest.vmid}-", 1)
        found.append((volume.key, volume.volid, f"{storage}:{base}"))
    return found


class _Template:
    """The worker that converts one guest, looked up again when it gets its flock."""

    def __init__(self, state: ClusterState, kind: GuestKind, node: str, vmid: int) -> None:
        self.state, self.kind, self.node, self.vmid = state, kind, node, vmid
        self.disk: str | None = None

    def __call__(self, _begin: float) -> Plan:
        guest = self.state.guest_on(self.node, self.kind, self.vmid)
        if guest is None:
            missing = qemu_config_missing if self.kind == "qemu" else lxc_config_missing
            return fail(missing(self.node, self.vmid))
        if reason := refusal(guest, guest.status == "running", self.disk):
            return fail(reason)
        renamed = _base_volumes(guest, self.disk)
        lines = []
        for index, (_key, volid, base) in enumerate(renamed):
            # What LVM prints for lvrename and lvchange -p r (pve-storage LvmThinPlugin
            # create_base); other storages print nothing.
            old, new = volid.split(":", 1)[1], base.split(":", 1)[1]
            at = (index + 0.5) / len(renamed)
            lines += [
                (at, f'  Renamed "{old}" to "{new}" in volume group "pve"'),
                (at, f"  Logical volume pve/{new} changed."),
            ]

        def finish(_at: float) -> None:
            volumes = self.state.volumes
            for key, volid, base in renamed:
                guest.config[key] = str(guest.config[key]).replace(volid, base, 1)
                stored = volumes.find(self.node, volid)
                if stored is not None:
                    volumes.free(self.node, volid)
                    volumes.add(self.node, replace(stored, volname=base.split(":", 1)[1]))
            guest.config["template"] = 1

        return Plan(SECONDS, lines=tuple(lines), apply=finish)


def _guest(ctx: Context, params: Params, kind: GuestKind) -> tuple[str, int, Guest]:
    node, vmid = text(params, "node"), integer(params, "vmid")
    ctx.state.node(node)
    return node, vmid, ctx.state.require_guest(node, kind, vmid)


def _check(guest: Guest, disk: str | None = None) -> None:
    if reason := refusal(guest, guest.status == "running", disk):
        raise failure(reason)


def _post_qemu(ctx: Context, params: Params) -> Result:
    node, vmid, guest = _guest(ctx, params, "qemu")
    worker = _Template(ctx.state, "qemu", node, vmid)
    worker.disk = str(params["disk"]) if "disk" in params else None
    _check(guest, worker.disk)  # $load_and_check before the fork
    return Result(ctx.state.start_task(node, "qmtemplate", vmid, ctx.user, worker).upid)


def _post_lxc(ctx: Context, params: Params) -> Result:
    node, vmid, guest = _guest(ctx, params, "lxc")
    _check(guest)
    worker = _Template(ctx.state, "lxc", node, vmid)
    ctx.state.start_task(node, "vztemplate", vmid, ctx.user, worker)
    return Result(None)  # `returns => { type => 'null' }`: the UPID is not answered


ROUTES: tuple[Route, ...] = (
    api("POST", "/nodes/{node}/qemu/{vmid}/template", _post_qemu),
    api("POST", "/nodes/{node}/lxc/{vmid}/template", _post_lxc),
)
