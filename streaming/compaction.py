"""Compaction of a finished reply's delta rows into segment rows, and their splitting on read.

While a reply streams, every flush commits one `delta` row, so a token reaches screens
within STREAM_FLUSH_MS of being generated (I2: an event is published only after its row
commits; a longer flush would trade rows for latency). Once the reply has ended, its
deltas never change again: in the transaction that writes its `end` event, each run of
its consecutive delta rows is replaced by one segment row (`Chunk.span` > 1). No event
changes: each keeps its seq, its text and its time, and readers split a segment back
(`segment_texts`, `chunk_events`), so every frame replayed from the log is byte for
byte the frame that was sent live.
"""

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar
from uuid import UUID

from .models import AbstractMessage, Chunk

# One segment is one bounded read: a backlog page fetches at most one segment beyond what it returns.
SEGMENT_MAX_EVENTS = 1000
SEGMENT_MAX_TEXT_BYTES = 64 * 1024


class DeltaRow(Protocol):
    """The fields of a delta row that compaction reads: a Chunk, or a named tuple of them."""

    @property
    def thread_id(self) -> UUID: ...
    @property
    def seq(self) -> int: ...
    @property
    def span(self) -> int: ...
    @property
    def message_id(self) -> UUID: ...
    @property
    def text(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


DeltaRowT = TypeVar("DeltaRowT", bound=DeltaRow)


class LoggedRow(DeltaRow, Protocol):
    """A row of an ended reply's log, as `ended_log` reads it: a delta's fields and its kind."""

    @property
    def kind(self) -> str: ...


class LoggedDelta(NamedTuple):
    """A delta row as the worker that inserted it knows it: what `ended_log` would read back."""

    thread_id: UUID
    seq: int
    span: int
    message_id: UUID
    kind: str
    text: str
    created_at: datetime


class DeltaRange(NamedTuple):
    """The rows of a thread's log from `seq` up to, not including, `seq_end`: the deltas a segment replaces."""

    thread_id: UUID
    seq: int
    seq_end: int


def segment_texts(chunk: Chunk) -> list[str]:
    """Return the texts of the events a row holds, oldest first."""
    if not chunk.is_segment:
        return [chunk.text]
    assert chunk.event_lengths is not None, "a segment has its events' lengths"
    texts, start = [], 0
    for length in chunk.event_lengths:
        texts.append(chunk.text[start : start + length])
        start += length
    return texts


def chunk_events(chunk: Chunk) -> list[Chunk]:
    """Return the events a row holds, oldest first: the row itself, or its segment split into one unsaved row per delta.

    Each split delta has its own seq, text and time. (Backlog reads encode a segment's
    events without making rows of them: `events.encode_chunks`.)
    """
    if not chunk.is_segment:
        return [chunk]
    assert chunk.event_offsets_ms is not None, "a segment has its events' times"
    return [
        Chunk(
            thread_id=chunk.thread_id,
            seq=chunk.seq + index,
            message_id=chunk.message_id,
            kind=chunk.kind,
            text=text,
            created_at=chunk.created_at + timedelta(milliseconds=offset_ms),
        )
        for index, (text, offset_ms) in enumerate(zip(segment_texts(chunk), chunk.event_offsets_ms, strict=True))
    ]


def _runs(deltas: list[DeltaRowT]) -> Iterator[list[DeltaRowT]]:
    """Group delta rows in seq order (or named tuples of their fields) into runs of consecutive seqs.

    Each run stays within the segment bounds.
    """
    run: list[DeltaRowT] = []
    run_bytes = 0
    for delta in deltas:
        size = len(delta.text.encode())
        if run and (
            delta.seq != run[-1].seq + 1 or len(run) == SEGMENT_MAX_EVENTS or run_bytes + size > SEGMENT_MAX_TEXT_BYTES
        ):
            yield run
            run, run_bytes = [], 0
        run.append(delta)
        run_bytes += size
    if run:
        yield run


def _segment(run: list[DeltaRowT]) -> Chunk:
    first = run[0]
    return Chunk(
        thread_id=first.thread_id,
        seq=first.seq,
        span=len(run),
        message_id=first.message_id,
        kind=Chunk.Kind.DELTA,
        text="".join(delta.text for delta in run),
        event_lengths=[len(delta.text) for delta in run],
        event_offsets_ms=[round((delta.created_at - first.created_at) / timedelta(milliseconds=1)) for delta in run],
        created_at=first.created_at,
    )


def deltas_compacted(deltas: list[Chunk]) -> list[Chunk]:
    """Return the rows that hold `deltas` (one message's single delta rows, in seq order) once compacted.

    Each run becomes one segment; a delta with no consecutive neighbour stays as it is.
    """
    return [_segment(run) if len(run) > 1 else run[0] for run in _runs(deltas)]


def ended_log(messages: list[AbstractMessage], *, kinds: Iterable[str] = (Chunk.Kind.DELTA,)) -> list[LoggedRow]:
    """Return the rows of `kinds` that ended replies logged, by message and in seq order, as named tuples.

    Named tuples rather than model instances: long replies have hundreds of rows, read once.
    """
    return list(
        Chunk.objects.filter(message_id__in=[message.id for message in messages], kind__in=list(kinds))
        .order_by("message_id", "seq")
        .values_list("thread_id", "seq", "span", "message_id", "kind", "text", "created_at", named=True)
    )


def replies_compaction(deltas: list[DeltaRowT]) -> tuple[list[DeltaRange], list[Chunk]]:
    """Return which rows of `deltas` (from `ended_log`) to delete and the segment rows that replace them.

    Run in the transaction that writes the replies' `end` events: seq allocation holds each
    thread's row lock and the generations are fenced, so nothing else writes these
    replies' rows meanwhile, and readers see either every single row or every segment,
    never a mix. Rows that are segments already, and lone deltas, stay as they are.
    """
    singles = [delta for delta in deltas if delta.span == 1]
    segments = []
    for _, rows in itertools.groupby(singles, key=lambda delta: delta.message_id):
        segments += [_segment(run) for run in _runs(list(rows)) if len(run) > 1]
    covered = [DeltaRange(segment.thread_id, segment.seq, segment.seq + segment.span) for segment in segments]
    return covered, segments
