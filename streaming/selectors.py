"""Reads of the chunk log and of the conversations it builds."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from channels.db import database_sync_to_async
from django.core.paginator import Page, Paginator
from django.db.models import Case, Count, F, Q, QuerySet, Value, When
from django.db.models.functions import Length

from .compaction import chunk_events
from .events import EncodedEvent, encode, encode_chunks, message_payload
from .models import (
    AbstractMessage,
    AbstractThread,
    Chunk,
    Generation,
    MessageRole,
    MessageStatus,
    get_message_model,
    get_thread_model,
)
from .parts import PART_KINDS, parts_fold
from .protocol import Part
from .providers import Turn
from .services.sql import batch_cursor, db_id, returned_uuid, values_sql


def chunk_events_after(
    *, thread_id: UUID, after: int, until: int | None = None, limit: int = 500, max_bytes: int | None = None
) -> list[EncodedEvent]:
    """Return the encoded events with seq in (after, until], oldest first, at most `limit`.

    A segment row is split into its events, and one that holds `after` or `until` gives
    only its events inside the range. With `max_bytes`, reading stops after the row whose
    text (a message event's: its message's content) brings the page to that many bytes:
    a page of the longest messages holds a few, not `limit`.
    """
    window = _backlog_window(thread_id=thread_id, after=after, until=until, limit=limit, max_bytes=max_bytes)
    if window is None:
        return []
    stop, rows = window
    chunks = list(
        Chunk.objects.filter(thread_id=thread_id, seq_last__gt=after, seq__lte=stop)
        .order_by("seq_last")
        .only("seq", "span", "kind", "text", "part_index", "event_lengths", "message_id")[:rows]
    )
    # Only message, start, end and switch events carry message fields: fetch those messages once.
    with_message = (Chunk.Kind.MESSAGE, Chunk.Kind.START, Chunk.Kind.END, Chunk.Kind.SWITCH)
    message_ids = {chunk.message_id for chunk in chunks if chunk.kind in with_message}
    messages = get_message_model().objects.in_bulk(message_ids) if message_ids else {}
    return encode_chunks(chunks, messages, after=after, until=stop)


achunk_events_after = database_sync_to_async(chunk_events_after)


def _backlog_window(
    *, thread_id: UUID, after: int, until: int | None, limit: int, max_bytes: int | None = None
) -> tuple[int, int] | None:
    """Return the seq of the last event a backlog read returns and how many rows hold its events; None for no event.

    Reads are index-backed and bounded whatever the log's length: rows are found by
    (thread, seq_last), a segment holding the cursor's next event included, and at most
    `limit` of them. A range no longer than `limit` needs no counting unless bytes are
    bounded too. Otherwise the events of the first rows are counted, reading only their
    seqs (and sizes), to find where the `limit`-th event, or the `max_bytes`-th byte, lies:
    a log with gaps (retention) is counted right too.
    """
    if until is not None and until <= after:
        return None
    if until is not None and until - after <= limit and max_bytes is None:
        return until, until - after
    shapes = Chunk.objects.filter(thread_id=thread_id, seq_last__gt=after).order_by("seq_last")
    if until is not None:
        shapes = shapes.filter(seq__lte=until)
    if max_bytes is None:
        rows_read = shapes.values_list("seq", "seq_last", Value(0))
    else:
        # A message event carries its message's content; every other row its own text.
        size = Case(When(kind=Chunk.Kind.MESSAGE, then=Length("message__content")), default=Length("text"))
        rows_read = shapes.values_list("seq", "seq_last", size)
    counted, rows, stop, size_read = 0, 0, None, 0
    for seq, seq_last, row_size in rows_read[:limit]:
        first, last = max(seq, after + 1), seq_last if until is None else min(seq_last, until)
        rows += 1
        if counted + (last - first + 1) >= limit:
            return first + (limit - counted) - 1, rows
        counted += last - first + 1
        stop = last
        size_read += row_size or 0
        if max_bytes is not None and size_read >= max_bytes:
            return stop, rows
    return (stop, rows) if stop is not None else None


def logged_reply_text(*, message: AbstractMessage, upto_seq: int | None = None) -> str:
    """Return the text of the reply's delta events, those up to `upto_seq` if given.

    A reply's `content` is written once, when it ends; while it streams, its text is its
    delta rows (all of its attempts'). Read with `upto_seq` = a snapshot's seq, they give
    the text at that seq even if the reply ended and was compacted since.
    """
    rows = Chunk.objects.filter(
        thread_id=message.thread_id, seq__gt=message.seq, message_id=message.id, kind=Chunk.Kind.DELTA
    ).order_by("seq")
    if upto_seq is None:
        # A segment's text is its events' texts joined: no row needs splitting.
        return "".join(rows.values_list("text", flat=True))
    rows = rows.filter(seq__lte=upto_seq).only("seq", "span", "text", "event_lengths", "event_offsets_ms", "created_at")
    return "".join(event.text for row in rows for event in chunk_events(row) if event.seq <= upto_seq)


def logged_reply_parts(*, message: AbstractMessage, upto_seq: int | None = None) -> list[Part]:
    """Return the reply's parts folded from its log, up to `upto_seq` if given (`streaming.parts`)."""
    rows = Chunk.objects.filter(
        thread_id=message.thread_id,
        seq__gt=message.seq,
        message_id=message.id,
        kind__in=[Chunk.Kind.DELTA, *PART_KINDS],
    ).order_by("seq")
    if upto_seq is not None:
        rows = rows.filter(seq__lte=upto_seq)
    rows = rows.only(
        "thread_id",
        "seq",
        "span",
        "message_id",
        "kind",
        "text",
        "part_index",
        "event_lengths",
        "event_offsets_ms",
        "created_at",
    )
    return parts_fold(event for row in rows for event in chunk_events(row) if upto_seq is None or event.seq <= upto_seq)


def reply_parts_at(messages: Sequence[AbstractMessage], *, seq: int) -> dict[UUID, list[Part]]:
    """Return the parts at `seq` of each reply still streaming among `messages`, by id, for a snapshot at `seq`."""
    return {
        message.id: logged_reply_parts(message=message, upto_seq=seq)
        for message in messages
        if message.status == MessageStatus.STREAMING
    }


def reply_texts_at(messages: Sequence[AbstractMessage], *, seq: int) -> dict[UUID, str]:
    """Return the text at `seq` of each reply still streaming among `messages`, by id, for a snapshot at `seq` (I4)."""
    return {
        message.id: logged_reply_text(message=message, upto_seq=seq)
        for message in messages
        if message.status == MessageStatus.STREAMING
    }


def thread_last_seq(*, thread_id: UUID) -> int:
    return get_thread_model().objects.values_list("last_seq", flat=True).get(pk=thread_id)


athread_last_seq = database_sync_to_async(thread_last_seq)


def threads_last_seq(*, thread_ids: list[UUID]) -> dict[UUID, int]:
    """Return the last seq of each of `thread_ids` that still exists, by id."""
    return dict(get_thread_model().objects.filter(pk__in=thread_ids).values_list("pk", "last_seq"))


athreads_last_seq = database_sync_to_async(threads_last_seq)


def generation_status_counts(*, statuses: tuple[str, ...]) -> dict[str, int]:
    """Return how many generations are in each of `statuses` (those with none are left out)."""
    rows = Generation.objects.filter(status__in=statuses).values_list("status").annotate(count=Count("pk"))
    return dict(rows.order_by())


def thread_streaming(*, thread_id: UUID) -> bool:
    """Return whether a reply is being written in the thread."""
    streaming = get_message_model().objects.filter(
        thread_id=thread_id,  # type: ignore[misc]  # `thread` is the concrete model's field
        status=MessageStatus.STREAMING,
    )
    return streaming.exists()


athread_streaming = database_sync_to_async(thread_streaming)


def conversations_turns(replies: Sequence[AbstractMessage]) -> dict[UUID, list[Turn]]:
    """Return each reply's turns, oldest first: its thread's active path with text, up to the message it answers.

    The path is the versions shown (streaming.models.AbstractMessage.on_path); other versions of
    a message, and a regenerated reply's earlier versions, are not part of the conversation. It
    cannot change while the reply is written: versions are added and chosen only between replies.
    One query for them all (each reply comes with its `reply_to`), in SQL of its own: a
    worker claims tens of replies a second, and the ORM's query, an OR of a condition per
    reply, cost several times the CPU of reading it.
    """
    answered: dict[UUID, int] = {}
    for reply in replies:
        assert reply.reply_to is not None, "a reply answers a message"
        answered[reply.id] = reply.reply_to.seq
    Message = get_message_model()
    asked_sql, asked = values_sql([(db_id(Message, reply.thread_id), answered[reply.id]) for reply in replies])
    with batch_cursor() as cursor:
        cursor.execute(
            f"SELECT thread_id, seq, role, content FROM {Message._meta.db_table} "
            f"JOIN ({asked_sql}) AS asked ON thread_id = asked.column1 AND seq <= asked.column2 "
            "WHERE on_path AND content <> '' ORDER BY thread_id, seq",
            asked,
        )
        rows = [(returned_uuid(thread_id), seq, role, content) for thread_id, seq, role, content in cursor.fetchall()]
    by_thread = {thread_id: list(group) for thread_id, group in itertools.groupby(rows, key=lambda row: row[0])}
    return {
        reply.id: [
            Turn(role=role, content=content)
            for _, seq, role, content in by_thread.get(reply.thread_id, [])
            if seq <= answered[reply.id]
        ]
        for reply in replies
    }


# Chunks per timeline page: a reply of any length renders in bounded time.
TIMELINE_PAGE_SIZE = 500


@dataclass(frozen=True)
class TimelineRow:
    chunk: Chunk
    since_start_ms: float
    # Time since the message's previous chunk; None for its first.
    gap_ms: float | None
    # The gap as a share of the longest gap on the page, for a bar.
    bar_percent: int


@dataclass(frozen=True)
class ReplyCheck:
    """A reply re-assembled from its delta chunks, compared with its stored content."""

    reassembled: str
    delta_count: int
    # The first character where content and log differ, None when they agree.
    mismatch_at: int | None


def ms(duration: timedelta) -> float:
    return duration.total_seconds() * 1000


def _message_chunks(message: AbstractMessage) -> QuerySet[Chunk]:
    # A message's chunks lie between its first seq and, once it has ended, content_seq: the
    # bounds let the (thread, seq) index serve.
    chunks = Chunk.objects.filter(thread_id=message.thread_id, seq__gte=message.seq, message_id=message.id)
    if message.status != MessageStatus.STREAMING:
        chunks = chunks.filter(seq__lte=message.content_seq)
    return chunks.order_by("seq")


def timeline_page(*, message: AbstractMessage, page_number: str | None) -> tuple[Page, list[TimelineRow]]:
    """Return one page of the message's events, each with its time since the start and gap since the one before.

    A segment row shows as the events it holds, each at its own time.
    """
    # Every row's seqs (a small read, however the log is compacted) number the events to page through.
    shapes = _message_chunks(message).values_list("seq", "span")
    seqs = [seq + offset for seq, span in shapes for offset in range(span)]
    page = Paginator(seqs, TIMELINE_PAGE_SIZE).get_page(page_number)
    if not page.object_list:
        return page, []
    # From the event before the page's first, for its gap.
    before = seqs[page.start_index() - 2] if page.start_index() > 1 else None
    first = page.object_list[0] if before is None else before
    last = page.object_list[-1]
    chunks = _message_chunks(message).filter(seq_last__gte=first, seq__lte=last)
    events = [event for chunk in chunks for event in chunk_events(chunk) if first <= event.seq <= last]
    previous_at = [None] + [event.created_at for event in events[:-1]]
    if before is not None:
        events, previous_at = events[1:], previous_at[1:]
    gaps = [ms(event.created_at - at) if at else None for event, at in zip(events, previous_at, strict=True)]
    longest = max((gap for gap in gaps if gap), default=0.0)
    rows = [
        TimelineRow(
            chunk=event,
            since_start_ms=ms(event.created_at - message.created_at),
            gap_ms=gap,
            bar_percent=round(100 * gap / longest) if gap and longest else 0,
        )
        for event, gap in zip(events, gaps, strict=True)
    ]
    return page, rows


def reply_check(*, message: AbstractMessage) -> ReplyCheck | None:
    """Re-assemble an assistant reply from its delta events; None when the log cannot tell (a user message, pruned)."""
    if message.role != MessageRole.ASSISTANT:
        return None
    rows = list(
        _message_chunks(message)
        .filter(kind__in=[Chunk.Kind.START, Chunk.Kind.DELTA])
        .values_list("kind", "text", "span")
    )
    if not rows or rows[0][0] != Chunk.Kind.START:
        return None  # retention took the start of the reply: what is left is not all of it
    # A segment's text is its deltas' texts joined.
    reassembled = "".join(text for kind, text, _ in rows if kind == Chunk.Kind.DELTA)
    mismatch_at = None
    # A reply's content is written when it ends: one still streaming has none to compare yet.
    if message.status != MessageStatus.STREAMING and reassembled != message.content:
        # The two may differ in length: past the shorter one, the mismatch is where it ends.
        pairs = zip(reassembled, message.content, strict=False)
        mismatch_at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(reassembled), len(message.content)))
    delta_count = sum(span for kind, _, span in rows if kind == Chunk.Kind.DELTA)
    return ReplyCheck(reassembled=reassembled, delta_count=delta_count, mismatch_at=mismatch_at)


