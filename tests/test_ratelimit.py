"""Sends per person per minute are limited, on every surface, with a clear error and nothing written."""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from streaming.errors import RateLimited
from streaming.models import Generation
from streaming.services.endings import generation_cancel
from threads.models import Message, Thread
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


def send_over_http(client, thread_id, content: str = "hi"):
    return client.post(
        f"/api/threads/{thread_id}/messages", data=json.dumps({"content": content}), content_type="application/json"
    )


def test_deleting_threads_does_not_reset_the_limit(client, user, two_a_minute):
    """Sending, deleting the thread and sending again in a new one is counted all the same."""
    client.force_login(user)
    for _ in range(2):
        thread_id = client.post("/api/threads", data="{}", content_type="application/json").json()["id"]
        assert send_over_http(client, thread_id).status_code == 202
        assert client.delete(f"/api/threads/{thread_id}").status_code == 204
    thread_id = client.post("/api/threads", data="{}", content_type="application/json").json()["id"]
    refused = send_over_http(client, thread_id)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"


def test_retry_counts_against_the_limit(client, user, two_a_minute):
    """A retry asks the provider again: past the limit it is refused with 429 and writes nothing."""
    client.force_login(user)
    thread = thread_create(owner=user)
    reply = message_post(thread=thread, content="one", client_id=None).reply
    generation_cancel(thread=thread)  # queued, so it ends cancelled at once
    retry = f"/threads/{thread.id}/replies/{reply.id}/retry"
    assert client.post(retry, HTTP_ACCEPT="application/json").status_code == 202
    generation_cancel(thread=thread)
    refused = client.post(retry, HTTP_ACCEPT="application/json")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert Generation.objects.count() == 2


def test_refused_chat_send_starts_no_thread(client, user, two_a_minute):
    """`POST /api/chat` with a new thread id, refused for the rate, leaves no empty thread behind."""
    client.force_login(user)
    for _ in range(2):
        message_post(thread=thread_create(owner=user), content="hi", client_id=None)
    before = Thread.objects.count()
    for _ in range(5):
        body = {"id": str(uuid.uuid4()), "message": {"role": "user", "content": "hi"}}
        refused = client.post("/api/chat", data=json.dumps(body), content_type="application/json")
        assert refused.status_code == 429
    assert Thread.objects.count() == before


@pytest.fixture
def three_threads_an_hour(settings):
    settings.CHAT_THREADS_PER_HOUR = 3


def test_thread_creation_is_limited_on_every_surface(client, user, three_threads_an_hour):
    """New threads past CHAT_THREADS_PER_HOUR are refused (429, Retry-After), deleted ones counted too."""
    client.force_login(user)
    first = client.post("/api/threads", data="{}", content_type="application/json").json()["id"]
    assert client.delete(f"/api/threads/{first}").status_code == 204
    assert client.post(f"/threads/{uuid.uuid4()}/start", {"content": "hi"}).status_code == 302
    body = {"id": str(uuid.uuid4()), "message": {"role": "user", "content": "hi"}}
    assert client.post("/api/chat", data=json.dumps(body), content_type="application/json").status_code == 200
    refused = client.post("/api/threads", data="{}", content_type="application/json")
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 3600
    page = client.post(f"/threads/{uuid.uuid4()}/start", {"content": "hi"}, follow=True)
    assert "At most 3 new threads an hour" in page.content.decode()
    assert Thread.objects.filter(owner=user).count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("named_author", [False, True], ids=["owner implied", "owner named (a WebSocket send)"])
def test_simultaneous_sends_to_many_threads_stop_at_the_limit(user, settings, named_author):
    """100 sends at once, each to its own thread, accept exactly CHAT_SENDS_PER_MINUTE on PostgreSQL."""
    settings.CHAT_SENDS_PER_MINUTE = 20
    threads = [thread_create(owner=user) for _ in range(100)]
    start = threading.Barrier(len(threads))

    def send(thread) -> bool:
        start.wait()
        try:
            message_post(thread=thread, content="at once", client_id=None, author=user if named_author else None)
        except RateLimited:
            return False
        finally:
            connection.close()
        return True

    with ThreadPoolExecutor(max_workers=len(threads)) as pool:
        accepted = sum(pool.map(send, threads))
    assert accepted == 20
    assert Message.objects.filter(role=Message.Role.USER).count() == 20
