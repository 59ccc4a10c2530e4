"""One exception hierarchy for everything a Proxmox backend can fail with.

Each class is a distinct cause with its own hint for the model, so a tool error can say what
to do next. PVE's own message and its per-parameter ``errors`` are kept verbatim (after
redaction by the gateway).
"""

from __future__ import annotations

from collections.abc import Mapping


class ProxmoxError(Exception):
    """Base class: a Proxmox call failed.

    `code` is a short stable identifier for clients and tests; `status` is the HTTP status
    when there was one.
    """

    code = "proxmox_error"
    hint = "Check the arguments and the cluster's state, then retry."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Mapping[str, str] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors: dict[str, str] = dict(errors or {})
        self.method = method
        self.path = path


class ParameterError(ProxmoxError):
    """400: PVE rejected one or more parameters (see `errors`)."""

    code = "invalid_parameter"
    hint = "Fix the parameters named in `errors` and call again."


class AuthenticationError(ProxmoxError):
    """401: the API token is missing, wrong, expired or revoked."""

    code = "authentication_failed"
    hint = (
        "The gateway's Proxmox API token was rejected. An operator must check the token id "
        "and secret in the gateway's configuration; retrying will not help."
    )


class CredentialsUnavailable(ProxmoxError):
    """The cluster's credentials could not be loaded from its secret source (yet)."""

    code = "credentials_unavailable"
    hint = (
        "The gateway cannot load this cluster's credentials from its secret source (Vault "
        "sealed or unreachable, a missing file or variable). It keeps retrying by itself: "
        "try again in a minute, or ask an operator to run `pvemcp secrets check`."
    )


class PermissionDenied(ProxmoxError):
    """403: the token lacks a privilege on the object."""

    code = "permission_denied"
    hint = (
        "The gateway's API token lacks the privilege named in the message. Ask an operator "
        "to grant it (pveum acl modify) or use another target."
    )


class NotFound(ProxmoxError):
    """404, or PVE's 500 with "does not exist": the object is not there."""

    code = "not_found"
    hint = "The object does not exist. List the objects first (for example proxmox_guest_list)."


class ServerError(ProxmoxError):
    """500: PVE refused for a domain reason (locked guest, wrong state, ...)."""

    code = "proxmox_refused"
    hint = "Proxmox refused the operation; read the message, fix the cause, then retry."


class NotImplementedOnServer(ProxmoxError):
    """501: this PVE version has no such method or path."""

    code = "not_implemented"
    hint = "This Proxmox version does not offer that call; check the path and the PVE version."


class ProxmoxTimeout(ProxmoxError):
    """The API did not answer in time (connect or read timeout)."""

    code = "timeout"
    hint = "Proxmox did not answer in time. Check the node's load, or retry later."


class ProxmoxUnreachable(ProxmoxError):
    """No connection could be made (refused, DNS, network)."""

    code = "unreachable"
    hint = "The Proxmox API cannot be reached. Check api_url, the network and that pveproxy runs."


class TlsVerificationError(ProxmoxError):
    """The server's certificate failed verification or the pinned fingerprint."""

    code = "tls_verification_failed"
    hint = (
        "The API certificate could not be verified. Configure tls = 'ca-file' with the "
        "cluster's CA, or pin its fingerprint with tls = 'fingerprint'."
    )


class TaskFailed(ProxmoxError):
    """A Proxmox task (UPID) ended with an error exit status."""

    code = "task_failed"
    hint = "The Proxmox task failed; read its log (proxmox_task_log) for the reason."

    def __init__(self, message: str, *, upid: str, exitstatus: str) -> None:
        super().__init__(message)
        self.upid = upid
        self.exitstatus = exitstatus


class TaskTimeout(ProxmoxError):
    """Waiting for a task gave up; the task itself keeps running on the node."""

    code = "task_wait_timeout"
    hint = (
        "The task is still running on the node. Call proxmox_task_wait with its upid to wait "
        "longer, or proxmox_task_status to check."
    )

    def __init__(self, message: str, *, upid: str) -> None:
        super().__init__(message)
        self.upid = upid
