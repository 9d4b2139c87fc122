import uuid

from django.db import models

from threads.models import Message, Thread


class Chunk(models.Model):
    """One event of a thread's log, numbered by `seq` without gaps (invariant I1)."""

    class Kind(models.TextChoices):
        MESSAGE = "message"
        START = "start"
        DELTA = "delta"
        END = "end"

    id = models.BigAutoField(primary_key=True)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveBigIntegerField()
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="chunks")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["thread", "seq"]
        # The unique index also serves every backlog read: WHERE thread = ? AND seq > ? ORDER BY seq.
        constraints = [models.UniqueConstraint(fields=["thread", "seq"], name="chunk_unique_thread_seq")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.seq}"


class Generation(models.Model):
    """The durable job that writes one assistant message (invariant I8)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="generation")
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="generations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
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
            # Invariant I6: one active generation per thread, enforced by the database too.
            models.UniqueConstraint(
                fields=["thread"],
                condition=models.Q(status__in=["queued", "running"]),
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
