"""Run one claimed generation: stream from the provider into coalesced, fenced chunk rows."""
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from threads.models import Message

from .broadcast import apublish_events
from .logs import log_generation
from .providers import BaseProvider, ProviderError, ReplyEnd, TextDelta
from .services import Claim, LeaseLost, generation_append, generation_finish, generation_heartbeat

logger = logging.getLogger(__name__)

T = TypeVar("T")

aappend = database_sync_to_async(generation_append)
afinish = database_sync_to_async(generation_finish)
aheartbeat = database_sync_to_async(generation_heartbeat)

# Backoff between retries of a write that failed because the database was unreachable.
WRITE_RETRY_FIRST_DELAY_SECONDS = 0.1
WRITE_RETRY_MAX_DELAY_SECONDS = 1.0


class DatabaseUnreachable(Exception):
    """A write kept failing for GENERATION_WRITE_RETRY_SECONDS: leave the reply to a takeover."""


class ReplyRun:
    """One attempt at writing a reply, held by one worker under one lease.

    A single loop waits for the provider's next event, the flush deadline, the
    heartbeat deadline or a cancel, whichever comes first. Flushes happen in that
    loop, one at a time, so chunks commit in the order their text arrived.
    """

    def __init__(self, claim: Claim, provider: BaseProvider, cancel: asyncio.Event) -> None:
        self.claim = claim
        self.provider = provider
        self.cancel = cancel
        self.buffer: list[str] = []
        self.buffered_chars = 0
        self.flush_at: float | None = None
        self.wrote_text = bool(claim.request.partial)
        # Text of the reply known to be committed: this attempt's and the earlier ones'.
        self.committed_chars = len(claim.request.partial)
        self.loop = asyncio.get_running_loop()
        self.started_at = self.loop.time()
        self.flushes = 0
        self.flush_s = settings.STREAM_FLUSH_MS / 1000
        # Flushes renew the lease; the heartbeat covers a provider that is slow to speak.
        self.heartbeat_s = min(settings.GENERATION_LEASE_SECONDS / 3, 1.0)
        self.renew_at = self.loop.time() + self.heartbeat_s

    async def run(self) -> None:
        log_generation("generation.start", self.claim, resumed_chars=len(self.claim.request.partial))
        try:
            outcome = await self._stream()
            await self._flush()
            await self._write(afinish, **outcome)
        except LeaseLost:
            log_generation("generation.lease_lost", self.claim, level=logging.WARNING, ms=self._elapsed_ms())
        except DatabaseUnreachable:
            # The lease runs out while the database is away; once it is back, a worker takes the
            # reply over from its committed text, or ends it `failed` when it is out of attempts.
            log_generation("generation.abandoned", self.claim, level=logging.ERROR, reason="database_unreachable")
        else:
            error = outcome.get("error")
            log_generation(
                "generation.end",
                self.claim,
                level=logging.WARNING if error else logging.INFO,
                status=outcome["status"],
                stop_reason=outcome.get("stop_reason") or "-",
                error=error["code"] if error else "-",
                ms=self._elapsed_ms(),
                chunks=self.flushes,
                chars=self.committed_chars,
                output_tokens=(outcome.get("usage") or {}).get("output_tokens", "-"),
            )

    def _elapsed_ms(self) -> int:
        return round((self.loop.time() - self.started_at) * 1000)

    async def _stream(self) -> dict[str, Any]:
        """Read the provider until it ends, fails or the reply is cancelled; return how it ended."""
        events = aiter(self.provider.stream(self.claim.request))
        next_event = asyncio.ensure_future(anext(events))
        cancelled = asyncio.ensure_future(self.cancel.wait())
        try:
            while True:
                deadline = min(self.renew_at, self.flush_at or self.renew_at)
                done, _ = await asyncio.wait(
                    {next_event, cancelled},
                    timeout=max(0.0, deadline - self.loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if cancelled in done:
                    return {"status": Message.Status.CANCELLED}
                if next_event in done:
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        return {"status": Message.Status.COMPLETE}
                    except ProviderError as error:
                        return {"status": Message.Status.FAILED, "error": {"code": error.code, "detail": error.detail}}
                    if isinstance(event, ReplyEnd):
                        usage = {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens}
                        return {"status": Message.Status.COMPLETE, "stop_reason": event.stop_reason, "usage": usage}
                    self._buffer(event)
                    next_event = asyncio.ensure_future(anext(events))
                now = self.loop.time()
                if self.flush_at is not None and now >= self.flush_at:
                    await self._flush()
                elif now >= self.renew_at:
                    await self._renew()
        finally:
            cancelled.cancel()
            if not next_event.done():
                # Cancelling the pending read raises inside the provider, which closes
                # its upstream request instead of draining it.
                next_event.cancel()
                await asyncio.gather(next_event, return_exceptions=True)
            await events.aclose()

    def _buffer(self, delta: TextDelta) -> None:
        if not delta.text:
            return
        self.buffer.append(delta.text)
        self.buffered_chars += len(delta.text)
        if self.flush_at is None:
            self.flush_at = self.loop.time() + self.flush_s
        if self.buffered_chars >= settings.STREAM_FLUSH_MAX_CHARS:
            self.flush_at = self.loop.time()

    async def _flush(self) -> None:
        if not self.buffer:
            return
        text = "".join(self.buffer)
        self.buffer, self.buffered_chars, self.flush_at = [], 0, None
        appended = await self._write(
            aappend, text=text, first=not self.wrote_text, retry_with={"committed_chars": self.committed_chars}
        )
        await apublish_events(self.claim.thread_id, appended.events)  # committed: the write returned
        if not self.wrote_text:
            log_generation("generation.first_token", self.claim, ms=self._elapsed_ms())
        self.wrote_text = True
        self.committed_chars += len(text)
        self.flushes += 1
        self._renewed(appended.cancel_requested)

    async def _renew(self) -> None:
        self._renewed(await self._write(aheartbeat))

    async def _write(
        self, write: Callable[..., Awaitable[T]], *, retry_with: dict[str, Any] | None = None, **kwargs: Any
    ) -> T:
        """Run one fenced write, retrying it with bounded backoff while the database is unreachable.

        Each write is one transaction, so a failed one left nothing behind and is safe to
        repeat. Retries also pass `retry_with`: an append learns from it what it must not
        write twice when only the answer to its COMMIT was lost.
        """
        give_up_at = self.loop.time() + settings.GENERATION_WRITE_RETRY_SECONDS
        delay = WRITE_RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                return await write(claim=self.claim, **kwargs)
            except (OperationalError, InterfaceError) as error:
                kwargs |= retry_with or {}
                if self.loop.time() + delay > give_up_at:
                    raise DatabaseUnreachable from error
                logger.warning(
                    "generation %s: database write failed (%s); retrying in %.1fs",
                    self.claim.generation_id,
                    str(error).strip() or type(error).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_DELAY_SECONDS)

    def _renewed(self, cancel_requested: bool) -> None:
        self.renew_at = self.loop.time() + self.heartbeat_s
        if cancel_requested:
            self.cancel.set()
