"""One subscriber's view of a thread's log: backlog, then live events, exactly once and in order (I3).

The WebSocket consumer and the SSE views both read a thread through
`ThreadSubscription.frames()`, so the guarantee lives here and only here:

- join the thread's group before reading the backlog, so an event committed in between
  arrives live as well and is dropped as a duplicate, never missed;
- drop every event with `seq <= last_sent`, and fill a gap before a live event from the
  database;
- while a reply streams, ask the database after STREAM_REPAIR_SECONDS of quiet, so a
  lost live event is repaired even when no later one arrives;
- answer a cursor the log cannot serve (ahead of it, malformed, or pruned) with a
  `reset` snapshot.

Besides log events it passes on the `thread` control frame of a rename, and, for a reader
who asked for presence, the `presence` frame whenever the people watching the thread
change (streaming/presence.py). A subscription opened under revocable grants
(`AccessGrant`s: an API token, a session, a membership or share link, say) ends with
AccessRevoked once any of them is revoked: on the revocation notice sent to a grant's
group or the thread's (streaming/broadcast.py), or, should that notice be lost, at its own
check of the grants every STREAM_ACCESS_RECHECK_SECONDS.

The subscription pulls from its own channel only when its reader asks for the next
frame: a slow reader leaves messages in the channel layer, which drops the excess at
its capacity, and the gap is filled from the database when the reader catches up.

Every reader that subscribes for a person (a WebSocket or an event stream) first takes
a `StreamSlot`: at most CHAT_MAX_STREAMS_PER_USER at once.
"""

import asyncio
import logging
import threading
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from django.conf import settings

from . import events, metrics
from .broadcast import channel_layer
from .errors import RateLimited
from .models import AbstractThread, Chunk, get_thread_model
from .presence import Watcher
from .protocol import CloseCode, ErrorCode, MessageStatus, Person
from .selectors import achunk_events_after, athread_last_seq, athread_snapshot, athread_streaming

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """A protocol v1 frame for one subscriber: its type, its JSON text, and the seq it brings the subscriber to."""

    type: str
    data: str
    seq: int | None = None


# Yielded instead of a frame after `keepalive_seconds` without one, for transports that need traffic.
KEEPALIVE = None


class SubscriptionEnded(Exception):
    """The subscription cannot go on; each transport tells its reader `code` and `detail` in its own way."""

    code: ErrorCode
    detail: str


class ThreadGone(SubscriptionEnded):
    """The thread was deleted while subscribed."""

    code, detail = ErrorCode.NOT_FOUND, "The thread was deleted."


