"""What a failed create, clone or restore left behind for its new vmid, and how to remove it.

PVE's workers clean up after themselves, but not always. qemu-server's `create_vm` and
`clone_vm` (`src/PVE/API2/Qemu.pm`) and pve-container's (`src/PVE/API2/LXC.pm`) free the
volumes they allocated and remove the new config when they fail, yet each `vdisk_free`
is wrapped in `eval { ... }; warn $@`: a volume the storage cannot free (LVM's
`Logical volume ... in use`, an NFS server that stopped answering) stays on the storage,
with only a warning in the task log. A failed restore says `VM <vmid> state is NOT
cleaned up` and keeps what it made; a worker killed with its node cleans nothing. So when
such a task fails, the tool looks at what exists for the new vmid (a config anywhere in
the cluster and its lock, volumes of that vmid on the node's guest storages) and its
error says so, with how to remove it, instead of only the task's exit status. When PVE
did clean up, the error says that nothing was left behind.

`wait_creating` is the one place this happens: the default runner waits through it for
every task call, and tools with their own handler (clone, restore) call it too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import TypeAdapter

from pvemcp.gateway.answers import Answer, read_as
from pvemcp.gateway.context import ToolContext
from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.plan import ApiCall
from pvemcp.proxmox.errors import ProxmoxError, TaskFailed
from pvemcp.proxmox.tasks import TaskStatus

_GUEST_CONTENT = ("images", "rootdir")
"""Volume content types that belong to a guest (not its backups, ISOs or templates)."""


class CreatedGuest(NamedTuple):
    """The guest a call creates: `node` is where its worker runs and allocates."""

    node: str
    kind: str
    vmid: int

    @property
    def word(self) -> str:
        return "VM" if self.kind == "qemu" else "CT"


class LeftBehind(NamedTuple):
    """What exists for the vmid after the failed task."""

    config_node: str | None
    """The node whose config of the vmid exists, or None."""
    lock: str | None
    volumes: tuple[str, ...]

    def as_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"config": self.config_node is not None}
        if self.config_node is not None:
            detail["config_node"] = self.config_node
        if self.lock:
            detail["lock"] = self.lock
        detail["volumes"] = list(self.volumes)
        return detail


class _Resource(Answer):
    vmid: int | None = None
    node: str = ""
    lock: str | None = None


class _Storage(Answer):
    storage: str


class _Volume(Answer):
    volid: str
    content: str = ""
    vmid: int | None = None


_RESOURCES = TypeAdapter(list[_Resource])
_STORAGES = TypeAdapter(list[_Storage])
_VOLUMES = TypeAdapter(list[_Volume])


def created_guest(call: ApiCall) -> CreatedGuest | None:
    """The guest `call` creates, or None: a create or restore (POST `/nodes/{node}/qemu`
    or `/lxc` with `vmid`) or a clone (POST `.../{vmid}/clone`, the new guest `newid`)."""
    if call.method != "POST":
        return None
    parts = call.path.strip("/").split("/")
    if call.template in ("/nodes/{node}/qemu", "/nodes/{node}/lxc"):
        vmid = call.params.get("vmid")
    elif call.template.endswith("/{vmid}/clone"):
        vmid = call.params.get("newid")
    else:
        return None
    if vmid is None or len(parts) < 3:
        return None
    return CreatedGuest(node=parts[1], kind=parts[2], vmid=int(vmid))


async def find_left_behind(ctx: ToolContext, guest: CreatedGuest) -> LeftBehind:
    """The config of `guest.vmid` anywhere in the cluster (vmids are cluster-wide) and the
    guest volumes of that vmid on the storages `guest.node` sees."""
    resources = await read_as(ctx, _RESOURCES, "/cluster/resources", {"type": "vm"})
    found = next((r for r in resources if r.vmid == guest.vmid), None)
    storages = await read_as(
        ctx, _STORAGES, f"/nodes/{guest.node}/storage", {"content": "images,rootdir"}
    )
    volumes: list[str] = []
    for storage in storages:
        content = await read_as(
            ctx,
            _VOLUMES,
            f"/nodes/{guest.node}/storage/{storage.storage}/content",
            {"vmid": guest.vmid},
        )
        volumes += [
            v.volid
            for v in content
            if v.vmid == guest.vmid and v.content in _GUEST_CONTENT and v.volid not in volumes
        ]
    return LeftBehind(
        config_node=found.node if found else None,
        lock=found.lock if found else None,
        volumes=tuple(volumes),
    )


def _explained(exc: TaskFailed, guest: CreatedGuest, left: LeftBehind) -> ToolFailure:
    """The task's failure, saying what it left and how to remove it."""
    name = f"{guest.word} {guest.vmid}"
    details: dict[str, Any] = {"upid": exc.upid, "exitstatus": exc.exitstatus}
    details["left_behind"] = left.as_detail()
    if left.config_node is None and not left.volumes:
        return ToolFailure(
            exc.code,
            f"{name} was not created: {exc.exitstatus}. Nothing was left behind: no config "
            f"and no volume of {guest.vmid}.",
            hint=f"Nothing to clean up. {exc.hint}",
            details=details,
        )
    parts = []
    if left.config_node is not None:
        locked = f", locked ({left.lock})" if left.lock else ""
        parts.append(f"its config on {left.config_node}{locked}")
    if left.volumes:
        parts.append(f"volumes {', '.join(left.volumes)}")
    message = f"{name} was not created: {exc.exitstatus}. Left behind: {' and '.join(parts)}."
    if left.config_node is not None:
        tool = "qm" if guest.kind == "qemu" else "pct"
        unlock = (
            f"unlock it first on {left.config_node} (`{tool} unlock {guest.vmid}`), then "
            if left.lock
            else ""
        )
        hint = (
            f"To remove it, {unlock}call proxmox_guest_delete with vmid {guest.vmid}: it "
            "also frees volumes of that vmid its config does not list."
        )
    else:
        hint = (
            f"No config is left, so proxmox_guest_delete cannot remove them: free each on "
            f"{guest.node} with `pvesm free <volid>` (API: DELETE "
            f"/nodes/{guest.node}/storage/<storage>/content/<volid>). The task log says why "
            "PVE could not."
        )
    return ToolFailure(exc.code, message, hint=hint, details=details)


