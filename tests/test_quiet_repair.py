"""Events lost while a thread's feed heard nothing streaming are repaired too: no later event need come (I3).

A feed repairs after quiet while a reply streams. When it took its thread for idle, a lost
event (a version switch, or a whole reply, `start` and `end` included) has no later one to
show its gap: the hub's timer reads the last seqs of such threads together, once every
STREAM_REPAIR_SECONDS, and repairs the feeds behind.
"""

import pytest
from channels.db import database_sync_to_async

from streaming import hub as hub_module
from streaming.events import LOG_EVENTS
from streaming.subscription import ThreadGone
from threads.models import Thread

from .fakes import LossyInMemoryChannelLayer, LossyLayerMixin, LossyRedisChannelLayer
from .test_hub import Reader, assert_nothing_left, eventually, logged, post, use_layer

pytestmark = pytest.mark.django_db(transaction=True)


class LosesEveryLogEvent(LossyLayerMixin):
    """Loses the live copy of every log event: only the database knows them."""

    @staticmethod
    def _what_survives(message: dict) -> dict | None:
        return None if message.get("type") == LOG_EVENTS else message


class LosingInMemoryChannelLayer(LosesEveryLogEvent, LossyInMemoryChannelLayer):
    pass


class LosingRedisChannelLayer(LosesEveryLogEvent, LossyRedisChannelLayer):
    pass


async def test_a_whole_reply_lost_on_an_idle_thread_reaches_every_reader(thread, worker, settings, monkeypatch):
    """Nothing of the reply comes live: the quiet threads' check finds the log past the feed, one read for all."""
    use_layer(settings, LosingInMemoryChannelLayer, LosingRedisChannelLayer)
    checks = []
    read_last_seqs = hub_module.athreads_last_seq

    async def counted(**kwargs):
        checks.append(kwargs["thread_ids"])
        return await read_last_seqs(**kwargs)

    monkeypatch.setattr(hub_module, "athreads_last_seq", counted)
    readers = [Reader(thread) for _ in range(3)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    await post(thread)
    await eventually(lambda: all(reader.ends() for reader in readers), "the lost reply reaches every reader")
    expected = await logged(thread)
    assert all(reader.log == expected for reader in readers)
    assert checks, "the quiet threads' check found the reply"
    assert all(ids == [thread.id] for ids in checks), "one thread, asked about once per check whatever its readers"
    for reader in readers:
        await reader.stop()
    await assert_nothing_left(thread)


async def test_a_thread_deleted_while_its_notice_was_lost_ends_its_quiet_readers(thread, settings):
    """The check finds the thread gone: its readers end as a deleted thread's do."""
    use_layer(settings, LosingInMemoryChannelLayer, LosingRedisChannelLayer)
    reader = Reader(thread)
    await eventually(reader.ready, "the reader is ready")
    # Deleted without a word to the feed: as if its notice were lost.
    await database_sync_to_async(Thread.objects.filter(pk=thread.pk).delete)()
    await eventually(lambda: reader.ended is not None, "the reader ends")
    assert isinstance(reader.ended, ThreadGone)
    await reader.stop()
