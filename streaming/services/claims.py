"""Claim generations for a worker, each under a lease and a fresh fencing token (I8), and give them back."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from ..broadcast import notify_workers_on_commit
from ..models import AbstractMessage, Generation, get_message_model
from ..parts import trailing_text
from ..providers import ReplyRequest
from ..selectors import conversations_turns, logged_reply_parts
from ..tools import tool_specs
from .endings import replies_fail_interrupted
from .sql import batch_cursor, db_id, db_time, db_uuid, placeholders, returned_uuid, update_from_values

ModelT = TypeVar("ModelT", bound=models.Model)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one generation, valid while `lease_token` is the row's token."""

    generation_id: UUID
    lease_token: UUID
    thread_id: UUID
    message_id: UUID
    attempt: int
    request: ReplyRequest
    # The person's message the reply answers: tools run for its writer.
    reply_to_id: UUID | None = None


@transaction.atomic
def generation_claim_many(*, worker: str, model: str, limit: int) -> list[Claim]:
    """Take up to `limit` generations, oldest first: queued ones, and ones whose lease expired (takeovers).

    A few statements however many are taken: a loaded worker claims tens of replies a second.
    A generation out of attempts is not taken: its reply ends, failed.
    """
    now = timezone.now()
    claimable = _claimable(now=now, limit=limit)
    exhausted = [taken for taken in claimable if taken.generation.attempts >= settings.GENERATION_MAX_ATTEMPTS]
    if exhausted:
        # Ended here, with every field of their replies: an `end` event carries the reply's outcome.
        whole = get_message_model().objects.in_bulk([taken.reply.id for taken in exhausted])
        replies_fail_interrupted([whole[taken.reply.id] for taken in exhausted])
    claimed = [taken for taken in claimable if taken.generation.attempts < settings.GENERATION_MAX_ATTEMPTS]
    if not claimed:
        return []
    # Only a generation that ran before (or paused for an approval) can have its reply's text and
    # parts logged: a first attempt starts from none.
    parts = {taken.reply.id: logged_reply_parts(message=taken.reply) for taken in claimed if taken.ran_before}
    generations = [taken.generation for taken in claimed]
    lease_tokens = {generation.id: uuid.uuid4() for generation in generations}
    for generation in generations:
        generation.lease_token = lease_tokens[generation.id]
        generation.attempts += 1
    _generations_run(generations, worker=worker, now=now)
    replies = [taken.reply for taken in claimed]
    _replies_model_set(replies, model=model)
    turns = conversations_turns(replies)
    tools = tool_specs()
    return [
        Claim(
            generation_id=taken.generation.id,
            lease_token=lease_tokens[taken.generation.id],
            thread_id=taken.reply.thread_id,
            message_id=taken.reply.id,
            attempt=taken.generation.attempts,
            request=ReplyRequest(
                turns=turns[taken.reply.id],
                partial=trailing_text(parts.get(taken.reply.id, [])),
                parts=parts.get(taken.reply.id, []),
                tools=tools,
            ),
            reply_to_id=taken.reply_to_id,
        )
        for taken in claimed
    ]


ageneration_claim_many = database_sync_to_async(generation_claim_many)


class _Claimable(NamedTuple):
    """A generation a claim may take, its reply as far as a claim reads it, and whether it ran before."""

    generation: Generation
    reply: AbstractMessage
    reply_to_id: UUID | None
    ran_before: bool


def _claimable(*, now: datetime, limit: int) -> list[_Claimable]:
    """Lock up to `limit` generations to take, oldest first.

    In SQL of its own, and only what a claim reads: each generation with its reply (its id,
    thread and seq) and the seq of the message the reply answers. The ORM's query, which
    joined and loaded both messages whole, cost more than half a claim's CPU. The
    instances defer every other field: asked for one, they would load it.
    """
    Message = get_message_model()
    # SQLite has no row locks: its write transactions already run one at a time.
    lock = " FOR UPDATE OF generation SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generation.id, generation.attempts, generation.started_at IS NOT NULL, "
            "reply.id, reply.thread_id, reply.seq, reply.reply_to_id, asked.seq "
            f"FROM {Generation._meta.db_table} AS generation "
            f"JOIN {Message._meta.db_table} AS reply ON reply.id = generation.message_id "
            f"LEFT JOIN {Message._meta.db_table} AS asked ON asked.id = reply.reply_to_id "
            "WHERE generation.status = %s OR (generation.status = %s AND generation.lease_expires_at < %s) "
            f"ORDER BY generation.created_at LIMIT %s{lock}",
            [Generation.Status.QUEUED, Generation.Status.RUNNING, db_time(now), limit],
        )
        rows = cursor.fetchall()
    claimable = []
    for generation_id, attempts, ran_before, reply_id, thread_id, seq, answered_id, answered_seq in rows:
        reply_to_id = None if answered_id is None else returned_uuid(answered_id)
        reply = _loaded(
            Message, id=returned_uuid(reply_id), thread_id=returned_uuid(thread_id), seq=seq, reply_to_id=reply_to_id
        )
        if reply_to_id is not None:
            reply.reply_to = _loaded(Message, id=reply_to_id, seq=answered_seq)
        generation = _loaded(
            Generation,
            id=returned_uuid(generation_id),
            message_id=reply.id,
            thread_id=reply.thread_id,
            attempts=attempts,
        )
        claimable.append(_Claimable(generation, reply, reply_to_id, bool(ran_before)))
    return claimable


def _loaded(model: type[ModelT], **values: Any) -> ModelT:
    """Return an instance of `model` as read from the database with only `values` (by attname); the rest deferred."""
    names = [field.attname for field in model._meta.concrete_fields if field.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def _replies_model_set(replies: Sequence[AbstractMessage], *, model: str) -> None:
    """Name the model writing the replies, in SQL of its own; a takeover keeps the model its reply started with."""
    Message = get_message_model()
    with batch_cursor() as cursor:
        cursor.execute(
            f"UPDATE {Message._meta.db_table} SET model = %s WHERE model = '' AND id IN ({placeholders(replies)})",
            [model, *(db_id(Message, reply.pk) for reply in replies)],
        )


def _generations_run(generations: list[Generation], *, worker: str, now: datetime) -> None:
    """Mark claimed generations running under `worker`, each with its new lease token: one UPDATE."""
    update_from_values(
        Generation,
        columns=("id", "lease_token"),
        rows=[(db_id(Generation, generation.id), db_uuid(generation.lease_token)) for generation in generations],
        assignments="status = %s, worker = %s, lease_token = {lease_token}, lease_expires_at = %s, "
        "attempts = attempts + 1, started_at = COALESCE(started_at, %s)",
        params=[
            Generation.Status.RUNNING,
            worker,
            db_time(now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)),
            db_time(now),
        ],
    )


@transaction.atomic
def generation_release(*, claim: Claim) -> None:
    """Give the generation back so that another worker continues it at once (graceful shutdown)."""
    Generation.objects.filter(pk=claim.generation_id, lease_token=claim.lease_token).update(
        status=Generation.Status.QUEUED, lease_token=None, lease_expires_at=None, worker=""
    )
    notify_workers_on_commit(type="generation.queued")


ageneration_release = database_sync_to_async(generation_release)
