"""Who may do what with a thread (I11): the one access check every surface goes through.

A person reaches a thread as its owner, as a member the owner added (`viewer` or
`participant`), or through a share link opened in their browser session (read only;
signed-out visitors too when CHAT_PUBLIC_LINKS is on). `thread_access` answers with
their `ThreadAccess`, whose `can(action)` says what they may do:

- `read`: the thread, its messages and its live replies;
- `write`: send, cancel, retry, approve a tool call;
- `manage`: rename, archive, delete, share (the owner only).

No access at all is NotFound, worded as for an id that exists nowhere, so a thread's
existence is not revealed; access without the right for an action is Forbidden.

A stream holds the `AccessGrant`s of `access_grants`: its person's group on the thread
(`access.<thread>.<person>`) and the group of each share link it came through
(`sharelink.<id>`). Removing a member, lowering a role, revoking a link and deleting
the thread send those groups a notice, and each stream asks `thread_access` again. A
link that expires sends none: its grant carries the link's `expires_at`, and the stream
asks again then.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from streaming.errors import NotFound
from streaming.protocol import CloseCode, Person
from streaming.services.sql import db_id
from streaming.subscription import AccessGrant, ThreadGone

from .errors import Forbidden
from .models import Membership, ShareLink, Thread, ThreadRole
from .sessions import request_stream_grant

# The session key under which a browser keeps the ids of the share links it opened.
SHARE_LINKS_SESSION_KEY = "share_links"
MAX_SESSION_LINKS = 20


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    MANAGE = "manage"


ALLOWED_ACTIONS: dict[ThreadRole, frozenset[Action]] = {
    ThreadRole.OWNER: frozenset(Action),
    ThreadRole.PARTICIPANT: frozenset({Action.READ, Action.WRITE}),
    ThreadRole.VIEWER: frozenset({Action.READ}),
}

REFUSALS = {
    Action.WRITE: "You can read this thread but not write to it: ask its owner to make you a participant.",
    Action.MANAGE: "Only the thread's owner can do that.",
}


@dataclass(frozen=True)
class ThreadAccess:
    """A person's access to a thread: their role, and the share link it came through if that is all they have.

    `link_expiries` pairs each live link of the person's that opens the thread with its
    expiry (None: never), when links are all they have.
    """

    thread: Thread
    role: ThreadRole
    link_id: int | None = None
    link_expiries: tuple[tuple[int, datetime | None], ...] = ()

    def can(self, action: Action) -> bool:
        return action in ALLOWED_ACTIONS[self.role]

    def require(self, action: Action) -> Thread:
        """Return the thread if the role allows `action`, else raise Forbidden."""
        if not self.can(action):
            raise Forbidden(REFUSALS[action])
        return self.thread

    @property
    def is_owner(self) -> bool:
        return self.role == ThreadRole.OWNER


def parse_thread_uuid(thread_id: UUID | str) -> UUID:
    """Return the UUID a thread id names; a malformed one raises NotFound like an unknown one."""
    try:
        return thread_id if isinstance(thread_id, UUID) else UUID(str(thread_id))
    except ValueError:
        raise NotFound("No such thread.") from None


def live_links() -> "Q":
    """Match the share links that still open their thread: not revoked, not expired."""
    return Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))


def thread_access(*, user: User | AnonymousUser, thread_id: UUID | str, link_ids: tuple[int, ...] = ()) -> ThreadAccess:
    """Return what `user` (with the share links `link_ids` opened in their session) may do with a thread.

    One query reads the thread with the person's membership; a second looks for a live
    link only when neither ownership nor membership grants access. Raise NotFound when
    nothing does, exactly as for an unknown id.
    """
    thread_uuid = parse_thread_uuid(thread_id)
    signed_in = bool(user.is_authenticated)
    thread = _thread_with_role(thread_uuid, user_id=int(user.pk or 0) if signed_in else None)
    if thread is not None and signed_in:
        if thread.owner_id == user.pk:
            return ThreadAccess(thread=thread, role=ThreadRole.OWNER)
        if thread.member_role:  # type: ignore[attr-defined]  # read by _thread_with_role
            return ThreadAccess(thread=thread, role=ThreadRole(thread.member_role))  # type: ignore[attr-defined]
    if thread is not None and link_ids and (signed_in or settings.CHAT_PUBLIC_LINKS):
        links = ShareLink.objects.filter(live_links(), thread=thread, pk__in=link_ids).order_by("pk")
        found = tuple(links.values_list("pk", "expires_at"))
        if found:
            return ThreadAccess(thread=thread, role=ThreadRole.VIEWER, link_id=found[0][0], link_expiries=found)
    raise NotFound("No such thread.")


athread_access = database_sync_to_async(thread_access)


def _thread_with_role(thread_id: UUID, *, user_id: int | None) -> Thread | None:
    """Return the thread, with `member_role`, the role of `user_id`'s membership (None without one or signed out).

    A raw query: every request, connect and send asks this, and the ORM spent about
    three times the CPU building the query with its subquery than reading it.
    """
    threads, memberships = Thread._meta.db_table, Membership._meta.db_table
    role = f"(SELECT role FROM {memberships} WHERE thread_id = {threads}.id AND user_id = %s)" if user_id else "NULL"
    found = Thread.objects.raw(
        f"SELECT {threads}.*, {role} AS member_role FROM {threads} WHERE id = %s",
        [user_id, db_id(Thread, thread_id)] if user_id else [db_id(Thread, thread_id)],
    )
    return next(iter(found), None)


def thread_for(
    *, user: User | AnonymousUser, thread_id: UUID | str, action: Action, link_ids: tuple[int, ...] = ()
) -> Thread:
    """Return the thread if `user` may do `action` with it: NotFound without access, Forbidden without the right."""
    return thread_access(user=user, thread_id=thread_id, link_ids=link_ids).require(action)


def request_link_ids(request: HttpRequest) -> tuple[int, ...]:
    """Return the ids of the share links opened in the request's browser session."""
    return tuple(request.session.get(SHARE_LINKS_SESSION_KEY, ()))


