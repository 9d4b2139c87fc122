"""The JSON API of DESIGN.md §5: parse, call a service or selector, answer.

Callers authenticate with the session cookie (and the X-CSRFToken header on writes) or
with `Authorization: Bearer <token>` (threads/tokens/). Every view here is sync; the
streaming ones (streaming/sse.py, streaming/aisdk.py) return an async body that the
ASGI handler runs on the event loop after the view has returned.
"""

import binascii
import functools
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as default_csrf_failure
from django.views.decorators.http import require_GET

from streaming.cursors import parse_digits
from streaming.errors import BadRequest, ChatError, TooLong
from streaming.events import message_page_payload, message_payload, snapshot_payload
from streaming.selectors import message_page, thread_snapshot
from streaming.services.endings import generation_cancel

from .access import Action, request_link_ids, thread_for
from .errors import Forbidden, MethodNotAllowed, Unauthenticated, error_response
from .http import AuthenticatedHttpRequest
from .inputs import parse_approval, parse_client_id, parse_json_object
from .models import Thread
from .openapi import openapi_document
from .selectors import thread_page
from .services import message_post, thread_create_for_self, thread_delete, thread_rename, tool_call_approve

# Page sizes when `limit` is not given; API_MAX_PAGE_SIZE bounds what it may ask for.
THREADS_PAGE_SIZE = 50
MESSAGES_PAGE_SIZE = 50
# The largest integer a database column holds: a bigger query value could not even be compared.
LARGEST_INTEGER = 2**63 - 1


def no_content() -> HttpResponse:
    """Answer 204 with no body, and so no Content-Type either."""
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


def api_view(*methods: str, visitors: bool = False) -> Callable:
    """Answer JSON errors for anonymous callers, wrong methods and ChatErrors.

    With `visitors`, a signed-out caller who opened share links is let through to the view's own
    access check: a page's helper that a link's reader uses as the page does.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise MethodNotAllowed(methods)
                if not request.user.is_authenticated and not (visitors and request_link_ids(request)):
                    raise Unauthenticated("Sign in first.")
                return view(request, *args, **kwargs)
            except ChatError as error:
                return error_response(error)

        return wrapper

    return decorator


def json_body(request: HttpRequest) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise TooLong(f"The body may be at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.") from None
    return parse_json_object(raw, what="body") if raw else {}


def query_int(
    request: HttpRequest, name: str, *, default: int | None, minimum: int, maximum: int = LARGEST_INTEGER
) -> int | None:
    """Return an integer query parameter within bounds, `default` when absent."""
    value = request.GET.get(name)
    if value is None:
        return default
    number = parse_digits(value)
    if number is None or not minimum <= number <= maximum:
        raise BadRequest(f"{name} must be an integer from {minimum} to {maximum}.")
    return number


def page_limit(request: HttpRequest, *, default: int) -> int:
    """Return the page size a request asks for with `limit`, at most API_MAX_PAGE_SIZE."""
    largest = settings.API_MAX_PAGE_SIZE
    limit = query_int(request, "limit", default=min(default, largest), minimum=1, maximum=largest)
    assert limit is not None, "a default is given"
    return limit


def request_thread(request: AuthenticatedHttpRequest, thread_id: str, action: Action) -> Thread:
    """Return the thread if the request's person may do `action` with it (threads/access.py)."""
    return thread_for(user=request.user, thread_id=thread_id, action=action, link_ids=request_link_ids(request))


def thread_summary(thread: Thread) -> dict:
    return {
        "id": str(thread.id),
        "title": thread.title,
        "created_at": thread.created_at.isoformat(),
        "updated_at": thread.updated_at.isoformat(),
        # Listed threads carry it annotated; any other summary is of the asker's own thread.
        "shared": getattr(thread, "shared", False),
    }


def encode_thread_cursor(thread: Thread) -> str:
    return urlsafe_b64encode(f"{thread.updated_at.isoformat()}|{thread.id}".encode()).decode().rstrip("=")


