"""Revoking an API token ends what it opened: WebSockets close with 4401, event streams end."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from threads.models import ApiToken, Message
from threads.services import message_post
from threads.tokens.services import api_token_create, api_token_revoke

from .conftest import RECEIVE_TIMEOUT_S
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture
from .test_tokens import ws_close_code, ws_with_bearer

pytestmark = pytest.mark.django_db(transaction=True)

# Short enough for a test to wait on, long enough that a stream checks its token a few times at most.
SHORT_RECHECK_SECONDS = 0.5


async def make_token(user, name: str = "script") -> tuple[ApiToken, str]:
    return await database_sync_to_async(api_token_create)(user=user, name=name)


async def revoke(user, token: ApiToken) -> None:
    await database_sync_to_async(api_token_revoke)(user=user, token_id=token.id)


async def revoke_without_notice(token: ApiToken) -> None:
    """Revoke in the database only, as when the channel layer loses the revocation notice."""
    await ApiToken.objects.filter(pk=token.pk).aupdate(revoked_at=timezone.now())


@pytest.fixture
async def open_bearer_socket():
    """Open WebSockets with a bearer token, caught up; all are closed after the test."""
    communicators = []

    async def open_(thread, secret: str):
        communicator = ws_with_bearer(thread.id, secret)
        communicators.append(communicator)
        connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
        assert connected
        assert json.loads(await communicator.receive_from(timeout=RECEIVE_TIMEOUT_S))["type"] == "ready"
        return communicator

    yield open_
    for communicator in communicators:
        await communicator.disconnect(timeout=RECEIVE_TIMEOUT_S)


@pytest.fixture
async def open_bearer_stream():
    """Open HTTP streams with a bearer token; all are closed after the test, ended or not."""
    streams: list[HttpStream] = []

    async def open_(url: str, secret: str) -> HttpStream:
        stream = HttpStream(url, headers={"authorization": f"Bearer {secret}"})
        streams.append(stream)
        status, _ = await stream.start()
        assert status == 200
        return stream

    yield open_
    for stream in streams:
        await stream.close()


async def answers_ping(communicator) -> bool:
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    return json.loads(await communicator.receive_from(timeout=RECEIVE_TIMEOUT_S)) == {"type": "pong"}


async def test_revoking_closes_the_tokens_websocket_4401(thread, user, open_bearer_socket):
    """A WebSocket opened with a token is closed with 4401 when the token is revoked."""
    token, secret = await make_token(user)
    communicator = await open_bearer_socket(thread, secret)
    await revoke(user, token)
    assert await ws_close_code(communicator) == 4401


async def test_revoking_leaves_other_streams_of_the_person_open(thread, user, connect, open_bearer_socket):
    """Only the revoked token's sockets close: another token's and the browser session's stay open."""
    revoked, revoked_secret = await make_token(user, "revoked")
    _, kept_secret = await make_token(user, "kept")
    closing = await open_bearer_socket(thread, revoked_secret)
    other_token = await open_bearer_socket(thread, kept_secret)
    browser = await connect(thread.id, user)
    assert (await browser.receive())["type"] == "ready"
    await revoke(user, revoked)
    assert await ws_close_code(closing) == 4401
    assert await answers_ping(other_token) and await answers_ping(browser.communicator)


async def test_revoking_ends_the_tokens_event_stream(thread, user, open_bearer_stream):
    """An event stream opened with a token gets an `error` record (forbidden) and ends when the token is revoked."""
    token, secret = await make_token(user)
    stream = await open_bearer_stream(f"/api/threads/{thread.id}/events", secret)
    assert (await stream.event())["type"] == "ready"
    await revoke(user, token)
    assert (await stream.event())["code"] == "forbidden"
    assert await stream.read_all() == "" and stream.ended


async def test_revoking_ends_the_tokens_ai_sdk_stream(thread, user, open_bearer_stream):
    """A resumed AI SDK stream opened with a token ends with an error chunk and [DONE] when the token is revoked."""
    token, secret = await make_token(user)
    # No worker runs: the reply stays in progress, so the stream would go on waiting for it.
    await database_sync_to_async(message_post)(thread=thread, content="Hi", client_id=None)
    stream = await open_bearer_stream(f"/api/chat/{thread.id}/stream", secret)
    while '"type":"start"' not in stream.buffer:
        assert await stream.read_chunk()
    await revoke(user, token)
    body = await stream.read_all()
    assert '"errorText":"The API token was revoked."' in body and body.endswith("data: [DONE]\n\n")


async def test_lost_revocation_notice_is_caught_by_the_recheck(thread, user, open_bearer_socket, settings):
    """A revocation whose notice never arrives still closes the socket 4401, at the stream's next check of its token."""
    settings.STREAM_ACCESS_RECHECK_SECONDS = SHORT_RECHECK_SECONDS
    token, secret = await make_token(user)
    communicator = await open_bearer_socket(thread, secret)
    await revoke_without_notice(token)
    assert await ws_close_code(communicator) == 4401


async def test_lost_revocation_notice_is_caught_while_a_reply_streams(
    thread, user, open_bearer_socket, worker, settings
):
    """The re-check also runs while live events keep arriving: a long reply does not postpone the 4401."""
    settings.STREAM_ACCESS_RECHECK_SECONDS = SHORT_RECHECK_SECONDS
    settings.SCRIPTED_REPLY_TOKENS = 5000  # minutes of reply at the scripted pace: longer than any wait below
    token, secret = await make_token(user)
    communicator = await open_bearer_socket(thread, secret)
    await database_sync_to_async(message_post)(thread=thread, content="Talk for a long time", client_id=None)
    while json.loads(await communicator.receive_from(timeout=RECEIVE_TIMEOUT_S))["type"] != "delta":
        pass
    await revoke_without_notice(token)
    # Deltas keep coming meanwhile: the close must come within the deadline all the same.
    assert await asyncio.wait_for(ws_close_code(communicator), RECEIVE_TIMEOUT_S) == 4401


async def test_deactivated_users_token_stream_ends_at_the_recheck(thread, user, open_bearer_stream, settings):
    """Deactivating the person (no notice is sent for that) ends their token's event stream at its next check."""
    settings.STREAM_ACCESS_RECHECK_SECONDS = SHORT_RECHECK_SECONDS
    _, secret = await make_token(user)
    stream = await open_bearer_stream(f"/api/threads/{thread.id}/events", secret)
    assert (await stream.event())["type"] == "ready"
    user.is_active = False
    await user.asave(update_fields=["is_active"])
    assert (await stream.event())["code"] == "forbidden"


async def test_revoked_tokens_socket_cannot_send(thread, user, open_bearer_socket):
    """A send on a socket whose token was revoked (its notice lost) closes the socket 4401 and writes nothing."""
    token, secret = await make_token(user)
    communicator = await open_bearer_socket(thread, secret)
    await revoke_without_notice(token)
    await communicator.send_to(text_data=json.dumps({"type": "send", "content": "Hi"}))
    assert await ws_close_code(communicator) == 4401
    assert not await Message.objects.filter(thread=thread).aexists()
