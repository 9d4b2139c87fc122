"""Server-rendered pages: accounts, the thread list and the thread itself.

Starting, renaming, retrying, archiving and deleting are plain form posts that
redirect back, so they work without JavaScript; the page script posts the same
forms with `Accept: application/json` and gets JSON instead of a redirect.
"""

import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from streaming.errors import BadRequest, ChatError, NotFound
from streaming.events import message_payload, message_payloads, snapshot_payload
from streaming.selectors import message_page, thread_snapshot

from .access import REFUSALS, Action, ThreadAccess, remember_link, request_link_ids, thread_access
from .api import api_view, request_thread
from .demo import DEMO_PASSWORD, DEMO_USERNAME
from .errors import Forbidden, error_response
from .forms import ThreadTitleForm
from .http import AuthenticatedHttpRequest
from .inputs import parse_client_id
from .models import Message, Thread, ThreadRole
from .selectors import message_get_in_thread, thread_activity_for_user, thread_list_for_sidebar
from .services import (
    reply_retry,
    thread_archive,
    thread_delete,
    thread_rename,
    thread_start,
    thread_unarchive,
    too_long_detail,
)
from .sharing import link_open
from .signin import ThrottledAuthenticationForm
from .signup import InviteSpent, SignUpForm, signup_mode

# The thread page renders the newest messages; "earlier messages" pages in this many more at a time.
THREAD_PAGE_MESSAGES = 50
THREAD_LIST_SIZE = 100
SIDEBAR_SIZE = 200
SEARCH_MAX_CHARS = 200
# Stands for the message id in the URLs of the message <template>; the page script swaps it in.
MESSAGE_ID_PLACEHOLDER = "MESSAGE_ID"


def wants_json(request: HttpRequest) -> bool:
    """Return whether the page script (not a plain form post) is asking."""
    return "application/json" in request.headers.get("Accept", "")


def page_access(request: HttpRequest, thread_id: str) -> ThreadAccess:
    """Return the visitor's access to a thread (threads/access.py), or raise Http404 without any (I11)."""
    try:
        return thread_access(user=request.user, thread_id=thread_id, link_ids=request_link_ids(request))
    except NotFound:
        raise Http404("No such thread.") from None


def page_thread(request: HttpRequest, thread_id: str, action: Action) -> Thread:
    """Return the thread if the visitor may do `action`: Http404 without access, PermissionDenied without the right."""
    access = page_access(request, thread_id)
    if not access.can(action):
        raise PermissionDenied(REFUSALS[action])
    return access.thread


def search_query(request: HttpRequest) -> str:
    """Return the `?q=` searched for, trimmed; NUL, which no database text can hold, is dropped."""
    return request.GET.get("q", "").replace("\x00", "").strip()[:SEARCH_MAX_CHARS]


def safe_next(request: HttpRequest) -> str:
    """Return the local page named by `next` (posted or in the query), or "" for none or a foreign one."""
    next_url = request.POST.get("next") or request.GET.get("next", "")
    safe = url_has_allowed_host_and_scheme(next_url, {request.get_host()}, require_https=request.is_secure())
    return next_url if safe else ""


def refused(request: HttpRequest, error: ChatError, *, redirect_to: str) -> HttpResponse:
    """Answer a refused page action: the error as JSON to the page script, else a notice on the page it goes back to."""
    if wants_json(request):
        return error_response(error)
    messages.error(request, error.detail)
    return redirect(redirect_to)


class SignInView(LoginView):
    redirect_authenticated_user = True
    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        retry_after = getattr(form, "retry_after", None)
        if retry_after is not None:  # throttled: say so to programs too
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response

    def get_context_data(self, **kwargs) -> dict:
        context = super().get_context_data(**kwargs)
        context["signup_open"] = signup_mode() != "closed"
        # A newcomer on `make run` signs in with the demo user: say so, in debug only.
        if settings.DEBUG and get_user_model().objects.filter(username=DEMO_USERNAME).exists():
            context["demo"] = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
        return context


