"""Presence: a thread's watchers see who else watches it now, as `presence` frames (people, not sockets).

These run in one process (the in-memory layer's rooms); tests/test_presence_cluster.py runs
two web processes on PostgreSQL and Redis, and kills one.
"""

import asyncio
import time
import uuid

import pytest
from channels.db import database_sync_to_async

from streaming import presence
from streaming.layers import RedisPubSubChannelLayer
from threads.sharing import member_add

from .conftest import ThreadSocket
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture

pytestmark = pytest.mark.django_db(transaction=True)

# The dead watcher's heartbeat: its expiry (three of them) outlasts the live watcher's start on a loaded machine.
GHOST_HEARTBEAT_S = 2.0


@pytest.fixture
def bob(make_user, thread):
    bob = make_user("bob")
    member_add(thread=thread, username="bob", role="viewer", added_by=thread.owner)
    return bob


async def watching(connect, thread, user) -> ThreadSocket:
    """Open a socket that asks for presence, read up to its first `presence` frame."""
    socket = await connect(thread.id, user, after="0&presence=1")
    await socket.receive_until(is_presence)
    return socket


def is_presence(frame: dict) -> bool:
    return frame["type"] == "presence"


def names(frame: dict) -> list[str]:
    return [person["name"] for person in frame["people"]]


async def test_watchers_see_each_other_join_and_leave_as_people_not_sockets(thread, bob, connect):
    """Alice sees Bob join; Bob's second tab changes nothing; she sees him leave when his last tab closes."""
    alice_socket = await watching(connect, thread, thread.owner)
    assert names(alice_socket.frames[-1]) == ["alice"]
    bob_tab = await watching(connect, thread, bob)
    assert names(bob_tab.frames[-1]) == ["alice", "bob"]
    assert names(await alice_socket.receive_until(is_presence)) == ["alice", "bob"]
    bob_other_tab = await watching(connect, thread, bob)
    await bob_tab.disconnect()
    await bob_other_tab.disconnect()
    # Only a change is sent: the next frame after both tabs closed is the one without Bob.
    assert names(await alice_socket.receive_until(is_presence)) == ["alice"]
    assert [names(frame) for frame in alice_socket.frames if is_presence(frame)] == [
        ["alice"],
        ["alice", "bob"],
        ["alice"],
    ]
    assert alice_socket.frames[-1]["people"] == [{"id": thread.owner.pk, "name": "alice"}]


async def test_a_socket_without_presence_is_counted_but_sent_no_presence_frames(thread, bob, connect):
    """A protocol v1 client that does not ask for presence gets none of its frames, yet others see it watching."""
    alice_socket = await watching(connect, thread, thread.owner)
    plain = await connect(thread.id, bob)
    assert names(await alice_socket.receive_until(is_presence)) == ["alice", "bob"]
    await plain.send({"type": "ping"})
    assert [frame["type"] for frame in await frames_until_pong(plain)] == ["ready", "pong"]


async def frames_until_pong(socket: ThreadSocket) -> list[dict]:
    await socket.receive_until(lambda frame: frame["type"] == "pong")
    return socket.frames


async def test_a_watcher_whose_process_died_drops_out_after_its_expiry(thread, connect, settings):
    """A watcher that stops renewing (its process died) leaves everyone's presence once it expires, not before."""
    # A watcher of a process that dies right after joining: it never renews or leaves.
    settings.STREAM_PRESENCE_HEARTBEAT_SECONDS = GHOST_HEARTBEAT_S
    ghost = presence.Watcher(thread.id, {"id": 999, "name": "ghost"})
    await ghost.join()
    expires_at = time.time() + presence.EXPIRY_HEARTBEATS * GHOST_HEARTBEAT_S
    settings.STREAM_PRESENCE_HEARTBEAT_SECONDS = 0.2  # the live watcher's
    alice_socket = await watching(connect, thread, thread.owner)
    assert names(alice_socket.frames[-1]) == ["alice", "ghost"]
    assert names(await alice_socket.receive_until(is_presence)) == ["alice"]
    dropped_after_expiry_s = time.time() - expires_at
    assert 0 <= dropped_after_expiry_s < 2 * settings.STREAM_PRESENCE_HEARTBEAT_SECONDS + 0.5


async def test_an_event_stream_gets_presence_records_without_id(thread, bob, session_cookie, connect):
    """An event stream asking for presence gets `event: presence` records without `id`: Last-Event-ID stays a seq."""
    cookie = await database_sync_to_async(session_cookie)(thread.owner)
    stream = HttpStream(f"/api/threads/{thread.id}/events?presence=1", headers={"cookie": cookie})
    assert (await stream.start())[0] == 200
    try:
        assert (await stream.event())["type"] == "ready"
        record = await stream.record()
        assert record["event"] == "presence" and "id" not in record
        await watching(connect, thread, bob)
        joined = await stream.event()
        assert names(joined) == ["alice", "bob"] and "_id" not in joined
    finally:
        await stream.close()


async def test_a_signed_out_link_visitor_hears_presence_unseen(thread, connect, settings):
    """A public link's signed-out visitor is sent who watches, and is not listed among them."""
    from .test_sharing_live import link_socket

    settings.CHAT_PUBLIC_LINKS = True
    alice_socket = await watching(connect, thread, thread.owner)
    visitor, _ = await link_socket(thread, query="&presence=1")
    try:
        assert names(await visitor.receive_until(is_presence)) == ["alice"]
        await alice_socket.send({"type": "ping"})
        await alice_socket.receive_until(lambda frame: frame["type"] == "pong")
        assert [names(frame) for frame in alice_socket.frames if is_presence(frame)] == [["alice"]]
    finally:
        await visitor.disconnect()


@pytest.mark.redis
async def test_heartbeats_of_one_loop_turn_go_to_redis_in_one_round_trip(thread, monkeypatch):
    """Watchers of several threads renewing together cost one presence update of the layer, each answered its room."""
    calls = []
    update_many = RedisPubSubChannelLayer.presence_update_many

    async def counted(self, updates, *, now):
        calls.append([room for room, _, _ in updates])
        return await update_many(self, updates, now=now)

    monkeypatch.setattr(RedisPubSubChannelLayer, "presence_update_many", counted)
    rooms = [uuid.uuid4() for _ in range(3)]
    watchers = [presence.Watcher(room, {"id": n, "name": f"p{n}"}) for n, room in enumerate(rooms, start=1)]
    people = await asyncio.gather(*(watcher.join() for watcher in watchers))

    assert calls == [[str(room) for room in rooms]]
    assert people == [[{"id": n, "name": f"p{n}"}] for n in (1, 2, 3)]
    await asyncio.gather(*(watcher.leave() for watcher in watchers))
