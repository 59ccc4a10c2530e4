"""Uvicorn's HTTP/1.1 protocol with PVE-style reason phrases.

PVE puts the error's first line in the status line (`HTTP/1.1 500 Configuration file ...
does not exist`) and clients fall back on it when the body has no message (401 answers
have an empty body). ASGI has no field for a reason phrase and uvicorn always sends the
standard one, so the app passes the phrase in a private response header that this
protocol removes and writes into the status line instead.
"""

from __future__ import annotations

from typing import Any, overload

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REASON_HEADER = "x-pvemcp-simulator-reason"
_REASON_HEADER_BYTES = REASON_HEADER.encode()


class _ReasonConnection(h11.Connection):
    """An h11 connection that takes the reason phrase from `REASON_HEADER`."""

    @overload
    def send(self, event: h11.ConnectionClosed) -> None: ...
    @overload
    def send(
        self,
        event: h11.Request | h11.InformationalResponse | h11.Response | h11.Data | h11.EndOfMessage,
    ) -> bytes: ...
    @overload
    def send(self, event: h11.Event) -> bytes | None: ...
    def send(self, event: h11.Event) -> bytes | None:
        if isinstance(event, h11.Response):
            reason: bytes | None = None
            headers = []
            for name, value in event.headers:
                if name == _REASON_HEADER_BYTES:
                    reason = value
                else:
                    headers.append((name, value))
            if reason is not None:
                event = h11.Response(
                    status_code=event.status_code,
                    headers=headers,
                    reason=reason,
                    http_version=event.http_version,
                )
        return super().send(event)


class ReasonPhraseH11Protocol(H11Protocol):
    """`uvicorn.Config(http=ReasonPhraseH11Protocol)`: h11 with custom reason phrases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size
        if size is None:
            self.conn = _ReasonConnection(h11.SERVER)
        else:
            self.conn = _ReasonConnection(h11.SERVER, size)


def reason_header_value(reason: str) -> str:
    """The phrase made safe for a status line: printable ASCII, one line, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in reason)
    return cleaned[:200]
