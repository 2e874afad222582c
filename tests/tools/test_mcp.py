"""Speaking MCP to real servers (the SDK's, over Streamable HTTP and stdio, and servers that are
not MCP): listing, calling, and every way a server can fail a call without the call raising or
anything hanging."""

from __future__ import annotations

import asyncio
import time

import mcp_types
import pytest

from aichats.tools import Endpoint, ToolOutcome, ToolServerError, mcp, url_policy
from tests.support.mcp_server import (
    HUGE_CHARS,
    TOOL_NAMES,
    McpProcess,
    command,
    garbage_server,
    redirecting_server,
    serving_mcp,
    silent_server,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio
ALLOW = url_policy(allow_private=True)
REFUSE = url_policy(allow_private=False)
_STDIO_COMMAND = command("--transport", "stdio")
STDIO = Endpoint("local", command=_STDIO_COMMAND[0], args=tuple(_STDIO_COMMAND[1:]), trusted=True)


def http(server: McpProcess, **headers: str) -> Endpoint:
    return Endpoint("revenue", url=server.url, headers=headers)


async def call(
    sessions: mcp.Sessions, endpoint: Endpoint, tool: str, timeout: float = 10, **arguments: object
) -> ToolOutcome:
    return await sessions.call(endpoint, tool, dict(arguments), timeout=timeout, max_chars=20_000)


async def settled() -> None:
    """Once sessions are closed, no task of theirs is left (a moment for callbacks to run):
    only the test's own, and the test runner's."""
    await asyncio.sleep(0.05)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert [task for task in others if "_call_in_runner_task" not in repr(task.get_coro())] == []
    assert mcp._HELD == set()


# ----------------------------------------------------------------------------- listing


async def test_lists_every_page_skipping_tools_a_model_cannot_take(mcp_server: McpProcess) -> None:
    tools = await mcp.list_tools(http(mcp_server), ALLOW, timeout=10)
    assert [tool.name for tool in tools] == TOOL_NAMES  # three pages; "has space" and "odd_schema" skipped
    by_name = {tool.name: tool for tool in tools}
    revenue, delete = by_name["weekly_revenue"], by_name["delete_record"]
    assert revenue.description == "Revenue of one ISO week (e.g. 2026-W49)."
    assert revenue.input_schema["properties"]["week"]["type"] == "string"
    assert (revenue.read_only, revenue.destructive, revenue.changes_things) == (True, False, False)
    assert (delete.read_only, delete.destructive, delete.changes_things) == (False, True, True)
    await settled()


async def test_lists_over_stdio() -> None:
    tools = await mcp.list_tools(STDIO, ALLOW, 20)
    assert [tool.name for tool in tools] == TOOL_NAMES
    await settled()


async def test_a_server_that_is_not_mcp_cannot_be_listed() -> None:
    with garbage_server() as html_page, garbage_server("application/json") as bad_json:
        with pytest.raises(ToolServerError, match="Unexpected content type: text/html"):
            await mcp.list_tools(Endpoint("g", url=html_page.url), ALLOW, 5)
        with pytest.raises(ToolServerError, match=r"not MCP \(not JSON-RPC\)"):
            await mcp.list_tools(Endpoint("g", url=bad_json.url), ALLOW, 5)
        async with mcp.Sessions(ALLOW) as sessions:
            outcome = await call(sessions, Endpoint("g", url=bad_json.url), "weekly_revenue", week="2026-W49")
        assert outcome.is_error and "not MCP" in outcome.text
    with pytest.raises(ToolServerError, match="the connection failed"):
        await mcp.list_tools(Endpoint("g", url=f"http://127.0.0.1:{free_port()}/mcp"), ALLOW, 5)
    with pytest.raises(ToolServerError, match="its command was not found"):
        await mcp.list_tools(Endpoint("g", command="/nonexistent/mcp-server", trusted=True), ALLOW, 5)
    await settled()


async def test_an_answer_too_large_is_not_read_whole() -> None:
    with garbage_server("application/json", size=mcp.MAX_RESPONSE_BYTES + 1) as server:
        with pytest.raises(ToolServerError, match="the server sent more than 8 MB at once"):
            await mcp.list_tools(Endpoint("g", url=server.url), ALLOW, 10)
    await settled()


async def test_a_server_that_never_answers_fails_within_the_timeout() -> None:
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(ToolServerError, match="did not answer within 1 s"):
            await mcp.list_tools(Endpoint("g", url=url), ALLOW, 1)
        assert time.monotonic() - started < 2
        async with mcp.Sessions(ALLOW) as sessions:
            outcome = await call(sessions, Endpoint("g", url=url), "weekly_revenue", timeout=1, week="2026-W49")
        assert outcome.is_error and "did not answer within 1 s" in outcome.text
        assert time.monotonic() - started < 4
    await settled()


async def test_headers_are_sent_with_every_request() -> None:
    with garbage_server() as server:
        with pytest.raises(ToolServerError):
            await mcp.list_tools(Endpoint("g", url=server.url, headers={"Authorization": "Bearer s3cret"}), ALLOW, 5)
    assert server.requests and all(r["authorization"] == "Bearer s3cret" for r in server.requests)


# ----------------------------------------------------------------------------- the outbound rule

LOOPBACK_SPELLINGS = ["127.0.0.1", "2130706433", "0x7f.1", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "localhost"]


async def test_user_servers_may_not_reach_private_addresses_in_any_spelling() -> None:
    """The rule is what refuses them: allowed, the same URLs reach the server."""
    with garbage_server() as server:
        port = server.url.split(":")[2].split("/")[0]
        for host in LOOPBACK_SPELLINGS:
            url = f"http://{host}:{port}/mcp"
            with pytest.raises(ToolServerError, match="AICHATS_TOOLS_ALLOW_PRIVATE_URLS=true"):
                await mcp.list_tools(Endpoint("g", url=url), REFUSE, 5)
            async with mcp.Sessions(REFUSE) as sessions:
                outcome = await call(sessions, Endpoint("g", url=url), "weekly_revenue", week="2026-W49")
            assert outcome.is_error and "AICHATS_TOOLS_ALLOW_PRIVATE_URLS=true" in outcome.text
        assert server.requests == []
        for host in LOOPBACK_SPELLINGS:
            with pytest.raises(ToolServerError, match="Unexpected content type"):
                await mcp.list_tools(Endpoint("g", url=f"http://{host}:{port}/mcp"), ALLOW, 5)
        assert len(server.requests) >= len(LOOPBACK_SPELLINGS)
    await settled()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.0.0.1/mcp", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://[::1]:8000/mcp", "a loopback address"),
        ("http://[fc00::1]/mcp", "a private address"),
        ("http://0177.0.0.1/mcp", "not valid"),  # octal: httpx2 refuses it, refused all the same
        ("ftp://example.com/mcp", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("http://exa mple.com/mcp", "whitespace"),
    ],
)
async def test_refused_urls(url: str, says: str) -> None:
    with pytest.raises(ToolServerError, match=says):
        await mcp.list_tools(Endpoint("g", url=url), REFUSE, 5)


