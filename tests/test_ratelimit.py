"""Sends per person per minute are limited, on every surface, with a clear error and nothing written."""
import json
import uuid

import pytest

from streaming.errors import RateLimited
from streaming.models import Generation
from threads.models import Message
from threads.services import message_post, thread_create


@pytest.fixture
def two_a_minute(settings):
    settings.CHAT_SENDS_PER_MINUTE = 2


def test_send_past_the_limit_is_refused(user, two_a_minute):
    """The third send within a minute, in any thread of the person, is refused with a retry delay."""
    threads = [thread_create(owner=user) for _ in range(3)]
    message_post(thread=threads[0], content="one", client_id=None)
    message_post(thread=threads[1], content="two", client_id=None)
    with pytest.raises(RateLimited) as refused:
        message_post(thread=threads[2], content="three", client_id=None)
    assert 1 <= refused.value.retry_after_s <= 60
    assert (Message.objects.count(), Generation.objects.count()) == (4, 2)


def test_repeat_of_an_accepted_send_is_not_limited(user, two_a_minute):
    """A retried send (same client_id) still answers with the first message at the limit (I7 first)."""
    threads = [thread_create(owner=user) for _ in range(2)]
    client_id = uuid.uuid4()
    first = message_post(thread=threads[0], content="one", client_id=client_id)
    message_post(thread=threads[1], content="two", client_id=None)
    assert message_post(thread=threads[0], content="one", client_id=client_id).message == first.message


def test_limit_is_per_person(user, make_user, two_a_minute):
    """One person at the limit does not limit another."""
    for _ in range(2):
        message_post(thread=thread_create(owner=user), content="mine", client_id=None)
    other = thread_create(owner=make_user("bob"))
    assert message_post(thread=other, content="bob's", client_id=None).message.content == "bob's"


def test_api_answers_429(client, user, two_a_minute):
    """Over HTTP a limited send answers 429 rate_limited with Retry-After."""
    client.force_login(user)
    threads = [thread_create(owner=user) for _ in range(3)]
    for thread in threads[:2]:
        message_post(thread=thread, content="hi", client_id=None)
    response = client.post(
        f"/api/threads/{threads[2].id}/messages", data=json.dumps({"content": "hi"}), content_type="application/json"
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60


@pytest.mark.django_db(transaction=True)
async def test_websocket_send_gets_rate_limited_frame(user, connect, two_a_minute):
    """Over the WebSocket a limited send gets an `error` frame with code rate_limited; the socket stays open."""
    from channels.db import database_sync_to_async

    threads = [await database_sync_to_async(thread_create)(owner=user) for _ in range(3)]
    for thread in threads[:2]:
        await database_sync_to_async(message_post)(thread=thread, content="hi", client_id=None)
    socket = await connect(threads[2].id, user)
    await socket.receive()
    await socket.send({"type": "send", "content": "hi"})
    error = await socket.receive()
    assert error["type"] == "error" and error["code"] == "rate_limited"
    await socket.send({"type": "ping"})
    assert (await socket.receive()) == {"type": "pong"}
