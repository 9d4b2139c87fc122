"""Run one claimed generation: read the provider, and hand its text to the worker's group commit."""

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any
from uuid import UUID

from django.conf import settings
from opentelemetry import trace

from . import metrics
from .broadcast import apublish_events
from .committer import Committer, RoundFailed
from .compaction import LoggedDelta
from .logs import log_generation
from .models import Chunk, MessageStatus
from .parts import model_calls_made, trailing_text
from .protocol import ApprovalPart, ErrorCode, Part, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from .providers import (
    BaseProvider,
    ProviderError,
    RedactedThinking,
    ReplyEnd,
    TextDelta,
    ThinkingDelta,
    ThinkingEnd,
    ToolCall,
)
from .services.claims import Claim
from .services.commits import LeaseLost, Write, Written
from .services.steps import PartEvent, astep_commit
from .tools import Tool, ToolContext, get_tools, tool_calls_plan

# A no-op unless tracing is configured (chatsite/tracing.py).
tracer = trace.get_tracer(__name__)

# `_settle_tool_calls` found calls waiting for a person's decision: the reply pauses.
PAUSED = "paused"


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
        # A round took text from the buffer and has not reported on it yet (it may be retrying).
        self.text_in_round = False
        # The reply's parts as this attempt knows them: the logged ones, then its own as they come.
        self.parts: list[Part] = [dict(part) for part in claim.request.parts]  # type: ignore[misc]
        # Text of the reply known to be committed: this attempt's and the earlier ones'.
        self.committed_chars = sum(len(part["text"]) for part in self.parts if part["type"] == "text")
        self.wrote_text = self.committed_chars > 0
        # Every row of the reply's log this attempt wrote, while it knows them all: it began the
        # log (nothing logged before it) and has logged only text. Its end then compacts them
        # without reading them back; None once unknown, and the end reads the log.
        self.logged: list[LoggedDelta] | None = None if self.parts else []
        # Token counts summed over this attempt's model calls; None before the first ends.
        self.usage: dict[str, int | None] | None = None
        # The thinking part being streamed, and its text not logged yet.
        self.thinking_index: int | None = None
        self.thinking_buffer: list[str] = []
        self.thinking_logged_at = 0.0
        # Steps commit one at a time; a step first waits for the text before it (`flushed`).
        self.stepping = asyncio.Lock()
        self.flushed: asyncio.Future | None = None
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
            if outcome is None:
                log_generation("generation.awaiting_approval", self.claim, ms=self._elapsed_ms())
                return
            self.outcome = outcome  # the next tick's round writes the rest of the text and the `end` event
            self.committer.end(self)
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
        if self.flushed is not None and not self.flushed.done():
            self.flushed.set_exception(error)
        if self.outcome is not None and not self.ended.done():
            self.ended.set_exception(error)

    def _stop_reading(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()

    async def _read_until_end(self) -> dict[str, Any] | None:
        """Read the provider until it ends, fails or is cancelled; return how the reply ended (None: it paused)."""
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
        if outcome is not None:
            # Thinking broken off by an error or a cancel: its buffered text is kept, as the reply's text is.
            await self._thinking_end(None)
        return outcome

    async def _read(self) -> dict[str, Any] | None:
        """Call the model, and run the tools it calls, until its turn ends; None when the reply paused for approval.

        Each step is committed before the next begins (`services.steps`): taken over, the
        reply goes on from its last committed step.
        """
        try:
            await self._close_broken_thinking()
            while True:
                settled = await self._settle_tool_calls()
                if isinstance(settled, dict):
                    return settled
                if settled == PAUSED:
                    return None
                if model_calls_made(self.parts) >= settings.CHAT_MAX_TOOL_STEPS:
                    detail = f"The reply made {settings.CHAT_MAX_TOOL_STEPS} model calls and wanted more."
                    return self._failed(ErrorCode.TOOL_STEPS_EXCEEDED, detail)
                ended = await self._model_call()
                if ended is not None:
                    return ended
        except ProviderError as error:
            return self._failed(error.code, error.detail)

    def _failed(self, code: str, detail: str) -> dict[str, Any]:
        return {"status": MessageStatus.FAILED, "error": {"code": code, "detail": detail}, "usage": self.usage}

    async def _close_broken_thinking(self) -> None:
        """End a thinking part an earlier attempt may have left open: the model call it was in starts over.

        Logged last, it was either broken off mid-way (no `part_end`) or ended just before its
        worker died; ending it again with the part as logged changes nothing in the second case.
        """
        if self.parts and self.parts[-1]["type"] == "thinking":
            index = len(self.parts) - 1
            await self._step([PartEvent(kind=Chunk.Kind.PART_END, index=index, part=self.parts[index])])

    async def _model_call(self) -> dict[str, Any] | None:
        """Stream one model call; return how the reply ended, or None when it called tools (they are logged)."""
        request = replace(self.claim.request, partial=trailing_text(self.parts), parts=list(self.parts))
        calls: list[ToolCall] = []
        # Cancelling the read raises inside the provider, which closes its upstream
        # request instead of draining it.
        async with contextlib.aclosing(self.provider.stream(request)) as events:
            async for event in events:
                if self.thinking_index is not None and not isinstance(event, ThinkingDelta | ThinkingEnd):
                    await self._thinking_end(None)  # broken off: the text after it goes on without it
                if isinstance(event, TextDelta):
                    self._text(event.text)
                elif isinstance(event, ThinkingDelta):
                    await self._thinking(event.text)
                elif isinstance(event, ThinkingEnd):
                    await self._thinking_end(event.signature)
                elif isinstance(event, RedactedThinking):
                    await self._redacted_thinking(event.data)
                elif isinstance(event, ToolCall):
                    calls.append(event)
                else:
                    self._count_usage(event)
                    if calls:
                        await self._calls_log(calls)
                        return None
                    return {"status": MessageStatus.COMPLETE, "stop_reason": event.stop_reason, "usage": self.usage}
        return {"status": MessageStatus.COMPLETE}

    def _count_usage(self, end: ReplyEnd) -> None:
        """Add a model call's token counts to the reply's."""
        counts = {"input_tokens": end.input_tokens, "output_tokens": end.output_tokens}
        if self.usage is None:
            self.usage = counts
            return
        for key, tokens in counts.items():
            if tokens is not None:
                self.usage[key] = (self.usage[key] or 0) + tokens

    def _text(self, text: str) -> None:
        if not text:
            return
        if self.parts and self.parts[-1]["type"] == "text":
            self.parts[-1]["text"] += text
        else:
            self.parts.append(TextPart(type="text", text=text))
        self._buffer(text)

    async def _thinking(self, text: str) -> None:
        """Log thinking as it comes: its start at once, its text about every flush interval."""
        if self.thinking_index is None:
            self.thinking_index = len(self.parts)
            part = ThinkingPart(type="thinking", text="", signature=None)
            self.parts.append(part)
            await self._step([PartEvent(kind=Chunk.Kind.PART_START, index=self.thinking_index, part=part)])
            self.thinking_logged_at = self.loop.time()
        self.thinking_buffer.append(text)
        if self.loop.time() - self.thinking_logged_at >= settings.STREAM_FLUSH_MS / 1000:
            await self._step(self._thinking_taken())
            self.thinking_logged_at = self.loop.time()

    def _thinking_taken(self) -> list[PartEvent]:
        assert self.thinking_index is not None, "thinking was started"
        text = "".join(self.thinking_buffer)
        self.thinking_buffer = []
        if not text:
            return []
        self.parts[self.thinking_index]["text"] += text  # type: ignore[typeddict-item]
        return [PartEvent(kind=Chunk.Kind.PART_DELTA, index=self.thinking_index, text=text)]

    async def _thinking_end(self, signature: str | None) -> None:
        if self.thinking_index is None:
            return
        events = self._thinking_taken()
        part = self.parts[self.thinking_index]
        assert part["type"] == "thinking"
        part["signature"] = signature
        await self._step([*events, PartEvent(kind=Chunk.Kind.PART_END, index=self.thinking_index, part=part)])
        self.thinking_index = None

    async def _redacted_thinking(self, data: str) -> None:
        """Log redacted thinking whole, as one step: it comes whole, with no text to show."""
        index = len(self.parts)
        part = ThinkingPart(type="thinking", text="", signature=None, redacted_data=data)
        self.parts.append(part)
        await self._step(
            [
                PartEvent(kind=Chunk.Kind.PART_START, index=index, part=part),
                PartEvent(kind=Chunk.Kind.PART_END, index=index, part=part),
            ]
        )

    async def _calls_log(self, calls: list[ToolCall]) -> None:
        """Log a model call's tool calls together: one step, the model call's outcome."""
        events = []
        for call in calls:
            part = ToolCallPart(type="tool_call", id=call.id, name=call.name, input=call.input, state="called")
            if call.thinking is not None:
                part["thinking"] = call.thinking
            events.append(PartEvent(kind=Chunk.Kind.PART_START, index=len(self.parts), part=part))
            self.parts.append(part)
        await self._step(events)

    async def _settle_tool_calls(self) -> dict[str, Any] | str | None:
        """Give every logged tool call without a result one, by the rules of `streaming.tools`.

        Return None when all have results, PAUSED when some wait for a person's decision,
        or how the reply ended when a call may have run already and must not run again.
        """
        tools = get_tools()
        plan = tool_calls_plan(self.parts, tools)
        if plan.cannot_rerun is not None:
            detail = f"The tool call {plan.cannot_rerun['name']} may have run already and cannot safely run again."
            return self._failed(ErrorCode.TOOL_UNCERTAIN, detail)
        for call, reason in plan.refused:
            await self._result(call, reason, is_error=True)
        if plan.runs:
            await self._run_tools(plan.runs, tools)
        if plan.asks:
            await self._ask_approval(plan.asks)
            return PAUSED
        return None

    async def _run_tools(self, calls: list[ToolCallPart], tools: dict[str, Tool]) -> None:
        """Log that the calls' runs begin, then run them at once, logging each result as it comes."""
        started = []
        for call in calls:
            index = self.parts.index(call)
            running = ToolCallPart(**{**call, "state": "running"})
            self.parts[index] = running
            started.append(PartEvent(kind=Chunk.Kind.PART_END, index=index, part=running))
        await self._step(started)
        runs = [asyncio.ensure_future(self._run_tool(call, tools[call["name"]])) for call in calls]
        try:
            await asyncio.gather(*runs)
        finally:
            # A step that failed (the lease was lost, say) ends the reply: its other tools stop with it.
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)

    async def _run_tool(self, call: ToolCallPart, tool: Tool) -> None:
        context = ToolContext(
            thread_id=self.claim.thread_id, message_id=self.claim.message_id, user_message_id=self.claim.reply_to_id
        )
        try:
            output = json.loads(json.dumps(await tool.run(call["input"], context)))
        except Exception as error:
            log_generation("generation.tool_error", self.claim, level=logging.WARNING, tool=call["name"])
            await self._result(call, str(error) or type(error).__name__, is_error=True)
        else:
            await self._result(call, output, is_error=False)

    async def _result(self, call: ToolCallPart, output: object, *, is_error: bool) -> None:
        result = ToolResultPart(
            type="tool_result", tool_call_id=call["id"], name=call["name"], output=output, is_error=is_error
        )
        index = len(self.parts)
        self.parts.append(result)
        await self._step(
            [
                PartEvent(kind=Chunk.Kind.PART_START, index=index, part=result),
                PartEvent(kind=Chunk.Kind.PART_END, index=index, part=result),
            ]
        )

    async def _ask_approval(self, asks: list[tuple[ToolCallPart, bool]]) -> None:
        """Log the approvals asked for and release the reply until a person decides (`steps.tool_call_decide`)."""
        events = []
        for call, retry in asks:
            approval = ApprovalPart(type="approval", tool_call_id=call["id"], state="requested", retry=retry)
            events.append(PartEvent(kind=Chunk.Kind.PART_START, index=len(self.parts), part=approval))
            self.parts.append(approval)
        await self._step(events, pause=True)

    async def _step(self, events: list[PartEvent], *, pause: bool = False) -> None:
        """Commit one step once the text before it is committed, and publish it (I2: after its commit).

        Steps of tools running at once commit one at a time, each with the index it was given.
        """
        if not events:
            return
        self.logged = None  # the log holds parts now: the end reads it
        async with self.stepping:
            await self._text_flushed()
            if self.failure is not None:
                raise self.failure
            encoded = await astep_commit(claim=self.claim, events=events, pause=pause)
            await apublish_events(self.claim.thread_id, encoded)

    async def _text_flushed(self) -> None:
        """Wait until a round has committed every text buffered so far, the text a round holds included.

        A round that took text may still be committing it, or retrying after the database
        dropped its connection: a step logged meanwhile would come before that text.
        """
        if not self.buffer and not self.text_in_round:
            return
        self.flushed = self.loop.create_future()
        if self.buffer:
            self.committer.request(self)
        await self.flushed

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
        self.text_in_round = bool(text)
        return Write(
            claim=self.claim,
            text=text,
            first=not self.wrote_text,
            committed_chars=self.committed_chars,
            end=self.outcome,
            renew=self.loop.time() >= self.renew_at,
            logged=tuple(self.logged) if self.outcome is not None and self.logged is not None else None,
        )

    def written(self, write: Write, result: Written) -> None:
        self.text_in_round = False
        if result.lease_lost:
            self._fail(LeaseLost(str(self.generation_id)))
            return
        if write.renew:
            self.renew_at = self.loop.time() + self.renew_interval
        if write.text:
            if self.logged is not None:
                if result.delta is None:  # a retried round found it logged already
                    self.logged = None
                else:
                    self.logged.append(result.delta)
            if not self.wrote_text:
                log_generation("generation.first_token", self.claim, ms=self._elapsed_ms())
                metrics.TIME_TO_FIRST_TOKEN.observe(self.loop.time() - self.started_at)
            if self.first_text_at is None:
                self.first_text_at = self.loop.time()
            self.wrote_text = True
            self.committed_chars += len(write.text)
            self.flushes += 1
        if self.flushed is not None and not self.buffer and not self.flushed.done():
            self.flushed.set_result(None)
        if write.end is not None:
            if not self.ended.done():
                self.ended.set_result(None)
        elif result.cancel_requested:
            self.cancel()

    def abandoned(self, error: RoundFailed) -> None:
        self.text_in_round = False
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
