"""The Anthropic provider, driven through the real SDK against a local mock of the Messages API."""

import asyncio
import contextlib
import logging

import anthropic
import httpcore2
import pytest

from streaming.providers import ProviderError, ReplyEnd, ReplyEvent, ReplyRequest, TextDelta, Turn
from streaming.providers import anthropic as anthropic_provider
from streaming.providers.anthropic import CONTINUE_PROMPT, AnthropicProvider

from .anthropic_mock import API_KEY, MAX_TOKENS, SYSTEM_PROMPT, MockAnthropic, MockResponse, mock_api  # noqa: F401

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

# Generous for a local server, still far under the test timeout.
STREAM_TIMEOUT_S = 15
HELLO = [Turn("user", "Hello?")]


async def collect(request: ReplyRequest) -> list[ReplyEvent]:
    async def run() -> list[ReplyEvent]:
        return [event async for event in AnthropicProvider().stream(request)]

    return await asyncio.wait_for(run(), STREAM_TIMEOUT_S)


def text_of(events: list[ReplyEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def last_message(mock: MockAnthropic, index: int) -> dict:
    return mock.requests[index].body["messages"][-1]


async def test_normal_reply(mock_api):
    """A reply's deltas add up to the streamed text and end with the stream's stop reason and usage."""
    mock_api.script(MockResponse(deltas=["Hello", ",", " world", "!"], input_tokens=25))
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "Hello, world!"
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    assert events[-1] == ReplyEnd(stop_reason="end_turn", input_tokens=25, output_tokens=4)


async def test_request_carries_system_model_and_history(mock_api, settings):
    """The request holds the system prompt, model, max_tokens, the key and the turns in order."""
    mock_api.script(MockResponse(deltas=["Fine."]))
    turns = [Turn("user", "Hi"), Turn("assistant", "Hello! How can I help?"), Turn("user", "Explain leases.")]
    await collect(ReplyRequest(turns=turns))
    (request,) = mock_api.requests
    assert request.path == "/v1/messages"
    # This SDK sends the key as a bearer token; older ones used x-api-key.
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    sent_key = request.headers.get("x-api-key") or bearer
    assert sent_key == API_KEY
    assert request.body["system"] == SYSTEM_PROMPT
    assert request.body["model"] == settings.ANTHROPIC_MODEL
    assert request.body["max_tokens"] == MAX_TOKENS
    assert request.body["stream"] is True
    assert request.body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Explain leases."},
    ]


async def test_failed_replies_in_history_are_made_valid(mock_api):
    """Empty assistant turns are dropped, same-role neighbours merged, a failed reply's text kept."""
    mock_api.script(MockResponse(deltas=["Ok."]))
    turns = [
        Turn("user", "First"),
        Turn("assistant", ""),  # failed before any text
        Turn("user", "Second"),
        Turn("assistant", "Half an ans"),  # cancelled mid-way: its text stays
        Turn("user", "Third"),
    ]
    await collect(ReplyRequest(turns=turns))
    assert mock_api.requests[0].body["messages"] == [
        {"role": "user", "content": "First\n\nSecond"},
        {"role": "assistant", "content": "Half an ans"},
        {"role": "user", "content": "Third"},
    ]


async def test_overloaded_529_is_retried_by_the_sdk(mock_api):
    """A 529 before the stream opens is retried by the SDK and the reply arrives whole."""
    mock_api.script(
        MockResponse(status=529, message="Overloaded", retry_after_ms=10),
        MockResponse(deltas=["All", " good."]),
    )
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "All good."
    assert len(mock_api.requests) == 2
    assert mock_api.requests[1].body == mock_api.requests[0].body


@pytest.mark.parametrize(
    ("first", "continuation", "prefill", "full"),
    [
        (["The quick", " brown"], [" fox", " jumps."], "The quick brown", "The quick brown fox jumps."),
        # Cut right after a space: the model repeats it, or not; the text must not double or lose it.
        (["The quick "], [" brown", " fox."], "The quick", "The quick brown fox."),
        (["The quick "], ["brown", " fox."], "The quick", "The quick brown fox."),
        (["One.\n\n"], ["\n", "\nTwo."], "One.", "One.\n\nTwo."),
    ],
    ids=["mid-word", "after-space-repeated", "after-space-not-repeated", "after-blank-line"],
)
async def test_stream_error_is_continued_with_prefill(mock_api, first, continuation, prefill, full):
    """An `event: error` mid-stream is continued by an assistant prefill, without a seam."""
    mock_api.script(
        MockResponse(deltas=[*first, "never sent"], error_after=len(first)),
        MockResponse(deltas=continuation),
    )
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == full
    assert len(mock_api.requests) == 2
    assert mock_api.requests[1].body["messages"] == [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": prefill},
    ]
    # Output tokens add up over both requests: 1 from the broken one's message_start, then the rest.
    assert events[-1] == ReplyEnd("end_turn", input_tokens=10, output_tokens=1 + len(continuation))


async def test_dropped_connection_is_continued(mock_api):
    """A connection lost mid-stream is continued from the text already yielded."""
    mock_api.script(
        MockResponse(deltas=["Partly", " there", " and"], drop_after=2),
        MockResponse(deltas=[" done."]),
    )
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "Partly there done."
    assert last_message(mock_api, 1) == {"role": "assistant", "content": "Partly there"}


async def test_a_stream_cut_inside_a_character_is_continued(mock_api):
    """A body that ends with its connection, cut inside a UTF-8 character, is a break like any other: continued."""
    mock_api.script(
        MockResponse(deltas=["Un ", "Café", " noir"], drop_after=1, drop_inside_character=True, close_delimited=True),
        MockResponse(deltas=[" Café", " noir."]),
    )
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "Un Café noir."
    assert last_message(mock_api, 1) == {"role": "assistant", "content": "Un"}


async def test_partial_from_an_earlier_attempt_is_continued(mock_api):
    """A request with committed partial text yields only what comes after it."""
    mock_api.script(MockResponse(deltas=["ld!"]))
    events = await collect(ReplyRequest(turns=HELLO, partial="Hello wor"))
    assert text_of(events) == "ld!"
    assert last_message(mock_api, 0) == {"role": "assistant", "content": "Hello wor"}


async def test_prefill_refusal_falls_back_to_continue_turn(mock_api):
    """A model that refuses prefill gets a continue turn instead, and the text has no seam."""
    mock_api.refuse_prefill = True
    mock_api.script(
        MockResponse(deltas=["It was a ", "dark"], error_after=1),
        MockResponse(deltas=[" dark", " night."]),
    )
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "It was a dark night."
    assert [len(request.body["messages"]) for request in mock_api.requests] == [1, 2, 3]
    assert mock_api.requests[2].body["messages"] == [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "It was a"},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]


