"""MCP over stdio: the caller is the local operator who started the process.

stdin is read by a daemon thread of our own rather than by the SDK's default (anyio worker
threads): those are shielded from cancellation and joined at exit, so a read blocked on an
idle stdin would keep a signalled process, and in `both` mode its HTTP port, alive until
the client wrote again. Raw `os.read` calls, not the buffered `sys.stdin`, so interpreter
shutdown never waits on a lock that thread holds.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from typing import Any

import anyio
from anyio.from_thread import run as run_in_loop
from anyio.from_thread import run_sync as run_sync_in_loop
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from pvemcp.policy.principal import Principal

_LOCAL = Principal.local("stdio")
_CHUNK = 64 * 1024


def local_principal(_: ServerRequestContext[Any, Any] | None) -> Principal:
    return _LOCAL


class _StdinLines(anyio.AsyncFile[str]):
    """stdin as the SDK's stdio transport consumes it (async lines), fed by our thread."""

    def __init__(self, lines: MemoryObjectReceiveStream[str]) -> None:
        super().__init__(io.StringIO())  # never read: the SDK only iterates, via readline
        self._lines = lines

    async def readline(self) -> str:
        try:
            return await self._lines.receive()
        except anyio.EndOfStream:
            return ""


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
    try:
        async with receive, stdio_server(stdin=_StdinLines(receive)) as (read, write):
            # `run_stdio_async()` takes no stdin of ours; this is its body, on our stream.
            server = mcp._lowlevel_server
            await server.run(read, write, server.create_initialization_options())
    finally:
        os.dup2(private, 0)
