from django.conf import settings
from django.db import models

from streaming.models import AbstractMessage, AbstractThread


class Thread(AbstractThread):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    # Set while the owner keeps the thread out of their list; it stays readable and writable.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-updated_at"], name="thread_owner_recent")]

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def __str__(self) -> str:
        return self.title or f"Thread {self.id}"


class Message(AbstractMessage):
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")

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
