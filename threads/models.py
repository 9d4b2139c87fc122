import uuid

from django.conf import settings
from django.db import models


class Thread(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Allocation counter for the chunk log: the seq of the newest committed chunk.
    last_seq = models.PositiveBigIntegerField(default=0)
    # Set while the owner keeps the thread out of their list; it stays readable and writable.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-updated_at"], name="thread_owner_recent")]

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def __str__(self) -> str:
        return self.title or f"Thread {self.id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        CANCELLED = "cancelled"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
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
    model = models.CharField(max_length=100, blank=True)
    stop_reason = models.CharField(max_length=50, blank=True)
    usage = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["thread", "seq"], name="message_unique_thread_seq"),
            # Invariant I7: a repeated send with the same client_id finds the first message.
            models.UniqueConstraint(
                fields=["thread", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="message_unique_thread_client_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.id}"


class ApiToken(models.Model):
    """A bearer token a person made for a non-browser client; only its sha256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # sha256 hex of the secret: a leaked database does not leak usable tokens.
    hashed_token = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
