"""Agent replies from Claude: thinking with its signature, tool_use and tool_result blocks, over the real SDK."""

import asyncio
import uuid

import pytest

from streaming.providers import ReplyEnd, ReplyRequest, ThinkingDelta, ThinkingEnd, ToolCall, ToolSpec, Turn
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
    assert events[3] == ToolCall(id="toolu_01", name="calculator", input={"expression": "6 * 7"})
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
        {**CALCULATOR | {"type": "tool_call"}, "state": "running"},
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
