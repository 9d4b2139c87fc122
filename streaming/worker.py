"""The worker loop: claims generations and runs them, woken through the channel layer."""

import asyncio
import logging
import os
import socket
import time
import uuid
from functools import partial
from uuid import UUID

from channels.layers import BaseChannelLayer
from django.conf import settings
from django.db import DatabaseError

from . import metrics
from .broadcast import channel_layer
from .committer import Committer
from .events import WORKERS_GROUP
from .logs import log_generation
from .providers import get_provider
from .runner import ReplyRun
from .services.claims import ageneration_claim_many, ageneration_release

logger = logging.getLogger(__name__)

# How long the listener waits before rejoining the channel layer after it failed.
LISTEN_RETRY_SECONDS = 1.0


class StreamWorker:
    """Runs up to `concurrency` replies at once in the current event loop.

    A new generation wakes the loop through a message to the workers' group, so an
    idle worker starts it at once; the poll every STREAM_WORKER_POLL_SECONDS is
    only the safety net for a lost message, and also finds expired leases. Claims
    are taken in batches, as many as there are free slots, and the replies' text is
    written by one `Committer`, in group commits.
    """

    def __init__(self, *, name: str | None = None, concurrency: int | None = None) -> None:
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.STREAM_WORKER_CONCURRENCY
        self.runs: dict[UUID, tuple[asyncio.Task, ReplyRun]] = {}
        self.committer = Committer()
        self.wake = asyncio.Event()
        self.stopping = False
        # When the loop last came round: a readiness probe tells a live loop from a stuck one.
        self.looped_at: float | None = None

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        committing = asyncio.create_task(self.committer.run())
        logger.info("worker %s started (concurrency %d)", self.name, self.concurrency)
        try:
            while not self.stopping:
                self.wake.clear()
                await self._claim_while_free()
                self.looped_at = time.monotonic()
                try:
                    await asyncio.wait_for(self.wake.wait(), settings.STREAM_WORKER_POLL_SECONDS)
                except TimeoutError:
                    pass
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await self._hand_over(committing)
            logger.info("worker %s stopped", self.name)

    def stop(self) -> None:
        """Stop claiming; running replies are handed over to other workers."""
        self.stopping = True
        self.wake.set()

    async def _claim_while_free(self) -> None:
        provider = get_provider()
        while not self.stopping and len(self.runs) < self.concurrency:
            try:
                claims = await ageneration_claim_many(
                    worker=self.name, model=provider.model_name(), limit=self.concurrency - len(self.runs)
                )
            except DatabaseError as error:
                logger.warning("worker %s: claiming failed (%s); retrying at the next poll", self.name, error)
                return
            except Exception:
                logger.exception("worker %s: claiming failed; retrying at the next poll", self.name)
                return
            if not claims:
                return
            for claim in claims:
                if claim.attempt > 1:
                    log_generation("generation.takeover", claim, worker=self.name)
                    metrics.TAKEOVERS.inc()
                run = ReplyRun(claim, provider, self.committer)
                task = asyncio.create_task(run.run())
                self.runs[claim.generation_id] = (task, run)
                metrics.ACTIVE_REPLIES.inc()
                task.add_done_callback(partial(self._run_done, claim.generation_id))

    def _run_done(self, generation_id: UUID, task: asyncio.Task) -> None:
        self.runs.pop(generation_id, None)
        metrics.ACTIVE_REPLIES.dec()
        if not task.cancelled() and task.exception() is not None:
            logger.error("generation %s: run crashed", generation_id, exc_info=task.exception())
        if len(self.runs) == self.concurrency - 1:
            # The worker was full: generations may be waiting for this slot. Otherwise every
            # queued one woke the worker already, and a claim now would find nothing.
            self.wake.set()

    async def _listen(self) -> None:
        """Receive wake-ups and cancels from the workers' group, through channel-layer outages."""
        layer = channel_layer()
        while True:
            try:
                channel = await layer.new_channel()
                await layer.group_add(WORKERS_GROUP, channel)
                rejoin = asyncio.create_task(self._stay_in_group(layer, channel))
                try:
                    while True:
                        self._on_message(await layer.receive(channel))
                finally:
                    rejoin.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("worker %s: channel layer unavailable (%s); polling meanwhile", self.name, error)
                await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def _stay_in_group(self, layer: BaseChannelLayer, channel: str) -> None:
        """Join the group again every poll: a restarted Redis has forgotten it without breaking our receive."""
        while True:
            await asyncio.sleep(settings.STREAM_WORKER_POLL_SECONDS)
            try:
                await layer.group_add(WORKERS_GROUP, channel)
            except Exception:
                # The layer is down: the receive fails as well, and the listener starts over.
                logger.debug("worker %s: rejoining the workers' group failed", self.name, exc_info=True)

    def _on_message(self, message: dict) -> None:
        if message["type"] == "generation.queued":
            self.wake.set()
        elif message["type"] == "generation.cancel":
            entry = self.runs.get(UUID(message["generation_id"]))
            if entry is not None:
                entry[1].cancel()

    async def _hand_over(self, committing: asyncio.Task) -> None:
        """Cancel running replies and release their leases so another worker continues them at once."""
        runs = list(self.runs.values())
        for task, _ in runs:
            task.cancel()
        await asyncio.gather(*(task for task, _ in runs), return_exceptions=True)
        # Text the replies had not committed yet is written again by whoever takes them over.
        committing.cancel()
        await asyncio.gather(committing, return_exceptions=True)
        for _, run in runs:
            try:
                await ageneration_release(claim=run.claim)
            except Exception as error:
                # Its lease runs out instead, and a worker takes it over then.
                logger.warning("worker %s: could not release generation %s (%s)", self.name, run.generation_id, error)
            else:
                logger.info("worker %s: handed generation %s over", self.name, run.generation_id)
