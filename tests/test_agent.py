"""Agent replies: thinking, tool calls and their results stream through the log as parts, durably, step by step."""

import asyncio
import json
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from streaming.events import snapshot_payload
from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply
from streaming.selectors import chunk_events_after, thread_snapshot
from streaming.services.log import chunks_record, seq_allocate
from streaming.worker import StreamWorker
from threads.models import Message
from threads.services import message_post

from .agent_tools import runs, tool_runs  # noqa: F401 (a fixture)
from .conftest import RECEIVE_TIMEOUT_S

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, content: str) -> dict:
    """Send `content` and return the reply's `end` event."""
    await socket.send({"type": "send", "content": content, "client_id": str(uuid.uuid4())})
    return await socket.receive_until(lambda frame: frame["type"] == "end")


def parts_of(events: list[dict], message_id: str) -> list[dict]:
    """Fold a reply's live events into its parts, as a client does."""
    parts: list[dict] = []
    text_open = False
    for event in events:
        if event.get("message_id") != message_id:
            continue
        if event["type"] == "delta":
            if text_open:
                parts[-1]["text"] += event["text"]
            else:
                parts.append({"type": "text", "text": event["text"]})
                text_open = True
        elif event["type"].startswith("part_"):
            text_open = False
            if event["type"] == "part_delta":
                parts[event["index"]]["text"] += event["text"]
            elif event["index"] == len(parts):
                parts.append(event["part"])
            else:
                parts[event["index"]] = event["part"]
    return parts


def kinds(events: list[dict]) -> list[str]:
    """The event types in order, runs of deltas as one."""
    types: list[str] = []
    for event in events:
        if not (event["type"] == "delta" and types and types[-1] == "delta"):
            types.append(event["type"])
    return types


async def test_a_tool_loop_runs_to_completion(thread, user, connect, worker, tool_runs):
    """The model calls a tool, its result goes back, and the reply ends with text built on it."""
    socket = await connect(thread.id, user)
    end = await ask(socket, 'What is six times seven?\n/tool calculator {"expression": "6 * 7"}')
    assert end["status"] == "complete"
    events = socket.log_events
    assert kinds(events) == ["message", "start", "part_start", "part_end", "part_start", "part_end", "delta", "end"]
    call = events[2]["part"]
    assert call == {
        "type": "tool_call",
        "id": "call_1_1",
        "name": "calculator",
        "input": {"expression": "6 * 7"},
        "state": "called",
    }
    assert events[3]["part"]["state"] == "running"
    result = events[5]["part"]
    assert result == {
        "type": "tool_result",
        "tool_call_id": "call_1_1",
        "name": "calculator",
        "output": {"expression": "6 * 7", "value": 42},
        "is_error": False,
    }
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply.content.startswith('Tool calculator gave {"expression": "6 * 7", "value": 42}.')
    assert reply.parts == parts_of(events, str(reply.id))
    assert [part["type"] for part in reply.parts] == ["tool_call", "tool_result", "text"]


async def test_parallel_tool_calls_of_one_model_call(thread, user, connect, worker, tool_runs):
    """Two calls of one model call are logged in one step and both run, once each."""
    socket = await connect(thread.id, user)
    end = await ask(socket, "Count twice.\n/tool counter {}\n/tool idempotent_counter {}")
    assert end["status"] == "complete"
    events = socket.log_events
    calls = [event for event in events if event["type"] == "part_start" and event["part"]["type"] == "tool_call"]
    assert [call["part"]["id"] for call in calls] == ["call_1_1", "call_1_2"]
    assert calls[1]["seq"] == calls[0]["seq"] + 1  # one step: the two calls are logged together
    results = [
        event["part"] for event in events if event["type"] == "part_end" and event["part"]["type"] == "tool_result"
    ]
    assert sorted(result["name"] for result in results) == ["counter", "idempotent_counter"]
    assert len(runs(tool_runs, "counter")) == len(runs(tool_runs, "idempotent_counter")) == 1


