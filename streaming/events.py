"""Every frame of WebSocket protocol v1 is built here, as its type in `protocol.py`, and only here.

Log events are encoded once, when they are produced or read back, and travel as
`(seq, kind, frame)` triples: the consumer sends the frame text as it is, so no subscriber
re-encodes JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from uuid import UUID

from .compaction import segment_texts
from .models import AbstractMessage, AbstractThread, Chunk
from .protocol import (
    AssistantMessage,
    DeltaEvent,
    EndEvent,
    ErrorCode,
    ErrorFrame,
    LogEvent,
    MessageEvent,
    MessagePage,
    MessagePayload,
    MessageRole,
    MessageStatus,
    Part,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    Person,
    PongFrame,
    PresenceFrame,
    ReadyFrame,
    ReplyOutcome,
    ResetFrame,
    Snapshot,
    StartedReply,
    StartEvent,
    SwitchEvent,
    ThreadFrame,
    UserMessage,
    Versions,
)

if TYPE_CHECKING:
    from .selectors import ThreadMessages

WORKERS_GROUP = "streaming.workers"
# Where log events are published, every thread's on one group: each web process's hub receives a
# round of a worker's group commit as one message, and hands each thread's events to its feed.
LOG_GROUP = "streaming.log"
LOG_EVENTS = "log.events"

# (seq, kind, frame): the kind lets subscribers follow a reply's progress without decoding the frame.
EncodedEvent = tuple[int, str, str]


def thread_group_name(thread_id: UUID | str) -> str:
    """Return the channel-layer group of a thread's subscribers."""
    return f"thread.{thread_id}"


# Channel-layer messages on a thread's group, as subscriptions dispatch on their type.
THREAD_RENAMED = "thread.renamed"
# Sent to an AccessGrant's group: the streams opened under it end (streaming/subscription.py).
ACCESS_REVOKED = "access.revoked"
# Sent to a thread's group when someone starts or stops watching it: each watcher reads the room (presence.py).
PRESENCE_CHANGED = "presence.changed"


def encode(frame: Mapping[str, object]) -> str:
    """Return a frame as the compact JSON text clients receive."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _reply_outcome(message: AbstractMessage) -> ReplyOutcome:
    return ReplyOutcome(
        model=message.model, stop_reason=message.stop_reason or None, usage=message.usage, error=message.error
    )


def _parent_id(message: AbstractMessage) -> str | None:
    return str(message.parent_id) if message.parent_id else None


def message_payload(
    message: AbstractMessage,
    *,
    content: str | None = None,
    parts: list[Part] | None = None,
    versions: list[UUID] | None = None,
) -> MessagePayload:
    """Return a message as snapshots carry it, with `content` and `parts` for its own if given, and whether it is on
    the path.

    With `versions` (the ids of its versions, itself among them, oldest first), it carries them too.
    """
    payload = _message_payload(message, content=content, parts=parts)
    payload["on_path"] = message.on_path
    if versions is not None:
        payload["versions"] = Versions(index=versions.index(message.id), ids=[str(version) for version in versions])
    return payload


def _message_payload(message: AbstractMessage, *, content: str | None, parts: list[Part] | None) -> MessagePayload:
    """Return a message as clients see it in events; a reply carries its parts only when it has more than text."""
    if message.role == MessageRole.USER:
        return user_message_payload(message)
    payload = AssistantMessage(
        id=str(message.id),
        role=MessageRole.ASSISTANT,
        content=message.content if content is None else content,
        status=MessageStatus(message.status),
        created_at=message.created_at.isoformat(),
        parent_id=_parent_id(message),
        **_reply_outcome(message),
    )
    parts = message.parts if parts is None else parts
    if any(part["type"] != "text" for part in parts):
        payload["parts"] = parts
    return payload


def user_message_payload(message: AbstractMessage) -> UserMessage:
    """Return a user message as clients see it: written whole, so its content is final."""
    return UserMessage(
        id=str(message.id),
        role=MessageRole.USER,
        content=message.content,
        status=MessageStatus(message.status),
        created_at=message.created_at.isoformat(),
        client_id=str(message.client_id) if message.client_id else None,
        author=message.author_payload(),
        parent_id=_parent_id(message),
    )


def message_payloads(page: ThreadMessages) -> list[MessagePayload]:
    """Return the messages of a page, each reply still streaming with its text at the page's seq (I4)."""
    return [
        message_payload(
            message,
            content=page.reply_texts.get(message.id),
            parts=page.reply_parts.get(message.id),
            versions=page.versions.get(message.id),
        )
        for message in page.messages
    ]


def delta_event(seq: int, message_id: UUID | str, text: str) -> DeltaEvent:
    return DeltaEvent(type="delta", seq=seq, message_id=str(message_id), text=text)


def encode_delta(seq: int, message_id: UUID | str, text: str) -> str:
    """Return `encode(delta_event(seq, message_id, text))`, written without building the event.

    A worker encodes every delta it commits, a web process every delta of a backlog it
    replays: formatting the frame around the text's JSON takes half the time of encoding a
    dict. Both paths use this, so a replayed delta is byte for byte the delta sent live.
    """
    return f'{{"type":"delta","seq":{seq},"message_id":"{message_id}","text":{json.dumps(text, ensure_ascii=False)}}}'


