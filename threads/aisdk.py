"""`/api/chat`: the seed API's send, and the Vercel AI SDK's UI message stream protocol v1.

`POST /api/chat` takes two bodies, told apart by their keys:

- the seed API's `{"id", "message": {"role": "user", "content"}}` answers
  `{"success": true, "threadId", "streamId"}` and the client streams with
  `GET /api/chat/stream?id=<thread id>` (streaming/sse.py);
- the AI SDK's `{"id", "messages": [UIMessage, …]}` answers with the reply itself as a
  UI message stream, which `useChat` / `DefaultChatTransport` read.

The chunk shapes follow the `ai` package's `uiMessageChunkSchema` (v5 and later):
`start` {messageId}, `text-start` {id}, `text-delta` {id, delta}, `text-end` {id}, then
`finish` {finishReason}, `abort` {reason} for a cancelled reply, or `error` {errorText},
and finally `data: [DONE]`. A stream always replays the reply from its start, as
`DefaultChatTransport` expects of a resumed stream (`resumeStreamIsReplay`).
"""

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from streaming import events
from streaming.errors import BadRequest, ChatError
from streaming.selectors import logged_reply_text
from streaming.services.endings import generation_cancel
from streaming.subscription import KEEPALIVE, Frame, StreamSlot, SubscriptionEnded, ThreadSubscription

from .access import Action, request_link_ids, request_stream_grants, thread_access
from .api import api_view, json_body, no_content, request_thread
from .http import AuthenticatedHttpRequest
from .inputs import parse_thread_id
from .models import Message, Thread
from .selectors import message_get_in_thread
from .services import reply_regenerate, thread_start, validate_content
from .sse import KEEPALIVE_COMMENT, KEEPALIVE_SECONDS, event_stream_response
from .versions import message_edit

UI_MESSAGE_STREAM_HEADER = "x-vercel-ai-ui-message-stream"
# The id of the stream a POST started (its reply's), as resumable-stream clients read it.
STREAM_ID_HEADER = "X-Stream-Id"
# A UIMessage id (a nanoid) maps to the same client_id every time, so a repeated send posts once (I7).
UI_MESSAGE_NAMESPACE = uuid.UUID("5d0f1c8e-6f3a-4c1b-9a57-3f0e2b8c9d41")
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def ui_message_text(message: dict[str, Any]) -> str:
    """Return the text of a UIMessage: its text parts joined (or `content`, as older clients send)."""
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [part.get("text") for part in parts if isinstance(part, dict) and part.get("type") == "text"]
        return "".join(text for text in texts if isinstance(text, str))
    content = message.get("content")
    return content if isinstance(content, str) else ""


def terminal_chunks(ended: dict[str, Any], text_id: str) -> list[dict[str, Any]]:
    """Return the chunks that close a reply, from its `end` event or its snapshot."""
    closing: list[dict[str, Any]] = [{"type": "text-end", "id": text_id}]
    if ended["status"] == Message.Status.CANCELLED:
        return closing + [{"type": "abort", "reason": "cancelled"}]
    if ended["status"] == Message.Status.FAILED:
        detail = (ended.get("error") or {}).get("detail") or "The reply failed."
        return closing + [{"type": "error", "errorText": detail}, {"type": "finish", "finishReason": "error"}]
    return closing + [{"type": "finish", "finishReason": FINISH_REASONS.get(ended.get("stop_reason", ""), "other")}]


# A UI message chunk and the seq of the log event it comes from (None: the chunk has none of its own).
UiChunk = tuple[dict[str, Any], int | None]


