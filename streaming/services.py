"""Writes to the chunk log and to generations.

Every function here runs inside a transaction and is called through
`database_sync_to_async` from async code: transactions and locks never live in
coroutines. Events are published only once their rows commit (invariant I2).
"""
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Length
from django.utils import timezone

from .broadcast import notify_workers_on_commit, publish_events_on_commit
from .compaction import ended_deltas, replies_compaction
from .errors import NotRunning
from .events import EncodedEvent, delta_event, encode, encode_chunks
from .models import (
    AbstractMessage,
    AbstractThread,
    Chunk,
    Generation,
    MessageStatus,
    get_message_model,
    get_thread_model,
)
from .providers import ReplyRequest, Turn
from .selectors import logged_reply_text

ACTIVE_STATUSES = [Generation.Status.QUEUED, Generation.Status.RUNNING]


class LeaseLost(Exception):
    """This worker no longer holds the generation's lease: it must write nothing more (I8)."""


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one generation, valid while `lease_token` is the row's token."""

    generation_id: UUID
    lease_token: UUID
    thread_id: UUID
    message_id: UUID
    attempt: int
    request: ReplyRequest


def seq_allocate(*, thread_id: UUID, count: int = 1, touched_at: datetime | None = None) -> int:
    """Reserve `count` consecutive seqs in the thread's log and return the first (I1); set updated_at if given.

    The UPDATE locks the thread row until the transaction ends, so concurrent
    writers to one thread allocate and commit in seq order.
    """
    assert connection.in_atomic_block, "seqs must be allocated in the transaction that inserts them"
    touch, touched = _touch(touched_at)
    table = get_thread_model()._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s{touch} WHERE id = %s RETURNING last_seq",
            [count, *touched, _db_id(get_thread_model(), thread_id)],
        )
        (last_seq,) = cursor.fetchone()
    return last_seq - count + 1


def chunks_insert(*, chunks: list[Chunk], messages: list[AbstractMessage]) -> list[EncodedEvent]:
    """Insert chunk rows whose seqs were allocated in this transaction; return their encoded events."""
    Chunk.objects.bulk_create(chunks)
    return encode_chunks(chunks, {message.id: message for message in messages})


def chunks_record(*, thread_id: UUID, chunks: list[Chunk], messages: list[AbstractMessage]) -> None:
    """Insert chunk rows whose seqs were allocated in this transaction, and publish them on commit."""
    publish_events_on_commit(thread_id, chunks_insert(chunks=chunks, messages=messages))


def replies_end(ends: list[tuple[AbstractMessage, dict[str, Any]]]) -> dict[UUID, list[EncodedEvent]]:
    """End assistant messages and their generations with `end` events (I9), keeping their text.

    `ends` pairs each message with how it ended: `status`, and optionally `stop_reason`,
    `usage` and `error`. A reply's text, all its attempts' deltas, is written to its
    message here, once, and its delta rows are compacted. Replies ending together (in one
    worker round) cost one statement of each kind, however many they are. Returns each
    message's `end` event, for the caller to publish once the transaction commits.
    """
    if not ends:
        return {}
    now = timezone.now()
    messages = [message for message, _ in ends]
    deltas = ended_deltas(messages)
    texts = {
        message_id: "".join(delta.text for delta in rows)
        for message_id, rows in itertools.groupby(deltas, key=lambda delta: delta.message_id)
    }
    seqs = _seq_allocate_one_each({message.thread_id for message in messages}, touched_at=now)
    for message, outcome in ends:
        message.content = texts.get(message.id, "")
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
        if segments:
            Chunk.objects.filter(covered).delete()
    ends_logged = [
        Chunk(thread_id=message.thread_id, seq=seqs[message.thread_id], message_id=message.id, kind=Chunk.Kind.END)
        for message in messages
    ]
    Chunk.objects.bulk_create(segments + ends_logged)
    events = encode_chunks(ends_logged, {message.id: message for message in messages})
    return {message.id: [event] for message, event in zip(messages, events, strict=True)}


