"""The JSON API of DESIGN.md §5: shapes, status codes and error bodies."""

import json
import uuid
from base64 import urlsafe_b64encode

import pytest

from streaming import selectors
from streaming.models import Chunk, Generation
from streaming.services.endings import generation_cancel
from threads.models import Message, Thread
from threads.services import message_post


def post_json(client, url, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def counts():
    return Message.objects.count(), Chunk.objects.count(), Generation.objects.count()


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def test_create_thread_returns_snapshot(signed_in, user):
    """POST /api/threads answers 201 with the new thread's snapshot."""
    response = post_json(signed_in, "/api/threads", {"title": "Plans"})
    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Plans" and body["seq"] == 0 and body["messages"] == []
    assert Thread.objects.get(pk=body["id"]).owner == user


def test_list_threads_only_own(signed_in, thread, make_user):
    """GET /api/threads lists the caller's threads only, newest activity first."""
    Thread.objects.create(owner=make_user("bob"), title="Bob's")
    body = signed_in.get("/api/threads").json()
    assert [listed["id"] for listed in body["threads"]] == [str(thread.id)]
    assert "next" in body


def test_send_answers_202_with_message_reply_and_seq(signed_in, thread):
    """POST messages answers 202 with the user message, the queued reply and the seq."""
    client_id = str(uuid.uuid4())
    response = post_json(signed_in, f"/api/threads/{thread.id}/messages", {"content": "Hi", "client_id": client_id})
    assert response.status_code == 202
    body = response.json()
    assert body["message"]["content"] == "Hi" and body["message"]["client_id"] == client_id
    assert body["reply"]["role"] == "assistant" and body["reply"]["status"] == "streaming"
    assert body["seq"] == 2


def test_repeated_send_answers_the_first(signed_in, thread):
    """The same client_id twice answers with the first message and writes nothing more (I7)."""
    url = f"/api/threads/{thread.id}/messages"
    body = {"content": "Hi", "client_id": str(uuid.uuid4())}
    first = post_json(signed_in, url, body).json()
    before = counts()
    again = post_json(signed_in, url, body)
    assert again.status_code == 202 and again.json() == first
    assert counts() == before


def test_send_while_busy_is_409(signed_in, thread):
    """A send while a reply is queued answers 409 busy and writes nothing (I6)."""
    post_json(signed_in, f"/api/threads/{thread.id}/messages", {"content": "first"})
    before = counts()
    response = post_json(signed_in, f"/api/threads/{thread.id}/messages", {"content": "second"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "busy"
    assert counts() == before


@pytest.mark.parametrize(
    "raw, status, code",
    [
        ("{not json", 400, "bad_request"),
        ("[]", 400, "bad_request"),
        ('{"content": 5}', 400, "bad_request"),
        ('{"content": ""}', 400, "bad_request"),
        ('{"content": "hi", "client_id": "x"}', 400, "bad_request"),
    ],
)
def test_bad_send_bodies(signed_in, thread, raw, status, code):
    """Malformed bodies get their documented error and write nothing."""
    before = counts()
    response = signed_in.post(f"/api/threads/{thread.id}/messages", data=raw, content_type="application/json")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["detail"]
    assert counts() == before


def test_oversized_send_is_413(signed_in, thread, settings):
    """A message over CHAT_MAX_MESSAGE_CHARS answers 413 too_long."""
    body = {"content": "x" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)}
    response = post_json(signed_in, f"/api/threads/{thread.id}/messages", body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_long"
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_thread_list_cursor_at_the_edge_of_time_is_400(signed_in, stamp):
    """A cursor whose time lies outside what UTC can hold answers 400 bad_request like any malformed cursor."""
    cursor = urlsafe_b64encode(f"{stamp}|{uuid.uuid4()}".encode()).decode()
    response = signed_in.get("/api/threads", {"cursor": cursor})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("thread_id", ["nope", str(uuid.uuid4())])
def test_unknown_thread_is_404(signed_in, thread_id):
    """Malformed and unknown thread ids answer 404 not_found."""
    response = signed_in.get(f"/api/threads/{thread_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_foreign_thread_answers_like_unknown(client, thread, make_user):
    """Another user's thread answers 404 exactly like an unknown one (I11)."""
    client.force_login(make_user("mallory"))
    foreign = client.get(f"/api/threads/{thread.id}")
    unknown = client.get(f"/api/threads/{uuid.uuid4()}")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert post_json(client, f"/api/threads/{thread.id}/messages", {"content": "hi"}).status_code == 404
    assert counts() == (0, 0, 0)


def test_anonymous_is_401(client, thread):
    """The API refuses callers who are not signed in."""
    response = client.get(f"/api/threads/{thread.id}")
    assert response.status_code == 401 and response.json()["error"]["code"] == "forbidden"


def test_cookie_post_without_csrf_is_refused(user, thread):
    """A session-cookie POST without the CSRF token is refused with a JSON 403."""
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = post_json(client, f"/api/threads/{thread.id}/messages", {"content": "hi"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert counts() == (0, 0, 0)


def test_snapshot_includes_in_progress_reply(signed_in, thread):
    """The snapshot names its seq and carries the queued reply as streaming."""
    message_post(thread=thread, content="Hi", client_id=None)
    body = signed_in.get(f"/api/threads/{thread.id}").json()
    assert body["seq"] == 2
    assert [(message["role"], message["status"]) for message in body["messages"]] == [
        ("user", "complete"),
        ("assistant", "streaming"),
    ]


def test_cancel_queued_reply_then_nothing_to_cancel(signed_in, thread):
    """Cancel answers 202 and ends a queued reply `cancelled`; with nothing running it answers 409."""
    posted = message_post(thread=thread, content="Hi", client_id=None)
    response = post_json(signed_in, f"/api/threads/{thread.id}/cancel", {})
    assert response.status_code == 202
    posted.reply.refresh_from_db()
    assert posted.reply.status == "cancelled"
    assert Chunk.objects.filter(message=posted.reply, kind="end").count() == 1
    again = post_json(signed_in, f"/api/threads/{thread.id}/cancel", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_running"


def test_wrong_method_is_405(signed_in, thread):
    """A method an endpoint does not take answers 405 with Allow."""
    response = signed_in.delete(f"/api/threads/{thread.id}/cancel")
    assert response.status_code == 405 and response["Allow"] == "POST"


def send_and_cancel(thread, content: str) -> None:
    """A question whose reply ends at once (cancelled while queued): the thread is free for the next one."""
    message_post(thread=thread, content=content, client_id=None)
    generation_cancel(thread=thread)


@pytest.mark.django_db
def test_a_snapshot_read_while_a_send_commits_keeps_the_oldest_messages(client, user, thread, monkeypatch):
    """I4: the page is read in two statements when bytes are bounded; a send between them adds, never drops."""
    send_and_cancel(thread, "first question")
    count_fitting = selectors._count_fitting

    def counted_then_a_send_commits(*args, **kwargs):
        monkeypatch.setattr(selectors, "_count_fitting", count_fitting)
        result = count_fitting(*args, **kwargs)
        send_and_cancel(thread, "second question")  # another tab, device or participant
        return result

    monkeypatch.setattr(selectors, "_count_fitting", counted_then_a_send_commits)
    client.force_login(user)
    snapshot = client.get(f"/api/threads/{thread.id}").json()
    questions = [message["content"] for message in snapshot["messages"] if message["role"] == "user"]
    assert (questions, snapshot["next"]) == (["first question", "second question"], None)
    assert snapshot["seq"] == Thread.objects.get(pk=thread.pk).last_seq
