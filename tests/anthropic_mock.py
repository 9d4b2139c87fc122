"""A local stand-in for the Anthropic Messages API, spoken at the wire.

The real `anthropic` SDK reaches it through ANTHROPIC_BASE_URL, so tests exercise
the SDK's own SSE parsing, retries and connection handling. Responses are scripted
per test as a queue of `MockResponse`s; every request body is recorded. Its events are
encoded and chunked as streambench's stand-in of the API does it (chatsite/bench/model_api.py).
Like the API, it thinks only when asked to, and refuses a tool loop whose turn does not
open with the thinking it asks for.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chatsite.bench.model_api import LAST_CHUNK, chunk, message_start, sse

# What the real API answers when a model does not take an assistant prefill.
PREFILL_REFUSAL_MESSAGE = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
# What the real API answers a tool loop that asks for thinking when its assistant turn does not open with it.
THINKING_REFUSAL_MESSAGE = (
    "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` "
    "is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of "
    "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid "
    "this requirement, disable `thinking`."
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class MockResponse:
    """One scripted answer to POST /v1/messages."""

    status: int = 200
    deltas: list[str] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int = 10
    # Mid-stream failures: an `event: error` or a dropped connection after this many deltas.
    error_after: int | None = None
    error_type: str = "overloaded_error"
    drop_after: int | None = None
    # With drop_after: first send the next delta's event up to inside its first multi-byte character.
    drop_inside_character: bool = False
    # A body without chunked framing that ends when the connection closes (HTTP/1.1 allows it, proxies do it).
    close_delimited: bool = False
    delta_delay_s: float = 0.0
    # Close the connection once the response is over, as a server closing an idle kept connection.
    close_after: bool = False
    # For error statuses: the body's error message, and the SDK-honoured retry hint.
    message: str = ""
    retry_after_ms: int | None = None
    # A thinking block before the text (its deltas, then its signature), then redacted_thinking
    # blocks (their encrypted data), both only if the request asks for thinking; and tool_use
    # blocks after the text: each `{"id", "name", "input"}`, its input streamed as JSON in two pieces.
    thinking: list[str] = field(default_factory=list)
    signature: str = "sig-mock"
    redacted_thinking: list[str] = field(default_factory=list)
    tool_uses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class MockAnthropic:
    """An HTTP server on 127.0.0.1 answering Messages API calls from a script."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        # Models from the Claude 4.6 generation on answer 400 to a final assistant turn.
        self.refuse_prefill = False
        # Set when writing to a client fails: it closed the connection mid-stream.
        self.disconnected = threading.Event()
        self.stopping = threading.Event()
        self.deltas_sent = 0
        # Connections accepted: a client that keeps them opens one for many requests.
        self.connections = 0
        self._script: deque[MockResponse] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MockAnthropic:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *responses: MockResponse) -> None:
        with self._lock:
            self._script.extend(responses)

    def next_id(self) -> int:
        return next(self._ids)

    def count_delta(self) -> None:
        with self._lock:
            self.deltas_sent += 1

    def take(self, request: RecordedRequest) -> MockResponse:
        """Record `request` and return the answer it gets."""
        with self._lock:
            self.requests.append(request)
            messages = request.body.get("messages") or []
            if self.refuse_prefill and messages and messages[-1].get("role") == "assistant":
                return MockResponse(status=400, message=PREFILL_REFUSAL_MESSAGE)
            if _thinking_turn_broken(request.body):
                return MockResponse(status=400, message=THINKING_REFUSAL_MESSAGE)
            if not self._script:
                return MockResponse(status=400, message="mock: no scripted response left")
            return self._script.popleft()


def _thinking_turn_broken(body: dict[str, Any]) -> bool:
    """Whether a request asks for thinking in a tool loop whose assistant turn does not open with thinking.

    The turn runs from the last user message that is not only tool results: its tool_use
    and tool_result messages alternate after it, its first assistant message first.
    """
    messages = body.get("messages") or []
    if (body.get("thinking") or {}).get("type") != "enabled" or not messages or not _tool_results(messages[-1]):
        return False
    start = max(i for i, message in enumerate(messages) if message["role"] == "user" and not _tool_results(message))
    content = messages[start + 1]["content"]
    return isinstance(content, str) or content[0]["type"] not in ("thinking", "redacted_thinking")


def _tool_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return not isinstance(content, str) and all(block["type"] == "tool_result" for block in content)


