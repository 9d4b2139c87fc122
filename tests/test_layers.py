"""The Redis pub/sub channel layer (streaming/layers.py) against the real Redis of REDIS_URL."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from streaming.layers import RedisPubSubChannelLayer

from .conftest import RECEIVE_TIMEOUT_S

# Latency the proxy adds to every client request: a round trip costs at least this long.
LINK_DELAY_S = 0.5
CLOSED_PORT = 1

MakeLayer = Callable[..., RedisPubSubChannelLayer]


@pytest.fixture
async def make_layer() -> AsyncIterator[MakeLayer]:
    """Make layers (one per simulated process) on REDIS_URL, sharing a prefix of this test's own."""
    prefix = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}-{uuid.uuid4().hex[:8]}"
    layers = []

    def make(*, url: str | None = None, capacity: int = 100) -> RedisPubSubChannelLayer:
        layer = RedisPubSubChannelLayer(hosts=[url or settings.REDIS_URL], prefix=prefix, capacity=capacity)
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


class DelayingProxy:
    """A TCP proxy to Redis that delivers what clients send `delay_s` late, like a long link.

    Each chunk is held for the delay from its arrival, not after the one before it, so a
    request costs one delay however the client's writes are split.
    """

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}"

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        target = urlsplit(settings.REDIS_URL)
        server_reader, server_writer = await asyncio.open_connection(target.hostname, target.port or 6379)
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        for pump in (
            self._arrive(client_reader, pending),
            self._deliver(pending, server_writer),
            self._copy(server_reader, client_writer),
        ):
            task = asyncio.create_task(pump)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _arrive(self, reader: asyncio.StreamReader, pending: asyncio.Queue) -> None:
        while data := await reader.read(65536):
            pending.put_nowait((asyncio.get_running_loop().time() + self.delay_s, data))

    async def _deliver(self, pending: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await pending.get()
            await asyncio.sleep(due - asyncio.get_running_loop().time())
            writer.write(data)
            await writer.drain()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.server.close()


@pytest.fixture
async def delaying_proxy() -> AsyncIterator[DelayingProxy]:
    proxy = DelayingProxy()
    yield proxy
    await proxy.stop()


@pytest.mark.redis
async def test_group_send_many_delivers_each_message_to_every_member_of_its_group_in_order(make_layer):
    """Members in several processes get their groups' messages of a batch, each once and in order."""
    worker, web_1, web_2 = make_layer(), make_layer(), make_layer()
    a_1, a_and_b = await join(web_1, "thread.a"), await join(web_1, "thread.a", "thread.b")
    a_2, b_1 = await join(web_2, "thread.a"), await join(web_2, "thread.b")
    batch = [("thread.a", 1), ("thread.b", 2), ("thread.a", 3), ("thread.b", 4), ("thread.a", 5)]

    await worker.group_send_many([(group, {"type": "thread.events", "n": n}) for group, n in batch])
    last = {"type": "thread.events", "n": "last"}
    await worker.group_send_many([("thread.a", last), ("thread.b", last)])

    expected = {
        (web_1, a_1): [1, 3, 5],
        (web_1, a_and_b): [1, 2, 3, 4, 5],
        (web_2, a_2): [1, 3, 5],
        (web_2, b_1): [2, 4],
    }
    for (layer, channel), numbers in expected.items():
        received = [(await receive(layer, channel))["n"] for _ in numbers]
        assert received == numbers
    # Then the next batch's message, and nothing in between: no member got one twice.
    for layer, channel in expected:
        assert (await receive(layer, channel))["n"] == "last"


@pytest.mark.redis
async def test_group_send_many_costs_one_round_trip(make_layer, delaying_proxy):
    """A batch of 30 group messages reaches Redis in one round trip, not one per message."""
    worker = make_layer(url=await delaying_proxy.start())
    web = make_layer()  # straight to Redis: it sees what was published
    channel = await join(web, "thread.a")
    await worker.group_send_many([("thread.a", {"type": "thread.events", "n": 0})])  # connects, undelayed
    assert (await receive(web, channel))["n"] == 0

    delaying_proxy.delay_s = LINK_DELAY_S
    loop = asyncio.get_running_loop()
    started = loop.time()
    await worker.group_send_many([("thread.a", {"type": "thread.events", "n": n}) for n in range(1, 31)])
    elapsed = loop.time() - started

    # One message per round trip would take 30 delays.
    assert 0.9 * LINK_DELAY_S <= elapsed < 2 * LINK_DELAY_S
    assert [(await receive(web, channel))["n"] for _ in range(30)] == list(range(1, 31))


@pytest.mark.redis
async def test_a_channel_that_is_not_read_drops_beyond_capacity_then_gets_later_messages(make_layer, caplog):
    """An unread channel keeps `capacity` messages and drops the rest with one warning; later ones still arrive."""
    layer = make_layer(capacity=3)
    slow, witness = await join(layer, "thread.a"), await join(layer, "marker")
    with caplog.at_level(logging.DEBUG, logger="streaming.layers"):
        await layer.group_send_many(
            [("thread.a", {"type": "thread.events", "n": n}) for n in range(1, 11)] + [("marker", {"type": "marker"})]
        )
        # Redis delivers one connection's publishes in order: all ten were offered to `slow` before this.
        await receive(layer, witness)

        assert [(await receive(layer, slow))["n"] for _ in range(3)] == [1, 2, 3]
        await layer.group_send("thread.a", {"type": "thread.events", "n": 11})
        assert (await receive(layer, slow))["n"] == 11
    drops = [record for record in caplog.records if record.name == "streaming.layers" and slow in record.getMessage()]
    assert [record.levelno for record in drops] == [logging.WARNING]


async def test_publishing_to_an_unreachable_redis_raises_at_once():
    """With Redis unreachable, group_send_many raises a ConnectionError instead of waiting (the caller logs it)."""
    layer = RedisPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{CLOSED_PORT}"])
    try:
        with pytest.raises(redis.ConnectionError):
            await asyncio.wait_for(layer.group_send_many([("thread.a", {"type": "thread.events"})]), RECEIVE_TIMEOUT_S)
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
