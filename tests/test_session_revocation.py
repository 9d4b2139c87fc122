"""A signed-out or deactivated person loses every stream they opened with a session, at once."""

import json
import time
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.test import Client
from websockets.exceptions import ConnectionClosed

from threads import sessions
from threads.models import ApiToken, Message
from threads.sessions import person_group_name, session_signs_in
from threads.tokens.selectors import token_group_name

from .live_server import PASSWORD, chat_server  # noqa: F401 - chat_server is a fixture
from .outsider import EventStream, Visitor, frames_until

# The notice travels through the channel layer: far less than the 30 s recheck, which must not be what ends them.
ENDED_WITHIN_S = 5


def close_code(socket) -> int:
    """Read the socket until it closes; return its close code."""
    deadline = time.monotonic() + ENDED_WITHIN_S
    try:
        while time.monotonic() < deadline:
            socket.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code
    raise AssertionError(f"still open after {ENDED_WITHIN_S} s")


def signed_in_with_thread(server, username: str) -> tuple[Visitor, str]:
    visitor = Visitor(server.url)
    assert visitor.sign_in(username, PASSWORD).status == 302
    created = visitor.request("POST", "/api/threads", body={"title": "live"})
    assert created.status == 201
    return visitor, created.json()["id"]


def test_sign_out_ends_that_sessions_streams_only(chat_server):  # noqa: F811
    """Signing out closes the session's WebSocket (4401) and ends its event stream; another session goes on."""
    chat_server.create_users("leaver")
    visitor, thread_id = signed_in_with_thread(chat_server, "leaver")
    other_device = Visitor(chat_server.url)
    assert other_device.sign_in("leaver", PASSWORD).status == 302
    with visitor.websocket(thread_id) as socket, other_device.websocket(thread_id) as kept:
        frames_until(socket, "ready")
        frames_until(kept, "ready")
        stream = EventStream(visitor, f"/api/threads/{thread_id}/events")
        assert stream.records_until("ready")
        signed_out_and_ended(visitor, socket, stream)
        kept.send(json.dumps({"type": "ping"}))
        assert frames_until(kept, "pong")


def signed_out_and_ended(visitor: Visitor, socket, stream: EventStream) -> None:
    started = time.monotonic()
    assert visitor.sign_out().status == 302
    assert close_code(socket) == 4401
    error = stream.records_until("error")[-1]
    assert json.loads(error["data"])["code"] == "forbidden"
    assert stream.record() is None  # and the stream ends
    assert time.monotonic() - started < ENDED_WITHIN_S


def person_and_operator(server, person: str, operator: str) -> tuple[Visitor, str, Visitor, str]:
    """Sign in `person`, with a thread, and `operator` as staff; return both visitors, the thread, the person's id."""
    server.create_users(person, operator)
    people = "from django.contrib.auth.models import User"
    server.shell(f"{people}; User.objects.filter(username={operator!r}).update(is_staff=True, is_superuser=True)")
    visitor, thread_id = signed_in_with_thread(server, person)
    staff = Visitor(server.url)
    assert staff.sign_in(operator, PASSWORD).status == 302
    person_id = server.shell(f"{people}; print(User.objects.get(username={person!r}).pk)")
    return visitor, thread_id, staff, person_id


def test_deactivation_in_the_admin_ends_every_stream(chat_server):  # noqa: F811
    """Deactivating a person from the admin ends their streams on every session at once."""
    visitor, thread_id, operator, person_id = person_and_operator(chat_server, "deactivated", "operator")
    with visitor.websocket(thread_id) as socket:
        frames_until(socket, "ready")
        stream = EventStream(visitor, f"/api/threads/{thread_id}/events")
        assert stream.records_until("ready")
        done = operator.request(
            "POST", "/admin/auth/user/", form={"action": "deactivate", "_selected_action": person_id, "index": "0"}
        )
        assert done.status == 302
        assert close_code(socket) == 4401
        assert json.loads(stream.records_until("error")[-1]["data"])["code"] == "forbidden"
    assert visitor.request("GET", f"/api/threads/{thread_id}").status == 401


def test_a_password_changed_in_the_admin_ends_every_stream(chat_server):  # noqa: F811
    """The person's sessions carry the old password's hash: their streams end at once, not at the next check."""
    visitor, thread_id, operator, person_id = person_and_operator(chat_server, "rekeyed", "key-operator")
    with visitor.websocket(thread_id) as socket:
        frames_until(socket, "ready")
        new_password = "another-long-password-1"
        form = {"password1": new_password, "password2": new_password, "usable_password": "true"}
        assert operator.request("POST", f"/admin/auth/user/{person_id}/password/", form=form).status == 302
        assert close_code(socket) == 4401


