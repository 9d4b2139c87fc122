"""Admin for threads and messages: read-only views of what people wrote and what the replies did."""

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Manager,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from streaming.admin import ReadOnlyAdmin, ReadOnlyPermissions, UUIDSearchMixin, compact_time, excerpt
from streaming.errors import Busy, ChatError
from streaming.models import Chunk
from streaming.protocol import Part
from streaming.retention import thread_chunks_purge
from streaming.selectors import logged_reply_parts, reply_check, timeline_page

from .models import Membership, Message, ShareLink, Thread
from .services import reply_retry
from .sessions import person_streams_check, user_deactivate
from .signin import ThrottledAdminAuthenticationForm

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class MessageCount(TypedDict):
        message_count: int

    class ReplyFigures(TypedDict):
        """What MessageAdmin.get_queryset adds to each message."""

        tokens_in: int | None
        tokens_out: int | None
        first_token_at: datetime | None
        ttft: timedelta | None
        total: timedelta | None
        chunk_count: int
        event_count: int


def count_of(queryset: QuerySet | Manager, *, per: str) -> Coalesce:
    """Count `queryset`'s rows whose `per` field is the outer row, as a subquery.

    A subquery runs for the rows of one admin page only, where a JOIN with
    GROUP BY would aggregate every row of a large table first.
    """
    counted = queryset.filter(**{per: OuterRef("pk")}).order_by().values(per).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted), 0)


def sum_of(queryset: QuerySet | Manager, field: str, *, per: str) -> Coalesce:
    """Sum `field` over `queryset`'s rows whose `per` field is the outer row, as a subquery (see count_of)."""
    summed = queryset.filter(**{per: OuterRef("pk")}).order_by().values(per).annotate(n=Sum(field)).values("n")
    return Coalesce(Subquery(summed), 0)


def message_parts(message: Message) -> list[Part]:
    """A reply's parts: stored once it ended, folded from its log while it runs."""
    if message.status == Message.Status.STREAMING:
        return logged_reply_parts(message=message)
    return message.parts


def seconds(duration: timedelta | None) -> str:
    return "—" if duration is None else f"{duration.total_seconds():.2f} s"


PREVIEW_CHARS = 60
THREAD_TITLE_CHARS = 32


class ReplyStreamingFilter(admin.SimpleListFilter):
    title = "reply"
    parameter_name = "reply"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("streaming", "Being written"), ("settled", "None being written")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        streaming = Exists(Message.objects.filter(thread=OuterRef("pk"), status=Message.Status.STREAMING))
        if self.value() == "streaming":
            return queryset.filter(streaming)
        if self.value() == "settled":
            return queryset.filter(~streaming)
        return queryset


class MessageInline(ReadOnlyPermissions, admin.TabularInline):
    model = Message
    fields = readonly_fields = ("seq", "role", "status", "content_excerpt", "model", "created_at", "completed_at")
    ordering = ["seq"]
    show_change_link = True
    extra = 0

    @admin.display(description="content")
    def content_excerpt(self, message: Message) -> str:
        return excerpt(message.content)


class MembershipInline(ReadOnlyPermissions, admin.TabularInline):
    """Whom the owner shared the thread with: read only here, as sharing is the owner's (threads/sharing.py)."""

    model = Membership
    fk_name = "thread"
    fields = readonly_fields = ("user", "role", "added_by", "created_at")
    extra = 0


class ShareLinkInline(ReadOnlyPermissions, admin.TabularInline):
    """The thread's share links: their prefixes and lifetimes, never a token (only its hash is stored)."""

    model = ShareLink
    fields = readonly_fields = ("prefix", "created_by", "created_at", "expires_at", "revoked_at")
    extra = 0


