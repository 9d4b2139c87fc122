"""Clients written to the seed designs, unchanged: the S2 client's `data:` reader and a browser EventSource on
`/api/chat/stream`, and the resumable-stream client's X-Stream-Id and `/api/chat/resume/<streamId>` (404, 410)."""

import json
import uuid

import pytest
from channels.db import database_sync_to_async

from threads.models import Message
from threads.services import reply_regenerate

from .live_server import chat_server  # noqa: F401 - a fixture
from .test_aisdk import (  # noqa: F401 - chat_request is a fixture
    assert_goes_on_after,
    authorization,
    chat_request,
    resumed_after,
    seed_records,
    ui_message_body,
)
from .test_browser import (  # noqa: F401 - browser, sessions and open_context are fixtures
    REPLY_TIMEOUT_MS,
    api_post,
    browser,
    open_context,
    sessions,
)
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 (an autouse fixture)

# The tests through the ASGI app; the browser's runs against a live server of its own.
through_the_app = pytest.mark.django_db(transaction=True)


def seed_text(records: list[tuple[int | None, str]]) -> tuple[str, bool]:
    """Rebuild a reply as the seed S2 client does, from the `textDelta`s until finish; and whether it finished."""
    text = ""
    for _, data in records:
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk["type"] == "text-delta":
            text += chunk["textDelta"]
        elif chunk["type"] == "finish":
            return text, True
    return text, False


async def seed_post(chat_request, thread_id: uuid.UUID, content: str = "Hi"):
    body = {"id": str(thread_id), "message": {"role": "user", "content": content}}
    return await chat_request("/api/chat", method="POST", body=body)


@through_the_app
async def test_seed_client_reads_the_reply_from_chat_stream(chat_request, worker):
    """POST then GET /api/chat/stream?id=: text-delta records rebuild the stored reply, then finish and [DONE]."""
    thread_id = uuid.uuid4()
    started = await seed_post(chat_request, thread_id)
    answer = json.loads(await started.read_all())
    reply = await Message.objects.aget(thread_id=thread_id, role="assistant")
    assert answer == {"success": True, "threadId": str(thread_id), "streamId": str(reply.id)}
    assert started.headers["x-stream-id"] == str(reply.id)

    stream = await chat_request(f"/api/chat/stream?id={thread_id}")
    assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
    records = seed_records(await stream.read_all())
    text, finished = seed_text(records)
    reply = await Message.objects.aget(pk=reply.id)
    assert finished and text == reply.content and reply.status == "complete"
    assert records[-1] == (None, "[DONE]")
    seqs = [seq for seq, _ in records[:-1]]
    assert None not in seqs and seqs == sorted(seqs), "every record carries its log seq as id, in order"


@through_the_app
async def test_a_reply_that_ended_replays_whole_and_a_reconnect_after_it_is_204(chat_request, worker):
    """A GET after the reply ended still gets all of it; one with the last record's id as Last-Event-ID gets 204."""
    thread_id = uuid.uuid4()
    await (await seed_post(chat_request, thread_id)).read_all()
    first = await chat_request(f"/api/chat/stream?id={thread_id}")
    records = seed_records(await first.read_all())
    reply = await Message.objects.aget(thread_id=thread_id, role="assistant")
    assert reply.status == "complete"
    again = await chat_request(f"/api/chat/stream?id={thread_id}")
    assert seed_text(seed_records(await again.read_all())) == (reply.content, True)
    last_id = records[-2][0]
    stream = HttpStream(
        f"/api/chat/stream?id={thread_id}",
        headers={**authorization(first), "last-event-id": str(last_id)},
    )
    status, _ = await stream.start()
    await stream.close()
    assert status == 204


