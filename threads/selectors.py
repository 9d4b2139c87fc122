"""Reads of threads and messages, always scoped to the person asking (I11); access to one thread is access.py's."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, TypedDict
from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from streaming.errors import NotFound

from .models import Membership, Message, ShareLink, Thread

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class Shared(TypedDict):
        shared: bool

    class Replying(TypedDict):
        replying: bool
        shared: bool


def thread_list_for_user(*, user: User, archived: bool | None = None) -> "QuerySet[WithAnnotations[Thread, Shared]]":
    """Return the threads the user owns and those shared with them, each annotated `shared` (not their own).

    `archived`: only their own threads they archived (True), or all but those (False); a
    shared thread is listed until its owner removes the person, however the owner files it.
    """
    membership = Membership.objects.filter(thread=OuterRef("pk"), user_id=user.pk)
    mine = Q(owner_id=user.pk)
    if archived is True:
        visible = mine & Q(archived_at__isnull=False)
    elif archived is False:
        visible = (mine & Q(archived_at__isnull=True)) | Q(Exists(membership))
    else:
        visible = mine | Q(Exists(membership))
    return Thread.objects.filter(visible).annotate(shared=Exists(membership)).order_by("-updated_at")


def thread_page(
    *, user: User, after: tuple[datetime, UUID] | None, limit: int
) -> "tuple[list[WithAnnotations[Thread, Shared]], bool]":
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
    threads = thread_list_for_user(user=user, archived=archived)
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


def member_list(*, thread: Thread) -> QuerySet[Membership]:
    """Return the thread's members, first added first, with their people."""
    return Membership.objects.filter(thread=thread).select_related("user").order_by("created_at", "pk")


def link_list(*, thread: Thread) -> QuerySet[ShareLink]:
    """Return the thread's share links, newest first, revoked and expired ones too."""
    return ShareLink.objects.filter(thread=thread).order_by("-created_at", "-pk")
