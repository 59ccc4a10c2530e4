"""pvemcp offers no prompts: a prompts/get names an unknown prompt in both protocol eras.

The SDK answered it with code 0 in the handshake era and an internal error (-32603, with a
traceback logged) in the 2026-07-28 era; the official conformance suite saw the second.
MCP specifies invalid params (-32602) for an unknown prompt.
"""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from pvemcp.gateway.invoke import MAX_TOOL_NAME, Gateway
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_unknown_prompt_is_invalid_params_in_both_eras(
    gateway: Gateway, mode: str
) -> None:
    async with Client(build_mcp_server(gateway, local_principal), mode=mode) as client:
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("summarise_cluster", {})
        with pytest.raises(MCPError) as long_name:
            await client.get_prompt("p" * 10_000, {})
    assert caught.value.error.code == INVALID_PARAMS
    assert caught.value.error.message == "Unknown prompt: summarise_cluster"
    # The name is the caller's text: it comes back cut.
    assert long_name.value.error.code == INVALID_PARAMS
    assert len(long_name.value.error.message) < MAX_TOOL_NAME + 64
