from django.conf import settings
from django.db import models

from streaming.models import AbstractMessage, AbstractThread
from streaming.protocol import Person


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
    # Who sent a user message, and their name as it was then: a replayed event must be byte for byte
    # the live one, so the name is not looked up again. Null for replies, and once the sender is deleted.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    author_name = models.CharField(max_length=150, blank=True)

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
        indexes = [
            # The active path of a thread in order: the conversation sent to the provider.
            models.Index(fields=["thread", "seq"], condition=models.Q(on_path=True), name="message_thread_path"),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.id}"

    def author_payload(self) -> Person | None:
        if self.author_id is None:
            return None
        return Person(id=self.author_id, name=self.author_name)


class ThreadRole(models.TextChoices):
    """What a person may do with a thread: read it (viewer), also write to it (participant), or everything (owner)."""

    OWNER = "owner"
    PARTICIPANT = "participant"
    VIEWER = "viewer"


class Membership(models.Model):
    """A person the owner shared a thread with, as a viewer or a participant."""

    ROLES = [(role.value, role.label) for role in (ThreadRole.PARTICIPANT, ThreadRole.VIEWER)]

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=ROLES)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["thread", "user"], name="membership_unique_thread_user")]
        indexes = [models.Index(fields=["user", "thread"], name="membership_user_thread")]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} of {self.thread_id}"


class ShareLink(models.Model):
    """A read-only link to a thread; only the sha256 of its token is stored, and `prefix` to tell links apart."""

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="share_links")
    hashed_token = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"link {self.prefix}… to {self.thread_id}"


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


class UsageStamp(models.Model):
    """One counted action of a person, for their rate limits: a ledger apart from what the action made.

    Counting sends by their messages let a person reset the limit by deleting a thread;
    stamps belong to the person, not to a thread, so only the person's deletion removes them.
    """

    class Action(models.TextChoices):
        # A send, a retry or a regenerate: each one a provider request.
        REPLY = "reply"
        THREAD = "thread"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_stamps")
    action = models.CharField(max_length=16, choices=Action.choices)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "action", "-created_at"], name="usage_user_action_recent")]

    def __str__(self) -> str:
        return f"{self.action} by {self.user_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class SignInFailure(models.Model):
    """A wrong password given for a username from an address: what sign-in throttling counts."""

    # As typed, lowercased: an unknown username is counted like a real one, so the answer tells nothing.
    username = models.CharField(max_length=150)
    address = models.GenericIPAddressField()
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["address", "-created_at"], name="signin_failure_address"),
            models.Index(fields=["username", "address", "-created_at"], name="signin_failure_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.username} from {self.address} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class Invite(models.Model):
    """A single-use code that lets one person sign up while CHAT_SIGNUP is `invite`; only its sha256 is stored."""

    hashed_code = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="invites_made"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    used_by = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="invite_used"
    )
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invite {self.pk} ({'used' if self.used_at else 'unused'})"
