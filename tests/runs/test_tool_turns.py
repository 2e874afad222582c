"""The turn as a loop (docs/tools.md): tool calls run at once, each stored, a crash resumed
without calling a finished tool again, failures given to the model, results cut.

Workers run here, in-process, with ``test:tools`` (it calls the offered tools its user's text
names, with the text's first JSON object as arguments, then answers ``<tool> said: <result>``)
and the built-in tools; ``fetch_url`` reads a slow page served by the test. Both databases.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from aichats import crypto
from aichats.agent.models import ToolCall, ToolSpec
from aichats.config import Settings
from aichats.errors import Conflict
from aichats.services import chats, replies, runs, tool_calls, tool_servers
from aichats.services.pagination import PageRequest
from aichats.storage.database import Database
from aichats.tools import ToolInfo, builtin, toolbox, url_policy
from tests.runs.test_worker import drain, make_worker, messages_of, new_chat
from tests.support.mcp_server import McpProcess, serving_mcp
from tests.support.openai_server import Reply, ScriptedCall, openai_server

pytestmark = pytest.mark.anyio

TOOLS = {"model": "test:tools", "tools_allow_private_urls": True}


class _SlowPages(BaseHTTPRequestHandler):
    """``/slow/<seconds>``: that long, then a page; ``/big``: 50,000 characters."""

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
            body = b"<html><title>Slow</title><body><p>Done waiting</p></body></html>"
        else:
            body = b"x" * 50_000
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pages() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPages)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def calls_of(db: Database, chat: dict[str, Any]) -> list[tool_calls.ToolCallRow]:
    reply = (await messages_of(db, chat))[-1]
    return (await tool_calls.of_messages(db, [reply["pk"]])).get(reply["pk"], [])


async def test_independent_calls_run_at_once_and_the_model_answers_with_their_results(db: Database, pages: str) -> None:
    chat = await new_chat(db, f'fetch_url current_time {{"url": "{pages}/slow/0.5"}}')
    assert await drain(make_worker(db, **TOOLS)) == 1
    reply = (await messages_of(db, chat))[-1]
    assert reply["status"] == "completed"
    assert "fetch_url said: 200" in reply["content"] and "Done waiting" in reply["content"]
    assert "current_time said:" in reply["content"]
    clock, fetch = await calls_of(db, chat)  # test:tools calls them in the order they are offered
    assert (clock["name"], fetch["name"]) == ("current_time", "fetch_url")
    assert fetch["status"] == clock["status"] == "completed"
    # Both ran at once: the quick one started before the slow one ended, and ended first.
    assert clock["started_at"] < fetch["finished_at"] and clock["finished_at"] <= fetch["finished_at"]

    # Usage: the model's two calls, each once: the stored step, and the answer after it.
    progress = await tool_calls.progress(db, (await run_of(db, chat))["pk"])
    assert len(progress.steps) == 1
    assert reply["input_tokens"] > progress.input_tokens and reply["output_tokens"] > progress.output_tokens


async def run_of(db: Database, chat: dict[str, Any]) -> Any:
    page = await runs.list_runs(db, chat["pk"], PageRequest(first=10))
    return page.items[0]


async def test_a_crash_mid_turn_resumes_without_calling_a_finished_tool_again(db: Database, pages: str) -> None:
    chat = await new_chat(db, f'current_time fetch_url {{"url": "{pages}/slow/2"}}')
    first = make_worker(db, "w1", run_lease_seconds=1, **TOOLS)
    crashed = asyncio.create_task(first.run_one())
    while True:  # until the quick call finished and the slow one runs
        calls = await calls_of(db, chat)
        if [call["status"] for call in calls] == ["completed", "running"]:
            break
        assert not crashed.done()
        await asyncio.sleep(0.02)
    done_before = calls[0]
    crashed.cancel()  # the worker dies: the run keeps its lapsing lease, the slow call stays "running"
    with pytest.raises(asyncio.CancelledError):
        await crashed

    await asyncio.sleep(1.1)  # the lease lapses
    second = make_worker(db, "w2", **TOOLS)
    assert await drain(second) == 1
    reply = (await messages_of(db, chat))[-1]
    assert reply["status"] == "completed", reply["error"]
    clock, fetch = await calls_of(db, chat)
    assert dict(clock) == dict(done_before)  # not called again: the very same row, untouched
    assert fetch["status"] == "completed" and "Done waiting" in (fetch["result"] or "")
    assert "current_time said:" in reply["content"] and "Done waiting" in reply["content"]
    run = await run_of(db, chat)
    assert run["status"] == "completed"
    assert (run["input_tokens"], run["output_tokens"]) == (reply["input_tokens"], reply["output_tokens"])


async def test_a_tools_failure_goes_back_to_the_model_which_answers_anyway(db: Database) -> None:
    chat = await new_chat(db, 'fetch_url {"url": "http://10.0.0.1/internal"}')
    assert await drain(make_worker(db, model="test:tools")) == 1  # private addresses are refused
    reply = (await messages_of(db, chat))[-1]
    assert reply["status"] == "completed"
    [call] = await calls_of(db, chat)
    assert call["status"] == "failed" and call["is_error"] and "AICHATS_TOOLS_ALLOW_PRIVATE_URLS" in call["result"]
    assert "fetch_url failed:" in reply["content"]


async def test_a_result_is_cut_to_the_limit_and_says_so(db: Database, pages: str) -> None:
    chat = await new_chat(db, f'fetch_url {{"url": "{pages}/big"}}')
    assert await drain(make_worker(db, max_tool_result_chars=1000, **TOOLS)) == 1
    [call] = await calls_of(db, chat)
    result = call["result"] or ""
    assert result.startswith("200 ") and "[cut: " in result and len(result) <= 1000


async def test_a_slow_tool_times_out_as_an_error(db: Database, pages: str) -> None:
    chat = await new_chat(db, f'fetch_url {{"url": "{pages}/slow/5"}}')
    assert await drain(make_worker(db, tool_timeout_seconds=0.5, **TOOLS)) == 1
    [call] = await calls_of(db, chat)
    assert call["status"] == "failed" and call["duration_ms"] is not None and call["duration_ms"] < 4000
    assert (await messages_of(db, chat))[-1]["status"] == "completed"


async def test_a_tools_bad_argument_is_an_error_result(db: Database) -> None:
    chat = await new_chat(db, 'current_time {"timezone": "Mars/Olympus"}')
    assert await drain(make_worker(db, **TOOLS)) == 1
    [call] = await calls_of(db, chat)
    assert call["is_error"] and "IANA" in (call["result"] or "")


async def test_arguments_that_are_not_a_json_object_are_error_results(db: Database) -> None:
    """A model's arguments that are not JSON, or JSON but not an object: each call is an error
    result the model is given, and the reply completes."""
    broken = Reply(calls=(ScriptedCall("current_time", '{"timezone": '), ScriptedCall("current_time", "[1]")))
    with openai_server([broken, Reply(text="Sorry, I could not tell the time.")]) as server:
        chat = await new_chat(db, "what time is it?")
        worker = make_worker(db, model="openai:scripted", openai_base_url=server.url)
        try:
            assert await drain(worker) == 1
        finally:
            await worker.models.close()
    not_json, not_object = await calls_of(db, chat)
    assert not_json["is_error"] and "not valid JSON" in (not_json["result"] or "")
    assert not_object["is_error"] and not_object["result"] == "The arguments must be a JSON object."
    assert (await messages_of(db, chat))[-1]["status"] == "completed"


async def test_tools_off_for_a_chat_offers_none(db: Database) -> None:
    chat = await new_chat(db, "current_time", tools=())
    assert await drain(make_worker(db, **TOOLS)) == 1
    assert await calls_of(db, chat) == []
    assert (await messages_of(db, chat))[-1]["content"] == "You said: current_time"


async def test_past_the_step_limit_the_model_is_told_to_answer(db: Database) -> None:
    """A model that would call tools forever: after AICHATS_MAX_TOOL_STEPS calls with tools, the
    next is made with ``tool_choice: none`` and the turn ends with its text; every call's
    tokens are counted once."""
    forever = Reply(calls=(ScriptedCall("current_time", "{}"),), input_tokens=10, output_tokens=2)
    answer = Reply(text="Done.", input_tokens=50, output_tokens=3)
    with openai_server([forever, forever, answer]) as server:
        chat = await new_chat(db, "what time is it")
        worker = make_worker(db, model="openai:scripted", openai_base_url=server.url, max_tool_steps=2)
        try:
            assert await drain(worker) == 1
        finally:
            await worker.models.close()  # its HTTP client, on this test's loop (not collected on another's)
        choices = [request.get("tool_choice") for request in server.requests]
    assert choices == ["auto", "auto", "none"]
    reply = (await messages_of(db, chat))[-1]
    assert reply["status"] == "completed" and reply["content"] == "Done."
    assert [call["status"] for call in await calls_of(db, chat)] == ["completed", "completed"]
    assert (reply["input_tokens"], reply["output_tokens"]) == (10 + 10 + 50, 2 + 2 + 3)


# ---------------------------------------------------------------- approvals, Stop, and their races


@pytest.fixture(scope="module")
def mcp() -> Iterator[McpProcess]:
    with serving_mcp() as server:
        yield server


async def chat_with_server(db: Database, mcp: McpProcess, text: str) -> dict[str, Any]:
    """A new user's chat asking ``text``, the user having the test MCP server as ``revenue``."""
    chat = await new_chat(db, text)
    access = tool_servers.Access(url_policy(allow_private=True), 10, crypto.sealer(Settings()))
    await tool_servers.create_server(db, chat["user_id"], tool_servers.NewServer("revenue", mcp.url, {}), access)
    return chat


