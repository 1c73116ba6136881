"""Request metrics from the common interceptor, served by the metrics endpoint over a real socket."""

from __future__ import annotations

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vocalbridge_common import metrics
from vocalbridge_common.errors import NotFound
from vocalbridge_common.server import start_grpc_server


async def _ok(request, context):
    return b"ok"


async def _missing(request, context):
    raise NotFound("no such thing", reason="THING_NOT_FOUND")


async def _chunks(request, context):
    for chunk in (b"a", b"b"):
        yield chunk


def _register(server):
    handlers = {
        "GetOk": grpc.unary_unary_rpc_method_handler(_ok),
        "GetMissing": grpc.unary_unary_rpc_method_handler(_missing),
        "ListChunks": grpc.unary_stream_rpc_method_handler(_chunks),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Metered", handlers),))


@pytest.fixture(scope="module")
async def served(signer):
    running = await start_grpc_server(
        service_names=("test.Metered",), register=_register, signer=signer, host="127.0.0.1", port=0
    )
    exporter = await metrics.serve_metrics("127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel, f"http://127.0.0.1:{exporter.port}"
    await exporter.close()
    await running.stop(None)


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _calls(samples, method: str, code: str) -> float:
    labels = (("grpc_code", code), ("grpc_method", method), ("grpc_service", "test.Metered"))
    return samples.get(("vocalbridge_grpc_server_handling_seconds_count", labels), 0.0)


async def test_every_call_is_counted_by_method_and_code_whatever_its_kind(served, as_tenant):
    channel, url = served
    before = await _scrape(url)
    identity = as_tenant("ten_metrics", ("read",))
    for _ in range(3):
        assert await channel.unary_unary("/test.Metered/GetOk")(b"", metadata=identity) == b"ok"
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/test.Metered/GetMissing")(b"", metadata=identity)
    assert [c async for c in channel.unary_stream("/test.Metered/ListChunks")(b"", metadata=identity)] == [b"a", b"b"]
    with pytest.raises(grpc.aio.AioRpcError):  # no identity: refused by the interceptor, still counted
        await channel.unary_unary("/test.Metered/GetOk")(b"")
    after = await _scrape(url)

    def moved(method: str, code: str) -> float:
        return _calls(after, method, code) - _calls(before, method, code)

    assert moved("GetOk", "OK") == 3
    assert moved("GetMissing", "NOT_FOUND") == 2
    assert moved("ListChunks", "OK") == 1
    assert moved("GetOk", "UNAUTHENTICATED") == 1
    assert moved("GetOk", "NOT_FOUND") == 0
    # Latency: the sum grew, and every call fell in some bucket (the +Inf bucket counts them all).
    ok = (("grpc_code", "OK"), ("grpc_method", "GetOk"), ("grpc_service", "test.Metered"))
    assert after[("vocalbridge_grpc_server_handling_seconds_sum", ok)] > before.get(
        ("vocalbridge_grpc_server_handling_seconds_sum", ok), 0.0
    )
    every = after[("vocalbridge_grpc_server_handling_seconds_bucket", (*ok, ("le", "+Inf")))]
    assert every == after[("vocalbridge_grpc_server_handling_seconds_count", ok)]


async def test_health_checks_are_not_counted(served):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel, url = served
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    samples = await _scrape(url)
    assert not any("grpc.health" in str(labels) for _, labels in samples)


async def test_only_the_metrics_path_is_served(served):
    _, url = served
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + "/")).status_code == 404
        assert (await client.get(url + "/metrics?x=1")).status_code == 200


async def test_a_declared_counter_is_exposed_with_its_prefix(served):
    _, url = served
    declared = metrics.counter("test_declared", "A counter declared the documented way.", ("kind",))
    declared.labels(kind="planted").inc(2)
    samples = await _scrape(url)
    assert samples[("vocalbridge_test_declared_total", (("kind", "planted"),))] == 2
