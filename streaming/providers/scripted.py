"""A real provider that needs no network: deterministic replies at a steady pace.

The same conversation always gets the same reply, word for word, so the product
runs and demos offline, benchmarks are reproducible, and a reply continued after
a takeover can be checked against the text it should have been.

A reply shows what the page renders: a heading, an ordered list with sub-lists, a
table, a fenced code block with its language, and prose with bold, italic, inline
code and links, as far as SCRIPTED_REPLY_TOKENS allows; prose fills the rest.

It can be scripted to act as an agent, by lines of the message it answers:
`/think` makes it think before each model call, and `/tool NAME {JSON input}` makes it
call a tool. Consecutive `/tool` lines are one model call's calls (run at once); a blank
line starts the next model call's. Once every scripted call has its result, it writes
its reply, opening with what the tools gave.
"""

import asyncio
import hashlib
import itertools
import json
import random
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

from django.conf import settings

from ..parts import model_calls_made
from .base import (
    BaseProvider,
    ReplyEnd,
    ReplyEvent,
    ReplyRequest,
    TextDelta,
    ThinkingDelta,
    ThinkingEnd,
    ToolCall,
    Turn,
)

NOUNS = (
    "stream token reply thread socket cursor chunk worker lease buffer record signal channel "
    "layer event window screen device phone network packet message answer question detail result"
).split()
ADJECTIVES = "simple steady careful quiet clear quick bright gentle exact honest patient".split()
VERBS = "build check carry follow gather hold keep listen measure notice read send write".split()
LINKS = "across after again always before between during often since through".split()
WORDS = NOUNS + ADJECTIVES + VERBS + LINKS

# How much of the user's message the reply quotes back.
ECHO_WORDS = 12
# A token is a run of non-space characters with the whitespace before it.
TOKEN = re.compile(r"\s*\S+")
ALIGNMENTS = (":--", ":-:", "--:")


def _plural(noun: str) -> str:
    return f"{noun[:-1]}ies" if noun.endswith("y") else f"{noun}s"


def _heading(rng: random.Random) -> str:
    return f"## {rng.choice(ADJECTIVES).capitalize()} {rng.choice(NOUNS)} {_plural(rng.choice(NOUNS))}"


def _steps(rng: random.Random) -> str:
    """Return an ordered list of two steps, each with a sub-list of two points."""
    steps = []
    for number in (1, 2):
        points = [f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}", f"`{rng.choice(NOUNS)}_{rng.choice(NOUNS)}`"]
        steps.append(
            f"{number}. **{rng.choice(VERBS).capitalize()}** the {rng.choice(NOUNS)}\n"
            + "\n".join(f"   - {point}" for point in points)
        )
    return "\n".join(steps)


def _table(rng: random.Random) -> str:
    left, right = rng.sample(NOUNS, 2)
    rows = [f"| {rng.choice(ADJECTIVES)} | {rng.randint(2, 999)} |" for _ in range(2)]
    return "\n".join([f"| {left.capitalize()} | {right.capitalize()} |", f"|{rng.choice(ALIGNMENTS)}|--:|", *rows])


def _code(rng: random.Random) -> str:
    verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
    nouns, other_nouns = _plural(noun), _plural(rng.choice(NOUNS))
    snippets = {
        "python": f"def {verb}_{nouns}({nouns}):\n    return [{noun} for {noun} in {nouns} if {noun}]",
        "javascript": f'const {nouns} = await {verb}("{rng.choice(NOUNS)}");\nconsole.log({nouns}.length);',
        "bash": f'chatsite {verb} --{noun} {rng.choice(NOUNS)}\necho "{verb} done"',
        "sql": f"SELECT {noun}, count(*) FROM {other_nouns}\nWHERE {noun} IS NOT NULL GROUP BY {noun};",
    }
    language = rng.choice(sorted(snippets))
    return f"```{language}\n{snippets[language]}\n```"


# Inline markup, each applied to one word.
INLINE: tuple[Callable[[str], str], ...] = (
    lambda word: f"**{word}**",
    lambda word: f"*{word}*",
    lambda word: f"`{word.lower()}()`",
    lambda word: f"[{word}](https://example.com/{word.lower()})",
)
INLINE_CHANCE = 0.1


def _sentences(rng: random.Random, length: int, *, markup: bool = True) -> list[str]:
    """Return `length` words of sentences, the last one ending the last sentence."""
    words = []
    sentence_start = True
    for index in range(length):
        word = rng.choice(WORDS)
        if sentence_start:
            word = word.capitalize()
        if markup and rng.random() < INLINE_CHANCE:
            word = rng.choice(INLINE)(word)
        sentence_start = rng.random() < 0.12 or index == length - 1
        words.append(word + ("." if sentence_start else ""))
    return words


def _paragraph(rng: random.Random) -> str:
    """Return a few sentences with each kind of inline markup once."""
    words = _sentences(rng, rng.randint(6, 10), markup=False)
    for wrap, index in zip(INLINE, rng.sample(range(1, len(words) - 1), len(INLINE)), strict=True):
        bare = words[index].rstrip(".")
        words[index] = wrap(bare) + words[index][len(bare) :]
    return " ".join(words)


