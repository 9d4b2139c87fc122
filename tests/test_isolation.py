"""Isolation (I11) on every surface, as a table: what each endpoint answers anonymous, another user and the owner.

(The roles a thread is shared with, viewer, participant and share-link holder, are tests/test_sharing_matrix.py,
over this same table.)

- anonymous: the API's 401 JSON, the sign-in redirect, the admin's sign-in redirect, or close 4401;
- another user: exactly the answer an unknown id gets (status, body, redirect), and nothing written;
- the owner: success. The admin is staff only: there the owner is refused like anyone, and staff succeed.

The seed API and the AI SDK's POST /api/chat start a thread on an unknown id; a foreign id,
which cannot be taken, answers `not_found` instead, and writes nothing either.
"""

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.test import Client

from chatsite.asgi import application
from streaming.models import Chunk, Generation
from streaming.services.endings import generation_cancel
from streaming.services.log import chunks_record, seq_allocate
from threads.models import ApiToken, Membership, Message, ShareLink, Thread
from threads.services import message_post, thread_create
from threads.sharing import link_create, member_add
from threads.tokens.services import api_token_create

from .conftest import RECEIVE_TIMEOUT_S
from .protocol_check import ProtocolCommunicator

TITLE = "Alice private plans"
TOKEN_NAME = "alice-laptop"


@dataclass(frozen=True)
class Ids:
    """What an endpoint's URL and body name: the owner's real objects, or ids that exist nowhere."""

    thread: str
    reply: str
    token: int
    generation: str
    message: str
    member: str
    link: str


@dataclass
class World:
    owner: object
    other: object
    staff: object
    thread: Thread
    ids: Ids
    unknown: Ids


@pytest.fixture
def world(make_user) -> World:
    """Alice's thread with a question and a stopped reply, her API token, a member and a share link; Mallory; staff."""
    owner, other = make_user("alice"), make_user("mallory")
    staff = make_user("root", is_staff=True, is_superuser=True)
    make_user("carol")  # whom the "add member" requests name
    thread = thread_create(owner=owner, title=TITLE)
    posted = message_post(thread=thread, content="What are my plans?", client_id=None)
    generation_cancel(thread=thread)
    token, _ = api_token_create(user=owner, name=TOKEN_NAME)
    member = member_add(thread=thread, username=make_user("bob").username, role="viewer", added_by=owner)
    link, _ = link_create(thread=thread, created_by=owner)
    ids = Ids(
        str(thread.id),
        str(posted.reply.id),
        token.id,
        str(posted.reply.generation.id),
        str(posted.message.id),
        str(member.user_id),
        str(link.pk),
    )
    unknown = Ids(
        str(uuid.uuid4()), str(uuid.uuid4()), 10**9, str(uuid.uuid4()), str(uuid.uuid4()), str(10**9), str(10**9)
    )
    return World(owner, other, staff, thread, ids, unknown)


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: Callable[[Ids], str]
    # Who may not in: "api" (401 JSON), "page" (sign-in redirect) or "admin" (the admin's sign-in).
    guard: str
    success: int
    body: Callable[[Ids], dict] | None = None
    form: dict | None = None
    # A list: another user gets it too, without the owner's items, instead of an unknown id's answer.
    listing: bool = False
    # Needs a reply being written (cancel, stop, resume).
    running: bool = False
    # Needs a reply waiting for the approval of its tool call `call_1_1`.
    awaiting: bool = False
    # Starts a thread on an unknown id: another user's answer is `not_found`.
    creates: bool = False


def seed_body(ids: Ids) -> dict:
    return {"id": ids.thread, "message": {"role": "user", "content": "Hello"}}


def aisdk_body(ids: Ids) -> dict:
    return {"id": ids.thread, "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello"}]}]}