def scope_link_ids(scope: Any) -> tuple[int, ...]:
    """Return the ids of the share links opened in a WebSocket's browser session (sync: it may load the session)."""
    session = scope.get("session")
    return tuple(session.get(SHARE_LINKS_SESSION_KEY, ())) if session is not None else ()


def remember_link(request: HttpRequest, link_id: int) -> None:
    """Keep a share link the browser opened in its session, newest last, at most MAX_SESSION_LINKS of them."""
    kept = [known for known in request.session.get(SHARE_LINKS_SESSION_KEY, []) if known != link_id]
    request.session[SHARE_LINKS_SESSION_KEY] = (kept + [link_id])[-MAX_SESSION_LINKS:]


def member_group_name(thread_id: UUID | str, user_id: int) -> str:
    """Return the channel-layer group of a person's streams of a thread."""
    return f"access.{thread_id}.{user_id}"


def link_group_name(link_id: int) -> str:
    """Return the channel-layer group of the streams opened through a share link."""
    return f"sharelink.{link_id}"


def _still_reads(*, user: User | AnonymousUser, thread_id: UUID, link_ids: tuple[int, ...]) -> bool:
    """Return whether the person may still read the thread; ThreadGone once it is deleted."""
    try:
        thread_access(user=user, thread_id=thread_id, link_ids=link_ids)
    except NotFound:
        if not Thread.objects.filter(pk=thread_id).exists():
            raise ThreadGone(str(thread_id)) from None
        return False
    return True


def access_grants(
    *, user: User | AnonymousUser, access: ThreadAccess, link_ids: tuple[int, ...] = ()
) -> list[AccessGrant]:
    """Return the grants a stream of the thread holds: it ends once the person may no longer read it.

    A link's grant carries the link's expiry, which no notice announces: the stream asks again then.
    """
    still_valid = partial(_still_reads, user=user, thread_id=access.thread.id, link_ids=link_ids)
    detail = "Your access to this thread ended."
    expiries = dict(access.link_expiries)
    groups = [(link_group_name(link_id), expiries.get(link_id)) for link_id in link_ids]
    if user.is_authenticated:
        groups.append((member_group_name(access.thread.id, int(user.pk)), None))
    return [
        AccessGrant(
            group=group, still_valid=still_valid, detail=detail, close_code=CloseCode.NOT_ALLOWED, expires_at=expires_at
        )
        for group, expires_at in groups
    ]


def request_stream_grants(request: HttpRequest, access: ThreadAccess) -> list[AccessGrant]:
    """Return every grant a stream opened by `request` holds: its token's or session's, and its access's."""
    grant = request_stream_grant(request)
    link_ids = request_link_ids(request)
    return ([grant] if grant else []) + access_grants(user=request.user, access=access, link_ids=link_ids)


def person_of(user: User | AnonymousUser) -> Person | None:
    """Return how others see a reader among a thread's watchers: a signed-in person by name, a visitor unseen."""
    return Person(id=int(user.pk or 0), name=user.get_username()) if user.is_authenticated else None