async def test_a_redirect_to_another_address_is_not_followed(mcp_server: McpProcess) -> None:
    """Even where private addresses are allowed: the SDK follows a redirect only within the
    URL's origin, whose address the connection checked."""
    with garbage_server() as target:
        for location in (target.url, "http://169.254.169.254/latest/meta-data/", mcp_server.url):
            with redirecting_server(location) as redirecting:
                with pytest.raises(ToolServerError, match=f"Redirect to {location} not followed"):
                    await mcp.list_tools(Endpoint("g", url=redirecting.url), ALLOW, 5)
                assert redirecting.requests
    assert target.requests == []
    await settled()


async def test_operator_servers_are_trusted_and_kept_private(mcp_server: McpProcess) -> None:
    trusted = Endpoint("ops", url=mcp_server.url, trusted=True)
    assert [tool.name for tool in await mcp.list_tools(trusted, REFUSE, 10)] == TOOL_NAMES
    async with mcp.Sessions(REFUSE) as sessions:
        assert await call(sessions, trusted, "html") == ToolOutcome("<img src=x onerror=alert(1)>")
        down = Endpoint("ops", url=f"http://127.0.0.1:{free_port()}/internal-mcp", trusted=True)
        outcome = await call(sessions, down, "html")
    # Its address is the operator's, not for users (or their model) to read in an error.
    assert outcome.is_error and "tool server ops" in outcome.text and "internal-mcp" not in outcome.text
    await settled()