ENDPOINTS = [
    Endpoint("thread list page", "GET", lambda ids: "/", "page", 200, listing=True),
    Endpoint("thread page", "GET", lambda ids: f"/threads/{ids.thread}/", "page", 200),
    Endpoint("earlier messages", "GET", lambda ids: f"/threads/{ids.thread}/earlier?before={ids.reply}", "api", 200),
    Endpoint(
        "rename form", "POST", lambda ids: f"/threads/{ids.thread}/title", "page", 302, form={"title": "Mine now"}
    ),
    Endpoint("archive form", "POST", lambda ids: f"/threads/{ids.thread}/archive", "page", 302, form={}),
    Endpoint("delete confirmation", "GET", lambda ids: f"/threads/{ids.thread}/delete", "page", 200),
    Endpoint("delete form", "POST", lambda ids: f"/threads/{ids.thread}/delete", "page", 302, form={}),
    Endpoint(
        "start form",
        "POST",
        lambda ids: f"/threads/{ids.thread}/start",
        "page",
        302,
        form={"content": "Hi"},
        creates=True,
    ),
    Endpoint("retry form", "POST", lambda ids: f"/threads/{ids.thread}/replies/{ids.reply}/retry", "page", 302),
    Endpoint("activity poll", "GET", lambda ids: "/threads/activity", "api", 200, listing=True),
    Endpoint("sidebar", "GET", lambda ids: "/threads/sidebar", "api", 200, listing=True),
    Endpoint("list threads", "GET", lambda ids: "/api/threads", "api", 200, listing=True),
    Endpoint("thread snapshot", "GET", lambda ids: f"/api/threads/{ids.thread}", "api", 200),
    Endpoint(
        "rename", "PATCH", lambda ids: f"/api/threads/{ids.thread}", "api", 200, body=lambda ids: {"title": "Mine"}
    ),
    Endpoint("delete", "DELETE", lambda ids: f"/api/threads/{ids.thread}", "api", 204),
    Endpoint("messages page", "GET", lambda ids: f"/api/threads/{ids.thread}/messages?limit=1", "api", 200),
    Endpoint(
        "send",
        "POST",
        lambda ids: f"/api/threads/{ids.thread}/messages",
        "api",
        202,
        body=lambda ids: {"content": "Hi"},
    ),
    Endpoint("cancel", "POST", lambda ids: f"/api/threads/{ids.thread}/cancel", "api", 202, running=True),
    Endpoint(
        "edit",
        "POST",
        lambda ids: f"/api/threads/{ids.thread}/messages/{ids.message}/edit",
        "api",
        202,
        body=lambda ids: {"content": "What are my plans now?"},
    ),
    Endpoint("regenerate", "POST", lambda ids: f"/api/threads/{ids.thread}/replies/{ids.reply}/regenerate", "api", 202),
    # The version shown already: the owner is answered, and nothing changes.
    Endpoint("switch", "POST", lambda ids: f"/api/threads/{ids.thread}/messages/{ids.message}/switch", "api", 200),
    Endpoint(
        "approve",
        "POST",
        lambda ids: f"/api/threads/{ids.thread}/approvals",
        "api",
        202,
        body=lambda ids: {"tool_call_id": "call_1_1", "approved": True},
        awaiting=True,
    ),
    Endpoint("event stream", "GET", lambda ids: f"/api/threads/{ids.thread}/events", "api", 200),
    Endpoint("seed send", "POST", lambda ids: "/api/chat", "api", 200, body=seed_body, creates=True),
    Endpoint("seed stream", "GET", lambda ids: f"/api/chat/stream?id={ids.thread}", "api", 200),
    # The owner reaches the stream, which has ended (its reply was stopped): 410, where others get 404.
    Endpoint("seed resume", "GET", lambda ids: f"/api/chat/resume/{ids.reply}", "api", 410),
    Endpoint("AI SDK send", "POST", lambda ids: "/api/chat", "api", 200, body=aisdk_body, creates=True),
    Endpoint("AI SDK resume", "GET", lambda ids: f"/api/chat/{ids.thread}/stream", "api", 200, running=True),
    Endpoint("AI SDK stop", "POST", lambda ids: f"/api/chat/{ids.thread}/stop", "api", 202, running=True),
    Endpoint("members", "GET", lambda ids: f"/api/threads/{ids.thread}/members", "api", 200),
    Endpoint(
        "add member",
        "POST",
        lambda ids: f"/api/threads/{ids.thread}/members",
        "api",
        201,
        body=lambda ids: {"username": "carol", "role": "viewer"},
    ),
    Endpoint(
        "change role",
        "PATCH",
        lambda ids: f"/api/threads/{ids.thread}/members/{ids.member}",
        "api",
        200,
        body=lambda ids: {"role": "participant"},
    ),
    Endpoint("remove member", "DELETE", lambda ids: f"/api/threads/{ids.thread}/members/{ids.member}", "api", 204),
    Endpoint("share links", "GET", lambda ids: f"/api/threads/{ids.thread}/links", "api", 200),
    Endpoint("make link", "POST", lambda ids: f"/api/threads/{ids.thread}/links", "api", 201, body=lambda ids: {}),
    Endpoint("revoke link", "DELETE", lambda ids: f"/api/threads/{ids.thread}/links/{ids.link}", "api", 200),
    Endpoint("tokens page", "GET", lambda ids: "/account/tokens/", "page", 200, listing=True),
    Endpoint("revoke token", "POST", lambda ids: f"/account/tokens/{ids.token}/revoke", "page", 302),
    Endpoint("admin: thread", "GET", lambda ids: f"/admin/threads/thread/{ids.thread}/change/", "admin", 200),
    Endpoint("admin: message", "GET", lambda ids: f"/admin/threads/message/{ids.reply}/change/", "admin", 200),
    Endpoint("admin: timeline", "GET", lambda ids: f"/admin/threads/message/{ids.reply}/timeline/", "admin", 200),
    Endpoint(
        "admin: chunks", "GET", lambda ids: f"/admin/streaming/chunk/?thread__id__exact={ids.thread}", "admin", 200
    ),
    Endpoint(
        "admin: generation", "GET", lambda ids: f"/admin/streaming/generation/{ids.generation}/change/", "admin", 200
    ),
]
HTTP_ROLES = ["anonymous", "other", "owner"]
CASES = [(endpoint, role) for endpoint in ENDPOINTS for role in HTTP_ROLES] + [
    (endpoint, "staff") for endpoint in ENDPOINTS if endpoint.guard == "admin"
]


