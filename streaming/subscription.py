"""One subscriber's view of a thread's log: backlog, then live events, exactly once and in order (I3).

The WebSocket consumer and the SSE views both read a thread through
`ThreadSubscription.frames()`, so the guarantee lives here and only here:

- join the thread's feed in the process's hub (streaming/hub.py) before reading the
  backlog, so an event committed in between arrives live as well and is dropped as a
  duplicate, never missed;
- drop every event with `seq <= last_sent`, and fill a gap before a live event from the
  database;
- catch up from the database after live frames were dropped because this reader fell
  too far behind (the hub bounds each reader's queue);
- answer a cursor the log cannot serve (ahead of it, malformed, or pruned) with a
  `reset` snapshot.

The hub receives each thread's events once per process, fills a gap before them once
for all its readers, and, while a reply streams, asks the database after
STREAM_REPAIR_SECONDS of quiet, so a lost live event is repaired even when no later one
arrives; that read also ends the subscription with ThreadGone once the thread is deleted.

Besides log events it passes on the `thread` control frame of a rename, and, for a reader
who asked for presence, the `presence` frame whenever the people watching the thread
change (streaming/presence.py). A subscription opened under revocable grants
(`AccessGrant`s: an API token, a session, a membership or share link) ends with
AccessRevoked once one is revoked: on the revocation notice sent to the grant's group or
the thread's (streaming/broadcast.py), or, should that notice be lost, at its own check
of the grants every STREAM_ACCESS_RECHECK_SECONDS, which the hub's timer wakes it for (as
it does for keep-alives and presence heartbeats). A grant that ends by itself (a share
link's expiry) sends no notice: the timer wakes the subscription at that time too.

The subscription takes the next live frames only when its reader asks for the next
frame: a slow reader leaves them in its inbox, which drops them past its bound, and the
gap is filled from the database when the reader catches up. A reader whose web server can
write a frame at once (`send_now`, a WebSocket under chatsite.daphne_server) has the hub
hand it the live frames that follow its cursor while it waits, when its socket takes them
without waiting; everything else still goes the way above.

Every reader that subscribes for a person (a WebSocket or an event stream) first takes
a `StreamSlot`: at most CHAT_MAX_STREAMS_PER_USER at once.
"""

import asyncio
import logging
import math
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from channels.db import database_sync_to_async
from django.conf import settings

from . import events, metrics
from .errors import RateLimited
from .frames import Frame
from .hub import Inbox, process_hub
from .models import AbstractThread, get_thread_model
from .presence import Watcher
from .protocol import CloseCode, ErrorCode, Person
from .selectors import achunk_events_after, athread_last_seq, athread_snapshot

