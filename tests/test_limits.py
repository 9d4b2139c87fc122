"""Configurable limits, each refused with a clear error: token creation, open streams, page and body sizes, frames."""

import contextlib
import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from streaming.models import Chunk, Generation
from threads.models import ApiToken, Message
from threads.services import message_post, thread_create
from threads.tokens.services import api_token_create

from .live_server import WebProcess, live_environment, procfile_web
from .protocol_check import parse_frame
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture
from .test_tokens import ws_with_bearer

RECEIVE_TIMEOUT_S = 10


def counts() -> tuple[int, int, int]:
    return Message.objects.count(), Chunk.objects.count(), Generation.objects.count()


# --- API tokens per hour ---------------------------------------------------------


@pytest.fixture
def two_tokens_an_hour(settings):
    settings.API_TOKENS_PER_HOUR = 2


def test_token_past_the_hourly_limit_is_429(client, user, two_tokens_an_hour):
    """The third token within an hour is refused: 429 with Retry-After, the reason on the form, nothing made."""
    client.force_login(user)
    for name in ("one", "two"):
        assert client.post("/account/tokens/", {"name": name}).status_code == 200
    refused = client.post("/account/tokens/", {"name": "three"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "At most 2 API tokens an hour" in refused.content.decode()
    assert refused.context["secret"] is None
    assert ApiToken.objects.filter(user=user).count() == 2


def test_token_limit_is_per_person(client, user, make_user, two_tokens_an_hour):
    """One person at the token limit does not limit another."""
    for name in ("one", "two"):
        api_token_create(user=user, name=name)
    client.force_login(make_user("bob"))
    assert client.post("/account/tokens/", {"name": "bob's"}).status_code == 200


def test_operator_command_is_not_limited(user, two_tokens_an_hour, capsys):
    """`manage.py apitoken create` provisions past the limit: the limit is for self-service."""
    for _ in range(3):
        call_command("apitoken", "create", "--user", user.username)
    assert ApiToken.objects.filter(user=user).count() == 3


# --- Open streams per person ------------------------------------------------------

# Consumers and streams reach the database from other threads: these tests commit for real.
transactional = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_streams(settings):
    settings.CHAT_MAX_STREAMS_PER_USER = 2


async def bearer(user) -> str:
    return (await database_sync_to_async(api_token_create)(user=user, name="tests"))[1]


@pytest.fixture
async def open_event_stream(session_cookie):
    """Open event streams as a user; all are closed after the test."""
    streams: list[HttpStream] = []

    async def open_(url: str, user) -> tuple[HttpStream, int, dict]:
        stream = HttpStream(url, headers={"cookie": await database_sync_to_async(session_cookie)(user)})
        streams.append(stream)
        status, headers = await stream.start()
        return stream, status, headers

    yield open_
    for stream in streams:
        await stream.close()


@transactional
async def test_websocket_past_the_stream_limit_is_closed_4429(thread, user, connect, two_streams):
    """A WebSocket beyond CHAT_MAX_STREAMS_PER_USER is closed with 4429; closing one lets the next one in."""
    first = await connect(thread.id, user)
    await connect(thread.id, user)
    refused = await connect(thread.id, user)
    assert await refused.close_code() == 4429
    await first.disconnect()
    again = await connect(thread.id, user)
    assert (await again.receive())["type"] == "ready"


@transactional
async def test_event_stream_past_the_stream_limit_is_429(thread, user, connect, open_event_stream, two_streams):
    """WebSockets and event streams count together; one beyond the limit is 429 rate_limited with Retry-After."""
    await connect(thread.id, user)
    stream, status, _ = await open_event_stream(f"/api/threads/{thread.id}/events", user)
    assert status == 200
    refused, status, headers = await open_event_stream(f"/api/threads/{thread.id}/events", user)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(await refused.read_all())["error"]["code"] == "rate_limited"
    await stream.close()
    _, status, _ = await open_event_stream(f"/api/threads/{thread.id}/events", user)
    assert status == 200, "a closed stream gives its slot back"


@transactional
async def test_stream_limit_is_per_person(thread, user, make_user, connect, two_streams):
    """One person at the stream limit does not limit another."""
    await connect(thread.id, user)
    await connect(thread.id, user)
    bob = await database_sync_to_async(make_user)("bob")
    bobs = await database_sync_to_async(thread_create)(owner=bob)
    socket = await connect(bobs.id, bob)
    assert (await socket.receive())["type"] == "ready"


@transactional
async def test_aisdk_send_at_the_stream_limit_writes_nothing(thread, user, connect, two_streams):
    """An AI SDK send whose answer would be a stream past the limit is refused before anything is written."""
    await connect(thread.id, user)
    await connect(thread.id, user)
    before = await database_sync_to_async(counts)()
    body = {"id": str(thread.id), "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}]}
    headers = {"authorization": f"Bearer {await bearer(user)}", "content-type": "application/json"}
    stream = HttpStream("/api/chat", method="POST", headers=headers, body=json.dumps(body).encode())
    status, _ = await stream.start()
    assert status == 429 and json.loads(await stream.read_all())["error"]["code"] == "rate_limited"
    assert await database_sync_to_async(counts)() == before


# --- Sends: the rate limit on the surfaces the other tests leave out --------------


@transactional
async def test_bearer_websocket_send_is_rate_limited(thread, user, settings):
    """A send over a bearer-token WebSocket past CHAT_SENDS_PER_MINUTE gets a rate_limited frame and writes nothing."""
    settings.CHAT_SENDS_PER_MINUTE = 1
    other = await database_sync_to_async(thread_create)(owner=user)
    await database_sync_to_async(message_post)(thread=other, content="first", client_id=None)
    communicator = ws_with_bearer(thread.id, await bearer(user))
    await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert json.loads(await communicator.receive_from(RECEIVE_TIMEOUT_S))["type"] == "ready"
    before = await database_sync_to_async(counts)()
    await communicator.send_to(text_data=json.dumps({"type": "send", "content": "second"}))
    frame = json.loads(await communicator.receive_from(RECEIVE_TIMEOUT_S))
    assert frame["type"] == "error" and frame["code"] == "rate_limited"
    assert await database_sync_to_async(counts)() == before
    await communicator.disconnect()


def test_seed_api_send_is_rate_limited(client, user, settings):
    """A seed API send past the limit is 429 rate_limited with Retry-After and writes nothing."""
    settings.CHAT_SENDS_PER_MINUTE = 1
    message_post(thread=thread_create(owner=user), content="first", client_id=None)
    client.force_login(user)
    before = counts()
    body = {"id": str(uuid.uuid4()), "message": {"role": "user", "content": "second"}}
    response = client.post("/api/chat", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert counts() == before


# --- Page and body sizes ---------------------------------------------------------


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", ["/api/threads", "/api/threads/{thread}/messages"])
def test_page_size_is_bounded_by_the_setting(signed_in, thread, settings, path):
    """A `limit` over API_MAX_PAGE_SIZE is a bad_request that names the bound; the bound itself is served."""
    settings.API_MAX_PAGE_SIZE = 3
    url = path.format(thread=thread.id)
    refused = signed_in.get(url, {"limit": 4})
    assert refused.status_code == 400
    assert refused.json()["error"] == {"code": "bad_request", "detail": "limit must be an integer from 1 to 3."}
    assert signed_in.get(url, {"limit": 3}).status_code == 200


def test_default_page_size_stays_within_the_bound(signed_in, user, settings):
    """With no `limit`, a page holds at most API_MAX_PAGE_SIZE threads even when the default is larger."""
    settings.API_MAX_PAGE_SIZE = 2
    for _ in range(3):
        thread_create(owner=user)
    body = signed_in.get("/api/threads").json()
    assert len(body["threads"]) == 2 and body["next"]


@pytest.mark.parametrize("before", ["9" * 5000, str(2**63), "-1", "1.5"])
def test_absurd_cursor_is_a_bad_request(signed_in, thread, before):
    """A `before` no database integer can hold is a bad_request, not a server error."""
    response = signed_in.get(f"/api/threads/{thread.id}/messages", {"before": before})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_body_over_the_upload_limit_is_413(signed_in, thread, settings):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413 too_long in the API's shape, and writes nothing."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"content": "x" * 2000})
    response = signed_in.post(f"/api/threads/{thread.id}/messages", data=body, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_long"
    assert counts() == (0, 0, 0)


# --- Frame size, through the Procfile's daphne -----------------------------------

FRAME_LIMIT_BYTES = 262144  # the Procfile's --websocket-max-frame-size and --websocket-max-message-size


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[tuple[WebProcess, str, str]]:
    directory = tmp_path_factory.mktemp("limits")
    with procfile_web(directory, live_environment(directory)) as server:
        token, thread_id = server.shell(
            "from django.contrib.auth.models import User\n"
            "from threads.services import thread_create\n"
            "from threads.tokens.services import api_token_create\n"
            "alice = User.objects.create_user('alice')\n"
            "print(api_token_create(user=alice, name='tests')[1], thread_create(owner=alice).id)\n"
        ).split()
        yield server, token, thread_id


@contextlib.contextmanager
def open_socket(web: tuple[WebProcess, str, str]) -> Iterator[ClientConnection]:
    server, token, thread_id = web
    url = server.url.replace("http", "ws") + f"/ws/threads/{thread_id}/"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as socket:
        assert parse_frame(socket.recv(RECEIVE_TIMEOUT_S))["type"] == "ready"
        yield socket


def ping(socket: ClientConnection) -> dict:
    socket.send(json.dumps({"type": "ping"}))
    return parse_frame(socket.recv(RECEIVE_TIMEOUT_S))


def test_oversized_frame_is_refused_and_others_are_served(web):
    """A frame over the Procfile's 256 KiB drops its connection at once; other sockets, and new ones, carry on."""
    with open_socket(web) as bystander, open_socket(web) as sender:
        sender.send(json.dumps({"type": "send", "content": "x" * FRAME_LIMIT_BYTES}))
        # autobahn fails the connection as soon as it reads the frame's length: no close frame (1006 here).
        with pytest.raises(ConnectionClosedError) as closed:
            sender.recv(RECEIVE_TIMEOUT_S)
        assert closed.value.rcvd is None
        assert ping(bystander) == {"type": "pong"}
        with open_socket(web) as again:
            assert ping(again) == {"type": "pong"}
    server, token, thread_id = web
    request = urllib.request.Request(
        f"{server.url}/api/threads/{thread_id}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=RECEIVE_TIMEOUT_S) as response:
        assert json.loads(response.read())["messages"] == [], "the refused frame wrote nothing"
