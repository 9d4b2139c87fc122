"""Share links: made by the owner, opened by anyone signed in (signed out with CHAT_PUBLIC_LINKS), revoked, expired."""

import asyncio
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from streaming.hub import DUTY_GRID_SECONDS
from streaming.services.endings import generation_cancel
from threads.models import Message, ShareLink
from threads.services import message_post
from threads.sharing import hash_link_token, link_create

from .conftest import RECEIVE_TIMEOUT_S, ThreadSocket
from .test_sse import HttpStream, one_sync_thread  # noqa: F401 - one_sync_thread is an autouse fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(thread) -> Client:
    client = Client()
    client.force_login(thread.owner)
    return client


@pytest.fixture
def reader(make_user) -> Client:
    client = Client()
    client.force_login(make_user("lina"))
    return client


def make_link(owner_client: Client, thread, **body) -> dict:
    made = owner_client.post(f"/api/threads/{thread.id}/links", body, content_type="application/json")
    assert made.status_code == 201, made.content
    return made.json()


def test_a_link_is_shown_once_and_stored_hashed(owner_client, thread):
    """The token is in the answer that makes the link only: the list shows its prefix, the database its sha256."""
    made = make_link(owner_client, thread)
    assert made["url"].endswith(f"/s/{made['token']}") and made["token"].startswith(made["prefix"])
    stored = ShareLink.objects.get()
    assert stored.hashed_token == hash_link_token(made["token"]) and made["token"] not in stored.hashed_token
    listed = owner_client.get(f"/api/threads/{thread.id}/links").json()["links"]
    assert [link["id"] for link in listed] == [made["id"]] and made["token"] not in json.dumps(listed)


