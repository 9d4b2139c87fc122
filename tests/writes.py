"""Replies written in tests the way the worker writes them, through its own services, one reply at a time."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from streaming.compaction import ended_log, replies_compaction
from streaming.models import Generation
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply_tokens
from streaming.services.claims import Claim, generation_claim_many
from streaming.services.commits import LeaseLost, Write, Written, generation_commit
from streaming.services.log import ranges_delete
from streaming.services.sql import objects_insert
from threads.models import Message, Thread
from threads.services import message_post


def generation_claim(*, worker: str, model: str) -> Claim | None:
    """Take the oldest claimable generation, or None."""
    claims = generation_claim_many(worker=worker, model=model, limit=1)
    return claims[0] if claims else None


def generation_append(*, claim: Claim, text: str, first: bool) -> Written:
    """Commit one `delta` chunk of one reply, fenced on its lease (LeaseLost when it was lost)."""
    return _committed(Write(claim=claim, text=text, first=first))


def generation_finish(*, claim: Claim, status: str, **outcome: Any) -> Written:
    """End one claimed reply, fenced on its lease (LeaseLost when it was lost)."""
    return _committed(Write(claim=claim, end={"status": status, **outcome}))


def _committed(write: Write) -> Written:
    written = generation_commit(writes=[write])[write.claim.generation_id]
    if written.lease_lost:
        raise LeaseLost(str(write.claim.generation_id))
    return written


def reply_written(
    thread: Thread,
    *,
    deltas: tuple[str, ...] = ("Hel", "lo", " there"),
    status: str = "complete",
    error: dict[str, str] | None = None,
) -> Message:
    """Post a message and write its reply from `deltas`, one flush each, ending it with `status`; return the reply."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    claim = generation_claim(worker="test-worker", model="scripted")
    for index, text in enumerate(deltas):
        generation_append(claim=claim, text=text, first=index == 0)
    usage = {"input_tokens": 12, "output_tokens": len(deltas)}
    generation_finish(claim=claim, status=status, usage=usage, error=error)
    return Message.objects.get(pk=posted.reply.pk)


def reply_compact(*, message: Message) -> int:
    """Compact one ended reply's delta rows as a worker's round does; return how many rows fewer the log holds."""
    if not settings.STREAM_COMPACT_REPLIES:
        return 0
    covered, segments = replies_compaction(ended_log([message]))
    if not segments:
        return 0
    ranges_delete(covered)
    objects_insert(segments)
    return sum(segment.span - 1 for segment in segments)


def crashed_worker_wrote(thread, *, tokens: int):
    """Post a message and claim its reply as a worker that writes `tokens` tokens and dies; return both."""
    posted = message_post(thread=thread, content="Tell me more", client_id=None)
    claim = generation_claim(worker="crashed", model="scripted")
    reply_tokens = scripted_reply_tokens([Turn("user", "Tell me more")], settings.SCRIPTED_REPLY_TOKENS)
    # Cut mid-token: the continuation must pick up inside it without a seam.
    generation_append(claim=claim, text="".join(reply_tokens[:tokens]) + reply_tokens[tokens][:2], first=True)
    Generation.objects.filter(pk=claim.generation_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    return posted, claim
