"""The Anthropic SDK's HTTP transport, reading and writing through asyncio's own transports.

The SDK speaks HTTP through httpx2 and httpcore2, which reach the network through anyio.
anyio opens a cancel scope for every read's timeout, and a streamed reply is a read per
event: at 100 streams those reads took 37 % of the worker's samples holding the GIL (README,
item 23). Here a read that finds bytes waiting returns them at once, and one that waits arms
a single timer.

A connection keeps the bytes it received until they are read, and reports how it ended
only after them: when a stream breaks, the provider continues the reply from everything
that arrived (aiohttp's transport, measured, raised before handing those bytes over).

Only the network layer is replaced: httpx2's `AsyncHTTPTransport` still maps requests,
responses and errors, over an httpcore2 pool built with this backend. httpcore2 and httpx2
are pinned (requirements.in, tests/test_pins.py); `tests/test_anthropic_transport.py` runs
this module over plain TCP and TLS, through timeouts, breaks and refusals.

The replies of an event loop share one client (`loop_http_client`), and so its kept
connections: a reply pays no TCP or TLS handshake of its own.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.request
import weakref
from collections.abc import Iterable
from typing import Any, cast

import anthropic
import httpcore2
import httpx2

# Reading stops while this much is received and unread: a reply's events are read as they come.
READ_HIGH_WATER_BYTES = 256 * 1024

# No cap on connections, where the SDK's client has 1,000: a worker's replies share its loop's pool, one
# connection each at most, and STREAM_WORKER_CONCURRENCY bounds them already. Idle ones are kept as the SDK keeps them.
POOL_LIMITS = httpx2.Limits(
    max_connections=None,
    max_keepalive_connections=anthropic.DEFAULT_CONNECTION_LIMITS.max_keepalive_connections,
    keepalive_expiry=anthropic.DEFAULT_CONNECTION_LIMITS.keepalive_expiry,
)

# TCP keepalive, as the SDK's own client sets it: a reply can be silent for minutes while the model thinks.
KEEPALIVE_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5))
        if hasattr(socket, name)
    ),
]


# One client per event loop, and so one pool of kept connections: a reply goes out on a connection
# an earlier reply finished with, without a TCP and a TLS handshake of its own. Per loop, because a
# pool's connections belong to the loop that opened them; a worker runs one loop for its life.
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = weakref.WeakKeyDictionary()


def loop_http_client(*, ssl_context: ssl.SSLContext) -> httpx2.AsyncClient:
    """Return the running loop's HTTP client for the SDK (`http_client`), made on first use."""
    loop = asyncio.get_running_loop()
    client = _loop_clients.get(loop)
    if client is None:
        client = _loop_clients[loop] = http_client(ssl_context=ssl_context)
    return client


