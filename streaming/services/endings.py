"""End replies: write their text and outcome, log their `end` events (I9), and cancel the reply being written."""

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .. import metrics
from ..broadcast import notify_workers_on_commit, publish_events_on_commit
from ..compaction import LoggedDelta, LoggedRow, ended_log, replies_compaction
from ..errors import NotRunning
from ..events import EncodedEvent, encode_chunks
from ..models import AbstractMessage, AbstractThread, Chunk, Generation, MessageStatus, get_message_model
from ..parts import PART_KINDS
from ..selectors import logged_reply_parts
from .log import ranges_delete, seq_allocate_each
from .sql import db_id, db_time, objects_insert, update_from_values

ACTIVE_STATUSES = [Generation.Status.QUEUED, Generation.Status.RUNNING, Generation.Status.AWAITING_APPROVAL]


def replies_end(
    ends: list[tuple[AbstractMessage, dict[str, Any]]], *, known: Mapping[UUID, Sequence[LoggedDelta]] | None = None
) -> dict[UUID, list[EncodedEvent]]:
    """End assistant messages and their generations with `end` events (I9), keeping their text.

    `ends` pairs each message with how it ended: `status`, and optionally `stop_reason`,
    `usage` and `error`. A reply's text, all its attempts' deltas, is written to its
    message here, once, and its delta rows are compacted. Replies ending together (in one
    worker round) cost one statement of each kind, however many they are. Returns each
    message's `end` event, for the caller to publish once the transaction commits.

    `known` gives, by message id, every row a reply logged, in seq order, when the caller
    wrote them all itself (a worker's reply of text alone, from its start): those replies'
    logs are not read back.
    """
    if not ends:
        return {}
    now = timezone.now()
    messages = [message for message, _ in ends]
    known = known or {}
    unknown = [message for message in messages if message.id not in known]
    read_back = ended_log(unknown, kinds=(Chunk.Kind.DELTA, *PART_KINDS)) if unknown else []
    # Grouped by message, each in seq order: a message's rows all come from one source.
    logged: list[LoggedRow] = [*read_back, *(row for message in messages for row in known.get(message.id, ()))]
    deltas = [row for row in logged if row.kind == Chunk.Kind.DELTA]
    texts = {
        message_id: "".join(delta.text for delta in rows)
        for message_id, rows in itertools.groupby(deltas, key=lambda delta: delta.message_id)
    }
    # Only an agent reply logged parts: a reply of text alone reads nothing more.
    with_parts = {row.message_id for row in logged if row.kind in PART_KINDS}
    parts = {message.id: logged_reply_parts(message=message) for message in messages if message.id in with_parts}
    seqs = seq_allocate_each(thread_ids={message.thread_id for message in messages}, touched_at=now)
    for message, outcome in ends:
        message.content = texts.get(message.id, "")
        message.parts = parts.get(message.id, [])
        message.status = outcome["status"]
        message.stop_reason = outcome.get("stop_reason", "")
        message.usage = outcome.get("usage")
        message.error = outcome.get("error")
        message.completed_at = now
        message.content_seq = seqs[message.thread_id]
    _messages_ended(messages, completed_at=now)
    _generations_done([(message, outcome.get("usage") or {}) for message, outcome in ends], finished_at=now)
    segments: list[Chunk] = []
    if settings.STREAM_COMPACT_REPLIES:
        covered, segments = replies_compaction(deltas)
        ranges_delete(covered)
    ends_logged = [
        Chunk(thread_id=message.thread_id, seq=seqs[message.thread_id], message_id=message.id, kind=Chunk.Kind.END)
        for message in messages
    ]
    objects_insert(segments + ends_logged)
    events = encode_chunks(ends_logged, {message.id: message for message in messages})
    return {message.id: [event] for message, event in zip(messages, events, strict=True)}


def _messages_ended(messages: list[AbstractMessage], *, completed_at: datetime) -> None:
    """Write the ended messages' text and outcome: one UPDATE joined to a VALUES row per message."""
    Message = get_message_model()
    usage, error = Message._meta.get_field("usage"), Message._meta.get_field("error")
    parts = Message._meta.get_field("parts")
    json_type = usage.db_type(connection)
    assert json_type is not None, "a JSONField has a column type"
    update_from_values(
        Message,
        columns=("id", "content", "status", "stop_reason", "usage", "error", "parts", "content_seq"),
        rows=[
            (
                db_id(Message, message.id),
                message.content,
                message.status,
                message.stop_reason,
                usage.get_db_prep_save(message.usage, connection),
                error.get_db_prep_save(message.error, connection),
                parts.get_db_prep_save(message.parts, connection),
                message.content_seq,
            )
            for message in messages
        ],
        assignments="content = {content}, status = {status}, stop_reason = {stop_reason}, usage = {usage}, "
        "error = {error}, parts = {parts}, content_seq = {content_seq}, completed_at = %s",
        params=[db_time(completed_at)],
        casts={"usage": json_type, "error": json_type, "parts": json_type},
    )


def _generations_done(ended: list[tuple[AbstractMessage, dict[str, Any]]], *, finished_at: datetime) -> None:
    """Mark the ended messages' generations done, with their token counts; their leases end."""
    Message = get_message_model()
    update_from_values(
        Generation,
        columns=("message_id", "input_tokens", "output_tokens"),
        rows=[
            (db_id(Message, message.id), usage.get("input_tokens"), usage.get("output_tokens"))
            for message, usage in ended
        ],
        assignments="status = %s, finished_at = %s, lease_token = NULL, "
        "input_tokens = {input_tokens}, output_tokens = {output_tokens}",
        params=[Generation.Status.DONE, db_time(finished_at)],
        casts={"input_tokens": "INTEGER", "output_tokens": "INTEGER"},
    )


def message_end(*, message: AbstractMessage, status: str, **outcome: Any) -> None:
    """End one assistant message no worker holds as `replies_end` does; its `end` event goes out on commit."""
    ended = replies_end([(message, {"status": status, **outcome})])
    publish_events_on_commit(message.thread_id, ended[message.id])
    _count_ended_on_commit(status, 1)


def replies_fail_interrupted(replies: list[AbstractMessage]) -> None:
    """End, as failed, replies whose generation ran out of attempts; their `end` events go out on commit."""
    error = {"code": "interrupted", "detail": "The reply was interrupted too many times and was stopped."}
    ended = replies_end([(reply, {"status": MessageStatus.FAILED, "error": error}) for reply in replies])
    for reply in replies:
        publish_events_on_commit(reply.thread_id, ended[reply.id])
    _count_ended_on_commit(MessageStatus.FAILED, len(replies))


def _count_ended_on_commit(status: str, count: int) -> None:
    """Count replies ended here rather than by their worker's run (which counts its own), once they are."""
    transaction.on_commit(lambda: metrics.REPLIES_ENDED.labels(status=status).inc(count))


def generation_cancel(*, thread: AbstractThread) -> AbstractMessage:
    """Stop the reply being written in `thread` and return it; NotRunning when there is none (I5)."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .select_related("message")
            .filter(thread_id=thread.id, status__in=ACTIVE_STATUSES)
            .first()
        )
        if generation is None:
            raise NotRunning("No reply is being written in this thread.")
        if generation.status in (Generation.Status.QUEUED, Generation.Status.AWAITING_APPROVAL):
            # No worker holds it: end it here, keeping what was written.
            message_end(message=generation.message, status=MessageStatus.CANCELLED)
        else:
            generation.cancel_requested = True
            generation.save(update_fields=["cancel_requested"])
            notify_workers_on_commit(type="generation.cancel", generation_id=str(generation.id))
    return generation.message
