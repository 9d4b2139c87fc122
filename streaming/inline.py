"""Run the worker loop inside the web process (STREAM_INLINE_WORKER, on by default).

Daphne has no ASGI lifespan events, so the worker starts with the first
connection or request that reaches this process's event loop.
"""

import asyncio
import contextvars
import logging

from django.conf import settings

from .worker import StreamWorker

logger = logging.getLogger(__name__)

# One worker per event loop; the task is kept here so it is not garbage-collected. None once
# stopped for good: the process is shutting down, and no request starts another (it would claim
# again the replies just handed over, and leave with their leases).
_workers: dict[asyncio.AbstractEventLoop, tuple[StreamWorker, asyncio.Task] | None] = {}


def inline_worker() -> StreamWorker | None:
    """Return this loop's inline worker, if one runs."""
    entry = _workers.get(asyncio.get_running_loop())
    return entry[0] if entry else None


def ensure_inline_worker() -> None:
    """Start this loop's worker, or a new one if the last one ended (it crashed: it is never stopped here)."""
    loop = asyncio.get_running_loop()
    if loop in _workers and _workers[loop] is None:
        return  # stopped for good
    entry = _workers.get(loop)
    if entry is None or entry[1].done():
        if entry is not None:
            logger.error("the inline worker loop ended; starting a new one", exc_info=_task_error(entry[1]))
        worker = StreamWorker()
        # A context of its own: the loop outlives the request that started it, and its traces are not that request's.
        _workers[loop] = (worker, loop.create_task(worker.run(), context=contextvars.Context()))


def _task_error(task: asyncio.Task) -> BaseException | None:
    return None if task.cancelled() else task.exception()


class InlineWorkerMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if settings.STREAM_INLINE_WORKER and scope["type"] in ("http", "websocket"):
            ensure_inline_worker()
        return await self.app(scope, receive, send)


async def stop_inline_worker() -> None:
    """Stop this loop's inline worker for good, handing its running replies over, and wait for it to end."""
    loop = asyncio.get_running_loop()
    entry, _workers[loop] = _workers.get(loop), None
    if entry is not None:
        worker, task = entry
        worker.stop()
        await task
