"""The process's hub: one channel-layer subscription per thread, however many read it (streaming/hub.py).

Readers here are ThreadSubscriptions read in tasks of the test's loop, as the WebSocket
consumer and the event-stream views read them; a real worker writes the replies.
"""

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.utils import timezone

from streaming import hub as hub_module
from streaming import subscription as subscription_module
from streaming.broadcast import channel_layer, notice, publish_thread_renamed_on_commit
from streaming.events import ACCESS_REVOKED, LOG_GROUP, thread_group_name
from streaming.layers import RedisPubSubChannelLayer
from streaming.selectors import achunk_events_after
from streaming.subscription import AccessGrant, AccessRevoked, Frame, SubscriptionEnded, ThreadGone, ThreadSubscription
from threads.services import thread_create

from .fakes import LossyInMemoryChannelLayer, LossyLayerMixin, LossyRedisChannelLayer
from .test_sse import group_size

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_S = 15
POLL_S = 0.01


async def post(thread, content="Hello there"):
    from threads.services import message_post

    return await database_sync_to_async(message_post)(thread=thread, content=content, client_id=str(uuid.uuid4()))


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Return once `condition()` holds; fail after DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"not within {DEADLINE_S} s: {what}"
        await asyncio.sleep(POLL_S)


class Reader:
    """Reads a subscription in a task of its own; `reading` cleared makes it stop taking frames (a slow client).

    Given `takes_now` (whether its socket takes a frame at once, asked per frame), it also
    offers the subscription a `send_now`, as the WebSocket consumer does under the
    Procfile's daphne: `frames` then holds every frame in the order it was sent, either way.
    """

    def __init__(
        self,
        thread,
        after: int = 0,
        grants: tuple[AccessGrant, ...] = (),
        takes_now: Callable[[Frame], bool] | None = None,
    ) -> None:
        self.subscription = ThreadSubscription(thread=thread, after=after, grants=grants)
        self.after = after
        self.frames: list[Frame] = []
        self.sent_now: list[Frame] = []
        self.takes_now = takes_now
        self.ended: SubscriptionEnded | None = None
        self.reading = asyncio.Event()
        self.reading.set()
        self.task = asyncio.create_task(self._read())

    def _send_now(self, frame: Frame) -> bool:
        assert self.takes_now is not None
        if not self.takes_now(frame):
            return False
        self.frames.append(frame)
        self.sent_now.append(frame)
        return True

    async def _read(self) -> None:
        send_now = self._send_now if self.takes_now is not None else None
        try:
            async for frame in self.subscription.frames(send_now=send_now):
                assert frame is not None
                self.frames.append(frame)
                await self.reading.wait()
        except SubscriptionEnded as ended:
            self.ended = ended

    @property
    def log(self) -> list[tuple[int | None, str, str]]:
        return [(frame.seq, frame.type, frame.data) for frame in self.frames if frame.type not in ("ready", "thread")]

    def ends(self, count: int = 1) -> bool:
        return sum(frame.type == "end" for frame in self.frames) >= count

    def ready(self) -> bool:
        return any(frame.type == "ready" for frame in self.frames)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def logged(thread, after: int = 0) -> list[tuple[int, str, str]]:
    """Return the thread's log after `after`, as the database has it."""
    return list(await achunk_events_after(thread_id=thread.id, after=after, limit=100_000))


def hub_tasks() -> list[asyncio.Task]:
    """Return the tasks the hub runs in this loop: its timer, its feeds' openings, receives and repairs."""
    names = ("Hub.", "Listener.", "GroupFeed.", "ThreadFeed.", "NoticeFeed.")
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and getattr(task.get_coro(), "__qualname__", "").startswith(names)
    ]


async def assert_nothing_left(thread) -> None:
    """No hub, hub task or group membership stays once nobody reads."""
    await eventually(lambda: asyncio.get_running_loop() not in hub_module._hubs, "the hub goes")
    await eventually(lambda: not hub_tasks(), "the hub's tasks end")
    assert await group_size(thread_group_name(thread.id)) == 0
    assert await group_size(LOG_GROUP) == 0


