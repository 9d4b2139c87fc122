"""Allocate seqs in a thread's log and insert its chunk rows (I1)."""

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection

from ..broadcast import publish_events_on_commit
from ..compaction import DeltaRange
from ..events import EncodedEvent, encode_chunks
from ..models import AbstractMessage, Chunk, get_thread_model
from .sql import batch_cursor, db_id, db_time, objects_insert, placeholders, returned_uuid


def seq_allocate(*, thread_id: UUID, count: int = 1, touched_at: datetime | None = None) -> int:
    """Reserve `count` consecutive seqs in the thread's log and return the first (I1); set updated_at if given.

    The UPDATE locks the thread row until the transaction ends, so concurrent
    writers to one thread allocate and commit in seq order.
    """
    assert connection.in_atomic_block, "seqs must be allocated in the transaction that inserts them"
    Thread = get_thread_model()
    touch, touched = _touch(touched_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Thread._meta.db_table} SET last_seq = last_seq + %s{touch} WHERE id = %s RETURNING last_seq",
            [count, *touched, db_id(Thread, thread_id)],
        )
        (last_seq,) = cursor.fetchone()
    return last_seq - count + 1


def seq_allocate_each(*, thread_ids: set[UUID], touched_at: datetime | None = None) -> dict[UUID, int]:
    """Reserve the next seq of each thread, as `seq_allocate` does for one (I1); set updated_at if given."""
    Thread = get_thread_model()
    touch, touched = _touch(touched_at)
    with batch_cursor() as cursor:
        cursor.execute(
            f"UPDATE {Thread._meta.db_table} SET last_seq = last_seq + 1{touch} "
            f"WHERE id IN ({placeholders(thread_ids)}) RETURNING id, last_seq",
            [*touched, *(db_id(Thread, thread_id) for thread_id in thread_ids)],
        )
        return {returned_uuid(thread_id): last_seq for thread_id, last_seq in cursor.fetchall()}


def _touch(touched_at: datetime | None) -> tuple[str, list[Any]]:
    """Return the SET clause and parameter that make a seq allocation also set the thread's updated_at, if given.

    Not on every delta: updated_at is indexed, and setting it would make each flush's
    row update a non-HOT one. A thread's activity is its messages and their ends.
    """
    if touched_at is None:
        return "", []
    return ", updated_at = %s", [db_time(touched_at)]


def ranges_delete(ranges: list[DeltaRange]) -> None:
    """Delete the log rows in `ranges` (the deltas that segments replace): one statement."""
    if not ranges:
        return
    Thread = get_thread_model()
    with batch_cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Chunk._meta.db_table} WHERE "
            + " OR ".join(["(thread_id = %s AND seq >= %s AND seq < %s)"] * len(ranges)),
            [value for thread_id, seq, seq_end in ranges for value in (db_id(Thread, thread_id), seq, seq_end)],
        )


def chunks_insert(*, chunks: list[Chunk], messages: list[AbstractMessage]) -> list[EncodedEvent]:
    """Insert chunk rows whose seqs were allocated in this transaction; return their encoded events."""
    objects_insert(chunks)
    return encode_chunks(chunks, {message.id: message for message in messages})


def chunks_record(*, thread_id: UUID, chunks: list[Chunk], messages: list[AbstractMessage]) -> None:
    """Insert chunk rows whose seqs were allocated in this transaction, and publish them on commit."""
    publish_events_on_commit(thread_id, chunks_insert(chunks=chunks, messages=messages))