def decode_thread_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Return the (updated_at, id) position a thread-list cursor names."""
    try:
        stamp, _, thread_id = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        updated_at = datetime.fromisoformat(stamp)
        # Made UTC here, as the query would: a time at the edge of the range overflows doing it.
        position = (updated_at.astimezone(UTC), UUID(thread_id)) if updated_at.tzinfo else None
    except (ValueError, OverflowError, binascii.Error):
        position = None
    if position is None:
        raise BadRequest("cursor is malformed: pass the `next` of the previous page.")
    return position


@api_view("GET", "POST")
def threads(request: AuthenticatedHttpRequest) -> JsonResponse:
    if request.method == "POST":
        title = json_body(request).get("title", "")
        if not isinstance(title, str):
            raise BadRequest("title must be a string.")
        thread = thread_create_for_self(owner=request.user, title=title)
        return JsonResponse(snapshot_payload(thread, thread_snapshot(thread=thread)), status=201)
    limit = page_limit(request, default=THREADS_PAGE_SIZE)
    cursor = request.GET.get("cursor")
    page, more = thread_page(user=request.user, after=decode_thread_cursor(cursor) if cursor else None, limit=limit)
    next_cursor = encode_thread_cursor(page[-1]) if more else None
    return JsonResponse({"threads": [thread_summary(thread) for thread in page], "next": next_cursor})


@api_view("GET", "PATCH", "DELETE")
def thread_detail(request: AuthenticatedHttpRequest, thread_id: str) -> HttpResponse:
    thread = request_thread(request, thread_id, Action.READ if request.method == "GET" else Action.MANAGE)
    if request.method == "PATCH":
        return JsonResponse(thread_summary(thread_rename(thread=thread, title=json_body(request).get("title"))))
    if request.method == "DELETE":
        thread_delete(thread=thread)
        return no_content()
    before = query_int(request, "before", default=None, minimum=1)
    limit = page_limit(request, default=MESSAGES_PAGE_SIZE)
    max_bytes = settings.API_MAX_RESPONSE_BYTES
    page = thread_snapshot(thread=thread, before=before, limit=limit, max_bytes=max_bytes)
    return messages_response(snapshot_payload(thread, page))


def messages_response(page: Mapping[str, object]) -> JsonResponse:
    """Answer a page of messages as UTF-8 JSON: what API_MAX_RESPONSE_BYTES counts, not six bytes a character."""
    return JsonResponse(page, json_dumps_params={"ensure_ascii": False})


@api_view("GET", "POST")
def thread_messages(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    thread = request_thread(request, thread_id, Action.READ if request.method == "GET" else Action.WRITE)
    if request.method == "GET":
        before = query_int(request, "before", default=None, minimum=1)
        limit = page_limit(request, default=MESSAGES_PAGE_SIZE)
        max_bytes = settings.API_MAX_RESPONSE_BYTES
        page = message_page(thread=thread, before=before, limit=limit, max_bytes=max_bytes)
        return messages_response(message_page_payload(page))
    body = json_body(request)
    posted = message_post(
        thread=thread,
        content=body.get("content"),
        client_id=parse_client_id(body.get("client_id")),
        author=request.user,
    )
    return JsonResponse(
        {"message": message_payload(posted.message), "reply": message_payload(posted.reply), "seq": posted.reply.seq},
        status=202,
    )


@api_view("POST")
def thread_cancel(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    thread = request_thread(request, thread_id, Action.WRITE)
    reply = generation_cancel(thread=thread)
    return JsonResponse({"reply": message_payload(reply)}, status=202)


@api_view("POST")
def thread_approve(request: AuthenticatedHttpRequest, thread_id: str) -> JsonResponse:
    """Approve or deny a tool call of the reply awaiting approval (409 `no_approval_pending` when none waits)."""
    thread = request_thread(request, thread_id, Action.WRITE)
    tool_call_id, approved = parse_approval(json_body(request))
    tool_call_approve(thread=thread, tool_call_id=tool_call_id, approved=approved)
    return JsonResponse({"tool_call_id": tool_call_id, "approved": approved}, status=202)


@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    """Serve the OpenAPI 3.1 description of this API (public: it describes, it grants nothing)."""
    return JsonResponse(openapi_document(server_url=request.build_absolute_uri("/")))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Answer a refused cookie POST in the API's error shape (pages get Django's page)."""
    if request.path.startswith("/api/"):
        return error_response(Forbidden("CSRF check failed: send the X-CSRFToken header."))
    return default_csrf_failure(request, reason)
