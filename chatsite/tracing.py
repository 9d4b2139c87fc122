"""OpenTelemetry traces, off unless an exporter is configured with the standard OTEL_* variables.

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`), or, with that variable
unset, when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set;
OTEL_SDK_DISABLED=true keeps it off. The exporter, the sampler (OTEL_TRACES_SAMPLER) and the
service's name (OTEL_SERVICE_NAME) read the rest of the OTEL_* variables themselves.

Then every process traces: the web processes each Django request, every worker loop each
reply (`chat.reply`) and group-commit round (`chat.round`), and the Anthropic SDK each
provider call (`anthropic.messages.create`, with `gen_ai.*` attributes and no content),
inside the reply's span.
"""

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DEFAULT_SERVICE_NAME = "chatsite"


def tracing_exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    """Return the span exporter the environment configures, or None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        names = "otlp" if any(environ.get(variable) for variable in OTLP_ENDPOINT_VARIABLES) else "none"
    # A comma list is allowed by the specification; the first exporter named is the one used.
    name = names.split(",")[0].strip()
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        # Over HTTP/protobuf (OTEL_EXPORTER_OTLP_PROTOCOL's default): no gRPC stack to install.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={names!r}: chatsite exports traces with otlp or console, or none.")


def tracer_provider_install(exporter: SpanExporter) -> TracerProvider:
    """Send this process's spans to `exporter`, in batches, and trace Django's requests."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    return provider


def configure_tracing() -> TracerProvider | None:
    """Install tracing when the environment configures an exporter; return the provider, None when off."""
    exporter = tracing_exporter(os.environ)
    return None if exporter is None else tracer_provider_install(exporter)