async def ui_message_chunks(
    frames: AsyncGenerator[Frame | None, None], *, reply_id: str, sent_chars: int | None = None
) -> AsyncGenerator[UiChunk | None, None]:
    """Turn a subscription that starts at the reply's `start` event into UI message chunks (None: keep-alive).

    With `sent_chars`, the subscription resumes a stream whose client already has the reply's
    opening and that much of its text.
    """
    text_id = f"text-{reply_id}"
    opening = [{"type": "start", "messageId": reply_id}, {"type": "text-start", "id": text_id}]
    started = sent_chars is not None
    sent_chars = sent_chars or 0
    async for frame in frames:
        if frame is KEEPALIVE:
            yield None
            continue
        if frame.type not in ("start", "delta", "end", "reset"):
            continue
        event = json.loads(frame.data)
        if frame.type == "reset":  # the log was pruned under us: go on from the snapshot's text
            reply = next((message for message in event["messages"] if message["id"] == reply_id), None)
            if reply is None:
                return
            chunks = [] if started else opening
            if len(reply["content"]) > sent_chars:
                chunks.append({"type": "text-delta", "id": text_id, "delta": reply["content"][sent_chars:]})
            started, sent_chars = True, len(reply["content"])
            if reply["status"] != Message.Status.STREAMING:
                chunks += terminal_chunks(reply, text_id)
            for chunk in chunks:
                yield chunk, event["seq"]
            if reply["status"] != Message.Status.STREAMING:
                return
        elif frame.type == "start" and event["message"]["id"] == reply_id and not started:
            started = True
            for chunk in opening:
                yield chunk, frame.seq
        elif frame.type == "delta" and event["message_id"] == reply_id:
            sent_chars += len(event["text"])
            yield {"type": "text-delta", "id": text_id, "delta": event["text"]}, frame.seq
        elif frame.type == "end" and event["message_id"] == reply_id:
            for chunk in terminal_chunks(event, text_id):
                yield chunk, frame.seq
            return


async def ui_message_stream_body(
    chunks: AsyncGenerator[UiChunk | None, None], *, seed_shapes: bool = False
) -> AsyncGenerator[str, None]:
    """Yield UI message chunks as SSE `data:` records, then `[DONE]`.

    With `seed_shapes` (threads/seed.py), each record carries its seq as `id:`, which an
    EventSource sends back as Last-Event-ID when it reconnects, and a `text-delta` its text as
    `textDelta` too, the field the seed documents; AI SDK readers ignore both.
    """
    async with contextlib.aclosing(chunks):
        try:
            async for item in chunks:
                if item is None:
                    yield KEEPALIVE_COMMENT
                    continue
                chunk, seq = item
                if not seed_shapes:
                    yield f"data: {events.encode(chunk)}\n\n"
                    continue
                if chunk["type"] == "text-delta":
                    chunk = chunk | {"textDelta": chunk["delta"]}
                head = f"id: {seq}\n" if seq is not None else ""
                yield f"{head}data: {events.encode(chunk)}\n\n"
        except SubscriptionEnded as ended:
            yield f"data: {events.encode({'type': 'error', 'errorText': ended.detail})}\n\n"
    yield "data: [DONE]\n\n"


def reply_stream_response(
    request: HttpRequest,
    thread: Thread,
    reply: Message,
    slot: StreamSlot,
    *,
    after: int | None = None,
    seed_shapes: bool = False,
) -> StreamingHttpResponse:
    """Answer with `reply` as a UI message stream, from its start or after the seq `after` (a client's Last-Event-ID).

    It ends with the reply, or when the request's grants do (its token or session, its access to
    the thread). The stream's id (what /api/chat/resume/<streamId> takes) is the reply's, in the
    X-Stream-Id header.
    """
    resumed = after is not None and after >= reply.seq
    access = thread_access(user=request.user, thread_id=thread.id, link_ids=request_link_ids(request))
    subscription = ThreadSubscription(
        thread=thread,
        after=after if resumed else reply.seq - 1,
        keepalive_seconds=KEEPALIVE_SECONDS,
        grants=request_stream_grants(request, access),
    )
    sent_chars = len(logged_reply_text(message=reply, upto_seq=after)) if resumed else None
    chunks = ui_message_chunks(subscription.frames(), reply_id=str(reply.id), sent_chars=sent_chars)
    response = event_stream_response(ui_message_stream_body(chunks, seed_shapes=seed_shapes), slot=slot)
    response[UI_MESSAGE_STREAM_HEADER] = "v1"
    response[STREAM_ID_HEADER] = str(reply.id)
    return response


