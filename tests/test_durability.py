"""Generations outlive their workers (I8), every message ends (I9), lost live events are repaired (I3)."""

import time

import pytest
from channels.db import database_sync_to_async

from streaming.models import Chunk, Generation
from streaming.providers import Turn
from streaming.providers.scripted import scripted_reply
from streaming.selectors import logged_reply_text
from streaming.services.commits import LeaseLost, Write, generation_commit
from threads.models import Message
from threads.services import message_post

from .conftest import reply_text
from .fakes import LossyLayerMixin
from .writes import crashed_worker_wrote, generation_append, generation_claim

pytestmark = pytest.mark.django_db(transaction=True)


async def test_expired_lease_is_taken_over_and_continued_exactly(thread, user, connect, worker, settings):
    """A generation whose worker died is taken over and continued from its committed text, no seam (I8)."""
    posted, _ = await database_sync_to_async(crashed_worker_wrote)(thread, tokens=5)
    socket = await connect(thread.id, user)
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert end["status"] == reply.status == "complete"
    assert reply.content == scripted_reply([Turn("user", "Tell me more")], settings.SCRIPTED_REPLY_TOKENS)
    assert reply_text(socket.log_events, str(reply.id)) == reply.content
    generation = await Generation.objects.aget(message_id=reply.id)
    assert (generation.attempts, generation.worker, generation.status) == (2, "test-worker", "done")


async def test_worker_that_lost_its_lease_writes_nothing(thread):
    """A worker whose lease was taken over cannot write another chunk (fencing, I8)."""
    _, stale = await database_sync_to_async(crashed_worker_wrote)(thread, tokens=3)
    await database_sync_to_async(generation_claim)(worker="successor", model="scripted")
    with pytest.raises(LeaseLost):
        await database_sync_to_async(generation_append)(claim=stale, text="late", first=False)
    reply = await Message.objects.aget(pk=stale.message_id)
    logged = await database_sync_to_async(logged_reply_text)(message=reply)
    assert logged and "late" not in logged


async def test_too_many_takeovers_end_failed_interrupted(thread, user, connect, worker, settings):
    """A generation out of attempts ends `failed` with code `interrupted`, its text kept (I9)."""
    settings.GENERATION_MAX_ATTEMPTS = 1
    posted, _ = await database_sync_to_async(crashed_worker_wrote)(thread, tokens=4)
    socket = await connect(thread.id, user)
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    reply = await Message.objects.aget(pk=posted.reply.id)
    assert end["status"] == reply.status == "failed"
    assert reply.error["code"] == "interrupted"
    assert reply.content and reply_text(socket.log_events, str(reply.id)) == reply.content


@pytest.fixture
def lossy_layer(settings):
    """Swap in a channel layer of the configured kind that loses some live events."""
    lossy = "tests.fakes.LossyRedisChannelLayer" if settings.REDIS_URL else "tests.fakes.LossyInMemoryChannelLayer"
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"], "BACKEND": lossy}}
    LossyLayerMixin.lost_seqs = []
    return LossyLayerMixin


async def test_lost_live_events_are_repaired(thread, user, connect, worker, lossy_layer):
    """With every third event and the final `end` lost in the channel layer, clients end exact within 2 s (I3)."""
    sockets = [await connect(thread.id, user) for _ in range(3)]
    posted = await database_sync_to_async(message_post)(thread=thread, content="Hello", client_id=None)
    for socket in sockets:
        await socket.receive_until(lambda frame: frame["type"] == "end")
    received_end_at = time.time()
    assert lossy_layer.lost_seqs, "the layer lost events"
    reply = await Message.objects.aget(pk=posted.reply.id)
    generation = await Generation.objects.aget(message_id=reply.id)
    assert received_end_at - generation.finished_at.timestamp() < 2.0, "the lost `end` was repaired within 2 s"
    for socket in sockets:
        seqs = [event["seq"] for event in socket.log_events]
        assert seqs == list(range(1, seqs[-1] + 1))
        assert reply_text(socket.log_events, str(reply.id)) == reply.content


@pytest.mark.django_db
def test_retried_append_whose_first_try_committed_writes_nothing_twice(thread):
    """A group commit retried after its COMMIT's answer was lost writes no second chunk (I1, I8)."""
    posted = message_post(thread=thread, content="Hello", client_id=None)
    claim = generation_claim(worker="w", model="scripted")
    generation_commit(writes=[Write(claim=claim, text="Hel", first=True, committed_chars=0)])
    second = Write(claim=claim, text="lo", committed_chars=3)
    generation_commit(writes=[second])
    retried = generation_commit(writes=[second], retrying=True)[claim.generation_id]
    assert retried.events == [] and not retried.lease_lost
    assert logged_reply_text(message=Message.objects.get(pk=posted.reply.id)) == "Hello"
    deltas = Chunk.objects.filter(message_id=posted.reply.id, kind="delta").values_list("text", flat=True)
    assert list(deltas) == ["Hel", "lo"]
