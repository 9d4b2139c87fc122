"""Replies written in tests the way the worker writes them, through its own services."""
from streaming.services import generation_append, generation_claim, generation_finish
from threads.models import Message, Thread
from threads.services import message_post


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
