"""Agent replies from Claude: thinking with its signature, tool_use and tool_result blocks, over the real SDK."""

import asyncio
import uuid

import pytest

from streaming.providers import (
    RedactedThinking,
    ReplyEnd,
    ReplyRequest,
    TextDelta,
    ThinkingDelta,
    ThinkingEnd,
    ToolCall,
    ToolSpec,
    Turn,
)
from streaming.providers.anthropic import AnthropicProvider
from threads.models import Message

from .anthropic_mock import MAX_TOKENS, MockResponse, mock_api  # noqa: F401

pytestmark = [pytest.mark.timeout(60)]

BUDGET = 2048
CALCULATOR = {"id": "toolu_01", "name": "calculator", "input": {"expression": "6 * 7"}}


@pytest.fixture
def anthropic(settings, mock_api):  # noqa: F811
    settings.CHAT_PROVIDER = "anthropic"
    settings.ANTHROPIC_THINKING_BUDGET = BUDGET
    settings.CHAT_TOOLS = ["threads.tools.calculator"]
    return mock_api


async def test_the_provider_streams_thinking_and_tool_calls(anthropic):
    """Thinking deltas, its signature, then a whole tool call from its streamed JSON; the request asks for both."""
    anthropic.script(
        MockResponse(
            thinking=["Six times", " seven."], signature="sig-1", tool_uses=[CALCULATOR], stop_reason="tool_use"
        )
    )
    spec = ToolSpec(name="calculator", description="Arithmetic.", input_schema={"type": "object"})
    request = ReplyRequest(turns=[Turn("user", "6 * 7?")], tools=[spec])
    events = await asyncio.wait_for(_collect(request), 15)
    assert events[:3] == [ThinkingDelta("Six times"), ThinkingDelta(" seven."), ThinkingEnd(signature="sig-1")]
    assert events[3] == ToolCall(id="toolu_01", name="calculator", input={"expression": "6 * 7"}, thinking=True)
    assert isinstance(events[4], ReplyEnd) and events[4].stop_reason == "tool_use"
    (sent,) = anthropic.requests
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}
    assert sent.body["max_tokens"] == MAX_TOKENS + BUDGET
    assert sent.body["tools"] == [
        {"name": "calculator", "description": "Arithmetic.", "input_schema": {"type": "object"}}
    ]


async def _collect(request: ReplyRequest) -> list:
    return [event async for event in AnthropicProvider().stream(request)]


@pytest.mark.django_db(transaction=True)
async def test_a_tool_loop_with_claude_sends_the_blocks_back(thread, user, connect, worker, anthropic):
    """The second model call carries the signed thinking and tool_use, then the tool_result, as the API requires."""
    anthropic.script(
        MockResponse(thinking=["Let me compute."], signature="sig-1", tool_uses=[CALCULATOR], stop_reason="tool_use"),
        MockResponse(deltas=["It is", " 42."]),
    )
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "What is 6 * 7?", "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply.content == "It is 42."
    assert reply.parts == [
        {"type": "thinking", "text": "Let me compute.", "signature": "sig-1"},
        {**CALCULATOR | {"type": "tool_call"}, "state": "running", "thinking": True},
        {
            "type": "tool_result",
            "tool_call_id": "toolu_01",
            "name": "calculator",
            "output": {"expression": "6 * 7", "value": 42},
            "is_error": False,
        },
        {"type": "text", "text": "It is 42."},
    ]
    assert anthropic.requests[1].body["messages"] == [
        {"role": "user", "content": "What is 6 * 7?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me compute.", "signature": "sig-1"},
                {"type": "tool_use", "id": "toolu_01", "name": "calculator", "input": {"expression": "6 * 7"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": '{"expression": "6 * 7", "value": 42}'}
            ],
        },
    ]
    assert end["usage"]["output_tokens"] == 1 + 2  # both model calls counted


@pytest.mark.django_db(transaction=True)
async def test_text_broken_after_thinking_goes_on_without_asking_for_thinking_again(
    thread, user, connect, worker, anthropic
):
    """A break mid-text continues by prefill, without thinking (it takes no prefill); the thinking part is kept."""
    anthropic.script(
        MockResponse(thinking=["Hmm."], signature="sig-1", deltas=["Hello", " wor"], drop_after=2),
        MockResponse(deltas=["ld."]),
    )
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Greet me", "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply.content == "Hello world."
    assert [part["type"] for part in reply.parts] == ["thinking", "text"]
    retry = anthropic.requests[1].body
    assert "thinking" not in retry
    assert retry["messages"][-1] == {"role": "assistant", "content": "Hello wor"}


