"""One exception hierarchy for everything a Proxmox backend can fail with.

Each class is a distinct cause with its own hint for the model, so a tool error can say what
to do next. PVE's own message and its per-parameter ``errors`` are kept verbatim (after
redaction by the gateway).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvemcp.proxmox.ssh.result import CommandResult


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


MESSAGE_LIMIT = 500
"""Characters of a server's message (and of each per-parameter error) passed on: PVE's
texts are short, so anything longer is an error page or a dump, not advice for a model."""


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` cut to `limit` characters, with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


class ParameterError(ProxmoxError):
    """400: PVE rejected one or more parameters (see `errors`)."""

    code = "invalid_parameter"
    hint = "Fix the parameters named in `errors` and call again."


class AuthenticationError(ProxmoxError):
    """401: the API token is missing, wrong, expired or revoked."""

    code = "authentication_failed"
    hint = (
        "The Proxmox API token your calls use (the gateway's, or your own where an identity "
        "mapping names you) was rejected. An operator must check the token id and secret in "
        "the gateway's configuration; retrying will not help."
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
        "The PVE API token your calls use (the gateway's, or your own where an identity "
        "mapping names you) lacks the privilege named in the message. Ask an operator to "
        "grant it (pveum acl modify) or use another target."
    )


class NotFound(ProxmoxError):
    """404, or PVE's 500 with "does not exist": the object is not there."""

    code = "not_found"
    hint = "The object does not exist. List the objects first (for example proxmox_guest_list)."


class ServerError(ProxmoxError):
    """500: PVE refused for a domain reason (locked guest, wrong state, ...)."""

    code = "proxmox_refused"
    hint = "Proxmox refused the operation; read the message, fix the cause, then retry."


class MalformedAnswer(ProxmoxError):
    """The server answered, but not in the shape the API documents (not JSON, `data`
    null or of the wrong type, junk items): the gateway did not use the answer.

    `may_have_run` says the request could have changed something (any method but GET):
    the message and hint then say so, since a retry could do it twice.
    """

    code = "bad_upstream_answer"
    hint = (
        "Proxmox, or something between the gateway and it (a proxy, a load balancer), "
        "answered in a shape the API does not document. Check the node and anything in "
        "front of it, then retry."
    )

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
    ) -> None:
        self.may_have_run = method != "GET"
        if self.may_have_run:
            message += "; the action may have run on the node"
            self.hint = (
                "The request reached Proxmox and may have taken effect, but its answer "
                "cannot be read. Check the object's state (and the node's task list) before "
                "retrying, so the action does not run twice."
            )
        super().__init__(message, status=status, method=method, path=path)


class AnswerTooLarge(MalformedAnswer):
    """The answer passed the cluster's `max_response_bytes`; reading stopped there."""

    code = "upstream_answer_too_large"
    hint = (
        "The answer was larger than the cluster's max_response_bytes, so the gateway stopped "
        "reading it. Narrow the request (filters, paging), or ask an operator to raise "
        "max_response_bytes."
    )


class UnexpectedRedirect(ProxmoxError):
    """A 3xx answer: the API never redirects, so api_url points at something else."""

    code = "unexpected_redirect"
    hint = (
        "The server at api_url redirected instead of answering; the gateway does not follow "
        "redirects (they could carry the token elsewhere). Check api_url: scheme, host, port "
        "(8006) and that no proxy in front rewrites it."
    )


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


TASK_STARTED_HINT = (
    "The task was started and may still be running or have finished: check it with "
    "proxmox_task_status and the upid in details before anything else; do not start the "
    "action again."
)
"""The advice for any failure that comes after a task exists: the action happened."""


class TaskStatusUnknown(ProxmoxError):
    """A task was started, but its status could not be read (polls kept failing)."""

    code = "task_status_unknown"
    hint = TASK_STARTED_HINT

    def __init__(self, message: str, *, upid: str) -> None:
        super().__init__(message)
        self.upid = upid


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


class SshError(ProxmoxError):
    """An SSH call to a node failed; the subclasses name the cause.

    `node` is the node the gateway tried to reach.
    """

    code = "ssh_error"
    hint = "The SSH call to the node failed; read the message, then retry or check the node."

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.node = node


class SshHostKeyError(SshError):
    """The node's host key is not pinned, or differs from the pin: nothing was sent.

    `fingerprint` is the SHA256 fingerprint the node presented (None when unknown) and
    `pin_line` the known_hosts line that would pin it, for an operator who has verified it.
    """

    code = "ssh_host_key_rejected"
    hint = (
        "The node's SSH host key is unknown or changed. An operator must verify the "
        "fingerprint on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and pin "
        "it in the cluster's ssh_host_keys or known_hosts; a changed key can mean an attack."
    )

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        fingerprint: str | None = None,
        pin_line: str | None = None,
    ) -> None:
        super().__init__(message, node=node)
        self.fingerprint = fingerprint
        self.pin_line = pin_line


class SshAuthError(SshError):
    """The node refused the login, or the client key cannot be used (wrong passphrase)."""

    code = "ssh_auth_failed"
    hint = (
        "The gateway's SSH login was refused or its key could not be loaded. An operator must "
        "check ssh_user, the private key and passphrase, and the node's authorized_keys; "
        "retrying will not help."
    )


class SshUnreachable(SshError):
    """No SSH connection could be made (refused, DNS, network, handshake timeout)."""

    code = "ssh_unreachable"
    hint = "The node's SSH port cannot be reached. Check the address in ssh.nodes and sshd."


class SshUnknownNode(SshError):
    """A name that is not one of the cluster's nodes: never dialled, since another name or
    a numeric alias of a denied node would otherwise get past node rules. `hint` lists
    the cluster's nodes."""

    code = "not_found"

    def __init__(self, message: str, *, node: str, nodes: list[str]) -> None:
        super().__init__(message, node=node)
        self.hint = "Use one of the cluster's nodes: " + (", ".join(nodes) or "(none known)")


class SshTimeout(SshError):
    """A remote command ran past its timeout and was killed on the node.

    `result` holds what was captured until then (partial output, duration) for the audit.
    """

    code = "ssh_command_timeout"
    hint = "The command ran too long and was killed on the node; retry with a longer timeout."

    def __init__(
        self, message: str, *, node: str | None = None, result: CommandResult | None = None
    ) -> None:
        super().__init__(message, node=node)
        self.result = result


_NOT_FOUND_RE = re.compile(r"\bdoes not exist\b|\bno such\b", re.IGNORECASE)
"""PVE answers most missing objects with a 500 whose message says so."""


def error_class_for(
    status: int | None, message: str, errors: Mapping[str, str]
) -> type[ProxmoxError]:
    """The exception class for a PVE failure, whichever backend saw it (REST status, or the
    status pvesh prints), so typed tools behave the same over both."""
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDenied
    if status == 501:
        return NotImplementedOnServer
    if status == 400 and errors:
        # PVE refuses an unknown task id as a parameter: {"upid": "no such task"}.
        if any(_NOT_FOUND_RE.search(text) for text in errors.values()):
            return NotFound
        return ParameterError
    if status is not None and 300 <= status < 400:
        return UnexpectedRedirect
    if status == 404 or _NOT_FOUND_RE.search(message):
        return NotFound
    if status == 400:
        return ParameterError
    return ServerError
