"""The JSON API of DESIGN.md §5: parse, call a service or selector, answer."""
import functools
import json
from collections.abc import Callable

from django.http import HttpRequest, JsonResponse
from django.views.csrf import csrf_failure as default_csrf_failure

from streaming.events import message_payload

from .errors import BadRequest, ChatError
from .inputs import parse_client_id
from .models import Thread
from .selectors import thread_get_for_user, thread_list_for_user, thread_snapshot
from .services import generation_cancel, message_post, thread_create

THREADS_PAGE_SIZE = 50


def error_response(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "detail": detail}}, status=status)


def api_view(*methods: str) -> Callable:
    """Answer JSON errors for anonymous callers, wrong methods and ChatErrors."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if request.method not in methods:
                response = error_response("bad_request", f"Use {' or '.join(methods)}.", 405)
                response["Allow"] = ", ".join(methods)
                return response
            if not request.user.is_authenticated:
                return error_response("forbidden", "Sign in first.", 401)
            try:
                return view(request, *args, **kwargs)
            except ChatError as error:
                response = error_response(error.code, error.detail, error.http_status)
                for header, value in error.http_headers().items():
                    response[header] = value
                return response

        return wrapper

    return decorator


def json_body(request: HttpRequest) -> dict:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def thread_summary(thread: Thread) -> dict:
    return {
        "id": str(thread.id),
        "title": thread.title,
        "created_at": thread.created_at.isoformat(),
        "updated_at": thread.updated_at.isoformat(),
    }


@api_view("GET", "POST")
def threads(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        title = json_body(request).get("title", "")
        if not isinstance(title, str):
            raise BadRequest("title must be a string.")
        thread = thread_create(owner=request.user, title=title)
        return JsonResponse(thread_snapshot(thread=thread), status=201)
    listed = [thread_summary(thread) for thread in thread_list_for_user(user=request.user)[:THREADS_PAGE_SIZE]]
    return JsonResponse({"threads": listed, "next": None})


@api_view("GET")
def thread_detail(request: HttpRequest, thread_id: str) -> JsonResponse:
    thread = thread_get_for_user(user=request.user, thread_id=thread_id)
    return JsonResponse(thread_snapshot(thread=thread))


@api_view("POST")
def thread_messages(request: HttpRequest, thread_id: str) -> JsonResponse:
    thread = thread_get_for_user(user=request.user, thread_id=thread_id)
    body = json_body(request)
    posted = message_post(thread=thread, content=body.get("content"), client_id=parse_client_id(body.get("client_id")))
    return JsonResponse(
        {"message": message_payload(posted.message), "reply": message_payload(posted.reply), "seq": posted.reply.seq},
        status=202,
    )


@api_view("POST")
def thread_cancel(request: HttpRequest, thread_id: str) -> JsonResponse:
    thread = thread_get_for_user(user=request.user, thread_id=thread_id)
    reply = generation_cancel(thread=thread)
    return JsonResponse({"reply": message_payload(reply)}, status=202)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """Answer a refused cookie POST in the API's error shape (pages get Django's page)."""
    if request.path.startswith("/api/"):
        return error_response("forbidden", "CSRF check failed: send the X-CSRFToken header.", 403)
    return default_csrf_failure(request, reason)