async def _ask(socket, content: str = "What is 6 * 7?") -> tuple[dict, Message]:
    await socket.send({"type": "send", "content": content, "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    return end, await Message.objects.aget(pk=end["message_id"])


@pytest.mark.django_db(transaction=True)
async def test_a_break_before_any_text_keeps_thinking_for_the_tool_loop(thread, user, connect, worker, anthropic):
    """An overload before any text is retried with thinking still on, so the loop's next call (thinking on) sends
    back a turn that opens with thinking, as the API requires."""
    anthropic.script(
        MockResponse(deltas=["never sent"], error_after=0),
        MockResponse(thinking=["Let me compute."], signature="sig-1", tool_uses=[CALCULATOR], stop_reason="tool_use"),
        MockResponse(deltas=["It is", " 42."]),
    )
    end, reply = await _ask(await connect(thread.id, user))
    assert (end["status"], end["error"], reply.content) == ("complete", None, "It is 42.")
    assert [request.body.get("thinking") for request in anthropic.requests] == [
        {"type": "enabled", "budget_tokens": BUDGET}
    ] * 3
    assert anthropic.requests[2].body["messages"][1]["content"][0]["type"] == "thinking"


@pytest.mark.django_db(transaction=True)
async def test_text_continued_in_a_tool_loop_leaves_the_rest_of_the_loop_without_thinking(
    thread, user, connect, worker, anthropic
):
    """Text broken mid-way goes on by prefill, without thinking; the loop's later calls keep that setting (one per
    assistant turn), which its tool calls carry in the log."""
    anthropic.script(
        MockResponse(thinking=["Hmm."], signature="sig-1", deltas=["Let me", " compute"], drop_after=1),
        MockResponse(deltas=[" compute that."], tool_uses=[CALCULATOR], stop_reason="tool_use"),
        MockResponse(deltas=["It is", " 42."]),
    )
    end, reply = await _ask(await connect(thread.id, user))
    assert (end["status"], end["error"]) == ("complete", None)
    assert ["thinking" in request.body for request in anthropic.requests] == [True, False, False]
    assert anthropic.requests[1].body["messages"][-1] == {"role": "assistant", "content": "Let me"}
    assert [part.get("thinking") for part in reply.parts if part["type"] == "tool_call"] == [False]


SIGNED = {"type": "thinking", "text": "Let me compute.", "signature": "sig-1"}
TEXT = {"type": "text", "text": "Computing."}
CALL = {**CALCULATOR, "type": "tool_call", "state": "running"}
RESULT = {"type": "tool_result", "tool_call_id": "toolu_01", "name": "calculator", "output": 42, "is_error": False}


@pytest.mark.parametrize(
    ("call", "thinks"),
    [(CALL | {"thinking": False}, False), (CALL | {"thinking": True}, True), (CALL, True)],
    ids=["went-without", "went-with", "logged-before-the-setting-was"],
)
async def test_a_taken_over_tool_loop_keeps_the_thinking_setting_its_tool_calls_logged(anthropic, call, thinks):
    """Taken over after a tool call, the next model call asks for thinking as the loop's logged calls did (a call
    logged without the setting: as its turn opens with thinking)."""
    anthropic.script(MockResponse(deltas=["It is 42."]))
    request = ReplyRequest(turns=[Turn("user", "6 * 7?")], parts=[SIGNED, TEXT, call, RESULT])
    events = await asyncio.wait_for(_collect(request), 15)
    assert isinstance(events[-1], ReplyEnd)
    assert ("thinking" in anthropic.requests[0].body) is thinks


async def test_a_model_call_taken_over_after_its_thinking_starts_over_with_thinking(anthropic):
    """Taken over after its thinking ended but before any text, the model call starts over: it asks for thinking
    again and does not send back the old thinking as a final assistant turn."""
    anthropic.script(MockResponse(thinking=["Afresh."], signature="sig-2", deltas=["42."]))
    request = ReplyRequest(turns=[Turn("user", "6 * 7?")], parts=[SIGNED])
    events = await asyncio.wait_for(_collect(request), 15)
    assert events[-2:] == [TextDelta("42."), ReplyEnd("end_turn", input_tokens=10, output_tokens=1)]
    (sent,) = anthropic.requests
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": BUDGET}
    assert sent.body["messages"] == [{"role": "user", "content": "6 * 7?"}]


@pytest.mark.django_db(transaction=True)
async def test_redacted_thinking_is_kept_and_sent_back_in_order(thread, user, connect, worker, anthropic):
    """A redacted_thinking block is kept as thinking with no text and its encrypted data, and sent back verbatim,
    in its place, on the loop's next call."""
    anthropic.script(
        MockResponse(
            thinking=["Let me compute."],
            signature="sig-1",
            redacted_thinking=["EmwKAhgB", "EmwKAhgC"],
            tool_uses=[CALCULATOR],
            stop_reason="tool_use",
        ),
        MockResponse(deltas=["It is", " 42."]),
    )
    end, reply = await _ask(await connect(thread.id, user))
    assert (end["status"], end["error"]) == ("complete", None)
    redacted = {"type": "thinking", "text": "", "signature": None}
    assert reply.parts[:3] == [
        SIGNED,
        redacted | {"redacted_data": "EmwKAhgB"},
        redacted | {"redacted_data": "EmwKAhgC"},
    ]
    assert [block["type"] for block in anthropic.requests[1].body["messages"][1]["content"]] == [
        "thinking",
        "redacted_thinking",
        "redacted_thinking",
        "tool_use",
    ]
    assert anthropic.requests[1].body["messages"][1]["content"][1:3] == [
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "redacted_thinking", "data": "EmwKAhgC"},
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_tool_loop_opened_by_redacted_thinking_alone_goes_on(thread, user, connect, worker, anthropic):
    """Thinking that is all redacted still opens the turn sent back, so the API takes the loop's next call."""
    anthropic.script(
        MockResponse(redacted_thinking=["EmwKAhgB"], tool_uses=[CALCULATOR], stop_reason="tool_use"),
        MockResponse(deltas=["It is", " 42."]),
    )
    end, reply = await _ask(await connect(thread.id, user))
    assert (end["status"], end["error"], reply.content) == ("complete", None, "It is 42.")


async def test_the_provider_gives_redacted_thinking_whole(anthropic):
    """A redacted_thinking block is one event with its data, before the tool call it precedes."""
    anthropic.script(MockResponse(redacted_thinking=["EmwKAhgB"], tool_uses=[CALCULATOR], stop_reason="tool_use"))
    events = await asyncio.wait_for(_collect(ReplyRequest(turns=[Turn("user", "6 * 7?")])), 15)
    assert events[:2] == [
        RedactedThinking("EmwKAhgB"),
        ToolCall(id="toolu_01", name="calculator", input={"expression": "6 * 7"}, thinking=True),
    ]