DELETE_TWO = 'revenue__delete_record {"record_id": "r-1"}'


async def waiting_with_two_calls(db: Database, mcp: McpProcess) -> tuple[dict[str, Any], list[Any]]:
    """A reply set aside with two calls awaiting approval (the model called the tool twice)."""
    twice = Reply(calls=(ScriptedCall("revenue__delete_record", '{"record_id": "r-1"}'),) * 2)
    with openai_server([twice]) as server:
        chat = await chat_with_server(db, mcp, "delete it")
        worker = make_worker(db, model="openai:scripted", openai_base_url=server.url, tools_allow_private_urls=True)
        try:
            assert await drain(worker) == 1
        finally:
            await worker.models.close()
    calls = await calls_of(db, chat)
    assert [call["status"] for call in calls] == ["awaiting_approval", "awaiting_approval"]
    return chat, calls


async def decide(db: Database, chat: dict[str, Any], call: Any, *, approve: bool) -> None:
    async with db.transaction() as tx:
        await replies.decide(tx, chat_pk=chat["pk"], chat_id=chat["id"], tool_call_id=call["id"], approve=approve)


async def stop_reply(db: Database, chat: dict[str, Any], reply: Any = None) -> None:
    """The user's Stop on ``reply`` (the chat's last message by default)."""
    reply = reply or (await messages_of(db, chat))[-1]
    async with db.transaction() as tx:
        await replies.stop(tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=reply["id"], blended_micros=_none)


