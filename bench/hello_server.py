"""The floor for `bench.py`'s cold start and memory: the MCP SDK's hello-world server.

One `MCPServer` with one trivial tool on stdio, as the SDK's own examples write it, so that
spawn → `tools/list` here is what any server on the same SDK, Python and machine pays;
`pvemcp`'s figures are printed next to it as a difference and a ratio.
"""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("hello")


@mcp.tool()
def hello(name: str) -> str:
    """Say hello."""
    return f"hello {name}"


if __name__ == "__main__":
    mcp.run("stdio")
