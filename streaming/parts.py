"""A reply's parts, and the log events that write them.

An agent reply is a list of parts: runs of text, thinking, tool calls, their results and
approvals. Text is logged as it always was, as `delta` events (so a client of protocol v1
reads the reply's text as before); every other part as a `part_start` event, for a
thinking part `part_delta` events, and a `part_end` event. A part's index is its place in
the list, text runs included: a `delta` after another part's event opens the next text part.

Folding a reply's events in seq order gives its parts (`parts_fold`): the worker does it
to continue a reply it takes over, snapshots do it for a reply in progress, and a reply's
parts are stored on its message when it ends.
"""

import json
from collections.abc import Iterable
from typing import Any, cast

from .models import Chunk
from .protocol import Part, TextPart, ToolCallPart, ToolResultPart

PART_KINDS = (Chunk.Kind.PART_START, Chunk.Kind.PART_DELTA, Chunk.Kind.PART_END)


def part_json(part: Part) -> str:
    """Return a part as its event row holds it: the exact text every replay of the event carries."""
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False)


def part_of(chunk: Chunk) -> Part:
    """Return the part a `part_start` or `part_end` row holds."""
    return cast(Part, json.loads(chunk.text))


def parts_fold(chunks: Iterable[Chunk]) -> list[Part]:
    """Return a reply's parts from its `delta` and part events, in seq order (segments split or joined alike)."""
    parts: list[Part] = []
    text_open = False  # whether the last part is a text run that the next delta extends
    for chunk in chunks:
        if chunk.kind == Chunk.Kind.DELTA:
            if text_open:
                last = cast(TextPart, parts[-1])
                last["text"] += chunk.text
            else:
                parts.append(TextPart(type="text", text=chunk.text))
                text_open = True
        elif chunk.kind in PART_KINDS:
            text_open = False
            index = chunk.part_index
            assert index is not None, "a part event names its part"
            if chunk.kind == Chunk.Kind.PART_DELTA:
                part: Any = parts[index]
                part["text"] += chunk.text
            elif index == len(parts):
                parts.append(part_of(chunk))
            else:
                parts[index] = part_of(chunk)
    return parts


def has_agent_parts(parts: list[Part]) -> bool:
    """Whether a reply holds more than text: only then do snapshots carry its parts."""
    return any(part["type"] != "text" for part in parts)


def trailing_text(parts: list[Part]) -> str:
    """Return the text written since the reply's last other part: what a continued model turn goes on from."""
    if parts and parts[-1]["type"] == "text":
        return cast(TextPart, parts[-1])["text"]
    return ""


def tool_calls(parts: list[Part]) -> list[ToolCallPart]:
    return [cast(ToolCallPart, part) for part in parts if part["type"] == "tool_call"]


def tool_results(parts: list[Part]) -> dict[str, ToolResultPart]:
    """Return the reply's tool results by the id of their call."""
    return {
        cast(ToolResultPart, part)["tool_call_id"]: cast(ToolResultPart, part)
        for part in parts
        if part["type"] == "tool_result"
    }


def model_calls_made(parts: list[Part]) -> int:
    """Return how many model calls ended in tool calls: each one's calls are logged together, in one step."""
    calls, previous = 0, None
    for part in parts:
        if part["type"] == "tool_call" and previous != "tool_call":
            calls += 1
        previous = part["type"]
    return calls