async def test_a_tool_that_raises_tells_the_model_and_the_reply_goes_on(thread, user, connect, worker, tool_runs):
    socket = await connect(thread.id, user)
    end = await ask(socket, "Try it.\n/tool broken {}")
    assert end["status"] == "complete"
    reply = await Message.objects.aget(pk=end["message_id"])
    result = reply.parts[1]
    assert result == {
        "type": "tool_result",
        "tool_call_id": "call_1_1",
        "name": "broken",
        "output": "the tool broke",
        "is_error": True,
    }
    assert reply.content.startswith('Tool broken failed with "the tool broke".')


async def test_bad_tool_input_and_unknown_tools_are_results_marked_as_errors(thread, user, connect, worker, tool_runs):
    socket = await connect(thread.id, user)
    end = await ask(
        socket,
        "Try these.\n"
        "/tool calculator {\"expression\": \"__import__('os').system('true')\"}\n"
        '/tool calculator {"expression": "9 ** 9 ** 9"}\n'
        '/tool current_time {"timezone": "../../etc/passwd"}\n'
        "/tool no_such_tool {}",
    )
    assert end["status"] == "complete"
    reply = await Message.objects.aget(pk=end["message_id"])
    results = {part["tool_call_id"]: part for part in reply.parts if part["type"] == "tool_result"}
    assert all(result["is_error"] for result in results.values())
    assert results["call_1_1"]["output"] == "Only numbers and arithmetic operators are allowed, not Call."
    assert results["call_1_2"]["output"] == "Exponents are limited to 1000."
    assert results["call_1_3"]["output"].startswith("Unknown time zone '../../etc/passwd'")
    assert results["call_1_4"]["output"] == "There is no tool named 'no_such_tool'."


async def test_past_the_step_limit_the_reply_fails_with_its_text_kept(
    thread, user, connect, worker, tool_runs, settings
):
    settings.CHAT_MAX_TOOL_STEPS = 2
    socket = await connect(thread.id, user)
    end = await ask(socket, "Loop.\n/tool counter {}\n\n/tool counter {}\n\n/tool counter {}")
    assert end["status"] == "failed"
    assert end["error"]["code"] == "tool_steps_exceeded"
    assert len(runs(tool_runs, "counter")) == 2
    reply = await Message.objects.aget(pk=end["message_id"])
    assert [part["type"] for part in reply.parts] == ["tool_call", "tool_result"] * 2


async def test_thinking_streams_as_its_own_part_with_its_signature(thread, user, connect, worker, tool_runs, settings):
    settings.SCRIPTED_TOKENS_PER_SECOND = 100  # thinking streams for longer than a few flush intervals
    socket = await connect(thread.id, user)
    end = await ask(socket, "Think first.\n/think")
    events = socket.log_events
    assert kinds(events)[:3] == ["message", "start", "part_start"]
    thinking_events = [event["type"] for event in events if event.get("index") == 0]
    assert thinking_events[0] == "part_start" and thinking_events[-1] == "part_end"
    assert thinking_events.count("part_delta") > 1  # streamed in pieces, not at its end
    reply = await Message.objects.aget(pk=end["message_id"])
    thinking, text = reply.parts
    assert thinking["type"] == "thinking"
    assert thinking["text"] == "The question has 3 words; I answer it step by step."
    assert len(thinking["signature"]) == 64
    assert text == {"type": "text", "text": reply.content}
    assert reply.parts == parts_of(events, str(reply.id))


def backlog(thread_id, after: int) -> list[dict]:
    return [json.loads(frame) for _, _, frame in chunk_events_after(thread_id=thread_id, after=after, limit=10_000)]


async def test_replay_from_every_cursor_equals_the_live_frames(thread, user, connect, worker, tool_runs):
    """After the reply ends and its deltas are compacted, every cursor replays the live frames byte for byte."""
    socket = await connect(thread.id, user)
    await ask(socket, 'Think and count.\n/think\n/tool counter {}\n/tool calculator {"expression": "1 + 1"}')
    live = socket.log_events
    assert await Chunk.objects.filter(span__gt=1).aexists()  # the replay reads compacted segments
    for after in range(len(live) + 1):
        assert await database_sync_to_async(backlog)(thread.id, after) == live[after:]
    late = await connect(thread.id, user, after=3)
    await late.receive_until(lambda frame: frame["type"] == "ready")
    assert late.log_events == live[3:]


