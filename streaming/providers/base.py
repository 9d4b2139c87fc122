"""The contract every reply provider implements."""

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import ErrorCode, Part


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ReplyRequest:
    """What a provider needs to write (or go on writing) one assistant reply."""

    # The conversation so far, oldest first, ending with the user turn being answered.
    turns: list[Turn]
    # Reply text already committed by an earlier attempt: the provider continues after
    # it rather than starting over (after a takeover, or a retry mid-stream). In an agent
    # reply, the text written since its last other part.
    partial: str = ""
    # The reply's parts so far (`streaming.parts`), `partial` last if not empty: its thinking,
    # tool calls and their results, which the next model call answers.
    parts: list[Part] = field(default_factory=list)
    # The tools the model may call.
    tools: list["ToolSpec"] = field(default_factory=list)


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model is told of it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReplyEnd:
    stop_reason: str
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of the model's extended thinking."""

    text: str


@dataclass(frozen=True)
class ThinkingEnd:
    """The thinking block is complete; the API asks for its signature back in later turns."""

    signature: str | None = None


@dataclass(frozen=True)
class RedactedThinking:
    """A block of thinking the model gave encrypted: nothing to show, `data` to send back as it came."""

    data: str


@dataclass(frozen=True)
class ToolCall:
    """The model calls a tool: the reply ends with stop_reason `tool_use` once all of a turn's calls are given."""

    id: str
    name: str
    input: dict[str, Any]
    # Whether the model call that made it asked for thinking, which the reply's later calls keep
    # (logged on its part); None from a provider without the setting.
    thinking: bool | None = None


ReplyEvent = TextDelta | ThinkingDelta | ThinkingEnd | RedactedThinking | ToolCall | ReplyEnd


class ProviderError(Exception):
    """The provider could not produce (the rest of) the reply; `detail` is shown to people."""

    def __init__(self, detail: str, *, code: ErrorCode = ErrorCode.PROVIDER_ERROR) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class BaseProvider:
    """A source of streamed replies.

    `stream()` yields `TextDelta`s (and, for agent replies, `ThinkingDelta`s closed by a
    `ThinkingEnd`, `RedactedThinking`s and `ToolCall`s) and ends with exactly one `ReplyEnd`, or raises
    `ProviderError`. A `ReplyEnd` with stop_reason `tool_use` after tool calls asks for
    their results: the runner calls `stream()` again with them in `request.parts`. The
    caller may stop iterating at any time (cancel): a provider
    must then release its upstream resources promptly, not drain them.
    """

    def model_name(self) -> str:
        raise NotImplementedError("subclasses of BaseProvider must provide model_name()")

    def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        raise NotImplementedError("subclasses of BaseProvider must provide stream()")
