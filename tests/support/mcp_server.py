"""A real MCP server for tests, built with the official SDK, and servers that are not MCP.

Run it as ``python -m tests.support.mcp_server --transport streamable-http --port N`` (it serves
``/mcp``) or ``--transport stdio``. Its tools are deterministic:

- ``weekly_revenue(week)``, read-only: ``Revenue 2026-W49: 48,210 EUR``, derived from the week;
- ``delete_record(record_id)``, destructive;
- ``slow(seconds)``, read-only: sleeps, then answers;
- ``huge()``, read-only: 1,000,000 characters;
- ``fails()``, read-only: an ``isError`` result;
- ``html()``, read-only: markup that must stay text (``<img src=x onerror=alert(1)>``);
- ``chart()``, read-only: a text part and a PNG image part;
- ``totals()``, read-only: only ``structuredContent``, no text;
- ``crash()``: the server's process ends at once, as in a crash.

``--odd-tools`` adds two tools a client must skip (a name with a space, a schema whose
``properties`` is not an object); ``--page-size N`` lists the tools N per page; ``--tools a,b``
lists only those.

In the test process: :func:`serving_mcp` starts the server on a loopback port and stops it;
:func:`garbage_server` answers every request with bytes that are not MCP,
:func:`redirecting_server` with a redirect, and :func:`silent_server` never answers.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
    ImageContent,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

from tests.support.servers import free_port, terminate
from tests.support.waiting import wait_for

ROOT = Path(__file__).parents[2]
READ_ONLY = ToolAnnotations(read_only_hint=True)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True)
HUGE_CHARS = 1_000_000
# What a client lists, in order (the odd tools are skipped).
TOOL_NAMES = ["weekly_revenue", "delete_record", "slow", "huge", "fails", "html", "chart", "totals", "crash"]
# The smallest valid PNG (1x1, transparent): what ``chart`` sends as its image part.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")


def revenue(week: str) -> str:
    """What ``weekly_revenue`` answers: 48,210 EUR for 2026-W49, and a different figure for each week."""
    match = _WEEK.fullmatch(week)
    if match is None or not 1 <= int(match[2]) <= 53:
        raise ToolError(f"week must be an ISO week such as 2026-W49, not {week!r}")
    offset = (int(match[1]) - 2026) * 53 + int(match[2]) - 49
    return f"Revenue {week}: {40_000 + (8_210 + offset * 1_337) % 20_000:,} EUR"


class TestServer(MCPServer):
    """The SDK's server, listing its tools ``page_size`` per page, with odd tools if asked, or
    only some (``only``: the others are not listed, and still answer)."""

    def __init__(self, *, page_size: int | None, odd_tools: bool, only: list[str] | None) -> None:
        super().__init__("aichats-test-tools")
        self.page_size = page_size
        self.odd_tools = odd_tools
        self.only = only

    async def list_tools(self) -> list[Tool]:
        tools = [tool for tool in await super().list_tools() if self.only is None or tool.name in self.only]
        if self.odd_tools:
            tools.append(Tool(name="has space", input_schema={"type": "object"}, description="A name no client takes."))
            odd_schema = {"type": "object", "properties": ["week"]}  # properties must be an object
            tools.append(Tool(name="odd_schema", input_schema=odd_schema, description="A schema no client takes."))
        return tools

    async def _handle_list_tools(self, ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        tools = await self.list_tools()
        if self.page_size is None:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


def build(*, page_size: int | None = None, odd_tools: bool = False, only: list[str] | None = None) -> TestServer:
    server = TestServer(page_size=page_size, odd_tools=odd_tools, only=only)

    @server.tool(annotations=READ_ONLY)
    def weekly_revenue(week: str) -> str:
        """Revenue of one ISO week (e.g. 2026-W49)."""
        return revenue(week)

    @server.tool(annotations=DESTRUCTIVE)
    def delete_record(record_id: str) -> str:
        """Delete one record, for good."""
        return f"Deleted record {record_id}"

    @server.tool(annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        """Answer after some seconds."""
        await anyio.sleep(seconds)
        return f"Slept {seconds:g} s"

    @server.tool(annotations=READ_ONLY)
    def huge() -> str:
        """A very long answer."""
        return ("0123456789" * (HUGE_CHARS // 10 + 1))[:HUGE_CHARS]

    @server.tool(annotations=READ_ONLY)
    def fails() -> str:
        """Always fails."""
        raise ToolError("the records service is down")

    @server.tool(annotations=READ_ONLY)
    def html() -> str:
        """Markup that must reach the model, and any page, as text."""
        return "<img src=x onerror=alert(1)>"

    @server.tool(annotations=READ_ONLY)
    def chart() -> CallToolResult:
        """A caption and an image."""
        image = ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png")
        return CallToolResult(content=[TextContent(text="Revenue chart:"), image])

    @server.tool(annotations=READ_ONLY)
    def totals() -> CallToolResult:
        """Structured figures only, no text."""
        return CallToolResult(content=[], structured_content={"week": "2026-W49", "total_eur": 48210})

    @server.tool(annotations=READ_ONLY)
    def crash() -> str:
        """End the server's process at once, as a crash would."""
        os._exit(70)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transport", choices=("streamable-http", "stdio"), required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--odd-tools", action="store_true")
    parser.add_argument("--tools", help="comma-separated: list only these tools")
    options = parser.parse_args()
    only = options.tools.split(",") if options.tools else None
    server = build(page_size=options.page_size, odd_tools=options.odd_tools, only=only)
    if options.transport == "stdio":
        server.run("stdio")
    else:
        server.settings.log_level = "WARNING"
        server.run("streamable-http", host="127.0.0.1", port=options.port)


