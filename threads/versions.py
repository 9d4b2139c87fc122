"""Versions of messages: editing a question, and choosing which version of a message is shown.

Regenerating a reply is threads.services.reply_regenerate. Each version is a sibling
under its parent (threads/paths.py); the earlier ones stay, with what followed them.
"""

from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction

from streaming.errors import BadRequest
from streaming.models import Chunk
from streaming.services.log import chunks_record, seq_allocate

from .inputs import parse_client_id
from .models import Message, Thread
from .paths import parent_of, path_branch, path_down_from
from .selectors import message_get_in_thread
from .services import Posted, _lock_thread, _refuse_if_busy, exchange_write, reply_regenerate, validate_content


def message_edit(
    *, thread: Thread, message: Message, content: object, client_id: UUID | None, author: User | None = None
) -> Posted:
    """Send `content` as `author`'s new version of the user `message` (the owner's when not given), answered by a
    new reply, on the active path.

    A send: idempotent by client_id (I7), Busy while a reply is being written (I6), counted
    against the author's rate limit.
    """
    if message.thread_id != thread.pk or message.role != Message.Role.USER:
        raise BadRequest("Only a user message in this thread can be edited.")
    content = validate_content(content)
    with transaction.atomic():
        locked = _lock_thread(thread, person=author)
        return exchange_write(
            thread=locked,
            content=content,
            client_id=client_id,
            parent=parent_of(message),
            branches=True,
            author=author,
        )


def version_switch(*, thread: Thread, message: Message) -> int:
    """Show the version `message`, with the newest versions below it; return the seq of the `switch` event.

    Only a version of a message on the active path can be chosen; choosing the one shown
    writes nothing and answers the thread's last seq. Busy while a reply is being written:
    its conversation must stay the path it was started on.
    """
    if message.thread_id != thread.pk:
        raise BadRequest("Only a message in this thread can be shown.")
    with transaction.atomic():
        locked = _lock_thread(thread)
        message.refresh_from_db(fields=["on_path"])
        if message.on_path:
            return locked.last_seq
        _refuse_if_busy(locked)
        path_branch(thread=locked, parent=parent_of(message))
        path = path_down_from(message=message)
        Message.objects.filter(pk__in=path).update(on_path=True)
        seq = seq_allocate(thread_id=locked.pk)
        switch = Chunk(thread=locked, seq=seq, message=message, kind=Chunk.Kind.SWITCH, text=" ".join(map(str, path)))
        chunks_record(thread_id=locked.pk, chunks=[switch], messages=[message])
    return seq


def version_frame_apply(*, thread: Thread, frame: dict[str, object], person: User) -> None:
    """Apply `person`'s WebSocket `edit`, `regenerate` or `switch` frame; every tab sees it through the log."""
    message_id = frame.get("message_id")
    if not isinstance(message_id, str):
        raise BadRequest("message_id must be the id of a message of this thread.")
    message = message_get_in_thread(thread=thread, message_id=message_id)
    if frame["type"] == "edit":
        client_id = parse_client_id(frame.get("client_id"))
        message_edit(thread=thread, message=message, content=frame.get("content"), client_id=client_id, author=person)
    elif frame["type"] == "regenerate":
        reply_regenerate(thread=thread, reply=message, person=person)
    else:
        version_switch(thread=thread, message=message)
