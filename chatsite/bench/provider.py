"""The benchmark's provider: the scripted provider's pace, with tokens that carry their emit time.

Select it with CHAT_PROVIDER=chatsite.bench.provider.BenchProvider (streambench does,
in the processes it starts). Every token is ` <emit time>` (see stamps.py), so each
client can tell, per token, how long it took from the provider to its screen.
"""

import asyncio
import time
from collections.abc import AsyncGenerator

from django.conf import settings

from streaming.providers import ReplyEnd, ReplyEvent, ReplyRequest, TextDelta
from streaming.providers.scripted import ScriptedProvider

from .stamps import stamp_token


class BenchProvider(ScriptedProvider):
    def model_name(self) -> str:
        return "bench"

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        length = settings.SCRIPTED_REPLY_TOKENS
        interval_s = 1 / settings.SCRIPTED_TOKENS_PER_SECOND
        # Tokens are whole words: an earlier attempt's committed text is a whole number of them.
        already = len(request.partial.split())
        loop = asyncio.get_running_loop()
        started, started_wall = loop.time(), time.time()
        for index in range(1, length - already + 1):
            # On a fixed schedule, stamped with the time the token was due rather than the time
            # this coroutine got round to it: an upstream API's bytes arrive on time however busy
            # the worker's event loop is, and that lag belongs in token-to-screen latency.
            due = index * interval_s
            await asyncio.sleep(max(0.0, started + due - loop.time()))
            yield TextDelta(stamp_token(started_wall + due))
        input_tokens = sum(len(turn.content.split()) for turn in request.turns)
        yield ReplyEnd(stop_reason="end_turn", input_tokens=input_tokens, output_tokens=length)
