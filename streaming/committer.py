"""Group commit: a worker's replies write their text together, one transaction per tick.

Replies only buffer their provider's text. The first text buffered after a round arms the
worker's flush tick, STREAM_FLUSH_MS later: the round it starts takes every reply with text
buffered, every reply that ended, and every reply whose lease is due for renewal. Only a
reply that buffered STREAM_FLUSH_MAX_CHARS, or whose step waits for its text, asks for a
round at once; a renewal has a round of its own only when no tick is coming. A round
commits in one transaction of set-based statements (`generation_commit`), then publishes
each thread's new events with one channel-layer call (I2: only after the commit) while
the next round commits. A token waits for the tick, then for any round in progress and
its own, as it would with a timer per reply; but a worker commits at most about
1000 / STREAM_FLUSH_MS transactions a second however many replies it writes, and under
load a round that starts late simply takes more text.

The replies that ended at a tick commit in a transaction of their own, right after that
tick's text round has committed and its publish has started: an end writes the reply's
text to its message and compacts its log, and in the text round it made that round, and
so every token in it, three to four times slower (README, "Where the time went").
"""

import asyncio
import logging
from typing import Protocol
from uuid import UUID

from django.conf import settings
from django.db import InterfaceError, OperationalError
from opentelemetry import trace

from . import metrics
from .broadcast import apublish_many
from .services.commits import Write, Written, ageneration_commit

logger = logging.getLogger(__name__)
# A no-op unless tracing is configured (chatsite/tracing.py).
tracer = trace.get_tracer(__name__)

# Backoff between retries of a round that failed because the database was unreachable.
RETRY_FIRST_DELAY_SECONDS = 0.1
RETRY_MAX_DELAY_SECONDS = 1.0