def _messages_ended(messages: list[AbstractMessage], *, completed_at: datetime) -> None:
    """Write the ended messages' text and outcome, one UPDATE joined to a VALUES row per message.

    Not `bulk_update`: it builds and compiles a CASE per message and field, which cost a
    loaded worker a tenth of its CPU; this costs one parameter per value.
    """
    usage, error = get_message_model()._meta.get_field("usage"), get_message_model()._meta.get_field("error")
    json_type = usage.db_type(connection)
    rows = [
        (
            _db_id(get_message_model(), message.id),
            message.content,
            message.status,
            message.stop_reason,
            usage.get_db_prep_save(message.usage, connection),
            error.get_db_prep_save(message.error, connection),
            message.content_seq,
        )
        for message in messages
    ]
    with connection.cursor() as cursor:
        # A column of NULLs (no reply had an error) needs its type.
        cursor.execute(
            f"UPDATE {get_message_model()._meta.db_table} SET content = ended.column2, status = ended.column3, "
            f"stop_reason = ended.column4, usage = CAST(ended.column5 AS {json_type}), "
            f"error = CAST(ended.column6 AS {json_type}), content_seq = ended.column7, completed_at = %s "
            f"FROM (VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s)'] * len(rows))}) AS ended "
            "WHERE id = ended.column1",
            [connection.ops.adapt_datetimefield_value(completed_at), *(value for row in rows for value in row)],
        )


def _generations_done(ended: list[tuple[AbstractMessage, dict[str, Any]]], *, finished_at) -> None:
    """Mark the ended messages' generations done, with their token counts; their leases end."""
    with connection.cursor() as cursor:
        # VALUES columns are named column1… in both PostgreSQL and SQLite; a column of NULLs needs its type.
        cursor.execute(
            f"UPDATE {Generation._meta.db_table} SET status = %s, finished_at = %s, lease_token = NULL, "
            "input_tokens = CAST(ended.column2 AS INTEGER), output_tokens = CAST(ended.column3 AS INTEGER) "
            f"FROM (VALUES {', '.join(['(%s, %s, %s)'] * len(ended))}) AS ended WHERE message_id = ended.column1",
            [
                Generation.Status.DONE,
                connection.ops.adapt_datetimefield_value(finished_at),
                *(
                    value
                    for message, usage in ended
                    for value in (
                        _db_id(get_message_model(), message.id),
                        usage.get("input_tokens"),
                        usage.get("output_tokens"),
                    )
                ),
            ],
        )


def message_end(*, message: AbstractMessage, status: str, **outcome: Any) -> None:
    """End one assistant message as `replies_end` does, and publish its `end` event on commit."""
    ended = replies_end([(message, {"status": status, **outcome})])
    publish_events_on_commit(message.thread_id, ended[message.id])


def conversations_turns(replies: Sequence[AbstractMessage]) -> dict[UUID, list[Turn]]:
    """Return each reply's turns, oldest first: its thread's messages with text, up to the one it answers.

    A retried reply answers an earlier message again: the replies in between are not part of
    its conversation. One query for them all (each reply comes with its `reply_to`).
    """
    answered: dict[UUID, int] = {}
    earlier = Q()
    for reply in replies:
        assert reply.reply_to is not None, "a reply answers a message"
        answered[reply.id] = reply.reply_to.seq
        earlier |= Q(thread_id=reply.thread_id, seq__lte=answered[reply.id])
    rows = (
        get_message_model().objects.filter(earlier)
        .exclude(content="")
        .order_by("thread_id", "seq")  # type: ignore[misc]  # `thread` is the concrete model's field
        .values_list("thread_id", "seq", "role", "content")
    )
    by_thread = {thread_id: list(group) for thread_id, group in itertools.groupby(rows, key=lambda row: row[0])}
    return {
        reply.id: [
            Turn(role=role, content=content)
            for _, seq, role, content in by_thread.get(reply.thread_id, [])
            if seq <= answered[reply.id]
        ]
        for reply in replies
    }


