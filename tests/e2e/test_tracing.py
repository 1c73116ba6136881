"""One turn, one trace: Envoy, auth, conversation, agents and billing all report their spans of
it to a real OTLP receiver (a gRPC server implementing the collector's TraceService) on loopback,
and every span hangs from the client's own span, so the trace is connected end to end."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import running_stack, temporary_database
from vocalbridge_devstack.stack import StackConfig

# The services a text turn goes through; Envoy reports as vocalbridge-envoy.
TRACED = {"envoy", "auth", "conversation", "agents", "billing"}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, with the service.name of its resource."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []

    async def Export(self, request, context):
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list[tuple[str, object]]:
        return [(service, span) for service, span in self.spans if span.trace_id == trace_id]


@pytest.fixture(scope="module")
async def receiver():
    server = grpc.aio.server()
    collector = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield collector, port
    await server.stop(None)


@pytest.fixture(scope="module")
async def traced_stack(tmp_path_factory, receiver):
    _, port = receiver
    root = tmp_path_factory.mktemp("traced")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            services=("auth", "agents", "billing", "conversation"),
            workers={},
            extra_env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
                "VB_PROVIDER_VENDORA_LATENCY_MS": "0",
                "VB_RELAY_POLL_INTERVAL_MS": "100",
            },
        )
        async with running_stack(config) as stack:
            yield stack


async def test_one_turn_is_one_trace_through_envoy_and_every_service(traced_stack, receiver):
    collector, _ = receiver
    async with httpx.AsyncClient(base_url=traced_stack.base_url, timeout=15) as http:
        operator = {"Authorization": f"Bearer {traced_stack.operator_key}"}
        created = await http.post("/v1/tenants", json={"displayName": "Traced"}, headers=operator)
        assert created.status_code == 200, created.text
        key = {"Authorization": f"Bearer {created.json()['apiKey']['secret']}"}
        agent = await http.post(
            "/v1/agents",
            json={"displayName": "Traced", "systemPrompt": "Be brief.", "primaryProvider": "vendorA"},
            headers=key,
        )
        assert agent.status_code == 200, agent.text
        session = await http.post("/v1/sessions", json={"agent": agent.json()["name"]}, headers=key)
        assert session.status_code == 200, session.text

        # The client starts the trace (W3C trace context, sampled); every hop must continue it.
        trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
        turn = await http.post(
            f"/v1/{session.json()['name']}/messages",
            json={"content": "Hello, traced world"},
            headers={**key, "Idempotency-Key": "traced-1", "traceparent": f"00-{trace_id}-{client_span}-01"},
        )
        assert turn.status_code == 200, turn.text

    wanted = bytes.fromhex(trace_id)

    def orphans_of(spans: list) -> list:
        """Spans whose parent is neither the client's span nor another span of the same trace."""
        ids = {span.span_id for _, span in spans} | {bytes.fromhex(client_span)}
        return [(service, span.name) for service, span in spans if span.parent_span_id not in ids]

    # Envoy flushes its spans every 5 s, and a parent (its ingress span, which ends last) may come in a
    # later batch than its children: wait for every service and for the tree to close, within 30 s.
    for _ in range(300):
        spans = collector.of_trace(wanted)
        services = {service.removeprefix("vocalbridge-") for service, _ in spans}
        if services >= TRACED and not orphans_of(spans):
            break
        await asyncio.sleep(0.1)
    spans = collector.of_trace(wanted)
    services = {service.removeprefix("vocalbridge-") for service, _ in spans}
    assert services >= TRACED, f"spans of the turn came from {sorted(services)} only"
    # Connected: each span's parent is the client's span or another span of the same trace.
    orphans = orphans_of(spans)
    assert not orphans, f"spans outside the trace's tree: {orphans}"
    names = {(service.removeprefix("vocalbridge-"), span.name) for service, span in spans}
    assert any(s == "auth" and "Check" in n for s, n in names), names  # ext_authz carried the context
    assert any(s == "billing" and "RecordUsage" in n for s, n in names), names  # and so did the relay's batch
