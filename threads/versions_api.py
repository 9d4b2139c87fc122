"""The JSON API of versions: edit a question, regenerate a reply, choose the version shown (threads/versions.py)."""

from django.http import JsonResponse

from streaming.events import message_payload

from .access import Action
from .api import api_view, json_body, request_thread
from .http import AuthenticatedHttpRequest
from .inputs import parse_client_id
from .selectors import message_get_in_thread
from .services import reply_regenerate
from .versions import message_edit, version_switch


@api_view("POST")
def message_edit_view(request: AuthenticatedHttpRequest, thread_id: str, message_id: str) -> JsonResponse:
    """Send a new version of a user message; answered like a send."""
    body = json_body(request)  # first: a body over the upload limit is too_long wherever it is sent
    thread = request_thread(request, thread_id, Action.WRITE)
    message = message_get_in_thread(thread=thread, message_id=message_id)
    posted = message_edit(
        thread=thread,
        message=message,
        content=body.get("content"),
        client_id=parse_client_id(body.get("client_id")),
        author=request.user,
    )
    return JsonResponse(
        {"message": message_payload(posted.message), "reply": message_payload(posted.reply), "seq": posted.reply.seq},
        status=202,
    )


@api_view("POST")
def reply_regenerate_view(request: AuthenticatedHttpRequest, thread_id: str, message_id: str) -> JsonResponse:
    """Write a new version of a reply, answering its user message again."""
    thread = request_thread(request, thread_id, Action.WRITE)
    reply = reply_regenerate(
        thread=thread, reply=message_get_in_thread(thread=thread, message_id=message_id), person=request.user
    )
    return JsonResponse({"reply": message_payload(reply), "seq": reply.seq}, status=202)


@api_view("POST")
def version_switch_view(request: AuthenticatedHttpRequest, thread_id: str, message_id: str) -> JsonResponse:
    """Show another version of a message; answer the seq of the `switch` event."""
    thread = request_thread(request, thread_id, Action.WRITE)
    seq = version_switch(thread=thread, message=message_get_in_thread(thread=thread, message_id=message_id))
    return JsonResponse({"seq": seq})
