"""The benchmark's lean WebSocket client speaks RFC 6455 to a real server (the `websockets` library's)."""

import asyncio

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chatsite.bench import wire

pytestmark = pytest.mark.timeout(30)


async def _conversation(connection: ServerConnection) -> None:
    """Echo the client's first message, then a fragmented one, a ping it must answer, and a close with 4008."""
    assert connection.request is not None
    echoed = await connection.recv()
    await connection.send(f"echo {echoed} {connection.request.headers['Cookie']}")
    await connection.send(["frag", "mented ", "é" * 40_000])  # three frames, the last over 65,535 bytes
    await asyncio.wait_for(await connection.ping(), timeout=5)  # answered only if the client sends a pong
    await connection.send("pong answered")
    await connection.close(code=4008, reason="behind")


async def _run_client(port: int) -> tuple[list[bytes], int]:
    received: list[bytes] = []
    socket = await wire.connect(
        port=port,
        path="/ws/",
        origin="http://127.0.0.1",
        cookie="sessionid=abc",
        on_message=received.append,
        handshake_seconds=5,
    )
    socket.send("hello")  # a server refuses an unmasked client frame: the echo proves the masking
    return received, await asyncio.wait_for(socket.closed, timeout=10)


def test_wire_client_reads_fragments_answers_pings_masks_its_frames_and_reports_the_close_code():
    async def scenario() -> tuple[list[bytes], int]:
        async with serve(_conversation, "127.0.0.1", 0, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await _run_client(port)

    received, code = asyncio.run(scenario())

    assert received == [
        b"echo hello sessionid=abc",
        ("fragmented " + "é" * 40_000).encode(),
        b"pong answered",
    ]
    assert code == 4008


def test_wire_client_refuses_a_server_that_does_not_switch_protocols():
    async def scenario() -> None:
        async def not_websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(not_websocket, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(wire.HandshakeFailed, match="403 Forbidden"):
                await wire.connect(port=port, path="/", origin="o", cookie="", on_message=print, handshake_seconds=5)

    asyncio.run(scenario())
