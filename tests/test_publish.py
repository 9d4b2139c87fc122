"""Publishing never makes the database thread wait for the channel layer (streaming/broadcast.py)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer

from streaming.broadcast import _calling_loop, channel_layer
from streaming.events import LOG_GROUP
from streaming.selectors import athread_last_seq

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_SEND_SECONDS = 1.5
RECEIVE_TIMEOUT_S = 10


class SlowInMemoryChannelLayer(InMemoryChannelLayer):
    """A layer whose every group send takes SLOW_SEND_SECONDS, like a Redis far away or overloaded."""

    async def group_send(self, group: str, message: dict) -> None:
        await asyncio.sleep(SLOW_SEND_SECONDS)
        await super().group_send(group, message)


@pytest.fixture
def slow_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_publish.SlowInMemoryChannelLayer"}}
    return channel_layer()


async def post(thread, content="Hello there"):
    from threads.services import message_post

    return await database_sync_to_async(message_post)(thread=thread, content=content, client_id=None)


async def test_a_slow_publish_does_not_hold_up_another_coroutines_read(thread, slow_layer):
    """A post's sends on commit take 1.5 s each; a primary-key read beside it is not made to wait for them."""
    channel = await slow_layer.new_channel()
    await slow_layer.group_add(LOG_GROUP, channel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    posting = asyncio.ensure_future(post(thread))
    await asyncio.sleep(0)  # one loop turn: the post goes first to the database thread, the read queues behind it
    assert await athread_last_seq(thread_id=thread.id) == 2
    read_after = loop.time() - started
    await posting
    posted_after = loop.time() - started
    # Waiting on the database thread for the sends would take at least SLOW_SEND_SECONDS.
    assert read_after < SLOW_SEND_SECONDS / 2, f"the read waited {read_after:.2f} s"
    assert posted_after < SLOW_SEND_SECONDS / 2, f"the post waited {posted_after:.2f} s"
    # The publish still arrives, once its send is done.
    message = await asyncio.wait_for(slow_layer.receive(channel), RECEIVE_TIMEOUT_S)
    ((thread_id, events),) = message["threads"]
    assert thread_id == str(thread.id)
    assert [(seq, kind) for seq, kind, _ in events] == [(1, "message"), (2, "start")]


async def test_sync_code_called_from_a_loop_finds_that_loop():
    """Sync code run for a coroutine hands its sends to the coroutine's loop."""
    assert await sync_to_async(_calling_loop)() is asyncio.get_running_loop()
    assert await database_sync_to_async(_calling_loop)() is asyncio.get_running_loop()


def test_sync_code_no_loop_called_publishes_before_returning(thread, settings):
    """A management command or WSGI request has no loop to hand over to: its sends are done when commit returns."""
    from threads.services import message_post

    # In memory whatever the run's layer: a Redis layer's subscriptions live in one loop, and this test has none.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert _calling_loop() is None
    layer = channel_layer()
    channel = asyncio.run(layer.new_channel())
    # Joined in a loop of its own: the in-memory layer's groups are plain dicts, its queues made per receive.
    asyncio.run(layer.group_add(LOG_GROUP, channel))
    message_post(thread=thread, content="From a command", client_id=None)
    message = asyncio.run(asyncio.wait_for(layer.receive(channel), 0.1))
    ((thread_id, events),) = message["threads"]
    assert thread_id == str(thread.id)
    assert [kind for _, kind, _ in events] == ["message", "start"]
