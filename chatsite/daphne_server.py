"""Daphne with a bound on what one client can make it hold (I10): `python -m chatsite.daphne_server`.

Daphne hands each frame and body chunk the application sends straight to Twisted's
transport and returns at once. Twisted keeps whatever the client has not taken yet,
so the application cannot tell a reader that stopped from a fast one, and a reply
streamed to such a reader would pile up in this process without end.

`BoundedServer` gives `send` the backpressure the ASGI spec allows, on WebSockets and on
event streams (responses of type text/event-stream):

- once a write leaves a client more than STREAM_CLIENT_BUFFER_BYTES unsent, `send` waits
  until the client has taken enough to be under the bound again. The application then
  produces at the client's pace: a long backlog replays as fast as the client reads, and
  live events wait in the channel layer (which drops beyond its capacity; the subscriber
  fills the gap from the database);
- a client still over the bound after STREAM_CLIENT_STALL_SECONDS has stopped reading, and
  is closed: a WebSocket with 4008 (reconnect with your cursor), given as long again to
  take the rest and the close frame before its connection is dropped; an event stream by
  dropping the connection (EventSource reconnects with Last-Event-ID). The application is
  told at once, so it stops producing for that client.

The frames of a thread's log go out through `send_frame`, which BoundedServer offers each
WebSocket application in its scope (streaming/frames.py's SEND_FRAME_EXTENSION): the
hub (streaming/hub.py) hands every reader of a thread the same Frame object, and a
server's WebSocket frames are unmasked, so the frame's bytes are built once, as
autobahn's PreparedMessage, and written to each socket, straight to the socket when
Twisted holds nothing unsent for it (`write_now`); with the same bound and the same
closing as `send`. Beside it, `send_frame_now` sends a frame only if the socket takes it
at once (open, nothing unsent) and says whether it did: the hub sends a waiting reader's
live frames so, without waking the reader (streaming/hub.py's Inbox.taker). Applications
served by another server (runserver, the tests' communicators) find neither extension and
use `send`.

So one client makes this process hold at most the bound plus the frame that crossed it,
and, for at most the stall time, the backlog page and channel-layer queue its paused
subscription keeps. The kernel's socket buffers come on top (net.ipv4.tcp_wmem). Other
responses are bounded by their own size and left alone. Everything else is daphne
unchanged: the same command-line flags, the same protocol classes.

On SIGTERM or SIGINT, before daphne ends its connections' applications, the process's inline
worker (STREAM_INLINE_WORKER) stops claiming and hands its running replies over at once, as
`streamworker` does: another worker continues them without waiting for their leases to expire.
Daphne has no ASGI lifespan events to hang this on; its shutdown step is the place.

Run as the web process, it serves on uvloop's event loop: per WebSocket frame sent, the
process spends about a tenth less than on asyncio's own loop (README, "Benchmark").
"""

import asyncio
import logging
import weakref
from functools import partial
from typing import Any

import uvloop

if __name__ == "__main__":
    # daphne creates its event loop when daphne.server is first imported, just below.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from autobahn.websocket.protocol import PreparedMessage  # noqa: E402 (after the loop policy)
from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.server import Server  # noqa: E402
from daphne.ws_protocol import WebSocketProtocol  # noqa: E402
from django.conf import settings  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.internet.abstract import FileDescriptor  # noqa: E402
from twisted.internet.tcp import Connection  # noqa: E402
from twisted.protocols.policies import ProtocolWrapper  # noqa: E402

from streaming import collector, metrics  # noqa: E402
from streaming.frames import SEND_FRAME_EXTENSION, SEND_FRAME_NOW_EXTENSION, Frame  # noqa: E402
from streaming.protocol import CloseCode  # noqa: E402

logger = logging.getLogger(__name__)

# Twisted reports only an empty buffer, and only to the one producer registered on the
# transport (daphne's HTTP channel): a short poll is the simplest honest wait.
DRAIN_POLL_SECONDS = 0.05
EVENT_STREAM = b"text/event-stream"
# A client behind the bound has caught up once it holds no more than this fraction of it unsent.
CAUGHT_UP_FRACTION = 4


def socket_transport(protocol: object) -> FileDescriptor | None:
    """Return the socket transport under a WebSocket or HTTP request, below TLS if daphne terminates it."""
    transport = getattr(protocol, "transport", None)
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport if isinstance(transport, FileDescriptor) else None