@admin.register(Thread)
class ThreadAdmin(UUIDSearchMixin, ReadOnlyAdmin):
    list_display = ["__str__", "owner", "message_count", "last_activity", "last_seq", "created_at"]
    list_filter = [ReplyStreamingFilter, "updated_at", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["title", "owner__username"]
    ordering = ["-updated_at"]
    fields = readonly_fields = (
        "id",
        "title",
        "owner",
        "created_at",
        "last_activity",
        "last_seq",
        "message_count",
        "chunk_log",
    )
    inlines = [MembershipInline, ShareLinkInline, MessageInline]
    actions = ["purge_chunk_log"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Thread]:
        return super().get_queryset(request).annotate(message_count=count_of(Message.objects, per="thread"))

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, thread: "WithAnnotations[Thread, MessageCount]") -> int:
        return thread.message_count

    @admin.display(description="last activity", ordering="updated_at")
    def last_activity(self, thread: Thread) -> datetime:
        return thread.updated_at

    @admin.display(description="chunk log")
    def chunk_log(self, thread: Thread) -> str:
        log = Chunk.objects.filter(thread=thread).aggregate(count=Count("pk"), first=Min("seq"))
        url = reverse("admin:streaming_chunk_changelist") + f"?thread__id__exact={thread.pk}"
        if not log["count"]:
            return format_html('<a href="{}">empty</a>', url)
        return format_html('<a href="{}">{} chunks, seq {}–{}</a>', url, log["count"], log["first"], thread.last_seq)

    @admin.action(description="Purge the chunk log of the selected threads (unless streaming)", permissions=["operate"])
    def purge_chunk_log(self, request: HttpRequest, queryset: QuerySet[Thread]) -> None:
        deleted, busy = 0, []
        for thread in queryset:
            try:
                deleted += thread_chunks_purge(thread=thread)
            except Busy:
                busy.append(str(thread))
        self.message_user(request, f"Deleted {deleted} chunks; message contents are kept.")
        if busy:
            self.message_user(request, f"Not purged, a reply is being written: {', '.join(busy)}", level="warning")


