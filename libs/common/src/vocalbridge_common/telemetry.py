"""OpenTelemetry tracing from the standard OTEL_* variables, and nothing when none is set.

Tracing is on when an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or a sampler (OTEL_TRACES_SAMPLER) is configured:
then the gRPC server and client are instrumented, database spans are recorded, trace ids
appear in the JSON logs, and spans are exported over OTLP/gRPC when an endpoint is set.
Otherwise no tracer provider is installed and no instrumentation runs, so a request pays
nothing for tracing (about a dozen spans per turn otherwise, even with nowhere to send them).
OTEL_SDK_DISABLED=true turns tracing off whatever else is set.

Work queued for later in the same process (a turn's usage event in the outbox, sent to billing
by the relay in a batch) keeps its trace: `remember_trace(key)` notes the current span's
context under the work's key, and `continue_traces(name, keys)` opens the span of the later
work as a child of the first key's trace, linked to the others. With tracing off both do
nothing; a key handled by another process (another worker or replica's relay) starts a trace
of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SAMPLER_VARIABLE = "OTEL_TRACES_SAMPLER"
# Trace contexts of queued work, by key, while tracing is on (bounded: the oldest are forgotten).
QUEUED_TRACES_KEPT = 10_000


class _QueuedTraces:
    """The trace contexts of work queued in this process, kept until the work is done."""

    def __init__(self) -> None:
        self.contexts: OrderedDict[str, trace.SpanContext] = OrderedDict()


# Process-wide like the tracer provider it belongs to, and only while tracing is on.
_queued: list[_QueuedTraces] = []


def remember_trace(key: str) -> None:
    """Notes the current trace under `key` (an outbox event id), when tracing is on."""
    if not _queued:
        return
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        contexts = _queued[0].contexts
        contexts[key] = context
        if len(contexts) > QUEUED_TRACES_KEPT:
            contexts.popitem(last=False)


@contextlib.contextmanager
def continue_traces(name: str, keys: Iterable[str]) -> Iterator[None]:
    """A span for work on the queued items `keys`: in the trace of the first one remembered,
    linked to every one remembered. Does nothing when tracing is off."""
    if not _queued:
        yield
        return
    contexts = [c for c in (_queued[0].contexts.pop(key, None) for key in keys) if c is not None]
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None
    links = [trace.Link(context) for context in contexts]
    with trace.get_tracer(__name__).start_as_current_span(name, context=parent, links=links):
        yield


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables ask for tracing: an OTLP endpoint or a sampler, and the
    SDK not disabled."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in (*ENDPOINT_VARIABLES, SAMPLER_VARIABLE))


def setup_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Installs the tracer provider and the gRPC instrumentation when tracing is configured;
    returns the provider, or None (and changes nothing) when it is not."""
    environ = os.environ if environ is None else environ
    if not tracing_configured(environ):
        return None
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME", f"vocalbridge-{service_name}")})
    provider = TracerProvider(resource=resource)
    if any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces over OTLP")
    trace.set_tracer_provider(provider)
    if not _queued:
        _queued.append(_QueuedTraces())
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    return provider


def instrument_engine(engine: AsyncEngine) -> None:
    """Database spans for one SQLAlchemy engine, when tracing is on."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)
