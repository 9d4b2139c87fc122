"""Server-sent events: the WebSocket's log and guarantees over plain HTTP (I3), resumable with Last-Event-ID."""

import contextlib
import random
from urllib.parse import urlsplit

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import ApplicationCommunicator

from chatsite.asgi import application
from streaming.events import thread_group_name
from threads import sse
from threads.models import Message
from threads.services import message_post

from .conftest import RECEIVE_TIMEOUT_S, on_postgres, reply_text
from .fakes import LossyLayerMixin
from .protocol_check import parse_frame

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def one_sync_thread(monkeypatch):
    """On SQLite, run each request's ORM calls on the one sync thread the worker and consumers use.

    Django gives every ASGI request a thread (and so a connection) of its own. The SQLite
    test database lives in memory with a shared cache, where a connection that meets
    another's write fails at once ("database table is locked") instead of waiting as a
    database file does; PostgreSQL runs the suite with per-request threads as in production.
    """
    if not on_postgres:
        monkeypatch.setattr("django.core.handlers.asgi.ThreadSensitiveContext", contextlib.nullcontext)


class HttpStream:
    """One HTTP request through the ASGI app, its body read as it streams (an SSE client for tests)."""

    def __init__(self, url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""):
        parts = urlsplit(url)
        headers = {"host": "testserver", **{name.lower(): value for name, value in (headers or {}).items()}}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.communicator = ApplicationCommunicator(application, scope)
        self.body = body
        self.buffer = ""
        self.ended = False
        self.closed = False

    async def start(self) -> tuple[int, dict[str, str]]:
        """Send the request and return the response's status and headers."""
        await self.communicator.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.communicator.receive_output(RECEIVE_TIMEOUT_S)
        assert start["type"] == "http.response.start", start
        return start["status"], {name.decode().lower(): value.decode() for name, value in start["headers"]}

    async def read_chunk(self) -> bool:
        """Read one body message into the buffer; return False once the body has ended."""
        if self.ended:
            return False
        message = await self.communicator.receive_output(RECEIVE_TIMEOUT_S)
        self.buffer += message.get("body", b"").decode()
        self.ended = not message.get("more_body", False)
        return True

    async def read_all(self) -> str:
        while await self.read_chunk():
            pass
        return self.buffer

    async def record(self) -> dict[str, str]:
        """Return the next SSE record as {"id", "event", "data"} or {"comment"}."""
        while "\n\n" not in self.buffer:
            assert await self.read_chunk(), f"the stream ended; left over: {self.buffer!r}"
        raw, self.buffer = self.buffer.split("\n\n", 1)
        record: dict[str, str] = {}
        for line in raw.split("\n"):
            name, _, value = line.partition(":")
            record[name or "comment"] = value[1:] if value.startswith(" ") else value
        return record

    async def event(self) -> dict:
        """Return the next event's frame (skipping comments), with its SSE `id` kept as "_id"."""
        while "data" not in (record := await self.record()):
            pass
        frame = parse_frame(record["data"])
        assert record["event"] == frame["type"]
        return frame | ({"_id": int(record["id"])} if "id" in record else {})

    async def close(self) -> None:
        """Go away like a client closing the connection, and wait for the app to finish."""
        if not self.closed:
            self.closed = True
            await self.communicator.send_input({"type": "http.disconnect"})
            await self.communicator.wait(RECEIVE_TIMEOUT_S)


@pytest.fixture
async def open_stream(session_cookie):
    """Open an HttpStream as `user` (by session cookie) and check its answer; all are closed after the test."""
    streams: list[HttpStream] = []

    async def open_(url: str, user=None, status: int = 200, **kwargs) -> HttpStream:
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers["cookie"] = await database_sync_to_async(session_cookie)(user)
        stream = HttpStream(url, headers=headers, **kwargs)
        streams.append(stream)
        answered, stream.headers = await stream.start()
        assert answered == status, await stream.read_all()
        return stream

    yield open_
    for stream in streams:
        await stream.close()


async def post(thread, content: str = "Hello there") -> Message:
    posted = await database_sync_to_async(message_post)(thread=thread, content=content, client_id=None)
    return posted.reply


async def read_until_end(stream: HttpStream) -> list[dict]:
    events = []
    while not events or events[-1]["type"] != "end":
        event = await stream.event()
        if event["type"] not in ("ready", "reset"):
            events.append(event)
    return events


async def test_reply_streams_as_sse_records(thread, user, open_stream, worker):
    """A reply arrives as `id`/`event`/`data` records with the SSE headers; the text equals the stored content."""
    stream = await open_stream(f"/api/threads/{thread.id}/events", user)
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache" and stream.headers["x-accel-buffering"] == "no"
    assert await stream.event() == {"type": "ready", "seq": 0, "_id": 0}
    reply = await post(thread)
    events = await read_until_end(stream)
    assert [event["_id"] for event in events] == [event["seq"] for event in events] == list(range(1, len(events) + 1))
    stored = await Message.objects.aget(pk=reply.id)
    assert reply_text(events, str(reply.id)) == stored.content and events[-1]["status"] == "complete"


