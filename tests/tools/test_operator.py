"""The operator's servers: listed when first needed, kept 5 minutes, a failing one offering no
tools and tried again only after a backoff, concurrent callers sharing one listing. Time is a
clock the test moves; the servers are real."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aichats.config import Settings
from aichats.tools.operator import REFRESH_SECONDS, RETRY_SECONDS, OperatorServers
from tests.support.mcp_server import TOOL_NAMES, McpProcess, command, garbage_server, serving_mcp
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def operator(*servers: dict[str, Any]) -> tuple[OperatorServers, Clock]:
    clock = Clock()
    settings = Settings(tool_servers=list(servers), tool_timeout_seconds=10)
    return OperatorServers(settings, clock=clock), clock


async def test_lists_each_server_over_http_and_stdio(mcp_server: McpProcess) -> None:
    stdio = command("--transport", "stdio")
    servers, _ = operator(
        {"name": "crm", "url": mcp_server.url, "headers": {"Authorization": "Bearer x"}},
        {"name": "files", "command": stdio[0], "args": stdio[1:]},
        {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp"},
    )
    assert [(e.name, e.trusted) for e in servers.endpoints()] == [("crm", True), ("files", True), ("down", True)]
    assert servers.endpoints()[0].headers == {"Authorization": "Bearer x"}
    listed = await servers.tools()
    assert {name: [tool.name for tool in tools] for name, tools in listed.items()} == {
        "crm": TOOL_NAMES,
        "files": TOOL_NAMES,
        "down": [],
    }


async def listed_again(servers: OperatorServers) -> None:
    """Until the listings under way (in the background) have ended."""
    await asyncio.gather(*list(servers._pending.values()))


async def test_lists_are_kept_five_minutes_then_listed_again_in_the_background() -> None:
    with serving_mcp() as server:
        servers, clock = operator({"name": "crm", "url": server.url})
        assert len((await servers.tools())["crm"]) == len(TOOL_NAMES)
        server.kill()
        clock.now += REFRESH_SECONDS - 1
        assert len((await servers.tools())["crm"]) == len(TOOL_NAMES)  # kept: not listed again
        assert not servers._pending
    clock.now += 1
    # Old: listed again, but this caller (a turn) does not wait for it: it gets the list it had.
    assert len((await servers.tools())["crm"]) == len(TOOL_NAMES)
    await listed_again(servers)
    assert (await servers.tools())["crm"] == []  # the server is gone


async def test_a_failing_server_is_tried_again_only_after_a_backoff(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    servers, clock = operator({"name": "crm", "url": f"http://127.0.0.1:{port}/mcp"})
    assert (await servers.tools())["crm"] == []
    assert f"operator tool server crm (http://127.0.0.1:{port}/mcp) offers no tools for 30 s" in caplog.text
    assert "the connection failed" in caplog.text
    with serving_mcp(port=port):
        assert (await servers.tools())["crm"] == []  # not tried again yet
        clock.now += RETRY_SECONDS
        assert (await servers.tools())["crm"] == []  # tried again, in the background
        await listed_again(servers)
        assert len((await servers.tools())["crm"]) == len(TOOL_NAMES)


async def test_concurrent_callers_share_one_listing() -> None:
    with garbage_server() as server:
        alone, _ = operator({"name": "g", "url": server.url})
        await alone.tools()
        one_listing = len(server.requests)
        assert one_listing > 0
        server.requests.clear()
        shared, _ = operator({"name": "g", "url": server.url})
        results = await asyncio.gather(*(shared.tools() for _ in range(10)))
        assert results == [{"g": []}] * 10
        assert len(server.requests) == one_listing


async def test_a_caller_that_gives_up_leaves_the_listing_to_the_others(mcp_server: McpProcess) -> None:
    servers, _ = operator({"name": "crm", "url": mcp_server.url})
    impatient = asyncio.create_task(servers.tools())
    patient = asyncio.create_task(servers.tools())
    await asyncio.sleep(0)
    impatient.cancel()
    assert len((await patient)["crm"]) == len(TOOL_NAMES)
    with pytest.raises(asyncio.CancelledError):
        await impatient
