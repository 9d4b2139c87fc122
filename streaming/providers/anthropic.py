"""Replies from Claude through the official SDK, continued (never restarted) after a break.

The SDK retries a request that fails before it streams. Once text is flowing, a
break (an `event: error` in the stream, a dropped connection) is ours to handle:
we ask again for the rest of the reply, sending the text so far as an assistant
prefill, or, for models that refuse prefill, as an assistant turn followed by a
user turn asking to continue it.

A reply's tool loop is one assistant turn, which keeps one thinking setting for all its
model calls (https://platform.claude.com/docs/build-with-claude/thinking-tool-workflows):
asked for from its start, it is dropped only by going on from text (thinking takes no
prefill), and then for the rest of the loop; each call's tool calls carry it in the log.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2  # the SDK's transport: a connection lost mid-stream surfaces as its TransportError
from anthropic.types import MessageParam, RawMessageStreamEvent
from django.conf import settings
from opentelemetry import trace

from ..metrics import PROVIDER_ERRORS
from ..parts import tool_calls
from ..protocol import Part
from .base import (
    BaseProvider,
    ProviderError,
    RedactedThinking,
    ReplyEnd,
    ReplyEvent,
    ReplyRequest,
    TextDelta,
    ThinkingDelta,
    ThinkingEnd,
    ToolCall,
    Turn,
)
from .transport import loop_http_client

logger = logging.getLogger(__name__)

# Retries the SDK makes itself for a request that fails before streaming (429, 5xx, 529).
SDK_MAX_RETRIES = 3
# The API pings an open stream every few seconds: this long without a byte means it is dead.
READ_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Requests per reply when the stream breaks mid-way; each one continues from the text so far.
STREAM_ATTEMPTS = 3
# `error.type`s in a stream worth another request; others (invalid_request_error…) would fail again.
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
CONTINUE_PROMPT = "Continue your previous reply exactly where it stopped, without repeating anything."

# Models that answered a prefill with 400 in this process: their continuations skip
# straight to the continue turn instead of paying for a refused request each time.
_models_refusing_prefill: set[str] = set()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The process's TLS context, as the SDK's HTTP client makes it by default.

    Made once: making one loads the trusted certificates, about 20 ms of CPU, which a
    client per reply used to pay for every reply (README, "Where the time went").
    """
    return httpx2.create_ssl_context()


@dataclass
class _AttemptResult:
    """What one request's stream reported about itself."""

    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int = 0
    # Tool calls given: the reply cannot go on from a break after one (it would be asked for again).
    tool_calls: int = 0


class _StreamInterrupted(Exception):
    """The stream broke after it opened, in a way that another request may get past."""