class RoundFailed(Exception):
    """A round could not be committed: its replies write nothing more and are left to a takeover.

    `reason` names why, for the logs: `database_unreachable` when the round kept failing
    for GENERATION_WRITE_RETRY_SECONDS, `write_failed` when the database refused it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Writer(Protocol):
    """A reply as the committer sees it (`streaming.runner.ReplyRun`)."""

    generation_id: UUID
    # Loop time from which its next write renews its lease: a round takes it then, text or not.
    renew_at: float

    def has_text(self) -> bool:
        """Whether it holds text not handed to a round yet."""

    def take_write(self) -> Write:
        """Hand over everything not yet written: the round now owns it."""

    def written(self, write: Write, result: Written) -> None:
        """Learn the outcome of a committed write (its events are on their way to subscribers)."""

    def abandoned(self, error: RoundFailed) -> None:
        """Learn that its write could not be committed."""


class Committer:
    def __init__(self) -> None:
        self.writers: dict[UUID, Writer] = {}
        # Writers that asked for a round at once: they buffered a lot, or a step waits for their text.
        self.requested: set[UUID] = set()
        # Writers that ended: the next tick takes them with or without text.
        self.ending: set[UUID] = set()
        # Loop time of the next flush tick; None while no writer has text waiting.
        self.tick_at: float | None = None
        self.wake = asyncio.Event()
        # The last round's publish: it overlaps the next round's commit, never another publish.
        self.publishing: asyncio.Future | None = None

    def add(self, writer: Writer) -> None:
        self.writers[writer.generation_id] = writer

    def discard(self, writer: Writer) -> None:
        self.writers.pop(writer.generation_id, None)
        self.requested.discard(writer.generation_id)
        self.ending.discard(writer.generation_id)

    def text_buffered(self) -> None:
        """A writer buffered text: make sure a tick will take it."""
        if self.tick_at is None:
            self.tick_at = asyncio.get_running_loop().time() + settings.STREAM_FLUSH_MS / 1000
            self.wake.set()  # the loop may be waiting for a renewal, later than the tick

    def end(self, writer: Writer) -> None:
        """Commit `writer`, which ended, at the next tick, in a round of the tick's ends.

        At the tick rather than at once: under load a reply ends every few milliseconds,
        and a round for each would hold up the ticks of every other reply's text.
        """
        self.ending.add(writer.generation_id)
        self.text_buffered()

    def request(self, writer: Writer) -> None:
        """Include `writer` in a round now."""
        self.requested.add(writer.generation_id)
        self.wake.set()

    async def run(self) -> None:
        """Commit rounds until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self._until_next_deadline())
            except TimeoutError:
                pass
            self.wake.clear()
            now = asyncio.get_running_loop().time()
            tick_due_at = self.tick_at
            tick = tick_due_at is not None and now >= tick_due_at
            # A renewal waits for a tick that is coming anyway: a lease is renewed well before it
            # runs out, and under load a round of renewals alone would delay every reply's text.
            renewing = self.tick_at is None or tick
            ending: set[UUID] = set()
            if tick_due_at is not None and tick:
                # Late when the last round, a round of ends or a claim held the database thread past it.
                metrics.TICK_LATENESS_SECONDS.observe(now - tick_due_at)
                self.tick_at = None
                ending, self.ending = self.ending, set()
            due = [
                writer
                for generation_id, writer in self.writers.items()
                if generation_id in self.requested
                or (tick and writer.has_text())
                or generation_id in ending
                or (renewing and writer.renew_at <= now)
            ]
            self.requested.clear()
            # The text first: its tokens do not wait for the ends' heavier writes.
            for writers in (
                [writer for writer in due if writer.generation_id not in ending],
                [writer for writer in due if writer.generation_id in ending],
            ):
                if writers:
                    await self._round(writers)

    def _until_next_deadline(self) -> float | None:
        """Seconds until the next tick, or else the next lease renewal; None when neither is due."""
        if self.tick_at is not None:
            deadline = self.tick_at  # it takes the renewals due by then
        elif self.writers:
            deadline = min(writer.renew_at for writer in self.writers.values())
        else:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def _take(self, writers: list[Writer]) -> list[Write]:
        """Take the writers' writes; a writer whose end is taken leaves: no later round takes it again."""
        writes = [writer.take_write() for writer in writers]
        for writer, write in zip(writers, writes, strict=True):
            if write.end is not None:
                self.discard(writer)
        return writes

    async def _round(self, writers: list[Writer]) -> None:
        with metrics.ROUND_SECONDS.time(), tracer.start_as_current_span("chat.round") as span:
            span.set_attribute("chat.round.replies", len(writers))
            writes = self._take(writers)
            try:
                with metrics.COMMIT_SECONDS.time():
                    results = await self._commit(writes)
            except RoundFailed as error:
                for writer in writers:
                    writer.abandoned(error)
                return
            except Exception:
                # Not an outage but a refusal (a constraint, a bug): the round is given up, and the
                # committer lives on for the worker's other replies.
                logger.exception("committing %d replies failed; leaving them to a takeover", len(writes))
                for writer in writers:
                    writer.abandoned(RoundFailed("write_failed"))
                return
        if self.publishing is not None:
            await self.publishing
        self.publishing = asyncio.ensure_future(
            apublish_many([(write.claim.thread_id, results[write.claim.generation_id].events) for write in writes])
        )
        for writer, write in zip(writers, writes, strict=True):
            writer.written(write, results[write.claim.generation_id])

    async def _commit(self, writes: list[Write]) -> dict[UUID, Written]:
        """Commit one round, retrying it with bounded backoff while the database is unreachable.

        The round is one transaction, so a failed one left nothing behind and is safe to
        repeat; a retry also checks for text whose COMMIT succeeded but whose answer was lost.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + settings.GENERATION_WRITE_RETRY_SECONDS
        delay = RETRY_FIRST_DELAY_SECONDS
        retrying = False
        while True:
            try:
                return await ageneration_commit(writes=writes, retrying=retrying)
            except (OperationalError, InterfaceError) as error:
                if loop.time() + delay > give_up_at:
                    raise RoundFailed("database_unreachable") from error
                logger.warning(
                    "database write failed for %d replies (%s); retrying in %.1fs",
                    len(writes),
                    str(error).strip() or type(error).__name__,
                    delay,
                )
            retrying = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)
