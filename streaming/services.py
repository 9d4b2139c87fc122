"""Writes to the chunk log and to generations.

Every function here runs inside a transaction and is called through
`database_sync_to_async` from async code: transactions and locks never live in
coroutines. Events are published only once their rows commit (invariant I2).
"""
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat, Length
from django.utils import timezone

from threads.models import Message, Thread

from .broadcast import notify_workers_on_commit, publish_events_on_commit
from .events import EncodedEvent, encode_chunks
from .models import Chunk, Generation
from .providers import ReplyRequest, Turn


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


def seq_allocate(*, thread_id: UUID, count: int = 1) -> int:
    """Reserve `count` consecutive seqs in the thread's log and return the first (I1).

    The UPDATE locks the thread row until the transaction ends, so concurrent
    writers to one thread allocate and commit in seq order.
    """
    assert connection.in_atomic_block, "seqs must be allocated in the transaction that inserts them"
    table = Thread._meta.db_table
    thread_pk = Thread._meta.pk.get_db_prep_value(thread_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq",
            [count, thread_pk],
        )
        (last_seq,) = cursor.fetchone()
    return last_seq - count + 1


def chunks_insert(*, chunks: list[Chunk], messages: list[Message]) -> list[EncodedEvent]:
    """Insert chunk rows whose seqs were allocated in this transaction; return their encoded events."""
    Chunk.objects.bulk_create(chunks)
    return encode_chunks(chunks, {message.id: message for message in messages})


def chunks_record(*, thread_id: UUID, chunks: list[Chunk], messages: list[Message]) -> None:
    """Insert chunk rows whose seqs were allocated in this transaction, and publish them on commit."""
    publish_events_on_commit(thread_id, chunks_insert(chunks=chunks, messages=messages))


def message_end(
    *,
    message: Message,
    status: str,
    stop_reason: str = "",
    usage: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> None:
    """End an assistant message and its generation with an `end` event (I9), keeping its text."""
    now = timezone.now()
    seq = seq_allocate(thread_id=message.thread_id)
    message.status = status
    message.stop_reason = stop_reason
    message.usage = usage
    message.error = error
    message.completed_at = now
    message.content_seq = seq
    message.save(update_fields=["status", "stop_reason", "usage", "error", "completed_at", "content_seq"])
    Generation.objects.filter(message=message).update(
        status=Generation.Status.DONE,
        finished_at=now,
        lease_token=None,
        input_tokens=(usage or {}).get("input_tokens"),
        output_tokens=(usage or {}).get("output_tokens"),
    )
    Thread.objects.filter(pk=message.thread_id).update(updated_at=now)
    end = Chunk(thread_id=message.thread_id, seq=seq, message=message, kind=Chunk.Kind.END)
    chunks_record(thread_id=message.thread_id, chunks=[end], messages=[message])


def conversation_turns(*, reply: Message) -> list[Turn]:
    """Return the turns up to the message `reply` answers, oldest first, leaving out turns with no text.

    A retried reply answers an earlier message again: the replies in between are not part of its conversation.
    """
    earlier = (
        Message.objects.filter(thread_id=reply.thread_id, seq__lte=reply.reply_to.seq)
        .exclude(content="")
        .order_by("seq")
        .values_list("role", "content")
    )
    return [Turn(role=role, content=content) for role, content in earlier]


@transaction.atomic
def generation_claim(*, worker: str, model: str) -> Claim | None:
    """Take the oldest queued generation, or one whose lease expired (a takeover), or None."""
    now = timezone.now()
    claimable = (
        Generation.objects.filter(
            Q(status=Generation.Status.QUEUED) | Q(status=Generation.Status.RUNNING, lease_expires_at__lt=now)
        )
        .order_by("created_at")
        .select_for_update(skip_locked=True)
    )
    for generation in claimable[:10]:
        reply = Message.objects.select_related("reply_to").get(pk=generation.message_id)
        if generation.attempts >= settings.GENERATION_MAX_ATTEMPTS:
            message_end(
                message=reply,
                status=Message.Status.FAILED,
                error={"code": "interrupted", "detail": "The reply was interrupted too many times and was stopped."},
            )
            continue
        generation.status = Generation.Status.RUNNING
        generation.worker = worker
        generation.lease_token = uuid.uuid4()
        generation.lease_expires_at = now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
        generation.attempts += 1
        generation.started_at = generation.started_at or now
        generation.save(
            update_fields=["status", "worker", "lease_token", "lease_expires_at", "attempts", "started_at"]
        )
        if not reply.model:
            reply.model = model
            reply.save(update_fields=["model"])
        return Claim(
            generation_id=generation.id,
            lease_token=generation.lease_token,
            thread_id=generation.thread_id,
            message_id=reply.id,
            attempt=generation.attempts,
            request=ReplyRequest(turns=conversation_turns(reply=reply), partial=reply.content),
        )
    return None


def _fence(claim: Claim, *, first_token: bool = False) -> bool:
    """Renew the lease if this worker still holds it; return whether cancel was requested.

    Raises LeaseLost otherwise. One UPDATE … RETURNING, on the hot path of every flush;
    it locks the generation row, so a takeover cannot slip in between this check and
    the writes of the same transaction.
    """
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    assignments = "lease_expires_at = %s"
    params: list[Any] = [adapt(now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS))]
    if first_token:
        # Kept from the first attempt when a takeover writes its first text.
        assignments += ", first_token_at = COALESCE(first_token_at, %s)"
        params.append(adapt(now))
    fields = Generation._meta
    params += [
        fields.pk.get_db_prep_value(claim.generation_id, connection),
        fields.get_field("lease_token").get_db_prep_value(claim.lease_token, connection),
        Generation.Status.RUNNING,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {fields.db_table} SET {assignments} "
            "WHERE id = %s AND lease_token = %s AND status = %s RETURNING cancel_requested",
            params,
        )
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(str(claim.generation_id))
    return bool(row[0])