def state() -> tuple:
    """Everything a request could change that isolation protects."""
    return (
        list(Thread.objects.order_by("id").values_list("id", "title", "last_seq", "archived_at")),
        list(Message.objects.order_by("id").values_list("id", "status", "content", "on_path")),
        list(Generation.objects.order_by("id").values_list("id", "status", "cancel_requested")),
        list(ApiToken.objects.order_by("id").values_list("id", "revoked_at")),
        list(Membership.objects.order_by("id").values_list("id", "user_id", "role")),
        list(ShareLink.objects.order_by("id").values_list("id", "revoked_at")),
    )


def request(client: Client, endpoint: Endpoint, ids: Ids):
    path = endpoint.path(ids)
    if endpoint.form is not None:
        return client.post(path, endpoint.form)
    body = json.dumps(endpoint.body(ids)) if endpoint.body else ""
    return client.generic(endpoint.method, path, body, content_type="application/json")


def answer(response) -> tuple:
    """Return what a client can tell from a response: status, redirect and body.

    Left out: CSRF tokens, masked anew on every page by design, and the `next` of a sign-in
    redirect, which only echoes the URL the caller asked for.
    """
    content = b"" if response.streaming else re.sub(rb'value="[A-Za-z0-9]{64}"', b"", response.content)
    return response.status_code, response.get("Location", "").partition("?next=")[0], content


@pytest.mark.parametrize("endpoint, role", CASES, ids=[f"{endpoint.name} as {role}" for endpoint, role in CASES])
def test_endpoint_answers_each_role_as_it_should(world, endpoint, role):
    """The endpoint refuses anonymous callers, answers another user as an unknown id, and serves its owner."""
    if endpoint.running:
        message_post(thread=world.thread, content="Still writing?", client_id=None)
    if endpoint.awaiting:
        reply_awaiting_approval(world.thread)
    client = Client()
    if role != "anonymous":
        client.force_login({"other": world.other, "owner": world.owner, "staff": world.staff}[role])
    before = state()
    response = request(client, endpoint, world.ids)
    if role == "anonymous":
        assert_refused_anonymous(response, endpoint)
    elif role == "other":
        assert state() == before, "another user changed nothing"
        if endpoint.listing:
            assert response.status_code == 200 and not lists_the_owners(response, world)
        elif endpoint.creates:
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        else:
            assert answer(response) == answer(request(client, endpoint, world.unknown))
            assert state() == before, "nor did an unknown id"
    elif endpoint.guard == "admin" and role == "owner":
        assert_refused_by_admin(response)
    else:
        assert response.status_code == endpoint.success, response.content[:500]
        if endpoint.listing:
            assert lists_the_owners(response, world)


def reply_awaiting_approval(thread: Thread) -> None:
    """Post a message whose reply called a tool that waits for approval, as a worker would have logged it."""
    reply = message_post(thread=thread, content="Run it?", client_id=None).reply
    call = {"type": "tool_call", "id": "call_1_1", "name": "counter", "input": {}, "state": "called"}
    approval = {"type": "approval", "tool_call_id": "call_1_1", "state": "requested", "retry": False}
    with transaction.atomic():
        seq = seq_allocate(thread_id=thread.id, count=2)
        chunks = [
            Chunk(
                thread=thread, seq=seq + index, message=reply, kind=Chunk.Kind.PART_START, part_index=index, text=text
            )
            for index, text in enumerate([json.dumps(call), json.dumps(approval)])
        ]
        chunks_record(thread_id=thread.id, chunks=chunks, messages=[reply])
        Generation.objects.filter(message=reply).update(status=Generation.Status.AWAITING_APPROVAL)


