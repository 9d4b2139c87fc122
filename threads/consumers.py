"""The WebSocket endpoint of protocol v1: a thread's subscription out, send/cancel/ping frames in."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import User

from streaming import events
from streaming.cursors import parse_cursor
from streaming.errors import BadRequest, ChatError, RateLimited
from streaming.frames import SEND_FRAME_EXTENSION, Frame
from streaming.protocol import CloseCode
from streaming.services.endings import generation_cancel
from streaming.subscription import AccessGrant, AccessRevoked, StreamSlot, ThreadGone, ThreadSubscription

from .inputs import parse_approval, parse_client_id, parse_json_object
from .models import Thread
from .selectors import thread_get_for_user, thread_get_for_writer
from .services import message_post, tool_call_approve
from .sessions import scope_stream_grant
from .versions import version_frame_apply

logger = logging.getLogger(__name__)


def query_cursor(query_string: bytes) -> int | None:
    """Return the `after` cursor of a query string (0 when absent), or None when it is malformed."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after")
    return parse_cursor(values[-1] if values else None)


class ThreadConsumer(AsyncWebsocketConsumer):
    # No channel of the consumer's own: nothing is sent to it, and the process's hub receives its
    # thread's events. An unconfigured alias spares every socket a layer subscription and a receive held open.
    # (get_channel_layer answers None for any unknown alias; channels' stubs allow only strings.)
    channel_layer_alias = None  # type: ignore[assignment]
    thread: Thread | None = None
    slot: StreamSlot | None = None
    grant: AccessGrant | None = None
    streamer: asyncio.Task | None = None

    async def connect(self) -> None:
        await self.accept()  # accepted first, so that the close codes below reach the client
        scope_user = self.scope["user"]
        if scope_user is None or not scope_user.is_authenticated:
            await self.close_with(CloseCode.NOT_SIGNED_IN)
            return
        user = cast(User, scope_user)  # AuthMiddleware's lazy user, signed in
        try:
            thread = await database_sync_to_async(thread_get_for_user)(
                user=user, thread_id=self.scope["url_route"]["kwargs"]["thread_id"]
            )
        except ChatError:
            await self.close_with(CloseCode.NOT_FOUND)
            return
        try:
            self.slot = StreamSlot(user_id=user.pk)
        except RateLimited:
            await self.close_with(CloseCode.TOO_MANY_STREAMS)
            return
        self.thread = thread  # from here on, frames are taken
        # What the socket was let in under that may be revoked: its API token or its session (threads/sessions.py).
        self.grant = scope_stream_grant(self.scope)
        subscription = ThreadSubscription(
            thread=self.thread,
            after=query_cursor(self.scope["query_string"]),
            grants=[self.grant] if self.grant is not None else [],
        )
        self.streamer = asyncio.create_task(self._stream(subscription))

    async def close_with(self, code: CloseCode) -> None:
        """Close the socket with a protocol close code."""
        # As a plain int: autobahn refuses any other type, an IntEnum too. Not 1011 for a
        # server failure either: it sends only 1000 and 3000-4999.
        await self.close(code=code.value)

    async def _stream(self, subscription: ThreadSubscription) -> None:
        """Send the subscription's frames as they come, until the socket closes."""
        # The web server's way to send a frame framed once for all its sockets, where it has one.
        extensions: dict[str, Any] = self.scope.get("extensions") or {}
        send_frame: Callable[[Frame], Awaitable[None]] | None = extensions.get(SEND_FRAME_EXTENSION)
        try:
            async for frame in subscription.frames():
                assert frame is not None, "the subscription has no keep-alives"
                if send_frame is not None:
                    await send_frame(frame)
                else:
                    await self.send(frame.data)
        except ThreadGone:
            logger.info("thread %s: deleted; closing its socket", subscription.thread.id)
            await self.close_with(CloseCode.NOT_FOUND)
        except AccessRevoked as revoked:
            logger.info("thread %s: closing a socket whose access ended (%s)", subscription.thread.id, revoked.detail)
            await self.close_with(CloseCode.NOT_SIGNED_IN)
        except Exception:
            logger.exception("thread %s: subscription failed; closing so the client resumes", subscription.thread.id)
            await self.close_with(CloseCode.SERVER_ERROR)

    async def disconnect(self, code: int) -> None:
        if self.streamer is not None:
            self.streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.streamer
        if self.slot is not None:
            self.slot.release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.thread is None:
            return
        try:
            await self._handle_frame(self.thread, text_data)
        except ChatError as error:
            await self.send(events.encode(events.error_frame(error.code, error.detail)))
        except AccessRevoked:
            await self.close_with(CloseCode.NOT_SIGNED_IN)

    async def _handle_frame(self, thread: Thread, text_data: str | None) -> None:
        if text_data is None:
            raise BadRequest("Binary frames are not supported; send JSON text frames.")
        frame = parse_json_object(text_data, what="frame")
        kind = frame.get("type")
        if kind == "ping":
            await self.send(events.encode(events.pong_frame()))
        elif kind == "send":
            await self._refuse_if_access_revoked()
            await database_sync_to_async(message_post)(
                thread=thread, content=frame.get("content"), client_id=parse_client_id(frame.get("client_id"))
            )
        elif kind == "cancel":
            await self._refuse_if_access_revoked()
            await database_sync_to_async(generation_cancel)(thread=thread)
        elif kind in ("edit", "regenerate", "switch"):
            await self._refuse_if_access_revoked()
            await database_sync_to_async(version_frame_apply)(thread=thread, frame=frame)
        elif kind == "approve":
            await self._refuse_if_access_revoked()
            tool_call_id, approved = parse_approval(frame)
            await database_sync_to_async(self._approve)(thread=thread, tool_call_id=tool_call_id, approved=approved)
        else:
            raise BadRequest("Unknown frame type; expected send, cancel, ping, edit, regenerate, switch or approve.")

    def _approve(self, *, thread: Thread, tool_call_id: str, approved: bool) -> None:
        writable = thread_get_for_writer(user=cast(User, self.scope["user"]), thread_id=thread.id)
        tool_call_approve(thread=writable, tool_call_id=tool_call_id, approved=approved)

    async def _refuse_if_access_revoked(self) -> None:
        """Raise AccessRevoked before a write if the socket's grant was revoked (the notice closing it may be lost)."""
        if self.grant is not None:
            await self.grant.check()
