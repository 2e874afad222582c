"""Tool calling in every provider but the local one (tests/e2e_agent/test_tool_calling_providers.py).

``test:tools`` is held to its rules. The ``openai:`` and ``anthropic:`` providers talk to
real HTTP servers on loopback that stream exactly as OpenAI and Anthropic do
(``tests/support/openai_server.py``, ``anthropic_server.py``): what each provider sends
(tools, tool choice, the conversation's calls and results in the protocol's own shape) is
read from the requests the server recorded, and what it yields from what was streamed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from aichats.agent.models import ChatMessage, Model, ModelError, ToolCall, ToolChoice, ToolSpec, Usage
from aichats.agent.models.anthropic_api import AnthropicModel
from aichats.agent.models.local import _for_llama_cpp, is_built_in
from aichats.agent.models.openai_compatible import OpenAIModel
from aichats.agent.models.testing import TestModel
from tests.support.anthropic_server import anthropic_server
from tests.support.openai_server import Reply, ScriptedCall, ScriptedServer, openai_server

pytestmark = pytest.mark.anyio

TIME = ToolSpec(
    "current_time",
    "The current date and time in a time zone.",
    {"type": "object", "properties": {"timezone": {"type": "string"}}},
)
REVENUE = ToolSpec(
    "revenue__weekly_revenue",
    "Revenue of one ISO week.",
    {"type": "object", "properties": {"week": {"type": "string"}}},
)
TOOLS = [TIME, REVENUE]
SYSTEM = ChatMessage("system", "You are a helpful support agent.")


async def collect(
    model: Model, messages: list[ChatMessage], tools: list[ToolSpec] | None = None, choice: ToolChoice = "auto"
) -> tuple[str, list[ToolCall], Usage]:
    """The text, the tool calls and the usage of one streamed reply (usage last, exactly once)."""
    items = [item async for item in model.stream(messages, max_output_tokens=64, tools=tools or (), tool_choice=choice)]
    *body, usage = items
    assert isinstance(usage, Usage) and not any(isinstance(item, Usage) for item in body)
    text = "".join(item for item in body if isinstance(item, str))
    return text, [item for item in body if isinstance(item, ToolCall)], usage


def a_step(text: str, calls: list[ToolCall], results: list[tuple[str, bool]]) -> list[ChatMessage]:
    """The messages a turn appends after a step: the assistant's calls, then each result."""
    assistant = ChatMessage("assistant", text, tool_calls=tuple(calls))
    return [assistant] + [
        ChatMessage("tool", result, tool_call_id=call.id, is_error=failed)
        for call, (result, failed) in zip(calls, results, strict=True)
    ]


# ----------------------------------------------------------------------- test:tools


async def test_test_model_calls_each_named_tool_with_the_texts_json() -> None:
    model = TestModel("tools")
    ask = ChatMessage("user", 'Revenue please: revenue__weekly_revenue and current_time {"week": "2026-W49"} {"x": 1}')
    text, calls, usage = await collect(model, [SYSTEM, ask], TOOLS)
    assert text == ""
    # In the order offered, the first JSON object of the text for each, ids numbered.
    assert calls == [
        ToolCall("call_1", "current_time", '{"week": "2026-W49"}'),
        ToolCall("call_2", "revenue__weekly_revenue", '{"week": "2026-W49"}'),
    ]
    assert usage == Usage(len(SYSTEM.content.split()) + len(ask.content.split()), 2)  # words read; one per call


async def test_test_model_answers_tool_results_and_counts_them() -> None:
    model = TestModel("tools")
    ask = ChatMessage("user", "current_time and revenue__weekly_revenue")
    calls = [
        ToolCall("call_1", "current_time", '{"timezone": "UTC"}'),
        ToolCall("call_2", "revenue__weekly_revenue", "{}"),
    ]
    history = [SYSTEM, ask, *a_step("", calls, [("It is  noon.", False), ("server down", True)])]
    text, made, usage = await collect(model, history, TOOLS)
    assert made == []
    assert text == "current_time said: It is  noon.; revenue__weekly_revenue failed: server down"
    read = sum(len(m.content.split()) for m in history) + len(['{"timezone":', '"UTC"}', "{}"])
    assert usage == Usage(read, len(text.split()))


