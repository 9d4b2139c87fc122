"""WebSocket protocol v1: authorisation, cursors and bad frames each get their documented answer."""

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from streaming.models import Chunk, Generation
from threads.models import Message
from threads.services import message_post

pytestmark = pytest.mark.django_db(transaction=True)


async def counts() -> tuple[int, int, int]:
    return await Message.objects.acount(), await Chunk.objects.acount(), await Generation.objects.acount()


async def test_anonymous_is_closed_4401(thread, connect):
    """A socket without a session is closed with 4401."""
    socket = await connect(thread.id, user=None)
    assert await socket.close_code() == 4401


async def test_other_users_thread_is_closed_4404(thread, make_user, connect):
    """Another user's thread answers exactly like an unknown one: 4404 (I11)."""
    intruder = await database_sync_to_async(make_user)("mallory")
    socket = await connect(thread.id, intruder)
    assert await socket.close_code() == 4404


@pytest.mark.parametrize("thread_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_malformed_or_unknown_thread_is_closed_4404(user, connect, thread_id):
    """A non-UUID or unknown thread id is closed with 4404."""
    socket = await connect(thread_id, user)
    assert await socket.close_code() == 4404


async def test_foreign_origin_is_refused(thread, user, session_cookie):
    """A handshake from a foreign Origin is refused (cross-site WebSocket hijacking)."""
    from .conftest import ThreadSocket

    cookie = await database_sync_to_async(session_cookie)(user)
    socket = ThreadSocket(thread.id, cookie, origin="https://evil.example")
    connected, _ = await socket.communicator.connect(timeout=10)
    assert not connected


async def test_cursor_ahead_of_log_gets_reset(thread, user, connect, worker):
    """A cursor ahead of the log is answered with a `reset` snapshot, then `ready`."""
    await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    socket = await connect(thread.id, user, after=10**6)
    reset = await socket.receive()
    assert reset["type"] == "reset"
    assert [message["role"] for message in reset["messages"]] == ["user", "assistant"]
    assert (await socket.receive()) == {"type": "ready", "seq": reset["seq"]}


@pytest.mark.parametrize("after", ["-1", "abc", "1e3", "9" * 5000, ""])
async def test_malformed_cursor_gets_error_then_reset(thread, user, connect, after):
    """A negative, non-numeric or absurd cursor gets a bad_request error frame, then a `reset` snapshot."""
    socket = await connect(thread.id, user, after=after)
    error = await socket.receive()
    assert error["type"] == "error" and error["code"] == "bad_request"
    assert (await socket.receive())["type"] == "reset"
    assert (await socket.receive())["type"] == "ready"


async def test_ping_gets_pong(thread, user, connect):
    """A ping frame is answered with pong."""
    socket = await connect(thread.id, user)
    await socket.receive()
    await socket.send({"type": "ping"})
    assert (await socket.receive()) == {"type": "pong"}


BAD_FRAMES = [
    ("not json", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('"send"', "bad_request"),
    ('{"type": "launch"}', "bad_request"),
    ('{"no_type": true}', "bad_request"),
    ('{"type": "send"}', "bad_request"),
    ('{"type": "send", "content": 42}', "bad_request"),
    ('{"type": "send", "content": "   "}', "bad_request"),
    ('{"type": "send", "content": "a\\u0000b"}', "bad_request"),
    ('{"type": "send", "content": "hi", "client_id": "nope"}', "bad_request"),
    ('{"type": "send", "content": "hi", "client_id": 7}', "bad_request"),
    ('{"type": "cancel"}', "not_running"),
]


@pytest.mark.parametrize("text, code", BAD_FRAMES)
async def test_bad_frame_gets_error_and_socket_stays_usable(thread, user, connect, text, code):
    """A bad frame gets an `error` frame with its code, writes nothing, and the socket keeps working."""
    socket = await connect(thread.id, user)
    await socket.receive()
    before = await counts()
    await socket.communicator.send_to(text_data=text)
    error = await socket.receive()
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    assert await counts() == before
    await socket.send({"type": "ping"})
    assert (await socket.receive()) == {"type": "pong"}


async def test_binary_frame_gets_error(thread, user, connect):
    """A binary frame gets a bad_request error frame."""
    socket = await connect(thread.id, user)
    await socket.receive()
    await socket.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await socket.receive())["code"] == "bad_request"


async def test_oversized_message_is_too_long(thread, user, connect, settings):
    """A message over CHAT_MAX_MESSAGE_CHARS gets `too_long` and writes nothing."""
    socket = await connect(thread.id, user)
    await socket.receive()
    before = await counts()
    await socket.send({"type": "send", "content": "x" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)})
    assert (await socket.receive())["code"] == "too_long"
    assert await counts() == before


async def test_send_while_replying_is_busy(thread, user, connect, settings):
    """A send while a reply is queued or running is refused with `busy` and writes nothing (I6)."""
    socket = await connect(thread.id, user)
    await socket.receive()
    await socket.send({"type": "send", "content": "first"})
    await socket.receive_until(lambda frame: frame["type"] == "start")
    before = await counts()
    await socket.send({"type": "send", "content": "second"})
    assert (await socket.receive())["code"] == "busy"
    assert await counts() == before


async def test_repeated_client_id_posts_once(thread, user, connect, worker):
    """A send repeated with the same client_id creates no second message or generation (I7)."""
    client_id = str(uuid.uuid4())
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "once", "client_id": client_id})
    await socket.receive_until(lambda frame: frame["type"] == "end")
    await socket.send({"type": "send", "content": "once", "client_id": client_id})
    await socket.send({"type": "ping"})
    assert (await socket.receive()) == {"type": "pong"}, "the repeat is answered with nothing new"
    assert await counts() == (2, await Chunk.objects.acount(), 1)
    assert await Message.objects.filter(client_id=client_id).acount() == 1


def open_channels(layer) -> int:
    """Channels the layer holds in this process: the in-memory layer's, or the Redis pub/sub layer's per event loop."""
    if hasattr(layer, "_layers"):
        return sum(len(loop_layer.channels) for loop_layer in layer._layers.values())
    return len(layer.channels)


async def test_sockets_hold_no_channels_of_their_own(thread, user, connect):
    """Sockets open no channel-layer channels of their own: the process's hub holds one for the log and one for
    every group of notices (the thread's, and each grant group's: the person's sessions, their access to the
    thread), however many sockets read them."""
    first = await connect(thread.id, user)
    await first.receive_until(lambda frame: frame["type"] == "ready")
    assert open_channels(get_channel_layer()) == 2
    second = await connect(thread.id, user)
    await second.receive_until(lambda frame: frame["type"] == "ready")
    assert open_channels(get_channel_layer()) == 2
