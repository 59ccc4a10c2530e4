"""Calling a tool through a `Session` and reading its answer, for the tool tests."""

from __future__ import annotations

from typing import Any

from mcp.types import CallToolResult

from tests.tools.test_examples import Session, error_of


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that succeeded."""
    assert not result.is_error, error_of(result)
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def refused(result: CallToolResult) -> dict[str, Any]:
    """The error of a call that failed."""
    error = error_of(result)
    assert error is not None, result.structured_content
    return error


async def call(session: Session, tool: str, **arguments: Any) -> CallToolResult:
    return await session.client.call_tool(tool, arguments)