@through_the_app
async def test_last_event_id_resumes_mid_reply_without_gaps_or_doubles(chat_request, worker, settings):
    """A reader that drops mid-reply and comes back with Last-Event-ID gets the rest, each piece once."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 60
    thread_id = uuid.uuid4()
    await (await seed_post(chat_request, thread_id)).read_all()
    first = await chat_request(f"/api/chat/stream?id={thread_id}")
    while first.buffer.count("text-delta") < 2:
        assert await first.read_chunk(), "the stream ended before two deltas"
    complete_records = first.buffer[: first.buffer.rfind("\n\n") + 2]
    records = seed_records(complete_records)
    await first.close()
    rest = HttpStream(
        f"/api/chat/stream?id={thread_id}", headers={**authorization(first), "last-event-id": str(records[-1][0])}
    )
    status, _ = await rest.start()
    assert status == 200
    resumed = seed_records(await rest.read_all())
    assert all(json.loads(data)["type"] not in ("start", "text-start") for _, data in resumed[:-1])
    text, finished = seed_text(records + resumed)
    reply = await Message.objects.aget(thread_id=thread_id, role="assistant")
    assert finished and text == reply.content


@through_the_app
async def test_a_reconnect_after_any_record_gets_the_rest_of_the_reply_once(chat_request, worker):
    """Dropped after any record before finish, a reconnect with its Last-Event-ID gets the rest of the text once."""
    thread_id = uuid.uuid4()
    await (await seed_post(chat_request, thread_id)).read_all()
    url = f"/api/chat/stream?id={thread_id}"
    first = await chat_request(url)
    records = seed_records(await first.read_all())
    reply = await Message.objects.aget(thread_id=thread_id, role="assistant")
    assert reply.status == "complete"
    assert [data for _, data in records[-2:]] == ['{"type":"finish","finishReason":"stop"}', "[DONE]"]
    for cut in range(len(records) - 2):  # a reconnect after finish gets 204 (above)
        held = records[: cut + 1]
        resumed = await resumed_after(url, first, held)
        assert_goes_on_after(records, cut, resumed)
        assert seed_text(held + resumed) == (reply.content, True), f"rebuilt after {records[cut][1]}"


@through_the_app
async def test_chat_stream_follows_the_active_path(chat_request, worker):
    """After a regenerate, the seed stream is the new version of the reply."""
    thread_id = uuid.uuid4()
    await (await seed_post(chat_request, thread_id)).read_all()
    await (await chat_request(f"/api/chat/stream?id={thread_id}")).read_all()
    first = await Message.objects.select_related("thread", "reply_to").aget(thread_id=thread_id, role="assistant")
    again = await database_sync_to_async(reply_regenerate)(thread=first.thread, reply=first)
    stream = await chat_request(f"/api/chat/stream?id={thread_id}")
    records = seed_records(await stream.read_all())
    assert json.loads(records[0][1]) == {"type": "start", "messageId": str(again.id)}
    assert seed_text(records) == ((await Message.objects.aget(pk=again.id)).content, True)


@through_the_app
async def test_chat_stream_of_a_thread_without_a_reply_is_204(chat_request, thread):
    """Nothing to stream yet: 204, which ends an EventSource instead of making it retry."""
    stream = await chat_request(f"/api/chat/stream?id={thread.id}")
    assert stream.status == 204


@through_the_app
async def test_resume_by_stream_id_mid_reply_then_410_once_it_ended(chat_request, worker, settings):
    """The AI SDK POST's X-Stream-Id resumes its reply from the start; once the reply ended the stream is gone (410)."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 60
    thread_id = uuid.uuid4()
    posted = await chat_request("/api/chat", method="POST", body=ui_message_body("Resume me", thread_id))
    stream_id = posted.headers["x-stream-id"]
    await posted.read_chunk()
    resumed = await chat_request(f"/api/chat/resume/{stream_id}")
    assert resumed.status == 200 and resumed.headers["x-stream-id"] == stream_id
    records = seed_records(await resumed.read_all())
    reply = await Message.objects.aget(pk=stream_id)
    assert json.loads(records[0][1]) == {"type": "start", "messageId": stream_id}
    assert seed_text(records) == (reply.content, True)

    ended = await chat_request(f"/api/chat/resume/{stream_id}")
    assert ended.status == 410
    assert json.loads(await ended.read_all())["error"]["code"] == "stream_ended"


@through_the_app
@pytest.mark.parametrize("stream_id", [str(uuid.uuid4()), "not-a-stream"])
async def test_resume_of_an_unknown_stream_is_404(chat_request, stream_id):
    """An id naming no reply, or no id at all, answers 404 not_found."""
    stream = await chat_request(f"/api/chat/resume/{stream_id}")
    assert stream.status == 404
    assert json.loads(await stream.read_all())["error"]["code"] == "not_found"


@through_the_app
async def test_resume_of_a_users_message_is_404(chat_request, worker):
    """A stream id is a reply's: a question's id is no stream."""
    thread_id = uuid.uuid4()
    await (await seed_post(chat_request, thread_id)).read_all()
    question = await Message.objects.aget(thread_id=thread_id, role="user")
    assert (await chat_request(f"/api/chat/resume/{question.id}")).status == 404


# --- A browser EventSource, with onmessage only, as the seed S2 client reads the stream -------------------


@pytest.mark.browser
def test_browser_event_source_rebuilds_the_reply_and_stops_at_the_end(open_context, chat_server):
    """EventSource.onmessage rebuilds the stored reply; its reconnect after the end gets 204 and it closes."""
    context = open_context()
    page = context.new_page()
    page.goto("/")
    thread_id = str(uuid.uuid4())
    api_post(context, "/api/chat", {"id": thread_id, "message": {"role": "user", "content": "Stream me"}})
    page.evaluate(
        """(threadId) => {
            window.seed = { text: "", done: false, finishes: 0 };
            const source = new EventSource(`/api/chat/stream?id=${threadId}`);
            window.seedSource = source;
            source.onmessage = (event) => {
                if (event.data === "[DONE]") { window.seed.done = true; return; }
                const chunk = JSON.parse(event.data);
                if (chunk.type === "text-delta") window.seed.text += chunk.textDelta;
                if (chunk.type === "finish") window.seed.finishes += 1;
            };
        }""",
        thread_id,
    )
    # Left open after [DONE], the EventSource reconnects with Last-Event-ID, gets 204 and closes for good.
    page.wait_for_function(
        "() => window.seed.done && window.seedSource.readyState === EventSource.CLOSED", timeout=REPLY_TIMEOUT_MS
    )
    snapshot = context.request.get(f"/api/threads/{thread_id}").json()
    reply = snapshot["messages"][-1]
    assert reply["status"] == "complete"
    assert page.evaluate("() => window.seed") == {"text": reply["content"], "done": True, "finishes": 1}
