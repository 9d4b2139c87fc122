"""The benchmark's provider: the scripted provider's pace, with tokens that carry their emit time.

Select it with CHAT_PROVIDER=chatsite.bench.provider.BenchProvider (streambench does,
in the processes it starts). Every token is ` <emit time>` (see stamps.py), so each
client can tell, per token, how long it took from the provider to its screen.
"""

from collections.abc import AsyncGenerator

from django.conf import settings

from streaming.providers import ReplyEnd, ReplyEvent, ReplyRequest, TextDelta
from streaming.providers.scripted import ScriptedProvider

from .stamps import paced_tokens


class BenchProvider(ScriptedProvider):
    def model_name(self) -> str:
        return "bench"

    async def stream(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        length = settings.SCRIPTED_REPLY_TOKENS
        # Tokens are whole words: an earlier attempt's committed text is a whole number of them.
        already = len(request.partial.split())
        async for token in paced_tokens(length - already, settings.SCRIPTED_TOKENS_PER_SECOND):
            yield TextDelta(token)
        input_tokens = sum(len(turn.content.split()) for turn in request.turns)
        yield ReplyEnd(stop_reason="end_turn", input_tokens=input_tokens, output_tokens=length)
