"""Roles × surfaces × actions: what each endpoint answers the people a thread is shared with (I11).

The surfaces are tests/test_isolation.py's table (every page, API route, event stream, the
seed and AI SDK endpoints, the admin), plus the WebSocket's handshake and write frames.
Each endpoint does one action on the thread:

- read: a viewer, a participant and a share-link holder are served;
- write: a participant is served; a viewer and a link holder get 403 `forbidden`;
- manage: only the owner (tests/test_isolation.py): everyone here gets 403 `forbidden`;
- list: members see the thread in their lists, marked shared; a link holder does not;
- account (API tokens) and admin: another person's, answered as to anyone else.

A refusal writes nothing. Anonymous callers, strangers and the owner are test_isolation.py's.
"""

import json
from dataclasses import dataclass

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from streaming.services.endings import generation_cancel
from threads.models import Message
from threads.services import message_post, thread_create
from threads.sharing import link_create, member_add

from .conftest import RECEIVE_TIMEOUT_S
from .test_isolation import (
    ENDPOINTS,
    TITLE,
    Endpoint,
    World,
    answer,
    assert_refused_by_admin,
    cookie_socket,
    reply_awaiting_approval,
    request,
    state,
    world,  # noqa: F401 - a fixture
)

READ, WRITE, MANAGE, LIST, ACCOUNT, ADMIN = "read", "write", "manage", "list", "account", "admin"

# Every endpoint of the table and the action it does; an endpoint missing here fails test_every_endpoint_has_an_action.
ACTIONS = {
    "thread list page": LIST,
    "thread page": READ,
    "earlier messages": READ,
    "rename form": MANAGE,
    "archive form": MANAGE,
    "delete confirmation": MANAGE,
    "delete form": MANAGE,
    "start form": WRITE,
    "retry form": WRITE,
    "activity poll": LIST,
    "sidebar": LIST,
    "list threads": LIST,
    "thread snapshot": READ,
    "rename": MANAGE,
    "delete": MANAGE,
    "messages page": READ,
    "send": WRITE,
    "cancel": WRITE,
    "edit": WRITE,
    "approve": WRITE,
    "regenerate": WRITE,
    # Choosing the version shown changes what everyone on the thread sees: a write.
    "switch": WRITE,
    "event stream": READ,
    "seed send": WRITE,
    "seed stream": READ,
    "seed resume": READ,
    "AI SDK send": WRITE,
    "AI SDK resume": READ,
    "AI SDK stop": WRITE,
    "members": READ,
    "add member": MANAGE,
    "change role": MANAGE,
    "remove member": MANAGE,
    "share links": MANAGE,
    "make link": MANAGE,
    "revoke link": MANAGE,
    "tokens page": ACCOUNT,
    "revoke token": ACCOUNT,
    "admin: thread": ADMIN,
    "admin: message": ADMIN,
    "admin: timeline": ADMIN,
    "admin: chunks": ADMIN,
    "admin: generation": ADMIN,
}
ROLES = ["viewer", "participant", "link"]
ALLOWED = {"viewer": {READ}, "participant": {READ, WRITE}, "link": {READ}}
CASES = [(endpoint, role) for endpoint in ENDPOINTS for role in ROLES]


@dataclass
class Sharing:
    world: World
    link_token: str


@pytest.fixture
def sharing(world, make_user) -> Sharing:  # noqa: F811 - the fixture imported above
    """Alice's thread shared with Vera (viewer) and Pat (participant), and a link Lina opens."""
    for username, role in (("vera", "viewer"), ("pat", "participant")):
        member_add(thread=world.thread, username=make_user(username).username, role=role, added_by=world.owner)
    make_user("lina")
    _, token = link_create(thread=world.thread, created_by=world.owner)
    return Sharing(world, token)


def client_as(sharing: Sharing, role: str) -> Client:
    """Return a client signed in as the person in `role`; a link holder has opened the share link."""
    client = Client()
    client.force_login(
        get_user_model().objects.get(username={"viewer": "vera", "participant": "pat"}.get(role, "lina"))
    )
    if role == "link":
        assert client.get(f"/s/{sharing.link_token}").status_code == 302
    return client