# ----------------------------------------------------------------------------- calling


async def test_results_as_the_model_reads_them(mcp_server: McpProcess) -> None:
    revenue = http(mcp_server)
    async with mcp.Sessions(ALLOW) as sessions:
        assert await call(sessions, revenue, "weekly_revenue", week="2026-W49") == ToolOutcome(
            "Revenue 2026-W49: 48,210 EUR"
        )
        assert await call(sessions, revenue, "weekly_revenue", week="2026-W50") == ToolOutcome(
            "Revenue 2026-W50: 49,547 EUR"
        )
        assert await call(sessions, revenue, "html") == ToolOutcome("<img src=x onerror=alert(1)>")
        assert await call(sessions, revenue, "chart") == ToolOutcome("Revenue chart:\n[image/png, 68 bytes]")
        assert await call(sessions, revenue, "totals") == ToolOutcome('{"week": "2026-W49", "total_eur": 48210}')
        fails = await call(sessions, revenue, "fails")
        assert fails.is_error and fails.text.endswith("the records service is down")
        unknown = await call(sessions, revenue, "no_such_tool")
        assert unknown.is_error and "no_such_tool" in unknown.text
        invalid = await call(sessions, revenue, "weekly_revenue", week=49)
        assert invalid.is_error and "week" in invalid.text
        wrong_week = await call(sessions, revenue, "weekly_revenue", week="last week")
        assert wrong_week.is_error and "ISO week" in wrong_week.text
        assert len(sessions._sessions) == 1  # one session served every call
    await settled()


async def test_calls_over_stdio_share_one_process() -> None:
    async with mcp.Sessions(ALLOW) as sessions:
        outcomes = await asyncio.gather(*(call(sessions, STDIO, "slow", timeout=20, seconds=0.5) for _ in range(4)))
        assert outcomes == [ToolOutcome("Slept 0.5 s")] * 4
        assert await call(sessions, STDIO, "weekly_revenue", week="2026-W49") == ToolOutcome(
            "Revenue 2026-W49: 48,210 EUR"
        )
    await settled()


async def test_concurrent_calls_share_one_session(mcp_server: McpProcess) -> None:
    async with mcp.Sessions(ALLOW) as sessions:
        await call(sessions, http(mcp_server), "html")  # the session is open
        started = time.monotonic()
        outcomes = await asyncio.gather(*(call(sessions, http(mcp_server), "slow", seconds=1) for _ in range(10)))
        assert outcomes == [ToolOutcome("Slept 1 s")] * 10
        assert time.monotonic() - started < 5  # at once, not one after the other (10 s)
        assert len(sessions._sessions) == 1
    await settled()


async def test_a_slow_call_times_out_and_the_session_serves_the_next(mcp_server: McpProcess) -> None:
    async with mcp.Sessions(ALLOW) as sessions:
        started = time.monotonic()
        outcome = await call(sessions, http(mcp_server), "slow", timeout=1, seconds=30)
        assert time.monotonic() - started < 2  # the timeout, and a moment
        assert outcome == ToolOutcome(
            f"The tool slow of the tool server revenue ({mcp_server.url}) did not answer within 1 s.", is_error=True
        )
        assert await call(sessions, http(mcp_server), "html") == ToolOutcome("<img src=x onerror=alert(1)>")
    await settled()


