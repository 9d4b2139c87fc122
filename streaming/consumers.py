"""The WebSocket endpoint of protocol v1: backlog, then live events, exactly once and in order (I3)."""
import asyncio
import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from threads.errors import BadRequest, ChatError
from threads.inputs import parse_client_id
from threads.selectors import thread_get_for_user, thread_snapshot
from threads.services import generation_cancel, message_post

from . import events
from .models import Chunk
from .selectors import chunk_events_after, thread_last_seq, thread_streaming

logger = logging.getLogger(__name__)

CLOSE_NOT_SIGNED_IN = 4401
CLOSE_NOT_FOUND = 4404

achunk_events_after = database_sync_to_async(chunk_events_after)
athread_last_seq = database_sync_to_async(thread_last_seq)
athread_streaming = database_sync_to_async(thread_streaming)
athread_snapshot = database_sync_to_async(thread_snapshot)


def parse_cursor(query_string: bytes) -> int | None:
    """Return the `after` cursor of a query string (0 when absent), or None when it is malformed."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after", ["0"])
    try:
        after = int(values[-1]) if values[-1].isascii() and values[-1].isdigit() else None
    except ValueError:  # more digits than Python converts
        return None
    return after


class ThreadConsumer(AsyncWebsocketConsumer):
    thread = None

    async def connect(self) -> None:
        await self.accept()  # accepted first, so that the close codes below reach the client
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=CLOSE_NOT_SIGNED_IN)
            return
        try:
            self.thread = await database_sync_to_async(thread_get_for_user)(
                user=user, thread_id=self.scope["url_route"]["kwargs"]["thread_id"]
            )
        except ChatError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = events.thread_group_name(self.thread.id)
        self.lock = asyncio.Lock()  # one delivery at a time: live events and repairs alike
        self.streaming = False
        self.watcher: asyncio.Task | None = None
        # Join before reading the backlog: an event committed in between arrives
        # live as well and is dropped as a duplicate, never missed.
        await self.channel_layer.group_add(self.group, self.channel_name)
        after = parse_cursor(self.scope["query_string"])
        if after is None:
            await self.send(events.error_frame("bad_request", "after must be a non-negative integer."))
        async with self.lock:
            if after is None or after > await athread_last_seq(thread_id=self.thread.id):
                await self._reset()
            else:
                self.last_sent = after
                self.streaming = await athread_streaming(thread_id=self.thread.id)
                await self._catch_up()
            await self.send(events.ready_frame(self.last_sent))
        self._watch_if_streaming()

    async def disconnect(self, code: int) -> None:
        if self.thread is None:
            return
        if self.watcher is not None:
            self.watcher.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.thread is None:
            return
        try:
            await self._handle_frame(text_data)
        except ChatError as error:
            await self.send(events.error_frame(error.code, error.detail))

    async def _handle_frame(self, text_data: str | None) -> None:
        if text_data is None:
            raise BadRequest("Binary frames are not supported; send JSON text frames.")
        try:
            frame = json.loads(text_data)
        except ValueError:
            raise BadRequest("The frame is not valid JSON.") from None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            await self.send(events.pong_frame())
        elif kind == "send":
            await database_sync_to_async(message_post)(
                thread=self.thread, content=frame.get("content"), client_id=parse_client_id(frame.get("client_id"))
            )
        elif kind == "cancel":
            await database_sync_to_async(generation_cancel)(thread=self.thread)
        else:
            raise BadRequest("Unknown frame type; expected send, cancel or ping.")

    async def thread_events(self, message: dict) -> None:
        """Deliver live events from the group, dropping duplicates and filling gaps."""
        async with self.lock:
            for seq, kind, frame in message["events"]:
                if seq <= self.last_sent:
                    continue
                if seq > self.last_sent + 1:
                    await self._catch_up(until=seq - 1)
                    if seq <= self.last_sent:  # a reset covered it
                        continue
                await self._send_event(seq, kind, frame)
        self._watch_if_streaming()

    async def _send_event(self, seq: int, kind: str, frame: str) -> None:
        await self.send(frame)
        self.last_sent = seq
        self.last_delivery = asyncio.get_running_loop().time()
        if kind == Chunk.Kind.START:
            self.streaming = True
        elif kind == Chunk.Kind.END:
            self.streaming = False

    async def _catch_up(self, until: int | None = None) -> None:
        """Send the logged events after last_sent (up to `until`), page by page.

        A log that no longer holds the next event (pruned by retention) is answered
        with a `reset` snapshot instead.
        """
        page_size = settings.STREAM_BACKLOG_PAGE_SIZE
        while True:
            page = await achunk_events_after(thread_id=self.thread.id, after=self.last_sent, until=until, limit=page_size)
            if page and page[0][0] != self.last_sent + 1:
                await self._reset()
                return
            for seq, kind, frame in page:
                await self._send_event(seq, kind, frame)
            if len(page) < page_size:
                return

    async def _reset(self) -> None:
        snapshot = await athread_snapshot(thread=self.thread)
        await self.send(events.reset_frame(snapshot))
        self.last_sent = snapshot["seq"]
        self.streaming = any(message["status"] == "streaming" for message in snapshot["messages"])

    def _watch_if_streaming(self) -> None:
        if self.streaming and (self.watcher is None or self.watcher.done()):
            self.last_delivery = asyncio.get_running_loop().time()
            self.watcher = asyncio.create_task(self._repair_lost_events())

    async def _repair_lost_events(self) -> None:
        """While a reply streams, repair a lost live event within STREAM_REPAIR_SECONDS of quiet (I3)."""
        loop = asyncio.get_running_loop()
        quiet_s = settings.STREAM_REPAIR_SECONDS
        while self.streaming:
            await asyncio.sleep(max(0.0, self.last_delivery + quiet_s - loop.time()))
            if loop.time() - self.last_delivery < quiet_s:
                continue
            try:
                async with self.lock:
                    before = self.last_sent
                    await self._catch_up()
                    self.last_delivery = loop.time()
                if self.last_sent > before:
                    logger.info("thread %s: repaired events %d..%d from the database", self.thread.id, before + 1, self.last_sent)
                    # Events went missing: the channel layer may have lost our membership (a restart).
                    await self.channel_layer.group_add(self.group, self.channel_name)
            except Exception:
                logger.warning("thread %s: repair failed; trying again", self.thread.id, exc_info=True)
                self.last_delivery = loop.time()
