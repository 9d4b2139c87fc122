"""The only code that sends to the channel layer.

The channel layer is a wake-up hint (invariant I2): everything sent here is
already committed, and a send that fails is logged, never raised, because
subscribers repair what they miss from the database. The notices that are not log
events are hints too: a tab that misses a rename shows the new title when it next
loads the thread, and a stream that misses its token's revocation ends at its own
periodic check of the token (streaming/subscription.py).

There is one publish path. Async code (the committer) awaits the `apublish_*`
coroutines. Sync services publish with `*_on_commit`, whose callbacks run on the thread
that committed: usually the single thread where Channels runs every ORM call of the
process's coroutines. A callback there must not wait for the channel layer (a slow
`group_send` would hold up every other coroutine's reads), so it hands the send to the
event loop that called into the sync code and returns at once. Only sync code that no
event loop called (a management command, a WSGI request) waits for its sends.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from typing import Any
from uuid import UUID

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .events import (
    ACCESS_REVOKED,
    LOG_EVENTS,
    LOG_GROUP,
    PRESENCE_CHANGED,
    THREAD_RENAMED,
    WORKERS_GROUP,
    EncodedEvent,
    encode,
    thread_frame,
    thread_group_name,
)
from .models import AbstractThread

logger = logging.getLogger(__name__)


def channel_layer() -> BaseChannelLayer:
    """Return the default channel layer, which the settings always configure."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("CHANNEL_LAYERS has no default layer")
    return layer


@contextlib.asynccontextmanager
async def _logged_on_failure(groups: str) -> AsyncIterator[None]:
    """Log a failed send instead of raising it: subscribers catch up on their own."""
    try:
        yield
    except Exception:
        logger.warning("channel layer send to %s failed; subscribers catch up on their own", groups, exc_info=True)


async def _agroup_send(group: str, message: dict[str, Any]) -> None:
    async with _logged_on_failure(group):
        await channel_layer().group_send(group, message)


async def apublish_events(thread_id: UUID, events: list[EncodedEvent]) -> None:
    """Publish a thread's new log events; call it only once their transaction has committed."""
    await apublish_many([(thread_id, events)])


async def apublish_many(batches: list[tuple[UUID, list[EncodedEvent]]]) -> None:
    """Publish the new events of many threads, committed together (a worker's group commit), as one message.

    One message on LOG_GROUP, not one per thread's group: a web process receives a round
    once and hands each thread's events to the feed of the thread, if someone there reads
    it (streaming/hub.py). Every process gets every thread's events; one it does not
    need costs it a dictionary lookup, where a message of its own cost a subscriber
    twenty-odd microseconds (README, "Where this differs from the design notes").
    """
    threads = [(str(thread_id), events) for thread_id, events in batches if events]
    if threads:
        await _agroup_send(LOG_GROUP, {"type": LOG_EVENTS, "threads": threads})


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    """Return the running event loop that called into this thread's sync code, if one did.

    asgiref's SyncToAsync (which `database_sync_to_async` and Django's handling of sync
    views are) records the loop in a thread-local of the thread it runs sync code in;
    AsyncToSync finds it the same way (tests/test_pins.py checks that it still does).
    """
    threadlocal = SyncToAsync.threadlocal
    if getattr(threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


# Sends handed to a loop and not done yet, held so that they run to the end.
_handed_over: set[Future] = set()


def hand_over(send: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Run `send(*args)` on the event loop that called into this sync code, without waiting for it.

    With no such loop (a management command, a WSGI request), run it here and wait:
    nothing else shares this thread.
    """
    loop = _calling_loop()
    if loop is None:
        async_to_sync(send)(*args)
        return
    future = asyncio.run_coroutine_threadsafe(send(*args), loop)
    _handed_over.add(future)
    future.add_done_callback(_handed_over.discard)


def publish_events_on_commit(thread_id: UUID, events: list[EncodedEvent]) -> None:
    """Publish a thread's new log events once the current transaction commits."""
    transaction.on_commit(lambda: hand_over(apublish_events, thread_id, events))


def notify_workers_on_commit(**message: Any) -> None:
    """Tell every worker loop about a queued or cancelled generation once the transaction commits."""
    _send_on_commit(WORKERS_GROUP, message)


def _send_on_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: hand_over(_agroup_send, group, message))


def notice(group: str, kind: str, **fields: Any) -> dict[str, Any]:
    """Return a notice for the readers of `group`, naming the group.

    A web process receives the notices of all its groups on one channel (streaming/hub.py):
    the group is how it tells which feed a notice is for.
    """
    return {"type": kind, "group": group, **fields}


def _notice_on_commit(group: str, kind: str, **fields: Any) -> None:
    _send_on_commit(group, notice(group, kind, **fields))


def publish_thread_renamed_on_commit(thread: AbstractThread) -> None:
    """Send the `thread` frame with the new title to the thread's subscribers once the transaction commits."""
    _notice_on_commit(thread_group_name(thread.id), THREAD_RENAMED, frame=encode(thread_frame(thread)))


def publish_access_revoked_on_commit(group: str) -> None:
    """Tell every stream opened under the AccessGrant of `group` to end, once the transaction commits."""
    _notice_on_commit(group, ACCESS_REVOKED)


async def apublish_presence_changed(thread_id: UUID) -> None:
    """Tell a thread's watchers that someone started or stopped watching it (streaming/presence.py)."""
    group = thread_group_name(thread_id)
    await _agroup_send(group, notice(group, PRESENCE_CHANGED))
