"""The contract every reply provider implements."""

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..protocol import ErrorCode


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
    # it rather than starting over (after a takeover, or a retry mid-stream).
    partial: str = ""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReplyEnd:
    stop_reason: str
    input_tokens: int | None = None
    output_tokens: int | None = None


ReplyEvent = TextDelta | ReplyEnd


class ProviderError(Exception):
    """The provider could not produce (the rest of) the reply; `detail` is shown to people."""

    def __init__(self, detail: str, *, code: ErrorCode = ErrorCode.PROVIDER_ERROR) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class BaseProvider:
    """A source of streamed replies.

    `stream()` yields `TextDelta`s and ends with exactly one `ReplyEnd`, or raises
    `ProviderError`. The caller may stop iterating at any time (cancel): a provider
    must then release its upstream resources promptly, not drain them.
    """

    def model_name(self) -> str:
        raise NotImplementedError("subclasses of BaseProvider must provide model_name()")

    def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        raise NotImplementedError("subclasses of BaseProvider must provide stream()")
