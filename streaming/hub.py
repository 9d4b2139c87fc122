"""A web process's fan-out: each thread's live events received once, however many read it.

A `ThreadSubscription` (streaming/subscription.py) does not subscribe to the channel
layer itself. It joins the process's `Hub` with an `Inbox`, and the hub keeps, per event
loop:

- one `LogFeed`: one channel in the layer, on the group where every thread's log events
  are published (streaming/broadcast.py), one message per round of a worker's group
  commit. It hands each thread's events to the thread's feed, if somebody here reads it;
- one `ThreadFeed` per thread somebody reads, joined to the thread's own group for its
  notices (a rename, a revocation, a change of watchers). It turns the thread's
  events into frames once and puts that same batch in every reader's inbox. It knows
  the last seq it handed on, so it fills a gap before a live event from the database
  once for all its readers, and asks the database after STREAM_REPAIR_SECONDS of quiet
  while a reply streams (also how it learns that the thread was deleted). While none
  streams, the hub asks for all such feeds at once: an event lost then (a version
  switch, or a whole reply of a thread the feed took for idle) has no later one to show
  its gap;
- one `NoticeFeed` per grant group (streaming/subscription.py's AccessGrant), which
  flags each inbox under it on a revocation notice;
- one channel for all those groups of notices, whose task hands each notice to the feed
  of the group it names;
- one timer, which runs the feeds' repairs, reads the last seqs of the quiet threads
  once every STREAM_REPAIR_SECONDS, and wakes each reader whose own timed duty
  (a grant re-check, a keep-alive) is due, instead of a timeout per reader per message.
  It keeps an agenda, earliest first, and looks only at what is due: a process with
  hundreds of readers and feeds must not walk them all each time one of them plans.

The cursor stays with each reader (its `last_sent`): it drops what it has sent, and
reads what it lacks from the database itself, so a backlog hands over to live events
without loss or duplicates (I3). An inbox holds at most STREAM_SUBSCRIBER_QUEUE_FRAMES
frames: a reader that falls further behind loses them and catches up from the database
when it reads again (I10), without holding back the feed or the other readers.

A feed, and the hub's timer, live while somebody reads: the last inbox to leave closes
them and leaves the layer's groups.
"""

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from uuid import UUID

from channels.layers import BaseChannelLayer
from django.conf import settings

from . import events
from .broadcast import channel_layer
from .events import EncodedEvent
from .frames import Frame
from .models import Chunk, get_thread_model
from .selectors import achunk_events_after, athread_last_seq, athread_streaming, athreads_last_seq

logger = logging.getLogger(__name__)

# The timer wakes readers for their timed duties on this grid of loop time.
DUTY_GRID_SECONDS = 0.1


class Inbox:
    """What the hub holds for one reader: live frames it has not taken yet, and what needs its attention."""

    def __init__(self, *, thread_id: UUID, grant_groups: Iterable[str] = ()) -> None:
        self.thread_id = thread_id
        self.grant_groups = tuple(grant_groups)
        self.capacity: int = settings.STREAM_SUBSCRIBER_QUEUE_FRAMES
        self.batches: deque[tuple[Frame, ...]] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        # Set by the hub, cleared by the reader.
        self.overflowed = False  # live frames were dropped: catch up from the database
        self.noticed = False  # a revocation notice came for one of its grant groups
        self.due = False  # the reader's own timed duty is due
        self.presence_changed = False  # someone started or stopped watching the thread (streaming/presence.py)
        # Set once, ending the reader: the thread was deleted, or its feed failed.
        self.gone = False
        self.failure: Exception | None = None
        # Loop time of the reader's next timed duty, which the hub's timer watches.
        self.duty_at = math.inf
        # Set by a reader while it waits with nothing queued and nothing to attend to, if its socket
        # can be written at once: it sends what it can of a batch there and then, and returns the rest.
        self.taker: Callable[[tuple[Frame, ...]], tuple[Frame, ...]] | None = None

    def put(self, batch: tuple[Frame, ...]) -> None:
        """Hand a batch of live frames to a waiting reader's taker, else queue it; drop all once too far behind.

        A taker spares the reader's task a wake-up per batch, and each frame the way through
        the reader's generator and its consumer's loop. Anything that needs the reader (a
        queued batch, an overflow, a notice, a due duty, an end) sets `wake`, and a taker is
        used only while it is clear: it only ever sends what the reader would send next.
        """
        if self.taker is not None and not self.wake.is_set():
            try:
                rest = self.taker(batch)
            except Exception:
                # One reader's socket must not fail the feed its thread's other readers share.
                logger.warning(
                    "thread %s: sending live frames at once failed; its reader sends them",
                    self.thread_id,
                    exc_info=True,
                )
                self.taker = None
            else:
                if not rest:
                    return
                batch = rest
        if not self.overflowed:
            if self.queued + len(batch) > self.capacity:
                logger.info(
                    "thread %s: a reader fell %d frames behind; it catches up from the database",
                    self.thread_id,
                    self.queued,
                )
                self.batches.clear()
                self.queued = 0
                self.overflowed = True
            else:
                self.batches.append(batch)
                self.queued += len(batch)
        self.wake.set()

    def take(self) -> tuple[Frame, ...] | None:
        """Return the oldest batch not taken yet, if any."""
        if not self.batches:
            return None
        batch = self.batches.popleft()
        self.queued -= len(batch)
        return batch

    def end(self, *, gone: bool = False, failure: Exception | None = None) -> None:
        self.gone = self.gone or gone
        self.failure = self.failure or failure
        self.wake.set()