@transaction.atomic
def generation_heartbeat(*, claim: Claim) -> bool:
    """Renew the lease; return whether cancel was requested."""
    return _fence(claim)


@dataclass(frozen=True)
class Appended:
    cancel_requested: bool
    # The committed delta's event, for the caller to publish (nothing when a retry found it written).
    events: list[EncodedEvent]


@transaction.atomic
def generation_append(*, claim: Claim, text: str, first: bool, committed_chars: int | None = None) -> Appended:
    """Commit one coalesced `delta` chunk, fenced on the lease; the caller publishes its event.

    The worker publishes from its event loop once this returns (after the commit, I2),
    so the single ORM thread never waits on the channel layer. A writer that retries
    after a failed COMMIT passes `committed_chars`, the length of the text it knows to
    be committed: if the failed try did commit and only its answer was lost, the retry
    finds the text already there and writes nothing twice.
    """
    cancel_requested = _fence(claim, first_token=first)
    if committed_chars is not None:
        stored_chars = Message.objects.filter(pk=claim.message_id).values_list(Length("content"), flat=True).get()
        if stored_chars == committed_chars + len(text):
            return Appended(cancel_requested=cancel_requested, events=[])
    seq = seq_allocate(thread_id=claim.thread_id)
    Message.objects.filter(pk=claim.message_id).update(content=Concat(F("content"), Value(text)), content_seq=seq)
    delta = Chunk(thread_id=claim.thread_id, seq=seq, message_id=claim.message_id, kind=Chunk.Kind.DELTA, text=text)
    return Appended(cancel_requested=cancel_requested, events=chunks_insert(chunks=[delta], messages=[]))


@transaction.atomic
def generation_finish(
    *,
    claim: Claim,
    status: str,
    stop_reason: str = "",
    usage: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> None:
    """End the claimed generation's message (fenced on the lease)."""
    _fence(claim)
    message = Message.objects.get(pk=claim.message_id)
    message_end(message=message, status=status, stop_reason=stop_reason, usage=usage, error=error)


@transaction.atomic
def generation_release(*, claim: Claim) -> None:
    """Give the generation back so that another worker continues it at once (graceful shutdown)."""
    Generation.objects.filter(pk=claim.generation_id, lease_token=claim.lease_token).update(
        status=Generation.Status.QUEUED, lease_token=None, lease_expires_at=None, worker=""
    )
    notify_workers_on_commit(type="generation.queued")
