"""One JSON body or an SSE stream, chosen for each request (`http.response_mode = "auto"`).

Streamable HTTP lets the server answer any request either way (MCP 2025-11-25, "Sending
Messages to the Server": the client must accept both). An SSE stream is what carries
progress notifications and the elicitation that confirms a risky call, and the SDK's
per-request stream costs about half of a read call's CPU. Most calls need none of it: a
read tool called without a progress token, `tools/list`, `ping`, `initialize`.

So in `auto` mode a request gets a JSON body when nothing but its response can be sent
for it, and a stream otherwise: a `tools/call` that carries a progress token, or that
names a tool which may ask for confirmation (any tier but `read`). An SDK-initiated
message related to a JSON-answered request would have no wire; none can arise for those
requests (the SDK's progress report is a no-op without a token, and reads never elicit).

The SDK fixes the mode when it creates a session's transport; `ChoosingTransport` takes
it from the mark `ResponseModeChooser` leaves on each POST instead, and
`install_choosing_transport` puts it where the SDK's session manager creates transports.
That reaches into three SDK internals (mcp is pinned): the manager's module-level name
for the transport class, the transport's `is_json_response_enabled` attribute and its
`_handle_post_request` method. The tests of every mode fail if any of them moves.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from contextvars import ContextVar
from typing import Any

from mcp.server import streamable_http_manager
from mcp.server.streamable_http import StreamableHTTPServerTransport
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_KEY = "pvemcp.json_body"
"""Where `ResponseModeChooser` leaves its choice in the ASGI scope of a POST."""

_JSON_BODY: ContextVar[bool | None] = ContextVar("pvemcp_json_body", default=None)
"""The choice for the POST being handled, set only while the transport handles it, so no
task the session starts meanwhile inherits it."""


class ChoosingTransport(StreamableHTTPServerTransport):
    """The SDK's streamable-HTTP transport, answering each POST as its scope says.

    Outside a POST (the session's message router, for one) and for a POST no chooser has
    marked, the mode the transport was created with applies, as in the SDK: so `sse` and
    `json` servers in the same process behave as they would without this class.
    """

    _session_json = False

    @property
    def is_json_response_enabled(self) -> bool:
        choice = _JSON_BODY.get()
        return self._session_json if choice is None else choice

    @is_json_response_enabled.setter
    def is_json_response_enabled(self, value: bool) -> None:
        self._session_json = value

    async def _handle_post_request(
        self, scope: Scope, request: Request, receive: Receive, send: Send
    ) -> None:
        token = _JSON_BODY.set(scope.get(SCOPE_KEY))
        try:
            await super()._handle_post_request(scope, request, receive, send)
        finally:
            _JSON_BODY.reset(token)


def install_choosing_transport() -> None:
    """Make the SDK's session manager create `ChoosingTransport`s (idempotent)."""
    streamable_http_manager.StreamableHTTPServerTransport = ChoosingTransport  # type: ignore[attr-defined]


PARSE_AT_MOST = 64 * 1024
"""Larger bodies get a stream unread. The choice is made before authentication (the SDK
checks the token further in), so an unauthenticated caller must not buy a parse of up
to `http.max_body_bytes`; a read call's body is a few hundred bytes."""


def answers_with_json(body: bytes, quiet_tools: Collection[str]) -> bool:
    """Whether the JSON-RPC message in `body` can be answered with one JSON body:
    a request that is not a `tools/call`, or one of a tool in `quiet_tools` without a
    progress token. Anything unreadable or large gets a stream (the SDK reports errors)."""
    if len(body) > PARSE_AT_MOST:
        return False
    try:
        message: Any = json.loads(body)
    except ValueError:
        return False
    if not isinstance(message, dict) or "method" not in message:
        return False
    if message["method"] != "tools/call":
        return True
    params = message.get("params")
    if not isinstance(params, dict) or params.get("name") not in quiet_tools:
        return False
    meta = params.get("_meta")
    return not (isinstance(meta, dict) and meta.get("progressToken") is not None)


class ResponseModeChooser:
    """Reads a POST's body (the body limit applies further out), chooses the mode for it,
    and hands the same body on to the SDK's app."""

    def __init__(self, app: ASGIApp, quiet_tools: Collection[str]) -> None:
        self.app = app
        self._quiet = frozenset(quiet_tools)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        # In place, as Starlette's own middlewares do: the outer ones read what inner ones
        # (the SDK's authentication) write into this same scope.
        scope[SCOPE_KEY] = answers_with_json(body, self._quiet)
        await self.app(scope, replay, send)