@transaction.atomic
def generation_claim_many(*, worker: str, model: str, limit: int) -> list[Claim]:
    """Take up to `limit` generations, oldest first: queued ones, and ones whose lease expired (takeovers).

    A few statements however many are taken: a loaded worker claims tens of replies a second.
    A generation out of attempts is not taken: its reply ends, failed.
    """
    now = timezone.now()
    generations = list(
        Generation.objects.filter(
            Q(status=Generation.Status.QUEUED) | Q(status=Generation.Status.RUNNING, lease_expires_at__lt=now)
        )
        .select_related("message__reply_to")
        .order_by("created_at")
        .select_for_update(skip_locked=True, of=("self",))[:limit]
    )
    _replies_fail_interrupted(
        [generation.message for generation in generations if generation.attempts >= settings.GENERATION_MAX_ATTEMPTS]
    )
    claimed = [generation for generation in generations if generation.attempts < settings.GENERATION_MAX_ATTEMPTS]
    if not claimed:
        return []
    # Only a generation that ran before can have text logged: a first attempt starts from none.
    partials = {
        generation.message_id: logged_reply_text(message=generation.message)
        for generation in claimed
        if generation.attempts
    }
    lease_tokens = {generation.id: uuid.uuid4() for generation in claimed}
    for generation in claimed:
        generation.lease_token = lease_tokens[generation.id]
        generation.attempts += 1
    _generations_run(claimed, worker=worker, now=now)
    replies = [generation.message for generation in claimed]
    # A takeover keeps the model its reply started with.
    get_message_model().objects.filter(pk__in=[reply.pk for reply in replies], model="").update(model=model)
    turns = conversations_turns(replies)
    return [
        Claim(
            generation_id=generation.id,
            lease_token=lease_tokens[generation.id],
            thread_id=generation.thread_id,
            message_id=generation.message_id,
            attempt=generation.attempts,
            request=ReplyRequest(turns=turns[generation.message_id], partial=partials.get(generation.message_id, "")),
        )
        for generation in claimed
    ]


def _generations_run(generations: list[Generation], *, worker: str, now: datetime) -> None:
    """Mark claimed generations running under `worker`, each with its new lease token: one UPDATE."""
    lease_token = Generation._meta.get_field("lease_token")
    rows = [
        (_db_id(Generation, generation.id), lease_token.get_db_prep_value(generation.lease_token, connection))
        for generation in generations
    ]
    adapt_time = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Generation._meta.db_table} SET status = %s, worker = %s, lease_token = claimed.column2, "
            "lease_expires_at = %s, attempts = attempts + 1, started_at = COALESCE(started_at, %s) "
            f"FROM (VALUES {', '.join(['(%s, %s)'] * len(rows))}) AS claimed WHERE id = claimed.column1",
            [
                Generation.Status.RUNNING,
                worker,
                adapt_time(now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)),
                adapt_time(now),
                *(value for row in rows for value in row),
            ],
        )


def _replies_fail_interrupted(replies: list[AbstractMessage]) -> None:
    """End, as failed, replies whose generation ran out of attempts; their `end` events go out on commit."""
    error = {"code": "interrupted", "detail": "The reply was interrupted too many times and was stopped."}
    ended = replies_end([(reply, {"status": MessageStatus.FAILED, "error": error}) for reply in replies])
    for reply in replies:
        publish_events_on_commit(reply.thread_id, ended[reply.id])


@dataclass(frozen=True)
class Write:
    """What one reply asks of a group commit: its new text, and its end once the provider is done."""

    claim: Claim
    text: str = ""
    # This attempt's first text: the generation's first_token_at is set if no earlier attempt set it.
    first: bool = False
    # The reply's text known to be committed before this write (see `generation_commit`).
    committed_chars: int = 0
    # How the reply ended (`replies_end`'s status, stop_reason, usage, error), once it has.
    end: dict[str, Any] | None = None
    # Extend the lease by GENERATION_LEASE_SECONDS (writers ask about once a second).
    renew: bool = True


@dataclass(frozen=True)
class Written:
    """A write's outcome: nothing was written when the lease was lost (I8)."""

    lease_lost: bool
    cancel_requested: bool = False
    # Its committed events, for the caller to publish (none when a retry found its text written).
    events: list[EncodedEvent] = field(default_factory=list)