def test_every_endpoint_has_an_action():
    """Every endpoint of the isolation table says which action it does, so the matrix covers it."""
    assert {endpoint.name for endpoint in ENDPOINTS} == set(ACTIONS)


@pytest.mark.parametrize("endpoint, role", CASES, ids=[f"{endpoint.name} as {role}" for endpoint, role in CASES])
def test_endpoint_answers_each_shared_role_as_it_should(sharing, endpoint: Endpoint, role):
    """Read for every shared role, write for participants, manage for nobody here; refusals write nothing."""
    world = sharing.world
    if endpoint.running:
        message_post(thread=world.thread, content="Still writing?", client_id=None)
    if endpoint.awaiting:
        reply_awaiting_approval(world.thread)
    client = client_as(sharing, role)
    action = ACTIONS[endpoint.name]
    before = state()
    response = request(client, endpoint, world.ids)
    if action == ADMIN:
        assert_refused_by_admin(response)
    elif action == ACCOUNT:
        assert state() == before
        if endpoint.listing:
            assert response.status_code == 200 and world.ids.thread not in response.content.decode()
        else:
            assert answer(response) == answer(request(client, endpoint, world.unknown))
    elif action == LIST:
        listed = world.ids.thread in response.content.decode() or TITLE in response.content.decode()
        assert response.status_code == 200 and listed == (role != "link")
    elif action in ALLOWED[role]:
        assert response.status_code == endpoint.success, response.content[:500]
    else:
        assert state() == before, "a refused request wrote nothing"
        assert response.status_code == 403, response.content[:500]
        if endpoint.guard == "api":
            assert response.json()["error"]["code"] == "forbidden"


def test_a_participants_send_carries_them_as_author(sharing):
    """A participant's message names them as its author, in the answer and in the thread's snapshot."""
    client = client_as(sharing, "participant")
    thread_id = sharing.world.ids.thread
    sent = client.post(f"/api/threads/{thread_id}/messages", {"content": "Pat here"}, content_type="application/json")
    assert sent.status_code == 202
    pat = Message.objects.get(pk=sent.json()["message"]["id"]).author
    assert sent.json()["message"]["author"] == {"id": pat.pk, "name": "pat"}
    snapshot = client.get(f"/api/threads/{thread_id}").json()
    authors = [message["author"] for message in snapshot["messages"] if message["role"] == "user"]
    assert authors == [{"id": sharing.world.owner.pk, "name": "alice"}, {"id": pat.pk, "name": "pat"}]


def test_a_participants_edit_and_regenerate_are_theirs(sharing, settings):
    """A participant's new version of a question names them as its author, and edits and regenerations count
    against their own send limit, not the owner's."""
    settings.CHAT_SENDS_PER_MINUTE = 2
    client = client_as(sharing, "participant")
    ids = sharing.world.ids
    edited = client.post(
        f"/api/threads/{ids.thread}/messages/{ids.message}/edit", {"content": "Pat's version"}, "application/json"
    )
    assert edited.status_code == 202
    assert edited.json()["message"]["author"]["name"] == "pat"
    assert Message.objects.get(pk=edited.json()["message"]["id"]).author.username == "pat"
    generation_cancel(thread=sharing.world.thread)
    regenerated = client.post(f"/api/threads/{ids.thread}/replies/{edited.json()['reply']['id']}/regenerate")
    assert regenerated.status_code == 202
    generation_cancel(thread=sharing.world.thread)
    limited = client.post(f"/api/threads/{ids.thread}/replies/{regenerated.json()['reply']['id']}/regenerate")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"


@pytest.mark.django_db(transaction=True)
async def test_a_participants_edit_frame_is_theirs(sharing):
    """An `edit` frame from a participant's socket writes a version authored by them."""
    communicator = await socket_for(sharing, "participant")
    try:
        await frame_of_type(communicator, "ready")
        edit = {"type": "edit", "message_id": sharing.world.ids.message, "content": "Pat, over the socket"}
        await communicator.send_to(text_data=json.dumps(edit))
        written = await frame_of_type(communicator, "message")
        assert written["message"]["content"] == "Pat, over the socket"
        assert written["message"]["author"]["name"] == "pat"
    finally:
        await communicator.disconnect(timeout=RECEIVE_TIMEOUT_S)