def _none(*_: object) -> int:
    return 0


async def test_two_approvals_at_once_queue_the_run_exactly_once(db: Database, mcp: McpProcess) -> None:
    """Each approval, in its own transaction, counts the calls still waiting: without locking the
    run first, each saw the other's as waiting and neither queued the run (PostgreSQL)."""
    for _ in range(5):  # a race: it lost 7 times out of 10 on PostgreSQL before the fix
        chat, calls = await waiting_with_two_calls(db, mcp)
        await asyncio.gather(*(decide(db, chat, call, approve=True) for call in calls))
        run = await run_of(db, chat)
        assert run["status"] == "queued", "the run must go back to the queue once both were decided"
        await stop_reply(db, chat)  # not run again by the next round's worker


async def test_approve_and_stop_at_once_never_deadlock(db: Database, mcp: McpProcess) -> None:
    chat, calls = await waiting_with_two_calls(db, mcp)
    reply = (await messages_of(db, chat))[-1]

    outcomes = await asyncio.gather(
        decide(db, chat, calls[0], approve=True), stop_reply(db, chat, reply), return_exceptions=True
    )
    assert all(outcome is None or isinstance(outcome, Conflict) for outcome in outcomes), outcomes
    assert (await messages_of(db, chat))[-1]["status"] == "cancelled"
    assert (await run_of(db, chat))["status"] == "cancelled"


