"""Writes a person makes: threads, messages, retries, cancels."""

import functools
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone
from markdown_it import MarkdownIt

from streaming.broadcast import (
    notify_workers_on_commit,
    publish_access_revoked_on_commit,
    publish_thread_renamed_on_commit,
)
from streaming.errors import BadRequest, Busy, NoApprovalPending, TooLong
from streaming.events import thread_group_name
from streaming.models import Chunk, Generation
from streaming.services.endings import ACTIVE_STATUSES
from streaming.services.log import chunks_record, seq_allocate
from streaming.services.sql import db_id, objects_insert, placeholders, returned_uuid
from streaming.services.steps import tool_call_decide

from .access import Action, thread_for
from .limits import person_lock, reply_count, thread_count
from .models import Message, Thread
from .paths import path_branch, path_tail

TITLE_CHARS = 60
BUSY_DETAIL = "A reply is still being written: wait for it to end or stop it."


def thread_create(*, owner: User, title: str = "") -> Thread:
    """Make a thread for `owner`, not counted: fixtures and operators; a person's own request counts."""
    return Thread.objects.create(owner=owner, title=title.strip()[: Thread._meta.get_field("title").max_length])


def thread_create_for_self(*, owner: User, title: str = "") -> Thread:
    """Make a thread a person asked for: past CHAT_THREADS_PER_HOUR, RateLimited and nothing made."""
    with transaction.atomic():
        person_lock(user_id=owner.pk)
        thread_count(user_id=owner.pk)
        return thread_create(owner=owner, title=title)


def thread_rename(*, thread: Thread, title: object) -> Thread:
    """Give `thread` the title, stripped; BadRequest for anything but a non-blank string within the column."""
    max_length = Thread._meta.get_field("title").max_length
    assert max_length is not None, "title is a CharField"
    if not isinstance(title, str) or not title.strip() or len(title) > max_length:
        raise BadRequest(f"title must be a non-empty string of at most {max_length} characters.")
    thread.title = title.strip()
    # Renaming is not activity: the thread keeps its place in the list.
    thread.save(update_fields=["title"])
    publish_thread_renamed_on_commit(thread)  # other tabs on the thread show the new title
    return thread


def thread_delete(*, thread: Thread) -> None:
    """Delete `thread` with its messages and log; everyone's open streams of it end."""
    # A reply being written stops at its next write: its generation row is gone, so its lease is.
    thread_id = thread.id
    thread.delete()
    # Each stream then finds the thread gone when it checks its access grants.
    publish_access_revoked_on_commit(thread_group_name(thread_id))


def thread_archive(*, thread: Thread) -> Thread:
    """Take `thread` out of its owner's list; it stays readable and writable."""
    if thread.archived_at is None:
        thread.archived_at = timezone.now()
        # Archiving is not activity: the thread keeps its place among the archived.
        thread.save(update_fields=["archived_at"])
    return thread


def thread_unarchive(*, thread: Thread) -> Thread:
    """Put an archived `thread` back in its owner's list."""
    if thread.archived_at is not None:
        thread.archived_at = None
        thread.save(update_fields=["archived_at"])
    return thread


def title_from_content(content: str) -> str:
    """Return a thread title made of the first line of text of its first message, without Markdown."""
    first_line = _first_line_of_text(content) or content.strip().splitlines()[0].strip()
    return first_line if len(first_line) <= TITLE_CHARS else first_line[: TITLE_CHARS - 1].rstrip() + "…"


def _first_line_of_text(content: str) -> str:
    """Return the first line a reader sees in `content` rendered as Markdown: text only, no marks."""
    for token in _title_parser().parse(content):
        if token.type in ("fence", "code_block") and token.content.strip():
            return token.content.strip().splitlines()[0].strip()
        if token.type != "inline":
            continue
        words: list[str] = []
        for child in token.children or []:
            if child.type in ("softbreak", "hardbreak") and "".join(words).strip():
                break
            if child.type in ("text", "code_inline"):
                words.append(child.content)
            elif child.type == "image":
                words.append(child.content)  # its alt text
        line = " ".join("".join(words).split())
        if line:
            return line
    return ""


@functools.cache
def _title_parser() -> MarkdownIt:
    # As messages render: raw HTML is text a reader sees, so it stays in the title (as text).
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def validate_content(content: object) -> str:
    if not isinstance(content, str):
        raise BadRequest("content must be a string.")
    if not content.strip():
        raise BadRequest("content must not be empty.")
    if "\x00" in content:
        # PostgreSQL text cannot hold NUL: refuse it, on every surface, rather than fail on write.
        raise BadRequest("content must not contain NUL characters.")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise TooLong(too_long_detail())
    return content


def too_long_detail() -> str:
    """Return the refusal of a message over CHAT_MAX_MESSAGE_CHARS, worded alike on every surface."""
    return f"A message may be at most {settings.CHAT_MAX_MESSAGE_CHARS} characters long."


@dataclass(frozen=True)
class Posted:
    message: Message
    reply: Message


