"""Sharing, live: everyone on a thread sees the same reply, and losing access ends a person's streams at once."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from threads.models import Membership, Message, Thread
from threads.services import message_post, thread_delete
from threads.sharing import link_create, link_revoke, member_add, member_remove, member_set_role

from .conftest import ThreadSocket, reply_text
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture

pytestmark = pytest.mark.django_db(transaction=True)

# The bound: a revoked reader is cut off within a second.
CUT_OFF_WITHIN_S = 1.0


@pytest.fixture
def slow_replies(settings):
    """Replies of a few seconds, so that access can be taken away mid-reply."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 40
    settings.SCRIPTED_REPLY_TOKENS = 200


@pytest.fixture
def vera(make_user):
    return make_user("vera")


@pytest.fixture
def pat(make_user):
    return make_user("pat")


@pytest.fixture
def lina(make_user):
    return make_user("lina")


async def share(thread, user, role: str) -> Membership:
    return await database_sync_to_async(member_add)(
        thread=thread, username=user.username, role=role, added_by=thread.owner
    )


async def link_socket(thread, user=None, query: str = "") -> tuple[ThreadSocket, int]:
    """Open a WebSocket (`query` after its cursor) from a browser session that opened a new share link of `thread`.

    Signed out if no user is given.
    """
    link, token = await database_sync_to_async(link_create)(thread=thread, created_by=thread.owner)

    def open_link() -> str:
        client = Client()
        if user is not None:
            client.force_login(user)
        assert client.get(f"/s/{token}").status_code == 302
        return f"sessionid={client.cookies['sessionid'].value}"

    socket = ThreadSocket(thread.id, await database_sync_to_async(open_link)(), after=f"0{query}")
    await socket.connect()
    return socket, link.pk


