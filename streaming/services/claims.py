"""Claim generations for a worker, each under a lease and a fresh fencing token (I8), and give them back."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..broadcast import notify_workers_on_commit
from ..models import AbstractMessage, Generation, get_message_model
from ..parts import trailing_text
from ..providers import ReplyRequest
from ..selectors import conversations_turns, logged_reply_parts
from ..tools import tool_specs
from .endings import replies_fail_interrupted
from .sql import batch_cursor, db_id, db_time, db_uuid, placeholders, update_from_values


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
    generations = list(
        Generation.objects.filter(
            Q(status=Generation.Status.QUEUED) | Q(status=Generation.Status.RUNNING, lease_expires_at__lt=now)
        )
        .select_related("message__reply_to")
        .order_by("created_at")
        .select_for_update(skip_locked=True, of=("self",))[:limit]
    )
    replies_fail_interrupted(
        [generation.message for generation in generations if generation.attempts >= settings.GENERATION_MAX_ATTEMPTS]
    )
    claimed = [generation for generation in generations if generation.attempts < settings.GENERATION_MAX_ATTEMPTS]
    if not claimed:
        return []
    # Only a generation that ran before (or paused for an approval) can have its reply's text and
    # parts logged: a first attempt starts from none.
    parts = {
        generation.message_id: logged_reply_parts(message=generation.message)
        for generation in claimed
        if generation.started_at is not None
    }
    lease_tokens = {generation.id: uuid.uuid4() for generation in claimed}
    for generation in claimed:
        generation.lease_token = lease_tokens[generation.id]
        generation.attempts += 1
    _generations_run(claimed, worker=worker, now=now)
    replies = [generation.message for generation in claimed]
    _replies_model_set(replies, model=model)
    turns = conversations_turns(replies)
    tools = tool_specs()
    return [
        Claim(
            generation_id=generation.id,
            lease_token=lease_tokens[generation.id],
            thread_id=generation.thread_id,
            message_id=generation.message_id,
            attempt=generation.attempts,
            request=ReplyRequest(
                turns=turns[generation.message_id],
                partial=trailing_text(parts.get(generation.message_id, [])),
                parts=parts.get(generation.message_id, []),
                tools=tools,
            ),
            reply_to_id=generation.message.reply_to_id,
        )
        for generation in claimed
    ]


ageneration_claim_many = database_sync_to_async(generation_claim_many)


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