def _lock_thread(thread: Thread, *, person: User | None = None) -> Thread:
    """Lock the thread's row, then the writing person's (the owner when not given): writers to one thread, and one
    person's counted writes, queue.

    Always the thread first, then the person, and one of each: two writers never wait on each other in a cycle.
    """
    if person is None:  # the owner, read with the thread
        return Thread.objects.select_related("owner").select_for_update(of=("self", "owner")).get(pk=thread.pk)
    if person.pk == thread.owner_id:
        locked = _thread_and_owner_lock(thread)
        locked.owner = person
        return locked
    locked = Thread.objects.select_for_update().get(pk=thread.pk)
    person_lock(user_id=person.pk)
    return locked


def _thread_and_owner_lock(thread: Thread) -> Thread:
    """Lock the thread's row and its owner's in one statement of its own SQL; return the thread.

    Every send by an owner takes this lock, and the ORM's query with its join cost more
    than twice the CPU.
    """
    owner = Thread._meta.get_field("owner")
    people = owner.related_model._meta
    # SQLite has no row locks: its write transactions already run one at a time.
    lock = " FOR UPDATE OF thread, owner" if connection.features.has_select_for_update_of else ""
    locked = Thread.objects.raw(
        f"SELECT thread.* FROM {Thread._meta.db_table} AS thread "
        f"JOIN {people.db_table} AS owner ON owner.{people.pk.column} = thread.{owner.column} "
        f"WHERE thread.{Thread._meta.pk.column} = %s{lock}",
        [db_id(Thread, thread.pk)],
    )
    found = next(iter(locked), None)
    if found is None:  # deleted since it was read, as the ORM's `get` would say
        raise Thread.DoesNotExist("Thread matching query does not exist.")
    return found


def _refuse_if_busy(thread: Thread) -> None:
    """Refuse with Busy while a reply is being written (I6)."""
    _, busy = _sent_before_and_busy(thread=thread, client_id=None)
    if busy:
        raise Busy(BUSY_DETAIL)


def _sent_before_and_busy(*, thread: Thread, client_id: UUID | None) -> tuple[UUID | None, bool]:
    """Return the message `client_id` already sent to the thread, if any (I7), and whether a reply is being written.

    One statement of its own SQL: every send asks both, and the ORM spent more CPU
    building each of its two queries than the database took to answer them.
    """
    thread_id = db_id(Thread, thread.pk)
    client_id_column = Message._meta.get_field("client_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT id FROM {Message._meta.db_table} WHERE thread_id = %s AND client_id = %s LIMIT 1), "
            f"EXISTS (SELECT 1 FROM {Generation._meta.db_table} "
            f"WHERE thread_id = %s AND status IN ({placeholders(ACTIVE_STATUSES)}))",
            [thread_id, client_id_column.get_db_prep_value(client_id, connection), thread_id, *ACTIVE_STATUSES],
        )
        earlier_id, busy = cursor.fetchone()
    return (returned_uuid(earlier_id) if earlier_id is not None else None), bool(busy)


def _reply(*, thread: Thread, message: Message, seq: int) -> Message:
    """Return an unsaved assistant reply to `message` at `seq`."""
    return Message(
        thread=thread,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        seq=seq,
        content_seq=seq,
        reply_to=message,
        parent=message,
    )


def _reply_queue(reply: Message) -> Chunk:
    """Queue the generation that writes the saved `reply`; return the reply's `start` chunk."""
    objects_insert([Generation(message=reply, thread=reply.thread)])
    notify_workers_on_commit(type="generation.queued")
    return Chunk(thread=reply.thread, seq=reply.seq, message=reply, kind=Chunk.Kind.START)


def message_post(*, thread: Thread, content: object, client_id: UUID | None, author: User | None = None) -> Posted:
    """Post `author`'s message (the owner's when not given) at the end of the active path and queue the reply.

    A send with a client_id already used in this thread returns the first message
    and its reply, and writes nothing (I7). A send while a reply is being written,
    whoever asked for it, is refused with Busy and writes nothing (I6), and one past
    the author's rate limit with RateLimited.
    """
    content = validate_content(content)
    with transaction.atomic():
        locked = _lock_thread(thread, person=author)
        tail = path_tail(thread=locked)
        return exchange_write(
            thread=locked, content=content, client_id=client_id, parent=tail, branches=False, author=author
        )