class AnthropicProvider(BaseProvider):
    def model_name(self) -> str:
        return settings.ANTHROPIC_MODEL

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        written = request.partial  # the whole reply so far: an earlier attempt's text, then ours
        output_tokens = 0
        backoff_s = settings.ANTHROPIC_RETRY_BACKOFF_SECONDS
        if not settings.ANTHROPIC_API_KEY:
            # Checked here: without a key the SDK raises a bare TypeError at request time.
            logger.error("The Anthropic provider has no API key: set ANTHROPIC_API_KEY")
            raise ProviderError("No API key is configured for the provider.")
        # Not closed with the reply: its HTTP client is the loop's, whose kept connections the next replies reuse.
        client = self._client()
        thinking = bool(settings.ANTHROPIC_THINKING_BUDGET) and _loop_thinks(request.parts)
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            result = _AttemptResult()
            try:
                # aclosing: a caller that stops iterating closes the HTTP stream now, not at GC.
                async with aclosing(self._attempt(client, request, written, result, thinking=thinking)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            written += event.text
                        yield event
            except _StreamInterrupted as exc:
                output_tokens += result.output_tokens
                cause = exc.__cause__ or exc
                PROVIDER_ERRORS.labels(provider="anthropic", code=_error_code(cause)).inc()
                detail = self._error_detail(cause)
                # Tool calls given already would be asked for again: only text goes on from where it broke.
                if attempt == STREAM_ATTEMPTS or result.tool_calls:
                    logger.error("Anthropic reply failed after %d attempts (%s)", attempt, _log_summary(cause))
                    raise ProviderError(detail) from cause
                delay_s = backoff_s * 2 ** (attempt - 1)
                logger.warning(
                    "Anthropic stream interrupted (%s); continuing the reply in %.2fs (attempt %d of %d)",
                    _log_summary(cause),
                    delay_s,
                    attempt + 1,
                    STREAM_ATTEMPTS,
                )
                await asyncio.sleep(delay_s)
                continue
            except anthropic.AnthropicError as exc:
                PROVIDER_ERRORS.labels(provider="anthropic", code=_error_code(exc)).inc()
                logger.warning("Anthropic request failed: %s", _log_summary(exc))
                raise ProviderError(self._error_detail(exc)) from exc
            output_tokens += result.output_tokens
            # _attempt returns only once the stream has reported its stop reason.
            yield ReplyEnd(result.stop_reason or "end_turn", result.input_tokens, output_tokens)
            return

    def _client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            # Explicit, so the SDK reads no credentials of its own from the environment.
            api_key=settings.ANTHROPIC_API_KEY,
            base_url=settings.ANTHROPIC_BASE_URL or None,
            max_retries=SDK_MAX_RETRIES,
            timeout=anthropic.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            http_client=loop_http_client(ssl_context=_tls_context()),
        )

    async def _attempt(
        self,
        client: anthropic.AsyncAnthropic,
        request: ReplyRequest,
        written: str,
        result: _AttemptResult,
        *,
        thinking: bool,
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Yield the reply's events after `written` from one request, and fill in `result`.

        Thinking streams as it comes, with its signature at the block's end; a tool call
        is given whole once its input JSON is complete, with whether this request asked for thinking.
        """
        # The API rejects a final assistant turn ending in whitespace, so the text goes
        # stripped and the seam gives back only whitespace the stored text lacks.
        prefix = written.rstrip()
        seam = _Seam(written[len(prefix) :])
        # Thinking takes no prefill: going on from text, the request (and the rest of the loop) goes without it.
        think = thinking and not prefix
        # Blocks being streamed, by index: a thinking block's signature, a tool call's input JSON so far.
        blocks: dict[int, dict] = {}
        async with AsyncExitStack() as stack:
            stream = await self._open(client, stack, request, prefix, think=think)
            try:
                async for event in _events(stream):
                    kind = event["type"]
                    if kind == "message_start":
                        usage = event["message"]["usage"]
                        result.input_tokens, result.output_tokens = usage["input_tokens"], usage["output_tokens"]
                    elif kind == "content_block_start":
                        block = event["content_block"]
                        if block["type"] == "tool_use":
                            blocks[event["index"]] = {
                                "type": "tool_use",
                                "id": block["id"],
                                "name": block["name"],
                                "json": "",
                            }
                        elif block["type"] == "thinking":
                            blocks[event["index"]] = {"type": "thinking", "signature": None}
                        elif block["type"] == "redacted_thinking":
                            # Complete at its start; sent back as it came, or the loop's next call is refused.
                            yield RedactedThinking(block["data"])
                    elif kind == "content_block_delta":
                        delta = event["delta"]
                        if delta["type"] == "text_delta":
                            if text := seam.trim(delta["text"]):
                                yield TextDelta(text)
                        elif delta["type"] == "thinking_delta":
                            yield ThinkingDelta(delta["thinking"])
                        elif delta["type"] == "signature_delta":
                            blocks[event["index"]]["signature"] = delta["signature"]
                        elif delta["type"] == "input_json_delta":
                            blocks[event["index"]]["json"] += delta["partial_json"]
                    elif kind == "content_block_stop" and event["index"] in blocks:
                        block_done = blocks.pop(event["index"])
                        if block_done["type"] == "thinking":
                            yield ThinkingEnd(signature=block_done["signature"])
                        else:
                            call = ToolCall(
                                id=block_done["id"],
                                name=block_done["name"],
                                input=_tool_input(block_done["json"]),
                                thinking=think,
                            )
                            result.tool_calls += 1
                            yield call
                    elif kind == "message_delta":
                        result.stop_reason = event["delta"]["stop_reason"]
                        usage = event["usage"]
                        result.output_tokens = usage["output_tokens"]  # cumulative for this request
                        if usage.get("input_tokens") is not None:
                            result.input_tokens = usage["input_tokens"]
            except (anthropic.APIStatusError, anthropic.APIConnectionError, httpx2.TransportError) as exc:
                if isinstance(exc, anthropic.APIStatusError) and exc.type not in RETRYABLE_ERROR_TYPES:
                    raise
                raise _StreamInterrupted() from exc
        if result.stop_reason is None:
            raise _StreamInterrupted("the stream ended without a stop reason")

    async def _open(
        self,
        client: anthropic.AsyncAnthropic,
        stack: AsyncExitStack,
        request: ReplyRequest,
        prefix: str,
        *,
        think: bool,
    ) -> anthropic.AsyncStream[RawMessageStreamEvent]:
        """Open the reply's stream on `stack`, continuing `prefix` by prefill where the model takes it."""
        model = self.model_name()
        if prefix and model not in _models_refusing_prefill:
            try:
                return await stack.enter_async_context(
                    await self._request(client, request, prefix, prefill=True, think=think)
                )
            except anthropic.BadRequestError as exc:
                if not _refuses_prefill(exc):
                    raise
                _models_refusing_prefill.add(model)
                logger.info("Model %s refuses prefill; continuing replies with a continue turn", model)
        return await stack.enter_async_context(await self._request(client, request, prefix, prefill=False, think=think))

    async def _request(
        self, client: anthropic.AsyncAnthropic, request: ReplyRequest, prefix: str, *, prefill: bool, think: bool
    ) -> anthropic.AsyncStream[RawMessageStreamEvent]:
        """Send the request and return its stream of raw events.

        The raw events, not the SDK's `messages.stream()` helper: the helper also builds a
        snapshot of the whole message and a second event for each delta, which cost as
        much again as parsing the events (README, "Where the time went").
        """
        budget = settings.ANTHROPIC_THINKING_BUDGET
        tools = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}
            for tool in request.tools
        ]
        stream = await client.messages.create(
            stream=True,
            model=self.model_name(),
            # Thinking counts towards max_tokens: the budget comes on top of the reply's own.
            max_tokens=settings.ANTHROPIC_MAX_TOKENS + (budget if think else 0),
            system=settings.CHAT_SYSTEM_PROMPT or anthropic.omit,
            messages=build_messages(request.turns, prefix, prefill=prefill, parts=_answered_parts(request)),
            tools=tools or anthropic.omit,  # type: ignore[arg-type]
            thinking={"type": "enabled", "budget_tokens": budget} if think else anthropic.omit,
        )
        assert isinstance(stream, anthropic.AsyncStream), "stream=True answers with a stream"
        return stream

    def _error_detail(self, exc: BaseException) -> str:
        """Return what people are told about `exc`: short, and never a key or a header."""
        if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
            return "The provider stopped responding; try again shortly."
        if isinstance(exc, anthropic.APIConnectionError):  # the SDK's retries could not connect
            return "Could not reach the provider; try again shortly."
        if isinstance(exc, (httpx2.TransportError, _StreamInterrupted)):
            return "The connection to the provider was lost; try again shortly."
        if not isinstance(exc, anthropic.APIStatusError):
            return "The provider could not be called; check its configuration."
        # An error inside a 200 stream keeps status 200: its body's `error.type` says what it was.
        status, kind = exc.status_code, exc.type
        message = (exc.api_message or "").lower()
        if status == 401 or kind == "authentication_error":
            return "The API key was rejected (401)."
        if status == 403 or kind == "permission_error":
            return "The API key is not allowed to do this (403)."
        if status == 404 or kind == "not_found_error":
            return f"The model {self.model_name()!r} was not found (404)."
        if status == 429 or kind == "rate_limit_error":
            return "Rate limited by the provider; try again shortly."
        if status == 529 or kind == "overloaded_error":
            return "The provider is overloaded; try again shortly."
        # "prompt is too long: 215000 tokens > 200000 maximum", "… exceed context limit …"
        if status == 413 or any(hint in message for hint in ("too long", "context limit", "context window")):
            return "The conversation is too long for the model's context window."
        if status == 402 or kind == "billing_error":
            return "The provider account has a billing problem (402)."
        if status >= 500 or kind == "api_error":
            return "The provider had an internal error; try again shortly."
        return f"The provider rejected the request ({status})."


