"""The WebSocket endpoint of protocol v1: a thread's subscription out, send/cancel/ping frames in."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser, User

from streaming import events
from streaming.cursors import parse_cursor
from streaming.errors import BadRequest, ChatError, NotFound, RateLimited
from streaming.frames import SEND_FRAME_EXTENSION, SEND_FRAME_NOW_EXTENSION, Frame
from streaming.protocol import CloseCode
from streaming.services.endings import generation_cancel
from streaming.subscription import (
    AccessGrant,
    AccessRevoked,
    StreamSlot,
    ThreadGone,
    ThreadSubscription,
    grants_check,
)

from .access import Action, access_grants, athread_access, person_of, scope_link_ids, thread_access
from .inputs import parse_approval, parse_client_id, parse_json_object
from .models import Thread
from .services import message_post, tool_call_approve
from .sessions import scope_stream_grant
from .versions import version_frame_apply

logger = logging.getLogger(__name__)

# The frames that write, as the socket's person: each checks that they still may.
WRITE_FRAMES = ("send", "cancel", "edit", "regenerate", "switch", "approve")


def query_cursor(query_string: bytes) -> int | None:
    """Return the `after` cursor of a query string (0 when absent), or None when it is malformed."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after")
    return parse_cursor(values[-1] if values else None)


def query_flag(query_string: bytes, name: str) -> bool:
    """Return whether a query string turns `name` on (`name=1`)."""
    return parse_qs(query_string.decode("latin-1")).get(name, [""])[-1] == "1"


class ThreadConsumer(AsyncWebsocketConsumer):
    # No channel of the consumer's own: nothing is sent to it, and the process's hub receives its
    # thread's events. An unconfigured alias spares every socket a layer subscription and a receive held open.
    # (get_channel_layer answers None for any unknown alias; channels' stubs allow only strings.)
    channel_layer_alias = None  # type: ignore[assignment]
    thread: Thread | None = None
    slot: StreamSlot | None = None
    # The grants the socket holds: its sign-in's (an API token or a session) and its access's.
    sign_in_grants: list[AccessGrant]
    access_grants: list[AccessGrant]
    grants: list[AccessGrant]
    link_ids: tuple[int, ...] = ()
    streamer: asyncio.Task | None = None

    @property
    def person(self) -> User | AnonymousUser:
        """Return who the socket is: AuthMiddleware's lazy user, or a signed-out visitor."""
        return cast(User | AnonymousUser, self.scope["user"] or AnonymousUser())

    async def connect(self) -> None:
        await self.accept()  # accepted first, so that the close codes below reach the client
        user = self.person
        signed_in = user.is_authenticated
        # Signed out, only a share link opened in this browser session lets a visitor in (CHAT_PUBLIC_LINKS).
        self.link_ids = await database_sync_to_async(scope_link_ids)(self.scope)
        if not signed_in and not self.link_ids:
            await self.close_with(CloseCode.NOT_SIGNED_IN)
            return
        try:
            access = await athread_access(
                user=user, thread_id=self.scope["url_route"]["kwargs"]["thread_id"], link_ids=self.link_ids
            )
        except ChatError:
            await self.close_with(CloseCode.NOT_FOUND if signed_in else CloseCode.NOT_SIGNED_IN)
            return
        try:
            visitor = int(user.pk or 0) if signed_in else f"session:{self.scope['session'].session_key}"
            self.slot = StreamSlot(user_id=visitor)
        except RateLimited:
            await self.close_with(CloseCode.TOO_MANY_STREAMS)
            return
        self.thread = access.thread  # from here on, frames are taken
        # What the socket was let in under that may be revoked: its API token or its session
        # (threads/sessions.py), and its access to the thread (threads/access.py).
        signed_in_with = scope_stream_grant(self.scope)
        self.sign_in_grants = [signed_in_with] if signed_in_with else []
        self.access_grants = access_grants(user=user, access=access, link_ids=self.link_ids)
        self.grants = self.sign_in_grants + self.access_grants
        subscription = ThreadSubscription(
            thread=self.thread,
            after=query_cursor(self.scope["query_string"]),
            grants=self.grants,
            presence=query_flag(self.scope["query_string"], "presence"),
            person=person_of(user),
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
        send_now: Callable[[Frame], bool] | None = extensions.get(SEND_FRAME_NOW_EXTENSION)
        try:
            async for frame in subscription.frames(send_now=send_now):
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
            await self.close_with(revoked.close_code)
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
        except ThreadGone:
            # Deleted with its notice lost or still on its way (I2): the write found out first.
            logger.info("thread %s: deleted; closing its socket", self.thread.id)
            await self.close_with(CloseCode.NOT_FOUND)
        except AccessRevoked as revoked:
            await self.close_with(revoked.close_code)

    async def _handle_frame(self, thread: Thread, text_data: str | None) -> None:
        if text_data is None:
            raise BadRequest("Binary frames are not supported; send JSON text frames.")
        frame = parse_json_object(text_data, what="frame")
        kind = frame.get("type")
        if kind == "ping":
            await self.send(events.encode(events.pong_frame()))
        elif kind in WRITE_FRAMES:
            await database_sync_to_async(self._write)(thread, kind, frame)
        else:
            raise BadRequest("Unknown frame type; expected send, cancel, ping, edit, regenerate, switch or approve.")

    def _write(self, thread: Thread, kind: str, frame: dict[str, Any]) -> None:
        """Apply a write frame, unless the person may no longer write here, as read now.

        AccessRevoked if a grant was revoked (the notice closing the socket may be lost),
        Forbidden (an `error` frame, the socket stays open) if the role only reads: a
        lowered role writes nothing more. The checks and the write take one trip to the
        database thread: a send is the web process's costliest frame.
        """
        grants_check(self.sign_in_grants)
        try:
            access = thread_access(user=self.person, thread_id=thread.id, link_ids=self.link_ids)
        except NotFound:
            grants_check(self.access_grants)  # closes the socket: the access it was let in under ended
            raise
        # Read as its access grants would read it, so they hold: checked again, they would only repeat the read.
        thread = access.require(Action.WRITE)
        person = cast(User, self.person)  # a writer is signed in: visitors only read
        if kind == "send":
            client_id = parse_client_id(frame.get("client_id"))
            message_post(thread=thread, content=frame.get("content"), client_id=client_id, author=person)
        elif kind == "cancel":
            generation_cancel(thread=thread)
        elif kind == "approve":
            tool_call_id, approved = parse_approval(frame)
            tool_call_approve(thread=thread, tool_call_id=tool_call_id, approved=approved)
        else:
            version_frame_apply(thread=thread, frame=frame, person=person)
