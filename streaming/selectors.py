"""Reads of the chunk log."""
from uuid import UUID

from threads.models import Message, Thread

from .events import EncodedEvent, encode_chunks
from .models import Chunk


def chunk_events_after(*, thread_id: UUID, after: int, until: int | None = None, limit: int = 500) -> list[EncodedEvent]:
    """Return the encoded events with seq in (after, until], oldest first, at most `limit`."""
    chunks = Chunk.objects.filter(thread_id=thread_id, seq__gt=after).order_by("seq")
    if until is not None:
        chunks = chunks.filter(seq__lte=until)
    chunks = list(chunks.only("seq", "kind", "text", "message_id")[:limit])
    # Only message, start and end events carry message fields: fetch those messages once.
    message_ids = {chunk.message_id for chunk in chunks if chunk.kind != Chunk.Kind.DELTA}
    messages = Message.objects.in_bulk(message_ids) if message_ids else {}
    return encode_chunks(chunks, messages)


def thread_last_seq(*, thread_id: UUID) -> int:
    return Thread.objects.values_list("last_seq", flat=True).get(pk=thread_id)


def thread_streaming(*, thread_id: UUID) -> bool:
    """Return whether a reply is being written in the thread."""
    return Message.objects.filter(thread_id=thread_id, status=Message.Status.STREAMING).exists()