async def test_prefill_refusal_is_remembered_for_the_model(mock_api):
    """After one refusal, later continuations for the model go straight to the continue turn."""
    mock_api.refuse_prefill = True
    mock_api.script(MockResponse(deltas=[" one."]), MockResponse(deltas=[" two."]))
    first = await collect(ReplyRequest(turns=HELLO, partial="Take"))
    second = await collect(ReplyRequest(turns=HELLO, partial="Take"))
    assert (text_of(first), text_of(second)) == (" one.", " two.")
    # The refused prefill, then the first continue turn; the second reply needs one request.
    last_roles = [request.body["messages"][-1]["role"] for request in mock_api.requests]
    assert last_roles == ["assistant", "user", "user"]


async def test_retries_exhausted_raise_provider_error(mock_api):
    """Mid-stream errors past the retry budget raise ProviderError; text already yielded stays."""
    mock_api.script(
        MockResponse(deltas=["One", "x"], error_after=1),
        MockResponse(deltas=[" two", "x"], error_after=1),
        MockResponse(deltas=[" three", "x"], error_after=1),
        MockResponse(deltas=[" never"]),
    )
    received: list[ReplyEvent] = []
    with pytest.raises(ProviderError) as raised:
        async for event in AnthropicProvider().stream(ReplyRequest(turns=HELLO)):
            received.append(event)
    assert raised.value.code == "provider_error"
    assert raised.value.detail == "The provider is overloaded; try again shortly."
    assert text_of(received) == "One two three"
    assert len(mock_api.requests) == 3


async def test_invalid_key_is_reported_without_the_key(mock_api, caplog):
    """A 401 raises ProviderError saying the key was rejected; the key is in neither detail nor logs."""
    caplog.set_level(logging.DEBUG)
    mock_api.script(MockResponse(status=401, message="invalid x-api-key"))
    with pytest.raises(ProviderError) as raised:
        await collect(ReplyRequest(turns=HELLO))
    assert raised.value.detail == "The API key was rejected (401)."
    assert len(mock_api.requests) == 1  # not retried
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert any("401" in message for message in warnings)
    logged = caplog.text + "".join(str(record.exc_text or "") for record in caplog.records)
    assert API_KEY not in logged
    assert API_KEY not in str(raised.value)


async def test_missing_key_raises_provider_error(mock_api, settings):
    """Without ANTHROPIC_API_KEY the provider raises ProviderError before calling the API."""
    settings.ANTHROPIC_API_KEY = ""
    with pytest.raises(ProviderError) as raised:
        await collect(ReplyRequest(turns=HELLO))
    assert raised.value.detail == "No API key is configured for the provider."
    assert mock_api.requests == []


async def test_context_too_long_is_not_retried(mock_api):
    """A 400 for a too-long prompt raises at once with a readable detail."""
    mock_api.script(MockResponse(status=400, message="prompt is too long: 215000 tokens > 200000 maximum"))
    with pytest.raises(ProviderError) as raised:
        await collect(ReplyRequest(turns=HELLO))
    assert raised.value.detail == "The conversation is too long for the model's context window."
    assert len(mock_api.requests) == 1