class CountingLayerMixin:
    """Counts the channels made and the groups joined in this process: real sends, counted."""

    new_channels = 0
    group_adds: list[str] = []

    def _layers_own(self, name: str):
        try:
            return getattr(super(), name)
        except AttributeError:  # the Redis pub/sub layer hands its methods on to a layer per loop
            return getattr(self._get_layer(), name)  # type: ignore[attr-defined]

    async def new_channel(self, *args, **kwargs) -> str:
        CountingLayerMixin.new_channels += 1
        return await self._layers_own("new_channel")(*args, **kwargs)

    async def group_add(self, group: str, channel: str) -> None:
        CountingLayerMixin.group_adds.append(group)
        await self._layers_own("group_add")(group, channel)


class CountingInMemoryChannelLayer(CountingLayerMixin, InMemoryChannelLayer):
    pass


class CountingRedisChannelLayer(CountingLayerMixin, RedisPubSubChannelLayer):
    pass


def use_layer(settings, in_memory: type, redis: type) -> None:
    backend = redis if settings.REDIS_URL else in_memory
    path = f"{backend.__module__}.{backend.__qualname__}"
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"], "BACKEND": path}}


async def test_readers_joining_and_leaving_each_get_the_log_once_in_order(thread, worker, settings):
    """Readers that join before, during and after replies, from various cursors, each get exactly the log."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    first = Reader(thread)
    leaver = Reader(thread)
    await eventually(lambda: first.ready() and leaver.ready(), "the first readers are ready")
    await post(thread, "One")
    await eventually(lambda: any(frame.type == "delta" for frame in first.frames), "the reply streams")
    mid_reply = [Reader(thread), Reader(thread, after=2)]
    await leaver.stop()
    await eventually(lambda: first.ends(), "the first reply ends")
    await post(thread, "Two")
    second_reply = [Reader(thread, after=1)]
    await eventually(lambda: all(reader.ends(2) for reader in [first, *mid_reply, *second_reply]), "both replies end")
    after_both = Reader(thread)
    await eventually(lambda: after_both.ends(2) and after_both.ready(), "the late reader reads the backlog")
    for reader in [first, *mid_reply, *second_reply, after_both]:
        assert reader.log == await logged(thread, after=reader.after)
        assert reader.ended is None
    seqs = [seq for seq, _, _ in leaver.log]
    assert seqs == list(range(1, len(seqs) + 1)), "the reader that left got a gapless prefix"
    for reader in [first, *mid_reply, *second_reply, after_both]:
        await reader.stop()
    await assert_nothing_left(thread)


async def test_one_layer_subscription_per_thread_whatever_the_readers(thread, worker, settings):
    """Five readers of one thread cost the process two channels: one on the log's group, one for notices."""
    use_layer(settings, CountingInMemoryChannelLayer, CountingRedisChannelLayer)
    CountingLayerMixin.new_channels, CountingLayerMixin.group_adds = 0, []
    readers = [Reader(thread) for _ in range(5)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    await post(thread)
    await eventually(lambda: all(reader.ends() for reader in readers), "the reply reaches every reader")
    expected = await logged(thread)
    assert all(reader.log == expected for reader in readers)
    # (The worker started on the layer before this one: its channel is not counted.)
    assert sorted(CountingLayerMixin.group_adds) == sorted([LOG_GROUP, thread_group_name(thread.id)])
    assert CountingLayerMixin.new_channels == 2
    for reader in readers:
        await reader.stop()
    await assert_nothing_left(thread)


async def test_readers_of_many_threads_and_grants_share_one_channel_for_notices(user, settings):
    """Three threads read under three grants cost two channels; each notice reaches the readers of its group only."""
    use_layer(settings, CountingInMemoryChannelLayer, CountingRedisChannelLayer)
    CountingLayerMixin.new_channels, CountingLayerMixin.group_adds = 0, []
    threads = [await database_sync_to_async(thread_create)(owner=user, title=f"Thread {n}") for n in range(3)]
    valid = [True, True, True]
    grants = [
        AccessGrant(group=f"test-grant.{uuid.uuid4().hex}", still_valid=partial(valid.__getitem__, n), detail="Gone.")
        for n in range(3)
    ]
    readers = [Reader(thread, grants=(grant,)) for thread, grant in zip(threads, grants, strict=True)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    assert CountingLayerMixin.new_channels == 2
    assert sorted(CountingLayerMixin.group_adds) == sorted(
        [LOG_GROUP, *(thread_group_name(thread.id) for thread in threads), *(grant.group for grant in grants)]
    )

    threads[0].title = "Renamed"
    await database_sync_to_async(publish_thread_renamed_on_commit)(threads[0])
    await eventually(lambda: any(frame.type == "thread" for frame in readers[0].frames), "the rename arrives")
    valid[1] = False
    await channel_layer().group_send(grants[1].group, notice(grants[1].group, ACCESS_REVOKED))
    await eventually(lambda: readers[1].task.done(), "the revoked reader ends")
    assert isinstance(readers[1].ended, AccessRevoked)
    assert [frame.type for frame in readers[1].frames + readers[2].frames].count("thread") == 0
    assert not readers[0].task.done() and not readers[2].task.done()
    for reader in readers:
        await reader.stop()
    for thread in threads:
        await assert_nothing_left(thread)


async def test_a_reader_joining_as_the_last_one_leaves_still_gets_the_threads_notices(thread, user):
    """The thread's feed closes and a new one opens on the shared notices channel at once: the new one stays joined."""
    elsewhere = Reader(await database_sync_to_async(thread_create)(owner=user, title="Keeps the hub"))
    leaving = Reader(thread)
    await eventually(lambda: elsewhere.ready() and leaving.ready(), "the readers are ready")
    leaving.task.cancel()
    joining = Reader(thread)  # in the same loop turn: its feed opens while the last one closes
    await eventually(lambda: leaving.task.done() and joining.ready(), "one reader left, the other joined")
    thread.title = "Renamed"
    await database_sync_to_async(publish_thread_renamed_on_commit)(thread)
    await eventually(
        lambda: any(frame.type == "thread" for frame in joining.frames), "the rename reaches the new reader"
    )
    await joining.stop()
    await elsewhere.stop()
    await assert_nothing_left(thread)


async def test_a_lost_event_is_read_from_the_database_once_for_all_readers(thread, worker, settings, monkeypatch):
    """With a layer losing every third event, the feed fills each gap with one read; readers read no gap themselves."""
    use_layer(settings, LossyInMemoryChannelLayer, LossyRedisChannelLayer)
    LossyLayerMixin.lost_seqs = []
    reads = {"feed": 0, "readers": 0}

    def counted(name: str, read):
        async def counting(**kwargs):
            reads[name] += 1
            return await read(**kwargs)

        return counting

    monkeypatch.setattr(hub_module, "achunk_events_after", counted("feed", hub_module.achunk_events_after))
    monkeypatch.setattr(
        subscription_module, "achunk_events_after", counted("readers", subscription_module.achunk_events_after)
    )
    readers = [Reader(thread) for _ in range(4)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    backlog_reads = reads["readers"]
    await post(thread)
    await eventually(lambda: all(reader.ends() for reader in readers), "the reply, repaired, reaches every reader")
    expected = await logged(thread)
    assert all(reader.log == expected for reader in readers)
    assert LossyLayerMixin.lost_seqs, "the layer lost events"
    # One read per gap (the lost `end` is found by a repair after quiet), whatever the number of readers.
    assert 1 <= reads["feed"] <= len(LossyLayerMixin.lost_seqs)
    assert reads["readers"] == backlog_reads, "no reader read a gap of its own"
    for reader in readers:
        await reader.stop()
    await assert_nothing_left(thread)


async def test_a_reader_that_stops_taking_frames_holds_back_nobody(thread, worker, settings):
    """A paused reader's inbox overflows and is dropped; the others get the reply; it catches up when it reads again."""
    settings.STREAM_SUBSCRIBER_QUEUE_FRAMES = 1
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    slow, fast = Reader(thread), [Reader(thread), Reader(thread)]
    await eventually(lambda: slow.ready() and all(reader.ready() for reader in fast), "every reader is ready")
    slow.reading.clear()
    await post(thread)
    await eventually(lambda: all(reader.ends() for reader in fast), "the fast readers get the whole reply")
    assert not slow.ends(), "the slow reader took nothing meanwhile"
    inbox = next(inbox for inbox in hub_module._hubs[asyncio.get_running_loop()].inboxes if inbox.overflowed)
    assert inbox.queued == 0, "its frames were dropped, not kept"
    slow.reading.set()
    await eventually(lambda: slow.ends(), "the slow reader catches up")
    expected = await logged(thread)
    assert slow.log == expected and all(reader.log == expected for reader in fast)
    for reader in [slow, *fast]:
        await reader.stop()
    await assert_nothing_left(thread)


async def test_a_reader_cancelled_mid_backlog_leaves_nothing_behind(thread, settings):
    """Cancelled while it reads a long backlog page by page, a reader leaves no task or membership."""
    settings.STREAM_BACKLOG_PAGE_SIZE = 1
    await post(thread)  # its message and start events: a backlog of two pages
    reader = Reader(thread)
    reader.reading.clear()  # holds it inside its backlog after the first frame
    await eventually(lambda: len(reader.frames) == 1, "the reader is in its backlog")
    assert hub_tasks(), "its feed receives meanwhile"
    await reader.stop()
    await assert_nothing_left(thread)


async def test_a_reader_cancelled_while_joining_leaves_nothing_behind(thread):
    """Cancelled before its feed is open, a reader leaves no task or membership, and the next one reads."""
    reader = Reader(thread)
    await asyncio.sleep(0)  # one loop turn: the reader starts joining
    await reader.stop()
    await assert_nothing_left(thread)
    after = Reader(thread)
    await eventually(after.ready, "a new reader is ready")
    await after.stop()
    await assert_nothing_left(thread)


async def test_a_revoked_grant_ends_its_reader_only(thread, worker):
    """A revocation notice ends the reader opened under that grant; another reader of the thread goes on."""
    valid = {"token": True}

    grant = AccessGrant(
        group=f"test-grant.{uuid.uuid4().hex}", still_valid=lambda: valid["token"], detail="The token was revoked."
    )
    granted, other = Reader(thread, grants=(grant,)), Reader(thread)
    await eventually(lambda: granted.ready() and other.ready(), "both readers are ready")
    valid["token"] = False
    await channel_layer().group_send(grant.group, notice(grant.group, ACCESS_REVOKED))
    await eventually(lambda: granted.task.done(), "the revoked reader ends")
    assert isinstance(granted.ended, AccessRevoked) and granted.ended.detail == "The token was revoked."
    await post(thread)
    await eventually(other.ends, "the other reader still gets the reply")
    assert other.ended is None
    await other.stop()
    await assert_nothing_left(thread)
    assert await group_size(grant.group) == 0


async def test_grants_are_checked_at_each_of_their_expiries_without_a_notice(thread, settings):
    """A reader's grants are checked at each expiry they carry, with no notice: it ends at the first they fail."""
    settings.STREAM_ACCESS_RECHECK_SECONDS = 3600
    now = timezone.now()
    # Two links, say: the access outlives the first one's expiry and ends with the second's.
    first, last = now + timedelta(seconds=0.5), now + timedelta(seconds=1)
    checked_at: list[float] = []

    def still_valid() -> bool:
        checked_at.append(time.time())
        return timezone.now() < last

    grants = tuple(
        AccessGrant(group=f"test-grant.{uuid.uuid4().hex}", still_valid=still_valid, detail="Expired.", expires_at=at)
        for at in (first, last)
    )
    reader = Reader(thread, grants=grants)
    await eventually(lambda: reader.task.done(), "the reader ends")
    ended_at = time.time()

    assert isinstance(reader.ended, AccessRevoked) and reader.ended.detail == "Expired."
    opened, at_first, at_last = checked_at
    assert opened < first.timestamp() <= at_first < last.timestamp() <= at_last
    assert ended_at - last.timestamp() < 1.0, "ended at the expiry, not at the recheck"
    await assert_nothing_left(thread)


async def test_deleting_the_thread_ends_every_reader(thread, settings):
    """A thread deleted while its reply is pending ends all its readers with ThreadGone, found by one feed."""
    settings.STREAM_REPAIR_SECONDS = 0.2
    await post(thread)  # queued, with no worker: the readers wait for a reply that never comes
    readers = [Reader(thread) for _ in range(3)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    await thread.adelete()
    await eventually(lambda: all(reader.task.done() for reader in readers), "every reader ends")
    assert all(isinstance(reader.ended, ThreadGone) for reader in readers)
    await assert_nothing_left(thread)


class BreakingInMemoryChannelLayer(InMemoryChannelLayer):
    """Fails a receive that brings a `test.break` message, as a layer whose connection broke would."""

    async def receive(self, channel: str) -> dict:
        message = await super().receive(channel)
        if message.get("type") == "test.break":
            raise ConnectionError("the channel layer went away")
        return message


async def test_a_feed_that_fails_ends_its_readers_and_the_next_reader_gets_a_new_one(thread, settings):
    """Readers of a feed whose receive failed end (to resume, as a socket closed 1011 does); a new reader reads on."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_hub.BreakingInMemoryChannelLayer"}}
    readers = [Reader(thread), Reader(thread)]
    await eventually(lambda: all(reader.ready() for reader in readers), "every reader is ready")
    await channel_layer().group_send(thread_group_name(thread.id), {"type": "test.break"})
    await eventually(lambda: all(reader.task.done() for reader in readers), "every reader ends")
    for reader in readers:
        failure = reader.task.exception()
        assert isinstance(failure, RuntimeError) and isinstance(failure.__cause__, ConnectionError)
    await assert_nothing_left(thread)
    after = Reader(thread)
    await eventually(after.ready, "a new reader is ready")
    await post(thread)  # no worker: its message and start events arrive live
    await eventually(lambda: len(after.log) == 2, "the new reader gets live events")
    assert after.log == await logged(thread)
    await after.stop()
    await assert_nothing_left(thread)


async def test_the_timer_wakes_each_reader_at_its_last_plan_and_forgets_the_rest():
    """Planned again, a reader is woken at its new time only; readers that left are not woken at all."""
    loop = asyncio.get_running_loop()
    hub = hub_module.Hub(loop)
    soon, later, gone = (hub_module.Inbox(thread_id=uuid.uuid4()) for _ in range(3))
    hub.inboxes.update((soon, later, gone))
    woken: list[hub_module.Inbox] = []

    async def wake_of(inbox: hub_module.Inbox) -> None:
        await inbox.wake.wait()
        assert inbox.due, "woken for its duty"
        woken.append(inbox)

    watching = [asyncio.create_task(wake_of(inbox)) for inbox in (soon, later)]
    hub.timer = asyncio.create_task(hub._run_timer())
    try:
        start = loop.time()
        hub.plan(later, start + 0.02)
        hub.plan(gone, start + 0.03)
        hub.plan(soon, start + 0.05)
        hub.plan(later, start + 0.2)  # its first plan is now stale
        hub.inboxes.discard(gone)
        await asyncio.wait_for(asyncio.gather(*watching), DEADLINE_S)

        assert woken == [soon, later]
        assert loop.time() >= start + 0.2, "not woken at the plan it replaced"
        assert not gone.wake.is_set(), "a reader that left is not woken"
        assert hub.agenda == [], "stale entries are passed over and dropped"
    finally:
        hub.timer.cancel()
        await asyncio.gather(hub.timer, return_exceptions=True)


async def test_a_round_published_while_a_feed_opens_is_handed_on_once_the_feed_knows_its_seq(thread, monkeypatch):
    """Events that arrive between joining the log and reading the thread's last seq are kept, not dropped."""
    read_last_seq, last_seq_read = hub_module.athread_last_seq, asyncio.Event()
    answer = asyncio.Event()

    async def last_seq_held_back(**kwargs) -> int:
        seq = await read_last_seq(**kwargs)
        last_seq_read.set()
        await answer.wait()
        return seq

    monkeypatch.setattr(hub_module, "athread_last_seq", last_seq_held_back)
    reader = Reader(thread)
    await asyncio.wait_for(last_seq_read.wait(), DEADLINE_S)  # it read 0, and has not said so yet
    feed = hub_module._hubs[asyncio.get_running_loop()].feeds[thread_group_name(thread.id)]
    await post(thread)  # logs and publishes seqs 1 and 2
    await eventually(lambda: bool(feed.early), "the round reaches the feed while it opens")

    answer.set()
    await eventually(lambda: feed.seq == 2, "the feed hands the early round on")
    await eventually(reader.ready, "the reader is ready")
    assert [frame.seq for frame in reader.frames if frame.type in ("message", "start")] == [1, 2]
    await reader.stop()
    await assert_nothing_left(thread)


async def test_readers_whose_duties_fall_due_together_wake_together():
    """Duties due within one step of the timer's grid wake in one pass, so their heartbeats go out together."""
    loop = asyncio.get_running_loop()
    hub = hub_module.Hub(loop)
    first, second = hub_module.Inbox(thread_id=uuid.uuid4()), hub_module.Inbox(thread_id=uuid.uuid4())
    hub.inboxes.update((first, second))
    hub.timer = asyncio.create_task(hub._run_timer())
    try:
        grid = hub_module.DUTY_GRID_SECONDS
        step = math.ceil(loop.time() / grid) * grid + grid
        hub.plan(first, step + 0.1 * grid)
        hub.plan(second, step + 0.9 * grid)
        await asyncio.wait_for(first.wake.wait(), DEADLINE_S)

        assert second.due, "woken in the same pass"
        assert loop.time() >= step + 0.9 * grid, "neither before its time"
    finally:
        hub.timer.cancel()
        await asyncio.gather(hub.timer, return_exceptions=True)


async def test_a_waiting_reader_sends_its_live_frames_at_once_without_its_task(thread, worker, settings):
    """Frames that follow a waiting reader's cursor go out through send_now as they come, exactly the log."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    reader = Reader(thread, takes_now=lambda frame: True)
    await eventually(reader.ready, "the reader is ready")
    yielded_before = len(reader.frames)
    await post(thread)
    await eventually(reader.ends, "the reply ends")

    assert reader.log == await logged(thread)
    assert reader.frames[yielded_before:] == reader.sent_now, "every live frame went out at once"
    assert len(reader.sent_now) > 3, "the message, the start, deltas and the end"
    await reader.stop()
    await assert_nothing_left(thread)


async def test_frames_a_socket_cannot_take_at_once_go_to_the_reader_in_order(thread, worker, settings):
    """A socket that takes every other frame at once: the rest, and what follows them, go the reader's way."""
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    asked = itertools.count()
    reader = Reader(thread, takes_now=lambda frame: next(asked) % 2 == 0)
    takes_all = Reader(thread, takes_now=lambda frame: True)
    await eventually(lambda: reader.ready() and takes_all.ready(), "the readers are ready")
    await post(thread)
    await eventually(lambda: reader.ends() and takes_all.ends(), "the reply ends")

    expected = await logged(thread)
    assert reader.log == expected and takes_all.log == expected
    assert reader.sent_now and len(reader.sent_now) < len(takes_all.sent_now), "both ways were taken"
    for each in (reader, takes_all):
        await each.stop()
    await assert_nothing_left(thread)


async def test_a_reader_that_fell_behind_reads_its_gap_before_frames_go_out_at_once(thread, worker, settings):
    """An inbox that overflowed: the reader catches up from the database, then live frames go out at once again."""
    settings.STREAM_SUBSCRIBER_QUEUE_FRAMES = 1
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    taking = {"now": True}
    reader = Reader(thread, takes_now=lambda frame: taking["now"])
    await eventually(reader.ready, "the reader is ready")
    reader.reading.clear()
    taking["now"] = False  # a socket that stopped taking: the reader is held, its inbox overflows
    await post(thread, "One")
    inbox = next(iter(hub_module._hubs[asyncio.get_running_loop()].inboxes))
    await eventually(lambda: inbox.overflowed, "the reader's inbox overflows")
    taking["now"] = True
    reader.reading.set()
    await eventually(reader.ends, "the first reply reaches the reader")
    await post(thread, "Two")
    await eventually(lambda: reader.ends(2), "the second reply ends")

    assert reader.log == await logged(thread)
    assert any(frame.type == "end" for frame in reader.sent_now), "live frames went out at once again"
    await reader.stop()
    await assert_nothing_left(thread)


def _batch(*seqs: int) -> tuple[Frame, ...]:
    return tuple(Frame("delta", f'{{"seq":{seq}}}', seq=seq) for seq in seqs)


@pytest.mark.parametrize("attention", ["noticed", "due", "presence_changed", "overflowed", "queued", "gone"])
def test_an_inbox_that_needs_its_reader_hands_nothing_to_the_taker(attention):
    """A notice, a due duty, an overflow, a queued batch or an end each wake the reader: live frames wait for it."""
    inbox = hub_module.Inbox(thread_id=uuid.uuid4())
    taken: list[tuple[Frame, ...]] = []
    inbox.taker = lambda batch: taken.append(batch) or ()
    if attention == "queued":
        inbox.taker = None
        inbox.put(_batch(1))
        inbox.taker = lambda batch: taken.append(batch) or ()
    elif attention == "gone":
        inbox.end(gone=True)
    else:
        setattr(inbox, attention, True)
        inbox.wake.set()  # as the hub sets each of them

    inbox.put(_batch(2))

    assert taken == []
    assert inbox.wake.is_set()


def test_a_taker_sends_what_it_can_and_the_inbox_queues_the_rest_for_the_reader():
    inbox = hub_module.Inbox(thread_id=uuid.uuid4())
    inbox.taker = lambda batch: batch[1:]  # the socket took the first frame only
    inbox.put(_batch(1, 2, 3))

    assert inbox.take() == _batch(2, 3)
    assert inbox.wake.is_set(), "the reader is woken for the rest"
    inbox.wake.clear()
    inbox.taker = lambda batch: ()
    inbox.put(_batch(4))
    assert inbox.take() is None and not inbox.wake.is_set(), "all taken: the reader sleeps on"


def test_frames_go_out_at_once_only_from_the_reader_s_cursor_on(thread):
    """Seen before: skipped. After a gap: left, with all that follows, for the reader to read the gap first."""
    subscription = ThreadSubscription(thread=thread, after=0)
    subscription.last_sent = 3
    sent: list[Frame] = []

    rest = subscription._send_live(lambda frame: sent.append(frame) or True, _batch(2, 3, 4, 6, 7))

    assert sent == list(_batch(4)) and rest == _batch(6, 7)
    assert subscription.last_sent == 4


def test_a_taker_that_fails_leaves_the_whole_batch_to_its_reader(caplog):
    """A socket's failure while a feed hands on frames stays with that reader: the feed goes on with the others."""
    inbox = hub_module.Inbox(thread_id=uuid.uuid4())

    def broken(batch: tuple[Frame, ...]) -> tuple[Frame, ...]:
        raise OSError("the socket broke")

    inbox.taker = broken
    inbox.put(_batch(1, 2))

    assert inbox.take() == _batch(1, 2), "the reader sends them (its cursor skips any that went out)"
    assert inbox.wake.is_set() and inbox.taker is None
    assert "sending live frames at once failed" in caplog.text
