"""Reads of threads and messages, always scoped to the person asking (I11)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, TypedDict
from uuid import UUID

from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from streaming.errors import NotFound

from .models import Message, Thread

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class Replying(TypedDict):
        replying: bool


def thread_get_for_user(*, user: User, thread_id: UUID | str) -> Thread:
    """Return the user's thread; unknown, foreign and malformed ids all raise the same NotFound."""
    try:
        thread_uuid = thread_id if isinstance(thread_id, UUID) else UUID(str(thread_id))
    except ValueError:
        raise NotFound("No such thread.") from None
    thread = Thread.objects.filter(pk=thread_uuid, owner_id=user.pk).first() if user.is_authenticated else None
    if thread is None:
        raise NotFound("No such thread.")
    return thread


athread_get_for_user = database_sync_to_async(thread_get_for_user)


def thread_get_for_writer(*, user: User, thread_id: UUID | str) -> Thread:
    """Return the thread if the user may write it (send, approve a tool call); NotFound otherwise.

    Writers are the thread's owner: the one check every write that is not a send goes through.
    """
    return thread_get_for_user(user=user, thread_id=thread_id)


def thread_list_for_user(*, user: User) -> QuerySet[Thread]:
    return Thread.objects.filter(owner_id=user.pk).order_by("-updated_at")


def thread_page(*, user: User, after: tuple[datetime, UUID] | None, limit: int) -> tuple[list[Thread], bool]:
    """Return a page of the user's threads, newest activity first, and whether more follow.

    Keyset pagination on (updated_at, id), from the position `after` (the last thread of
    the previous page): a page never repeats or skips a thread that did not change
    meanwhile, however many were created since.
    """
    threads = thread_list_for_user(user=user).order_by("-updated_at", "-id")
    if after is not None:
        updated_at, thread_id = after
        threads = threads.filter(Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, id__lt=thread_id))
    page = list(threads[: limit + 1])
    return page[:limit], len(page) > limit


def thread_activity_for_user(
    *, user: User, limit: int, query: str = "", archived: bool = False
) -> "list[WithAnnotations[Thread, Replying]]":
    """Return the user's newest threads, listed or archived, matching `query` if given.

    Each is annotated with `replying`: a reply is being written.
    """
    streaming = Message.objects.filter(thread=OuterRef("pk"), status=Message.Status.STREAMING)
    threads = thread_list_for_user(user=user).filter(archived_at__isnull=not archived)
    if query.strip():
        threads = threads.filter(thread_search_filter(query=query.strip()))
    return list(threads.annotate(replying=Exists(streaming))[:limit])


def thread_search_filter(*, query: str) -> Q:
    """Match threads whose title or any message's text holds `query`, ignoring case."""
    in_messages = Message.objects.filter(thread=OuterRef("pk"), content__icontains=query)
    return Q(title__icontains=query) | Q(Exists(in_messages))


@dataclass(frozen=True)
class ThreadGroup:
    label: str
    threads: list[Thread]


def thread_list_for_sidebar(*, user: User, limit: int, query: str = "") -> list[ThreadGroup]:
    """Return the user's listed threads matching `query`, newest activity first, grouped by date."""
    threads = thread_activity_for_user(user=user, limit=limit, query=query)
    return thread_groups_by_date(threads=threads, today=timezone.localdate())


def thread_groups_by_date(*, threads: Sequence[Thread], today: date) -> list[ThreadGroup]:
    """Group threads (newest first) as Today, Yesterday, Previous 7 days, Previous 30 days, then by month."""
    groups: dict[str, list[Thread]] = {}
    for thread in threads:
        groups.setdefault(_date_label(timezone.localdate(thread.updated_at), today), []).append(thread)
    return [ThreadGroup(label, members) for label, members in groups.items()]


def _date_label(day: date, today: date) -> str:
    age_days = (today - day).days
    if age_days <= 0:
        return "Today"
    if age_days == 1:
        return "Yesterday"
    if age_days <= 7:
        return "Previous 7 days"
    if age_days <= 30:
        return "Previous 30 days"
    return day.strftime("%B") if day.year == today.year else day.strftime("%B %Y")


def message_get_in_thread(*, thread: Thread, message_id: UUID | str) -> Message:
    """Return a message of `thread`; unknown, foreign and malformed ids all raise NotFound."""
    try:
        message_uuid = message_id if isinstance(message_id, UUID) else UUID(str(message_id))
    except ValueError:
        raise NotFound("No such message.") from None
    message = Message.objects.filter(pk=message_uuid, thread=thread).first()
    if message is None:
        raise NotFound("No such message.")
    return message
