"""Malformed lines on stdio each get a JSON-RPC error, and the server keeps serving.

The SDK drops a line it cannot read as a JSON-RPC message, so before the stdio transport
screened them, a client that sent one of these waited forever (issue 10 #24). Each case
writes one raw line to a real `pvemcp demo` process, expects its error answer within a
couple of seconds, then a ping on the same pipe to be answered next (so nothing else was
written in between, and the server is still serving).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DEEP = "[" * 250 + "]" * 250


class StdioPeer:
    """A raw client of a `pvemcp demo` subprocess: lines out, lines in, with deadlines."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._pings = 1000

    def write(self, line: bytes) -> None:
        self._stdin.write(line + b"\n")
        self._stdin.flush()

    def read(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next message the server writes, or fail after `timeout` seconds."""
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        assert ready, f"no answer within {timeout} s"
        line = self._stdout.readline()
        assert line, "the server closed stdout"
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._pings += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self._pings, "method": method}
        if params is not None:
            body["params"] = params
        self.write(json.dumps(body).encode())
        answer = self.read(timeout=20)
        assert answer["id"] == self._pings, answer
        return answer

    def still_serving(self) -> None:
        assert self.request("ping") == {"jsonrpc": "2.0", "id": self._pings, "result": {}}


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioPeer]:
    """One demo process for the module, past the handshake (starting one costs seconds)."""
    tmp = tmp_path_factory.mktemp("stdio")
    env = {
        **os.environ,
        "PVEMCP_AUDIT__PATH": str(tmp / "audit.jsonl"),
        "PVEMCP_SIMULATOR__TIME_SCALE": "0",
    }
    for key in ("PVEMCP_API_URL", "PVEMCP_CONFIG"):
        env.pop(key, None)
    with (tmp / "stderr.log").open("wb") as errlog:
        process = subprocess.Popen(
            [sys.executable, "-m", "pvemcp", "demo"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
        peer = StdioPeer(process)
        try:
            hello = {"name": "raw", "version": "0"}
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": hello}
            assert "result" in peer.request("initialize", init)
            peer.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            yield peer
        finally:
            process.kill()
            process.wait(10)
            for stream in (process.stdin, process.stdout):
                assert stream is not None
                stream.close()


def tool_call(arguments: str, request_id: int = 7) -> bytes:
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"proxmox_guest_get","arguments":{arguments}}}}}'
    ).encode()


# line, the code, the id and the field (error.data.field) of the answer
CASES: dict[str, tuple[bytes, int, int | None, str | None]] = {
    "unparseable": (b'{"jsonrpc":"2.0","id":3,"method":', -32700, None, None),
    "not utf-8 json": (b"\xff\xfe{", -32700, None, None),
    "params as a list": (
        b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":[]}',
        -32602,
        4,
        "params",
    ),
    "params as a string": (
        b'{"jsonrpc":"2.0","id":5,"method":"ping","params":"x"}',
        -32602,
        5,
        "params",
    ),
    "lone surrogate": (tool_call('{"vmid":"\\ud800"}'), -32602, 7, "params.arguments.vmid"),
    "lone surrogate in a key": (tool_call('{"\\udfff":1}', 8), -32602, 8, "params.arguments"),
    "nested 250 deep": (tool_call(f'{{"vmid":{DEEP}}}', 9), -32602, 9, "params"),
    "a batch": (b'[{"jsonrpc":"2.0","id":10,"method":"ping"}]', -32600, None, None),
    "a scalar": (b"42", -32600, None, None),
    "jsonrpc 1.0": (b'{"jsonrpc":"1.0","id":11,"method":"ping"}', -32600, 11, "jsonrpc"),
    "no method": (b'{"jsonrpc":"2.0","id":12}', -32600, 12, "method"),
    "method not a string": (b'{"jsonrpc":"2.0","id":13,"method":7}', -32600, 13, "method"),
    # The SDK reads these as notifications (it ignores the id) and never answers them.
    "id null": (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600, None, "id"),
    "id true": (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600, None, "id"),
    "id a float": (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', -32600, None, "id"),
    "id a surrogate": (b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', -32600, None, "id"),
    # A malformed answer to a server request: its id is the server's, not echoed back.
    "response without result": (b'{"jsonrpc":"2.0","id":14,"result":[]}', -32600, None, "result"),
}


@pytest.mark.parametrize("name", CASES)
def test_a_malformed_request_is_answered_with_a_jsonrpc_error(peer: StdioPeer, name: str) -> None:
    line, code, request_id, field = CASES[name]
    peer.write(line)
    answer = peer.read()
    assert answer["id"] == request_id, answer
    error = answer["error"]
    assert error["code"] == code, error
    assert error["data"].get("field") == field, error
    assert error["data"]["hint"], error
    if field is not None:
        assert field in error["message"], "the message names the member at fault"
    peer.still_serving()


def test_malformed_notifications_and_blank_lines_get_no_answer(peer: StdioPeer) -> None:
    """JSON-RPC forbids answering a notification, even a malformed one."""
    peer.write(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":[]}')
    peer.write(b"   ")
    peer.write(b"")
    started = time.monotonic()
    peer.still_serving()  # the ping's answer is the very next line
    assert time.monotonic() - started < 2


def test_a_valid_call_after_the_screening_still_works(peer: StdioPeer) -> None:
    """Lines that pass the screen reach the SDK unchanged: a real tool call round-trips."""
    answer = peer.request("tools/call", {"name": "proxmox_guest_get", "arguments": {"vmid": 104}})
    assert answer["result"]["structuredContent"]["name"] == "db01"
    bad = peer.request("tools/call", {"name": "proxmox_guest_get", "arguments": {"vmid": "\u00e9"}})
    assert bad["result"]["isError"], "a wrong but well-formed argument is the gateway's to refuse"
