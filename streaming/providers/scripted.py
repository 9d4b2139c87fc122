"""A real provider that needs no network: deterministic replies at a steady pace.

The same conversation always gets the same reply, word for word, so the product
runs and demos offline, benchmarks are reproducible, and a reply continued after
a takeover can be checked against the text it should have been.
"""
import asyncio
import hashlib
import random
from collections.abc import AsyncGenerator

from django.conf import settings

from .base import BaseProvider, ReplyEnd, ReplyEvent, ReplyRequest, TextDelta, Turn

WORDS = (
    "stream token reply thread socket cursor chunk worker lease buffer replay resume "
    "order record commit signal channel layer event window screen device laptop phone "
    "network packet message answer question detail example reason moment result "
    "simple steady careful quiet clear quick bright gentle exact honest patient "
    "build check carry follow gather hold keep listen measure notice read send "
    "write across after again always before between during often since through"
).split()

# How much of the user's message the reply quotes back.
ECHO_WORDS = 12


def scripted_reply_tokens(turns: list[Turn], length: int) -> list[str]:
    """Return the reply to `turns` as tokens: each a word with its leading space or newline."""
    conversation = "\x1e".join(f"{turn.role}\x1f{turn.content}" for turn in turns)
    rng = random.Random(hashlib.sha256(conversation.encode()).digest())
    prompt_words = turns[-1].content.split() if turns else []
    echo = prompt_words[:ECHO_WORDS]
    tokens = ["You", " wrote:", " “"] + [f" {word}" if i else word for i, word in enumerate(echo)]
    if len(prompt_words) > ECHO_WORDS:
        tokens.append("…")
    tokens.append("”.")
    tokens.append(f" This is reply {len(turns) // 2 + 1} of the conversation.")
    sentence_start = True
    while len(tokens) < length:
        word = rng.choice(WORDS)
        if sentence_start:
            word = word.capitalize()
            separator = "\n\n" if rng.random() < 0.15 else " "
        else:
            separator = " "
        if rng.random() < 0.05:
            word = f"**{word}**"
        ending = rng.random() < 0.12
        tokens.append(separator + word + ("." if ending else ""))
        sentence_start = ending
    tokens = tokens[:length]
    if not tokens[-1].endswith("."):
        tokens[-1] += "."
    return tokens


def scripted_reply(turns: list[Turn], length: int) -> str:
    return "".join(scripted_reply_tokens(turns, length))


class ScriptedProvider(BaseProvider):
    def model_name(self) -> str:
        return "scripted"

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        tokens = scripted_reply_tokens(request.turns, settings.SCRIPTED_REPLY_TOKENS)
        interval_s = 1 / settings.SCRIPTED_TOKENS_PER_SECOND
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
