"""Streams opened with a browser session end when the session does: sign-out, deactivation, a password change.

A WebSocket or event stream opened with the session cookie holds a session grant
(streaming/subscription.py's AccessGrant): it joins the person's group, where signing
out, deactivating, and the admin's password changes and deletions publish a notice
(`person_streams_check`), on which every stream of that person checks that
its own session still signs them in. So signing out (which is also how a person ends a
stolen session) ends that session's streams at once and leaves their other devices
alone, and deactivating a person ends all of them. Should a notice be lost, each stream
checks again every STREAM_ACCESS_RECHECK_SECONDS, and a WebSocket checks before every
write, so a signed-out socket writes nothing.
"""

from functools import partial
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import LogoutView
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from streaming.broadcast import publish_access_revoked_on_commit
from streaming.services.sql import db_time
from streaming.subscription import AccessGrant

from .models import ApiToken
from .tokens.selectors import api_token_grant, request_api_token_id, token_group_name


def person_group_name(user_id: int) -> str:
    """Return the channel-layer group of the streams a person opened with a session."""
    return f"person.{user_id}"


def session_signs_in(*, session_key: str, user_id: int) -> bool:
    """Return whether the session still signs in `user_id`, as Django's get_user decides it on a request.

    It must still exist and not have expired, name the person, carry the hash of their
    current password, and the person must be active.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    if type(store) is DatabaseSessionStore:
        session, password = _database_session_and_password(store, user_id=user_id)
    else:
        session, password = store.load(), _active_password(user_id=user_id)
    if password is None or session.get(SESSION_KEY) != str(user_id):
        return False
    user = get_user_model()(pk=user_id, password=password)
    return constant_time_compare(session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


# In SQL of their own: every WebSocket send asks whether its session still signs in, and
# the ORM's queries cost about twice the CPU.


def _database_session_and_password(store: DatabaseSessionStore, *, user_id: int) -> tuple[dict, str | None]:
    """Return a live database session's data and, if the person is active, their password hash: one statement."""
    Session, User = store.model, get_user_model()
    people = User._meta
    password, active = people.get_field("password").column, people.get_field("is_active").column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT session.session_data, person.{password} FROM {Session._meta.db_table} AS session "
            f"LEFT JOIN {people.db_table} AS person ON person.{people.pk.column} = %s AND person.{active} "
            f"WHERE session.session_key = %s AND session.expire_date > %s",
            [user_id, store.session_key, db_time(timezone.now())],
        )
        row = cursor.fetchone()
    if row is None:
        return {}, None
    session_data, password_hash = row
    return store.decode(session_data), password_hash


def _active_password(*, user_id: int) -> str | None:
    """Return the password hash of `user_id` if they are active."""
    people = get_user_model()._meta
    password, active = people.get_field("password").column, people.get_field("is_active").column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {password} FROM {people.db_table} WHERE {people.pk.column} = %s AND {active}", [user_id]
        )
        row = cursor.fetchone()
    return row[0] if row is not None else None


def session_grant(*, session_key: str | None, user_id: int) -> AccessGrant | None:
    """Return the grant of a stream opened with session `session_key`: it ends when the session no longer signs in."""
    if session_key is None:
        return None
    return AccessGrant(
        group=person_group_name(user_id),
        still_valid=partial(session_signs_in, session_key=session_key, user_id=user_id),
        detail="Signed out: the session ended.",
    )


def request_stream_grant(request: HttpRequest) -> AccessGrant | None:
    """Return what a stream opened by `request` holds: its API token's grant, else its session's.

    None for a signed-out visitor (a share link's reader): no session signs them in to end.
    """
    token_id = request_api_token_id(request)
    if token_id is not None:
        return api_token_grant(token_id)
    if not request.user.is_authenticated:
        return None
    return session_grant(session_key=request.session.session_key, user_id=int(request.user.pk))


def scope_stream_grant(scope: Any) -> AccessGrant | None:
    """Return what a WebSocket holds: its API token's grant, else its session's (None when signed out)."""
    if scope.get("api_token_id") is not None:
        return api_token_grant(scope["api_token_id"])
    if not scope["user"].is_authenticated:
        return None
    session = scope.get("session")
    return session_grant(session_key=session.session_key if session is not None else None, user_id=scope["user"].pk)


def person_streams_check(*, user_id: int) -> None:
    """Ask every stream the person opened, with a session or a token, to check its right (after commit)."""
    publish_access_revoked_on_commit(person_group_name(user_id))
    for token_id in ApiToken.objects.filter(user_id=user_id).values_list("id", flat=True):
        publish_access_revoked_on_commit(token_group_name(token_id))


def user_deactivate(*, user: AbstractBaseUser) -> None:
    """Deactivate a person: they cannot sign in, and every stream they hold ends at once."""
    with transaction.atomic():
        get_user_model()._default_manager.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        person_streams_check(user_id=user.pk)


class SignOutView(LogoutView):
    """Django's sign-out, which then ends the streams of the session it ended."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user_id = request.user.pk
        response = super().post(request, *args, **kwargs)  # flushes the session first: its streams then find it gone
        if user_id is not None:
            publish_access_revoked_on_commit(person_group_name(user_id))
        return response
