"""Per-person rate limits, counted in a ledger of stamps that deleting what they made does not undo.

Every count locks the person's row first, so that concurrent requests of one person (on
any web process, to any thread) count one after the other: on PostgreSQL, 100 sends at
once against a limit of 20 accept exactly 20.
"""

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from streaming.errors import RateLimited
from streaming.services.sql import db_time

from .models import UsageStamp


def refuse_if_too_frequent(*, recent: QuerySet, limit: int, window: timedelta, what: str) -> None:
    """Refuse with RateLimited when `recent` (rows with a `created_at`) already has `limit` rows inside `window`.

    Counted in the database, so a limit holds across every web process. The caller holds
    a row lock that makes two concurrent requests count one after the other.
    """
    now = timezone.now()
    newest_first = _newest_first(recent, now=now, window=window)
    at_limit = list(newest_first.values_list("created_at", flat=True)[limit - 1 : limit])
    if at_limit:
        _refuse(at_limit=at_limit[0], now=now, limit=limit, window=window, what=what)


def _newest_first(recent: QuerySet, *, now: datetime, window: timedelta) -> QuerySet:
    # Only the limit-th newest row counts: the limit is reached exactly when it lies inside the
    # window. One row read, however high the limit or however many rows the window holds.
    return recent.filter(created_at__gte=now - window).order_by("-created_at")


def _refuse(*, at_limit: datetime, now: datetime, limit: int, window: timedelta, what: str) -> None:
    retry_after_s = max(1, math.ceil((at_limit + window - now).total_seconds()))
    raise RateLimited(f"At most {limit} {what}: try again in {retry_after_s} s.", retry_after_s=retry_after_s)


def person_lock(*, user_id: int) -> None:
    """Lock the person's row until the transaction ends: their counted actions queue up behind it."""
    get_user_model().objects.select_for_update().filter(pk=user_id).exists()


def usage_count(*, user_id: int, action: str, limit: int, window: timedelta, what: str) -> None:
    """Count one `action` of the person, or refuse it with RateLimited past `limit` within `window`.

    Call it inside the transaction that does the action, holding the person's row lock
    (`person_lock`, or a thread lock that takes its owner's row too): their requests then
    count one after the other on any web process, and a refusal or a later failure rolls
    the stamp back. Two statements, taken after the lock so that they see every stamp
    committed before it: one reads the limit-th newest stamp and a stamp older than the
    window; the other writes the new stamp over that stale one, or adds it, so a person
    keeps one window's worth of stamps per action.

    In SQL of their own: every send runs them, and the ORM spent more CPU building the
    read than the database took to answer it.
    """
    assert transaction.get_connection().in_atomic_block, "count inside the action's transaction"
    now = timezone.now()
    since, table = db_time(now - window), UsageStamp._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT 1 FROM {table} WHERE user_id = %s AND action = %s AND created_at >= %s"
            f" ORDER BY created_at DESC LIMIT 1 OFFSET %s),"
            f" (SELECT id FROM {table} WHERE user_id = %s AND action = %s AND created_at < %s LIMIT 1)",
            [user_id, action, since, limit - 1, user_id, action, since],
        )
        at_limit, stale_id = cursor.fetchone()
        if at_limit is not None:
            stamps = UsageStamp.objects.filter(user_id=user_id, action=action)
            counted = _newest_first(stamps, now=now, window=window).values_list("created_at", flat=True)
            _refuse(at_limit=counted[limit - 1], now=now, limit=limit, window=window, what=what)
        if stale_id is not None:
            cursor.execute(f"UPDATE {table} SET created_at = %s WHERE id = %s", [db_time(now), stale_id])
        else:
            cursor.execute(
                f"INSERT INTO {table} (user_id, action, created_at) VALUES (%s, %s, %s)",
                [user_id, action, db_time(now)],
            )


def reply_count(*, user_id: int) -> None:
    """Count a request for a reply (a send, retry or regenerate): at most CHAT_SENDS_PER_MINUTE."""
    usage_count(
        user_id=user_id,
        action=UsageStamp.Action.REPLY,
        limit=settings.CHAT_SENDS_PER_MINUTE,
        window=timedelta(minutes=1),
        what="messages a minute",
    )


def thread_count(*, user_id: int) -> None:
    """Count a thread a person starts: at most CHAT_THREADS_PER_HOUR."""
    usage_count(
        user_id=user_id,
        action=UsageStamp.Action.THREAD,
        limit=settings.CHAT_THREADS_PER_HOUR,
        window=timedelta(hours=1),
        what="new threads an hour",
    )
