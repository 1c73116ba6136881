"""OpenTelemetry tracing from the standard OTEL_* variables, and nothing when none is set.

Tracing is on when an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or a sampler (OTEL_TRACES_SAMPLER) is configured:
then the gRPC server and client are instrumented, database spans are recorded, trace ids
appear in the JSON logs, and spans are exported over OTLP/gRPC when an endpoint is set.
Otherwise no tracer provider is installed and no instrumentation runs, so a request pays
nothing for tracing (about a dozen spans per turn otherwise, even with nowhere to send them).
OTEL_SDK_DISABLED=true turns tracing off whatever else is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SAMPLER_VARIABLE = "OTEL_TRACES_SAMPLER"


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
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    return provider


def instrument_engine(engine: AsyncEngine) -> None:
    """Database spans for one SQLAlchemy engine, when tracing is on."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)
