"""The MCP server of ``bench/tools.py``: three instant, read-only tools (the SDK's own server).

Usage: ``python bench/mcp_tools.py PORT`` serves Streamable HTTP at ``http://127.0.0.1:PORT/mcp``.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)


def build() -> MCPServer:
    server = MCPServer("aichats-bench-tools")
    for name in ("lookup_a", "lookup_b", "lookup_c"):

        def lookup(key: str, name: str = name) -> str:
            return f"{name}({key}) = 42"

        server.tool(name=name, description=f"Look a key up ({name}).", annotations=READ_ONLY)(lookup)
    return server


if __name__ == "__main__":
    app = build()
    app.settings.log_level = "WARNING"
    app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