def http_client(*, ssl_context: ssl.SSLContext) -> httpx2.AsyncClient:
    """Return an HTTP client for the SDK: the SDK's defaults, over this module's transport.

    Where the environment names a proxy, the SDK's own client: it routes each request
    through its proxy (or not, by NO_PROXY) as httpx does.
    """
    # getproxies() names NO_PROXY "no": alone it routes nothing through a proxy.
    if any(scheme != "no" for scheme in urllib.request.getproxies()):
        return anthropic.DefaultAsyncHttpxClient(verify=ssl_context)
    return anthropic.DefaultAsyncHttpxClient(transport=AsyncioTransport(ssl_context=ssl_context))


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport over a connection pool whose connections are `AsyncioStream`s."""

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx2.Limits = POOL_LIMITS) -> None:
        super().__init__(verify=ssl_context, limits=limits)
        # The base class keeps its pool in `_pool` and uses only that; it offers no way to pass a backend.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            socket_options=KEEPALIVE_OPTIONS,
            network_backend=AsyncioBackend(),
        )


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Iterable[tuple[Any, ...]] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(loop), host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as error:
            raise httpcore2.ConnectTimeout(f"connecting to {host}:{port} timed out") from error
        except OSError as error:
            raise httpcore2.ConnectError(str(error)) from error
        try:
            for option in socket_options or ():
                transport.get_extra_info("socket").setsockopt(*option)
        except OSError as error:
            transport.close()
            raise httpcore2.ConnectError(str(error)) from error
        return AsyncioStream(transport, connection)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One connection, plain or TLS, as httpcore2 reads and writes it."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        connection = self._connection
        while not connection.received:
            if connection.lost is not None:
                raise httpcore2.ReadError(str(connection.lost) or type(connection.lost).__name__)
            if connection.at_eof:
                return b""
            await connection.arrival(timeout)
        data = bytes(connection.received[:max_bytes])
        del connection.received[:max_bytes]
        connection.resume_if_drained()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        await self._connection.drained(timeout)

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as error:
            self._transport.close()
            raise httpcore2.ConnectTimeout("the TLS handshake timed out") from error
        except (OSError, ssl.SSLError) as error:
            self._transport.close()
            raise httpcore2.ConnectError(str(error)) from error
        # The connection now receives through TLS: pausing and resuming its reading go there too.
        self._connection.transport = cast(asyncio.Transport, transport)
        return AsyncioStream(self._connection.transport, self._connection)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle connection before it is used again: anything received, or its
            # end, means the server closed it or broke the protocol, and it must not be reused.
            connection = self._connection
            return bool(connection.received) or connection.at_eof or connection.lost is not None
        if self._transport.is_closing():
            return None  # a closed TLS transport no longer answers
        name = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return self._transport.get_extra_info(name[info]) if info in name else None


class _Connection(asyncio.Protocol):
    """What a connection received and not yet handed over, and how it ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.at_eof = False
        # Why the connection ended, if not by the peer's orderly close.
        self.lost: Exception | None = None
        self.reading_paused = False
        self.writing_paused = False
        # The read or write waiting for this connection: a stream has one of each at most.
        self.reader: asyncio.Future[None] | None = None
        self.writer: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are read and written alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if not self.reading_paused and len(self.received) >= READ_HIGH_WATER_BYTES:
            assert self.transport is not None, "data arrives on a connection made"
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def resume_if_drained(self) -> None:
        """Read from the socket again once what was received has been read below the mark."""
        if self.reading_paused and len(self.received) < READ_HIGH_WATER_BYTES:
            assert self.transport is not None, "a paused connection was made"
            self.reading_paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.at_eof = True
        self._wake_reader()
        return False  # close the transport: nothing more is sent on a connection the server closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.at_eof = True
        if exc is not None:
            self.lost = exc
        self._wake_reader()
        if self.writer is not None and not self.writer.done():
            self.writer.set_exception(httpcore2.WriteError(str(exc) if exc else "the connection is closed"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.writer is not None and not self.writer.done():
            self.writer.set_result(None)

    async def arrival(self, limit_s: float | None) -> None:
        """Wait until bytes arrive or the connection ends; ReadTimeout after `limit_s` seconds."""
        self.reader = self.loop.create_future()
        await _within(self.reader, limit_s, httpcore2.ReadTimeout("the read timed out"))

    async def drained(self, limit_s: float | None) -> None:
        """Wait until the transport takes more writes; WriteTimeout after `limit_s` seconds."""
        if not self.writing_paused:
            return
        self.writer = self.loop.create_future()
        await _within(self.writer, limit_s, httpcore2.WriteTimeout("the write timed out"))

    def _wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)


async def _within(waiter: asyncio.Future[None], limit_s: float | None, expired: Exception) -> None:
    """Await `waiter`, failing it with `expired` after `limit_s` seconds: one timer, no task or scope."""
    timer = None if limit_s is None else waiter.get_loop().call_later(limit_s, _expire, waiter, expired)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()


def _expire(waiter: asyncio.Future[None], expired: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(expired)