async def test_a_snapshot_mid_reply_holds_the_parts_so_far(thread, user, connect, worker, tool_runs):
    """A snapshot taken while a tool runs carries the call; snapshot plus later events equals the end (I4)."""
    hold = tool_runs.parent / "hold"
    hold.touch()
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": f'Hold.\n/tool counter {{"hold": "{hold}"}}', "client_id": None})
    running = await socket.receive_until(lambda frame: frame.get("part", {}).get("state") == "running")
    page = await database_sync_to_async(thread_snapshot)(thread=thread)
    snapshot = snapshot_payload(thread, page)
    reply = snapshot["messages"][-1]
    assert snapshot["seq"] >= running["seq"]
    assert reply["status"] == "streaming"
    assert reply["parts"] == [running["part"]]
    hold.unlink()
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    stored = await Message.objects.aget(pk=end["message_id"])
    later = [event for event in socket.log_events if event["seq"] > snapshot["seq"]]
    assert (
        parts_of(
            [{"type": "part_start", "message_id": reply["id"], "index": 0, "part": reply["parts"][0]}, *later],
            reply["id"],
        )
        == stored.parts
    )


async def wait_for(condition, timeout: float = RECEIVE_TIMEOUT_S):
    """Poll `condition` (a coroutine function) until it returns something true; fail past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Workers:
    """Worker loops a test starts and stops: a stop hands running replies over, cancelling their tools mid-run."""

    def __init__(self) -> None:
        self.running: dict[StreamWorker, asyncio.Task] = {}

    def start(self, name: str) -> StreamWorker:
        worker = StreamWorker(name=name)
        self.running[worker] = asyncio.create_task(worker.run())
        return worker

    async def stop(self, worker: StreamWorker) -> None:
        worker.stop()
        await asyncio.wait_for(self.running.pop(worker), RECEIVE_TIMEOUT_S)


@pytest.fixture
async def workers():
    workers = Workers()
    yield workers
    for worker in list(workers.running):
        await workers.stop(worker)


async def held_reply(connect, thread, user, tool: str, tool_runs, workers, worker_name="first"):
    """Start a reply whose `tool` call is held mid-run on a worker of its own; return the socket and the hold."""
    hold = tool_runs.parent / "hold"
    hold.touch()
    first = workers.start(worker_name)
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": f'Hold.\n/tool {tool} {{"hold": "{hold}"}}', "client_id": None})
    await socket.receive_until(lambda frame: frame.get("part", {}).get("state") == "running")
    await wait_for(lambda: asyncio.to_thread(runs, tool_runs, tool))
    return socket, hold, first


async def test_a_call_cut_off_mid_run_is_not_run_again_unless_idempotent(thread, user, connect, workers, tool_runs):
    """Taken over after its run began, a call that is not idempotent fails the reply rather than run twice."""
    socket, hold, first = await held_reply(connect, thread, user, "counter", tool_runs, workers)
    await workers.stop(first)  # the run is cut off: it may or may not have had its effect
    hold.unlink()
    workers.start("second")
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "failed"
    assert end["error"]["code"] == "tool_uncertain"
    assert len(runs(tool_runs, "counter")) == 1


async def test_an_idempotent_call_cut_off_mid_run_runs_again(thread, user, connect, workers, tool_runs):
    socket, hold, first = await held_reply(connect, thread, user, "idempotent_counter", tool_runs, workers)
    await workers.stop(first)
    hold.unlink()
    workers.start("second")
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert len(runs(tool_runs, "idempotent_counter")) == 2
    reply = await Message.objects.aget(pk=end["message_id"])
    assert [part["type"] for part in reply.parts] == ["tool_call", "tool_result", "text"]
    assert reply.parts[1]["output"] == {"runs": 2}


async def test_a_call_cut_off_mid_run_may_ask_approval_to_run_again(thread, user, connect, workers, tool_runs, client):
    socket, hold, first = await held_reply(connect, thread, user, "retry_counter", tool_runs, workers)
    await workers.stop(first)
    hold.unlink()
    workers.start("second")
    ask_event = await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "approval")
    assert ask_event["part"] == {"type": "approval", "tool_call_id": "call_1_1", "state": "requested", "retry": True}
    await socket.send({"type": "approve", "tool_call_id": "call_1_1", "approved": True})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert len(runs(tool_runs, "retry_counter")) == 2


async def test_a_result_committed_before_a_handover_is_never_produced_again(
    thread, user, connect, workers, tool_runs, settings
):
    """Handed over between a tool's result and the end of the next model call, the reply goes on from its text."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 40
    first = workers.start("first")
    socket = await connect(thread.id, user)
    content = "Count once.\n/tool counter {}"
    await socket.send({"type": "send", "content": content, "client_id": None})
    await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "tool_result")
    await socket.receive_until(lambda frame: frame["type"] == "delta")
    await workers.stop(first)
    workers.start("second")
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert len(runs(tool_runs, "counter")) == 1
    reply = await Message.objects.aget(pk=end["message_id"])
    expected = 'Tool counter gave {"runs": 1}.\n\n' + scripted_reply([Turn("user", content)], 30)
    assert reply.content == expected
    assert (await Generation.objects.aget(message=reply)).attempts == 2


