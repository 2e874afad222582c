"""Benchmark tools: the server's own cost of a tool round trip, and a turn of three tool calls.

Usage (from the repository root)::

    .venv/bin/python bench/tools.py [--turns 30]

``aichats serve`` (SQLite, one worker) answers with ``test:tools``, which takes no time and
calls the tools its user's text names; an MCP server of three instant tools
(:mod:`mcp_tools`, the SDK's own server) runs beside it, registered as the user's. Each
turn is a new chat, timed from the POST to its ``message.completed`` on the event stream:

- **no tool**: the chat has tools turned off (``tools: []``): one model call;
- **built-in tool**: ``current_time``: two model calls around a call in the process;
- **MCP tool**: one tool of the MCP server: two model calls around an MCP call (the turn's
  session opened, the tool called, the session closed);
- **3 MCP tools**: three tools of the server called at once in one step.

The ceiling, measured in the same run in this process: the MCP SDK's own client doing what
a turn's first call does (open a session, call the tool) with nothing of aichats around it.
The server's own cost of a round trip is then (MCP tool turn - no-tool turn - ceiling): the
step stored, the calls' events and rows, the second model call's setup. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import httpx2
import mcp
from common import (
    CHATS,
    BenchError,
    aichats_server,
    api_call,
    connect,
    create_key,
    free_port,
    log_tail,
    ms,
    open_events,
    percentile,
    run_bench,
    sse_events,
    start_process,
    stop,
    wait_until_listening,
    warn_if_busy,
)
from mcp.client.streamable_http import streamable_http_client

KINDS = {
    "no tool": ("hello there", []),
    "built-in tool": ("current_time", ["current_time"]),
    "MCP tool": ('bench__lookup_a {"key": "k"}', ["bench"]),
    "3 MCP tools": ('bench__lookup_a bench__lookup_b bench__lookup_c {"key": "k"}', ["bench"]),
}
WARM_UP = 3
TURN_SECONDS = 60


def timed_turn(base: str, key: str, text: str, tools: list[str]) -> tuple[float, list[int]]:
    """Seconds from POSTing a new chat to its reply's ``message.completed``, and its tool calls' durations."""
    deadline = time.monotonic() + TURN_SECONDS
    with closing(connect(base, timeout=TURN_SECONDS)) as connection:
        sent = time.perf_counter()
        chat = api_call(connection, "POST", CHATS, key, {"message_text": text, "tools": tools})
        for event, data in sse_events(open_events(connection, key, chat["id"])):
            if event == "message.failed":
                raise BenchError(f"the turn failed: {json.loads(data)['error']}")
            if event == "message.completed":
                took = time.perf_counter() - sent
                calls = json.loads(data)["tool_calls"]
                if len(calls) != text.count("__") + (text == "current_time"):
                    raise BenchError(f"the turn made {len(calls)} tool calls: {calls}")
                if any(call["status"] != "completed" for call in calls):
                    raise BenchError(f"a tool call failed: {calls}")
                return took, [call["duration_ms"] for call in calls]
            if time.monotonic() > deadline:
                raise BenchError(f"a turn took over {TURN_SECONDS} s")
    raise BenchError("the event stream ended before message.completed")


async def raw_mcp_call(url: str, tls: ssl.SSLContext) -> float:
    """What a turn's first MCP call does, with the SDK alone: open a session, call, close
    (its HTTP client given a TLS context made once, as aichats' are)."""
    started = time.perf_counter()
    async with httpx2.AsyncClient(verify=tls) as http:
        async with mcp.Client(streamable_http_client(url, http_client=http)) as client:
            await client.call_tool("lookup_a", {"key": "k"})
    return time.perf_counter() - started


def bench(turns: int, workdir: Path) -> None:
    warn_if_busy()
    port = free_port()
    log = workdir / "mcp.log"
    tools = start_process([sys.executable, str(Path(__file__).with_name("mcp_tools.py")), str(port)], log)
    try:
        wait_until_listening(port, tools, log)
        mcp_url = f"http://127.0.0.1:{port}/mcp"
        url = f"sqlite:///{workdir / 'tools.db'}"
        key = create_key(url, workdir)
        settings = {"AICHATS_MODEL": "test:tools", "AICHATS_WORKERS": "1", "AICHATS_TOOLS_ALLOW_PRIVATE_URLS": "true"}
        with aichats_server(url, workdir, settings) as base, closing(connect(base)) as connection:
            api_call(connection, "POST", "/api/v1/tool_servers", key, {"name": "bench", "url": mcp_url})
            figures: dict[str, list[float]] = {}
            durations: dict[str, list[int]] = {}
            for kind, (text, offered) in KINDS.items():
                for _ in range(WARM_UP):
                    timed_turn(base, key, text, offered)
                runs = [timed_turn(base, key, text, offered) for _ in range(turns)]
                figures[kind] = [took for took, _ in runs]
                durations[kind] = [d for _, calls in runs for d in calls]
            tls = httpx2.create_ssl_context()
            ceiling = [asyncio.run(raw_mcp_call(mcp_url, tls)) for _ in range(WARM_UP + turns)][WARM_UP:]
    finally:
        stop(tools)
        if tools.returncode not in (0, -15):
            print(log_tail(log))
    report(figures, durations, ceiling, turns)


def report(figures: dict[str, list[float]], durations: dict[str, list[int]], ceiling: list[float], turns: int) -> None:
    print(f"\n{turns} turns each, one at a time (SQLite, test:tools, one worker); ms from POST to message.completed")
    print(f"  {'turn':<16} {'p50':>7} {'p90':>7}  {'tool call p50 (duration_ms)':>28}")
    for kind, values in figures.items():
        tool = f"{statistics.median(durations[kind]):.0f}" if durations[kind] else "-"
        print(f"  {kind:<16} {ms(statistics.median(values)):7.1f} {ms(percentile(values, 90)):7.1f}  {tool:>28}")
    raw = statistics.median(ceiling)
    print(f"  {'ceiling: MCP SDK alone, open + call + close':<46} {ms(raw):7.1f}")
    none = statistics.median(figures["no tool"])
    round_trip = statistics.median(figures["MCP tool"]) - none
    print(f"\n  an MCP round trip adds {ms(round_trip):.1f} ms to a turn: {round_trip / raw:.2f}x the SDK alone;")
    print(f"  the server's own part (beyond the SDK's {ms(raw):.1f} ms): {ms(round_trip - raw):.1f} ms")
    builtin = statistics.median(figures["built-in tool"]) - none
    print(f"  a built-in tool's round trip (no MCP): {ms(builtin):.1f} ms")
    three = statistics.median(figures["3 MCP tools"]) - none
    print(f"  three MCP calls at once add {ms(three):.1f} ms ({three / round_trip:.2f}x one call)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See bench/README.md.")
    parser.add_argument("--turns", type=int, default=30, help="timed turns of each kind (default: 30)")
    args = parser.parse_args(argv)
    return run_bench("tools", lambda workdir: bench(args.turns, workdir), "servers stopped, temp files removed")


if __name__ == "__main__":
    sys.exit(main())