@require_http_methods(["GET", "POST"])
def sign_up(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("thread-list")
    if signup_mode() == "closed":
        return render(request, "registration/signup_closed.html", status=403)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = form.save()
        except InviteSpent:
            form.add_error("invite", "This invite code is unknown or already used.")
        else:
            login(request, user)
            return redirect(safe_next(request) or "thread-list")
    next_url = request.POST.get("next") or request.GET.get("next", "")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


@login_required
@require_GET
def thread_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List the person's threads, newest activity first; `?q=` searches titles and message text."""
    query = search_query(request)
    threads = thread_activity_for_user(user=request.user, limit=THREAD_LIST_SIZE, query=query)
    return render(request, "threads/thread_list.html", {"threads": threads, "query": query, "archived": False})


@login_required
@require_GET
def thread_archived(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List the person's archived threads, newest activity first."""
    threads = thread_activity_for_user(user=request.user, limit=THREAD_LIST_SIZE, archived=True)
    return render(request, "threads/thread_list.html", {"threads": threads, "query": "", "archived": True})


@api_view("GET")
def thread_activity(request: AuthenticatedHttpRequest) -> JsonResponse:
    """Answer the thread list page's poll: titles, last activity and whether a reply is being written."""
    query = search_query(request)
    threads = thread_activity_for_user(user=request.user, limit=THREAD_LIST_SIZE, query=query)
    listed = [
        {
            "id": str(thread.id),
            "title": thread.title,
            "url": reverse("thread-detail", args=[thread.id]),
            "updated_at": thread.updated_at.isoformat(),
            "replying": thread.replying,
            "shared": thread.shared,
        }
        for thread in threads
    ]
    return JsonResponse({"threads": listed})


@api_view("GET")
def thread_sidebar(request: AuthenticatedHttpRequest) -> JsonResponse:
    """Return the sidebar's thread list as HTML: `?q=` searches, `?current=` marks the open thread."""
    query = search_query(request)
    context = {
        "groups": thread_list_for_sidebar(user=request.user, limit=SIDEBAR_SIZE, query=query),
        "current_id": request.GET.get("current", ""),
        "query": query,
    }
    return JsonResponse({"html": render_to_string("threads/_sidebar_groups.html", context, request)})


def thread_page_context(
    request: HttpRequest, access: ThreadAccess, snapshot: Mapping[str, Any], *, draft: bool
) -> dict:
    """Return what the thread page (a saved thread, or a draft not saved until its first message) renders."""
    thread = access.thread
    return {
        "thread": thread,
        "access": access,
        "can_write": access.can(Action.WRITE),
        "is_owner": access.is_owner,
        "public_links": settings.CHAT_PUBLIC_LINKS,
        "draft": draft,
        "snapshot": snapshot,
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "too_long_detail": too_long_detail(),
        "groups": thread_list_for_sidebar(user=request.user, limit=SIDEBAR_SIZE)
        if request.user.is_authenticated
        else [],
        "current_id": "" if draft else str(thread.id),
        # Rendered into <template>s that the page script clones for messages that arrive live.
        "message_templates": [
            {"id": MESSAGE_ID_PLACEHOLDER, "role": role, "status": Message.Status.COMPLETE, "content": ""}
            for role in Message.Role.values
        ],
    }


@login_required
@require_GET
def thread_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Open a new chat: a thread page under a fresh id, saved only when its first message is sent."""
    draft = ThreadAccess(thread=Thread(id=uuid.uuid4(), owner=request.user), role=ThreadRole.OWNER)
    context = thread_page_context(request, draft, {"seq": 0, "messages": []}, draft=True)
    return render(request, "threads/thread_detail.html", context)


@require_GET
def thread_detail(request: HttpRequest, thread_id: str) -> HttpResponse:
    """Show a thread to whoever may read it: its owner, its members, a visitor holding a share link."""
    if not request.user.is_authenticated and not request_link_ids(request):
        return redirect_to_login(request.get_full_path())
    access = page_access(request, thread_id)
    page = thread_snapshot(thread=access.thread, limit=THREAD_PAGE_MESSAGES)
    snapshot = snapshot_payload(access.thread, page)
    context = thread_page_context(request, access, snapshot, draft=False) | {"has_earlier": page.next is not None}
    return render(request, "threads/thread_detail.html", context)


@require_GET
def share_link_open(request: HttpRequest, token: str) -> HttpResponse:
    """Open a share link: keep it in the browser session, then show its thread read-only, with its live replies."""
    try:
        link = link_open(token=token)
    except NotFound:
        raise Http404("This link is unknown, revoked or expired.") from None
    if not request.user.is_authenticated and not settings.CHAT_PUBLIC_LINKS:
        return redirect_to_login(request.get_full_path())
    remember_link(request, link.pk)
    return redirect("thread-detail", thread_id=link.thread_id)


@login_required
@require_POST
def thread_start_view(request: AuthenticatedHttpRequest, thread_id: str) -> HttpResponse:
    """Save a new chat with its first message; the page script then follows the reply like any other."""
    try:
        new_id = uuid.UUID(thread_id)
    except ValueError:
        raise Http404("No such thread.") from None
    try:
        posted = thread_start(
            person=request.user,
            thread_id=new_id,
            content=request.POST.get("content", ""),
            client_id=parse_client_id(request.POST.get("client_id") or None),
            link_ids=request_link_ids(request),
        )
    except (NotFound, Forbidden) as error:  # a thread the person cannot write to: answered as the API answers it
        return error_response(error)
    except ChatError as error:
        return refused(request, error, redirect_to=reverse("thread-new"))
    if not wants_json(request):
        return redirect("thread-detail", thread_id=thread_id)
    thread = posted.message.thread
    return JsonResponse(
        {
            "thread": {"id": str(thread.id), "title": thread.title, "url": reverse("thread-detail", args=[thread.id])},
            "message": message_payload(posted.message),
            "reply": message_payload(posted.reply),
            "seq": posted.reply.seq,
        },
        status=202,
    )


@login_required
@require_POST
def thread_archive_view(request: AuthenticatedHttpRequest, thread_id: str) -> HttpResponse:
    """Archive the thread (or, with `archived=0`, bring it back), then go back where the person came from."""
    thread = page_thread(request, thread_id, Action.MANAGE)
    if request.POST.get("archived", "1") == "0":
        thread_unarchive(thread=thread)
    else:
        thread_archive(thread=thread)
    if wants_json(request):
        return JsonResponse({"id": str(thread.id), "archived": thread.is_archived})
    return redirect(safe_next(request) or "thread-list")


@login_required
@require_http_methods(["GET", "POST"])
def thread_delete_view(request: AuthenticatedHttpRequest, thread_id: str) -> HttpResponse:
    """Ask before deleting (GET, the page without JavaScript), then delete the thread for good (POST)."""
    thread = page_thread(request, thread_id, Action.MANAGE)
    if request.method == "GET":
        return render(request, "threads/thread_delete.html", {"thread": thread, "next": safe_next(request)})
    thread_delete(thread=thread)
    if wants_json(request):
        return JsonResponse({"id": thread_id, "deleted": True})
    messages.success(request, "Chat deleted.")
    return redirect(safe_next(request) or "thread-list")


@api_view("GET", visitors=True)
def thread_earlier(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    """Return the messages before `?before=<message id>` (the newest ones when empty) as HTML, like the page's own.

    For everyone the page is for: a signed-out reader of a public share link pages in earlier messages too.
    """
    thread = request_thread(request, thread_id, Action.READ)
    before_id = request.GET.get("before", "")
    before = message_get_in_thread(thread=thread, message_id=before_id).seq if before_id else None
    page = message_page(thread=thread, before=before, limit=THREAD_PAGE_MESSAGES)
    context = {"thread": thread, "page_messages": message_payloads(page)}
    html = render_to_string("threads/_message_list.html", context, request)
    return JsonResponse({"html": html, "has_more": page.next is not None})


@login_required
@require_POST
def thread_rename_view(request: AuthenticatedHttpRequest, thread_id: str) -> HttpResponse:
    thread = page_thread(request, thread_id, Action.MANAGE)
    form = ThreadTitleForm(request.POST, instance=thread)
    if form.is_valid():
        thread_rename(thread=thread, title=form.cleaned_data["title"])
        if wants_json(request):
            return JsonResponse({"title": thread.title})
    elif wants_json(request):
        return error_response(BadRequest(" ".join(str(error) for error in form.errors["title"])))
    else:
        messages.error(request, " ".join(str(error) for error in form.errors["title"]))
    return redirect("thread-detail", thread_id=thread.id)


@login_required
@require_POST
def reply_retry_view(request: AuthenticatedHttpRequest, thread_id: str, message_id: str) -> HttpResponse:
    """Answer the user message of a failed or cancelled reply again; the new reply streams like any other."""
    thread = page_thread(request, thread_id, Action.WRITE)
    try:
        reply = message_get_in_thread(thread=thread, message_id=message_id)
        retry = reply_retry(thread=thread, reply=reply, person=request.user)
    except ChatError as error:
        return refused(request, error, redirect_to=reverse("thread-detail", args=[thread.id]))
    if wants_json(request):
        return JsonResponse({"reply": message_payload(retry)}, status=202)
    return redirect("thread-detail", thread_id=thread.id)
