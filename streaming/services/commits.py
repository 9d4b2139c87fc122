"""The group commit of a worker's round: its replies' new text and ends in one transaction, each fenced on its lease."""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Sum
from django.db.models.functions import Length
from django.utils import timezone

from ..compaction import LoggedDelta
from ..events import EncodedEvent, encode_delta
from ..models import Chunk, Generation, get_message_model, get_thread_model
from .claims import Claim
from .endings import replies_end
from .log import seq_allocate_each
from .sql import batch_cursor, db_id, db_time, db_uuid, returned_uuid, update_from_values, values_sql

# The columns a delta row is inserted with; the database fills in the rest (span, seq_last, id).
DELTA_COLUMNS = ("thread", "seq", "message", "kind", "text", "created_at")


class LeaseLost(Exception):
    """This worker no longer holds the generation's lease: it must write nothing more (I8)."""


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
    # With an end: every row the reply logged before this write, in seq order, when the writer
    # logged them all and saw each commit (a reply of text alone, from its start). The end then
    # compacts them without reading the log back; None, and the log is read.
    logged: tuple[LoggedDelta, ...] | None = None


@dataclass(frozen=True)
class Written:
    """A write's outcome: nothing was written when the lease was lost (I8)."""

    lease_lost: bool
    cancel_requested: bool = False
    # Its committed events, for the caller to publish (none when a retry found its text written).
    events: list[EncodedEvent] = field(default_factory=list)
    # The row its text was logged as (None without text, or when a retry found it written).
    delta: LoggedDelta | None = None


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
    deltas = _deltas_insert(texts)
    events = {
        generation_id: [(delta.seq, delta.kind, encode_delta(delta.seq, delta.message_id, delta.text))]
        for generation_id, delta in deltas.items()
    }
    ending = [(write, write.end) for write in live if write.end is not None]
    if ending:
        messages = get_message_model().objects.in_bulk([write.claim.message_id for write, _ in ending])
        ended = replies_end(
            [(messages[write.claim.message_id], end) for write, end in ending], known=_logged(ending, deltas)
        )
        for write, _ in ending:
            events.setdefault(write.claim.generation_id, []).extend(ended[write.claim.message_id])
    return {
        write.claim.generation_id: Written(
            lease_lost=write.claim.generation_id not in held,
            cancel_requested=held.get(write.claim.generation_id, False),
            events=events.get(write.claim.generation_id, []),
            delta=deltas.get(write.claim.generation_id),
        )
        for write in writes
    }


ageneration_commit = database_sync_to_async(generation_commit)


def _fence(writes: list[Write]) -> dict[UUID, bool]:
    """Lock the generations whose lease this worker still holds; return each one's cancel_requested.

    Runs first in every round's transaction: the row locks mean a takeover cannot slip in
    between this check and the writes that follow it. Only the writes that ask for it renew
    their lease: renewing is an UPDATE of an indexed column, a new row version and index
    entries, which once a second per reply costs far less than once per flush.
    """
    table = Generation._meta.db_table
    pairs_sql, pairs = values_sql(
        [(db_id(Generation, write.claim.generation_id), db_uuid(write.claim.lease_token)) for write in writes]
    )
    # SQLite has no row locks: its write transactions already run one at a time.
    lock = f" FOR NO KEY UPDATE OF {table}" if connection.features.has_select_for_no_key_update else ""
    with batch_cursor() as cursor:
        cursor.execute(
            f"SELECT id, cancel_requested FROM {table} JOIN ({pairs_sql}) AS held "
            f"ON id = held.column1 AND lease_token = held.column2 WHERE status = %s{lock}",
            [*pairs, Generation.Status.RUNNING],
        )
        held = {returned_uuid(generation_id): bool(cancelled) for generation_id, cancelled in cursor.fetchall()}
    _leases_renew([write for write in writes if write.claim.generation_id in held and (write.renew or write.first)])
    return held


def _leases_renew(writes: list[Write]) -> None:
    """Extend the leases of held generations that asked for it, and note a first text's time."""
    now = timezone.now()
    update_from_values(
        Generation,
        columns=("id", "first_text"),
        rows=[(db_id(Generation, write.claim.generation_id), write.first and bool(write.text)) for write in writes],
        # A first text keeps the first attempt's first_token_at when a takeover writes it.
        assignments="lease_expires_at = %s, "
        "first_token_at = CASE WHEN {first_text} THEN COALESCE(first_token_at, %s) ELSE first_token_at END",
        params=[db_time(now + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)), db_time(now)],
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


def _logged(
    ending: list[tuple[Write, dict[str, Any]]], deltas: dict[UUID, LoggedDelta]
) -> dict[UUID, list[LoggedDelta]]:
    """Return, by message, every row of the ending replies whose writers know their whole log."""
    known = {}
    for write, _ in ending:
        logged_now = deltas.get(write.claim.generation_id)
        # Text not logged now was found logged by a retry: its row is not known here.
        if write.logged is not None and (logged_now is not None or not write.text):
            known[write.claim.message_id] = [*write.logged, *([logged_now] if logged_now else [])]
    return known


def _deltas_insert(writes: list[Write]) -> dict[UUID, LoggedDelta]:
    """Log each write's text as one `delta` chunk; return each generation's row.

    The message row is not touched: its content is written once, when the reply ends
    (`replies_end`), rather than rewritten whole on every flush.
    """
    if not writes:
        return {}
    Thread, Message = get_thread_model(), get_message_model()
    seqs = seq_allocate_each(thread_ids={write.claim.thread_id for write in writes})
    # One statement for all the rows, without a model instance per row: this runs for every flush.
    table = Chunk._meta.db_table
    columns = ", ".join(_column(Chunk, name) for name in DELTA_COLUMNS)
    now = timezone.now()
    created_at = db_time(now)
    deltas = [
        LoggedDelta(
            thread_id=write.claim.thread_id,
            seq=seqs[write.claim.thread_id],
            span=1,
            message_id=write.claim.message_id,
            kind=Chunk.Kind.DELTA,
            text=write.text,
            created_at=now,
        )
        for write in writes
    ]
    rows = [
        (
            db_id(Thread, delta.thread_id),
            delta.seq,
            db_id(Message, delta.message_id),
            delta.kind,
            delta.text,
            created_at,
        )
        for delta in deltas
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY streams the rows as they are: no statement of six parameters a row to build and quote.
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            rows_sql, params = values_sql(rows)
            cursor.execute(f"INSERT INTO {table} ({columns}) {rows_sql}", params)
    return {write.claim.generation_id: delta for write, delta in zip(writes, deltas, strict=True)}


def _column(model: type[models.Model], name: str) -> str:
    """A field's column, for raw SQL."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column is not None, f"{name} has no column"
    return field.column
