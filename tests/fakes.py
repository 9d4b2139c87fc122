"""Fakes of what lies outside the project: a model API that fails, a channel layer that loses messages."""
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from streaming.providers import ProviderError, ReplyRequest, TextDelta
from streaming.providers.scripted import ScriptedProvider

# How many deltas FailingProvider sends before it fails.
FAIL_AFTER_DELTAS = 5


class FailingProvider(ScriptedProvider):
    """Streams the scripted reply, then fails mid-stream like an overloaded API."""

    async def stream(self, request: ReplyRequest):
        sent = 0
        async for event in super().stream(request):
            if isinstance(event, TextDelta):
                if sent == FAIL_AFTER_DELTAS:
                    raise ProviderError("The provider is overloaded; try again shortly.")
                sent += 1
            yield event


class LossyLayerMixin:
    """Loses the live copy of every third log event and of every `end` event sent to a thread group."""

    lost_seqs: list[int] = []

    async def group_send(self, group: str, message: dict) -> None:
        if message.get("type") == "thread.events":
            kept = []
            for seq, kind, frame in message["events"]:
                if seq % 3 == 0 or kind == "end":
                    LossyLayerMixin.lost_seqs.append(seq)
                else:
                    kept.append((seq, kind, frame))
            if not kept:
                return
            message = {**message, "events": kept}
        await super().group_send(group, message)


class LossyInMemoryChannelLayer(LossyLayerMixin, InMemoryChannelLayer):
    pass


class LossyRedisChannelLayer(LossyLayerMixin, RedisChannelLayer):
    pass