def exchange_write(
    *,
    thread: Thread,
    content: str,
    client_id: UUID | None,
    parent: Message | None,
    branches: bool,
    author: User | None = None,
) -> Posted:
    """Write `author`'s message (the owner's when not given) following `parent`, and queue its reply.

    Called in a transaction that locked `thread` and the author (`_lock_thread`). Both go
    on the active path; when the message `branches` (a new version of one), what followed
    `parent` on the path leaves it first. As message_post: idempotent, Busy, RateLimited.
    """
    sender = author if author is not None else thread.owner
    earlier_id, busy = _sent_before_and_busy(thread=thread, client_id=client_id)
    if earlier_id is not None:
        earlier = Message.objects.get(pk=earlier_id)
        first_reply = earlier.replies.order_by("seq").first()
        assert first_reply is not None, "a message is written with its reply"
        return Posted(message=earlier, reply=first_reply)
    if busy:
        raise Busy(BUSY_DETAIL)
    reply_count(user_id=sender.pk)  # past CHAT_SENDS_PER_MINUTE over all their threads: RateLimited
    if branches:
        path_branch(thread=thread, parent=parent)
    seq = seq_allocate(thread_id=thread.pk, count=2, touched_at=timezone.now())
    message = Message(
        thread=thread,
        role=Message.Role.USER,
        content=content,
        status=Message.Status.COMPLETE,
        seq=seq,
        content_seq=seq,
        client_id=client_id,
        parent=parent,
        author=sender,
        author_name=sender.get_username(),
    )
    reply = _reply(thread=thread, message=message, seq=seq + 1)
    # One INSERT for both: the reply refers to its message by an id set on creation.
    objects_insert([message, reply])
    start = _reply_queue(reply)
    if not thread.title:
        thread.title = title_from_content(content)
        thread.save(update_fields=["title"])
    posted = Chunk(thread=thread, seq=seq, message=message, kind=Chunk.Kind.MESSAGE)
    chunks_record(thread_id=thread.pk, chunks=[posted, start], messages=[message, reply])
    return Posted(message=message, reply=reply)


def thread_start(
    *, person: User, thread_id: UUID, content: object, client_id: UUID | None, link_ids: tuple[int, ...] = ()
) -> Posted:
    """Send `person`'s message to thread `thread_id`, creating it as theirs if it does not exist yet.

    A thread exists once its first message is sent: a refused send (too long, too
    frequent) leaves no empty thread behind, and a new thread counts against
    CHAT_THREADS_PER_HOUR. Repeating the same start (same id and client_id) answers the
    first message and writes nothing (I7). An existing thread takes the message only
    from someone who may write to it; a thread the person cannot see (with the share
    links `link_ids` they opened) answers NotFound (I11).
    """
    content = validate_content(content)
    with transaction.atomic():
        thread, created = Thread.objects.get_or_create(pk=thread_id, defaults={"owner": person})
        if created:
            person_lock(user_id=person.pk)
            thread_count(user_id=person.pk)
        else:
            thread_for(user=person, thread_id=thread.pk, action=Action.WRITE, link_ids=link_ids)
        return message_post(thread=thread, content=content, client_id=client_id, author=person)


def reply_regenerate(*, thread: Thread, reply: Message, person: User | None = None) -> Message:
    """Answer the user message of `reply` again, with a new version of the reply on the active path.

    Counted as a send of `person`, who asked (the owner when not given). The earlier
    versions are kept, with what followed them, and can be shown again
    (threads.versions.version_switch).
    """
    if reply.thread_id != thread.pk or reply.role != Message.Role.ASSISTANT:
        raise BadRequest("Only a reply in this thread can be regenerated.")
    assert isinstance(reply.reply_to, Message), "a reply answers a message of its thread"
    with transaction.atomic():
        locked = _lock_thread(thread, person=person)
        _refuse_if_busy(locked)
        # A provider request like a send, counted for whoever asked.
        reply_count(user_id=person.pk if person is not None else locked.owner_id)
        path_branch(thread=locked, parent=reply.reply_to)
        seq = seq_allocate(thread_id=locked.pk, touched_at=timezone.now())
        again = _reply(thread=locked, message=reply.reply_to, seq=seq)
        again.save()
        start = _reply_queue(again)
        chunks_record(thread_id=locked.pk, chunks=[start], messages=[again])
    return again


def reply_retry(*, thread: Thread, reply: Message, person: User | None = None) -> Message:
    """Regenerate a failed or cancelled reply for `person`: what the pages' Retry button and the admin's action do."""
    if reply.thread_id != thread.pk or reply.role != Message.Role.ASSISTANT:
        raise BadRequest("Only a reply in this thread can be retried.")
    if reply.status not in (Message.Status.FAILED, Message.Status.CANCELLED):
        raise BadRequest("Only a failed or cancelled reply can be retried.")
    return reply_regenerate(thread=thread, reply=reply, person=person)


def tool_call_approve(*, thread: Thread, tool_call_id: str, approved: bool) -> None:
    """Approve or deny a tool call the thread's reply waits on; it resumes on a worker once none waits.

    The caller got `thread` through the access check for a write (threads/access.py): only writers decide.
    """
    tool_call_decide(thread_id=thread.id, tool_call_id=tool_call_id, approved=approved)


@transaction.atomic
def tool_calls_decide(*, thread: Thread, decisions: list[tuple[str, bool]], decided: set[str]) -> None:
    """Take every decision or none: one refused undoes those taken before it.

    Calls in `decided` were decided already: an AI SDK client sends again every answer its message holds.
    """
    for tool_call_id, approved in decisions:
        try:
            tool_call_approve(thread=thread, tool_call_id=tool_call_id, approved=approved)
        except NoApprovalPending:
            if tool_call_id not in decided:
                raise