class Listener:
    """A channel of the layer, read by one task that hands each message on to `handle`.

    When the receive fails, `failed` is told, and the listener reads no more until opened again.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        handle: Callable[[dict], Awaitable[None]],
        failed: Callable[[Exception], None],
    ) -> None:
        self.layer = layer
        self.handle = handle
        self.failed = failed
        self.receiving: asyncio.Task | None = None

    async def open(self) -> str:
        """Make the channel and start reading it; return its name."""
        channel = await self.layer.new_channel()
        self.receiving = asyncio.create_task(self._receive(channel))
        return channel

    async def _receive(self, channel: str) -> None:
        try:
            while True:
                await self.handle(await self.layer.receive(channel))
        except Exception as failure:
            self.failed(failure)

    async def close(self) -> None:
        if self.receiving is not None:
            self.receiving.cancel()
            await asyncio.gather(self.receiving, return_exceptions=True)


class GroupFeed:
    """One group of the layer, joined once for all the inboxes of the group.

    A group of notices (a thread's, a grant's) is joined with the hub's one notices channel
    (`Hub.notices_channel`): each channel costs a web process a queue and a task, and a
    process holds a thread's and a grant's group for each of hundreds of idle sockets.
    """

    # Joined with the hub's notices channel, which the feeds of other groups share.
    shared_channel = True

    def __init__(self, hub: "Hub", group: str) -> None:
        self.hub = hub
        self.group = group
        self.inboxes: set[Inbox] = set()
        self.layer = channel_layer()
        self.channel: str | None = None
        # Run as a task of the feed's own, so that a reader cancelled while joining leaves it intact for the others.
        self.opened = asyncio.ensure_future(self._open())
        self.opened.add_done_callback(self._forget_unless_open)

    async def _open(self) -> None:
        self.channel = await self._channel()
        await self.layer.group_add(self.group, self.channel)
        await self.prepare()

    async def _channel(self) -> str:
        """Return the channel to join the group with."""
        return await self.hub.notices_channel()

    def _forget_unless_open(self, opened: asyncio.Future) -> None:
        if opened.cancelled() or opened.exception() is not None:
            self.hub.forget(self)  # its readers fail to join; the next ones try a new feed

    async def prepare(self) -> None:
        """Get ready to receive, once the group is joined."""

    async def handle(self, message: dict) -> None:
        raise NotImplementedError

    def failed(self, failure: Exception) -> None:
        """End the readers, whose messages can no longer come: they resume, as a socket closed 1011 does."""
        logger.error("group %s: receiving failed; ending its streams so that they resume", self.group, exc_info=failure)
        self.hub.forget(self)
        for inbox in self.inboxes:
            inbox.end(failure=failure)

    async def rejoin(self) -> None:
        """Join the group again: the layer may have lost the membership (a Redis restart)."""
        if self.channel is not None:
            await self.layer.group_add(self.group, self.channel)

    async def close(self) -> None:
        """Stop receiving and leave the group."""
        self.opened.cancel()
        await asyncio.gather(self.opened, return_exceptions=True)
        # On the shared channel, a feed opened since for the same group has joined it already:
        # leaving would take the new feed out. (Checked in the step where the layer drops the
        # membership, so that a join after it subscribes again.)
        if self.channel is not None and not (self.shared_channel and self.group in self.hub.feeds):
            try:
                await self.layer.group_discard(self.group, self.channel)
            except Exception:
                logger.warning("group %s: leaving failed; the layer expires the membership", self.group, exc_info=True)


class NoticeFeed(GroupFeed):
    """A grant group's notices: on a revocation, each inbox under it is flagged to check its grants."""

    async def handle(self, message: dict) -> None:
        if message.get("type") == events.ACCESS_REVOKED:
            for inbox in self.inboxes:
                inbox.noticed = True
                inbox.wake.set()


