"""Renaming a thread reaches every open tab: the `thread` control frame (protocol v1 extension, no seq)."""

import json

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from threads.services import thread_create
from threads.tokens.services import api_token_create

from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture

pytestmark = pytest.mark.django_db(transaction=True)


async def rename(user, thread_id, title: object) -> int:
    """PATCH the thread's title through the JSON API, as a program would; return the status."""
    _, secret = await database_sync_to_async(api_token_create)(user=user, name="renamer")
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    body = json.dumps({"title": title}).encode()
    request = HttpStream(f"/api/threads/{thread_id}", method="PATCH", headers=headers, body=body)
    status, _ = await request.start()
    await request.read_all()
    await request.close()  # waits for the app to finish, which closes its database connection
    return status


async def next_frame_after_ping(socket) -> dict:
    """Return the first frame the socket gets after a ping: whatever was already queued for it comes first."""
    await socket.send({"type": "ping"})
    return await socket.receive()


async def test_rename_reaches_every_socket_on_the_thread(thread, user, connect):
    """Every socket on the thread gets {"type": "thread", "id", "title"} with the new title, and no seq."""
    tabs = [await connect(thread.id, user) for _ in range(2)]
    for tab in tabs:
        assert (await tab.receive())["type"] == "ready"
    assert await rename(user, thread.id, "  Holiday plans ") == 200
    for tab in tabs:
        assert await tab.receive() == {"type": "thread", "id": str(thread.id), "title": "Holiday plans"}


def post_rename_form(user, thread_id, title: str) -> int:
    """Post the thread page's rename form as its script does; return the status."""
    client = Client()
    client.force_login(user)
    response = client.post(f"/threads/{thread_id}/title", {"title": title}, headers={"accept": "application/json"})
    return response.status_code


async def test_rename_from_the_page_reaches_the_socket(thread, user, connect):
    """The thread page's rename form sends the same frame to the thread's sockets."""
    socket = await connect(thread.id, user)
    assert (await socket.receive())["type"] == "ready"
    assert await database_sync_to_async(post_rename_form)(user, thread.id, "Reading list") == 200
    assert await socket.receive() == {"type": "thread", "id": str(thread.id), "title": "Reading list"}


async def test_rename_reaches_only_the_renamed_thread(thread, user, connect):
    """A socket on another thread of the same person gets no `thread` frame."""
    other = await database_sync_to_async(thread_create)(owner=user, title="Other")
    socket = await connect(other.id, user)
    assert (await socket.receive())["type"] == "ready"
    assert await rename(user, thread.id, "Renamed") == 200
    assert await next_frame_after_ping(socket) == {"type": "pong"}


async def test_refused_rename_sends_nothing(thread, user, connect):
    """A blank title is refused with 400, and the thread's sockets get no frame for it."""
    socket = await connect(thread.id, user)
    assert (await socket.receive())["type"] == "ready"
    assert await rename(user, thread.id, "   ") == 400
    assert await next_frame_after_ping(socket) == {"type": "pong"}


async def test_rename_reaches_an_event_stream_as_a_record_without_id(thread, user, session_cookie):
    """An event stream gets the frame as `event: thread` with no `id`, so its Last-Event-ID stays a seq."""
    cookie = await database_sync_to_async(session_cookie)(user)
    stream = HttpStream(f"/api/threads/{thread.id}/events", headers={"cookie": cookie})
    assert (await stream.start())[0] == 200
    try:
        assert (await stream.event())["type"] == "ready"
        assert await rename(user, thread.id, "Plans") == 200
        frame = {"type": "thread", "id": str(thread.id), "title": "Plans"}
        assert await stream.record() == {"event": "thread", "data": json.dumps(frame, separators=(",", ":"))}
    finally:
        await stream.close()