# ----------------------------------------------------------------------------- in the tests


def command(*options: str) -> list[str]:
    """The command that runs this server (``options`` as in :func:`main`)."""
    return [sys.executable, "-m", "tests.support.mcp_server", *options]


@dataclass
class McpProcess:
    """The server running as a process, over Streamable HTTP at ``url``."""

    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to its clients."""
        self.process.kill()
        self.process.wait(10)


@contextmanager
def serving_mcp(*options: str, port: int | None = None) -> Iterator[McpProcess]:
    """The server over Streamable HTTP on loopback (``port``, else a free one), once it accepts
    connections; stopped after."""
    port = port or free_port()
    process = subprocess.Popen(
        command("--transport", "streamable-http", "--port", str(port), *options),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _accepts(port, process), 30, "the MCP server to listen")
        yield McpProcess(f"http://127.0.0.1:{port}/mcp", process)
    finally:
        terminate(process)


def _accepts(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the MCP server exited with {process.returncode}")
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class HttpServer:
    """A plain HTTP server on loopback: its endpoint's URL, and the headers of each request it got."""

    url: str
    requests: list[dict[str, str]]


@contextmanager
def _http_server(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[HttpServer]:
    """An HTTP server on loopback whose every answer is ``respond(handler)``."""
    requests: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.answer()

        def do_DELETE(self) -> None:
            self.answer()

        def answer(self) -> None:
            requests.append({name.lower(): value for name, value in self.headers.items()})
            respond(self)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}/mcp", requests)
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def garbage_server(content_type: str = "text/html", size: int = 0) -> Iterator[HttpServer]:
    """An HTTP endpoint answering 200 with bytes that are not MCP (``size`` of them, if given)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        body = b"x" * size if size else b"<html>It works! This is not an MCP server.</html>"
        handler.send_response(200)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with _http_server(respond) as server:
        yield server


@contextmanager
def redirecting_server(location: str) -> Iterator[HttpServer]:
    """An HTTP endpoint answering every request with a 307 redirect to ``location``."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("location", location)
        handler.send_header("content-length", "0")
        handler.end_headers()

    with _http_server(respond) as server:
        yield server


@contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel does) and never answers; yields an MCP URL on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"


if __name__ == "__main__":
    main()