# The reply's blocks in order, repeated while the length allows.
BLOCKS: tuple[Callable[[random.Random], str], ...] = (_heading, _paragraph, _steps, _table, _code)


def scripted_reply_tokens(turns: list[Turn], length: int) -> list[str]:
    """Return the reply to `turns` as `length` tokens: each a word or a piece of markup with the space before it."""
    conversation = "\x1e".join(f"{turn.role}\x1f{turn.content}" for turn in turns)
    rng = random.Random(hashlib.sha256(conversation.encode()).digest())
    prompt_words = turns[-1].content.split() if turns else []
    echo = prompt_words[:ECHO_WORDS]
    tokens = ["You", " wrote:", " “"] + [f" {word}" if i else word for i, word in enumerate(echo)]
    if len(prompt_words) > ECHO_WORDS:
        tokens.append("…")
    tokens.append("”.")
    tokens.append(f" This is reply {len(turns) // 2 + 1} of the conversation.")
    for block in itertools.cycle(BLOCKS):
        pieces = TOKEN.findall("\n\n" + block(rng))
        if len(tokens) + len(pieces) > length:
            break
        tokens += pieces
    if len(tokens) < length:
        tokens += TOKEN.findall("\n\n" + " ".join(_sentences(rng, length - len(tokens))))
    tokens = tokens[:length]
    if not tokens[-1].endswith((".", "```", "|")):
        tokens[-1] += "."
    return tokens


# `/tool NAME {JSON}`: a scripted tool call.
TOOL_LINE = re.compile(r"^/tool (?P<name>[\w.-]+)(?: (?P<input>\{.*\}))?$")
THINK_LINE = "/think"


def scripted_tool_calls(content: str) -> list[list[tuple[str, dict[str, Any]]]]:
    """Return the tool calls a message scripts, one list per model call; a line whose input is not JSON is text."""
    model_calls: list[list[tuple[str, dict[str, Any]]]] = []
    current: list[tuple[str, dict[str, Any]]] = []
    for line in [*content.splitlines(), ""]:
        match = TOOL_LINE.match(line.strip())
        if match is None:
            if current:
                model_calls.append(current)
                current = []
            continue
        try:
            tool_input = json.loads(match["input"] or "{}")
        except json.JSONDecodeError:
            continue
        current.append((match["name"], tool_input))
    return model_calls


def _results_tokens(request: ReplyRequest) -> list[str]:
    """Return the opening of a reply that follows tool calls: a sentence per result."""
    tokens = []
    for part in request.parts:
        if part["type"] == "tool_result":
            outcome = "failed with" if part["is_error"] else "gave"
            tokens += TOKEN.findall(f" Tool {part['name']} {outcome} {json.dumps(part['output'], ensure_ascii=False)}.")
    if tokens:
        tokens[0] = tokens[0].lstrip()
        tokens[-1] += "\n\n"
    return tokens


def scripted_reply(turns: list[Turn], length: int) -> str:
    return "".join(scripted_reply_tokens(turns, length))


class ScriptedProvider(BaseProvider):
    def model_name(self) -> str:
        return "scripted"

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        interval_s = 1 / settings.SCRIPTED_TOKENS_PER_SECOND
        content = request.turns[-1].content if request.turns else ""
        thinks = any(line.strip() == THINK_LINE for line in content.splitlines())
        if thinks and not request.partial and not (request.parts and request.parts[-1]["type"] == "thinking"):
            thought = f"The question has {len(content.split())} words; I answer it step by step."
            for token in TOKEN.findall(thought):
                await asyncio.sleep(interval_s)
                yield ThinkingDelta(token)
            yield ThinkingEnd(signature=hashlib.sha256(thought.encode()).hexdigest())
        model_calls = scripted_tool_calls(content) if request.tools else []
        made = model_calls_made(request.parts)
        if made < len(model_calls):
            for number, (name, tool_input) in enumerate(model_calls[made], start=1):
                await asyncio.sleep(interval_s)
                yield ToolCall(id=f"call_{made + 1}_{number}", name=name, input=tool_input)
            yield ReplyEnd(stop_reason="tool_use", output_tokens=len(model_calls[made]))
            return
        tokens = _results_tokens(request) + scripted_reply_tokens(request.turns, settings.SCRIPTED_REPLY_TOKENS)
        position = 0  # characters of the reply already written, ours or an earlier attempt's
        for token in tokens:
            end = position + len(token)
            if end <= len(request.partial):
                position = end
                continue
            await asyncio.sleep(interval_s)
            # A partial that stops inside this token resumes mid-token, without a seam.
            yield TextDelta(token[max(0, len(request.partial) - position) :])
            position = end
        input_tokens = sum(len(turn.content.split()) for turn in request.turns)
        yield ReplyEnd(stop_reason="end_turn", input_tokens=input_tokens, output_tokens=len(tokens))