async def test_test_model_without_a_named_tool() -> None:
    model = TestModel("tools")
    ask = ChatMessage("user", "What is the time? (current time, currenttime, xcurrent_time, current_time2)")
    # Not a whole word: no call; the text is echoed, as test:echo does.
    text, calls, usage = await collect(model, [ask], TOOLS)
    assert calls == [] and text == f"You said: {ask.content}"
    assert usage == Usage(len(ask.content.split()), len(text.split()))
    # "required": the first tool, with no arguments (the text's JSON goes with named tools only).
    _, calls, usage = await collect(model, [ChatMessage("user", 'Hello {"a": 1}')], TOOLS, "required")
    assert calls == [ToolCall("call_1", "current_time", "{}")] and usage.output_tokens == 1
    # "none", or no tools offered: never a call.
    named = [ChatMessage("user", "current_time")]
    assert (await collect(model, named, TOOLS, "none"))[1] == []
    assert (await collect(model, named, [], "required"))[:2] == ("You said: current_time", [])
    # Only offered tools: a named tool that is not offered is not called.
    assert (await collect(model, [ChatMessage("user", "delete_everything current_time")], [REVENUE]))[1] == []


async def test_test_model_ids_never_repeat_in_a_conversation() -> None:
    model = TestModel("tools")
    first = [ToolCall("call_1", "current_time", "{}")]
    history = [ChatMessage("user", "current_time"), *a_step("", first, [("noon", False)])]
    history += [ChatMessage("assistant", "current_time said: noon"), ChatMessage("user", "current_time again")]
    _, calls, _ = await collect(model, history, TOOLS)
    assert calls == [ToolCall("call_2", "current_time", "{}")]


async def test_test_model_slow_variant_and_the_others_unchanged() -> None:
    ask = [ChatMessage("user", "current_time now")]
    slow = TestModel("tools-slow")
    assert (await collect(slow, ask, TOOLS))[1] == [ToolCall("call_1", "current_time", "{}")]
    assert (await collect(slow, ask, []))[0] == "You said: current_time now"
    # test:echo ignores tools; its deltas and usage are what they were.
    echo = [item async for item in TestModel("echo").stream(ask, max_output_tokens=64, tools=TOOLS)]
    assert echo == ["You", " said:", " current_time", " now", Usage(2, 4)]
    assert [i async for i in TestModel("echo-3").stream(ask, max_output_tokens=64)] == [
        "word",
        " word",
        " word",
        Usage(2, 3),
    ]


# ----------------------------------------------------------------------- the OpenAI protocol


@pytest.fixture
def openai() -> Iterator[ScriptedServer]:
    with openai_server() as server:
        yield server


@pytest.fixture
async def openai_model(openai: ScriptedServer) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel("gpt-test", timeout_seconds=5, base_url=openai.url, api_key="sk-test")
    yield model
    await model.close()


def script(server: ScriptedServer, *replies: Reply) -> None:
    server.script = list(replies)


