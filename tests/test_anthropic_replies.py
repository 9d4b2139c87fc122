"""Replies from Claude end to end: worker, chunk log and subscribers, with the SDK talking to a local mock."""

import uuid

import pytest
from channels.db import database_sync_to_async

from threads.models import Message

from .anthropic_mock import API_KEY, MockResponse, mock_api  # noqa: F401
from .conftest import reply_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

DELTAS = ["Hello", " from", " the", " mock", " model."]


@pytest.fixture
def anthropic(settings, mock_api):  # noqa: F811
    settings.CHAT_PROVIDER = "anthropic"
    return mock_api


async def test_reply_streams_from_claude(thread, user, connect, worker, anthropic, settings):
    """A reply from the API reaches the subscriber and the database with its model, usage and stop reason."""
    anthropic.script(MockResponse(deltas=DELTAS, input_tokens=12))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Hi Claude", "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply.content == "".join(DELTAS) == reply_text(socket.log_events, str(reply.id))
    assert (end["status"], end["stop_reason"], end["model"]) == ("complete", "end_turn", settings.ANTHROPIC_MODEL)
    assert end["usage"]["input_tokens"] == 12 and end["usage"]["output_tokens"] > 0


async def test_second_turn_sends_the_conversation(thread, user, connect, worker, anthropic):
    """The second reply's request carries the first exchange, in order, from the database."""
    anthropic.script(MockResponse(deltas=["First answer."]), MockResponse(deltas=["Second answer."]))
    socket = await connect(thread.id, user)
    for content in ("First question", "Second question"):
        await socket.send({"type": "send", "content": content})
        await socket.receive_until(lambda frame: frame["type"] == "end")
    assert anthropic.requests[-1].body["messages"] == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question"},
    ]


async def test_max_tokens_is_shown_not_hidden(thread, user, connect, worker, anthropic):
    """A reply cut by max_tokens completes with that stop reason on the message and its end event."""
    anthropic.script(MockResponse(deltas=DELTAS, stop_reason="max_tokens"))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Long one"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=end["message_id"])
    assert end["stop_reason"] == reply.stop_reason == "max_tokens"


async def test_invalid_key_fails_clearly_without_the_key(thread, user, connect, worker, anthropic, client, caplog):
    """A rejected key ends the reply `failed` with a plain reason; the key is in no event, page or log."""
    anthropic.script(MockResponse(status=401, message="invalid x-api-key"))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Hi"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "failed"
    assert end["error"] == {"code": "provider_error", "detail": "The API key was rejected (401)."}
    await database_sync_to_async(client.force_login)(user)
    page = await database_sync_to_async(client.get)(f"/threads/{thread.id}/")
    assert "The API key was rejected (401)." in page.content.decode()
    for text in (str(socket.frames), page.content.decode(), caplog.text):
        assert API_KEY not in text
    assert "Traceback" not in caplog.text


async def test_cancel_closes_the_upstream_stream(thread, user, connect, worker, anthropic):
    """Cancelling mid-reply closes the HTTP stream to the API instead of draining it."""
    anthropic.script(MockResponse(deltas=["word "] * 200, delta_delay_s=0.05))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Talk slowly"})
    await socket.receive_until(lambda frame: frame["type"] == "delta")
    await socket.send({"type": "cancel"})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "cancelled"
    assert await database_sync_to_async(anthropic.disconnected.wait)(10), "the mock saw its client go"
    assert anthropic.deltas_sent < 200
