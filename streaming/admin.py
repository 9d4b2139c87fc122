"""Admin for the streams: the chunk log and the generation jobs, read-only.

Nobody edits the log by hand: every admin here shows rows and never changes them.
The few writes an operator needs (cancel, retry, purge) are actions that call the
same services the app uses, allowed to staff holding the model's "change" permission.
"""

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict
from uuid import UUID

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db import models
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from .compaction import chunk_events
from .errors import NotRunning
from .models import Chunk, Generation, get_message_model
from .services.endings import ACTIVE_STATUSES, generation_cancel

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class Stuck(TypedDict):
        stuck: bool


EXCERPT_CHARS = 80


def admin_link(model: type[models.Model], pk: object, text: object) -> str:
    """Return a link to the admin change page of `model` row `pk`."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)


def excerpt(text: str) -> str:
    return Truncator(text).chars(EXCERPT_CHARS)


def short_id(pk: object) -> str:
    """Return a UUID's first eight digits, with the whole id on hover: enough to tell rows apart in a list."""
    return format_html('<span title="{}">{}…</span>', pk, str(pk)[:8])


def compact_time(moment: datetime | None) -> str | None:
    """Return a time of today as 16:37:05, an older one as 3 Dec 16:37, the full date and time on hover."""
    if moment is None:
        return None
    local = timezone.localtime(moment)
    shown = f"{local:%H:%M:%S}" if local.date() == timezone.localdate() else f"{local.day} {local:%b %Y %H:%M}"
    exact = f"{local.day} {local:%B %Y, %H:%M:%S %Z}"
    return format_html('<time datetime="{}" title="{}">{}</time>', local.isoformat(), exact, shown)


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


class UUIDSearchMixin(admin.ModelAdmin):
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
    # Ids shortened and times compact, so the list fits a 1920 px screen beside the admin's menus.
    list_display = [
        "generation",
        "message_link",
        "thread",
        "status",
        "stuck",
        "worker",
        "lease_until",
        "attempts",
        "cancel_asked",
        "created",
    ]
    list_display_links = ["generation"]
    list_filter = [LeaseFilter, "status", "cancel_requested", "created_at"]
    list_select_related = ["thread"]
    search_fields = ["worker"]
    id_search_fields = ("pk", "message_id", "thread_id")
    ordering = ["-created_at"]
    actions = ["cancel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Generation]:
        stuck = Q(status=Generation.Status.RUNNING, lease_expires_at__lt=Now())
        return super().get_queryset(request).annotate(stuck=ExpressionWrapper(stuck, output_field=BooleanField()))

    @admin.display(description="stuck", ordering="stuck", empty_value="")
    def stuck(self, generation: "WithAnnotations[Generation, Stuck]") -> str | None:
        """Flag a running generation whose lease expired; say nothing of the healthy ones."""
        if not generation.stuck:
            return None
        return format_html('<strong style="color: var(--error-fg)">⚠ {}</strong>', "lease expired")

    @admin.display(description="id", ordering="pk")
    def generation(self, generation: Generation) -> str:
        return short_id(generation.pk)

    @admin.display(description="message")
    def message_link(self, generation: Generation) -> str:
        return admin_link(get_message_model(), generation.message_id, short_id(generation.message_id))

    @admin.display(description="lease until", ordering="lease_expires_at")
    def lease_until(self, generation: Generation) -> str | None:
        """When the worker's lease runs out; only a running generation's lease means anything."""
        if generation.status != Generation.Status.RUNNING:
            return None
        return compact_time(generation.lease_expires_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, generation: Generation) -> str | None:
        return compact_time(generation.created_at)

    @admin.display(description="cancel", ordering="cancel_requested", empty_value="")
    def cancel_asked(self, generation: Generation) -> str | None:
        """Say "asked" once a stop was asked for; a red cross on every other row would read as an error."""
        return "asked" if generation.cancel_requested else None

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