def unsent_bytes(transport: FileDescriptor) -> int:
    """Return the bytes written to `transport` that the kernel has not taken yet.

    The sum Twisted's own `FileDescriptor._isSendBufferFull` makes: there is no public accessor.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def holds_nothing_unsent(transport: FileDescriptor) -> bool:
    """Return whether `transport` is connected, not closing, and has nothing unsent: bytes written now go out first."""
    return bool(transport.connected) and not transport.disconnecting and unsent_bytes(transport) == 0


def write_now(transport: Connection, data: bytes) -> None:
    """Write `data` to a socket's transport, straight to the socket when Twisted holds nothing unsent for it.

    Twisted's `write` only buffers: it asks the loop to call the transport back when the
    socket is writable, and the bytes leave on a later turn, after an add_writer, a
    doWrite and a remove_writer, with a logging context around each. With nothing queued
    ahead, sending at once puts the same bytes on the wire in the same order; whatever the
    kernel does not take goes to Twisted's buffer as before, and a broken connection is
    left for Twisted to find there and end.
    """
    if holds_nothing_unsent(transport):
        send_straight(transport, data)
    else:
        transport.write(data)


def send_straight(transport: Connection, data: bytes) -> None:
    """Send `data` to the socket of a transport holding nothing unsent; what the kernel leaves goes to Twisted."""
    try:
        sent = transport.socket.send(data)
    except OSError:  # full (EAGAIN) or broken: Twisted's own write handles both
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


_FRAMES_BUILT = metrics.WEBSOCKET_FRAMES.labels(framing="built")
_FRAMES_REUSED = metrics.WEBSOCKET_FRAMES.labels(framing="reused")


def prepared_message(frame: Frame) -> PreparedMessage:
    """Return `frame` as a WebSocket text message from server to client, framed once for every socket."""
    message = frame.prepared
    if message is None:
        # Unmasked, as from a server; a socket that negotiated compression compresses the payload itself.
        # Kept on the frame, which lives as long as a reader of the thread may still send it.
        message = frame.prepared = PreparedMessage(
            frame.data.encode(), isBinary=False, applyMask=False, doNotCompress=False
        )
        _FRAMES_BUILT.inc()
    else:
        _FRAMES_REUSED.inc()
    return message


# `protocol` is daphne's WebSocketProtocol, an autobahn protocol: what is read here are their internals.
def writes_plainly(protocol: Any) -> bool:
    """Return whether a frame can go to the socket as it is: what autobahn's sendPreparedMessage writes then.

    An open socket over TCP that neither compresses nor queues frames. The bytes are written
    without autobahn's debug log's arguments (built on every send) and its traffic counters
    (which nothing reads).
    """
    return (
        isinstance(protocol.transport, Connection)
        and protocol.state == protocol.STATE_OPEN
        and protocol._perMessageCompress is None
        and not protocol.send_queue
    )


def is_event_stream(start: dict) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(EVENT_STREAM) for name, value in start.get("headers", [])
    )


class BoundedServer(Server):
    """A daphne server whose `send` waits for slow clients and closes the ones that stopped reading."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Weak: daphne forgets its protocols and requests when they end, and so do these.
        self.event_streams: weakref.WeakSet = weakref.WeakSet()
        self.closed_as_slow: weakref.WeakSet = weakref.WeakSet()
        # Loop time at which each client last went over the bound without catching up since.
        self.behind_since: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def run(self) -> None:
        # Daphne has loaded the application by now: what startup made can be frozen.
        collector.settle()
        super().run()

    def create_application(self, protocol: object, scope: dict) -> asyncio.Queue | None:
        if isinstance(protocol, WebSocketProtocol):
            extensions = {
                **scope.get("extensions", {}),
                SEND_FRAME_EXTENSION: partial(self.send_frame, protocol),
                SEND_FRAME_NOW_EXTENSION: partial(self.send_frame_now, protocol),
            }
            scope = {**scope, "extensions": extensions}
        return super().create_application(protocol, scope)

    # `protocol` is daphne's WebSocketProtocol, untyped: what is read here are its internals.
    async def send_frame(self, protocol: Any, frame: Frame) -> None:
        """Send `frame` as `websocket.send` of its text would, from bytes framed once for every socket."""
        if protocol in self.closed_as_slow:
            return
        # What daphne's handle_reply checks before a send: the connection is gone, or not accepted yet.
        if protocol not in self.connections or self.connections[protocol].get("disconnected"):
            return
        if protocol.state == protocol.STATE_CONNECTING:
            raise ValueError("Socket has not been accepted, so cannot send over it")
        message = prepared_message(frame)
        if writes_plainly(protocol):
            write_now(protocol.transport, message.payloadHybi)
        else:
            protocol.sendPreparedMessage(message)
        await self.wait_for_client(protocol)

    def send_frame_now(self, protocol: Any, frame: Frame) -> bool:
        """Send `frame` as `send_frame` would if the socket takes it without waiting; return whether it did.

        Only an open socket with nothing unsent before the frame: the bound and the closing
        of slow clients have nothing to do for it then, and a client that was behind has
        caught up. Anything else is left to `send_frame`.
        """
        transport = protocol.transport
        if not (writes_plainly(protocol) and holds_nothing_unsent(transport)):
            return False
        if self.behind_since:
            self.behind_since.pop(protocol, None)  # caught up, as wait_for_client would find it
        send_straight(transport, prepared_message(frame).payloadHybi)
        return True

    async def handle_reply(self, protocol: object, message: dict) -> None:
        if protocol in self.closed_as_slow:
            # Closed on purpose: what the application sent meanwhile has nowhere to go, and is no error.
            return
        await super().handle_reply(protocol, message)
        kind = message["type"]
        if kind == "http.response.start" and is_event_stream(message):
            self.event_streams.add(protocol)
        elif kind == "websocket.send" or (kind == "http.response.body" and protocol in self.event_streams):
            await self.wait_for_client(protocol)

    async def wait_for_client(self, protocol: object) -> None:
        """Return once the client holds at most STREAM_CLIENT_BUFFER_BYTES unsent; close it if that takes too long."""
        transport = socket_transport(protocol)
        bound = settings.STREAM_CLIENT_BUFFER_BYTES
        if transport is None:
            return
        if unsent_bytes(transport) <= bound // CAUGHT_UP_FRACTION:
            self.behind_since.pop(protocol, None)
        if unsent_bytes(transport) <= bound:
            return
        loop = asyncio.get_running_loop()
        # Closed when it takes nothing for the stall time, or stays behind (over the bound, never
        # catching up) for STREAM_CLIENT_BEHIND_SECONDS while trickling.
        behind_since = self.behind_since.setdefault(protocol, loop.time())
        deadline = min(
            loop.time() + settings.STREAM_CLIENT_STALL_SECONDS, behind_since + settings.STREAM_CLIENT_BEHIND_SECONDS
        )
        while transport.connected and protocol not in self.closed_as_slow and unsent_bytes(transport) > bound:
            if loop.time() >= deadline:
                self.close_slow_client(protocol, transport)
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    # `protocol` is daphne's WebSocketProtocol or WebRequest, neither typed: what is read here are their internals.
    def close_slow_client(self, protocol: Any, transport: FileDescriptor) -> None:
        self.closed_as_slow.add(protocol)
        websocket = isinstance(protocol, WebSocketProtocol)
        metrics.SLOW_CLIENT_CLOSES.labels(transport="websocket" if websocket else "event_stream").inc()
        logger.info(  # an expected close, that the client recovers from: not a warning
            "%s client %s took nothing for %s s or stayed behind for %s s, with %d bytes unsent: "
            "closing it as too slow",
            "WebSocket" if websocket else "Event stream",
            ":".join(map(str, protocol.client_addr or ["?"])),
            settings.STREAM_CLIENT_STALL_SECONDS,
            settings.STREAM_CLIENT_BEHIND_SECONDS,
            unsent_bytes(transport),
        )
        if not websocket:
            # Frees the buffer; the request's application gets http.disconnect. A socket's transport
            # (twisted.internet.tcp.Connection) has it; the FileDescriptor it is checked as does not.
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        # autobahn drops the connection when the client has not answered the close within this time.
        protocol.closeHandshakeTimeout = settings.STREAM_CLIENT_STALL_SECONDS
        # As a plain int: autobahn refuses any other type, an IntEnum too.
        protocol.sendClose(code=CloseCode.TOO_SLOW.value, reason="Too slow: reconnect with your cursor.")
        # Tell the application now rather than after the handshake. Muted, daphne passes nothing
        # more from this socket on, and sends no second disconnect when it closes.
        protocol.application_queue.put_nowait({"type": "websocket.disconnect", "code": CloseCode.TOO_SLOW.value})
        protocol.muted = True

    def kill_all_applications(self) -> defer.Deferred:
        """Hand the inline worker's replies over while daphne ends every connection's application.

        Daphne runs this before the reactor shuts down, and waits for the Deferred it returns.
        """
        # Imported here: the worker's modules need Django's models, set up after this module loads.
        from streaming.inline import stop_inline_worker

        handover = defer.Deferred.fromFuture(asyncio.ensure_future(stop_inline_worker()))
        handover.addErrback(lambda failure: logger.error("inline worker handover failed: %s", failure))
        return defer.gatherResults([handover, super().kill_all_applications()])


class BoundedCommandLineInterface(CommandLineInterface):
    """daphne's command line, flags and all, serving with BoundedServer."""

    server_class = BoundedServer


if __name__ == "__main__":
    try:
        BoundedCommandLineInterface.entrypoint()
    finally:
        metrics.process_exited()
