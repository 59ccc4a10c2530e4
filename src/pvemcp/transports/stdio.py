"""MCP over stdio: the caller is the local operator who started the process.

stdin is read by a daemon thread of our own rather than by the SDK's default (anyio worker
threads): those are shielded from cancellation and joined at exit, so a read blocked on an
idle stdin would keep a signalled process, and in `both` mode its HTTP port, alive until
the client wrote again. Raw `os.read` calls, not the buffered `sys.stdin`, so interpreter
shutdown never waits on a lock that thread holds.

Every line that is a request gets an answer. The SDK drops a line it cannot read as a
JSON-RPC message (logged at debug level), so a client that sent an unparseable line, a
list as `params`, a string holding a lone UTF-16 surrogate or JSON nested past the parser's
limit would wait forever for its reply. Such lines are screened here first and answered
with a JSON-RPC error: -32700 (id null) for a line that is not JSON, -32600 for a message
that is not a valid request, -32602 when only its `params` are at fault, with the request's
id whenever it can be read. Notifications are never answered (JSON-RPC), so a malformed one
is dropped with a warning on stderr; whitespace-only lines are skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.from_thread import run as run_in_loop
from anyio.from_thread import run_sync as run_sync_in_loop
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pvemcp.policy.principal import Principal

log = structlog.get_logger(__name__)

_LOCAL = Principal.local("stdio")
_CHUNK = 64 * 1024


def local_principal(_: ServerRequestContext[Any, Any] | None) -> Principal:
    return _LOCAL


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _readable_id(message: dict[str, Any]) -> RequestId | None:
    """The id to answer with: a JSON-RPC id we can write back, else null."""
    value = message.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and _has_surrogate(value):
        return None  # not Unicode: it cannot be written back as UTF-8
    return value


def _surrogate_path(message: dict[str, Any]) -> str | None:
    """Where the first string (key or value) holding a lone surrogate is, e.g.
    `params.arguments.vmid` (walked without recursion: the message may be deeply nested)."""
    stack: list[tuple[str, Any]] = [(key, value) for key, value in reversed(message.items())]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and _has_surrogate(value):
            return path
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _has_surrogate(key):
                    return path
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value)))
            )
    return None


def _deepest_member(message: dict[str, Any]) -> str:
    """The top-level member that nests deepest (iteratively, for the same reason)."""
    depths: dict[str, int] = {}
    for key, value in message.items():
        deepest, stack = 0, [(value, 1)]
        while stack:
            node, depth = stack.pop()
            deepest = max(deepest, depth)
            children = (
                node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
            )
            stack.extend((child, depth + 1) for child in children)
        depths[key] = deepest
    return max(depths, key=lambda key: depths[key])


# One refusal: JSON-RPC code, the member at fault (None: the whole line), message, hint.
_Fault = tuple[int, str | None, str, str]
_NOT_JSON_HINT = "Send one JSON-RPC message per line, as UTF-8 JSON."


def _unreadable(message: dict[str, Any], why: str) -> _Fault:
    """Valid JSON the SDK's stricter parser refused: a lone surrogate or deep nesting."""
    if (path := _surrogate_path(message)) is not None:
        what = f"{path} holds a lone UTF-16 surrogate, which is not Unicode text"
        hint = "Send text as valid UTF-16 pairs or plain UTF-8."
    elif "recursion limit" in why:
        path = _deepest_member(message)
        what = f"{path} is nested deeper than the parser allows ({why})"
        hint = "Flatten the value; no MCP request nests this deep."
    else:
        return INVALID_REQUEST, None, f"Invalid request: {why}", _NOT_JSON_HINT
    if path.startswith("params"):
        return INVALID_PARAMS, path, f"Invalid params: {what}", hint
    return INVALID_REQUEST, path, f"Invalid request: {what}", hint


def _malformed(message: dict[str, Any]) -> _Fault:
    """A JSON object that is not a valid MCP message: the member at fault."""
    if message.get("jsonrpc") != "2.0":
        return (
            INVALID_REQUEST,
            "jsonrpc",
            'Invalid request: jsonrpc must be "2.0"',
            'Send "jsonrpc": "2.0" in every message.',
        )
    if not isinstance(message.get("method"), str):
        missing = "method" not in message
        return (
            INVALID_REQUEST,
            "method",
            f"Invalid request: method {'is missing' if missing else 'must be a string'}",
            'Name the method, e.g. "tools/list".',
        )
    if "id" in message and _readable_id(message) is None:
        return (
            INVALID_REQUEST,
            "id",
            "Invalid request: id must be a string or an integer",
            "Use a string or integer id that is unique among your pending requests.",
        )
    if not isinstance(message.get("params", {}), dict):
        return (
            INVALID_PARAMS,
            "params",
            "Invalid params: params must be an object",
            "Send params as a JSON object (by name), or leave it out.",
        )
    return (
        INVALID_REQUEST,
        None,
        "Invalid request: not a JSON-RPC request, notification or response",
        "See the JSON-RPC 2.0 message shapes in the MCP specification.",
    )