def aisdk_send(request: AuthenticatedHttpRequest, body: dict[str, Any]) -> StreamingHttpResponse:
    messages = body["messages"]
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise BadRequest("messages must be a non-empty list of UI messages.")
    if body.get("trigger") == "regenerate-message":
        thread = request_thread(request, str(body.get("id")), Action.WRITE)
        reply = regenerated_reply(thread, body.get("messageId"))
        slot = StreamSlot(user_id=request.user.pk)  # before writing: a refused stream writes nothing
        regenerated = reply_regenerate(thread=thread, reply=reply, person=request.user)
        return reply_stream_response(request, thread, regenerated, slot)
    last = messages[-1]
    if last.get("role") != "user":
        raise BadRequest("The last of messages must be the user's new message.")
    content = validate_content(ui_message_text(last))  # before the thread is made: a bad body writes nothing
    ui_id = last["id"] if isinstance(last.get("id"), str) and last["id"] else None
    client_id = uuid.uuid5(UI_MESSAGE_NAMESPACE, ui_id) if ui_id else None
    slot = StreamSlot(user_id=request.user.pk)
    thread_id = parse_thread_id(body.get("id"))
    edited = edited_message(thread_id, client_id, content)
    if edited is not None:
        assert ui_id is not None, "only a message sent with a UI id is found again"
        thread = request_thread(request, str(thread_id), Action.WRITE)
        # Each new text of the UI message is a send of its own: repeating it posts once (I7).
        edit_id = uuid.uuid5(UI_MESSAGE_NAMESPACE, f"{ui_id}\n{content}")
        posted = message_edit(thread=thread, message=edited, content=content, client_id=edit_id)
    else:
        posted = thread_start(
            person=request.user,
            thread_id=thread_id,
            content=content,
            client_id=client_id,
            link_ids=request_link_ids(request),
        )
    return reply_stream_response(request, posted.message.thread, posted.reply, slot)


def regenerated_reply(thread: Thread, message_id: object) -> Message:
    """Return the reply that `regenerate({messageId})` names (that reply, or the reply to that user message).

    Without a messageId, or with one this thread does not know, the last reply on the active path.
    """
    stored = None
    if isinstance(message_id, str) and message_id:
        with contextlib.suppress(ChatError):
            stored = message_get_in_thread(thread=thread, message_id=message_id)
    if stored is not None and stored.role == Message.Role.ASSISTANT:
        return stored
    replies = Message.objects.filter(thread=thread, role=Message.Role.ASSISTANT, on_path=True)
    if stored is not None:
        replies = replies.filter(reply_to=stored)
    reply = replies.order_by("seq").last()
    if reply is None:
        raise BadRequest("There is no reply to regenerate.")
    return reply


def edited_message(thread_id: uuid.UUID, client_id: uuid.UUID | None, content: str) -> Message | None:
    """Return the stored user message a submit edits: the one first sent under its UI id, with other text.

    `sendMessage({text, messageId})` sends the edited message under its old UI id, which maps to
    the first send's client_id; the same text again is a repeated send, not an edit.
    """
    if client_id is None:
        return None
    first = Message.objects.filter(thread_id=thread_id, client_id=client_id).first()
    return first if first is not None and first.content != content else None


def seed_send(request: AuthenticatedHttpRequest, body: dict[str, Any]) -> JsonResponse:
    message = body.get("message")
    if not isinstance(message, dict) or message.get("role") != "user":
        raise BadRequest('message must be {"role": "user", "content": "…"}.')
    content = validate_content(message.get("content"))
    thread_id = parse_thread_id(body.get("id"))
    posted = thread_start(
        person=request.user, thread_id=thread_id, content=content, client_id=None, link_ids=request_link_ids(request)
    )
    response = JsonResponse(
        {"success": True, "threadId": str(posted.message.thread_id), "streamId": str(posted.reply.id)}
    )
    response[STREAM_ID_HEADER] = str(posted.reply.id)
    return response


@api_view("POST")
def chat(request: AuthenticatedHttpRequest) -> HttpResponseBase:
    body = json_body(request)
    return aisdk_send(request, body) if "messages" in body else seed_send(request, body)


@api_view("GET")
def chat_resume(request: AuthenticatedHttpRequest, chat_id: str) -> HttpResponseBase:
    """Resume the reply being written, from its start; 204 when none is (what the AI SDK expects)."""
    thread = request_thread(request, chat_id, Action.READ)
    reply = Message.objects.filter(thread=thread, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING).first()
    if reply is None:
        return no_content()
    return reply_stream_response(request, thread, reply, StreamSlot(user_id=request.user.pk))


@api_view("POST")
def chat_stop(request: AuthenticatedHttpRequest, chat_id: str) -> JsonResponse:
    """Stop the reply being written; 409 `not_running` when none is."""
    thread = request_thread(request, chat_id, Action.WRITE)
    return JsonResponse({"reply": events.message_payload(generation_cancel(thread=thread))}, status=202)
