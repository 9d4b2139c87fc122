"""Reads of the chunk log."""
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.core.paginator import Page, Paginator
from django.db.models import F, QuerySet, Window
from django.db.models.functions import Lag

from threads.models import Message, Thread

from .events import EncodedEvent, encode_chunks
from .models import Chunk


def chunk_events_after(*, thread_id: UUID, after: int, until: int | None = None, limit: int = 500) -> list[EncodedEvent]:
    """Return the encoded events with seq in (after, until], oldest first, at most `limit`."""
    chunks = Chunk.objects.filter(thread_id=thread_id, seq__gt=after).order_by("seq")
    if until is not None:
        chunks = chunks.filter(seq__lte=until)
    chunks = list(chunks.only("seq", "kind", "text", "message_id")[:limit])
    # Only message, start and end events carry message fields: fetch those messages once.
    message_ids = {chunk.message_id for chunk in chunks if chunk.kind != Chunk.Kind.DELTA}
    messages = Message.objects.in_bulk(message_ids) if message_ids else {}
    return encode_chunks(chunks, messages)


def thread_last_seq(*, thread_id: UUID) -> int:
    return Thread.objects.values_list("last_seq", flat=True).get(pk=thread_id)


def thread_streaming(*, thread_id: UUID) -> bool:
    """Return whether a reply is being written in the thread."""
    return Message.objects.filter(thread_id=thread_id, status=Message.Status.STREAMING).exists()


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


def _message_chunks(message: Message) -> QuerySet[Chunk]:
    # A message's chunks lie between its first seq and content_seq: the bounds let the (thread, seq) index serve.
    return Chunk.objects.filter(
        thread_id=message.thread_id, seq__gte=message.seq, seq__lte=message.content_seq, message=message
    ).order_by("seq")


def timeline_page(*, message: Message, page_number: str | None) -> tuple[Page, list[TimelineRow]]:
    """Return one page of the message's chunks, each with its time since the start and gap since the last one."""
    chunks = _message_chunks(message).annotate(previous_at=Window(Lag("created_at"), order_by=F("seq").asc()))
    page = Paginator(chunks, TIMELINE_PAGE_SIZE).get_page(page_number)
    gaps = [ms(chunk.created_at - chunk.previous_at) if chunk.previous_at else None for chunk in page]
    longest = max((gap for gap in gaps if gap), default=0.0)
    rows = [
        TimelineRow(
            chunk=chunk,
            since_start_ms=ms(chunk.created_at - message.created_at),
            gap_ms=gap,
            bar_percent=round(100 * gap / longest) if gap and longest else 0,
        )
        for chunk, gap in zip(page, gaps)
    ]
    return page, rows


def reply_check(*, message: Message) -> ReplyCheck | None:
    """Re-assemble an assistant reply from its delta chunks; None when the log cannot tell (a user message, pruned)."""
    if message.role != Message.Role.ASSISTANT:
        return None
    kinds_and_texts = list(
        _message_chunks(message).filter(kind__in=[Chunk.Kind.START, Chunk.Kind.DELTA]).values_list("kind", "text")
    )
    if not kinds_and_texts or kinds_and_texts[0][0] != Chunk.Kind.START:
        return None  # retention took the start of the reply: what is left is not all of it
    reassembled = "".join(text for kind, text in kinds_and_texts if kind == Chunk.Kind.DELTA)
    mismatch_at = None
    if reassembled != message.content:
        pairs = zip(reassembled, message.content)
        mismatch_at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(reassembled), len(message.content)))
    return ReplyCheck(reassembled=reassembled, delta_count=len(kinds_and_texts) - 1, mismatch_at=mismatch_at)