class AccessRevoked(SubscriptionEnded):
    """A grant the subscription was opened under no longer holds; a WebSocket closes with `close_code`."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, detail: str, close_code: CloseCode = CloseCode.NOT_SIGNED_IN) -> None:
        super().__init__(detail)
        self.detail = detail
        self.close_code = close_code


@dataclass(frozen=True)
class AccessGrant:
    """A revocable right a reader subscribed under, which the product defines (an API token, say).

    The subscription joins `group`, where a revocation notice makes it await `still_valid()` at
    once (a group may hold several grants: a person's sessions, say), and awaits it every
    STREAM_ACCESS_RECHECK_SECONDS in case the notice was lost; when it fails, the subscription
    ends with AccessRevoked(`detail`).
    """

    group: str
    still_valid: Callable[[], Awaitable[bool]]
    detail: str
    # How a WebSocket closes when it ends: signed out (4401, the default) or no longer allowed (4403).
    close_code: CloseCode = CloseCode.NOT_SIGNED_IN

    async def check(self) -> None:
        """Raise AccessRevoked unless the grant still holds."""
        if not await self.still_valid():
            raise AccessRevoked(self.detail, self.close_code)


# Streams are long-lived and cheap to open: a refused one should not be retried at once.
STREAM_LIMIT_RETRY_AFTER_SECONDS = 10
_open_streams: Counter[int | str] = Counter()
_open_streams_lock = threading.Lock()  # taken by views in their threads and by consumers on the loop


def _release_stream(user_id: int | str) -> None:
    with _open_streams_lock:
        _open_streams[user_id] -= 1
        metrics.OPEN_STREAMS.dec()
        if not _open_streams[user_id]:
            del _open_streams[user_id]


class StreamSlot:
    """One of a person's open streams, counted until `release()`d (or garbage collected, if nobody did).

    Counted per web process: behind a balancer a person may hold the limit on each
    process. That bounds what they can make any one process spend, the point of the limit,
    without shared state that a crashed process would leave stale.
    """

    def __init__(self, *, user_id: int | str) -> None:
        """Take a slot for `user_id` (a signed-out visitor: their session key); RateLimited past the limit.

        The limit is CHAT_MAX_STREAMS_PER_USER streams held at once.
        """
        limit = settings.CHAT_MAX_STREAMS_PER_USER
        with _open_streams_lock:
            if _open_streams[user_id] >= limit:
                raise RateLimited(
                    f"At most {limit} open streams (WebSockets and event streams) at once: close one first.",
                    retry_after_s=STREAM_LIMIT_RETRY_AFTER_SECONDS,
                )
            _open_streams[user_id] += 1
            metrics.OPEN_STREAMS.inc()
        # Calling a finalizer runs it once; later calls, and the collection of the slot, do nothing.
        self.release = weakref.finalize(self, _release_stream, user_id)


class ThreadSubscription:
    def __init__(
        self,
        *,
        thread: AbstractThread,
        after: int | None,
        keepalive_seconds: float | None = None,
        grants: Sequence[AccessGrant] = (),
        presence: bool = False,
        person: Person | None = None,
    ) -> None:
        """Subscribe to `thread` from cursor `after` (None: a malformed cursor, answered with error and reset).

        `grants` are what the reader was let in under that may be revoked: the subscription
        ends with AccessRevoked when any of them is. The reader is counted among the
        thread's watchers as `person` if given, and with `presence` (asked for by the
        client) is sent `presence` frames: who watches the thread now (streaming/presence.py).
        """
        self.thread = thread
        self.after = after
        self.keepalive_seconds = keepalive_seconds
        self.grants = tuple(grants)
        self.watcher = Watcher(thread.id, person) if presence or person is not None else None
        self.sends_presence = presence
        # Read once: the loop below runs per message.
        self.repair_seconds = settings.STREAM_REPAIR_SECONDS
        self.recheck_seconds = settings.STREAM_ACCESS_RECHECK_SECONDS
        self.last_sent = 0
        self.streaming = False
        # Loop times of the last log event yielded (or repair attempt), of the last frame of
        # any kind, and of the last check of the grant.
        self.last_delivery = self.last_frame = self.grant_checked = self.presence_renewed = 0.0

    async def frames(self) -> AsyncGenerator[Frame | None, None]:
        """Yield the frames of this subscription until the reader stops; KEEPALIVE in quiet times if asked."""
        layer = channel_layer()
        groups = [events.thread_group_name(self.thread.id)]
        groups.extend(grant.group for grant in self.grants)
        channel = await layer.new_channel()
        for group in groups:  # before the backlog is read and the grant checked: see the module docstring
            await layer.group_add(group, channel)
        receiving = asyncio.ensure_future(layer.receive(channel))
        try:
            # Revoked between the handshake and joining its group, the grant would otherwise stream until the recheck.
            await self._check_grants()
            async for frame in self._open():
                yield frame
            if self.watcher is not None:
                people = await self.watcher.join()
                self.presence_renewed = asyncio.get_running_loop().time()
                if self.sends_presence:
                    yield self._presence(people)
            while True:
                if not receiving.done():  # under load the next message is often there already
                    await asyncio.wait({receiving}, timeout=self._quiet_timeout())
                now = asyncio.get_running_loop().time()
                if self.grants and now - self.grant_checked >= self.recheck_seconds:
                    # Ahead of the messages: a reader that always has one waiting must not postpone it.
                    await self._check_grants()
                if self.watcher is not None and now - self.presence_renewed >= self.watcher.heartbeat_seconds:
                    if (presence := await self._renew_presence()) is not None:
                        yield presence
                if receiving.done():
                    message, receiving = receiving.result(), asyncio.ensure_future(layer.receive(channel))
                    async for frame in self._receive(message):
                        yield frame
                elif self.streaming and now - self.last_delivery >= self.repair_seconds:
                    # A primary-key read first (it also raises ThreadGone once the thread is
                    # deleted); the backlog is read only when the log moved past us.
                    before = self.last_sent
                    if await self._last_seq() > before:
                        async for frame in self._catch_up():
                            yield frame
                        logger.info("thread %s: repaired events %d..%d", self.thread.id, before + 1, self.last_sent)
                        # Events went missing: the channel layer may have lost our memberships (a restart).
                        for group in groups:
                            await layer.group_add(group, channel)
                    self.last_delivery = asyncio.get_running_loop().time()
                elif self.keepalive_seconds is not None and now - self.last_frame >= self.keepalive_seconds:
                    self.last_frame = now
                    yield KEEPALIVE
        finally:
            receiving.cancel()
            for group in groups:
                await layer.group_discard(group, channel)
            if self.watcher is not None and self.watcher.people is not None:
                await self.watcher.leave()

    async def _receive(self, message: dict) -> AsyncIterator[Frame]:
        """Yield the frames a channel-layer message brings: log events, a rename; check the grant at a notice."""
        kind = message.get("type")
        if kind == events.ACCESS_REVOKED:
            # The notice names a group, which may hold more than this grant (a person's sessions, a
            # deleted thread's readers): each stream asks whether its own grants still hold.
            await self._check_grants()
        if kind == events.THREAD_RENAMED:
            self.last_frame = asyncio.get_running_loop().time()
            yield Frame("thread", message["frame"])
        elif kind == events.PRESENCE_CHANGED and self.sends_presence and self.watcher is not None:
            if (presence := await self._renew_presence()) is not None:
                yield presence
        elif "events" in message:
            async for frame in self._deliver(message["events"]):
                yield frame

    async def _check_grants(self) -> None:
        """Raise AccessRevoked if any of the subscription's grants no longer holds."""
        self.grant_checked = asyncio.get_running_loop().time()
        for grant in self.grants:
            await grant.check()

    def _quiet_timeout(self) -> float | None:
        """Return how long to wait for a live message before the next timed duty; None: as long as it takes."""
        deadlines = []
        if self.streaming:
            deadlines.append(self.last_delivery + self.repair_seconds)
        if self.grants:
            deadlines.append(self.grant_checked + self.recheck_seconds)
        if self.watcher is not None:
            deadlines.append(self.presence_renewed + self.watcher.heartbeat_seconds)
        if self.keepalive_seconds is not None:
            deadlines.append(self.last_frame + self.keepalive_seconds)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - asyncio.get_running_loop().time())

    def _presence(self, people: list[Person]) -> Frame:
        self.presence_renewed = self.last_frame = asyncio.get_running_loop().time()
        return Frame("presence", events.encode(events.presence_frame(people)))

    async def _renew_presence(self) -> Frame | None:
        """Renew the reader's place among the watchers; return a `presence` frame if the people changed."""
        assert self.watcher is not None, "only a subscription with presence renews it"
        self.presence_renewed = asyncio.get_running_loop().time()
        people = await self.watcher.renew()
        return self._presence(people) if people is not None and self.sends_presence else None

    async def _open(self) -> AsyncIterator[Frame]:
        """Yield the backlog after the cursor (or a reset), then `ready`."""
        if self.after is None:
            error = events.error_frame(ErrorCode.BAD_REQUEST, "after must be a non-negative integer.")
            yield Frame("error", events.encode(error))
        if self.after is None or self.after > await self._last_seq():
            yield await self._reset()
        else:
            self.last_sent = self.after
            self.streaming = await athread_streaming(thread_id=self.thread.id)
            async for frame in self._catch_up():
                yield frame
        self.last_delivery = self.last_frame = asyncio.get_running_loop().time()
        yield Frame("ready", events.encode(events.ready_frame(self.last_sent)), seq=self.last_sent)

    async def _deliver(self, live: list[events.EncodedEvent]) -> AsyncIterator[Frame]:
        """Yield live events past last_sent, filling any gap before them from the database."""
        for seq, kind, data in live:
            if seq <= self.last_sent:
                continue
            if seq > self.last_sent + 1:
                async for frame in self._catch_up(until=seq - 1):
                    yield frame
                if seq <= self.last_sent:  # a reset covered it
                    continue
            yield self._event(seq, kind, data)

    async def _catch_up(self, until: int | None = None) -> AsyncIterator[Frame]:
        """Yield the logged events after last_sent (up to `until`), page by page.

        A log that no longer holds the next event (pruned by retention) is answered
        with a `reset` snapshot instead.
        """
        page_size, page_bytes = settings.STREAM_BACKLOG_PAGE_SIZE, settings.STREAM_BACKLOG_PAGE_BYTES
        while True:
            # One page at a time, read when the reader has taken the last: a slow reader holds one page.
            page = await achunk_events_after(
                thread_id=self.thread.id, after=self.last_sent, until=until, limit=page_size, max_bytes=page_bytes
            )
            if page and page[0][0] != self.last_sent + 1:
                yield await self._reset()
                return
            if not page:
                return
            # Popped as sent, so the frames already taken are freed while the reader works through the rest.
            page.reverse()
            while page:
                seq, kind, data = page.pop()
                yield self._event(seq, kind, data)
            if until is not None and self.last_sent >= until:
                return

    def _event(self, seq: int, kind: str, data: str) -> Frame:
        self.last_sent = seq
        self.last_delivery = self.last_frame = asyncio.get_running_loop().time()
        if kind == Chunk.Kind.START:
            self.streaming = True
        elif kind == Chunk.Kind.END:
            self.streaming = False
        return Frame(kind, data, seq=seq)

    async def _reset(self) -> Frame:
        # The newest messages that fit one frame, with `next` for the earlier ones (fetched over HTTP).
        snapshot = await athread_snapshot(thread=self.thread, max_bytes=settings.STREAM_RESET_MAX_BYTES, strict=True)
        self.last_sent = snapshot.seq
        self.streaming = any(message.status == MessageStatus.STREAMING for message in snapshot.messages)
        return Frame("reset", events.encode(events.reset_frame(snapshot)), seq=snapshot.seq)

    async def _last_seq(self) -> int:
        try:
            return await athread_last_seq(thread_id=self.thread.id)
        except get_thread_model().DoesNotExist:
            raise ThreadGone(str(self.thread.id)) from None