@dataclass(frozen=True)
class ThreadMessages:
    """A thread's messages as of the log position `seq` (I4), oldest first."""

    messages: Sequence[AbstractMessage]
    seq: int
    # The `before` of the page preceding this one; None when no earlier message was left out.
    next: int | None
    # The text at `seq` of each reply still streaming, by message id: a reply's content is written when it ends.
    reply_texts: dict[UUID, str]
    # The versions of each message at `seq`, by message id: the messages of its role under its parent, oldest first.
    versions: dict[UUID, list[UUID]] = field(default_factory=dict)
    # The parts at `seq` of each reply still streaming, by message id, as its text.
    reply_parts: dict[UUID, list[Part]] = field(default_factory=dict)


def thread_snapshot(
    *,
    thread: AbstractThread,
    before: int | None = None,
    limit: int | None = None,
    max_bytes: int | None = None,
    strict: bool = False,
) -> ThreadMessages:
    """Return the thread's newest messages (before seq `before`) and the seq they reflect (I4), with `next`.

    `next` is the `before` of the earlier messages left out (by `limit` or `max_bytes`, see
    message_page), None when none were.
    """
    return message_page(thread=thread, before=before, limit=limit, max_bytes=max_bytes, strict=strict)


athread_snapshot = database_sync_to_async(thread_snapshot)


