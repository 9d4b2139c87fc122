"""Agent replies on the AI SDK's UI message stream: reasoning, tool and approval chunks, and the approval flow."""

import os
import re
import shutil
import subprocess

import pytest
from django.conf import settings as django_settings

from threads.models import Message

from .agent_tools import RUNS_FILE_VARIABLE, runs, tool_runs  # noqa: F401 (a fixture)
from .test_aisdk import NODE_TEST_DIR, chat_request, live_server_with_token, ui_chunks, ui_message_body  # noqa: F401
from .test_sse import one_sync_thread  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def types(chunks: list[dict]) -> list[str]:
    """The chunk types in order, runs of one delta type as one."""
    seen: list[str] = []
    for chunk in chunks:
        if not (chunk["type"].endswith("-delta") and seen and seen[-1] == chunk["type"]):
            seen.append(chunk["type"])
    return seen


async def test_thinking_and_a_tool_call_stream_as_their_chunks(chat_request, thread, worker, tool_runs):
    stream = await chat_request(
        "/api/chat",
        method="POST",
        body=ui_message_body('Think and compute.\n/think\n/tool calculator {"expression": "6 * 7"}', thread.id),
    )
    chunks = await ui_chunks(stream)
    reply = await Message.objects.aget(thread=thread, role="assistant")
    assert types(chunks) == [
        "start",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-available",
        "tool-output-available",
        # The scripted model thinks before each call: the second one writes the text.
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "finish",
    ]
    thinking, call, result, thinking_again, text = reply.parts
    reasoning = "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "reasoning-delta")
    assert reasoning == thinking["text"] + thinking_again["text"]
    available = next(chunk for chunk in chunks if chunk["type"] == "tool-input-available")
    assert available == {
        "type": "tool-input-available",
        "toolCallId": call["id"],
        "toolName": "calculator",
        "dynamic": True,
        "input": {"expression": "6 * 7"},
    }
    output = next(chunk for chunk in chunks if chunk["type"] == "tool-output-available")
    assert output == {"type": "tool-output-available", "toolCallId": call["id"], "output": result["output"]}
    assert "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta") == text["text"]


async def test_a_failed_tool_is_a_tool_output_error(chat_request, thread, worker, tool_runs):
    stream = await chat_request("/api/chat", method="POST", body=ui_message_body("Try.\n/tool broken {}", thread.id))
    chunks = await ui_chunks(stream)
    failed = next(chunk for chunk in chunks if chunk["type"] == "tool-output-error")
    assert failed == {"type": "tool-output-error", "toolCallId": "call_1_1", "errorText": "the tool broke"}
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}


def answered(body: dict, reply_id: str, approved: bool) -> dict:
    """The AI SDK's next request after addToolApprovalResponse: the reply with its tool part answered."""
    tool_part = {
        "type": "dynamic-tool",
        "toolName": "guarded_counter",
        "toolCallId": "call_1_1",
        "state": "approval-responded",
        "input": {},
        "approval": {"id": "the-approval", "approved": approved},
    }
    reply = {"id": reply_id, "role": "assistant", "parts": [tool_part]}
    return {**body, "messages": [*body["messages"], reply], "messageId": reply_id}


@pytest.mark.parametrize("approved", [True, False])
async def test_the_tool_approval_flow(chat_request, thread, worker, tool_runs, approved):
    """The stream finishes on the approval request; the client's answer gets the rest of the reply."""
    body = ui_message_body("Guarded.\n/tool guarded_counter {}", thread.id)
    chunks = await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    assert types(chunks)[-3:] == ["tool-input-available", "tool-approval-request", "finish"]
    request = chunks[-2]
    assert request["toolCallId"] == "call_1_1" and request["approvalId"]
    reply_id = chunks[0]["messageId"]
    rest = await ui_chunks(await chat_request("/api/chat", method="POST", body=answered(body, reply_id, approved)))
    assert rest[0] == {"type": "start", "messageId": reply_id}
    if approved:
        assert rest[1] == {"type": "tool-output-available", "toolCallId": "call_1_1", "output": {"runs": 1}}
    else:
        assert rest[1] == {"type": "tool-output-denied", "toolCallId": "call_1_1"}
    assert types(rest)[2:] == ["text-start", "text-delta", "text-end", "finish"]
    assert len(runs(tool_runs, "guarded_counter")) == (1 if approved else 0)
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == "complete"
    # Answered again (a second tab, a retried request): nothing is decided twice, the rest is streamed again.
    again = await ui_chunks(await chat_request("/api/chat", method="POST", body=answered(body, reply_id, approved)))
    assert again == rest


async def test_an_approval_response_for_no_waiting_call_is_refused(chat_request, thread, worker, tool_runs):
    body = ui_message_body("Guarded.\n/tool guarded_counter {}", thread.id)
    chunks = await ui_chunks(await chat_request("/api/chat", method="POST", body=body))
    answer = answered(body, chunks[0]["messageId"], True)
    answer["messages"][-1]["parts"][0]["toolCallId"] = "call_9_9"
    refused = await chat_request("/api/chat", method="POST", body=answer)
    assert refused.status == 409
    assert runs(tool_runs) == []


@pytest.fixture
def live_server_environment(tmp_path) -> dict[str, str]:
    """The live server offers the counting tools too, counting their runs in this test's file."""
    return {
        "CHAT_TOOLS": "tests.agent_tools.guarded_counter,threads.tools.calculator",
        RUNS_FILE_VARIABLE: str(tmp_path / "runs.txt"),
    }


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="runs in the embedded pass: its server has its own SQLite database whatever this pass uses",
)
def test_the_ai_sdk_chat_shows_an_agent_reply_and_takes_approvals(live_server_with_token):
    """The `ai` package's own Chat renders the parts a WebSocket tab sees, and answers an approval request."""
    url, token = live_server_with_token
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed for the AI SDK client test"
    if not (NODE_TEST_DIR / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_TEST_DIR, check=True, timeout=300)
    done = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "agent.test.mjs"],
        cwd=NODE_TEST_DIR,
        env={**os.environ, "CHATSITE_URL": url, "CHATSITE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\bpass 3\b", done.stdout), f"the Node tests ran and passed:\n{done.stdout}"


async def test_the_event_stream_carries_the_part_events_as_the_websocket(
    chat_request, thread, user, connect, worker, tool_runs
):
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": '/think\n/tool calculator {"expression": "2 ** 10"}'})
    await socket.receive_until(lambda frame: frame["type"] == "end")
    stream = await chat_request(f"/api/threads/{thread.id}/events?after=0")
    events = [await stream.event() for _ in socket.log_events]
    assert [event.pop("_id") for event in events] == [event["seq"] for event in socket.log_events]
    assert events == socket.log_events
    assert {"part_start", "part_delta", "part_end"} <= {event["type"] for event in events}
