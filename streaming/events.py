"""Every frame of WebSocket protocol v1 (DESIGN.md §4) is built here, and only here.

Log events are encoded once, when they are produced or read back, and travel as
`(seq, kind, frame)` triples: the consumer sends the frame text as it is, so no subscriber
re-encodes JSON.
"""
import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from .compaction import segment_texts
from .models import AbstractMessage, AbstractThread, Chunk, MessageRole, MessageStatus

WORKERS_GROUP = "streaming.workers"

# (seq, kind, frame): the kind lets subscribers follow a reply's progress without decoding the frame.
EncodedEvent = tuple[int, str, str]


def thread_group_name(thread_id: UUID | str) -> str:
    """Return the channel-layer group of a thread's subscribers."""
    return f"thread.{thread_id}"


# Channel-layer messages besides log events ("thread.events"), as subscriptions dispatch on their type.
THREAD_RENAMED = "thread.renamed"
# Sent to an AccessGrant's group: the streams opened under it end (streaming/subscription.py).
ACCESS_REVOKED = "access.revoked"


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def message_payload(message: AbstractMessage) -> dict[str, Any]:
    """Return a message as clients see it in events and snapshots."""
    payload = {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": message.created_at.isoformat(),
    }
    if message.role == MessageRole.USER:
        payload["client_id"] = str(message.client_id) if message.client_id else None
    else:
        payload |= {
            "model": message.model,
            "stop_reason": message.stop_reason or None,
            "usage": message.usage,
            "error": message.error,
        }
    return payload


def delta_event(seq: int, message_id: UUID | str, text: str) -> dict[str, Any]:
    return {"type": "delta", "seq": seq, "message_id": str(message_id), "text": text}


def chunk_event(chunk: Chunk, message: AbstractMessage | None) -> dict[str, Any]:
    """Return the log event a one-event row stands for; `message` is the chunk's message (unused for deltas)."""
    assert not chunk.is_segment, "a segment row holds several events: see encode_chunks"
    if chunk.kind == Chunk.Kind.DELTA:
        return delta_event(chunk.seq, chunk.message_id, chunk.text)
    assert message is not None, f"a {chunk.kind} event needs its message"
    if chunk.kind == Chunk.Kind.MESSAGE:
        return {"type": "message", "seq": chunk.seq, "message": message_payload(message)}
    if chunk.kind == Chunk.Kind.START:
        # Only what is fixed when the reply starts: replayed from the backlog later,
        # the event must be byte for byte what was sent live.
        started = {
            "id": str(message.id),
            "role": message.role,
            "content": "",
            "status": MessageStatus.STREAMING,
            "created_at": message.created_at.isoformat(),
        }
        return {"type": "start", "seq": chunk.seq, "message": started}
    return {
        "type": "end",
        "seq": chunk.seq,
        "message_id": str(message.id),
        "status": message.status,
        "model": message.model,
        "stop_reason": message.stop_reason or None,
        "usage": message.usage,
        "error": message.error,
    }


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
                    encoded.append((seq, chunk.kind, encode(delta_event(seq, message_id, text))))
        elif after < chunk.seq and (until is None or chunk.seq <= until):
            encoded.append((chunk.seq, chunk.kind, encode(chunk_event(chunk, messages.get(chunk.message_id)))))
    return encoded


def thread_frame(thread: AbstractThread) -> str:
    """Return the `thread` control frame (a protocol v1 extension, without seq): the thread's id and title."""
    return encode({"type": "thread", "id": str(thread.id), "title": thread.title})


def ready_frame(seq: int) -> str:
    return encode({"type": "ready", "seq": seq})


def reset_frame(snapshot: dict[str, Any]) -> str:
    return encode({"type": "reset", "seq": snapshot["seq"], "messages": snapshot["messages"]})


def error_frame(code: str, detail: str) -> str:
    return encode({"type": "error", "code": code, "detail": detail})


def pong_frame() -> str:
    return encode({"type": "pong"})
