"""The active path of a thread: the one version of each message that is shown and sent to the provider.

A thread is a tree: each message follows its `parent`, and the versions of a message
(its edits, a reply's regenerations) are siblings under one parent. The messages with
`on_path` set form one chain from a first message down; a child is always written after
its parent, so that chain in seq order is the conversation in order.
"""

from uuid import UUID

from django.db import connection

from streaming.errors import BadRequest
from streaming.services.sql import db_id, returned_uuid

from .models import Message, Thread


def path_tail(*, thread: Thread) -> Message | None:
    """Return the last message of the thread's active path, which a new message follows; None in an empty thread.

    Only its id and seq are read (the rest loads if asked for), in SQL of its own: every
    send reads it, and the ORM's query of the whole row cost about five times the CPU.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, seq FROM {Message._meta.db_table} WHERE thread_id = %s AND on_path ORDER BY seq DESC LIMIT 1",
            [db_id(Thread, thread.pk)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    message_id, seq = row
    return Message.from_db(connection.alias, ["id", "seq"], [returned_uuid(message_id), seq])


def path_leave(*, thread: Thread, parent: Message | None) -> None:
    """Take the messages below `parent` (all of them when None) off the active path, to make way for another branch."""
    below = Message.objects.filter(thread=thread, on_path=True)
    if parent is not None:
        below = below.filter(seq__gt=parent.seq)
    below.update(on_path=False)


def path_branch(*, thread: Thread, parent: Message | None) -> None:
    """Make way for a new version of a child of `parent`: BadRequest unless `parent` is on the active path."""
    if parent is not None and not Message.objects.filter(pk=parent.pk, on_path=True).exists():
        raise BadRequest("Only a version of a message on the active path can be added or shown.")
    path_leave(thread=thread, parent=parent)


def parent_of(message: Message) -> Message | None:
    """Return the message `message` follows, typed as the concrete model it is."""
    parent = message.parent
    assert parent is None or isinstance(parent, Message), "a message follows a message of its thread"
    return parent


def path_down_from(*, message: Message) -> list[UUID]:
    """Return the path from `message` down, choosing at each step the newest version: `message` first."""
    newest_child: dict[UUID, UUID] = {}
    # Oldest first, so that a later child replaces an earlier one.
    rows = Message.objects.filter(thread_id=message.thread_id, seq__gt=message.seq).order_by("seq")
    for child_id, parent_id in rows.values_list("id", "parent_id"):
        newest_child[parent_id] = child_id
    path = [message.id]
    while path[-1] in newest_child:
        path.append(newest_child[path[-1]])
    return path