async def _events(stream: anthropic.AsyncStream[RawMessageStreamEvent]) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the stream's events as the JSON objects the API sent, raising an `error` event as the SDK does.

    Parsed from the server-sent events themselves: the SDK validates a typed model of
    each event, which cost the worker a sixth of its CPU (README, "Where the time went",
    item 26). While a tracer records, they come from the SDK's typed events all the same:
    the SDK's span for the call takes its token counts and stop reason from those.
    """
    try:
        if trace.get_current_span().is_recording():
            async for typed in stream:
                yield typed.to_dict()
            return
        async for sse in anthropic.AsyncStream.raw_events(stream.response):
            if sse.event == "error":
                try:
                    body: object = json.loads(sse.data)
                except ValueError:
                    body = sse.data
                raise anthropic.APIStatusError(f"{body}", response=stream.response, body=body)
            if sse.event not in (None, "ping") and sse.data:
                yield json.loads(sse.data)
    except UnicodeDecodeError:
        # The SDK decodes the body's last line when the connection closes: a body that ends
        # with the connection (no chunked framing) and is cut inside a character fails there.
        raise _StreamInterrupted("the stream ended inside a character") from None


def build_messages(turns: list[Turn], prefix: str, *, prefill: bool, parts: Sequence[Part] = ()) -> list[MessageParam]:
    """Return `turns` as API messages, the reply's `parts` so far, then `prefix` continued (prefill or continue turn).

    A failed or cancelled reply leaves an empty assistant turn and two user turns in
    a row, both of which the API rejects: drop empty turns, merge same-role neighbours.
    An agent reply's parts become its assistant turns (thinking with its signature, text,
    tool_use blocks), each followed by a user turn of the tool_result blocks answering it.
    """
    history: list[list[Any]] = [[turn.role, turn.content] for turn in turns if turn.content.strip()]
    history += _reply_turns(parts)
    if prefix:
        history.append(["assistant", prefix])
        if not prefill:
            history.append(["user", CONTINUE_PROMPT])
    merged: list[list[Any]] = []
    for role, content in history:
        if merged and merged[-1][0] == role:
            merged[-1][1] = _joined(merged[-1][1], content)
        else:
            merged.append([role, content])
    return [{"role": role, "content": content} for role, content in merged]


def _joined(first: str | list[dict], second: str | list[dict]) -> str | list[dict]:
    """Join two contents of one role: text to text, else as blocks."""
    if isinstance(first, str) and isinstance(second, str):
        return first + "\n\n" + second
    return _blocks(first) + _blocks(second)


def _blocks(content: str | list[dict]) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _answered_parts(request: ReplyRequest) -> list[Part]:
    """Return the reply's parts the next request answers: all but the text it goes on from (`partial`).

    Thinking left last by a model call broken off before its text goes too: the call starts over.
    """
    parts = list(request.parts)
    if request.partial and parts and parts[-1]["type"] == "text":
        parts.pop()
    if not request.partial.strip():
        while parts and parts[-1]["type"] == "thinking":
            parts.pop()
    return parts


def _loop_thinks(parts: list[Part]) -> bool:
    """Whether the reply's tool loop, one assistant turn, asks for thinking (when not going on from text).

    Its first model call does; each later one as its last tool calls' call did, and only while
    the turn it sends back opens with thinking: the API asks that of a tool loop that thinks.
    """
    calls = tool_calls(parts)
    if not calls:
        return True
    turns = _reply_turns(parts)
    opens_with_thinking = bool(turns) and turns[0][1][0]["type"] in ("thinking", "redacted_thinking")
    return calls[-1].get("thinking", True) and opens_with_thinking


def _reply_turns(parts: Sequence[Part]) -> list[list[Any]]:
    """Return a reply's parts as API turns: [role, blocks], a new turn at each change of role."""
    turns: list[list[Any]] = []
    block: dict[str, Any]
    for part in parts:
        if part["type"] == "thinking" and "redacted_data" in part:
            role, block = "assistant", {"type": "redacted_thinking", "data": part["redacted_data"]}
        elif part["type"] == "thinking":
            if not part["signature"]:
                continue  # broken off before its end: the API takes back only signed thinking
            role, block = "assistant", {"type": "thinking", "thinking": part["text"], "signature": part["signature"]}
        elif part["type"] == "text":
            if not part["text"].strip():
                continue
            role, block = "assistant", {"type": "text", "text": part["text"]}
        elif part["type"] == "tool_call":
            role, block = (
                "assistant",
                {"type": "tool_use", "id": part["id"], "name": part["name"], "input": part["input"]},
            )
        elif part["type"] == "tool_result":
            output = part["output"]
            content = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
            block = {"type": "tool_result", "tool_use_id": part["tool_call_id"], "content": content}
            role, block = "user", block | ({"is_error": True} if part["is_error"] else {})
        else:
            continue  # approvals are the people's, not the model's
        if turns and turns[-1][0] == role:
            turns[-1][1].append(block)
        else:
            turns.append([role, [block]])
    return turns