async def test_a_huge_result_is_cut_saying_how_much(mcp_server: McpProcess) -> None:
    async with mcp.Sessions(ALLOW) as sessions:
        outcome = await sessions.call(http(mcp_server), "huge", {}, timeout=10, max_chars=1000)
    assert not outcome.is_error and len(outcome.text) <= 1000
    kept, note = outcome.text.split("\n")
    assert kept == ("0123456789" * 100)[: len(kept)]
    assert note == f"[cut: {HUGE_CHARS - len(kept):,} more characters of {HUGE_CHARS:,}]"
    await settled()


async def test_a_server_killed_mid_call_is_an_error_and_nothing_hangs() -> None:
    with serving_mcp() as server:
        async with mcp.Sessions(ALLOW) as sessions:
            pending = asyncio.create_task(call(sessions, http(server), "slow", timeout=30, seconds=30))
            await asyncio.sleep(1)  # the call is under way
            started = time.monotonic()
            server.kill()
            outcome = await pending
            assert outcome.is_error and "connection" in outcome.text, outcome
            assert time.monotonic() - started < 5
            after = await call(sessions, http(server), "html", timeout=5)
            assert after.is_error and "connection" in after.text, after
        assert time.monotonic() - started < 10
    await settled()


async def test_a_stdio_server_that_dies_mid_call_is_an_error() -> None:
    async with mcp.Sessions(ALLOW) as sessions:
        pending = asyncio.create_task(call(sessions, STDIO, "slow", timeout=30, seconds=30))
        await asyncio.sleep(2)  # the process started, and the call is under way
        started = time.monotonic()
        crashed = await call(sessions, STDIO, "crash", timeout=10)
        outcome = await pending
        assert crashed.is_error and outcome.is_error and "connection closed" in outcome.text, (crashed, outcome)
        assert time.monotonic() - started < 5
    await settled()


async def test_a_cancelled_turn_cancels_its_calls_and_closes_its_sessions(mcp_server: McpProcess) -> None:
    started = time.monotonic()
    async with mcp.Sessions(ALLOW) as sessions:
        pending = asyncio.create_task(call(sessions, http(mcp_server), "slow", timeout=30, seconds=30))
        await asyncio.sleep(0.5)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    assert time.monotonic() - started < 5
    await settled()
    async with mcp.Sessions(ALLOW) as sessions:  # the server is none the worse
        assert await call(sessions, http(mcp_server), "html") == ToolOutcome("<img src=x onerror=alert(1)>")


async def test_cut() -> None:
    assert mcp.cut("short", 100) == "short"
    text = "x" * 250
    for limit in (100, 120, 200, 249):
        cut = mcp.cut(text, limit)
        assert len(cut) <= limit and cut.startswith("x") and cut.endswith("of 250]")
        kept = len(cut.split("\n")[0])
        assert f"[cut: {250 - kept} more characters" in cut


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (None, (False, True)),  # MCP's defaults: not read-only, so destructive
        ({"read_only_hint": True}, (True, False)),  # destructiveHint means something only when not read-only
        ({"read_only_hint": True, "destructive_hint": True}, (True, True)),
        ({"read_only_hint": False, "destructive_hint": False}, (False, False)),  # additive: still changes things
        ({"destructive_hint": False}, (False, False)),
        ({"title": "Only a title"}, (False, True)),
    ],
)
async def test_annotations_and_their_defaults(hints: dict[str, object] | None, expected: tuple[bool, bool]) -> None:
    annotations = None if hints is None else mcp_types.ToolAnnotations.model_validate(hints)
    tool = mcp_types.Tool(name="t", input_schema={"type": "object"}, annotations=annotations)
    info = mcp.tool_info(tool)
    assert info is not None
    assert (info.read_only, info.destructive) == expected
    assert info.changes_things == (expected != (True, False))
    assert info.description == ""  # none given
