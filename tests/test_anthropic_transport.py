"""The Anthropic SDK's transport on asyncio (streaming/providers/transport.py), over real sockets.

Each test serves HTTP from a local asyncio server, plain or TLS with a certificate made
for the test, and reads it through httpx2 as the SDK does.
"""

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import httpcore2
import httpx2
import pytest

from chatsite.bench.certificates import local_authority
from streaming.providers.transport import AsyncioStream, AsyncioTransport, _Connection, http_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Authority:
    """A certificate authority of the test's own, and a server certificate for 127.0.0.1 that it signed."""

    def __init__(self, tmp_path, name: str) -> None:
        self.paths = local_authority(tmp_path, name=name)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.paths.server)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.paths.authority)


async def serve(handler: Handler, server_context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if server_context else 'http'}://127.0.0.1:{port}/"


def response(body: bytes, *, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len(body) if length is None else length}"
    return head.encode() + b"\r\n\r\n" + body


def client(context: ssl.SSLContext | None = None, **options) -> httpx2.AsyncClient:
    transport = AsyncioTransport(ssl_context=context or ssl.create_default_context())
    return httpx2.AsyncClient(transport=transport, **options)


async def test_responses_come_over_tls_and_share_a_kept_connection(tmp_path):
    authority = Authority(tmp_path, "trusted")
    connections = 0

    async def answer_twice(reader, writer):
        nonlocal connections
        connections += 1
        for body in (b"first", b"second"):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response(body))
            await writer.drain()
        writer.close()

    server, url = await serve(answer_twice, authority.server_context())
    async with server, client(authority.client_context()) as http:
        first = await http.get(url)
        stream = first.extensions["network_stream"]
        encrypted = stream.get_extra_info("ssl_object") is not None
        second = await http.get(url)

    assert (first.text, second.text) == ("first", "second")
    assert isinstance(stream, AsyncioStream), "read through this module's backend, not anyio's"
    assert encrypted
    assert connections == 1, "the second request reused the first one's connection"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_large_body_arrives_whole_through_flow_control(tmp_path, tls):
    """2 MiB: reading pauses and resumes several times, on the socket or under TLS."""
    body = bytes(range(256)) * 8192
    authority = Authority(tmp_path, "trusted")

    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response(body))
        await writer.drain()
        writer.close()

    server, url = await serve(answer, authority.server_context() if tls else None)
    async with server, client(authority.client_context()) as http, http.stream("GET", url) as streamed:
        received = b"".join([chunk async for chunk in streamed.aiter_raw()])

    assert received == body


async def test_a_certificate_from_an_unknown_authority_is_refused(tmp_path):
    stranger, trusted = Authority(tmp_path, "stranger"), Authority(tmp_path, "trusted")

    async def answer(reader, writer):
        writer.close()

    server, url = await serve(answer, stranger.server_context())
    async with server, client(trusted.client_context()) as http:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(url)


async def test_a_refused_connection_is_a_connect_error():
    server, url = await serve(lambda reader, writer: asyncio.sleep(0))
    server.close()
    await server.wait_closed()

    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(url)


async def test_a_server_that_goes_quiet_times_the_read_out():
    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response(b"the start", length=100))
        await writer.drain()
        await reader.read()  # until the client gives up and closes

    server, url = await serve(stall)
    async with server, client(timeout=httpx2.Timeout(5.0, read=0.2)) as http, http.stream("GET", url) as streamed:
        chunks = streamed.aiter_raw()
        assert await anext(chunks) == b"the start"
        with pytest.raises(httpx2.ReadTimeout):
            await anext(chunks)


async def test_a_stream_cut_mid_body_raises_after_the_bytes_that_arrived():
    async def cut(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response(b"every byte sent", length=100))
        await writer.drain()
        writer.transport.abort()

    server, url = await serve(cut)
    received = b""
    async with server, client() as http, http.stream("GET", url) as streamed:
        with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
            async for chunk in streamed.aiter_raw():
                received += chunk

    assert received == b"every byte sent"


async def test_bytes_received_before_a_connection_broke_are_read_before_its_error():
    """Both arrived before the read: the read hands over the bytes, and only the next one fails."""
    connection, stream = unwired_stream()

    connection.data_received(b'data: {"type":"content_block_delta"}\n\n')
    connection.connection_lost(ConnectionResetError("reset by peer"))

    assert await stream.read(65536) == b'data: {"type":"content_block_delta"}\n\n'
    with pytest.raises(httpcore2.ReadError, match="reset by peer"):
        await stream.read(65536)


async def test_a_read_waiting_for_bytes_is_woken_by_them():
    connection, stream = unwired_stream()

    read = asyncio.ensure_future(stream.read(4))
    await asyncio.sleep(0)
    assert not read.done()
    connection.data_received(b"abcdef")

    assert await read == b"abcd", "at most max_bytes"
    assert await stream.read(4) == b"ef"
    connection.eof_received()
    assert await stream.read(4) == b"", "an orderly end reads as no bytes"


def test_without_a_proxy_in_the_environment_the_sdk_gets_the_asyncio_transport(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost")  # names no proxy of its own

    plain = http_client(ssl_context=ssl.create_default_context())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    proxied = http_client(ssl_context=ssl.create_default_context())

    url = httpx2.URL("https://api.anthropic.com/v1/messages")
    assert isinstance(plain._transport_for_url(url), AsyncioTransport)
    assert not isinstance(proxied._transport_for_url(url), AsyncioTransport), "proxied as the SDK's own client does"


def unwired_stream() -> tuple[_Connection, AsyncioStream]:
    """A connection on no socket, and its stream: the test hands the connection what a socket would."""
    connection = _Connection(asyncio.get_running_loop())
    transport = asyncio.Transport()  # asked for nothing below the reading mark
    connection.connection_made(transport)
    return connection, AsyncioStream(transport, connection)