def _handler_for(mock: MockAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 with chunked bodies, as the real API streams, so a dropped
        # connection shows up to the client as an incomplete chunked read.
        protocol_version = "HTTP/1.1"
        close_delimited = False

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def handle(self) -> None:
            with mock._lock:
                mock.connections += 1
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that abandons a stream resets its kept-alive connection

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = RecordedRequest(path=self.path, headers=headers, body=body)
            response = mock.take(request)
            request_id = f"req_mock{mock.next_id():06d}"
            if response.status != 200:
                self._send_error(response, request_id)
            else:
                self._send_stream(response, body, request_id)

        def _send_error(self, response: MockResponse, request_id: str) -> None:
            error_type = ERROR_TYPES.get(response.status, "api_error")
            payload = {
                "type": "error",
                "error": {"type": error_type, "message": response.message or error_type.replace("_", " ")},
                "request_id": request_id,
            }
            data = json.dumps(payload).encode()
            self.send_response(response.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", request_id)
            retryable = response.status in (408, 409, 429) or response.status >= 500
            self.send_header("x-should-retry", "true" if retryable else "false")
            if response.retry_after_ms is not None:
                self.send_header("retry-after-ms", str(response.retry_after_ms))
            self.end_headers()
            self.wfile.write(data)

        def _send_stream(self, response: MockResponse, body: dict[str, Any], request_id: str) -> None:
            self.close_delimited = response.close_delimited
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            if self.close_delimited:
                self.send_header("connection", "close")
                self.close_connection = True
            else:
                self.send_header("transfer-encoding", "chunked")
            self.send_header("request-id", request_id)
            self.end_headers()
            try:
                self._stream_events(response, body)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                mock.disconnected.set()
                self.close_connection = True
            # A server may close a kept connection once a response is over, without saying so first.
            self.close_connection = self.close_connection or response.close_after

        def _event(self, name: str, **fields: Any) -> None:
            """Write one SSE event as its own HTTP chunk; `data` carries `type` like the real API."""
            self._chunk(sse(name, **fields))

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(data if self.close_delimited else chunk(data))
            self.wfile.flush()

        def _stream_events(self, response: MockResponse, body: dict[str, Any]) -> None:
            message_id = f"msg_mock{mock.next_id():06d}"
            self._chunk(message_start(message_id, model=body.get("model"), input_tokens=response.input_tokens))
            index = 0
            thinks = (body.get("thinking") or {}).get("type") == "enabled"
            if response.thinking and thinks:
                self._event("content_block_start", index=index, content_block={"type": "thinking", "thinking": ""})
                for text in response.thinking:
                    self._event("content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": text})
                signature_delta = {"type": "signature_delta", "signature": response.signature}
                self._event("content_block_delta", index=index, delta=signature_delta)
                self._event("content_block_stop", index=index)
                index += 1
            for data in response.redacted_thinking if thinks else []:
                self._event(
                    "content_block_start", index=index, content_block={"type": "redacted_thinking", "data": data}
                )
                self._event("content_block_stop", index=index)
                index += 1
            if response.deltas or not response.tool_uses:
                if not self._text_block(response, index):
                    return
                index += 1
            for tool_use in response.tool_uses:
                block = {"type": "tool_use", "id": tool_use["id"], "name": tool_use["name"], "input": {}}
                self._event("content_block_start", index=index, content_block=block)
                encoded = json.dumps(tool_use["input"])
                for piece in (encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    self._event("content_block_delta", index=index, delta=delta)
                self._event("content_block_stop", index=index)
                index += 1
            self._event(
                "message_delta",
                delta={"stop_reason": response.stop_reason, "stop_sequence": None},
                usage={"output_tokens": max(1, len(response.deltas))},
            )
            self._event("message_stop")
            self._end_body()

        def _text_block(self, response: MockResponse, index: int) -> bool:
            """Stream the text block; False when the stream was broken off or the server is stopping."""
            self._event("content_block_start", index=index, content_block={"type": "text", "text": ""})
            self._event("ping")
            for sent, text in enumerate([*response.deltas, None]):
                if sent == response.error_after:
                    message_text = response.error_type.removesuffix("_error").capitalize()  # "Overloaded"
                    self._event("error", error={"type": response.error_type, "message": message_text})
                    self._end_body()
                    return False
                if sent == response.drop_after:
                    if response.drop_inside_character and text is not None:
                        # Raw UTF-8, as the API writes text that is not ASCII.
                        data = {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": text},
                        }
                        encoded = (
                            f"event: content_block_delta\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
                        )
                        first_wide = next(i for i, byte in enumerate(encoded) if byte >= 0xC0)
                        self._chunk(encoded[: first_wide + 1])
                    # Close without the final chunk: a connection lost mid-reply.
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return False
                if text is None:
                    break
                if response.delta_delay_s and mock.stopping.wait(response.delta_delay_s):
                    return False  # the server is shutting down
                self._event("content_block_delta", index=index, delta={"type": "text_delta", "text": text})
                mock.count_delta()
            self._event("content_block_stop", index=index)
            return True

        def _end_body(self) -> None:
            if not self.close_delimited:  # else the connection's close ends the body
                self.wfile.write(LAST_CHUNK)
                self.wfile.flush()

    return Handler


API_KEY = "test-key-" + "s3cr3t" * 6
SYSTEM_PROMPT = "You are a careful test assistant."
MAX_TOKENS = 321


@pytest.fixture
def mock_api(settings) -> Iterator[MockAnthropic]:
    mock = MockAnthropic().start()
    settings.ANTHROPIC_BASE_URL = mock.url
    settings.ANTHROPIC_API_KEY = API_KEY
    # Prefill refusal is remembered per model per process: a fresh model name per test.
    settings.ANTHROPIC_MODEL = f"claude-mock-{uuid.uuid4().hex[:8]}"
    settings.ANTHROPIC_MAX_TOKENS = MAX_TOKENS
    settings.CHAT_SYSTEM_PROMPT = SYSTEM_PROMPT
    settings.ANTHROPIC_RETRY_BACKOFF_SECONDS = 0.01
    yield mock
    mock.close()
