"""Admin for the streams: the chunk log and the generation jobs, read-only, and a reply's timeline.

Nobody edits the log by hand: every admin here shows rows and never changes them.
The few writes an operator needs (cancel, retry, purge) are actions that call the
same services the app uses, allowed to staff holding the model's "change" permission.
"""
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet, Window
from django.db.models.functions import Lag, Now
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from threads.errors import NotRunning
from threads.models import Message
from threads.services import ACTIVE_STATUSES, generation_cancel

from .models import Chunk, Generation

# Chunks per timeline page: a reply of any length renders in bounded time.
TIMELINE_PAGE_SIZE = 500
EXCERPT_CHARS = 80


def admin_link(model: type, pk: object, text: object) -> str:
    """Return a link to the admin change page of `model` row `pk`."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)


def excerpt(text: str) -> str:
    return Truncator(text).chars(EXCERPT_CHARS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Show rows, never add, change or delete them; actions need the "operate" permission."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Let staff who may change this model run its service actions, though no form changes a row."""
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")


class UUIDSearchMixin:
    """Find rows by a pasted UUID through indexed equality on `id_search_fields`.

    The admin's own `=id` search compares the id as text, which reads every row.
    """

    id_search_fields: tuple[str, ...] = ("pk",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            uuid = UUID(search_term.strip())
        except ValueError:
            return found, may_have_duplicates
        by_id = Q.create([(field, uuid) for field in self.id_search_fields], connector=Q.OR)
        return found | queryset.filter(by_id), may_have_duplicates


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyAdmin):
    list_display = ["seq", "kind", "thread", "message_link", "text_excerpt", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["thread"]
    list_per_page = 200
    # Counting every chunk twice per page (filtered and in all) is the slow part of a big log.
    show_full_result_count = False

    @admin.display(description="message")
    def message_link(self, chunk: Chunk) -> str:
        return admin_link(Message, chunk.message_id, chunk.message_id)

    @admin.display(description="text")
    def text_excerpt(self, chunk: Chunk) -> str:
        return excerpt(chunk.text)


class LeaseFilter(admin.SimpleListFilter):
    """Find stuck generations: running, but no worker renewed the lease in time."""

    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        stuck = Generation.objects.filter(status=Generation.Status.RUNNING, lease_expires_at__lt=Now()).count()
        return [("stuck", f"Stuck: lease expired ({stuck})"), ("held", "Held by a worker")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        running = queryset.filter(status=Generation.Status.RUNNING)
        if self.value() == "stuck":
            return running.filter(lease_expires_at__lt=Now())
        if self.value() == "held":
            return running.filter(lease_expires_at__gte=Now())
        return queryset


@admin.register(Generation)
class GenerationAdmin(UUIDSearchMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "message_link",
        "thread",
        "status",
        "stuck",
        "worker",
        "lease_expires_at",
        "attempts",
        "cancel_requested",
        "created_at",
    ]
    list_filter = [LeaseFilter, "status", "cancel_requested", "created_at"]
    list_select_related = ["thread"]
    search_fields = ["worker"]
    id_search_fields = ("pk", "message_id", "thread_id")
    ordering = ["-created_at"]
    actions = ["cancel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Generation]:
        stuck = Q(status=Generation.Status.RUNNING, lease_expires_at__lt=Now())
        return super().get_queryset(request).annotate(stuck=ExpressionWrapper(stuck, output_field=BooleanField()))

    @admin.display(description="stuck", boolean=True, ordering="stuck")
    def stuck(self, generation: Generation) -> bool:
        return generation.stuck

    @admin.display(description="message")
    def message_link(self, generation: Generation) -> str:
        return admin_link(Message, generation.message_id, generation.message_id)

    @admin.action(description="Cancel the selected generations", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Generation]) -> None:
        selected = list(queryset.select_related("thread"))
        cancelled = 0
        for generation in selected:
            if generation.status not in ACTIVE_STATUSES:
                continue
            try:
                generation_cancel(thread=generation.thread)
            except NotRunning:  # it ended meanwhile
                continue
            cancelled += 1
        ended = f"; {len(selected) - cancelled} had already ended" if cancelled < len(selected) else ""
        self.message_user(request, f"Asked {cancelled} generation(s) to stop{ended}.")


@dataclass(frozen=True)
class TimelineRow:
    chunk: Chunk
    since_start_ms: float
    # Time since the message's previous chunk; None for its first.
    gap_ms: float | None
    # The gap as a share of the longest gap on the page, for a bar.
    bar_percent: int


@dataclass(frozen=True)
class ReplyCheck:
    """A reply re-assembled from its delta chunks, compared with its stored content."""

    reassembled: str
    delta_count: int
    # The first character where content and log differ, None when they agree.
    mismatch_at: int | None


def ms(duration: timedelta) -> float:
    return duration.total_seconds() * 1000


def _message_chunks(message: Message) -> QuerySet[Chunk]:
    # A message's chunks lie between its first seq and content_seq: the bounds let the (thread, seq) index serve.
    return Chunk.objects.filter(
        thread_id=message.thread_id, seq__gte=message.seq, seq__lte=message.content_seq, message=message
    ).order_by("seq")


def timeline_page(*, message: Message, page_number: str | None) -> tuple[Page, list[TimelineRow]]:
    """Return one page of the message's chunks, each with its time since the start and gap since the last one."""
    chunks = _message_chunks(message).annotate(previous_at=Window(Lag("created_at"), order_by=F("seq").asc()))
    page = Paginator(chunks, TIMELINE_PAGE_SIZE).get_page(page_number)
    gaps = [ms(chunk.created_at - chunk.previous_at) if chunk.previous_at else None for chunk in page]
    longest = max((gap for gap in gaps if gap), default=0.0)
    rows = [
        TimelineRow(
            chunk=chunk,
            since_start_ms=ms(chunk.created_at - message.created_at),
            gap_ms=gap,
            bar_percent=round(100 * gap / longest) if gap and longest else 0,
        )
        for chunk, gap in zip(page, gaps)
    ]
    return page, rows


def reply_check(*, message: Message) -> ReplyCheck | None:
    """Re-assemble an assistant reply from its delta chunks; None when the log cannot tell (a user message, pruned)."""
    if message.role != Message.Role.ASSISTANT:
        return None
    kinds_and_texts = list(
        _message_chunks(message).filter(kind__in=[Chunk.Kind.START, Chunk.Kind.DELTA]).values_list("kind", "text")
    )
    if not kinds_and_texts or kinds_and_texts[0][0] != Chunk.Kind.START:
        return None  # retention took the start of the reply: what is left is not all of it
    reassembled = "".join(text for kind, text in kinds_and_texts if kind == Chunk.Kind.DELTA)
    mismatch_at = None
    if reassembled != message.content:
        pairs = zip(reassembled, message.content)
        mismatch_at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(reassembled), len(message.content)))
    return ReplyCheck(reassembled=reassembled, delta_count=len(kinds_and_texts) - 1, mismatch_at=mismatch_at)