def approve_over_http(client, thread_id, tool_call_id: str, approved) -> tuple[int, dict]:
    response = client.post(
        f"/api/threads/{thread_id}/approvals",
        {"tool_call_id": tool_call_id, "approved": approved},
        content_type="application/json",
    )
    return response.status_code, response.json()


async def test_approval_from_a_second_device_while_the_first_is_closed_across_a_restart(
    thread, user, connect, workers, tool_runs, client
):
    """A reply waiting for approval holds no worker; approved over HTTP after every worker restarted, it goes on."""
    first = workers.start("first")
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Guarded.\n/tool guarded_counter {}", "client_id": None})
    asked = await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "approval")
    assert asked["part"]["state"] == "requested" and not asked["part"]["retry"]
    generation = await wait_for(
        lambda: Generation.objects.filter(status="awaiting_approval", lease_token=None, worker="").afirst()
    )
    await socket.disconnect()
    await workers.stop(first)
    assert runs(tool_runs) == []
    await database_sync_to_async(client.force_login)(user)
    status, body = await database_sync_to_async(approve_over_http)(client, thread.id, "call_1_1", True)
    assert (status, body) == (202, {"tool_call_id": "call_1_1", "approved": True})
    workers.start("after-restart")
    later = await connect(thread.id, user, after=asked["seq"])
    end = await later.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert len(runs(tool_runs, "guarded_counter")) == 1
    decided = later.log_events[0]
    assert decided["type"] == "part_end" and decided["part"]["state"] == "approved"
    await generation.arefresh_from_db()
    assert generation.status == "done"


async def test_a_denied_call_is_sent_to_the_model_as_a_denial(thread, user, connect, worker, tool_runs):
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Guarded.\n/tool guarded_counter {}", "client_id": None})
    await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "approval")
    await socket.send({"type": "approve", "tool_call_id": "call_1_1", "approved": False})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert runs(tool_runs) == []
    reply = await Message.objects.aget(pk=end["message_id"])
    assert [part["type"] for part in reply.parts] == ["tool_call", "approval", "tool_result", "text"]
    assert reply.parts[1]["state"] == "denied"
    assert reply.parts[2]["is_error"] and reply.parts[2]["output"] == "A person denied this tool call."


