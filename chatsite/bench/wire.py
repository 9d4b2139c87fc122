"""A WebSocket client reduced to what the benchmark's tabs do: read text frames, send a few.

The load clients share the two cores with the server they measure, so every microsecond a
client spends per frame is taken from the server. A general client library (`websockets`)
costs the tabs about 70 µs per frame here, most of it in its per-message machinery: a
reader task, a queue and an async iterator step per frame. This one parses the server's
frames in `data_received` and hands each message to a callback, with no task switch, so a
client costs about what a Node client does and the server gets the CPU the peer's server
gets. It speaks RFC 6455 as a client must: a checked handshake, masked frames out,
fragmented messages, ping, close. It has no extensions (no compression), like the tabs of
the peer benchmark.
"""

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL_CLOSURE = 1000
# What a closed connection reports when no close frame gave a code (RFC 6455 section 7.1.5).
NO_CLOSE_FRAME = 1006
MAX_HANDSHAKE_BYTES = 65_536


class HandshakeFailed(ConnectionError):
    """The server did not switch protocols, or answered for another key."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """Return a masked frame from client to server (every client frame is masked)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65_536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    keystream = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(length, "big")
    return head + mask + masked


class WireSocket(asyncio.Protocol):
    """One client connection: call `on_message` with each message's bytes; `closed` resolves to the close code."""

    def __init__(self, request: bytes, key: bytes, on_message: Callable[[bytes], None]) -> None:
        self.request, self.on_message = request, on_message
        self.expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.close_code: int | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio's, but has its methods).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.opened.done() and not self._read_handshake():
            return
        self._read_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.close_code = self.close_code or NO_CLOSE_FRAME
            self.closed.set_result(self.close_code)

    # Sending

    def send(self, text: str) -> None:
        """Send a text message; ConnectionError once the connection is closing."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the socket is closed")
        self.transport.write(client_frame(TEXT, text.encode()))

    def close(self, code: int = NORMAL_CLOSURE) -> None:
        """Send a close frame and drop the connection (a benchmark has nothing to wait for)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(CLOSE, struct.pack("!H", code)))
            self.transport.close()

    # Reading

    def _read_handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HANDSHAKE_BYTES:
                self._fail_handshake("an oversized handshake response")
            return False
        head, self.buffer = bytes(self.buffer[:end]), self.buffer[end + 4 :]
        status, *header_lines = head.split(b"\r\n")
        headers = dict(line.split(b":", 1) for line in header_lines if b":" in line)
        accept = {name.strip().lower(): value.strip() for name, value in headers.items()}.get(b"sec-websocket-accept")
        if not status.startswith(b"HTTP/1.1 101"):
            self._fail_handshake(status.decode("latin-1"))
            return False
        if accept != self.expected_accept:
            self._fail_handshake("a wrong Sec-WebSocket-Accept")
            return False
        self.opened.set_result(None)
        return True

    def _fail_handshake(self, answer: str) -> None:
        self.opened.set_exception(HandshakeFailed(f"the server answered {answer}"))
        assert self.transport is not None
        self.transport.close()

    def _read_frames(self) -> None:
        buffer, offset, size = self.buffer, 0, len(self.buffer)
        while size - offset >= 2:
            first, length = buffer[offset], buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            end = start + length
            if end > size:
                break
            offset = end
            self._on_frame(first & 0x80, first & 0x0F, bytes(buffer[start:end]))
        del buffer[:offset]

    def _on_frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (TEXT, BINARY, CONTINUATION):
            if fin and not self.fragments:
                self.on_message(payload)
            elif fin:
                self.fragments.append(payload)
                message, self.fragments = b"".join(self.fragments), []
                self.on_message(message)
            else:
                self.fragments.append(payload)
        elif opcode == PING:
            assert self.transport is not None
            self.transport.write(client_frame(PONG, payload))
        elif opcode == CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else NORMAL_CLOSURE
            self.close(self.close_code)


async def connect(
    *, port: int, path: str, origin: str, cookie: str, on_message: Callable[[bytes], None], handshake_seconds: float
) -> WireSocket:
    """Open a WebSocket to 127.0.0.1:`port``path` as a browser would; TimeoutError or ConnectionError if not."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
        f"Cookie: {cookie}\r\n\r\n"
    ).encode("latin-1")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(handshake_seconds):
        _, socket = await loop.create_connection(lambda: WireSocket(request, key, on_message), "127.0.0.1", port)
        try:
            await socket.opened
        except BaseException:
            socket.close()
            raise
    return socket
