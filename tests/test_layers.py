"""The Redis pub/sub channel layer (streaming/layers.py) against the real Redis of REDIS_URL."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis
from django.conf import settings

from streaming.layers import RedisPubSubChannelLayer

from .conftest import RECEIVE_TIMEOUT_S

CLOSED_PORT = 1

MakeLayer = Callable[..., RedisPubSubChannelLayer]


@pytest.fixture
async def make_layer() -> AsyncIterator[MakeLayer]:
    """Make layers (one per simulated process) on REDIS_URL, sharing a prefix of this test's own."""
    prefix = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}-{uuid.uuid4().hex[:8]}"
    layers = []

    def make(*, capacity: int = 100) -> RedisPubSubChannelLayer:
        layer = RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix, capacity=capacity)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.flush()


async def receive(layer: RedisPubSubChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT_S)


async def join(layer: RedisPubSubChannelLayer, *groups: str) -> str:
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


@pytest.mark.redis
async def test_a_channel_that_is_not_read_drops_beyond_capacity_then_gets_later_messages(make_layer, caplog):
    """An unread channel keeps `capacity` messages and drops the rest with one warning; later ones still arrive."""
    layer = make_layer(capacity=3)
    slow, witness = await join(layer, "thread.a"), await join(layer, "marker")
    with caplog.at_level(logging.DEBUG, logger="streaming.layers"):
        for n in range(1, 11):
            await layer.group_send("thread.a", {"type": "log.events", "n": n})
        await layer.group_send("marker", {"type": "marker"})
        # Redis delivers one connection's publishes in order: all ten were offered to `slow` before this.
        await receive(layer, witness)

        assert [(await receive(layer, slow))["n"] for _ in range(3)] == [1, 2, 3]
        await layer.group_send("thread.a", {"type": "log.events", "n": 11})
        assert (await receive(layer, slow))["n"] == 11
    drops = [record for record in caplog.records if record.name == "streaming.layers" and slow in record.getMessage()]
    assert [record.levelno for record in drops] == [logging.WARNING]


async def test_publishing_to_an_unreachable_redis_raises_at_once():
    """With Redis unreachable, a group send raises a ConnectionError instead of waiting (the caller logs it)."""
    layer = RedisPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{CLOSED_PORT}"])
    try:
        with pytest.raises(redis.ConnectionError):
            await asyncio.wait_for(layer.group_send("streaming.log", {"type": "log.events"}), RECEIVE_TIMEOUT_S)
    finally:
        await layer.flush()


@pytest.mark.redis
async def test_a_reader_cancelled_while_joining_a_group_is_cancelled(make_layer):
    """A cancel that lands while a group is being joined is raised, not lost in redis-py's connect.

    On Python 3.11 `asyncio.wait_for` can return normally from a cancelled task; a stream
    whose client left at that moment would otherwise run on and keep its stream slot.
    """
    layer = make_layer()
    channel = await layer.new_channel()
    joining = asyncio.ensure_future(layer.group_add("thread.a", channel))
    await asyncio.sleep(0)  # let it start: the cancel lands mid-join
    joining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await joining


@pytest.mark.redis
async def test_presence_updates_of_many_rooms_each_answer_their_room(make_layer):
    """Each update touches, drops the expired and the leaving, and reads its own room, in the order given."""
    layer, now = make_layer(), time.time()
    rooms = await layer.presence_update_many(
        [
            ("a", {"stays": now + 10}, []),
            ("b", {"stays": now + 10, "expired": now - 1}, []),
            ("a", {"joins": now + 10}, ["stays"]),
        ],
        now=now,
    )
    assert rooms == [["stays"], ["stays"], ["joins"]]