async def test_only_a_writer_of_the_thread_can_approve(thread, user, make_user, connect, worker, tool_runs, client):
    """Another person is refused as if the thread did not exist; bad and stale approvals get clear errors."""
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Guarded.\n/tool guarded_counter {}", "client_id": None})
    await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "approval")
    mallory = await database_sync_to_async(make_user)("mallory")
    await database_sync_to_async(client.force_login)(mallory)
    status, body = await database_sync_to_async(approve_over_http)(client, thread.id, "call_1_1", True)
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await Generation.objects.filter(status="awaiting_approval").aexists()
    await database_sync_to_async(client.force_login)(user)
    status, body = await database_sync_to_async(approve_over_http)(client, thread.id, "call_1_1", "yes")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = await database_sync_to_async(approve_over_http)(client, thread.id, "call_9_9", True)
    assert (status, body["error"]["code"]) == (409, "no_approval_pending")
    await socket.send({"type": "approve", "tool_call_id": "call_1_1", "approved": True})
    await socket.receive_until(lambda frame: frame["type"] == "end")
    status, body = await database_sync_to_async(approve_over_http)(client, thread.id, "call_1_1", True)
    assert (status, body["error"]["code"]) == (409, "no_approval_pending")
    assert len(runs(tool_runs, "guarded_counter")) == 1


async def test_a_send_while_a_reply_awaits_approval_is_busy_and_cancel_ends_it(
    thread, user, connect, worker, tool_runs
):
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Guarded.\n/tool guarded_counter {}", "client_id": None})
    await socket.receive_until(lambda frame: frame.get("part", {}).get("type") == "approval")
    await socket.send({"type": "send", "content": "Another", "client_id": None})
    refused = await socket.receive_until(lambda frame: frame["type"] == "error")
    assert refused["code"] == "busy"
    await socket.send({"type": "cancel"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "cancelled"
    assert runs(tool_runs) == []


def test_the_admin_timeline_shows_the_steps(thread, admin_client):
    """A reply's steps, folded from its log while it runs, and each part event with its part's index."""
    reply = message_post(thread=thread, content="Compute.", client_id=None).reply
    call = {
        "type": "tool_call",
        "id": "call_1_1",
        "name": "calculator",
        "input": {"expression": "1"},
        "state": "running",
    }
    result = {"type": "tool_result", "tool_call_id": "call_1_1", "name": "calculator", "output": 1, "is_error": False}
    logged = [(Chunk.Kind.PART_START, 0, call), (Chunk.Kind.PART_END, 0, call), (Chunk.Kind.PART_START, 1, result)]
    with transaction.atomic():
        seq = seq_allocate(thread_id=thread.id, count=len(logged))
        chunks = [
            Chunk(thread=thread, seq=seq + offset, message=reply, kind=kind, part_index=index, text=json.dumps(part))
            for offset, (kind, index, part) in enumerate(logged)
        ]
        chunks_record(thread_id=thread.id, chunks=chunks, messages=[reply])
    page = admin_client.get(f"/admin/threads/message/{reply.id}/timeline/").content.decode()
    assert 'data-part-type="tool_call"' in page and "tool call <code>calculator</code> call_1_1: running" in page
    assert 'data-part-type="tool_result"' in page and "tool result for call_1_1" in page
    assert "part_start #0" in page and "part_end #0" in page and "part_start #1" in page


async def test_thinking_cut_off_by_a_handover_is_ended_and_the_reply_goes_on(
    thread, user, connect, workers, tool_runs, settings
):
    settings.SCRIPTED_TOKENS_PER_SECOND = 20  # the thinking streams for over half a second
    first = workers.start("first")
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Think.\n/think", "client_id": None})
    await socket.receive_until(lambda frame: frame["type"] == "part_delta")
    await workers.stop(first)
    workers.start("second")
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    starts = [event["index"] for event in socket.log_events if event["type"] == "part_start"]
    ends = {event["index"] for event in socket.log_events if event["type"] == "part_end"}
    assert starts == [0] and ends == {0}, "the thinking part that was cut off is ended, and not begun again"
    reply = await Message.objects.aget(pk=end["message_id"])
    assert [part["type"] for part in reply.parts] == ["thinking", "text"]
    assert reply.parts[0]["signature"] is None  # cut off before its end: it is not sent back to a model