@pytest.fixture
def noticed(monkeypatch) -> list[str]:
    """Record the groups told to check their streams' rights (the notices the admin's changes send)."""
    groups: list[str] = []
    monkeypatch.setattr(sessions, "publish_access_revoked_on_commit", groups.append)
    return groups


@pytest.mark.django_db
def test_unticking_active_in_the_admin_tells_the_persons_streams(admin_client, user, noticed):
    change = f"/admin/auth/user/{user.pk}/change/"
    form = {
        "username": user.username,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    assert admin_client.post(change, {**form, "is_active": "on"}).status_code == 302
    assert noticed == [], "saving an active person tells nobody"
    assert admin_client.post(change, form).status_code == 302
    assert noticed == [person_group_name(user.pk)]


@pytest.mark.django_db
def test_deleting_a_person_in_the_admin_tells_their_streams_and_tokens(admin_client, user, noticed):
    token = ApiToken.objects.create(user=user, name="cli", hashed_token="x" * 64)
    answer = admin_client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302
    assert noticed == [person_group_name(user.pk), token_group_name(token.pk)]
    assert not type(user).objects.filter(pk=user.pk).exists()


@pytest.mark.django_db(transaction=True)
async def test_socket_of_an_ended_session_writes_nothing(user, thread, connect):
    """With the sign-out notice lost, a `send` on the socket is still refused: closed 4401, nothing written."""
    socket = await connect(thread.id, user)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    await database_sync_to_async(Session.objects.all().delete)()  # the session ends; no notice is sent
    await socket.send({"type": "send", "content": "after sign-out"})
    assert await socket.close_code() == 4401
    assert not await Message.objects.filter(thread=thread).aexists()


@pytest.mark.django_db(transaction=True)
async def test_socket_of_a_deactivated_person_writes_nothing(user, thread, connect):
    """A person made inactive by any path (no notice) can no longer write on a socket they hold open."""
    socket = await connect(thread.id, user)
    await socket.receive_until(lambda frame: frame["type"] == "ready")
    await type(user).objects.filter(pk=user.pk).aupdate(is_active=False)
    await socket.send({"type": "send", "content": "while deactivated"})
    assert await socket.close_code() == 4401
    assert not await Message.objects.filter(thread=thread).aexists()


SESSION_ENGINES = ["django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cache"]


def signed_in_session(settings, engine: str, user) -> str:
    """Sign `user` in with a session kept by `engine`; return its key."""
    settings.SESSION_ENGINE = engine
    client = Client()
    client.force_login(user)
    return client.session.session_key


@pytest.mark.django_db
@pytest.mark.parametrize("engine", SESSION_ENGINES, ids=["database sessions", "another engine"])
def test_a_session_signs_in_only_its_active_person_with_their_current_password(settings, engine, user, make_user):
    key = signed_in_session(settings, engine, user)
    other = make_user("other")
    assert session_signs_in(session_key=key, user_id=user.pk)
    assert not session_signs_in(session_key=key, user_id=other.pk), "another person's session"

    user.set_password("changed elsewhere")
    user.save()
    assert not session_signs_in(session_key=key, user_id=user.pk), "the password changed since sign-in"


@pytest.mark.django_db
@pytest.mark.parametrize("engine", SESSION_ENGINES, ids=["database sessions", "another engine"])
def test_an_ended_or_expired_session_or_an_inactive_person_signs_in_nobody(settings, engine, user, make_user):
    ended = signed_in_session(settings, engine, user)
    import_module(engine).SessionStore(session_key=ended).delete()
    assert not session_signs_in(session_key=ended, user_id=user.pk), "signed out"

    expired = signed_in_session(settings, engine, user)
    store = import_module(engine).SessionStore(session_key=expired)
    store.load()
    store.set_expiry(-1)  # kept as expired in the database; a cache forgets it
    store.save()
    assert not session_signs_in(session_key=expired, user_id=user.pk), "expired"

    live = signed_in_session(settings, engine, user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert not session_signs_in(session_key=live, user_id=user.pk), "deactivated"
    assert not session_signs_in(session_key="not-a-session-key", user_id=user.pk)
