"""The seed designs' streaming routes, for clients written against them, in the AI SDK's UI message stream shapes.

- `GET /api/chat/stream?id=<thread id>` (the seed S2 client, after its `POST /api/chat`):
  the thread's latest reply on its active path as a UI message stream, from its start:
  `data: {"type":"text-delta","id":…,"delta":…,"textDelta":…}` records (`textDelta` is the
  seed's field, `delta` the AI SDK's), then `finish` and `data: [DONE]`
  when the reply ends, whether it is still being written or already over. Each record
  carries as `id:` the seq it completes the log up to: its log event's, or the seq before
  when more records of that event follow (`text-start` before the first `text-delta`,
  `text-end` before `finish`). So an EventSource that reconnects (Last-Event-ID) resumes
  where it was, at worst sending such records again, never text; one that reconnects after
  the end gets 204 and stops. 204 also when the thread has no reply yet.
- The resumable-stream design: `POST /api/chat` answers with the reply's id in `X-Stream-Id`,
  and `GET /api/chat/resume/<streamId>` streams that reply from its start (or after
  Last-Event-ID): 404 `not_found` for a stream unknown to the caller, 410 `stream_ended`
  once the reply has ended.
"""

import contextlib
from uuid import UUID

from django.http.response import HttpResponseBase

from streaming.errors import BadRequest, NotFound
from streaming.subscription import StreamSlot

from .access import Action
from .aisdk import reply_stream_response
from .api import api_view, no_content, request_thread
from .errors import StreamEnded
from .http import AuthenticatedHttpRequest
from .models import Message
from .sse import request_cursor


@api_view("GET")
def chat_stream(request: AuthenticatedHttpRequest) -> HttpResponseBase:
    """Stream the thread's latest reply from its start, or after Last-Event-ID; 204 when there is nothing to send."""
    thread_id = request.GET.get("id")
    if not thread_id:
        raise BadRequest("id is required: the thread to stream.")
    thread = request_thread(request, thread_id, Action.READ)
    reply = Message.objects.filter(thread=thread, role=Message.Role.ASSISTANT, on_path=True).order_by("seq").last()
    cursor = request_cursor(request) if "Last-Event-ID" in request.headers else None
    if reply is None or (
        cursor is not None and reply.status != Message.Status.STREAMING and cursor >= reply.content_seq
    ):
        return no_content()
    slot = StreamSlot(user_id=request.user.pk)
    return reply_stream_response(request, thread, reply, slot, after=cursor, seed_shapes=True)


@api_view("GET")
def chat_stream_resume(request: AuthenticatedHttpRequest, stream_id: str) -> HttpResponseBase:
    """Resume the stream a POST started, named by its X-Stream-Id: 404 unknown, 410 ended."""
    try:
        reply_id = UUID(stream_id)
    except ValueError:
        raise NotFound("No such stream.") from None
    reply = Message.objects.filter(pk=reply_id, role=Message.Role.ASSISTANT).first()
    thread = None
    if reply is not None:
        with contextlib.suppress(NotFound):
            thread = request_thread(request, str(reply.thread_id), Action.READ)
    if reply is None or thread is None:
        raise NotFound("No such stream.")  # another person's answers as an unknown one (I11)
    if reply.status != Message.Status.STREAMING:
        raise StreamEnded("The stream has ended: read the reply from the thread.")
    cursor = request_cursor(request) if "Last-Event-ID" in request.headers else None
    return reply_stream_response(
        request, thread, reply, StreamSlot(user_id=request.user.pk), after=cursor, seed_shapes=True
    )
