"""API tokens: bearer authentication on HTTP, SSE and WebSockets, CSRF for cookies only, and their management."""

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.test import Client

from chatsite.asgi import application
from threads.models import ApiToken, Message, Thread
from threads.tokens.selectors import hash_secret
from threads.tokens.services import api_token_create, api_token_revoke

from .conftest import RECEIVE_TIMEOUT_S
from .protocol_check import ProtocolCommunicator


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def secret(user) -> str:
    return api_token_create(user=user, name="laptop script")[1]


@pytest.fixture
def csrf_client() -> Client:
    """A client that enforces CSRF like a browser session would meet it."""
    return Client(enforce_csrf_checks=True)


def test_valid_token_authenticates(client, thread, secret):
    """A valid bearer token reads the owner's thread and records when it was used."""
    response = client.get(f"/api/threads/{thread.id}", **bearer(secret))
    assert response.status_code == 200 and response.json()["id"] == str(thread.id)
    assert ApiToken.objects.get().last_used_at is not None


def test_revoked_token_is_401(client, thread, user, secret):
    """A revoked token is refused with 401 and a WWW-Authenticate challenge."""
    api_token_revoke(user=user, token_id=ApiToken.objects.get().id)
    response = client.get(f"/api/threads/{thread.id}", **bearer(secret))
    assert response.status_code == 401 and response.json()["error"]["code"] == "forbidden"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_token_is_401_even_with_a_session(client, thread, user):
    """A bad token is refused even when a valid session cookie comes along: no fallback to the cookie."""
    client.force_login(user)
    response = client.get(f"/api/threads/{thread.id}", **bearer("chs_not-a-real-token"))
    assert response.status_code == 401


def test_missing_token_is_401(client, thread):
    """No token and no session answers 401."""
    assert client.get(f"/api/threads/{thread.id}").status_code == 401


def test_other_users_thread_answers_like_unknown(client, thread, make_user):
    """Another user's token gets 404 on this thread, exactly as for an unknown id (I11)."""
    _, other = api_token_create(user=make_user("bob"), name="bob's")
    foreign = client.get(f"/api/threads/{thread.id}", **bearer(other))
    unknown = client.get(f"/api/threads/{uuid.uuid4()}", **bearer(other))
    assert foreign.status_code == unknown.status_code == 404 and foreign.json() == unknown.json()


def test_bearer_post_needs_no_csrf_token(csrf_client, thread, secret):
    """A bearer-authenticated POST is exempt from CSRF: no cookie, no CSRF token, accepted."""
    response = csrf_client.post(
        f"/api/threads/{thread.id}/messages",
        data=json.dumps({"content": "Hi"}),
        content_type="application/json",
        **bearer(secret),
    )
    assert response.status_code == 202
    assert Message.objects.filter(thread=thread, role="user").count() == 1


def test_cookie_delete_without_csrf_is_refused(csrf_client, thread, user):
    """A session-cookie DELETE without the CSRF token is refused and deletes nothing."""
    csrf_client.force_login(user)
    response = csrf_client.delete(f"/api/threads/{thread.id}")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert Thread.objects.filter(pk=thread.pk).exists()


def test_only_a_hash_is_stored(user):
    """The secret is shown once and never stored: the row holds its sha256."""
    token, secret = api_token_create(user=user, name="ci")
    assert secret.startswith("chs_") and len(secret) > 40
    assert token.hashed_token == hash_secret(secret) and secret not in str(
        ApiToken.objects.filter(pk=token.pk).values().get()
    )


async def ws_close_code(communicator: ProtocolCommunicator) -> int:
    output = await communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
    while output["type"] != "websocket.close":
        output = await communicator.receive_output(timeout=RECEIVE_TIMEOUT_S)
    return output["code"]


def ws_with_bearer(thread_id, secret: str) -> ProtocolCommunicator:
    """A WebSocket handshake as a non-browser client makes it: a bearer header and no Origin."""
    return ProtocolCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {secret}".encode())]
    )


