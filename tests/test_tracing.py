"""Traces: off unless an OTEL_* exporter is configured; then requests, replies, rounds and provider calls are spans."""

import uuid

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chatsite.tracing import tracing_exporter

from .anthropic_mock import MockResponse, mock_api  # noqa: F401


class RecordingProcessor(SimpleSpanProcessor):
    """Keep spans only while a test records: the provider stays installed for the rest of the run."""

    recording = False

    def on_end(self, span) -> None:
        if self.recording:
            super().on_end(span)


# The global tracer provider can be set once per process: this module's spans go here.
_exporter = InMemorySpanExporter()
_processor = RecordingProcessor(_exporter)
_provider = TracerProvider()
_provider.add_span_processor(_processor)


@pytest.fixture
def spans():
    """Record the spans of one test in memory, Django's requests included."""
    if trace.get_tracer_provider() is not _provider:
        trace.set_tracer_provider(_provider)
    if trace.get_tracer_provider() is not _provider:
        pytest.fail("another tracer provider was installed in this process")
    DjangoInstrumentor().instrument(tracer_provider=_provider)
    _exporter.clear()
    _processor.recording = True
    yield _exporter
    _processor.recording = False
    DjangoInstrumentor().uninstrument()
    _exporter.clear()


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "chatsite"}, None),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_tracing_is_off_unless_an_exporter_is_configured(environ, exporter):
    """Only an exporter named or an OTLP endpoint given turns tracing on."""
    chosen = tracing_exporter(environ)
    assert chosen is None if exporter is None else isinstance(chosen, exporter)


def test_an_unknown_exporter_is_refused():
    """An exporter chatsite does not ship stops the process instead of tracing nowhere."""
    with pytest.raises(ValueError, match="zipkin"):
        tracing_exporter({"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.mark.django_db
def test_django_requests_are_spans(client, spans):
    """A request is a server span named after its route."""
    assert client.get("/healthz").status_code == 200
    (span,) = [span for span in spans.get_finished_spans() if span.kind == trace.SpanKind.SERVER]
    assert span.attributes["http.route"] == "healthz"
    assert span.attributes.get("http.response.status_code", span.attributes.get("http.status_code")) == 200


@pytest.mark.django_db(transaction=True)
async def test_replies_rounds_and_provider_calls_are_spans(thread, user, connect, worker, settings, mock_api, spans):  # noqa: F811
    """A reply is a span holding the SDK's `gen_ai` call span; the rounds that wrote it are spans too."""
    settings.CHAT_PROVIDER = "anthropic"
    mock_api.script(MockResponse(deltas=["Traced", " reply."], input_tokens=7))
    socket = await connect(thread.id, user)
    await socket.send({"type": "send", "content": "Trace me", "client_id": str(uuid.uuid4())})
    end = await socket.receive_until(lambda frame: frame["type"] == "end")
    assert end["status"] == "complete"
    finished = spans.get_finished_spans()
    (reply,) = [span for span in finished if span.name == "chat.reply"]
    (call,) = [span for span in finished if span.name == "anthropic.messages.create"]
    assert call.parent is not None and call.parent.span_id == reply.context.span_id
    assert call.attributes["gen_ai.provider.name"] == "anthropic"
    assert call.attributes["gen_ai.request.model"] == settings.ANTHROPIC_MODEL
    # Taken from the stream's typed events, which the provider reads while a tracer records.
    assert call.attributes["gen_ai.usage.output_tokens"] == 2
    assert reply.attributes["chat.thread.id"] == str(thread.id)
    rounds = [span for span in finished if span.name == "chat.round"]
    assert rounds and all(span.attributes["chat.round.replies"] >= 1 for span in rounds)