def test_a_participants_send_while_the_owners_reply_streams_is_busy(sharing):
    """One reply at a time per thread, whoever asked for it: a participant's send meanwhile gets 409 `busy`."""
    message_post(thread=sharing.world.thread, content="Owner asks", client_id=None)
    client = client_as(sharing, "participant")
    before = state()
    refused = client.post(
        f"/api/threads/{sharing.world.ids.thread}/messages", {"content": "Me too"}, content_type="application/json"
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "busy"
    assert state() == before


def test_a_participants_sends_count_against_their_own_limit(sharing, settings):
    """The send limit is the sender's: a participant past theirs is refused, the owner still sends."""
    settings.CHAT_SENDS_PER_MINUTE = 2  # the owner has sent one already (the fixture's question)
    client = client_as(sharing, "participant")
    url = f"/api/threads/{sharing.world.ids.thread}/messages"
    for content in ("One", "Two"):
        assert client.post(url, {"content": content}, content_type="application/json").status_code == 202
        generation_cancel(thread=sharing.world.thread)
    limited = client.post(url, {"content": "Three"}, content_type="application/json")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert message_post(thread=sharing.world.thread, content="Owner's turn", client_id=None).message.author_id


def test_a_member_leaves_and_then_is_a_stranger(sharing):
    """A member removes themselves (leaves): the thread then answers them as an unknown one."""
    client = client_as(sharing, "viewer")
    vera = client.get(f"/api/threads/{sharing.world.ids.thread}/members").json()["members"][1]["user"]
    assert vera["name"] == "vera"
    assert client.delete(f"/api/threads/{sharing.world.ids.thread}/members/{vera['id']}").status_code == 204
    assert client.get(f"/api/threads/{sharing.world.ids.thread}").status_code == 404


def test_shared_threads_are_listed_beside_ones_own_and_marked(sharing):
    """A member's thread list holds their own threads and those shared with them, each marked."""
    client = client_as(sharing, "viewer")
    own = thread_create(owner=get_user_model().objects.get(username="vera"), title="Vera's own")
    listed = {item["id"]: item["shared"] for item in client.get("/api/threads").json()["threads"]}
    assert listed == {str(own.id): False, sharing.world.ids.thread: True}
    page = client.get("/").content.decode()
    assert "Vera&#x27;s own" in page and TITLE in page and "Shared with you" in page


# --- WebSocket: the handshake, and write frames ------------------------------------------------------


async def socket_for(sharing: Sharing, role: str):
    client = await database_sync_to_async(client_as)(sharing, role)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = cookie_socket(sharing.world.ids.thread, cookie)
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert connected
    return communicator


async def frame_of_type(communicator, kind: str) -> dict:
    while True:
        frame = json.loads(await communicator.receive_from(timeout=RECEIVE_TIMEOUT_S))
        if frame["type"] == kind:
            return frame


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
async def test_websocket_serves_each_shared_role_and_takes_writes_from_participants(sharing, role):
    """Every shared role reads the log; a send is taken from a participant, refused `forbidden` for the others."""
    communicator = await socket_for(sharing, role)
    try:
        await frame_of_type(communicator, "ready")
        before = await Message.objects.acount()
        await communicator.send_to(text_data=json.dumps({"type": "send", "content": "From the socket"}))
        if WRITE in ALLOWED[role]:
            sent = await frame_of_type(communicator, "message")
            assert sent["message"]["author"]["name"] == "pat"
        else:
            refused = await frame_of_type(communicator, "error")
            assert refused["code"] == "forbidden"
            await communicator.send_to(text_data=json.dumps({"type": "cancel"}))
            assert (await frame_of_type(communicator, "error"))["code"] == "forbidden"
            assert await Message.objects.acount() == before
    finally:
        await communicator.disconnect(timeout=RECEIVE_TIMEOUT_S)
