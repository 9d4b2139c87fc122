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
and finally `data: [DONE]`. An agent reply's parts add `reasoning-*`, `tool-input-*`,
`tool-output-*` and `tool-approval-request` chunks (`UiMessageChunks`). A stream always
replays the reply from its start, as `DefaultChatTransport` expects of a resumed stream
(`resumeStreamIsReplay`); only the answer to a tool approval goes on from the approval, and
the seed clients' stream (threads/seed.py) from their Last-Event-ID.
"""

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any, cast

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from streaming import events
from streaming.errors import BadRequest, NotFound
from streaming.models import Chunk
from streaming.protocol import ApprovalPart, Part, TextPart
from streaming.selectors import logged_reply_parts
from streaming.services.endings import generation_cancel
from streaming.subscription import KEEPALIVE, Frame, StreamSlot, SubscriptionEnded, ThreadSubscription

from .access import Action, request_link_ids, request_stream_grants, thread_access
from .api import api_view, json_body, no_content, request_thread
from .http import AuthenticatedHttpRequest
from .inputs import parse_approval, parse_thread_id
from .models import Message, Thread
from .selectors import message_get_in_thread
from .services import reply_regenerate, thread_start, tool_calls_decide, validate_content
from .sse import KEEPALIVE_COMMENT, KEEPALIVE_SECONDS, event_stream_response
from .versions import message_edit

UI_MESSAGE_STREAM_HEADER = "x-vercel-ai-ui-message-stream"
# The id of the stream a POST started (its reply's), as resumable-stream clients read it.
STREAM_ID_HEADER = "X-Stream-Id"
PART_EVENTS = ("part_start", "part_delta", "part_end")
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


class UiMessageChunks:
    """Turns a reply's log events into UI message chunks, keeping what it needs across them.

    Text runs become `text-start`/`text-delta`/`text-end`; thinking becomes `reasoning-*`; a tool call
    `tool-input-start`, its input's JSON as one `tool-input-delta` (a call is logged whole)
    and `tool-input-available` (a dynamic tool: the client needs no
    definition of it), its result `tool-output-available` or `tool-output-error`, a denied
    call `tool-output-denied`; an approval asked for is a `tool-approval-request`, after
    which the stream finishes: the client answers it with a new request (`aisdk_send`).
    """

    def __init__(self, reply_id: str) -> None:
        self.reply_id = reply_id
        self.text_id: str | None = None  # the text part open, if any
        self.sent_chars = 0  # text sent so far, for a `reset`
        self.denied: set[str] = set()  # calls whose denial was sent: their result says no more
        self.done = False

    def held(self, parts: list[Part]) -> None:
        """Go on where a client holding `parts` (the reply's, folded from its log up to the client's cursor) is."""
        texts = [cast(TextPart, part)["text"] for part in parts if part["type"] == "text"]
        self.sent_chars = sum(len(text) for text in texts)
        if parts and parts[-1]["type"] == "text":  # its text part is still open
            self.text_id = self._text_id(start=self.sent_chars - len(texts[-1]))
        approvals = [cast(ApprovalPart, part) for part in parts if part["type"] == "approval"]
        self.denied = {approval["tool_call_id"] for approval in approvals if approval["state"] == "denied"}

    def opening(self) -> list[dict[str, Any]]:
        return [{"type": "start", "messageId": self.reply_id}]

    def _text_id(self, *, start: int) -> str:
        """The first text part's id is the reply's; a later one's says where in the text it starts."""
        return f"text-{self.reply_id}" + (f"-{start}" if start else "")

    def delta(self, text: str) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if self.text_id is None:
            self.text_id = self._text_id(start=self.sent_chars)
            chunks.append({"type": "text-start", "id": self.text_id})
        self.sent_chars += len(text)
        return [*chunks, {"type": "text-delta", "id": self.text_id, "delta": text}]

    def _text_ended(self) -> list[dict[str, Any]]:
        if self.text_id is None:
            return []
        text_id, self.text_id = self.text_id, None
        return [{"type": "text-end", "id": text_id}]

    def part(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the chunks of a `part_start`, `part_delta` or `part_end` event."""
        chunks = self._text_ended()
        reasoning_id = f"reasoning-{self.reply_id}-{event['index']}"
        if event["type"] == "part_delta":
            return [*chunks, {"type": "reasoning-delta", "id": reasoning_id, "delta": event["text"]}]
        part, starts = event["part"], event["type"] == "part_start"
        if part["type"] == "thinking":
            chunks.append({"type": "reasoning-start" if starts else "reasoning-end", "id": reasoning_id})
        elif part["type"] == "tool_call" and starts:
            named = {"toolCallId": part["id"], "toolName": part["name"], "dynamic": True}
            chunks += [
                {"type": "tool-input-start", **named},
                {"type": "tool-input-delta", "toolCallId": part["id"], "inputTextDelta": json.dumps(part["input"])},
                {"type": "tool-input-available", **named, "input": part["input"]},
            ]
        elif part["type"] == "approval":
            if starts:
                approval_id = f"approval-{self.reply_id}-{event['index']}"
                chunks.append(
                    {"type": "tool-approval-request", "approvalId": approval_id, "toolCallId": part["tool_call_id"]}
                )
                # The reply waits for a person: the client answers with a new request.
                chunks.append({"type": "finish", "finishReason": "tool-calls"})
                self.done = True
            elif part["state"] == "denied":
                self.denied.add(part["tool_call_id"])
                chunks.append({"type": "tool-output-denied", "toolCallId": part["tool_call_id"]})
        elif part["type"] == "tool_result" and not starts and part["tool_call_id"] not in self.denied:
            if part["is_error"]:
                error_text = part["output"] if isinstance(part["output"], str) else json.dumps(part["output"])
                chunks.append(
                    {"type": "tool-output-error", "toolCallId": part["tool_call_id"], "errorText": error_text}
                )
            else:
                chunks.append(
                    {"type": "tool-output-available", "toolCallId": part["tool_call_id"], "output": part["output"]}
                )
        return chunks

    def terminal(self, ended: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the chunks that close a reply, from its `end` event or its snapshot."""
        self.done = True
        closing = self._text_ended()
        if ended["status"] == Message.Status.CANCELLED:
            return closing + [{"type": "abort", "reason": "cancelled"}]
        if ended["status"] == Message.Status.FAILED:
            detail = (ended.get("error") or {}).get("detail") or "The reply failed."
            return closing + [{"type": "error", "errorText": detail}, {"type": "finish", "finishReason": "error"}]
        reason = FINISH_REASONS.get(ended.get("stop_reason", ""), "other")
        return closing + [{"type": "finish", "finishReason": reason}]


# A UI message chunk and the seq its client holds the log up to, in full, once it has the chunk: the seq
# of the event the chunk comes from if it is the event's last chunk, the seq before it if more follow
# (None: the chunk comes from no event).
UiChunk = tuple[dict[str, Any], int | None]


async def ui_message_chunks(
    frames: AsyncGenerator[Frame | None, None],
    *,
    reply_id: str,
    held: list[Part] | None = None,
    answering_approval: bool = False,
) -> AsyncGenerator[UiChunk | None, None]:
    """Turn a subscription into UI message chunks (None: keep-alive).

    It starts at the reply's `start` event. With `held`, it resumes a stream whose client holds
    the reply's opening and the chunks of these parts (the reply's up to its Last-Event-ID);
    `answering_approval`, the client holds the reply up to the approval it answered, and reads
    the rest as a new stream of the same message.
    """
    stream = UiMessageChunks(reply_id)
    started = held is not None or answering_approval
    if held is not None:
        stream.held(held)
    if answering_approval:
        for chunk in stream.opening():
            yield chunk, None
    async for frame in frames:
        if frame is KEEPALIVE:
            yield None
            continue
        if frame.type not in ("start", "delta", "end", "reset", *PART_EVENTS):
            continue
        event = json.loads(frame.data)
        chunks: list[dict[str, Any]] = []
        if frame.type == "reset":  # the log was pruned under us: go on from the snapshot's text
            reply = next((message for message in event["messages"] if message["id"] == reply_id), None)
            if reply is None:
                return
            chunks = [] if started else stream.opening()
            started = True
            if len(reply["content"]) > stream.sent_chars:
                chunks += stream.delta(reply["content"][stream.sent_chars :])
            if reply["status"] != Message.Status.STREAMING:
                chunks += stream.terminal(reply)
        elif frame.type == "start":
            if event["message"]["id"] == reply_id and not started:
                started = True
                chunks = stream.opening()
        elif event["message_id"] != reply_id:
            continue
        elif frame.type == "delta":
            chunks = stream.delta(event["text"])
        elif frame.type == "end":
            chunks = stream.terminal(event)
        else:
            chunks = stream.part(event)
        # An EventSource that drops between two chunks of one event resumes before the event and
        # gets all its chunks again: never a later one's text, nor a 204 before its `finish`.
        for number, chunk in enumerate(chunks, start=1):
            yield chunk, event["seq"] if number == len(chunks) else event["seq"] - 1
        if stream.done:
            return


async def ui_message_stream_body(
    chunks: AsyncGenerator[UiChunk | None, None], *, seed_shapes: bool = False
) -> AsyncGenerator[str, None]:
    """Yield UI message chunks as SSE `data:` records, then `[DONE]`.

    With `seed_shapes` (threads/seed.py), each record carries as `id:` the seq its client holds
    the log up to (`UiChunk`), which an EventSource sends back as Last-Event-ID when it
    reconnects, and a `text-delta` its text as `textDelta` too, the field the seed documents;
    AI SDK readers ignore both.
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
    answering_approval: bool = False,
    seed_shapes: bool = False,
) -> StreamingHttpResponse:
    """Answer with `reply` as a UI message stream, from its start or after the seq `after`.

    `after` is a client's Last-Event-ID, or, `answering_approval`, the approval request the
    client answered. The stream ends with the reply, or when the request's grants do (its token
    or session, its access to the thread). The stream's id (what /api/chat/resume/<streamId>
    takes) is the reply's, in the X-Stream-Id header.
    """
    resumed = after is not None and after >= reply.seq
    access = thread_access(user=request.user, thread_id=thread.id, link_ids=request_link_ids(request))
    subscription = ThreadSubscription(
        thread=thread,
        after=after if resumed else reply.seq - 1,
        keepalive_seconds=KEEPALIVE_SECONDS,
        grants=request_stream_grants(request, access),
    )
    held = logged_reply_parts(message=reply, upto_seq=after) if resumed else None
    chunks = ui_message_chunks(
        subscription.frames(), reply_id=str(reply.id), held=held, answering_approval=answering_approval
    )
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
    if last.get("role") == "assistant":
        return aisdk_approve(request, body, last)
    if last.get("role") != "user":
        raise BadRequest("The last of messages must be the user's new message, or a reply with approval responses.")
    content = validate_content(ui_message_text(last))  # before the thread is made: a bad body writes nothing
    ui_id = last["id"] if isinstance(last.get("id"), str) and last["id"] else None
    client_id = ui_client_id(ui_id) if ui_id else None
    slot = StreamSlot(user_id=request.user.pk)
    thread_id = parse_thread_id(body.get("id"))
    edited = edited_message(thread_id, ui_id, content)
    if edited is not None:
        assert ui_id is not None, "only a message sent with a UI id is found again"
        thread = request_thread(request, str(thread_id), Action.WRITE)
        # Each new text of the UI message is a send of its own: repeating it posts once (I7).
        edit_id = uuid.uuid5(UI_MESSAGE_NAMESPACE, f"{ui_id}\n{content}")
        posted = message_edit(thread=thread, message=edited, content=content, client_id=edit_id, author=request.user)
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
    """Return the reply `regenerate({messageId})` names: that reply, or the reply on the active path to that question.

    The id is a server id or the UI id a message was sent under (`named_message`); an id of no
    message of this thread is NotFound. Without a messageId, the last reply on the active path.
    """
    replies = Message.objects.filter(thread=thread, role=Message.Role.ASSISTANT, on_path=True)
    if message_id is not None:
        if not isinstance(message_id, str):
            raise BadRequest("messageId must be the id of a message of this thread.")
        named = named_message(thread, message_id)
        if named.role == Message.Role.ASSISTANT:
            return named
        # A UI id finds its first send, but after an edit the client shows, under the same id, the
        # version on the active path: the versions of a question are siblings under one parent.
        replies = replies.filter(reply_to__parent=named.parent_id)
    reply = replies.order_by("seq").last()
    if reply is None:
        raise BadRequest("There is no reply to regenerate.")
    return reply


def named_message(thread: Thread, message_id: str) -> Message:
    """Return the message of `thread` a client names by its server id or by the UI id it was sent under."""
    with contextlib.suppress(NotFound):
        return message_get_in_thread(thread=thread, message_id=message_id)
    sent = message_sent_under(thread.pk, message_id)
    if sent is None:
        raise NotFound("No such message.")
    return sent


def ui_client_id(ui_id: str) -> uuid.UUID:
    """Return the client_id a send under the UI message id `ui_id` is stored with: the same every time (I7)."""
    return uuid.uuid5(UI_MESSAGE_NAMESPACE, ui_id)


def message_sent_under(thread_id: uuid.UUID, ui_id: str) -> Message | None:
    """Return the message first sent under the UI message id `ui_id` (by the client_id it maps to), if any."""
    return Message.objects.filter(thread_id=thread_id, client_id=ui_client_id(ui_id)).first()


def edited_message(thread_id: uuid.UUID, ui_id: str | None, content: str) -> Message | None:
    """Return the stored user message a submit edits: the one first sent under its UI id, with other text.

    `sendMessage({text, messageId})` sends the edited message under its old UI id, which maps to
    the first send's client_id; the same text again is a repeated send, not an edit.
    """
    first = message_sent_under(thread_id, ui_id) if ui_id is not None else None
    return first if first is not None and first.content != content else None


def ui_message_approvals(message: dict[str, Any]) -> list[tuple[str, bool]]:
    """Return the tool approval responses of a UIMessage: (tool call id, approved) of its responded tool parts."""
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise BadRequest("A reply's parts must be a list of UI message parts.")
    decisions = []
    for part in parts:
        if not isinstance(part, dict) or part.get("state") != "approval-responded":
            continue
        approval, tool_call_id = part.get("approval"), part.get("toolCallId")
        if not isinstance(approval, dict) or not isinstance(tool_call_id, str):
            raise BadRequest("A tool approval response needs its toolCallId and approval.")
        decisions.append(parse_approval({"tool_call_id": tool_call_id, "approved": approval.get("approved")}))
    return decisions


def aisdk_approve(
    request: AuthenticatedHttpRequest, body: dict[str, Any], reply_message: dict[str, Any]
) -> StreamingHttpResponse:
    """Take the AI SDK's tool approval responses for a reply and answer with the rest of the reply.

    The stream goes on from the reply's last approval request, where the client's copy ends.
    A decision taken already (from another tab or device) is not taken again.
    """
    thread = request_thread(request, str(body.get("id")), Action.WRITE)
    reply = message_get_in_thread(thread=thread, message_id=str(reply_message.get("id")))
    decisions = ui_message_approvals(reply_message)
    if not decisions:
        raise BadRequest("The reply carries no tool approval response.")
    after = last_approval_request_seq(reply)
    slot = StreamSlot(user_id=request.user.pk)  # before deciding: a refused request decides nothing
    parts = logged_reply_parts(message=reply)
    decided = {part["tool_call_id"] for part in parts if part["type"] == "approval" and part["state"] != "requested"}
    tool_calls_decide(thread=thread, decisions=decisions, decided=decided)
    return reply_stream_response(request, thread, reply, slot, after=after, answering_approval=True)


def last_approval_request_seq(reply: Message) -> int:
    """The seq of the reply's latest approval request: what a client answering it has seen."""
    requests = Chunk.objects.filter(message=reply, kind=Chunk.Kind.PART_START).order_by("-seq")
    for seq, part in requests.values_list("seq", "text"):
        if json.loads(part)["type"] == "approval":
            return seq
    raise BadRequest("The reply asked for no approval.")


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