def chunk_event(chunk: Chunk, message: AbstractMessage | None) -> LogEvent:
    """Return the log event a one-event row stands for; `message` is the chunk's message (unused for deltas)."""
    assert not chunk.is_segment, "a segment row holds several events: see encode_chunks"
    if chunk.kind == Chunk.Kind.DELTA:
        return delta_event(chunk.seq, chunk.message_id, chunk.text)
    if chunk.kind in (Chunk.Kind.PART_START, Chunk.Kind.PART_DELTA, Chunk.Kind.PART_END):
        return part_event(chunk)
    assert message is not None, f"a {chunk.kind} event needs its message"
    if chunk.kind == Chunk.Kind.MESSAGE:
        return MessageEvent(type="message", seq=chunk.seq, message=user_message_payload(message))
    if chunk.kind == Chunk.Kind.START:
        # Only what is fixed when the reply starts: replayed from the backlog later,
        # the event must be byte for byte what was sent live.
        started = StartedReply(
            id=str(message.id),
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.STREAMING,
            created_at=message.created_at.isoformat(),
            parent_id=_parent_id(message),
        )
        return StartEvent(type="start", seq=chunk.seq, message=started)
    if chunk.kind == Chunk.Kind.SWITCH:
        return switch_event(chunk.seq, message, path=chunk.text.split())
    # An `end` row is written only with its message's final status (never streaming).
    status = MessageStatus(message.status)
    return EndEvent(
        type="end",
        seq=chunk.seq,
        message_id=str(message.id),
        status=status,  # type: ignore[typeddict-item]  # the ended statuses are all this column holds here
        **_reply_outcome(message),
    )


def part_event(chunk: Chunk) -> PartStartEvent | PartDeltaEvent | PartEndEvent:
    """Return a part event from its row: the part is decoded from the row's JSON text, so every replay matches."""
    assert chunk.part_index is not None, "a part event names its part"
    message_id = str(chunk.message_id)
    if chunk.kind == Chunk.Kind.PART_DELTA:
        return PartDeltaEvent(
            type="part_delta", seq=chunk.seq, message_id=message_id, index=chunk.part_index, text=chunk.text
        )
    part = json.loads(chunk.text)
    if chunk.kind == Chunk.Kind.PART_START:
        return PartStartEvent(
            type="part_start", seq=chunk.seq, message_id=message_id, index=chunk.part_index, part=part
        )
    return PartEndEvent(type="part_end", seq=chunk.seq, message_id=message_id, index=chunk.part_index, part=part)


def encode_chunks(
    chunks: Iterable[Chunk], messages: dict[UUID, AbstractMessage], *, after: int = 0, until: int | None = None
) -> list[EncodedEvent]:
    """Return the encoded events of chunk rows with seq in (after, until], as they were sent live.

    A segment row gives each of its deltas in turn, encoded from its own seq and text.
    """
    encoded = []
    for chunk in chunks:
        if chunk.is_segment:
            message_id = str(chunk.message_id)
            for seq, text in enumerate(segment_texts(chunk), start=chunk.seq):
                if after < seq and (until is None or seq <= until):
                    encoded.append((seq, chunk.kind, encode_delta(seq, message_id, text)))
        elif after < chunk.seq and (until is None or chunk.seq <= until):
            if chunk.kind == Chunk.Kind.DELTA:
                frame = encode_delta(chunk.seq, chunk.message_id, chunk.text)
            else:
                frame = encode(chunk_event(chunk, messages.get(chunk.message_id)))
            encoded.append((chunk.seq, chunk.kind, frame))
    return encoded


def switch_event(seq: int, message: AbstractMessage, *, path: list[str]) -> SwitchEvent:
    """Return the `switch` event (an extension): `message` chosen, the active path from it down is `path`."""
    return SwitchEvent(type="switch", seq=seq, message_id=str(message.id), parent_id=_parent_id(message), path=path)


def thread_frame(thread: AbstractThread) -> ThreadFrame:
    """Return the `thread` control frame (a protocol v1 extension, without seq): the thread's id and title."""
    return ThreadFrame(type="thread", id=str(thread.id), title=thread.title)


def ready_frame(seq: int) -> ReadyFrame:
    return ReadyFrame(type="ready", seq=seq)


def reset_frame(page: ThreadMessages) -> ResetFrame:
    """Return a `reset`: the page's messages and, as `next` (an extension), the `before` of earlier ones."""
    return ResetFrame(type="reset", seq=page.seq, messages=message_payloads(page), next=page.next)


def error_frame(code: ErrorCode, detail: str) -> ErrorFrame:
    return ErrorFrame(type="error", code=code, detail=detail)


def pong_frame() -> PongFrame:
    return PongFrame(type="pong")


def presence_frame(people: list[Person]) -> PresenceFrame:
    """Return the `presence` control frame (an extension, without seq): who is watching the thread now."""
    return PresenceFrame(type="presence", people=people)


def snapshot_payload(thread: AbstractThread, page: ThreadMessages) -> Snapshot:
    """Return the snapshot of `thread` that `page` reads (the HTTP API's and the thread page's)."""
    return Snapshot(
        id=str(thread.id), title=thread.title, seq=page.seq, messages=message_payloads(page), next=page.next
    )


def message_page_payload(page: ThreadMessages) -> MessagePage:
    return MessagePage(messages=message_payloads(page), seq=page.seq, next=page.next)
