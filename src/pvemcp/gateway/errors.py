"""Tool failures as the model sees them: a stable code, a message, what to do next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ToolFailure(Exception):
    """A call that cannot be completed, with everything the caller needs to act on it.

    Raised by tools and by the pipeline; the transport turns it into an `is_error` result
    whose text is `{"error": {code, message, hint, field?, details?}}`.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
        details: Mapping[str, Any] | None = None,
        issued: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.field = field
        self.details: dict[str, Any] = dict(details or {})
        self.issued: dict[str, str] = dict(issued or {})
        """Values the gateway itself issues to the caller (a confirmation token): added to
        `details` after redaction, which would otherwise mask them by their key name."""

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.hint is not None:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


def not_found(what: str, hint: str) -> ToolFailure:
    return ToolFailure("not_found", what, hint=hint)