async def test_stop_while_a_call_runs_ends_it_and_the_turn_at_once(db: Database, mcp: McpProcess) -> None:
    chat = await chat_with_server(db, mcp, 'revenue__slow {"seconds": 30}')
    worker = make_worker(db, **TOOLS)
    await db.listen(runs.CANCEL_CHANNEL, worker.running.heard)
    turn = asyncio.create_task(worker.run_one())
    while not [call for call in await calls_of(db, chat) if call["status"] == "running"]:
        assert not turn.done()
        await asyncio.sleep(0.02)
    reply = (await messages_of(db, chat))[-1]
    async with db.transaction() as tx:
        await replies.stop(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=reply["id"], blended_micros=lambda *_: 0
        )
    assert await asyncio.wait_for(turn, 10) is True  # the worker let go long before the 30 s call ended
    [call] = await calls_of(db, chat)
    assert call["status"] == "failed" and call["result"] == tool_calls.STOPPED_TEXT
    assert (await messages_of(db, chat))[-1]["status"] == "cancelled"


async def test_a_run_stopped_before_its_turn_starts_stays_stopped(db: Database) -> None:
    chat = await new_chat(db, "hello")
    claim = await runs.claim(db, "w1", 30_000)
    assert claim is not None
    reply = (await messages_of(db, chat))[-1]
    async with db.transaction() as tx:
        await replies.stop(
            tx, chat_pk=chat["pk"], chat_id=chat["id"], message_id=reply["id"], blended_micros=lambda *_: 0
        )
    row = await chats.chat_of_turn(db, chat["pk"])
    with pytest.raises(replies.LostRun):
        await replies.start(db, claim, row, model="test:echo", schedule_max_failures=3)
    after = (await messages_of(db, chat))[-1]
    assert after["status"] == "cancelled"
    assert (await chats.get_chat(db, chat["user_id"], chat["id"]))["message_count"] == 2  # counted once


async def test_a_long_tool_name_cut_to_a_real_tools_name_is_not_that_tool(db: Database, mcp: McpProcess) -> None:
    """The model calls a name one character longer than an offered one, which stored cut would
    name that tool: it is stored marked, so it names no tool and runs nothing, unapproved."""
    long_tool = "revenue__" + "x" * 55  # 64 characters: as long as an offered name can be
    chat = await new_chat(db, "hello")
    context = builtin.Context(db, Settings(), chat["pk"], chat["id"])
    info = ToolInfo("x" * 55, "deletes", {"type": "object"}, read_only=False, destructive=True)
    tool = toolbox.Tool(ToolSpec(long_tool, "deletes", {"type": "object"}), info, "user", "tsrv_x", "revenue")
    box = toolbox.Toolbox([tool], context)
    stored = box.resolve(ToolCall("call_1", long_tool + "y", "{}"))
    assert stored.name != long_tool and box.find(stored.name) is None and not stored.needs_approval
    assert box.refusal({"name": stored.name}) is not None  # type: ignore[typeddict-item]
    exact = box.resolve(ToolCall("call_2", long_tool, "{}"))
    assert exact.name == long_tool and exact.needs_approval


