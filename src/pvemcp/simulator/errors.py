"""The error answers of the simulated API, shaped the way PVE shapes them.

PVE turns every failure into an HTTP status plus a message whose first line becomes the
reason phrase; parameter errors add a per-parameter `errors` map. Handlers raise `ApiError`
and the app renders it, so no handler formats an error response by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

PARAMETER_VERIFICATION_FAILED = "Parameter verification failed.\n"
MODIFIED = "detected modified configuration - file changed by other user? Try again."
"""pve-common PVE/Tools.pm `assert_if_modified`: a stale `digest` on a config change."""


class ApiError(Exception):
    """An error answer: HTTP status, PVE's message (newline-terminated) and parameter errors."""

    def __init__(self, status: int, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message if message.endswith("\n") else message + "\n"
        self.errors = dict(errors) if errors else None

    @property
    def reason(self) -> str:
        """The HTTP reason phrase: PVE sends the message's first line."""
        return self.message.split("\n", 1)[0]


def param_error(errors: Mapping[str, str]) -> ApiError:
    """A 400 `Parameter verification failed.` with PVE's per-parameter texts."""
    return ApiError(400, PARAMETER_VERIFICATION_FAILED, errors)


def failure(message: str) -> ApiError:
    """A plain `die` in a PVE handler: HTTP 500 with the message."""
    return ApiError(500, message)


def check_digest(given: object, current: str) -> None:
    """Refuse a change whose `digest` parameter, when given, is not the config's current
    one (`assert_if_modified`, the optimistic lock of every section config)."""
    if given is not None and given != current:
        raise failure(MODIFIED)


def not_implemented(method: str, path: str) -> ApiError:
    """PVE's answer for a path or method that has no handler."""
    return ApiError(501, f"Method '{method} {path}' not implemented")