def _refusal(line: str, why: ErrorDetails) -> tuple[RequestId | None, _Fault] | None:
    """The id to answer and the fault, for a line the SDK refused (`why`: its first error);
    None when no answer is due."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError as error:
        where = f"{error.msg} at column {error.colno}"
        return None, (PARSE_ERROR, None, f"Parse error: not JSON ({where})", _NOT_JSON_HINT)
    except RecursionError:
        return None, (PARSE_ERROR, None, "Parse error: nested too deeply", _NOT_JSON_HINT)
    if not isinstance(message, dict):
        what = "a batch (a JSON array)" if isinstance(message, list) else "a JSON scalar"
        return None, (
            INVALID_REQUEST,
            None,
            f"Invalid request: a message is one JSON object, not {what}",
            "Send each message as its own JSON object on its own line.",
        )
    method = message.get("method")
    if "id" not in message and isinstance(method, str) and message.get("jsonrpc") == "2.0":
        # A notification: JSON-RPC forbids answering one, even with an error.
        log.warning("stdio_notification_dropped", method=method[:100], why=why["msg"])
        return None
    if "method" not in message and ("result" in message or "error" in message):
        # A malformed answer to one of our requests: echoing its id would pass for an
        # answer to the client's own request of that id.
        return None, (
            INVALID_REQUEST,
            "result",
            "Invalid request: a response needs an id and a result or error object",
            "Answer a server request with {jsonrpc, id, result: {...}} or {..., error: {...}}.",
        )
    if why["type"] == "json_invalid":
        return _readable_id(message), _unreadable(message, why.get("ctx", {}).get("error", ""))
    return _readable_id(message), _malformed(message)


def screen(line: str) -> str | JSONRPCError | None:
    """One line from the client: the line itself when the SDK will read it, the error to
    answer instead when it would drop it, or None to skip it (blank, or a notification)."""
    if not line.strip():
        return None
    try:
        parsed = jsonrpc_message_adapter.validate_json(line, by_name=False)  # as the SDK does
    except ValidationError as error:
        refusal = _refusal(line, error.errors(include_url=False, include_input=False)[0])
    else:
        # The SDK ignores an id it cannot use (null, true, 1.5, an object) and takes the
        # request for a notification, which is never answered.
        if not isinstance(parsed, JSONRPCNotification) or '"id"' not in line:
            return line
        message = json.loads(line)
        if "id" not in message:
            return line
        refusal = None, _malformed(message)
    if refusal is None:
        return None
    request_id, (code, field, message, hint) = refusal
    data = {"hint": hint} if field is None else {"field": field, "hint": hint}
    return JSONRPCError(
        jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message, data=data)
    )


class _StdinLines(anyio.AsyncFile[str]):
    """stdin as the SDK's stdio transport consumes it (async lines), fed by our thread.

    Lines the SDK would drop never reach it: `screen` turns them into error answers, sent
    through `answer` once `run_stdio` has the SDK's write stream.
    """

    def __init__(self, lines: MemoryObjectReceiveStream[str]) -> None:
        super().__init__(io.StringIO())  # never read: the SDK only iterates, via readline
        self._lines = lines
        self._answer: Callable[[SessionMessage], Awaitable[None]] | None = None
        self._answering = anyio.Event()

    def answer_with(self, send: Callable[[SessionMessage], Awaitable[None]]) -> None:
        self._answer = send
        self._answering.set()

    async def readline(self) -> str:
        while True:
            try:
                line = await self._lines.receive()
            except anyio.EndOfStream:
                return ""
            verdict = screen(line)
            if isinstance(verdict, str):
                return verdict
            if verdict is not None:
                await self._answering.wait()
                assert self._answer is not None
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self._answer(SessionMessage(verdict))


def _read_lines(fd: int, lines: MemoryObjectSendStream[str], token: EventLoopToken) -> None:
    """Thread body: hand each complete line to the loop (backpressure: one at a time)."""
    buffer = bytearray()
    try:
        while chunk := os.read(fd, _CHUNK):
            scanned = len(buffer)
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", max(start, scanned))) >= 0:
                line = buffer[start : end + 1].decode("utf-8", "replace")
                run_in_loop(lines.send, line, token=token)
                start = end + 1
            del buffer[:start]
        if buffer:
            run_in_loop(lines.send, buffer.decode("utf-8", "replace"), token=token)
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.RunFinishedError):
        return  # the server stopped listening (or stdin broke): nothing left to do
    finally:
        with contextlib.suppress(anyio.RunFinishedError):
            run_sync_in_loop(lines.close, token=token)


async def run_stdio(mcp: MCPServer[Any]) -> None:
    """Serve `mcp` on stdin/stdout until the client closes stdin or the task is cancelled.

    Like the SDK, fd 0 points at the null device while serving (a child process cannot
    eat the client's messages) and fd 1 at stderr (a stray print cannot corrupt the wire).
    """
    private = os.dup(0)  # never closed: the reader thread may still block on it at exit
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    send, receive = anyio.create_memory_object_stream[str](0)
    reader = threading.Thread(
        target=_read_lines, args=(private, send, current_token()), name="stdin", daemon=True
    )
    reader.start()
    stdin = _StdinLines(receive)
    try:
        async with receive, stdio_server(stdin=stdin) as (read, write):
            stdin.answer_with(write.send)
            # `run_stdio_async()` takes no stdin of ours; this is its body, on our stream.
            server = mcp._lowlevel_server
            await server.run(read, write, server.create_initialization_options())
    finally:
        os.dup2(private, 0)