def lists_the_owners(response, world: World) -> bool:
    """Return whether a list shows the owner's thread (its id or title) or token."""
    return any(marker in response.content.decode() for marker in (world.ids.thread, TITLE, TOKEN_NAME))


def assert_refused_anonymous(response, endpoint: Endpoint) -> None:
    if endpoint.guard == "api":
        assert response.status_code == 401 and response.json()["error"]["code"] == "forbidden"
    elif endpoint.guard == "page":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    else:
        assert_refused_by_admin(response)


def assert_refused_by_admin(response) -> None:
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=")


# --- WebSocket: the session cookie (browsers, with an allowed Origin) and bearer tokens --------------


async def close_code_or_served(communicator: ProtocolCommunicator) -> int | str:
    """Return the close code the server answers the handshake with, or "served" when it sends the log."""
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert connected
    output = await communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
    await communicator.disconnect(timeout=RECEIVE_TIMEOUT_S)
    if output["type"] == "websocket.close":
        return output["code"]
    assert json.loads(output["text"])["seq"] == 1
    return "served"


def cookie_socket(thread_id: str, cookie: str | None) -> ProtocolCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")] + (
        [(b"cookie", cookie.encode())] if cookie else []
    )
    return ProtocolCommunicator(application, f"/ws/threads/{thread_id}/", headers=headers)


def bearer_socket(thread_id: str, secret: str) -> ProtocolCommunicator:
    return ProtocolCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {secret}".encode())]
    )


WS_ROLES = ["anonymous", "other", "owner"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", WS_ROLES)
async def test_websocket_with_session_answers_each_role_as_it_should(world, session_cookie, role):
    """A cookie handshake: anonymous 4401, another user as an unknown thread (4404), the owner gets the log."""
    user = {"anonymous": None, "other": world.other, "owner": world.owner}[role]
    cookie = await database_sync_to_async(session_cookie)(user) if user else None
    answered = await close_code_or_served(cookie_socket(world.ids.thread, cookie))
    if role == "other":
        assert answered == await close_code_or_served(cookie_socket(world.unknown.thread, cookie)) == 4404
    else:
        assert answered == {"anonymous": 4401, "owner": "served"}[role]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", WS_ROLES)
async def test_websocket_with_bearer_answers_each_role_as_it_should(world, role):
    """A bearer handshake: an unknown token 4401, another user's as an unknown thread (4404), the owner's the log."""
    user = {"other": world.other, "owner": world.owner}.get(role)
    secret = (await database_sync_to_async(api_token_create)(user=user, name="ws"))[1] if user else "chs_unknown"
    answered = await close_code_or_served(bearer_socket(world.ids.thread, secret))
    if role == "other":
        assert answered == await close_code_or_served(bearer_socket(world.unknown.thread, secret)) == 4404
    else:
        assert answered == {"anonymous": 4401, "owner": "served"}[role]


@pytest.mark.django_db(transaction=True)
async def test_websocket_with_session_from_a_foreign_origin_is_refused(world, session_cookie):
    """The owner's own cookie from a foreign Origin is refused at the handshake (cross-site WebSocket hijacking)."""
    cookie = await database_sync_to_async(session_cookie)(world.owner)
    communicator = ProtocolCommunicator(
        application,
        f"/ws/threads/{world.ids.thread}/",
        headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert not connected


def test_table_covers_every_route():
    """Every route of the app that takes a thread, message or token id is in the table above."""
    from threads import api_urls, urls

    covered = {endpoint.path(Ids("T", "M", 1, "G", "M", "U", "L")).partition("?")[0] for endpoint in ENDPOINTS}
    # A share link's page is named by its token, which opens it to whoever holds it: tests/test_share_links.py.
    covered.add("/s/<str:token>")
    for pattern in urls.urlpatterns + api_urls.urlpatterns:
        route = str(pattern.pattern)
        if "<" in route:
            example = "/" + route.replace("<str:thread_id>", "T").replace("<str:chat_id>", "T")
            example = example.replace("<str:message_id>", "M").replace("<str:stream_id>", "M")
            example = example.replace("<int:token_id>", "1")
            example = example.replace("<str:user_id>", "U").replace("<str:link_id>", "L")
            assert example in covered, f"{route} is not in the isolation table"