@transaction.atomic
def generation_commit(*, writes: list[Write], retrying: bool = False) -> dict[UUID, Written]:
    """Commit the writes of many replies in one transaction; the caller publishes their events.

    Every write is fenced on its lease and renews it (a write with no text is a heartbeat);
    writes whose lease was lost write nothing and do not stop the others. Text is written
    with a few set-based statements whatever the number of replies: the worker's cost per
    flush falls as its load grows. A caller that retries after a failed COMMIT passes
    `retrying`: a write whose text turns out committed already (only the answer to the
    COMMIT was lost) is not written twice.
    """
    held = _fence(writes)
    live = [write for write in writes if write.claim.generation_id in held]
    texts = [write for write in live if write.text]
    if retrying:
        texts = _not_yet_committed(texts)
    events = _deltas_insert(texts)
    ending = [(write, write.end) for write in live if write.end is not None]
    if ending:
        messages = get_message_model().objects.in_bulk([write.claim.message_id for write, _ in ending])
        ended = replies_end([(messages[write.claim.message_id], end) for write, end in ending])
        for write, _ in ending:
            events.setdefault(write.claim.generation_id, []).extend(ended[write.claim.message_id])
    return {
        write.claim.generation_id: Written(
            lease_lost=write.claim.generation_id not in held,
            cancel_requested=held.get(write.claim.generation_id, False),
            events=events.get(write.claim.generation_id, []),
        )
        for write in writes
    }


def _fence(writes: list[Write]) -> dict[UUID, bool]:
    """Lock the generations whose lease this worker still holds; return each one's cancel_requested.

    Runs first in every round's transaction: the row locks mean a takeover cannot slip in
    between this check and the writes that follow it. Only the writes that ask for it renew
    their lease: renewing is an UPDATE of an indexed column, a new row version and index
    entries, which once a second per reply costs far less than once per flush.
    """
    table = Generation._meta.db_table
    lease_token = Generation._meta.get_field("lease_token")
    pairs = [
        (
            _db_id(Generation, write.claim.generation_id),
            lease_token.get_db_prep_value(write.claim.lease_token, connection),
        )
        for write in writes
    ]
    # SQLite has no row locks: its write transactions already run one at a time.
    lock = f" FOR NO KEY UPDATE OF {table}" if connection.features.has_select_for_no_key_update else ""
    with connection.cursor() as cursor:
        # VALUES columns are named column1… in both PostgreSQL and SQLite.
        cursor.execute(
            f"SELECT id, cancel_requested FROM {table} "
            f"JOIN (VALUES {', '.join(['(%s, %s)'] * len(pairs))}) AS held "
            f"ON id = held.column1 AND lease_token = held.column2 WHERE status = %s{lock}",
            [*(value for pair in pairs for value in pair), Generation.Status.RUNNING],
        )
        held = {_uuid(generation_id): bool(cancel_requested) for generation_id, cancel_requested in cursor.fetchall()}
    _leases_renew([write for write in writes if write.claim.generation_id in held and (write.renew or write.first)])
    return held


def _leases_renew(writes: list[Write]) -> None:
    """Extend the leases of held generations that asked for it, and note a first text's time."""
    if not writes:
        return
    now = timezone.now()
    adapt_time = connection.ops.adapt_datetimefield_value
    rows = [(_db_id(Generation, write.claim.generation_id), write.first and bool(write.text)) for write in writes]
    with connection.cursor() as cursor:
        # A first text keeps the first attempt's first_token_at when a takeover writes it.
        cursor.execute(
            f"UPDATE {Generation._meta.db_table} SET lease_expires_at = %s, "
            "first_token_at = CASE WHEN new.column2 THEN COALESCE(first_token_at, %s) ELSE first_token_at END "
            f"FROM (VALUES {', '.join(['(%s, %s)'] * len(rows))}) AS new WHERE id = new.column1",
            [
                adapt_time(now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)),
                adapt_time(now),
                *(value for row in rows for value in row),
            ],
        )


def _not_yet_committed(writes: list[Write]) -> list[Write]:
    """Leave out the writes whose text is logged already (a retry after a lost COMMIT answer)."""
    logged = dict(
        Chunk.objects.filter(message_id__in=[write.claim.message_id for write in writes], kind=Chunk.Kind.DELTA)
        .values("message_id")
        .annotate(chars=Sum(Length("text")))
        .values_list("message_id", "chars")
    )
    return [
        write for write in writes if logged.get(write.claim.message_id, 0) != write.committed_chars + len(write.text)
    ]