async def test_openai_request_carries_tools_choice_and_the_conversations_calls(
    openai: ScriptedServer, openai_model: OpenAIModel
) -> None:
    calls = [
        ToolCall("call_a", "current_time", '{"timezone": "UTC"}'),
        ToolCall("call_b", "revenue__weekly_revenue", "{oops"),
    ]
    history = [SYSTEM, ChatMessage("user", "current_time revenue__weekly_revenue")]
    history += a_step("", calls, [("noon", False), ("invalid arguments", True)])
    history += [ChatMessage("assistant", "Noon.", tool_calls=(ToolCall("call_c", "current_time", "{}"),))]
    history += [ChatMessage("tool", "still noon", tool_call_id="call_c")]
    await collect(openai_model, history, TOOLS, "required")
    [sent] = openai.requests
    assert sent["tool_choice"] == "required"
    assert sent["tools"] == [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in TOOLS
    ]
    assert sent["messages"] == [
        {"role": "system", "content": SYSTEM.content},
        {"role": "user", "content": "current_time revenue__weekly_revenue"},
        {"role": "assistant", "content": None, "tool_calls": [  # no text beside the calls: null, not ""
            {"id": "call_a", "type": "function",
             "function": {"name": "current_time", "arguments": '{"timezone": "UTC"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "revenue__weekly_revenue", "arguments": "{oops"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "noon"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: invalid arguments"},
        {"role": "assistant", "content": "Noon.", "tool_calls": [
            {"id": "call_c", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_c", "content": "still noon"},
    ]  # fmt: skip


async def test_openai_request_without_tools_names_none(openai: ScriptedServer, openai_model: OpenAIModel) -> None:
    text, calls, _ = await collect(openai_model, [SYSTEM, ChatMessage("user", "current_time")])
    assert (text, calls) == ("You said: current_time", [])
    [sent] = openai.requests
    assert "tools" not in sent and "tool_choice" not in sent  # many local servers refuse an empty list
    await collect(openai_model, [ChatMessage("user", "hello")], TOOLS, "none")
    assert openai.requests[1]["tool_choice"] == "none" and len(openai.requests[1]["tools"]) == 2


async def test_openai_calls_streamed_in_pieces_are_yielded_whole(
    openai: ScriptedServer, openai_model: OpenAIModel
) -> None:
    long = json.dumps({"week": "2026-W49", "note": "arguments long enough for many fragments " * 3})
    script(openai, Reply(
        text="Let me look that up.",
        calls=(ScriptedCall("revenue__weekly_revenue", long, "call_rev"),
               ScriptedCall("current_time", "{}", "call_now"),
               ScriptedCall("current_time", '{"timezone": "Asia/Tokyo"}', "call_tokyo")),
        input_tokens=321, output_tokens=54,
    ))  # fmt: skip
    text, calls, usage = await collect(openai_model, [ChatMessage("user", "go")], TOOLS)
    assert text == "Let me look that up."
    assert calls == [
        ToolCall("call_rev", "revenue__weekly_revenue", long),
        ToolCall("call_now", "current_time", "{}"),
        ToolCall("call_tokyo", "current_time", '{"timezone": "Asia/Tokyo"}'),
    ]
    assert usage == Usage(321, 54)  # the server's report, exactly


async def test_openai_calls_without_ids_or_in_one_delta(openai: ScriptedServer, openai_model: OpenAIModel) -> None:
    two = (ScriptedCall("current_time", '{"timezone": "UTC"}'), ScriptedCall("current_time", "{}"))
    script(
        openai,
        Reply(calls=two, omit_ids=True),
        Reply(calls=two, whole_calls=True),
        Reply(calls=two, omit_ids=True, whole_calls=True),
    )
    _, calls, _ = await collect(openai_model, [ChatMessage("user", "go")], TOOLS)
    # No id from the server: one is made for each call, distinct, kept whole.
    assert [(c.name, c.arguments) for c in calls] == [(s.name, s.arguments) for s in two]
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in calls) and calls[0].id != calls[1].id
    _, calls, _ = await collect(openai_model, [ChatMessage("user", "go")], TOOLS)
    assert calls == [
        ToolCall("call_1", "current_time", '{"timezone": "UTC"}'),
        ToolCall("call_2", "current_time", "{}"),
    ]
    _, calls, _ = await collect(openai_model, [ChatMessage("user", "go")], TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [(s.name, s.arguments) for s in two] and calls[0].id != calls[1].id


async def test_openai_without_a_usage_report_counts_chunks_and_estimates(
    openai: ScriptedServer, openai_model: OpenAIModel
) -> None:
    script(openai, Reply(text="One moment.", calls=(ScriptedCall("current_time", "{}"),), usage=False))
    messages = [SYSTEM, ChatMessage("user", "What time is it?")]
    _, calls, usage = await collect(openai_model, messages, [TIME])
    assert len(calls) == 1
    # One token per streamed chunk (two words, a call's head and its one fragment); the prompt estimated.
    assert usage.output_tokens == 4
    estimate = sum([await openai_model.count_tokens(m.content) for m in messages])
    assert usage.input_tokens > estimate  # the tools offered are part of the prompt


@pytest.mark.parametrize(("status", "transient"), [(400, False), (401, False), (429, True), (500, True), (503, True)])
async def test_openai_errors_are_unchanged(
    openai: ScriptedServer, openai_model: OpenAIModel, status: int, transient: bool
) -> None:
    script(openai, Reply(status=status, text="the scripted failure"))
    with pytest.raises(ModelError) as raised:
        await collect(openai_model, [ChatMessage("user", "current_time")], TOOLS)
    assert raised.value.transient is transient
    assert f"openai:gpt-test answered {status}" in str(raised.value) and "the scripted failure" in str(raised.value)


async def test_openai_double_default_rule_drives_a_loop() -> None:
    """The double's rule (for turn tests and benchmarks): named tools called, results quoted."""
    with openai_server(calls_per_reply=2) as server:
        model = OpenAIModel("gpt-test", timeout_seconds=5, base_url=server.url)
        try:
            ask = ChatMessage("user", 'current_time {"timezone": "UTC"}')
            _, calls, usage = await collect(model, [ask], TOOLS)
            assert [(c.id, c.name, c.arguments) for c in calls] == [
                ("call_1", "current_time", '{"timezone": "UTC"}'), ("call_2", "current_time", '{"timezone": "UTC"}'),
            ]  # fmt: skip
            assert usage == Usage(3, 2)  # the words read; one per call
            history = [ask, *a_step("", calls, [("noon", False), ("boom", True)])]
            text, calls, _ = await collect(model, history, TOOLS)
            assert (text, calls) == ("Results: noon; Error: boom", [])
        finally:
            await model.close()


# ----------------------------------------------------------------------- the Anthropic protocol


@pytest.fixture
def anthropic() -> Iterator[ScriptedServer]:
    with anthropic_server() as server:
        yield server


@pytest.fixture
async def anthropic_model(anthropic: ScriptedServer) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel("claude-test", timeout_seconds=5, base_url=anthropic.url, api_key="sk-ant-test")
    yield model
    await model.close()


@pytest.mark.parametrize(("choice", "sent"), [("auto", "auto"), ("required", "any"), ("none", "none")])
async def test_anthropic_request_carries_tools_and_choice(
    anthropic: ScriptedServer, anthropic_model: AnthropicModel, choice: ToolChoice, sent: str
) -> None:
    await collect(anthropic_model, [SYSTEM, ChatMessage("user", "hello")], TOOLS, choice)
    [request] = anthropic.requests
    assert request["tool_choice"] == {"type": sent}
    assert request["tools"] == [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in TOOLS
    ]
    assert request["system"] == SYSTEM.content
    assert request["messages"] == [{"role": "user", "content": "hello"}]


async def test_anthropic_request_holds_tool_use_and_merged_results(
    anthropic: ScriptedServer, anthropic_model: AnthropicModel
) -> None:
    calls = [
        ToolCall("toolu_a", "current_time", '{"timezone": "UTC"}'),
        ToolCall("toolu_b", "revenue__weekly_revenue", '{"week": '),  # cut off: not JSON
        ToolCall("toolu_c", "current_time", "[1, 2]"),  # JSON, but not an object
    ]
    history = [SYSTEM, ChatMessage("user", "go")]
    history += a_step("Checking.", calls, [("noon", False), ("invalid arguments", True), ("noon", False)])
    history += [ChatMessage("user", "thanks")]
    await collect(anthropic_model, history, TOOLS)
    [request] = anthropic.requests
    assert request["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_a", "name": "current_time", "input": {"timezone": "UTC"}},
            {"type": "tool_use", "id": "toolu_b", "name": "revenue__weekly_revenue", "input": {}},
            {"type": "tool_use", "id": "toolu_c", "name": "current_time", "input": {}},
        ]},
        {"role": "user", "content": [  # one step's results: one message
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "noon", "is_error": False},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "invalid arguments", "is_error": True},
            {"type": "tool_result", "tool_use_id": "toolu_c", "content": "noon", "is_error": False},
        ]},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip


async def test_anthropic_call_without_tools_still_declares_its_historys(
    anthropic: ScriptedServer, anthropic_model: AnthropicModel
) -> None:
    """Anthropic refuses tool_use blocks in a request without tools: a turn's last call
    (made without tools) declares the ones its history used, and may call none."""
    calls = [ToolCall("toolu_a", "current_time", "{}"), ToolCall("toolu_b", "current_time", "{}")]
    history = [ChatMessage("user", "go"), *a_step("", calls, [("noon", False), ("noon", False)])]
    text, made, _ = await collect(anthropic_model, history)
    assert made == [] and text == "Results: noon; noon"
    [request] = anthropic.requests
    assert request["tools"] == [{"name": "current_time", "input_schema": {"type": "object"}}]
    assert request["tool_choice"] == {"type": "none"}
    # A conversation without any call sends neither.
    await collect(anthropic_model, [ChatMessage("user", "hello")])
    assert "tools" not in anthropic.requests[1] and "tool_choice" not in anthropic.requests[1]


async def test_anthropic_tool_use_blocks_are_yielded_whole(
    anthropic: ScriptedServer, anthropic_model: AnthropicModel
) -> None:
    long = json.dumps({"week": "2026-W49", "note": "input long enough for many fragments " * 3})
    script(anthropic, Reply(
        text="Let me look that up.",
        calls=(ScriptedCall("revenue__weekly_revenue", long, "toolu_rev"),
               ScriptedCall("current_time", "", "toolu_now")),
        input_tokens=1234, output_tokens=77,
    ))  # fmt: skip
    text, calls, usage = await collect(anthropic_model, [ChatMessage("user", "go")], TOOLS)
    assert text == "Let me look that up."
    # A block with no input fragments at all has the empty object for arguments.
    assert calls == [
        ToolCall("toolu_rev", "revenue__weekly_revenue", long),
        ToolCall("toolu_now", "current_time", "{}"),
    ]
    assert usage == Usage(1234, 77)  # message_start's input, message_delta's output


async def test_anthropic_double_default_rule(anthropic_model: AnthropicModel, anthropic: ScriptedServer) -> None:
    ask = ChatMessage("user", 'revenue__weekly_revenue {"week": "2026-W49"}')
    _, calls, usage = await collect(anthropic_model, [ask], TOOLS, "auto")
    assert calls == [ToolCall("toolu_1", "revenue__weekly_revenue", '{"week": "2026-W49"}')]
    assert usage == Usage(3, 1)
    text, _, _ = await collect(anthropic_model, [ask, *a_step("", calls, [("48,210 EUR", False)])], TOOLS)
    assert text == "Results: 48,210 EUR"
    _, calls, _ = await collect(anthropic_model, [ChatMessage("user", "hello")], TOOLS, "required")
    assert [c.name for c in calls] == ["current_time"]


@pytest.mark.parametrize(("status", "transient"), [(400, False), (404, False), (429, True), (500, True), (529, True)])
async def test_anthropic_errors_are_unchanged(
    anthropic: ScriptedServer, anthropic_model: AnthropicModel, status: int, transient: bool
) -> None:
    script(anthropic, Reply(status=status, text="the scripted failure"))
    with pytest.raises(ModelError) as raised:
        await collect(anthropic_model, [ChatMessage("user", "current_time")], TOOLS)
    assert raised.value.transient is transient
    assert f"anthropic:claude-test answered {status}" in str(raised.value)
    assert "the scripted failure" in str(raised.value)


# ----------------------------------------------------------------------- doubles: timing


async def test_doubles_hold_their_answers_back(openai_model: OpenAIModel, openai: ScriptedServer) -> None:
    script(openai, Reply(text="late", delay=0.3))
    started = time.monotonic()
    assert (await collect(openai_model, [ChatMessage("user", "x")]))[0] == "late"
    assert time.monotonic() - started >= 0.3
    with anthropic_server(delay=0.2, chunk_delay=0.05) as slow:
        model = AnthropicModel("claude-test", timeout_seconds=5, base_url=slow.url, api_key="k")
        try:
            started = time.monotonic()
            text, _, _ = await collect(model, [ChatMessage("user", "a b c")])
            assert text == "You said: a b c" and time.monotonic() - started >= 0.2 + 0.05 * 8
        finally:
            await model.close()


# ----------------------------------------------------------------------- local: what llama.cpp is sent


def test_local_history_keeps_only_json_arguments() -> None:
    """llama.cpp parses the arguments of every call in the history and fails the whole
    request on one that is not JSON: such a call is sent with ``{}``."""
    kept = ToolCall("a", "current_time", '{"timezone": "UTC"}')
    message = ChatMessage("assistant", "x", tool_calls=(kept, ToolCall("b", "current_time", '{"timezone": '),
                                                        ToolCall("c", "current_time", '"UTC"')))  # fmt: skip
    assert _for_llama_cpp(message).tool_calls == (
        kept,
        ToolCall("b", "current_time", "{}"),
        ToolCall("c", "current_time", "{}"),
    )
    plain = ChatMessage("user", "{not json")
    assert _for_llama_cpp(plain) is plain


def test_only_the_built_in_model_gets_our_template() -> None:
    assert is_built_in("smollm2-135m")
    assert not is_built_in("smollm2-135m", "/models/qwen2.5.gguf")  # AICHATS_LOCAL_MODEL_PATH: its own template
    assert not is_built_in("/models/qwen2.5.gguf")