@pytest.mark.parametrize("seed", [3, 11, 2026])
async def test_last_event_id_resumes_exactly_once_in_order(seed, thread, user, open_stream, worker, settings):
    """Seeded: dropping at random points and resuming with Last-Event-ID delivers every event once, in order."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    settings.SCRIPTED_REPLY_TOKENS = 120
    settings.STREAM_FLUSH_MS = 10
    rng = random.Random(seed)
    reply = await post(thread)
    received: list[dict] = []
    sessions = 0
    while not received or received[-1]["type"] != "end":
        headers = {"Last-Event-ID": str(received[-1]["seq"])} if received else {}
        stream = await open_stream(f"/api/threads/{thread.id}/events", user, headers=headers)
        sessions += 1
        for _ in range(rng.randint(1, 8)):
            event = await stream.event()
            if event["type"] == "ready":
                continue
            received.append(event)
            if event["type"] == "end":
                break
        await stream.close()
    assert [event["seq"] for event in received] == list(range(1, len(received) + 1))
    assert sessions > 2, "the client really did resume"
    stored = await Message.objects.aget(pk=reply.id)
    assert reply_text(received, str(reply.id)) == stored.content and stored.status == "complete"


async def test_after_query_parameter_resumes(thread, user, open_stream):
    """`?after=N` serves the events after N, then `ready` at the log's end."""
    await post(thread)
    stream = await open_stream(f"/api/threads/{thread.id}/events?after=1", user)
    assert (await stream.event())["seq"] == 2
    assert await stream.event() == {"type": "ready", "seq": 2, "_id": 2}


async def test_last_event_id_wins_over_after(thread, user, open_stream):
    """An EventSource reconnecting sends Last-Event-ID and keeps its URL: the header wins."""
    await post(thread)
    stream = await open_stream(f"/api/threads/{thread.id}/events?after=0", user, headers={"Last-Event-ID": "2"})
    assert await stream.event() == {"type": "ready", "seq": 2, "_id": 2}


async def test_cursor_ahead_of_log_gets_reset_with_its_seq_as_id(thread, user, open_stream):
    """A cursor ahead of the log gets a `reset` snapshot whose seq is the record id, so a reconnect resumes after it."""
    await post(thread)
    stream = await open_stream(f"/api/threads/{thread.id}/events", user, headers={"Last-Event-ID": "999"})
    reset = await stream.event()
    assert reset["type"] == "reset" and reset["_id"] == reset["seq"] == 2
    assert [message["role"] for message in reset["messages"]] == ["user", "assistant"]


async def test_malformed_last_event_id_gets_error_then_reset(thread, user, open_stream):
    """A malformed cursor gets a bad_request error record, then a `reset`, as on the WebSocket."""
    stream = await open_stream(f"/api/threads/{thread.id}/events", user, headers={"Last-Event-ID": "-3"})
    error = await stream.event()
    assert error["type"] == "error" and error["code"] == "bad_request" and "_id" not in error
    assert (await stream.event())["type"] == "reset"


async def test_lost_live_events_are_repaired(thread, user, open_stream, worker, settings):
    """With a channel layer that loses every third event and the `end`, an SSE client still ends exact (I3)."""
    lossy = "tests.fakes.LossyRedisChannelLayer" if settings.REDIS_URL else "tests.fakes.LossyInMemoryChannelLayer"
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"], "BACKEND": lossy}}
    LossyLayerMixin.lost_seqs = []
    stream = await open_stream(f"/api/threads/{thread.id}/events", user)
    reply = await post(thread)
    events = await read_until_end(stream)
    assert LossyLayerMixin.lost_seqs, "the layer lost events"
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert reply_text(events, str(reply.id)) == (await Message.objects.aget(pk=reply.id)).content


async def test_quiet_stream_gets_keepalive_comments(thread, user, open_stream, monkeypatch):
    """With nothing to send, the stream carries a keep-alive comment every KEEPALIVE_SECONDS."""
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.2)
    stream = await open_stream(f"/api/threads/{thread.id}/events", user)
    assert (await stream.record())["event"] == "ready"
    assert await stream.record() == {"comment": "keep-alive"}
    assert await stream.record() == {"comment": "keep-alive"}


async def group_size(group: str) -> int:
    """Return how many of this process's channels are in `group`."""
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return len(layer.groups.get(group, {}))
    # The Redis pub/sub layer keeps a group's members in the process, under the group's Redis channel.
    return len(layer.groups.get(layer._get_group_channel_name(group), ()))


async def test_client_going_away_ends_the_response_and_leaves_the_group(thread, user, open_stream):
    """When the client goes, the response finishes at once and its subscription leaves the thread's group."""
    stream = await open_stream(f"/api/threads/{thread.id}/events", user)
    await stream.event()
    assert await group_size(thread_group_name(thread.id)) == 1
    await stream.close()  # waits for the application to return
    assert await group_size(thread_group_name(thread.id)) == 0


async def test_deleting_the_thread_ends_the_stream(thread, user, open_stream, settings):
    """A stream on a thread deleted while a reply was pending ends with a not_found error record."""
    settings.STREAM_REPAIR_SECONDS = 0.2
    await post(thread)  # queued, with no worker: the stream waits for a reply that never comes
    stream = await open_stream(f"/api/threads/{thread.id}/events", user)
    assert (await stream.event())["type"] == "message"
    await thread.adelete()
    events = [await stream.event() for _ in range(3)]
    assert [event["type"] for event in events] == ["start", "ready", "error"] and events[-1]["code"] == "not_found"
    assert await stream.read_all() == ""  # and nothing more: the body ended


def test_foreign_thread_answers_404_like_unknown(client, thread, make_user):
    """Another user's thread answers 404 exactly like an unknown one, before any streaming (I11)."""
    client.force_login(make_user("mallory"))
    foreign = client.get(f"/api/threads/{thread.id}/events")
    unknown = client.get("/api/threads/7b0c2c8e-0000-4000-8000-000000000000/events")
    assert foreign.status_code == unknown.status_code == 404 and foreign.json() == unknown.json()


def test_anonymous_is_401(client, thread):
    """A caller who is not signed in is refused with 401."""
    response = client.get(f"/api/threads/{thread.id}/events")
    assert response.status_code == 401 and response.json()["error"]["code"] == "forbidden"