def message_page(
    *, thread: AbstractThread, before: int | None, limit: int | None, max_bytes: int | None = None, strict: bool = False
) -> ThreadMessages:
    """Return the newest `limit` messages (all when None) placed before seq `before`, oldest first.

    With the seq they reflect (I4), and `next`, the `before` of the page preceding this one.
    One statement reads the messages and the thread's last_seq together, so it sees a
    prefix of the log; a reply still streaming then gets its text from its delta events
    up to that seq, all committed before it: content and seq agree.

    With `max_bytes`, the page holds only the newest messages whose JSON (UTF-8, as
    `events.encode` writes it) fits in that many bytes: at least one unless `strict`
    (a frame that must fit under a limit), when the page may be empty and `next` then
    names the newest message, which did not fit.
    """
    messages = (
        get_message_model()
        .objects.filter(thread=thread)  # type: ignore[misc]  # `thread` is the concrete model's field
        .annotate(snapshot_seq=F("thread__last_seq"))
        .order_by("-seq")
    )
    if before is not None:
        messages = messages.filter(seq__lt=before)
    if max_bytes is None:
        newest_first = list(messages if limit is None else messages[: limit + 1])
        more = limit is not None and len(newest_first) > limit
        newest_first = newest_first[:limit]
    else:
        # Characters never outnumber bytes: choosing by characters first bounds what is loaded.
        count, more, newest_left_out, oldest_counted = _count_fitting(
            messages, limit=limit, max_chars=max_bytes, at_least_one=not strict
        )
        # Read from the oldest counted on, not the newest `count`: a send committed since the count
        # would shift that window and drop the oldest ones unsaid. What it adds is trimmed below,
        # and `next` then says what was left out.
        newest_first = list(messages.filter(seq__gte=oldest_counted)) if count else []
        if limit is not None and len(newest_first) > limit:
            newest_first, more = newest_first[:limit], True
    page = newest_first[::-1]
    seq = (
        page[0].snapshot_seq
        if page
        else get_thread_model().objects.values_list("last_seq", flat=True).get(pk=thread.pk)
    )
    reply_texts = reply_texts_at(page, seq=seq)
    versions = message_versions(thread=thread, messages=page, seq=seq)
    reply_parts = reply_parts_at(page, seq=seq)
    if max_bytes is not None:
        fitting = _newest_fitting(
            page, reply_texts, reply_parts, versions, max_bytes=max_bytes, at_least_one=not strict
        )
        more = more or fitting < len(page)
        page = page[len(page) - fitting :]
        if not page and more:
            newest = (newest_first[0].seq if newest_first else newest_left_out or 0) + 1
            return ThreadMessages(messages=[], seq=seq, next=newest, reply_texts={})
    return ThreadMessages(
        messages=page,
        seq=seq,
        next=page[0].seq if more else None,
        reply_texts=reply_texts,
        reply_parts=reply_parts,
        versions=versions,
    )


