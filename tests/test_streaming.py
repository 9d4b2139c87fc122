"""A reply streams from the worker to every subscriber, exactly once and in order."""
import uuid

import pytest
from channels.db import database_sync_to_async

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
