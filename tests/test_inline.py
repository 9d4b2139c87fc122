"""The embedded default: the web process runs the worker loop itself (STREAM_INLINE_WORKER)."""

import asyncio

import pytest

from streaming import inline
from streaming.inline import inline_worker, stop_inline_worker
from streaming.models import Generation

pytestmark = pytest.mark.django_db(transaction=True)


async def test_first_connection_starts_inline_worker(thread, user, connect, settings):
    """With STREAM_INLINE_WORKER on, a reply completes with no separate worker process."""
    settings.STREAM_INLINE_WORKER = True
    try:
        socket = await connect(thread.id, user)
        await socket.send({"type": "send", "content": "Inline?"})
        end = await socket.receive_until(lambda frame: frame["type"] == "end")
        assert end["status"] == "complete"
        assert inline_worker() is not None
    finally:
        await stop_inline_worker()
    assert inline_worker() is None


async def test_inline_worker_off_leaves_replies_queued(thread, user, connect, settings):
    """With STREAM_INLINE_WORKER off, the web process starts no worker."""
    socket = await connect(thread.id, user)
    await socket.receive()
    assert inline_worker() is None


async def test_ended_inline_worker_is_replaced(thread, user, connect, settings):
    """An inline worker whose loop ended is replaced by the next connection, so replies keep flowing."""
    settings.STREAM_INLINE_WORKER = True
    try:
        await connect(thread.id, user)
        first = inline_worker()
        first.stop()  # ends its loop, as a crash would
        await asyncio.wait_for(inline._workers[asyncio.get_running_loop()][1], 10)
        socket = await connect(thread.id, user)
        await socket.send({"type": "send", "content": "Still there?"})
        end = await socket.receive_until(lambda frame: frame["type"] == "end")
        assert end["status"] == "complete"
        assert inline_worker() is not first
    finally:
        await stop_inline_worker()


async def test_a_stopped_inline_worker_stays_stopped(thread, user, connect, settings):
    """After the shutdown's hand-over, a connection still reaching the process starts no worker to claim them again."""
    settings.STREAM_INLINE_WORKER = True
    settings.SCRIPTED_TOKENS_PER_SECOND = 5  # slow: the reply still runs at the hand-over
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Go on slowly"})
    await socket.receive_until(lambda frame: frame["type"] == "delta")
    await stop_inline_worker()
    generation = await Generation.objects.aget(message__thread=thread)
    assert generation.status == Generation.Status.QUEUED, "handed over"

    await connect(thread.id, user)  # a client reconnecting, or a probe, during the shutdown
    assert inline_worker() is None
    assert (await Generation.objects.aget(pk=generation.pk)).status == Generation.Status.QUEUED
