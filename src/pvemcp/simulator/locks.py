"""The config `lock` property: how PVE keeps conflicting operations off a guest.

PVE has two kinds of lock, and the simulator models both:

- The **config flock** (`lock_config` in pve-guest-common's `PVE/AbstractConfig.pm`): held
  only while a worker reads and writes the config file, so a second caller waits for it.
  The task table models it as `LockKey`s (`tasks.py`): a task queues behind the running
  holders of the keys it names. Power actions hold it for their whole run, as
  `vm_start`/`vm_stop` do.
- The **`lock` property** in the config (`snapshot`, `snapshot-delete`, `rollback`,
  `backup`, `clone`, `migrate`, `suspended`...): set by a long operation at its start and
  removed at its end. Nothing waits for it: any other operation that calls `check_lock`
  fails at once with `VM is locked (snapshot)` (a direct 500 before a fork, a task error
  inside a worker). This module is that property. A worker that is killed leaves its lock
  behind, as on PVE (`qm unlock` removes it there).

Later scopes fit the same two shapes: a clone locks the source with `clone` and the new
guest with `create`; a migration locks the guest with `migrate` and names the target
node's key in its task; vzdump sets `backup` on each guest in turn.
"""

from __future__ import annotations

from .errors import failure
from .model import Guest


def guest_type(guest: Guest) -> str:
    """PVE's `guest_type()`: `VM` for QEMU, `CT` for containers."""
    return "VM" if guest.kind == "qemu" else "CT"


def locked_message(guest: Guest) -> str | None:
    """`check_lock`'s message for a locked guest, or None when it is not locked."""
    # pve-guest-common src/PVE/AbstractConfig.pm check_lock:
    #   die $class->guest_type() . " is locked ($conf->{lock})\n" if $conf->{lock};
    if guest.lock is None:
        return None
    return f"{guest_type(guest)} is locked ({guest.lock})"


def check_lock(guest: Guest) -> None:
    """PVE's `check_lock` before a fork or in a sync call: a 500 when the guest is locked."""
    message = locked_message(guest)
    if message is not None:
        raise failure(message)


def set_lock(guest: Guest, lock: str) -> None:
    """Take the `lock` property (the caller has checked that it was free)."""
    guest.config["lock"] = lock


def remove_lock(guest: Guest) -> None:
    """Drop the `lock` property at the end of the operation that took it."""
    guest.config.pop("lock", None)