async def closed_within(socket: ThreadSocket, seconds: float) -> int:
    """Return the close code of a socket that must close within `seconds` (frames before it are kept)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        output = await socket.communicator.receive_output(timeout=max(0.01, deadline - loop.time()))
        if output["type"] == "websocket.close":
            socket.closed = True
            return output["code"]
        socket.frames.append(json.loads(output["text"]))


def ended(frame: dict) -> bool:
    return frame["type"] == "end"


async def test_a_viewer_and_the_owners_two_devices_end_a_reply_with_the_same_text(thread, vera, connect, worker):
    """The owner's laptop and phone and a viewer's tab each rebuild exactly the reply the database holds."""
    viewer = vera
    await share(thread, viewer, "viewer")
    laptop, phone, tab = await connect(thread.id, thread.owner), await connect(thread.id, thread.owner), None
    tab = await connect(thread.id, viewer)
    for socket in (laptop, phone, tab):
        await socket.receive_until(lambda frame: frame["type"] == "ready")
    await laptop.send({"type": "send", "content": "Tell us a story", "client_id": None})
    ends = [await socket.receive_until(ended) for socket in (laptop, phone, tab)]
    reply = await Message.objects.aget(pk=ends[0]["message_id"])
    texts = {reply_text(socket.log_events, str(reply.id)) for socket in (laptop, phone, tab)}
    assert texts == {reply.content} and reply.content
    sent = [next(f for f in socket.log_events if f["type"] == "message") for socket in (laptop, phone, tab)]
    assert {json.dumps(frame["message"]["author"]) for frame in sent} == {
        json.dumps({"id": thread.owner.pk, "name": "alice"})
    }


async def test_removing_a_viewer_mid_reply_closes_them_within_a_second_while_the_owner_goes_on(
    thread, vera, connect, worker, slow_replies
):
    """The removed viewer's socket closes 4403 within a second; the owner's stream follows the reply to its end."""
    viewer = vera
    await share(thread, viewer, "viewer")
    owner_socket, viewer_socket = await connect(thread.id, thread.owner), await connect(thread.id, viewer)
    await owner_socket.send({"type": "send", "content": "A long one", "client_id": None})
    await viewer_socket.receive_until(lambda frame: frame["type"] == "delta")
    await database_sync_to_async(member_remove)(thread=thread, user_id=viewer.pk)
    assert await closed_within(viewer_socket, CUT_OFF_WITHIN_S) == 4403
    end = await owner_socket.receive_until(ended)
    assert end["status"] == "complete"
    reply = await Message.objects.aget(pk=end["message_id"])
    assert reply_text(owner_socket.log_events, str(reply.id)) == reply.content
    assert reply_text(viewer_socket.log_events, str(reply.id)) != reply.content, "cut off mid-reply"


async def test_revoking_a_link_mid_reply_closes_its_readers_within_a_second(
    thread, lina, connect, worker, slow_replies
):
    """A link holder's socket closes 4403 within a second of the revocation; the owner's goes on."""
    owner_socket = await connect(thread.id, thread.owner)
    holder, link_id = await link_socket(thread, lina)
    await owner_socket.send({"type": "send", "content": "A long one", "client_id": None})
    await holder.receive_until(lambda frame: frame["type"] == "delta")
    await database_sync_to_async(link_revoke)(thread=thread, link_id=link_id)
    assert await closed_within(holder, CUT_OFF_WITHIN_S) == 4403
    assert (await owner_socket.receive_until(ended))["status"] == "complete"
    await holder.disconnect()


async def test_removing_a_member_ends_their_event_stream_with_forbidden(thread, vera, session_cookie):
    """An event stream of a removed member gets an `error` record (forbidden), then ends."""
    viewer = vera
    await share(thread, viewer, "viewer")
    cookie = await database_sync_to_async(session_cookie)(viewer)
    stream = HttpStream(f"/api/threads/{thread.id}/events", headers={"cookie": cookie})
    assert (await stream.start())[0] == 200
    try:
        assert (await stream.event())["type"] == "ready"
        await database_sync_to_async(member_remove)(thread=thread, user_id=viewer.pk)
        assert (await stream.event())["code"] == "forbidden"
        assert await stream.read_all() == "" and stream.ended
    finally:
        await stream.close()


async def test_a_lowered_role_loses_write_frames_at_once(thread, pat, connect):
    """A participant made a viewer is refused their next send (`forbidden`), writes nothing, and still reads."""
    participant = pat
    await share(thread, participant, "participant")
    socket = await connect(thread.id, participant)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    await database_sync_to_async(member_set_role)(thread=thread, user_id=participant.pk, role="viewer")
    await socket.send({"type": "send", "content": "Still allowed?", "client_id": None})
    assert (await socket.receive_until(lambda frame: frame["type"] == "error"))["code"] == "forbidden"
    assert not await Message.objects.filter(thread=thread).aexists()
    await socket.send({"type": "ping"})
    assert (await socket.receive())["type"] == "pong"


async def test_deleting_the_thread_closes_every_readers_socket_4404(thread, vera, connect):
    """The owner deleting the thread closes a member's idle socket at once with 4404."""
    viewer = vera
    await share(thread, viewer, "viewer")
    socket = await connect(thread.id, viewer)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    await database_sync_to_async(thread_delete)(thread=await Thread.objects.aget(pk=thread.pk))
    assert await closed_within(socket, CUT_OFF_WITHIN_S) == 4404


async def test_a_lost_removal_notice_is_caught_by_the_recheck(thread, vera, connect, settings):
    """Removed without a notice (as when the channel layer loses it), a member's socket closes at the next recheck."""
    settings.STREAM_ACCESS_RECHECK_SECONDS = 0.5
    viewer = vera
    await share(thread, viewer, "viewer")
    socket = await connect(thread.id, viewer)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    await Membership.objects.filter(thread=thread, user=viewer).adelete()
    assert await closed_within(socket, 5 * settings.STREAM_ACCESS_RECHECK_SECONDS) == 4403


async def test_removing_a_member_ends_their_ai_sdk_stream(thread, pat, session_cookie):
    """A resumed AI SDK stream of a removed participant ends with an `error` chunk, then `[DONE]`."""
    await share(thread, pat, "participant")
    # No worker runs: the reply stays in progress, so the stream would go on waiting for it.
    await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    cookie = await database_sync_to_async(session_cookie)(pat)
    stream = HttpStream(f"/api/chat/{thread.id}/stream", headers={"cookie": cookie})
    assert (await stream.start())[0] == 200
    try:
        while '"type":"start"' not in stream.buffer:
            assert await stream.read_chunk()
        await database_sync_to_async(member_remove)(thread=thread, user_id=pat.pk)
        body = await stream.read_all()
        assert '"errorText":"Your access to this thread ended."' in body and body.endswith("data: [DONE]\n\n")
    finally:
        await stream.close()