@pytest.mark.django_db(transaction=True)
async def test_websocket_with_bearer_connects(thread, secret):
    """A WebSocket handshake with a bearer token and no Origin connects and gets the log."""
    communicator = ws_with_bearer(thread.id, secret)
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert connected
    assert json.loads(await communicator.receive_from(timeout=RECEIVE_TIMEOUT_S)) == {"type": "ready", "seq": 0}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_with_revoked_bearer_is_closed_4401(thread, user, secret):
    """A WebSocket handshake with a revoked token is closed with 4401."""
    token = await ApiToken.objects.aget()
    await database_sync_to_async(api_token_revoke)(user=user, token_id=token.id)
    communicator = ws_with_bearer(thread.id, secret)
    await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert await ws_close_code(communicator) == 4401


@pytest.mark.django_db(transaction=True)
async def test_websocket_with_other_users_bearer_is_closed_4404(thread, make_user):
    """Another user's token on this thread's socket is closed 4404, as for an unknown thread (I11)."""
    bob = await database_sync_to_async(make_user)("bob")
    _, other = await database_sync_to_async(api_token_create)(user=bob, name="bob's")
    communicator = ws_with_bearer(thread.id, other)
    await communicator.connect(timeout=RECEIVE_TIMEOUT_S)
    assert await ws_close_code(communicator) == 4404


def test_command_creates_lists_and_revokes(user, capsys):
    """`manage.py apitoken create|list|revoke --user` makes a working token, lists it and revokes it."""
    call_command("apitoken", "create", "--user", user.username, "--name", "deploy")
    secret = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(hashed_token=hash_secret(secret))
    call_command("apitoken", "list", "--user", user.username)
    assert f"{token.id}\tdeploy\tactive" in capsys.readouterr().out
    call_command("apitoken", "revoke", "--user", user.username, str(token.id))
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_page_shows_a_new_secret_once(client, user):
    """The tokens page makes a token and shows its secret on that answer only."""
    client.force_login(user)
    made = client.post("/account/tokens/", {"name": "phone"})
    secret = made.context["secret"]
    assert made.status_code == 200 and secret in made.content.decode() and made["Cache-Control"] == "no-store"
    assert ApiToken.objects.get(user=user).hashed_token == hash_secret(secret)
    assert secret not in client.get("/account/tokens/").content.decode()


def test_page_revokes_only_own_tokens(client, user, make_user):
    """Revoking from the page works on one's own token and leaves another user's untouched."""
    mine, _ = api_token_create(user=user, name="mine")
    theirs, _ = api_token_create(user=make_user("bob"), name="theirs")
    client.force_login(user)
    client.post(f"/account/tokens/{mine.id}/revoke")
    client.post(f"/account/tokens/{theirs.id}/revoke")
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None


def test_staff_token_does_not_open_the_admin(client, make_user):
    """A staff member's bearer token neither renders the admin nor adds a user there (tokens are for /api/ only)."""
    staff = make_user("root", is_staff=True, is_superuser=True)
    staff_secret = api_token_create(user=staff, name="script")[1]
    assert client.get("/admin/", **bearer(staff_secret))["Location"].startswith("/admin/login/")
    form = {"username": "intruder", "password1": "Zx9-long-password", "password2": "Zx9-long-password"}
    response = client.post("/admin/auth/user/add/", form, **bearer(staff_secret))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not type(staff).objects.filter(username="intruder").exists()


def test_token_does_not_reach_pages_or_the_tokens_page(client, thread, secret):
    """A bearer token opens no page: not a thread page, not the page that makes more tokens."""
    sign_in_page = "/accounts/login/"
    assert client.get(f"/threads/{thread.id}/", **bearer(secret))["Location"].startswith(sign_in_page)
    assert client.post("/account/tokens/", {"name": "more"}, **bearer(secret))["Location"].startswith(sign_in_page)
    assert ApiToken.objects.count() == 1