def _vmid_taken(exc: TaskFailed, guest: CreatedGuest) -> ToolFailure | None:
    """The failure of a worker that found its vmid taken (pve-cluster's
    `check_vmid_unused`, repeated under the lock): another guest took it since the plan,
    and what exists for that vmid is not this call's to report or remove."""
    if f"{guest.vmid} already exists on node" not in exc.exitstatus:
        return None
    return ToolFailure(
        exc.code,
        f"{guest.word} {guest.vmid} was not created: {exc.exitstatus}",
        hint=f"Another guest took vmid {guest.vmid} meanwhile and nothing was made; choose "
        "another vmid (proxmox_next_vmid).",
        details={"upid": exc.upid, "exitstatus": exc.exitstatus},
    )


async def explain_failure(ctx: ToolContext, exc: TaskFailed, guest: CreatedGuest) -> ToolFailure:
    """`exc` as a failure that says what the task left behind for `guest`; when that
    cannot be read, the task's failure with a hint to check before trying again."""
    taken = _vmid_taken(exc, guest)
    if taken is not None:
        return taken
    try:
        left = await find_left_behind(ctx, guest)
    except ProxmoxError as err:
        return ToolFailure(
            exc.code,
            f"{exc.message}; whether it left anything behind for {guest.vmid} could not be "
            f"read: {err.message}",
            hint=f"Before creating {guest.vmid} again, check for its config and volumes "
            "(proxmox_guest_get, the storages' content).",
            details={"upid": exc.upid, "exitstatus": exc.exitstatus},
        )
    return _explained(exc, guest, left)


async def wait_creating(
    ctx: ToolContext, call: ApiCall, upid: str, timeout: float | None = None
) -> TaskStatus:
    """Wait for the task `call` started (`ToolContext.wait_task`); when `call` creates a
    guest and its task fails, raise a failure that says what was left behind."""
    try:
        return await ctx.wait_task(upid, timeout)
    except TaskFailed as exc:
        guest = created_guest(call)
        if guest is None:
            raise
        raise await explain_failure(ctx, exc, guest) from exc