DELTA_COLUMNS = ("thread", "seq", "message", "kind", "text", "created_at")


def _deltas_insert(writes: list[Write]) -> dict[UUID, list[EncodedEvent]]:
    """Log each write's text as one `delta` chunk; return each generation's event.

    The message row is not touched: its content is written once, when the reply ends
    (`replies_end`), rather than rewritten whole on every flush.
    """
    if not writes:
        return {}
    seqs = _seq_allocate_one_each({write.claim.thread_id for write in writes})
    # One statement for all the rows, without a model instance per row: this runs for every flush.
    columns = ", ".join(_column(Chunk, name) for name in DELTA_COLUMNS)
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    deltas = [
        (write.claim.thread_id, seqs[write.claim.thread_id], write.claim.message_id, write.text) for write in writes
    ]
    rows = [
        (
            _db_id(get_thread_model(), thread_id),
            seq,
            _db_id(get_message_model(), message_id),
            Chunk.Kind.DELTA,
            text,
            created_at,
        )
        for thread_id, seq, message_id, text in deltas
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY streams the rows as they are: no statement of six parameters a row to build and quote.
            with cursor.copy(f"COPY {Chunk._meta.db_table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
            cursor.execute(
                f"INSERT INTO {Chunk._meta.db_table} ({columns}) VALUES {values}",
                [value for row in rows for value in row],
            )
    return {
        write.claim.generation_id: [(seq, Chunk.Kind.DELTA, encode(delta_event(seq, message_id, text)))]
        for write, (_, seq, message_id, text) in zip(writes, deltas, strict=True)
    }


def _seq_allocate_one_each(thread_ids: set[UUID], *, touched_at: datetime | None = None) -> dict[UUID, int]:
    """Reserve the next seq of each thread, as `seq_allocate` does for one (I1); set updated_at if given."""
    touch, touched = _touch(touched_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {get_thread_model()._meta.db_table} SET last_seq = last_seq + 1{touch} "
            f"WHERE id IN ({_placeholders(thread_ids)}) RETURNING id, last_seq",
            [*touched, *(_db_id(get_thread_model(), thread_id) for thread_id in thread_ids)],
        )
        return {_uuid(thread_id): last_seq for thread_id, last_seq in cursor.fetchall()}


def _touch(touched_at: datetime | None) -> tuple[str, list[Any]]:
    """The SET clause and parameter that make a seq allocation also set the thread's updated_at, if given.

    Not on every delta: updated_at is indexed, and setting it would make each flush's
    row update a non-HOT one. A thread's activity is its messages and their ends.
    """
    if touched_at is None:
        return "", []
    return ", updated_at = %s", [connection.ops.adapt_datetimefield_value(touched_at)]


def _column(model: type[models.Model], name: str) -> str:
    """A field's column, for raw SQL."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column is not None, f"{name} has no column"
    return field.column


def _db_id(model: type[models.Model], pk: UUID) -> Any:
    """A primary key as the database takes it in raw SQL."""
    return model._meta.pk.get_db_prep_value(pk, connection)


def _placeholders(values) -> str:
    return ", ".join(["%s"] * len(values))


def _uuid(value: Any) -> UUID:
    """A UUID primary key as a RETURNING clause gives it: a UUID (PostgreSQL) or its hex (SQLite)."""
    return value if isinstance(value, UUID) else UUID(value)


@transaction.atomic
def generation_release(*, claim: Claim) -> None:
    """Give the generation back so that another worker continues it at once (graceful shutdown)."""
    Generation.objects.filter(pk=claim.generation_id, lease_token=claim.lease_token).update(
        status=Generation.Status.QUEUED, lease_token=None, lease_expires_at=None, worker=""
    )
    notify_workers_on_commit(type="generation.queued")


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
        if generation.status == Generation.Status.QUEUED:
            # No worker holds it: end it here, with nothing written.
            message_end(message=generation.message, status=MessageStatus.CANCELLED)
        else:
            generation.cancel_requested = True
            generation.save(update_fields=["cancel_requested"])
            notify_workers_on_commit(type="generation.cancel", generation_id=str(generation.id))
    return generation.message