logger = logging.getLogger(__name__)


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

    The subscription listens on `group`, where a revocation notice makes it check `still_valid()`
    at once (a group may hold several grants: a person's sessions, say), and checks it every
    STREAM_ACCESS_RECHECK_SECONDS in case the notice was lost, and at `expires_at`, if the grant
    ends by itself then, which no notice announces; when it fails, the subscription ends with
    AccessRevoked(`detail`). `still_valid` is sync code that reads the database: a reader's
    grants are checked together, in one call to the database thread (`agrants_check`).
    """

    group: str
    still_valid: Callable[[], bool]
    detail: str
    # How a WebSocket closes when it ends: signed out (4401, the default) or no longer allowed (4403).
    close_code: CloseCode = CloseCode.NOT_SIGNED_IN
    # When the grant may end without a notice (a share link's expiry, timezone-aware); None: only by a notice.
    expires_at: datetime | None = None

    def check(self) -> None:
        """Raise AccessRevoked unless the grant still holds."""
        if not self.still_valid():
            raise AccessRevoked(self.detail, self.close_code)


def grants_check(grants: Sequence[AccessGrant]) -> None:
    """Raise AccessRevoked unless every one of `grants` still holds; grants sharing one check run it once."""
    checked = set()
    for grant in grants:
        if id(grant.still_valid) not in checked:
            checked.add(id(grant.still_valid))
            grant.check()


agrants_check = database_sync_to_async(grants_check)


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

        `grants` are what the reader was let in under that may be revoked: the
        subscription ends with AccessRevoked when one is. The reader is counted among the
        thread's watchers as `person` if given, and with `presence` (asked for by the
        client) is sent `presence` frames: who watches the thread now (streaming/presence.py).
        """
        self.thread = thread
        self.after = after
        self.keepalive_seconds = keepalive_seconds
        self.grants = tuple(grants)
        self.watcher = Watcher(thread.id, person) if presence or person is not None else None
        self.sends_presence = presence
        self.presence_renewed = 0.0  # loop time of the watcher's last renewal
        self.recheck_seconds = settings.STREAM_ACCESS_RECHECK_SECONDS
        # When grants may end by themselves, in seconds since the epoch, earliest first.
        self.grant_expiries = sorted(
            {grant.expires_at.timestamp() for grant in self.grants if grant.expires_at is not None}
        )
        self.last_sent = 0
        # Loop times of the last frame yielded (kept only for keep-alives) and of the last check of the grants.
        self.last_frame = self.grants_checked = 0.0
        # Wall-clock time (seconds since the epoch) of the last check of the grants: expiries up to it are checked.
        self.grants_checked_wall = 0.0

    async def frames(self, send_now: Callable[[Frame], bool] | None = None) -> AsyncGenerator[Frame | None, None]:
        """Yield the frames of this subscription until the reader stops; KEEPALIVE in quiet times if asked.

        With `send_now` (a frame written at once if the socket takes it without waiting, and
        whether it was), live frames that arrive while the reader waits for the next are sent
        there and then, in order after every frame yielded before.
        """
        hub = process_hub()
        inbox = Inbox(thread_id=self.thread.id, grant_groups=[grant.group for grant in self.grants])
        taker = partial(self._send_live, send_now) if send_now is not None else None
        try:
            # Joined before the backlog is read and the grants checked: see the module docstring.
            await hub.join(inbox)
            # Revoked between the handshake and joining its group, a grant would otherwise stream until the recheck.
            await self._check_grants()
            async for frame in self._open():
                yield frame
            if self.watcher is not None:
                people = await self.watcher.join()
                self.presence_renewed = asyncio.get_running_loop().time()
                if self.sends_presence:
                    yield self._presence(people)
            hub.plan(inbox, self._next_duty_at())
            while True:
                if inbox.noticed or inbox.due or inbox.presence_changed:
                    # Ahead of the live frames: a reader that always has some waiting must not postpone it.
                    async for duty_frame in self._timed_duties(inbox):
                        yield duty_frame
                    hub.plan(inbox, self._next_duty_at())
                batch = inbox.take()
                if batch is not None:
                    # The batch's frames are shared with the thread's other readers: only the cursor is ours.
                    for frame in batch:
                        seq = frame.seq
                        if seq is not None:  # a log event; the others (a rename) carry no seq
                            if seq <= self.last_sent:
                                continue
                            if seq > self.last_sent + 1:
                                async for missed in self._catch_up(until=seq - 1):
                                    yield missed
                                if seq <= self.last_sent:  # a reset covered it
                                    continue
                        self._move_past(frame)
                        yield frame
                elif inbox.overflowed:
                    inbox.overflowed = False
                    async for frame in self._catch_up():
                        yield frame
                elif inbox.gone:
                    raise ThreadGone(str(self.thread.id))
                elif inbox.failure is not None:
                    # Raised anew per reader: the feed's failure is shared by all of them.
                    raise RuntimeError(f"thread {self.thread.id}: its feed stopped receiving") from inbox.failure
                else:
                    inbox.wake.clear()
                    if not (inbox.noticed or inbox.due or inbox.presence_changed):
                        # Every frame yielded so far is sent: the reader asked for the next one.
                        inbox.taker = taker
                        try:
                            await inbox.wake.wait()
                        finally:
                            inbox.taker = None
        finally:
            closing = hub.leave(inbox)
            if self.watcher is not None and self.watcher.people is not None:
                closing.append(asyncio.ensure_future(self.watcher.leave()))
            if closing:
                # Shielded: a second cancellation must not leave the layer's groups joined.
                await asyncio.shield(asyncio.gather(*closing, return_exceptions=True))

    def _send_live(self, send_now: Callable[[Frame], bool], batch: tuple[Frame, ...]) -> tuple[Frame, ...]:
        """Send the frames of `batch` that follow the cursor while the socket takes them at once; return the rest.

        What `frames` does with a live batch, as far as it can go without waiting: the rest,
        from a frame after a gap or one the socket cannot take at once, goes to the reader.
        """
        for index, frame in enumerate(batch):
            seq = frame.seq
            if seq is not None:
                if seq <= self.last_sent:
                    continue
                if seq > self.last_sent + 1:
                    return batch[index:]
            if not send_now(frame):
                return batch[index:]
            self._move_past(frame)
        return ()

    def _move_past(self, frame: Frame) -> None:
        """Move the cursor past a live frame the reader sends: to its seq, if it has one, and the keep-alive clock."""
        if frame.seq is not None:
            self.last_sent = frame.seq
        if self.keepalive_seconds is not None:
            self.last_frame = asyncio.get_running_loop().time()

    async def _timed_duties(self, inbox: Inbox) -> AsyncIterator[Frame | None]:
        """Do the reader's timed duties: check the grants, renew presence, send a keep-alive.

        The grants on a notice or when due; presence at a heartbeat or a change of watchers
        (yielding a `presence` frame when the people changed); KEEPALIVE when the reader has
        had no frame for long.
        """
        now = asyncio.get_running_loop().time()
        grants_due = now - self.grants_checked >= self.recheck_seconds or self._next_expiry() <= time.time()
        if inbox.noticed or (self.grants and grants_due):
            # A notice names a group, which may hold more than this grant (a person's sessions, a
            # deleted thread's readers): each stream asks whether its own grants still hold.
            inbox.noticed = False
            await self._check_grants()
        inbox.due = False
        renew_due = self.watcher is not None and now - self.presence_renewed >= self.watcher.heartbeat_seconds
        if renew_due or (inbox.presence_changed and self.sends_presence):
            inbox.presence_changed = False
            if (presence := await self._renew_presence()) is not None:
                yield presence
        inbox.presence_changed = False
        if self.keepalive_seconds is not None and now - self.last_frame >= self.keepalive_seconds:
            self.last_frame = now
            yield KEEPALIVE

    def _next_duty_at(self) -> float:
        """Return the loop time of the next grant check (periodic or at an expiry), presence renewal or keep-alive.

        Infinity when there is none.
        """
        duties = [math.inf]
        if self.grants:
            duties.append(self.grants_checked + self.recheck_seconds)
            # An expiry is a wall-clock time and the timer keeps loop time (a monotonic clock): converted as of now.
            duties.append(asyncio.get_running_loop().time() + self._next_expiry() - time.time())
        if self.keepalive_seconds is not None:
            duties.append(self.last_frame + self.keepalive_seconds)
        if self.watcher is not None:
            duties.append(self.presence_renewed + self.watcher.heartbeat_seconds)
        return min(duties)

    def _presence(self, people: list[Person]) -> Frame:
        self.last_frame = asyncio.get_running_loop().time()
        return Frame("presence", events.encode(events.presence_frame(people)))

    async def _renew_presence(self) -> Frame | None:
        """Renew the reader's place among the watchers; return a `presence` frame if the people changed."""
        assert self.watcher is not None, "only a subscription with a watcher renews it"
        self.presence_renewed = asyncio.get_running_loop().time()
        people = await self.watcher.renew()
        return self._presence(people) if people is not None and self.sends_presence else None

    def _next_expiry(self) -> float:
        """Return the first time (since the epoch) a grant ends by itself after the last check; infinity if none."""
        return next((at for at in self.grant_expiries if at > self.grants_checked_wall), math.inf)

    async def _check_grants(self) -> None:
        """Raise AccessRevoked if one of the subscription's grants no longer holds."""
        if self.grants:
            self.grants_checked = asyncio.get_running_loop().time()
            # Taken before the check, which reads the time later: an expiry up to this one is seen by it.
            self.grants_checked_wall = time.time()
            await agrants_check(self.grants)

    async def _open(self) -> AsyncIterator[Frame]:
        """Yield the backlog after the cursor (or a reset), then `ready`."""
        if self.after is None:
            error = events.error_frame(ErrorCode.BAD_REQUEST, "after must be a non-negative integer.")
            yield Frame("error", events.encode(error))
        if self.after is None or self.after > await self._last_seq():
            yield await self._reset()
        else:
            self.last_sent = self.after
            async for frame in self._catch_up():
                yield frame
        self.last_frame = asyncio.get_running_loop().time()
        yield Frame("ready", events.encode(events.ready_frame(self.last_sent)), seq=self.last_sent)

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
                self.last_sent = seq
                if self.keepalive_seconds is not None:
                    self.last_frame = asyncio.get_running_loop().time()
                yield Frame(kind, data, seq=seq)
            if until is not None and self.last_sent >= until:
                return

    async def _reset(self) -> Frame:
        # The newest messages that fit one frame, with `next` for the earlier ones (fetched over HTTP).
        snapshot = await athread_snapshot(thread=self.thread, max_bytes=settings.STREAM_RESET_MAX_BYTES, strict=True)
        self.last_sent = snapshot.seq
        return Frame("reset", events.encode(events.reset_frame(snapshot)), seq=snapshot.seq)

    async def _last_seq(self) -> int:
        try:
            return await athread_last_seq(thread_id=self.thread.id)
        except get_thread_model().DoesNotExist:
            raise ThreadGone(str(self.thread.id)) from None
