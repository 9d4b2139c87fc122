"""The embedded default: the web process runs the worker loop itself (STREAM_INLINE_WORKER)."""

import asyncio

import pytest

from streaming import inline
from streaming.inline import inline_worker, stop_inline_worker

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
