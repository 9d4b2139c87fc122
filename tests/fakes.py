"""Fakes of what lies outside the project: a model API that fails, a channel layer that loses messages."""

from channels.layers import InMemoryChannelLayer

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
    """Loses the live copy of every third log event and of every `end` event sent to a thread group."""

    lost_seqs: list[int] = []

    @staticmethod
    def _what_survives(message: dict) -> dict | None:
        if message.get("type") != "thread.events":
            return message
        kept = []
        for seq, kind, frame in message["events"]:
            if seq % 3 == 0 or kind == "end":
                LossyLayerMixin.lost_seqs.append(seq)
            else:
                kept.append((seq, kind, frame))
        return {**message, "events": kept} if kept else None

    async def group_send(self, group: str, message: dict) -> None:
        if (survivor := self._what_survives(message)) is not None:
            await super().group_send(group, survivor)


class LossyInMemoryChannelLayer(LossyLayerMixin, InMemoryChannelLayer):
    pass


class LossyRedisChannelLayer(LossyLayerMixin, RedisPubSubChannelLayer):
    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        survivors = [(group, self._what_survives(message)) for group, message in messages]
        await super().group_send_many([(group, message) for group, message in survivors if message is not None])
