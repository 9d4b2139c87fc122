"""Fakes of what lies outside the project: a model API that fails, a channel layer that loses messages."""

from channels.layers import InMemoryChannelLayer

from streaming.events import LOG_EVENTS
from streaming.layers import RedisPubSubChannelLayer
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
    """Loses the live copy of every third log event and of every `end` event it publishes."""

    lost_seqs: list[int] = []

    @staticmethod
    def _what_survives(message: dict) -> dict | None:
        if message.get("type") != LOG_EVENTS:
            return message
        threads = []
        for thread_id, events in message["threads"]:
            kept = []
            for seq, kind, frame in events:
                if seq % 3 == 0 or kind == "end":
                    LossyLayerMixin.lost_seqs.append(seq)
                else:
                    kept.append((seq, kind, frame))
            if kept:
                threads.append((thread_id, kept))
        return {**message, "threads": threads} if threads else None

    async def group_send(self, group: str, message: dict) -> None:
        if (survivor := self._what_survives(message)) is not None:
            await super().group_send(group, survivor)


class LossyInMemoryChannelLayer(LossyLayerMixin, InMemoryChannelLayer):
    pass


class LossyRedisChannelLayer(LossyLayerMixin, RedisPubSubChannelLayer):
    pass
