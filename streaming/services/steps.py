"""Durable steps of an agent reply: its part events, each step committed before the next begins.

A step (a model call's tool calls, a tool's run beginning, its result, an approval asked
for) is one transaction of its own, fenced on the generation's lease like the group
commit: a worker that lost its lease writes nothing. Text keeps flowing through the group
commit; the runner flushes it before a step, so the log holds a reply's events in the
order they happened.
"""

from dataclasses import dataclass
from uuid import UUID

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from ..broadcast import notify_workers_on_commit, publish_events_on_commit
from ..errors import NoApprovalPending
from ..events import EncodedEvent, encode_chunks
from ..models import Chunk, Generation, get_message_model
from ..parts import part_json
from ..protocol import ApprovalPart, Part
from ..selectors import logged_reply_parts
from .claims import Claim
from .commits import LeaseLost, Write, _fence
from .log import seq_allocate


@dataclass(frozen=True)
class PartEvent:
    """A part event to log: `part_start` and `part_end` with the part, `part_delta` with the text it adds."""

    kind: str
    index: int
    part: Part | None = None
    text: str = ""

    def chunk(self, *, thread_id: UUID, message_id: UUID, seq: int) -> Chunk:
        text = part_json(self.part) if self.part is not None else self.text
        return Chunk(
            thread_id=thread_id, seq=seq, message_id=message_id, kind=self.kind, part_index=self.index, text=text
        )


@transaction.atomic
def step_commit(*, claim: Claim, events: list[PartEvent], pause: bool = False) -> list[EncodedEvent]:
    """Log one step's part events under the claim's lease; return them encoded, for the caller to publish.

    With `pause`, the generation then waits for a person's approval: it is released, with no
    lease or worker, until `tool_call_decide` queues it again. Raises LeaseLost when the
    lease is no longer held.
    """
    if not _fence([Write(claim=claim)]):
        raise LeaseLost(str(claim.generation_id))
    chunks = _chunks_insert(thread_id=claim.thread_id, message_id=claim.message_id, events=events)
    if pause:
        Generation.objects.filter(pk=claim.generation_id).update(
            status=Generation.Status.AWAITING_APPROVAL, lease_token=None, lease_expires_at=None, worker=""
        )
    return encode_chunks(chunks, {})


astep_commit = database_sync_to_async(step_commit)


def _chunks_insert(*, thread_id: UUID, message_id: UUID, events: list[PartEvent]) -> list[Chunk]:
    first = seq_allocate(thread_id=thread_id, count=len(events))
    now = timezone.now()
    chunks = [
        event.chunk(thread_id=thread_id, message_id=message_id, seq=first + offset)
        for offset, event in enumerate(events)
    ]
    for chunk in chunks:
        chunk.created_at = now
    Chunk.objects.bulk_create(chunks)
    return chunks


@transaction.atomic
def tool_call_decide(*, thread_id: UUID, tool_call_id: str, approved: bool) -> None:
    """Approve or deny a tool call of the thread's reply awaiting approval, and resume it once none waits.

    The decision is logged as the approval's `part_end`, so the worker that resumes the reply
    (any worker, after any restart) reads it from the log. NoApprovalPending when the
    thread has no reply waiting for a decision on that call. The caller checks that the
    person may write the thread.
    """
    generation = (
        Generation.objects.select_for_update()
        .filter(thread_id=thread_id, status=Generation.Status.AWAITING_APPROVAL)
        .first()
    )
    if generation is None:
        raise NoApprovalPending("No reply in this thread is waiting for an approval.")
    message = get_message_model().objects.get(pk=generation.message_id)
    parts = logged_reply_parts(message=message)
    waiting = {
        index: part for index, part in enumerate(parts) if part["type"] == "approval" and part["state"] == "requested"
    }
    decided = next((index for index, part in waiting.items() if part["tool_call_id"] == tool_call_id), None)
    if decided is None:
        raise NoApprovalPending("That tool call is not waiting for an approval.")
    requested = waiting[decided]
    assert requested["type"] == "approval"
    part = ApprovalPart(
        type="approval", tool_call_id=tool_call_id, state="approved" if approved else "denied", retry=requested["retry"]
    )
    chunks = _chunks_insert(
        thread_id=thread_id,
        message_id=message.id,
        events=[PartEvent(kind=Chunk.Kind.PART_END, index=decided, part=part)],
    )
    publish_events_on_commit(thread_id, encode_chunks(chunks, {}))
    if len(waiting) == 1:
        # Every decision is in: any worker takes the reply on from its log. Attempts count
        # failures to write, not pauses: the resumed reply starts with all of them.
        Generation.objects.filter(pk=generation.pk).update(status=Generation.Status.QUEUED, attempts=0)
        notify_workers_on_commit(type="generation.queued")