@admin.register(Message)
class MessageAdmin(UUIDSearchMixin, ReadOnlyAdmin):
    # Narrow enough for a 1920 px screen: the thread's title is cut short, tokens share a column, the
    # stop reason is a filter.
    list_display = [
        "preview",
        "thread_title",
        "role",
        "status",
        "model",
        "tokens",
        "time_to_first_token",
        "duration",
        "tokens_per_second",
        "event_count",
        "error_code",
        "created",
        "timeline_link",
    ]
    list_display_links = ["preview"]
    list_filter = ["status", "role", "model", "stop_reason", "created_at"]
    list_select_related = ["thread"]
    search_fields = ["content"]
    id_search_fields = ("pk", "thread_id")
    ordering = ["-created_at"]
    fields = readonly_fields = (
        "id",
        "thread",
        "role",
        "status",
        "seq",
        "content_seq",
        "reply_to",
        "client_id",
        "model",
        "stop_reason",
        "tokens_in",
        "tokens_out",
        "time_to_first_token",
        "duration",
        "tokens_per_second",
        "event_count",
        "chunk_count",
        "error",
        "created_at",
        "completed_at",
        "content",
    )
    actions = ["retry"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # Every figure comes with the page's one query: the generation by a LEFT JOIN, chunk counts by subquery.
        # The events are the timeline's (streaming.selectors._message_chunks): once the message ended, those up
        # to its content_seq. A `switch` back to it later is a row it owns, but not one of its events.
        timeline_chunks = Chunk.objects.filter(
            Q(seq__lte=OuterRef("content_seq")) | Exact(OuterRef("status"), Message.Status.STREAMING),
            thread_id=OuterRef("thread_id"),
            seq__gte=OuterRef("seq"),
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                tokens_in=F("generation__input_tokens"),
                tokens_out=F("generation__output_tokens"),
                first_token_at=F("generation__first_token_at"),
                ttft=ExpressionWrapper(F("generation__first_token_at") - F("created_at"), output_field=DurationField()),
                total=ExpressionWrapper(F("completed_at") - F("created_at"), output_field=DurationField()),
                chunk_count=count_of(Chunk.objects, per="message"),
                event_count=sum_of(timeline_chunks, "span", per="message"),
            )
        )

    def get_urls(self) -> list[URLPattern]:
        timeline = self.admin_site.admin_view(self.timeline_view)
        return [path("<path:object_id>/timeline/", timeline, name="threads_message_timeline"), *super().get_urls()]

    def timeline_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """Show every chunk of a message with its timing, and the reply re-assembled from its log."""
        message = self.get_object(request, object_id)
        if message is None:
            raise Http404("No such message.")
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        page, rows = timeline_page(message=message, page_number=request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "row_count": Chunk.objects.filter(message=message).count(),
            "title": f"Stream timeline of {message}",
            "message": message,
            "page": page,
            "rows": rows,
            "check": reply_check(message=message),
            # An agent reply's steps: thinking, tool calls, results, approvals (folded from the log while it runs).
            "steps": [(index, part) for index, part in enumerate(message_parts(message)) if part["type"] != "text"],
        }
        return TemplateResponse(request, "admin/threads/message/timeline.html", context)

    @admin.display(description="message")
    def preview(self, message: Message) -> str:
        """The start of the text, enough to tell messages apart; a reply still being written has none yet."""
        return Truncator(" ".join(message.content.split())).chars(PREVIEW_CHARS) or f"({message.status})"

    @admin.display(description="thread", ordering="thread__title")
    def thread_title(self, message: Message) -> str:
        return Truncator(str(message.thread)).chars(THREAD_TITLE_CHARS)

    @admin.display(description="created", ordering="created_at")
    def created(self, message: Message) -> str | None:
        return compact_time(message.created_at)

    @admin.display(description="tokens in → out", ordering="tokens_out")
    def tokens(self, message: "WithAnnotations[Message, ReplyFigures]") -> str:
        if message.tokens_in is None and message.tokens_out is None:
            return "—"
        return f"{message.tokens_in or 0} → {message.tokens_out or 0}"

    @admin.display(description="in", ordering="tokens_in")
    def tokens_in(self, message: "WithAnnotations[Message, ReplyFigures]") -> int | None:
        return message.tokens_in

    @admin.display(description="out", ordering="tokens_out")
    def tokens_out(self, message: "WithAnnotations[Message, ReplyFigures]") -> int | None:
        return message.tokens_out

    @admin.display(description="first token", ordering="ttft")
    def time_to_first_token(self, message: "WithAnnotations[Message, ReplyFigures]") -> str:
        """How long the person waited for the first text, queueing included."""
        return seconds(message.ttft)

    @admin.display(description="duration", ordering="total")
    def duration(self, message: "WithAnnotations[Message, ReplyFigures]") -> str:
        return seconds(message.total)

    @admin.display(description="tokens/s")
    def tokens_per_second(self, message: "WithAnnotations[Message, ReplyFigures]") -> str:
        """Streaming speed: output tokens over the time from the first token to the end."""
        if not (message.tokens_out and message.first_token_at and message.completed_at):
            return "—"
        streaming_s = (message.completed_at - message.first_token_at).total_seconds()
        return f"{message.tokens_out / streaming_s:.1f}" if streaming_s > 0 else "—"

    @admin.display(description="log rows", ordering="chunk_count")
    def chunk_count(self, message: "WithAnnotations[Message, ReplyFigures]") -> int:
        """Rows of the chunk log: a finished reply's deltas are compacted into segment rows."""
        return message.chunk_count

    @admin.display(description="log events", ordering="event_count")
    def event_count(self, message: "WithAnnotations[Message, ReplyFigures]") -> int:
        """Events of the chunk log (the start, each delta, the end): the timeline's count."""
        return message.event_count

    @admin.display(description="error")
    def error_code(self, message: Message) -> str:
        return (message.error or {}).get("code", "")

    @admin.display(description="timeline")
    def timeline_link(self, message: Message) -> str:
        return format_html('<a href="{}">timeline</a>', reverse("admin:threads_message_timeline", args=[message.pk]))

    @admin.action(description="Retry the selected failed or cancelled replies", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        retried, refused = 0, []
        for reply in queryset.select_related("thread", "reply_to"):
            try:
                reply_retry(thread=reply.thread, reply=reply)
            except ChatError as error:
                refused.append(f"{reply.pk}: {error.detail}")
                continue
            retried += 1
        self.message_user(request, f"Queued {retried} new repl{'y' if retried == 1 else 'ies'}.")
        if refused:
            self.message_user(request, "Not retried: " + "; ".join(refused), level="warning")


class StreamsEndingPasswordChangeForm(AdminPasswordChangeForm):
    """The admin's password change, which ends the person's open streams at once: their sessions hold the old hash."""

    def save(self, commit=True):
        user = super().save(commit)
        if commit:
            person_streams_check(user_id=user.pk)
        return user


class PersonAdmin(UserAdmin):
    """Django's user admin, where deactivating, changing a password and deleting end the person's streams at once.

    Each asks every stream the person holds to check its right now, rather than at its
    next periodic check (STREAM_ACCESS_RECHECK_SECONDS).
    """

    actions = ["deactivate"]
    change_password_form = StreamsEndingPasswordChangeForm

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            person_streams_check(user_id=obj.pk)  # "active" unticked: as the deactivate action does

    def delete_model(self, request: HttpRequest, obj) -> None:
        person_streams_check(user_id=obj.pk)  # before: it names the person's API tokens, which go with them
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for person_id in queryset.values_list("pk", flat=True):
            person_streams_check(user_id=person_id)
        super().delete_queryset(request, queryset)

    @admin.action(description="Deactivate the selected people and end their open streams", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        for person in queryset:
            user_deactivate(user=person)
        self.message_user(request, f"Deactivated {len(queryset)}: their WebSockets and event streams end now.")


admin.site.login_form = ThrottledAdminAuthenticationForm  # the admin's sign-in is throttled like the site's
admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), PersonAdmin)
