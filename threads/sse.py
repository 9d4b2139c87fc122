"""Server-sent events: a thread's log over plain HTTP (DESIGN.md §5), for clients without WebSockets.

The records carry the very frames of WebSocket protocol v1, read through the same
ThreadSubscription, so SSE keeps the same guarantees (I3): `id: <seq>`,
`event: <type>`, `data: <frame JSON>`. A client resumes with the `Last-Event-ID`
header (which EventSource sends by itself on reconnecting) or `?after=<seq>`.

A stream opened with an API token ends, after an `error` record with code `forbidden`,
when the token is revoked, and one opened with a session when the session ends (signed
out, deactivated); an EventSource that reconnects then gets 401 and stops. A stream of a
shared thread ends the same way once its reader may no longer read it (removed, their
link revoked), and one of a deleted thread with `not_found`; reconnecting then gets 404.
"""

import contextlib
from collections.abc import AsyncGenerator

from django.http import HttpRequest, StreamingHttpResponse

from streaming import events
from streaming.cursors import parse_cursor
from streaming.subscription import KEEPALIVE, Frame, StreamSlot, SubscriptionEnded, ThreadSubscription

from .access import person_of, request_link_ids, request_stream_grants, thread_access
from .api import api_view
from .http import AuthenticatedHttpRequest

# Proxies and load balancers close idle connections (often after 30-60 s): a comment keeps this one busy.
KEEPALIVE_SECONDS = 15.0
KEEPALIVE_COMMENT = ": keep-alive\n\n"


def sse_record(frame: Frame) -> str:
    """Return one SSE record; frames at a log position carry it as `id`, which becomes the client's Last-Event-ID."""
    head = f"id: {frame.seq}\n" if frame.seq is not None else ""
    # Frames are compact JSON: a newline inside a string is escaped, so `data` is always one line.
    return f"{head}event: {frame.type}\ndata: {frame.data}\n\n"


async def sse_body(frames: AsyncGenerator[Frame | None, None]) -> AsyncGenerator[str, None]:
    """Yield a subscription's frames as SSE records until the client goes (Django then closes this generator)."""
    async with contextlib.aclosing(frames):
        try:
            async for frame in frames:
                yield KEEPALIVE_COMMENT if frame is KEEPALIVE else sse_record(frame)
        except SubscriptionEnded as ended:
            yield sse_record(Frame("error", events.encode(events.error_frame(ended.code, ended.detail))))


async def holding(slot: StreamSlot, body: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
    """Yield `body`, holding the person's stream slot until it ends or the client goes."""
    async with contextlib.aclosing(body):
        try:
            async for part in body:
                yield part
        finally:
            slot.release()


def event_stream_response(body: AsyncGenerator[str, None], *, slot: StreamSlot) -> StreamingHttpResponse:
    """Answer with `body` as an event stream, which holds `slot` while it runs."""
    response = StreamingHttpResponse(holding(slot, body), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each record on at once instead of buffering
    return response


def request_cursor(request: HttpRequest) -> int | None:
    """Return the client's cursor: Last-Event-ID (a reconnecting EventSource) wins over `?after=`."""
    last_event_id = request.headers.get("Last-Event-ID")
    return parse_cursor(last_event_id if last_event_id is not None else request.GET.get("after"))


def thread_event_stream(request: AuthenticatedHttpRequest, thread_id: str) -> StreamingHttpResponse:
    access = thread_access(user=request.user, thread_id=thread_id, link_ids=request_link_ids(request))
    slot = StreamSlot(user_id=request.user.pk)
    subscription = ThreadSubscription(
        thread=access.thread,
        after=request_cursor(request),
        keepalive_seconds=KEEPALIVE_SECONDS,
        grants=request_stream_grants(request, access),
        presence=request.GET.get("presence") == "1",
        person=person_of(request.user),
    )
    return event_stream_response(sse_body(subscription.frames()), slot=slot)


@api_view("GET")
def thread_events(request: AuthenticatedHttpRequest, thread_id: str) -> StreamingHttpResponse:
    """Stream a thread's log from the cursor on, then live."""
    return thread_event_stream(request, thread_id)
