"""A stand-in for the Anthropic Messages API, for `streambench --provider anthropic`.

The workers then run the real provider (`streaming.providers.anthropic`) through the
real SDK, as in production: an HTTP request per reply, and every token read off a
socket and parsed from its server-sent event. The replies are the bench provider's:
`SCRIPTED_REPLY_TOKENS` stamped tokens at `SCRIPTED_TOKENS_PER_SECOND` (stamps.py),
each written as a `content_block_delta` event of its own, as the API sends them.

It runs as a process of its own (`python -m chatsite.bench.model_api PORT REPLY_TOKENS
TOKENS_PER_SECOND [CERTIFICATE]`), whose CPU the report shows apart: it is the model's, not the
server's. Like the API it keeps a connection for the client's next request, and with a
certificate it speaks TLS, as the API does (streambench makes one: `certificates.py`).
"""

import asyncio
import json
import ssl
import sys
from typing import Any

import uvloop

from .stamps import paced_tokens

MESSAGES_PATH = "/v1/messages"
# The end of a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


def sse(kind: str, **fields: Any) -> bytes:
    """One server-sent event, its `data` carrying its `type` as the API's do."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def message_start(message_id: str, *, model: str | None, input_tokens: int) -> bytes:
    """The `message_start` event that opens a streamed reply: the message, with no content yet."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return sse("message_start", message=message)


def prefilled_words(body: dict[str, Any]) -> int:
    """Words of the reply already written: a continuation sends them as a final assistant turn (prefill)."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return 0
    content = messages[-1].get("content")
    if isinstance(content, list):
        content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return len(str(content or "").split())


class ModelApi:
    """Answers POST /v1/messages with a paced stream of stamped text, keeping the connection for the next."""

    def __init__(self, *, reply_tokens: int, tokens_per_second: float) -> None:
        self.reply_tokens = reply_tokens
        self.tokens_per_second = tokens_per_second

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # until the client closes the connection
                request_line, headers = await self._read_head(reader)
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                if not request_line.startswith(f"POST {MESSAGES_PATH} "):
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    continue
                if not await self._stream(writer, body):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client closed, stopped reading (cancelled, handed the reply over), or broke a request
        finally:
            writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")  # LimitOverrunError past the reader's 64 KiB
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return request_line, headers

    async def _stream(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> bool:
        """Stream one reply, each event a chunk of its own; return whether the client read it all."""
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        count = max(0, self.reply_tokens - prefilled_words(body))
        writer.write(chunk(message_start("msg_bench", model=body.get("model"), input_tokens=1)))
        writer.write(chunk(sse("content_block_start", index=0, content_block={"type": "text", "text": ""})))
        async for token in paced_tokens(count, self.tokens_per_second):
            if writer.is_closing():
                return False  # the worker stopped reading: it cancelled the reply, or handed it over
            writer.write(chunk(sse("content_block_delta", index=0, delta={"type": "text_delta", "text": token})))
        writer.write(chunk(sse("content_block_stop", index=0)))
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        writer.write(chunk(sse("message_delta", delta=stop, usage={"output_tokens": count})))
        writer.write(chunk(sse("message_stop")) + LAST_CHUNK)
        await writer.drain()
        return True


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(port: int, *, reply_tokens: int, tokens_per_second: float, certificate: str | None = None) -> None:
    """Serve on `port`, over TLS with `certificate` (a PEM file of the chain and its key) when given."""
    api = ModelApi(reply_tokens=reply_tokens, tokens_per_second=tokens_per_second)
    context = None
    if certificate:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate)
    server = await asyncio.start_server(api.handle, "127.0.0.1", port, backlog=1024, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port, reply_tokens, tokens_per_second = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    certificate = sys.argv[4] if len(sys.argv) > 4 else None
    uvloop.run(serve(port, reply_tokens=reply_tokens, tokens_per_second=tokens_per_second, certificate=certificate))
