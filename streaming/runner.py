"""Run one claimed generation: read the provider, and hand its text to the worker's group commit."""

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

from django.conf import settings
from opentelemetry import trace

from . import metrics
from .committer import Committer, RoundFailed
from .logs import log_generation
from .models import MessageStatus
from .providers import BaseProvider, ProviderError, ReplyEnd
from .services.claims import Claim
from .services.commits import LeaseLost, Write, Written

# A no-op unless tracing is configured (chatsite/tracing.py).
tracer = trace.get_tracer(__name__)


class ReplyRun:
    """One attempt at writing a reply, held by one worker under one lease.

    Reading the provider only buffers text: the worker's `Committer` takes whatever the
    buffer holds at its next flush tick (or at once when STREAM_FLUSH_MAX_CHARS are
    buffered). Rounds run one at a time, so a reply's chunks commit in the order its text
    arrived. When the provider ends, the rest of the text and the `end` event go in one
    last round.
    """

    def __init__(self, claim: Claim, provider: BaseProvider, committer: Committer) -> None:
        self.claim = claim
        self.generation_id: UUID = claim.generation_id
        self.provider = provider
        self.committer = committer
        self.loop = asyncio.get_running_loop()
        self.buffer: list[str] = []
        self.buffered_chars = 0
        self.wrote_text = bool(claim.request.partial)
        # Text of the reply known to be committed: this attempt's and the earlier ones'.
        self.committed_chars = len(claim.request.partial)
        self.started_at = self.loop.time()
        self.flushes = 0
        # When this attempt's first text was committed: a completed reply's token rate counts from there.
        self.first_text_at: float | None = None
        # The lease is renewed about once a second, by a round with or without text from this reply.
        self.renew_interval = min(settings.GENERATION_LEASE_SECONDS / 3, 1.0)
        self.renew_at = self.started_at + self.renew_interval
        self.reader: asyncio.Task | None = None
        self.cancelled = False
        # Why this attempt must write nothing more: its lease was lost, or the database stayed away.
        self.failure: LeaseLost | RoundFailed | None = None
        # How the reply ended, once the provider is done; its `end` event is then written.
        self.outcome: dict[str, Any] | None = None
        self.ended = self.loop.create_future()

    async def run(self) -> None:
        """Write the reply inside its `chat.reply` span, which the provider's own spans nest in."""
        attributes: dict[str, str | int] = {
            "chat.generation.id": str(self.generation_id),
            "chat.thread.id": str(self.claim.thread_id),
            "chat.generation.attempt": self.claim.attempt,
        }
        with tracer.start_as_current_span("chat.reply", attributes=attributes):
            await self._run()

    async def _run(self) -> None:
        log_generation("generation.start", self.claim, resumed_chars=len(self.claim.request.partial))
        self.committer.add(self)
        try:
            outcome = await self._read_until_end()
            self.outcome = outcome  # the next round writes the rest of the text and the `end` event
            self.committer.request(self)
            await self.ended
        except LeaseLost:
            log_generation("generation.lease_lost", self.claim, level=logging.WARNING, ms=self._elapsed_ms())
        except RoundFailed as error:
            # The lease runs out (while the database is away, say); then a worker takes the reply
            # over from its committed text, or ends it `failed` when it is out of attempts.
            log_generation("generation.abandoned", self.claim, level=logging.ERROR, reason=error.reason)
        else:
            ended_with = outcome.get("error")
            log_generation(
                "generation.end",
                self.claim,
                level=logging.WARNING if ended_with else logging.INFO,
                status=outcome["status"],
                stop_reason=outcome.get("stop_reason") or "-",
                error=ended_with["code"] if ended_with else "-",
                ms=self._elapsed_ms(),
                chunks=self.flushes,
                chars=self.committed_chars,
                output_tokens=(outcome.get("usage") or {}).get("output_tokens", "-"),
            )
            self._count_end(outcome)
        finally:
            self.committer.discard(self)

    def cancel(self) -> None:
        """Stop reading the provider and end the reply `cancelled`, keeping its text (asked by a person)."""
        self.cancelled = True
        self._stop_reading()

    def _fail(self, error: LeaseLost | RoundFailed) -> None:
        self.failure = self.failure or error
        self._stop_reading()
        if self.outcome is not None and not self.ended.done():
            self.ended.set_exception(error)

    def _stop_reading(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()

    async def _read_until_end(self) -> dict[str, Any]:
        """Read the provider until it ends, fails or is cancelled; return how the reply ended."""
        self.reader = asyncio.ensure_future(self._read())
        try:
            outcome = await self.reader
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker is handing the reply over
            outcome = {"status": MessageStatus.CANCELLED}
        if self.failure is not None:
            raise self.failure
        return outcome

    async def _read(self) -> dict[str, Any]:
        # Cancelling the read raises inside the provider, which closes its upstream
        # request instead of draining it.
        async with contextlib.aclosing(self.provider.stream(self.claim.request)) as events:
            try:
                async for event in events:
                    if isinstance(event, ReplyEnd):
                        usage = {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens}
                        return {"status": MessageStatus.COMPLETE, "stop_reason": event.stop_reason, "usage": usage}
                    self._buffer(event.text)
            except ProviderError as error:
                return {"status": MessageStatus.FAILED, "error": {"code": error.code, "detail": error.detail}}
        return {"status": MessageStatus.COMPLETE}

    def _buffer(self, text: str) -> None:
        if not text:
            return
        self.buffer.append(text)
        self.buffered_chars += len(text)
        if self.buffered_chars >= settings.STREAM_FLUSH_MAX_CHARS:
            self.committer.request(self)
        else:
            self.committer.text_buffered()

    # The committer's side (`committer.Writer`).

    def has_text(self) -> bool:
        return bool(self.buffer)

    def take_write(self) -> Write:
        text = "".join(self.buffer)
        self.buffer, self.buffered_chars = [], 0
        return Write(
            claim=self.claim,
            text=text,
            first=not self.wrote_text,
            committed_chars=self.committed_chars,
            end=self.outcome,
            renew=self.loop.time() >= self.renew_at,
        )

    def written(self, write: Write, result: Written) -> None:
        if result.lease_lost:
            self._fail(LeaseLost(str(self.generation_id)))
            return
        if write.renew:
            self.renew_at = self.loop.time() + self.renew_interval
        if write.text:
            if not self.wrote_text:
                log_generation("generation.first_token", self.claim, ms=self._elapsed_ms())
                metrics.TIME_TO_FIRST_TOKEN.observe(self.loop.time() - self.started_at)
            if self.first_text_at is None:
                self.first_text_at = self.loop.time()
            self.wrote_text = True
            self.committed_chars += len(write.text)
            self.flushes += 1
        if write.end is not None:
            if not self.ended.done():
                self.ended.set_result(None)
        elif result.cancel_requested:
            self.cancel()

    def abandoned(self, error: RoundFailed) -> None:
        self._fail(error)

    def _count_end(self, outcome: dict[str, Any]) -> None:
        """Count the reply's end by status and, for a completed one, observe its output tokens per second."""
        metrics.REPLIES_ENDED.labels(status=outcome["status"]).inc()
        output_tokens = (outcome.get("usage") or {}).get("output_tokens")
        if outcome["status"] != MessageStatus.COMPLETE or not output_tokens or self.first_text_at is None:
            return
        streamed_s = self.loop.time() - self.first_text_at
        if streamed_s > 0:
            metrics.TOKEN_RATE.observe(output_tokens / streamed_s)

    def _elapsed_ms(self) -> int:
        return round((self.loop.time() - self.started_at) * 1000)
