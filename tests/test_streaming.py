"""A reply streams from the worker to every subscriber, exactly once and in order."""

import uuid

import pytest
from channels.db import database_sync_to_async
from django.db.models import Sum

from streaming.models import Chunk
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply
from threads.models import Message

from .conftest import reply_text

pytestmark = pytest.mark.django_db(transaction=True)


async def test_send_streams_reply_to_sender(thread, user, connect, worker, settings):
    """A send frame produces message, start, deltas and end; the text equals the stored content."""
    socket = await connect(thread.id, user)
    assert (await socket.receive()) == {"type": "ready", "seq": 0}
    await socket.send({"type": "send", "content": "Hello there", "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    events = socket.log_events
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [events[0]["type"], events[1]["type"]] == ["message", "start"]
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply.status == end["status"] == "complete"
    assert reply_text(events, str(reply.id)) == reply.content
    expected = scripted_reply([Turn("user", "Hello there")], settings.SCRIPTED_REPLY_TOKENS)
    assert reply.content == expected
    assert end["usage"]["output_tokens"] == settings.SCRIPTED_REPLY_TOKENS


async def post(thread, content="Hello there", client_id=None):
    from threads.services import message_post

    return await database_sync_to_async(message_post)(thread=thread, content=content, client_id=client_id)


async def test_every_tab_sees_the_reply(thread, user, connect, worker):
    """Two subscribers of one thread receive the same complete log, whichever one sent."""
    first = await connect(thread.id, user)
    second = await connect(thread.id, user)
    await first.send({"type": "send", "content": "Both tabs", "client_id": str(uuid.uuid4())})
    for socket in (first, second):
        await socket.receive_until(lambda frame: frame["type"] == "end")
    assert first.log_events == second.log_events
    reply = await Message.objects.aget(thread=thread, role="assistant")
    assert reply_text(second.log_events, str(reply.id)) == reply.content


async def test_late_subscriber_gets_backlog_then_live(thread, user, connect, worker, settings):
    """A client joining mid-reply gets the backlog, `ready`, then the live rest, each event once."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 100
    early = await connect(thread.id, user)
    await post(thread)
    await early.receive_until(lambda frame: frame["type"] == "delta")
    late = await connect(thread.id, user, after=0)
    await late.receive_until(lambda frame: frame["type"] == "end")
    seqs = [event["seq"] for event in late.log_events]
    assert seqs == list(range(1, seqs[-1] + 1))
    ready = next(frame for frame in late.frames if frame["type"] == "ready")
    assert 2 <= ready["seq"] < seqs[-1], "joined mid-reply: some events were backlog, some live"


async def test_snapshot_plus_later_events_equals_final_state(thread, user, connect, worker, settings):
    """A snapshot taken mid-reply plus the events after its seq rebuild the final text (I4)."""
    from streaming.events import message_payloads
    from streaming.selectors import thread_snapshot

    settings.SCRIPTED_TOKENS_PER_SECOND = 100
    watcher = await connect(thread.id, user)
    posted = await post(thread)
    await watcher.receive_until(lambda frame: frame["type"] == "delta")
    snapshot = await database_sync_to_async(thread_snapshot)(thread=thread)
    resumed = await connect(thread.id, user, after=snapshot.seq)
    await resumed.receive_until(lambda frame: frame["type"] == "end")
    reply_id = str(posted.reply.id)
    partial = next(message["content"] for message in message_payloads(snapshot) if message["id"] == reply_id)
    reply = await Message.objects.aget(pk=reply_id)
    assert partial + reply_text(resumed.log_events, reply_id) == reply.content
    assert resumed.log_events[0]["seq"] == snapshot.seq + 1


async def test_closing_every_socket_does_not_stop_the_reply(thread, user, connect, worker):
    """Disconnecting is not cancelling: the reply completes with nobody watching (I5)."""
    socket = await connect(thread.id, user)
    posted = await post(thread)
    await socket.receive_until(lambda frame: frame["type"] == "start")
    await socket.disconnect()
    returning = await connect(thread.id, user, after=0)
    end = await returning.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    assert end["message_id"] == str(posted.reply.id)


async def test_cancel_ends_reply_cancelled_with_partial_text(thread, user, connect, worker, settings):
    """A cancel frame stops the reply: it ends `cancelled` and keeps the text written so far (I5, I9)."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 50
    socket = await connect(thread.id, user)
    posted = await post(thread)
    await socket.receive_until(lambda frame: frame["type"] == "delta")
    await socket.send({"type": "cancel"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert end["status"] == reply.status == "cancelled"
    assert reply.content and reply_text(socket.log_events, str(reply.id)) == reply.content
    assert len(reply.content) < len(scripted_reply([Turn("user", "Hello there")], settings.SCRIPTED_REPLY_TOKENS))


async def test_provider_error_ends_reply_failed_with_text_kept(thread, user, connect, worker, settings):
    """A provider failing mid-stream ends the message `failed` with its error and the text so far (I9)."""
    settings.CHAT_PROVIDER = "tests.fakes.FailingProvider"
    socket = await connect(thread.id, user)
    await post(thread)
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=end["message_id"])
    assert end["status"] == reply.status == "failed"
    assert (
        end["error"]
        == reply.error
        == {"code": "provider_error", "detail": "The provider is overloaded; try again shortly."}
    )
    tokens = scripted_reply([Turn("user", "Hello there")], settings.SCRIPTED_REPLY_TOKENS)
    assert reply.content and tokens.startswith(reply.content)
    assert reply_text(socket.log_events, str(reply.id)) == reply.content


async def test_idle_worker_is_woken_not_polled(thread, user, connect, worker, settings):
    """A queued generation starts at once on an idle worker, long before the safety-net poll."""
    settings.STREAM_WORKER_POLL_SECONDS = 60
    socket = await connect(thread.id, user)
    await socket.receive()  # ready: the worker has had time to go idle
    await post(thread)
    # Only a wake-up can start it within the receive timeout, far below the 60 s poll.
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"


async def test_coalescing_writes_few_chunks(thread, user, connect, worker, settings):
    """Deltas are coalesced per flush: far fewer chunk rows than tokens, same text."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    settings.STREAM_FLUSH_MS = 100
    settings.SCRIPTED_REPLY_TOKENS = 120
    socket = await connect(thread.id, user)
    posted = await post(thread)
    await socket.receive_until(lambda frame: frame["type"] == "end")
    # Delta events, one per flush (a finished reply keeps them in fewer rows: test_compaction.py).
    written = await Chunk.objects.filter(message_id=posted.reply.id, kind="delta").aaggregate(deltas=Sum("span"))
    assert 1 <= written["deltas"] <= 120 // 10
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert reply.content == scripted_reply([Turn("user", "Hello there")], 120)