async def test_cancel_closes_the_upstream_connection(mock_api):
    """Cancelling the task mid-stream closes the HTTP connection promptly instead of draining it."""
    mock_api.script(MockResponse(deltas=["tick "] * 400, delta_delay_s=0.05))
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in AnthropicProvider().stream(ReplyRequest(turns=HELLO)):
            first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), STREAM_TIMEOUT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(mock_api.disconnected.wait, 2.0), "the mock never saw the connection close"
    assert mock_api.deltas_sent < 400


async def test_aclose_closes_the_upstream_connection(mock_api):
    """Stopping iteration with aclose() closes the HTTP connection promptly."""
    mock_api.script(MockResponse(deltas=["tock "] * 400, delta_delay_s=0.05))
    stream = AnthropicProvider().stream(ReplyRequest(turns=HELLO))
    assert await asyncio.wait_for(anext(stream), STREAM_TIMEOUT_S) == TextDelta("tock ")
    await stream.aclose()
    assert await asyncio.to_thread(mock_api.disconnected.wait, 2.0), "the mock never saw the connection close"
    assert mock_api.deltas_sent < 400


async def test_max_tokens_stop_reason_is_passed_through(mock_api):
    """A reply cut by max_tokens ends with stop_reason max_tokens and is not continued."""
    mock_api.script(MockResponse(deltas=["Cut", " short"], stop_reason="max_tokens"))
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "Cut short"
    assert events[-1] == ReplyEnd(stop_reason="max_tokens", input_tokens=10, output_tokens=2)
    assert len(mock_api.requests) == 1


async def test_the_events_are_read_as_json_without_a_typed_model_of_each(mock_api, monkeypatch):
    """While no tracer records, the provider reads the stream's server-sent events itself: the SDK would
    validate a typed model of each (a sixth of a worker's CPU with Claude), and its `messages.stream()`
    helper would also add each delta to a snapshot of the whole message."""
    typed = []

    def process_response_data(client, *, data, cast_to, response):
        typed.append(data)
        return original(client, data=data, cast_to=cast_to, response=response)

    original = anthropic.AsyncAnthropic._process_response_data
    monkeypatch.setattr(anthropic.AsyncAnthropic, "_process_response_data", process_response_data)
    mock_api.script(MockResponse(deltas=["One", " two", " three"]))
    events = await collect(ReplyRequest(turns=HELLO))
    assert text_of(events) == "One two three"
    assert events[-1] == ReplyEnd(stop_reason="end_turn", input_tokens=10, output_tokens=3)
    assert typed == []


async def test_replies_share_the_processs_tls_context(mock_api, monkeypatch):
    """Each event loop has an HTTP client of its own, but not a TLS context of its own: making one loads
    the trusted certificates, about 20 ms of CPU."""
    made = []

    def default_ssl_context(**arguments):
        made.append(arguments)
        return original(**arguments)

    original = httpcore2.default_ssl_context
    monkeypatch.setattr(httpcore2, "default_ssl_context", default_ssl_context)
    anthropic_provider._tls_context.cache_clear()
    mock_api.script(*(MockResponse(deltas=[f"Reply {n}"]) for n in range(3)))
    for n in range(3):
        assert text_of(await collect(ReplyRequest(turns=HELLO))) == f"Reply {n}"
    assert len(made) == 1


async def test_replies_go_out_on_a_connection_an_earlier_reply_finished_with(mock_api):
    """The loop's HTTP client keeps its connections: a reply pays no TCP or TLS handshake of its own."""
    mock_api.script(*(MockResponse(deltas=[f"Reply {n}"]) for n in range(3)))
    for n in range(3):
        assert text_of(await collect(ReplyRequest(turns=HELLO))) == f"Reply {n}"
    assert mock_api.connections == 1


async def test_a_reply_abandoned_mid_stream_leaves_no_broken_connection_for_the_next(mock_api):
    """The abandoned stream's connection is closed, not kept: the next reply opens another and completes."""
    mock_api.script(MockResponse(deltas=["one", "two", "three"], delta_delay_s=0.05), MockResponse(deltas=["Next"]))
    async with contextlib.aclosing(AnthropicProvider().stream(ReplyRequest(turns=HELLO))) as events:
        first = await anext(events)
    assert isinstance(first, TextDelta)

    assert text_of(await collect(ReplyRequest(turns=HELLO))) == "Next"
    assert mock_api.connections == 2


async def test_a_kept_connection_the_api_closed_costs_the_next_reply_nothing(mock_api, caplog):
    """The server closed the connection after a reply: the next reply goes out on a new one, at the first try."""
    mock_api.script(MockResponse(deltas=["First"], close_after=True), MockResponse(deltas=["Second"]))
    assert text_of(await collect(ReplyRequest(turns=HELLO))) == "First"

    with caplog.at_level(logging.DEBUG, logger="anthropic"):
        assert text_of(await collect(ReplyRequest(turns=HELLO))) == "Second"
    assert mock_api.connections == 2
    assert not [record for record in caplog.records if "retrying" in record.getMessage().lower()]
