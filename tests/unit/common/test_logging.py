import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from vocalbridge_common.context import request_id_var
from vocalbridge_common.logging import JsonFormatter


def _format(**extra) -> dict:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter("svc").format(record))


def test_a_line_is_json_with_the_request_context_and_the_trace_id():
    token = request_id_var.set("req-9")
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("span") as span:
            entry = _format(method="/a.B/C")
            expected_trace = format(span.get_span_context().trace_id, "032x")
    finally:
        request_id_var.reset(token)
    assert entry["msg"] == "hello world" and entry["service"] == "svc" and entry["level"] == "INFO"
    assert entry["request_id"] == "req-9" and entry["method"] == "/a.B/C"
    assert entry["trace_id"] == expected_trace


def test_outside_a_request_there_is_no_request_context():
    entry = _format()
    assert "request_id" not in entry and "tenant" not in entry and "trace_id" not in entry