def test_a_signed_in_person_opens_a_link_and_reads_without_writing(owner_client, reader, thread):
    """Opening a link leads to the thread page, read only; the API serves the same person reads, refuses writes."""
    message_post(thread=thread, content="Shared question", client_id=None)
    made = make_link(owner_client, thread)
    opened = reader.get(f"/s/{made['token']}")
    assert opened.status_code == 302 and opened["Location"] == f"/threads/{thread.id}/"
    page = reader.get(opened["Location"])
    assert page.status_code == 200 and "Shared question" in page.content.decode()
    assert "data-read-only" in page.content.decode(), "a reader gets no composer"
    assert reader.get(f"/api/threads/{thread.id}").status_code == 200
    refused = reader.post(f"/api/threads/{thread.id}/messages", {"content": "Hi"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_a_revoked_link_opens_nothing_and_its_readers_lose_the_thread(owner_client, reader, thread):
    """Once revoked, the link answers 404, and whoever opened it before no longer reads the thread."""
    made = make_link(owner_client, thread)
    assert reader.get(f"/s/{made['token']}").status_code == 302
    assert owner_client.delete(f"/api/threads/{thread.id}/links/{made['id']}").status_code == 200
    assert reader.get(f"/s/{made['token']}").status_code == 404
    assert reader.get(f"/threads/{thread.id}/").status_code == 404
    assert reader.get(f"/api/threads/{thread.id}").status_code == 404


def test_an_expired_link_opens_nothing_and_its_readers_lose_the_thread(owner_client, reader, thread):
    """A link past its expiry answers 404, and whoever opened it before no longer reads the thread."""
    made = make_link(owner_client, thread, expires_in_seconds=3600)
    assert made["expires_at"] is not None
    assert reader.get(f"/s/{made['token']}").status_code == 302
    assert reader.get(f"/api/threads/{thread.id}").status_code == 200
    ShareLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reader.get(f"/s/{made['token']}").status_code == 404
    assert reader.get(f"/api/threads/{thread.id}").status_code == 404


@pytest.mark.parametrize("expires", [0, -5, "soon", 10**9, True])
def test_a_bad_expiry_is_refused(owner_client, thread, expires):
    """expires_in_seconds must be an integer from 1 second to a year: anything else is 400 and makes no link."""
    made = owner_client.post(
        f"/api/threads/{thread.id}/links", {"expires_in_seconds": expires}, content_type="application/json"
    )
    assert made.status_code == 400 and made.json()["error"]["code"] == "bad_request"
    assert not ShareLink.objects.exists()


def test_an_unknown_token_is_404(reader):
    assert reader.get("/s/chl_not-a-real-token").status_code == 404


def test_a_signed_out_visitor_is_sent_to_sign_in_while_public_links_are_off(owner_client, thread):
    """With CHAT_PUBLIC_LINKS off (the default), a signed-out visitor is asked to sign in and sees nothing."""
    made = make_link(owner_client, thread)
    visitor = Client()
    opened = visitor.get(f"/s/{made['token']}")
    assert opened.status_code == 302 and opened["Location"].startswith("/accounts/login/?next=")
    page = visitor.get(f"/threads/{thread.id}/")
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/?next=")


def test_a_signed_out_visitor_reads_through_a_link_when_public_links_are_on(owner_client, thread, settings):
    """With CHAT_PUBLIC_LINKS on, a signed-out visitor who opens a link reads the thread page."""
    settings.CHAT_PUBLIC_LINKS = True
    message_post(thread=thread, content="For everyone", client_id=None)
    made = make_link(owner_client, thread)
    visitor = Client()
    assert visitor.get(f"/s/{made['token']}").status_code == 302
    page = visitor.get(f"/threads/{thread.id}/")
    assert page.status_code == 200 and "For everyone" in page.content.decode()
    settings.CHAT_PUBLIC_LINKS = False  # turned off again: the same session is refused
    assert visitor.get(f"/threads/{thread.id}/").status_code == 404


def test_a_signed_out_visitor_pages_in_earlier_messages_through_a_link(owner_client, thread, settings):
    """The page's "Show earlier messages" works for a public link's reader as for anyone the page is for."""
    settings.CHAT_PUBLIC_LINKS = True
    first = message_post(thread=thread, content="The very first", client_id=None)
    generation_cancel(thread=thread)
    message_post(thread=thread, content="Later", client_id=None)
    made = make_link(owner_client, thread)
    visitor = Client()
    assert visitor.get(f"/s/{made['token']}").status_code == 302
    earlier = f"/threads/{thread.id}/earlier?before={first.reply.id}"
    answer = visitor.get(earlier, HTTP_ACCEPT="application/json")
    assert answer.status_code == 200, answer.content
    assert "The very first" in answer.json()["html"]
    assert Client().get(earlier).status_code == 401, "without a link: asked to sign in"


def visitor_cookie(token: str) -> str:
    visitor = Client()
    visitor.get(f"/s/{token}")
    cookie = visitor.cookies.get("sessionid")
    return f"sessionid={cookie.value}" if cookie else ""


async def socket_close_or_ready(thread_id, cookie: str) -> int | str:
    socket = ThreadSocket(thread_id, cookie or None)
    await socket.connect()
    output = await socket.communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
    try:
        if output["type"] == "websocket.close":
            return output["code"]
        return json.loads(output["text"])["type"]
    finally:
        await socket.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("public", [False, True])
async def test_a_signed_out_visitors_socket_needs_public_links(thread, settings, public):
    """A signed-out visitor's WebSocket through a link: 4401 while public links are off, the log when on."""
    settings.CHAT_PUBLIC_LINKS = public
    await database_sync_to_async(message_post)(thread=thread, content="Hello", client_id=None)
    _, token = await database_sync_to_async(link_create)(thread=thread, created_by=thread.owner)
    cookie = await database_sync_to_async(visitor_cookie)(token)
    answered = await socket_close_or_ready(thread.id, cookie)
    assert answered == ("message" if public else 4401)


@pytest.mark.django_db(transaction=True)
async def test_a_signed_out_visitor_cannot_write_through_a_link(thread, settings):
    """A public link's visitor reads live but every write frame is refused `forbidden`, and nothing is written."""
    settings.CHAT_PUBLIC_LINKS = True
    _, token = await database_sync_to_async(link_create)(thread=thread, created_by=thread.owner)
    socket = ThreadSocket(thread.id, await database_sync_to_async(visitor_cookie)(token))
    await socket.connect()
    try:
        await socket.receive_until(lambda frame: frame["type"] == "ready")
        await socket.send({"type": "send", "content": "Sneaky", "client_id": None})
        assert (await socket.receive_until(lambda frame: frame["type"] == "error"))["code"] == "forbidden"
        assert not await Message.objects.aexists()
    finally:
        await socket.disconnect()


def test_ids_past_any_row_are_refused_before_the_database(owner_client, thread):
    """A member or link id too big for a column is refused (400, 404), not passed on to fail in the database."""
    huge = "9" * 30
    revoked = owner_client.delete(f"/api/threads/{thread.id}/links/{huge}")
    assert revoked.status_code == 404 and revoked.json()["error"]["code"] == "not_found"
    changed = owner_client.patch(
        f"/api/threads/{thread.id}/members/{huge}", {"role": "viewer"}, content_type="application/json"
    )
    assert changed.status_code == 400 and changed.json()["error"]["code"] == "bad_request"


# A link's lifetime in the tests of its expiry: long enough to open a stream through it.
LINK_SECONDS = 2
# How soon after its expiry a link's streams must have ended.
CUT_OFF_WITHIN_S = 1.0


def open_link(client: Client, token: str) -> str:
    """Open a share link in `client`'s browser session; return the session's cookie."""
    assert client.get(f"/s/{token}").status_code == 302
    return f"sessionid={client.cookies['sessionid'].value}"


async def expiring_link_cookie(thread, reader: Client) -> tuple[ShareLink, str]:
    """Make a link of `thread` that expires LINK_SECONDS from now; return it and `reader`'s cookie, who opened it."""
    link, token = await database_sync_to_async(link_create)(
        thread=thread, created_by=thread.owner, expires_in_seconds=LINK_SECONDS
    )
    return link, await database_sync_to_async(open_link)(reader, token)


async def past_expiry(link: ShareLink) -> None:
    """Return once `link` has expired and the hub's timer (on a grid of DUTY_GRID_SECONDS) has had its turn."""
    # Nothing announces an expiry: the clock reaching it is the condition waited for.
    assert link.expires_at is not None
    await asyncio.sleep((link.expires_at - timezone.now()).total_seconds() + 2 * DUTY_GRID_SECONDS)


async def post(thread, content: str) -> None:
    await database_sync_to_async(message_post)(thread=thread, content=content, client_id=None, author=thread.owner)


async def message_or_close(socket: ThreadSocket) -> dict | int:
    """Return the socket's next `message` frame, or its close code if it closes first."""
    while True:
        output = await socket.communicator.receive_output(timeout=CUT_OFF_WITHIN_S)
        if output["type"] == "websocket.close":
            socket.closed = True
            return output["code"]
        if (frame := json.loads(output["text"]))["type"] == "message":
            return frame


async def message_or_error(stream: HttpStream) -> dict:
    """Return the event stream's next `message` or `error` frame."""
    while (frame := await stream.event())["type"] not in ("message", "error"):
        pass
    return frame


@pytest.mark.django_db(transaction=True)
async def test_an_expiring_links_socket_closes_4403_at_the_expiry(thread, reader):
    """A socket opened through a link closes 4403 once the link expires, before any message posted after it."""
    link, cookie = await expiring_link_cookie(thread, reader)
    holder = ThreadSocket(thread.id, cookie)
    await holder.connect()
    try:
        await holder.receive_until(lambda frame: frame["type"] == "ready")
        await past_expiry(link)
        await post(thread, "After the expiry")
        assert await message_or_close(holder) == 4403
    finally:
        await holder.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_expiring_links_event_stream_ends_forbidden_at_the_expiry(thread, reader):
    """An event stream opened through a link ends `forbidden` once the link expires, before any message after it."""
    link, cookie = await expiring_link_cookie(thread, reader)
    stream = HttpStream(f"/api/threads/{thread.id}/events", headers={"cookie": cookie})
    assert (await stream.start())[0] == 200
    try:
        assert (await stream.event())["type"] == "ready"
        await past_expiry(link)
        await post(thread, "After the expiry")
        ending = await asyncio.wait_for(message_or_error(stream), CUT_OFF_WITHIN_S)
        assert (ending["type"], ending.get("code")) == ("error", "forbidden"), ending
        assert await stream.read_all() == "" and stream.ended
    finally:
        await stream.close()