def message_versions(
    *, thread: AbstractThread, messages: Sequence[AbstractMessage], seq: int
) -> dict[UUID, list[UUID]]:
    """Return the versions of each of `messages` as of `seq`, by id: the ids of its role's messages under its parent.

    One query for them all, however many messages of the thread are left out of the page.
    """
    if not messages:
        return {}
    parent_ids = {message.parent_id for message in messages}
    under = Q(parent_id__in=[parent_id for parent_id in parent_ids if parent_id is not None])
    if None in parent_ids:
        under |= Q(parent__isnull=True)
    siblings: dict[tuple[UUID | None, str], list[UUID]] = {}
    rows = (
        get_message_model()
        .objects.filter(under, thread=thread, seq__lte=seq)  # type: ignore[misc]  # `thread` is the concrete model's field
        .order_by("seq")
        .values_list("id", "parent_id", "role")
    )
    for message_id, parent_id, role in rows:
        siblings.setdefault((parent_id, role), []).append(message_id)
    return {message.id: siblings.get((message.parent_id, message.role), [message.id]) for message in messages}


def _count_fitting(
    messages: QuerySet, *, limit: int | None, max_chars: int, at_least_one: bool
) -> tuple[int, bool, int | None, int | None]:
    """Count the newest `messages` (at most `limit`) whose contents hold at most `max_chars` together.

    Return the count, whether more messages are left out, the seq of the newest one left out,
    and that of the oldest one counted.
    """
    count, chars, oldest_counted = 0, 0, None
    for seq, length in messages.values_list("seq", Length("content")).iterator(chunk_size=100):
        chars += length or 0
        if count == limit or (chars > max_chars and (count or not at_least_one)):
            return count, True, seq, oldest_counted
        count, oldest_counted = count + 1, seq
    return count, False, None, oldest_counted


def _newest_fitting(
    page: Sequence[AbstractMessage],
    reply_texts: dict[UUID, str],
    reply_parts: dict[UUID, list[Part]],
    versions: dict[UUID, list[UUID]],
    *,
    max_bytes: int,
    at_least_one: bool,
) -> int:
    """Return how many of the newest messages of `page` (oldest first) encode within `max_bytes`, separators counted."""
    size, count = 0, 0
    for message in reversed(page):
        payload = message_payload(
            message,
            content=reply_texts.get(message.id),
            parts=reply_parts.get(message.id),
            versions=versions.get(message.id),
        )
        size += len(encode(payload).encode()) + 1
        if size > max_bytes and (count or not at_least_one):
            break
        count += 1
    return count