async def test_an_approved_call_cut_off_while_it_ran_is_reported_not_asked_again(db: Database, mcp: McpProcess) -> None:
    """The user approved a call that changes things; its worker died while it ran. The turn
    resumed must not ask again (the call is no longer awaiting: approving would be a 409 and
    the reply would wait for ever): the model is told it was interrupted, and answers."""
    once = Reply(calls=(ScriptedCall("revenue__delete_record", '{"record_id": "r-1"}'),))
    with openai_server([once, Reply(text="I could not tell whether it was deleted.")]) as server:
        settings = {"model": "openai:scripted", "openai_base_url": server.url, "tools_allow_private_urls": True}
        chat = await chat_with_server(db, mcp, "delete it")
        worker = make_worker(db, **settings)
        try:
            assert await drain(worker) == 1
            [call] = await calls_of(db, chat)
            assert call["status"] == "awaiting_approval"
            await decide(db, chat, call, approve=True)
            # A worker claims the run, starts the call, and dies: its lease lapses at once.
            claim = await runs.claim(db, "dead", 1)
            assert claim is not None
            async with db.transaction() as tx:
                assert await tool_calls.start(tx, call["pk"], 0) is not None
            await asyncio.sleep(0.05)
            assert await drain(worker) == 1
        finally:
            await worker.models.close()
    [call] = await calls_of(db, chat)
    assert call["status"] == "failed" and "interrupted while it ran" in (call["result"] or "")
    reply = (await messages_of(db, chat))[-1]
    assert reply["status"] == "completed" and "could not tell" in reply["content"]


async def test_a_call_that_ends_after_stop_does_not_overwrite_what_stop_wrote(db: Database, mcp: McpProcess) -> None:
    """Stop marks the running call failed; the tool answers afterwards, before its worker heard
    of the Stop: its result is refused (the run is no longer the worker's), nothing is overwritten."""
    chat = await chat_with_server(db, mcp, 'revenue__slow {"seconds": 30}')
    worker = make_worker(db, **TOOLS)  # not listening for Stop: it learns of it only by writing
    turn = asyncio.create_task(worker.run_one())
    try:
        while not [call for call in await calls_of(db, chat) if call["status"] == "running"]:
            assert not turn.done()
            await asyncio.sleep(0.02)
        await stop_reply(db, chat)
        [call] = await calls_of(db, chat)
        row = await chats.chat_of_turn(db, chat["pk"])
        assert row is not None
        statement = sa.text(
            "SELECT pk, id, chat_pk, trigger, user_message_pk, assistant_message_pk, attempts AS attempt FROM runs"
            " WHERE chat_pk = :chat_pk"
        )
        claim = runs.Claim(**dict((await db.fetch_one(statement, {"chat_pk": chat["pk"]})) or {}))
        message = (await messages_of(db, chat))[-1]
        reply = replies.Reply(db, claim, row, message, 0, model="test:tools", schedule_max_failures=3)
        with pytest.raises(replies.LostRun):
            await reply.call_finished(call, status=tool_calls.COMPLETED, result="done", is_error=False, duration_ms=5)
        [after] = await calls_of(db, chat)
        assert after["status"] == "failed" and after["result"] == tool_calls.STOPPED_TEXT
    finally:
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn


async def test_when_one_call_of_a_step_fails_the_others_are_cancelled() -> None:
    from aichats.runs.turn import _all_or_none

    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def broken() -> int:
        await asyncio.sleep(0.01)
        raise replies.LostRun("airun_x")

    with pytest.raises(replies.LostRun):  # the error itself, not a group
        await asyncio.wait_for(_all_or_none([slow(), broken()]), 5)
    assert cancelled.is_set()
    assert await _all_or_none([asyncio.sleep(0, 1), asyncio.sleep(0, 2)]) == [1, 2]
