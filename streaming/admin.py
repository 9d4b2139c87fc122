"""Admin for the streams: the chunk log and the generation jobs, read-only.

Nobody edits the log by hand: every admin here shows rows and never changes them.
The few writes an operator needs (cancel, retry, purge) are actions that call the
same services the app uses, allowed to staff holding the model's "change" permission.
"""
from datetime import timedelta
from uuid import UUID

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from .compaction import chunk_events
from .errors import NotRunning
from .models import Chunk, Generation, get_message_model
from .services.endings import ACTIVE_STATUSES, generation_cancel

EXCERPT_CHARS = 80


def admin_link(model: type, pk: object, text: object) -> str:
    """Return a link to the admin change page of `model` row `pk`."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)


def excerpt(text: str) -> str:
    return Truncator(text).chars(EXCERPT_CHARS)


class ReadOnlyPermissions:
    """Never add, change or delete a row through the admin: the log is written only by the services."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Show rows, never add, change or delete them; actions need the "operate" permission."""

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
    """The log's rows: one event each, or a finished reply's segment of deltas (shown split on its page)."""

    list_display = ["seq", "seq_last", "kind", "thread", "message_link", "text_excerpt", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["thread"]
    list_per_page = 200
    # Counting every chunk twice per page (filtered and in all) is the slow part of a big log.
    show_full_result_count = False
    fields = ["thread", "message", "kind", "seq", "seq_last", "span", "created_at", "text", "events"]
    readonly_fields = ["seq_last", "events"]

    @admin.display(description="message")
    def message_link(self, chunk: Chunk) -> str:
        return admin_link(get_message_model(), chunk.message_id, chunk.message_id)

    @admin.display(description="text")
    def text_excerpt(self, chunk: Chunk) -> str:
        return excerpt(chunk.text)

    @admin.display(description="events")
    def events(self, chunk: Chunk) -> str:
        """List the events the row holds, each with its seq, time after the row's and text."""
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>+{} ms</td><td>{}</td></tr>",
            (
                (event.seq, round((event.created_at - chunk.created_at) / timedelta(milliseconds=1)), event.text)
                for event in chunk_events(chunk)
            ),
        )
        return format_html("<table><tr><th>seq</th><th>time</th><th>text</th></tr>{}</table>", rows)


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
        return admin_link(get_message_model(), generation.message_id, generation.message_id)

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
