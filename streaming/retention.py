"""Retention of the chunk log: old events go, the messages they built stay.

A message's content is the record; its chunk rows exist so that clients can
resume. Once a thread has no reply streaming, the chunks of its ended messages
can go. Each thread keeps its newest chunk, though: a resuming client whose next
event was pruned is told so because the log's first remaining event is past its
cursor (the consumer then answers with a `reset` snapshot), and an empty log
would look like "nothing new" instead.

Pruning goes by message, and a segment row (streaming.compaction) holds deltas of one
message only, so a segment always goes or stays whole. It goes by each event's own age
too: a version switch is logged against the version it switches to, however old that
is, and the switch must stay with everything after it. So what goes is always the
start of a thread's log, and a resuming reader meets the pruned range before any event
that stays, never a hole after one. Counts are of events, not rows: a segment counts as
the events it holds.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .errors import Busy
from .models import AbstractThread, Chunk, MessageStatus, get_message_model, get_thread_model

# Rows deleted per statement: short statements keep locks and the WAL small.
PRUNE_BATCH_SIZE = 5000


@dataclass(frozen=True)
class PruneSummary:
    cutoff: datetime
    threads: int
    messages: int
    # Events deleted (a segment row counts as its events).
    chunks: int
    dry_run: bool


def _prunable_chunks(*, cutoff: datetime) -> QuerySet[Chunk]:
    """Return the chunks written before `cutoff` of ended messages last active before it, in settled threads."""
    Message = get_message_model()
    streaming = Message.objects.filter(status=MessageStatus.STREAMING)
    messages = (
        Message.objects.exclude(status=MessageStatus.STREAMING)
        # `thread` is the concrete model's field.
        .exclude(thread_id__in=streaming.values("thread_id"))  # type: ignore[misc]
        # A user message never "completes": its last activity is its creation.
        .alias(last_activity=Coalesce("completed_at", "created_at"))
        .filter(last_activity__lt=cutoff)
    )
    # The row holding the thread's newest event stays.
    return Chunk.objects.filter(message__in=messages.values("pk"), created_at__lt=cutoff).exclude(
        seq_last=F("thread__last_seq")
    )


@dataclass(frozen=True)
class PruneProgress:
    """Where a prune stands after one batch: for a long one's log."""

    batch: int
    rows: int  # deleted by this batch
    events: int  # deleted so far, by every batch
    events_total: int  # to delete, counted before the first batch


def _delete_in_batches(
    chunks: QuerySet[Chunk], *, batch_size: int, events_total: int, on_batch: Callable[[PruneProgress], None] | None
) -> int:
    """Delete `chunks` batch by batch, reporting each to `on_batch`; return how many events they held."""
    deleted = batch = 0
    while rows := list(chunks.values_list("pk", "span")[:batch_size]):
        # Chunks have no dependants and no signals, so this is one plain DELETE.
        Chunk.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
        deleted += sum(span for _, span in rows)
        batch += 1
        if on_batch is not None:
            on_batch(PruneProgress(batch=batch, rows=len(rows), events=deleted, events_total=events_total))
    return deleted


def chunks_prune(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int = PRUNE_BATCH_SIZE,
    on_batch: Callable[[PruneProgress], None] | None = None,
) -> PruneSummary:
    """Delete the chunk rows of messages that ended more than `older_than` ago; message contents stay."""
    cutoff = timezone.now() - older_than
    chunks = _prunable_chunks(cutoff=cutoff)
    counts = chunks.aggregate(
        chunks=Coalesce(Sum("span"), 0),
        messages=Count("message_id", distinct=True),
        threads=Count("thread_id", distinct=True),
    )
    if not dry_run:
        counts["chunks"] = _delete_in_batches(
            chunks, batch_size=batch_size, events_total=counts["chunks"], on_batch=on_batch
        )
    return PruneSummary(cutoff=cutoff, dry_run=dry_run, **counts)


@transaction.atomic
def thread_chunks_purge(*, thread: AbstractThread) -> int:
    """Delete a settled thread's chunk log but the row of its newest event; return how many events went.

    Raises Busy while a reply streams: its clients still read those events. The
    thread row is locked, as message_post does, so no reply can start meanwhile.
    """
    locked = get_thread_model().objects.select_for_update().get(pk=thread.pk)
    streaming = get_message_model().objects.filter(
        thread=locked,  # type: ignore[misc]  # `thread` is the concrete model's field
        status=MessageStatus.STREAMING,
    )
    if streaming.exists():
        raise Busy("A reply is still being written: its chunk log is in use.")
    chunks = Chunk.objects.filter(thread_id=locked.id).exclude(seq_last=locked.last_seq)
    events = chunks.aggregate(events=Coalesce(Sum("span"), 0))["events"]
    chunks.delete()
    return events