class LogFeed(GroupFeed):
    """Every thread's log events: each thread's go to its feed, if somebody in this process reads the thread.

    On a channel of its own, which carries a message per worker round, apart from the notices.
    """

    shared_channel = False

    def __init__(self, hub: "Hub", group: str) -> None:
        self.listener = Listener(channel_layer(), self.handle, self.failed)
        super().__init__(hub, group)

    async def _channel(self) -> str:
        return await self.listener.open()

    async def close(self) -> None:
        await super().close()
        await self.listener.close()

    async def handle(self, message: dict) -> None:
        if message.get("type") != events.LOG_EVENTS:
            return
        feeds = self.hub.feeds
        for thread_id, thread_events in message["threads"]:
            feed = feeds.get(events.thread_group_name(thread_id))
            if isinstance(feed, ThreadFeed):
                feed.take(thread_events)


class ThreadFeed(GroupFeed):
    """A thread's live events and notices, framed once and put in every inbox of the thread."""

    def __init__(self, hub: "Hub", thread_id: UUID, log: LogFeed) -> None:
        self.thread_id = thread_id
        self.log = log
        # Events taken before the feed knew its seq, handed on once it does.
        self.early: list[list[EncodedEvent]] | None = []
        # Hand-overs waiting to read a gap (or for a repair) before theirs: later events queue behind them.
        self.handovers: set[asyncio.Task] = set()
        self.repair_seconds: float = settings.STREAM_REPAIR_SECONDS
        # The last seq handed on, and whether a reply streams as of it.
        self.seq = 0
        self.streaming = False
        self.last_heard = 0.0  # loop time of the last message or repair
        self.repairing: asyncio.Task | None = None
        # When the hub's timer looks at this feed next (None: it does not), to see whether a repair is due.
        self.looked_at_at: float | None = None
        # Held while handing events on: the receive task and a repair never interleave theirs.
        self.handing_on = asyncio.Lock()
        super().__init__(hub, events.thread_group_name(thread_id))

    async def prepare(self) -> None:
        # Read once the log's group is joined: every event past `seq` comes live, every one up to
        # it is in the database for each reader's backlog.
        await asyncio.shield(self.log.opened)
        try:
            self.seq = await athread_last_seq(thread_id=self.thread_id)
        except get_thread_model().DoesNotExist:
            self.seq = 0  # each reader learns it reading its own backlog
        self.streaming = await athread_streaming(thread_id=self.thread_id)
        self.last_heard = asyncio.get_running_loop().time()
        early, self.early = self.early or [], None
        for live in early:
            self.take(live)
        self._plan_repair()

    async def handle(self, message: dict) -> None:
        self.last_heard = asyncio.get_running_loop().time()
        kind = message.get("type")
        if kind == events.THREAD_RENAMED:
            self._fan_out((Frame("thread", message["frame"]),))
        elif kind == events.ACCESS_REVOKED:
            # On the thread's own group: it was deleted, and each reader's grants find it gone.
            for inbox in self.inboxes:
                inbox.noticed = True
                inbox.wake.set()
        elif kind == events.PRESENCE_CHANGED:
            for inbox in self.inboxes:
                inbox.presence_changed = True
                inbox.wake.set()

    def take(self, live: list[EncodedEvent]) -> None:
        """Hand on the thread's events of one published round.

        At once when they follow what was handed on and nothing is in progress, as almost
        always; otherwise in order, after what is in progress and a read of the gap.
        """
        if self.early is not None:
            self.early.append(live)
            return
        self.last_heard = asyncio.get_running_loop().time()
        if not self.handovers and not self.handing_on.locked() and self._follows(live):
            self._fan_out(tuple(self._frame(seq, kind, data) for seq, kind, data in live if seq > self.seq))
            return
        handover = asyncio.create_task(self._hand_on(live))
        self.handovers.add(handover)
        handover.add_done_callback(self.handovers.discard)

    def _follows(self, live: list[EncodedEvent]) -> bool:
        """Return whether the events past `seq` follow it without a gap."""
        last = self.seq
        for seq, _, _ in live:
            if seq > last + 1:
                return False
            last = max(last, seq)
        return True

    async def _hand_on(self, live: list[EncodedEvent]) -> None:
        try:
            async with self.handing_on:
                self._fan_out(await self._new_frames(live))
        except Exception:
            # The events past the gap are dropped with it: the next event, or a repair after quiet, reads them.
            logger.warning("thread %s: reading a gap failed", self.thread_id, exc_info=True)

    async def _new_frames(self, live: list[EncodedEvent]) -> tuple[Frame, ...]:
        """Return the frames of the live events past `seq`, after those of a gap before them, read once."""
        frames: list[Frame] = []
        for seq, kind, data in live:
            if seq <= self.seq:
                continue
            if seq > self.seq + 1:
                frames.extend(await self._read_after(until=seq - 1))
            frames.append(self._frame(seq, kind, data))
        return tuple(frames)

    async def _read_after(self, until: int) -> list[Frame]:
        """Return the logged events after `seq`, up to `until`: one backlog page at most.

        What a page does not bring (a long gap, or a log pruned by retention) each reader
        reads itself, from its own cursor, when the next event shows it the gap.
        """
        page = await achunk_events_after(
            thread_id=self.thread_id,
            after=self.seq,
            until=until,
            limit=settings.STREAM_BACKLOG_PAGE_SIZE,
            max_bytes=settings.STREAM_BACKLOG_PAGE_BYTES,
        )
        if not page or page[0][0] != self.seq + 1:
            return []
        return [self._frame(seq, kind, data) for seq, kind, data in page]

    def _frame(self, seq: int, kind: str, data: str) -> Frame:
        self.seq = seq
        if kind == Chunk.Kind.START:
            self.streaming = True
            self._plan_repair()  # a repair is now due after quiet
        elif kind == Chunk.Kind.END:
            self.streaming = False
        return Frame(kind, data, seq=seq)

    def _fan_out(self, batch: tuple[Frame, ...]) -> None:
        if batch:
            for inbox in self.inboxes:
                inbox.put(batch)

    def quiet_while_idle(self, now: float) -> bool:
        """Return whether no reply streams here and nothing was heard for STREAM_REPAIR_SECONDS."""
        return (
            not self.streaming
            and self.repairing is None
            and self.early is None
            and not self.handovers
            and now - self.last_heard >= self.repair_seconds
        )

    def repair_due_at(self) -> float:
        """Return the loop time of the next repair, or infinity when none is due (no reply streams)."""
        if not self.streaming or self.repairing is not None:
            return math.inf
        return self.last_heard + self.repair_seconds

    def _plan_repair(self) -> None:
        """Have the hub's timer look at this feed when a repair would be due, unless it looks sooner.

        Each message moves the due time later without telling the timer: when it looks,
        it finds the repair not due yet and looks again at the new time.
        """
        at = self.repair_due_at()
        if at < (self.looked_at_at if self.looked_at_at is not None else math.inf):
            self.hub.schedule(at, self)

    def start_repair(self) -> None:
        self.repairing = asyncio.create_task(self._repair())

    async def _repair(self) -> None:
        """Hand on what the log holds past `seq` after quiet: events whose live copy was lost.

        A primary-key read first (it also tells that the thread was deleted); the backlog is
        read only when the log moved past `seq`.
        """
        try:
            async with self.handing_on:
                before = self.seq
                try:
                    last = await athread_last_seq(thread_id=self.thread_id)
                except get_thread_model().DoesNotExist:
                    for inbox in self.inboxes:
                        inbox.end(gone=True)
                    return
                while self.seq < last:
                    frames = await self._read_after(until=last)
                    if not frames:
                        self.seq = last  # pruned: each reader answers its gap with a reset
                    self._fan_out(tuple(frames))
                if self.seq > before:
                    logger.info("thread %s: repaired events %d..%d", self.thread_id, before + 1, self.seq)
                    await self.rejoin()
                    if (log := self.hub.feeds.get(events.LOG_GROUP)) is not None:
                        await log.rejoin()
        except Exception:
            logger.warning("thread %s: repair failed; trying again after quiet", self.thread_id, exc_info=True)
        finally:
            self.last_heard = asyncio.get_running_loop().time()
            self.repairing = None
            self._plan_repair()  # the next repair is due after quiet again

    async def close(self) -> None:
        pending = [*self.handovers, *([self.repairing] if self.repairing is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await super().close()


class Hub:
    """The feeds and the timer of one event loop (so, of one web process)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.feeds: dict[str, GroupFeed] = {}
        self.inboxes: set[Inbox] = set()
        self.memberships: dict[Inbox, list[GroupFeed]] = {}
        self.timer: asyncio.Task | None = None
        # What the timer looks at, earliest first: (loop time, order of planning, the feed or inbox).
        # An entry whose time its feed or inbox no longer holds is stale, and passed over.
        self.agenda: list[tuple[float, int, ThreadFeed | Inbox]] = []
        self.planned = itertools.count()  # breaks ties, so that feeds and inboxes are never compared
        self.poked = asyncio.Event()
        self.next_at = math.inf  # when the timer looks next
        # When the timer next reads the last seqs of the quiet threads, and that read while it runs.
        self.quiet_check_at = math.inf
        self.quiet_check: asyncio.Task | None = None
        # The channel every group of notices is joined with, and its opening, shared by the feeds.
        self.notices = Listener(channel_layer(), self._notice, self._notices_failed)
        self.notices_opened: asyncio.Future[str] | None = None

    def plan(self, inbox: Inbox, at: float) -> None:
        """Have the timer wake `inbox` at loop time `at` (infinity: never) for its reader's timed duty.

        Rounded up to DUTY_GRID_SECONDS: readers whose duties fall due together wake in one
        loop turn, where their presence heartbeats go to Redis in one round trip
        (streaming/presence.py).
        """
        at = math.ceil(at / DUTY_GRID_SECONDS) * DUTY_GRID_SECONDS if at != math.inf else at
        if at != inbox.duty_at:
            inbox.duty_at = at
            if at != math.inf:
                self.schedule(at, inbox)

    def schedule(self, at: float, item: "ThreadFeed | Inbox") -> None:
        """Put `item` on the timer's agenda at loop time `at`, waking the timer if that is sooner than it looks."""
        if isinstance(item, ThreadFeed):
            item.looked_at_at = at
        heapq.heappush(self.agenda, (at, next(self.planned), item))
        if at < self.next_at:
            self.poke()

    async def join(self, inbox: Inbox) -> None:
        """Put `inbox` in its thread's feed and its grant groups' feeds; return once they receive."""
        # Every reader holds the log's feed too, so that it lives while any thread's feed does.
        log = self._feed(events.LOG_GROUP, partial(LogFeed, self, events.LOG_GROUP))
        assert isinstance(log, LogFeed)
        thread_group = events.thread_group_name(inbox.thread_id)
        feeds = [log, self._feed(thread_group, lambda: ThreadFeed(self, inbox.thread_id, log))]
        feeds += [self._feed(group, partial(NoticeFeed, self, group)) for group in inbox.grant_groups]
        for feed in feeds:
            feed.inboxes.add(inbox)
        self.memberships[inbox] = feeds
        self.inboxes.add(inbox)
        if self.timer is None:
            self.quiet_check_at = self.loop.time() + settings.STREAM_REPAIR_SECONDS
            self.timer = asyncio.create_task(self._run_timer())
        for feed in feeds:
            # Shielded: a reader cancelled while joining does not cancel the opening the others share.
            await asyncio.shield(feed.opened)

    async def notices_channel(self) -> str:
        """Return the channel the notices' groups are joined with, opening it on first use."""
        if self.notices_opened is None:
            self.notices_opened = asyncio.ensure_future(self.notices.open())
        # Shielded: a feed cancelled while opening does not cancel the opening the others share.
        return await asyncio.shield(self.notices_opened)

    async def _notice(self, message: dict) -> None:
        """Hand a notice to the feed of the group it was sent to (`broadcast.notice`), if it is open here."""
        feed = self.feeds.get(message.get("group", ""))
        if feed is not None and feed.shared_channel:
            await feed.handle(message)

    def _notices_failed(self, failure: Exception) -> None:
        """End every reader that relies on the notices channel; the next ones open another."""
        self.notices_opened = None
        for feed in [feed for feed in self.feeds.values() if feed.shared_channel]:
            feed.failed(failure)

    def _feed(self, group: str, make: Callable[[], GroupFeed]) -> GroupFeed:
        feed = self.feeds.get(group)
        if feed is None:
            feed = self.feeds[group] = make()
        return feed

    def leave(self, inbox: Inbox) -> list[asyncio.Task]:
        """Take `inbox` out; return the closing of the feeds (and timer) nobody reads any more."""
        closing = []
        self.inboxes.discard(inbox)
        for feed in self.memberships.pop(inbox, []):
            feed.inboxes.discard(inbox)
            if not feed.inboxes:
                self.forget(feed)
                closing.append(asyncio.create_task(feed.close()))
        if not self.inboxes:
            if self.timer is not None:
                self.timer.cancel()
                closing.append(self.timer)
                self.timer = None
            if self.quiet_check is not None:
                self.quiet_check.cancel()
                closing.append(self.quiet_check)
            closing.append(asyncio.create_task(self._close_notices()))
            if _hubs.get(self.loop) is self:
                del _hubs[self.loop]
        return closing

    async def _close_notices(self) -> None:
        if self.notices_opened is not None:
            self.notices_opened.cancel()
            await asyncio.gather(self.notices_opened, return_exceptions=True)
        await self.notices.close()

    def forget(self, feed: GroupFeed) -> None:
        """Take `feed` out of the hub, so that the next reader of its group opens a new one."""
        if self.feeds.get(feed.group) is feed:
            del self.feeds[feed.group]

    def poke(self) -> None:
        """Make the timer look again: a duty may now be due sooner than it planned."""
        self.poked.set()

    async def _run_timer(self) -> None:
        while True:
            self.poked.clear()
            now = self.loop.time()
            while self.agenda and self.agenda[0][0] <= now:
                at, _, item = heapq.heappop(self.agenda)
                if isinstance(item, Inbox):
                    self._inbox_due(item, at)
                else:
                    self._feed_due(item, at, now)
            if self.quiet_check_at <= now:
                self._check_quiet_feeds(now)
            self.next_at = next_at = min(self.agenda[0][0] if self.agenda else math.inf, self.quiet_check_at)
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes as the wait ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(None if next_at == math.inf else next_at):
                    await self.poked.wait()

    def _inbox_due(self, inbox: Inbox, at: float) -> None:
        if inbox in self.inboxes and inbox.duty_at == at:
            inbox.duty_at = math.inf  # until the reader plans its next one
            inbox.due = True
            inbox.wake.set()

    def _feed_due(self, feed: "ThreadFeed", at: float, now: float) -> None:
        if self.feeds.get(feed.group) is not feed or feed.looked_at_at != at:
            return  # closed, or planned again since
        feed.looked_at_at = None
        repair_at = feed.repair_due_at()
        if repair_at <= now:
            feed.start_repair()
        elif repair_at != math.inf:
            self.schedule(repair_at, feed)  # heard from since: a repair is due later

    def _check_quiet_feeds(self, now: float) -> None:
        """Start reading the last seqs of the threads whose feeds are quiet with no reply streaming."""
        self.quiet_check_at = now + settings.STREAM_REPAIR_SECONDS
        if self.quiet_check is not None:
            return
        quiet = [feed for feed in self.feeds.values() if isinstance(feed, ThreadFeed) and feed.quiet_while_idle(now)]
        if quiet:
            self.quiet_check = asyncio.create_task(self._repair_if_behind(quiet))

    async def _repair_if_behind(self, feeds: list[ThreadFeed]) -> None:
        """Repair each feed whose thread's log moved past it, or whose thread is gone: one read for them all."""
        try:
            last_seqs = await athreads_last_seq(thread_ids=[feed.thread_id for feed in feeds])
        except Exception:
            logger.warning("reading %d quiet threads' last seqs failed; trying again", len(feeds), exc_info=True)
            return
        finally:
            self.quiet_check = None
        for feed in feeds:
            behind = last_seqs.get(feed.thread_id, math.inf) > feed.seq  # missing: deleted, the repair ends its readers
            if behind and self.feeds.get(feed.group) is feed and feed.repairing is None:
                feed.start_repair()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def process_hub() -> Hub:
    """Return the hub of the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(loop)
    return hub
