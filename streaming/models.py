"""The engine's tables (the chunk log and the generations) and what it needs of a conversation.

The engine never imports the product. Like `django.contrib.auth` with `AUTH_USER_MODEL`,
it defines the fields it reads and writes on abstract models, `AbstractThread` and
`AbstractMessage`; the product's concrete models extend them and are named by the
settings `STREAM_THREAD_MODEL` and `STREAM_MESSAGE_MODEL`, which the engine resolves with
`get_thread_model()` and `get_message_model()`.
"""

import uuid
from typing import ClassVar, Self

from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils import timezone

from .protocol import MessageRole, MessageStatus, Person


class AbstractThread(models.Model):
    """A conversation as the engine sees it: a log with an allocation counter."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Allocation counter for the chunk log: the seq of the newest committed chunk.
    last_seq = models.PositiveBigIntegerField(default=0)

    # For type checkers only: the concrete model gets Django's default manager.
    objects: ClassVar[models.Manager[Self]]

    class Meta:
        abstract = True


class AbstractMessage(models.Model):
    """A message of a conversation, as the engine writes it; the concrete model adds its `thread`."""

    Role = MessageRole
    Status = MessageStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    # seq of the chunk that introduced this message (`message` or `start`): its place in the thread.
    seq = models.PositiveBigIntegerField()
    # seq of the newest chunk reflected in `content`; snapshots name the seq they reflect (I4).
    content_seq = models.PositiveBigIntegerField()
    client_id = models.UUIDField(null=True, blank=True)
    # For an assistant message: the user message it answers (a retry answers it again).
    reply_to = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="replies")
    # The message this one follows: None for a first message. Editing a message or regenerating a
    # reply adds a sibling (a version) under the same parent, so a thread is a tree of versions.
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    # Whether the message is on the thread's active path: the versions shown, and the conversation
    # the provider is sent. Children are written after their parents, so the path in seq order is
    # the conversation in order.
    on_path = models.BooleanField(default=True)
    model = models.CharField(max_length=100, blank=True)
    stop_reason = models.CharField(max_length=50, blank=True)
    usage = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    # A reply's parts (text, thinking, tool calls and results, approvals) folded from its log when it
    # ends (`streaming.parts`); empty for a reply of text alone, whose text is `content`.
    parts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    # For type checkers only: the concrete model gets Django's default manager and the
    # column of its `thread` foreign key.
    objects: ClassVar[models.Manager[Self]]
    thread_id: uuid.UUID
    parent_id: uuid.UUID | None

    class Meta:
        abstract = True

    def author_payload(self) -> Person | None:
        """Return who sent a user message, for its payload; the product's model knows its people."""
        return None


def get_thread_model() -> type[AbstractThread]:
    """Return the concrete thread model named by STREAM_THREAD_MODEL."""
    return apps.get_model(settings.STREAM_THREAD_MODEL, require_ready=False)


def get_message_model() -> type[AbstractMessage]:
    """Return the concrete message model named by STREAM_MESSAGE_MODEL."""
    return apps.get_model(settings.STREAM_MESSAGE_MODEL, require_ready=False)


class Chunk(models.Model):
    """Events of a thread's log, numbered by `seq` without gaps (invariant I1).

    A row holds one event, or, once its reply has ended, a *segment*: the consecutive
    `delta` events `seq` … `seq_last` of one message, compacted into one row (see
    `streaming.compaction`). A segment's `text` is its events' texts joined;
    `event_lengths` and `event_offsets_ms` give each event back its own text and time,
    so readers split it into exactly the events that were streamed.
    """

    class Kind(models.TextChoices):
        MESSAGE = "message"
        START = "start"
        DELTA = "delta"
        END = "end"
        # Another version of a message was chosen: the active path below its parent changed.
        SWITCH = "switch"
        # A reply's parts other than its text (thinking, tool calls, tool results, approvals):
        # see `streaming.parts`.
        PART_START = "part_start"
        PART_DELTA = "part_delta"
        PART_END = "part_end"

    id = models.BigAutoField(primary_key=True)
    # Not indexed alone: the (thread, seq) and (thread, seq_last) indexes serve every lookup by thread.
    thread = models.ForeignKey(
        settings.STREAM_THREAD_MODEL, on_delete=models.CASCADE, related_name="chunks", db_index=False
    )
    # The row's first event.
    seq = models.PositiveBigIntegerField()
    # How many consecutive events the row holds: 1, or a segment's count. The database
    # default serves writers that insert single events with SQL of their own.
    span = models.PositiveIntegerField(default=1, db_default=1)
    # The row's last event. Computed by the database, so writers of single events never set it.
    seq_last = models.GeneratedField(
        expression=F("seq") + F("span") - 1, output_field=models.BigIntegerField(), db_persist=True
    )
    message = models.ForeignKey(settings.STREAM_MESSAGE_MODEL, on_delete=models.CASCADE, related_name="chunks")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    text = models.TextField(blank=True)
    # A part event's part, by its place in the reply's parts; its `text` is the part as JSON
    # (`part_start`, `part_end`) or the text it adds (`part_delta`). Null for other events.
    part_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # A segment's boundaries, one entry per event; null for a single event.
    event_lengths = models.JSONField(null=True, blank=True)
    # Each event's time, in ms after the row's created_at (the first event's time).
    event_offsets_ms = models.JSONField(null=True, blank=True)
    # A default rather than auto_now_add, so that a segment keeps its first event's time.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["thread", "seq"]
        constraints = [models.UniqueConstraint(fields=["thread", "seq"], name="chunk_unique_thread_seq")]
        indexes = [
            # Every backlog read: WHERE thread = ? AND seq_last > ? ORDER BY seq_last, which also
            # finds the segment holding the cursor's next event.
            models.Index(fields=["thread", "seq_last"], name="chunk_thread_seq_last"),
        ]

    def __str__(self) -> str:
        if self.span > 1:
            return f"{self.kind} #{self.seq}–{self.seq + self.span - 1}"
        return f"{self.kind} #{self.seq}"

    @property
    def is_segment(self) -> bool:
        return self.span > 1


class Generation(models.Model):
    """The durable job that writes one assistant message (invariant I8)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        # Paused until a person approves or denies a tool call: no worker or lease holds it.
        AWAITING_APPROVAL = "awaiting_approval"
        DONE = "done"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.OneToOneField(settings.STREAM_MESSAGE_MODEL, on_delete=models.CASCADE, related_name="generation")
    thread = models.ForeignKey(settings.STREAM_THREAD_MODEL, on_delete=models.CASCADE, related_name="generations")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.QUEUED)
    worker = models.CharField(max_length=100, blank=True)
    # Fencing token: a new one on every claim, so a worker that lost its lease writes nothing more.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            # Invariant I6: one active generation per thread, enforced by the database too. A reply
            # awaiting approval is still active: a send meanwhile is refused as busy.
            models.UniqueConstraint(
                fields=["thread"],
                condition=models.Q(status__in=["queued", "running", "awaiting_approval"]),
                name="generation_one_active_per_thread",
            )
        ]
        indexes = [
            # The claim query: queued ones in order, and running ones whose lease expired.
            models.Index(
                fields=["status", "lease_expires_at"],
                condition=models.Q(status__in=["queued", "running"]),
                name="generation_claimable",
            )
        ]

    def __str__(self) -> str:
        return f"generation {self.id} ({self.status})"
