"""Tracing costs nothing unless it is asked for: no provider, no instrumentation."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from vocalbridge_common.telemetry import setup_tracing, tracing_configured


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_tracing_is_on_only_with_an_endpoint_or_a_sampler(environ, expected):
    assert tracing_configured(environ) is expected


def test_without_configuration_nothing_is_installed():
    before = trace.get_tracer_provider()
    assert setup_tracing("test", {}) is None
    assert trace.get_tracer_provider() is before
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    # No provider: a span is the no-op one, which has no valid context (no trace id to log).
    with trace.get_tracer("t").start_as_current_span("s") as span:
        assert not span.get_span_context().is_valid
