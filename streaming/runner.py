"""Run one claimed generation: stream from the provider into coalesced, fenced chunk rows."""
import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from threads.models import Message

from .providers import BaseProvider, ProviderError, ReplyEnd, TextDelta
from .services import Claim, LeaseLost, generation_append, generation_finish, generation_heartbeat

logger = logging.getLogger(__name__)

aappend = database_sync_to_async(generation_append)
afinish = database_sync_to_async(generation_finish)
aheartbeat = database_sync_to_async(generation_heartbeat)


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
        self.loop = asyncio.get_running_loop()
        self.flush_s = settings.STREAM_FLUSH_MS / 1000
        # Flushes renew the lease; the heartbeat covers a provider that is slow to speak.
        self.heartbeat_s = min(settings.GENERATION_LEASE_SECONDS / 3, 1.0)
        self.renew_at = self.loop.time() + self.heartbeat_s

    async def run(self) -> None:
        try:
            outcome = await self._stream()
            await self._flush()
            await afinish(claim=self.claim, **outcome)
        except LeaseLost:
            logger.warning("generation %s: lease lost, another worker continues it", self.claim.generation_id)

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
                        logger.warning("generation %s: provider failed: %s", self.claim.generation_id, error.detail)
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
        cancel_requested = await aappend(claim=self.claim, text=text, first=not self.wrote_text)
        self.wrote_text = True
        self._renewed(cancel_requested)

    async def _renew(self) -> None:
        self._renewed(await aheartbeat(claim=self.claim))

    def _renewed(self, cancel_requested: bool) -> None:
        self.renew_at = self.loop.time() + self.heartbeat_s
        if cancel_requested:
            self.cancel.set()