def _tool_input(text: str) -> dict[str, Any]:
    """Return a tool call's input from its streamed JSON: an object, `{}` when none was sent."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise ProviderError("The model sent a tool call whose input is not JSON.") from None
    if not isinstance(value, dict):
        raise ProviderError("The model sent a tool call whose input is not an object.")
    return value


class _Seam:
    """Trim from a continuation the whitespace that the stored text already ends with.

    Sent "Hello" for a stored "Hello ", the model goes on with " world" (drop the
    repeated space) or "world" (keep it whole): either way the text has no seam.
    """

    def __init__(self, pending: str) -> None:
        self.pending = pending

    def trim(self, text: str) -> str:
        if not self.pending:
            return text
        common = len(os.path.commonprefix([self.pending, text]))
        if common == len(text):  # all of it repeats stored whitespace: the next delta may repeat more
            self.pending = self.pending[common:]
            return ""
        self.pending = ""
        return text[common:]


def _refuses_prefill(exc: anthropic.BadRequestError) -> bool:
    # "This model does not support assistant message prefill. The conversation must end with a user message."
    message = (exc.api_message or "").lower()
    return "prefill" in message or "must end with a user message" in message


def _error_code(exc: BaseException) -> str:
    """Name `exc` for the errors metric: the HTTP status, the error type of an error inside a stream, or its kind."""
    if isinstance(exc, anthropic.APIStatusError):
        # An error event inside a 200 stream keeps status 200: its type says what it was.
        return (exc.type or "unknown_error") if exc.status_code == 200 else str(exc.status_code)
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return "timeout"
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return "connection"
    return "stream_incomplete" if isinstance(exc, _StreamInterrupted) else "other"


def _log_summary(exc: BaseException) -> str:
    """Describe `exc` for the log: status, error type and request id, no content, key or headers."""
    if isinstance(exc, anthropic.APIStatusError):
        return f"status {exc.status_code}, {exc.type or 'unknown error'}, request id {exc.request_id or '-'}"
    return type(exc).__name__
