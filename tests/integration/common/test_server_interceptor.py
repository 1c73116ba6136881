"""The shared server bootstrap and interceptor over a real socket."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.support import error_reason, violated_fields
from vocalbridge.conversation.v1 import conversation_service_pb2
from vocalbridge_common.context import current_identity
from vocalbridge_common.errors import NotFound
from vocalbridge_common.server import start_grpc_server


async def _boom(request, context):
    raise RuntimeError("database password is hunter2")


async def _who(request, context):
    return current_identity().tenant_id.encode()


async def _missing(request, context):
    raise NotFound("no such thing", reason="THING_NOT_FOUND")


async def _count(requests, context):
    """Client streaming: how many messages came in, and whose."""
    count = 0
    async for _ in requests:
        count += 1
    return f"{current_identity().tenant_id}:{count}".encode()


async def _echo(requests, context):
    """Bidirectional: echoes each message; a message `missing` raises a domain error mid-stream."""
    async for message in requests:
        if message == b"missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND")
        yield current_identity().tenant_id.encode() + b":" + message


# Requests the typed handlers below ran with: a refused request must never reach one.
HANDLED: list[object] = []


async def _send(request, context):
    HANDLED.append(request)
    return conversation_service_pb2.SendMessageResponse()


async def _send_each(requests, context):
    async for request in requests:
        HANDLED.append(request)
        yield conversation_service_pb2.StreamVoiceTurnResponse()


def _register(server):
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=None, response_serializer=None)
        for name, fn in (("Boom", _boom), ("ListWho", _who), ("Missing", _missing))
    }
    handlers["Count"] = grpc.stream_unary_rpc_method_handler(_count)
    handlers["Echo"] = grpc.stream_stream_rpc_method_handler(_echo)
    # Handlers with real request types (conversation's), as a service registers them.
    handlers["Send"] = grpc.unary_unary_rpc_method_handler(
        _send,
        request_deserializer=conversation_service_pb2.SendMessageRequest.FromString,
        response_serializer=conversation_service_pb2.SendMessageResponse.SerializeToString,
    )
    handlers["SendEach"] = grpc.stream_stream_rpc_method_handler(
        _send_each,
        request_deserializer=conversation_service_pb2.StreamVoiceTurnRequest.FromString,
        response_serializer=conversation_service_pb2.StreamVoiceTurnResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Probe", handlers),))


@pytest.fixture(scope="module")
async def channel(signer):
    running = await start_grpc_server(
        service_names=("test.Probe",), register=_register, signer=signer, host="127.0.0.1", port=0
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel
    await running.stop(None)


async def test_unexpected_exception_is_internal_without_details(channel, as_tenant, caplog):
    call = channel.unary_unary("/test.Probe/Boom")
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"", metadata=(*as_tenant("ten_a"), ("x-request-id", "req-42")))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    # Nothing of the exception in any part of the answer: message, status details, trailers.
    answer = caught.value.details() + repr(caught.value.trailing_metadata())
    assert "hunter2" not in answer and "Traceback" not in answer and "RuntimeError" not in answer
    status = rpc_status.from_call(caught.value)
    request_info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(request_info) for d in status.details) and request_info.request_id == "req-42"
    assert any(
        "hunter2" in (r.exc_text or "") or (r.exc_info and "hunter2" in str(r.exc_info[1])) for r in caplog.records
    ), "the stack trace is logged on the server"


async def test_domain_error_and_identity_reach_the_handler(channel, as_tenant):
    assert await channel.unary_unary("/test.Probe/ListWho")(b"", metadata=as_tenant("ten_b", ("read",))) == b"ten_b"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/test.Probe/Missing")(b"", metadata=as_tenant("ten_b", ("write",)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "THING_NOT_FOUND"


async def test_identity_and_scope_are_enforced(channel, as_tenant):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/test.Probe/ListWho")(b"")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # "Missing" is neither Get* nor List*: it needs the write scope.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/test.Probe/Missing")(b"", metadata=as_tenant("ten_b", ("read",)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"


async def test_health_is_serving_without_identity(channel):
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="test.Probe"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_one_json_log_line_per_request_with_its_context(channel, as_tenant):
    import io
    import json

    from vocalbridge_common.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe"))
    request_log = logging.getLogger("vocalbridge.request")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    try:
        await channel.unary_unary("/test.Probe/ListWho")(
            b"", metadata=(*as_tenant("ten_log", ("read",)), ("x-request-id", "req-log"))
        )
    finally:
        request_log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    entry = lines[0]
    assert (entry["service"], entry["msg"], entry["method"], entry["status"]) == (
        "probe",
        "request",
        "/test.Probe/ListWho",
        "OK",
    )
    assert entry["request_id"] == "req-log" and entry["tenant"] == "ten_log"
    assert isinstance(entry["latency_ms"], float)


async def _stream_of(*messages):
    for message in messages:
        yield message


def _forged(signer):
    """A well-formed identity for tenant ten_a with its signature swapped."""
    body, _, _ = signer.mint("ten_a", "key_a", ("admin",)).rpartition(".")
    return body + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize("kind", ["client_streaming", "bidirectional"])
async def test_streaming_rpcs_refuse_missing_or_forged_identity(channel, signer, kind):
    for metadata in ((), (("x-vb-identity", _forged(signer)),), (("x-vb-identity", "garbage"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if kind == "client_streaming":
                await channel.stream_unary("/test.Probe/Count")(_stream_of(b"a", b"b"), metadata=metadata)
            else:
                call = channel.stream_stream("/test.Probe/Echo")(_stream_of(b"a"), metadata=metadata)
                [reply async for reply in call]
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert error_reason(caught.value) == "INVALID_IDENTITY"


async def test_streaming_rpcs_check_the_scope(channel, as_tenant):
    # "Count" and "Echo" are neither Get* nor List*: they need the write scope.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.stream_unary("/test.Probe/Count")(_stream_of(b"a"), metadata=as_tenant("ten_a", ("read",)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(caught.value) == "SCOPE_INSUFFICIENT"


async def test_client_streaming_rpc_runs_with_the_callers_identity(channel, as_tenant):
    reply = await channel.stream_unary("/test.Probe/Count")(
        _stream_of(b"a", b"b", b"c"), metadata=as_tenant("ten_c", ("write",))
    )
    assert reply == b"ten_c:3"


async def test_bidirectional_rpc_maps_a_domain_error_raised_mid_stream(channel, as_tenant):
    call = channel.stream_stream("/test.Probe/Echo")(
        _stream_of(b"one", b"two", b"missing", b"never"),
        metadata=(*as_tenant("ten_d", ("write",)), ("x-request-id", "req-bidi")),
    )
    replies = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in call:
            replies.append(reply)
    assert replies == [b"ten_d:one", b"ten_d:two"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "THING_NOT_FOUND"
    status = rpc_status.from_call(caught.value)
    request_info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(request_info) for d in status.details) and request_info.request_id == "req-bidi"


@pytest.mark.parametrize(
    ("method", "kind", "expected_status"),
    [("/test.Probe/Count", "client_streaming", "OK"), ("/test.Probe/Echo", "bidirectional", "NOT_FOUND")],
)
async def test_streaming_rpcs_log_one_request_line(channel, as_tenant, method, kind, expected_status):
    import io
    import json

    from vocalbridge_common.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe"))
    request_log = logging.getLogger("vocalbridge.request")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    metadata = (*as_tenant("ten_log", ("write",)), ("x-request-id", f"req-{kind}"))
    try:
        if kind == "client_streaming":
            await channel.stream_unary(method)(_stream_of(b"a", b"b"), metadata=metadata)
        else:
            with pytest.raises(grpc.aio.AioRpcError):
                call = channel.stream_stream(method)(_stream_of(b"a", b"missing"), metadata=metadata)
                [reply async for reply in call]
    finally:
        request_log.removeHandler(handler)
    # Only this call's lines: the previous test's call may log its line after its client saw the status.
    lines = [e for e in map(json.loads, stream.getvalue().splitlines()) if e.get("request_id") == f"req-{kind}"]
    assert [(e["method"], e["status"], e["request_id"], e["tenant"]) for e in lines] == [
        (method, expected_status, f"req-{kind}", "ten_log")
    ]


class _Lines:
    """The JSON lines every logger writes while the block runs (the request log and any error)."""

    def __init__(self) -> None:
        import io

        from vocalbridge_common.logging import JsonFormatter

        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter("probe"))

    def __enter__(self) -> _Lines:
        root = logging.getLogger()
        self.level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)

    def entries(self) -> list[dict]:
        import json

        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    async def settled(self, **wanted: str) -> list[dict]:
        """The lines, once one with `wanted` fields is there: the server writes a call's line
        after its client has the status."""
        import asyncio

        for _ in range(500):
            entries = self.entries()
            if any(all(e.get(k) == v for k, v in wanted.items()) for e in entries):
                return entries
            await asyncio.sleep(0.01)
        return self.entries()


# Bytes no request type decodes: a field 2 (content, a string) of length 2 holding invalid UTF-8,
# and a length that runs past the end of the message.
MALFORMED = [b"\x12\x02\xff\xfe", b"\x12\x7fshort", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"]


@pytest.mark.parametrize("raw", MALFORMED)
@pytest.mark.parametrize("with_identity", [True, False])
async def test_malformed_protobuf_is_invalid_argument_with_a_request_line_and_no_traceback(
    channel, as_tenant, raw, with_identity
):
    HANDLED.clear()
    metadata = (*(as_tenant("ten_m", ("write",)) if with_identity else ()), ("x-request-id", "req-bad"))
    with _Lines() as lines:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Probe/Send")(raw, metadata=metadata)
        entries = await lines.settled(request_id="req-bad")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_reason(caught.value) == "INVALID_REQUEST_BODY"
    assert "parsing" not in caught.value.details().lower()
    # The field that is not UTF-8 is named (content, field 2); other bytes name the body.
    assert violated_fields(caught.value) == ({"content"} if raw == MALFORMED[0] else {"body"})
    assert HANDLED == []
    # This call's lines (an earlier test's call may log after its client saw the status).
    mine = [e for e in entries if e.get("request_id") == "req-bad"]
    assert [(e["msg"], e["method"], e["status"]) for e in mine] == [
        ("request", "/test.Probe/Send", "INVALID_ARGUMENT")
    ], entries
    assert not any("exception" in e or e["level"] == "ERROR" for e in entries)


@pytest.mark.parametrize("method", ["/test.Probe/Send", "/grpc.health.v1.Health/Check"])
async def test_a_unary_call_without_a_message_is_refused_at_once_with_a_request_line(channel, as_tenant, method):
    """A client that closes its side of a unary call without sending the request (the wire allows
    it) gets INVALID_ARGUMENT, not a call left open until its deadline."""
    HANDLED.clear()
    no_message = channel.stream_unary(method)  # the same wire as unary, with zero messages sent
    with _Lines() as lines:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await no_message(
                _stream_of(), metadata=(*as_tenant("ten_m", ("write",)), ("x-request-id", "req-none")), timeout=20
            )
        entries = await lines.settled(request_id="req-none")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.code()
    assert error_reason(caught.value) == "REQUEST_MESSAGE_MISSING"
    assert HANDLED == []
    assert [e["status"] for e in entries if e.get("request_id") == "req-none"] == ["INVALID_ARGUMENT"]
    # The control: the same method with its one message is served.
    good = (
        conversation_service_pb2.SendMessageRequest(session="sessions/s1", content="hi").SerializeToString()
        if method.endswith("Send")
        else b""
    )
    await no_message(_stream_of(good), metadata=as_tenant("ten_m", ("write",)), timeout=20)


async def test_malformed_message_in_a_client_stream_is_invalid_argument(channel, as_tenant):
    HANDLED.clear()
    good = conversation_service_pb2.StreamVoiceTurnRequest(
        turn=conversation_service_pb2.VoiceTurnStart(session="sessions/s1", content="hello")
    ).SerializeToString()
    with _Lines() as lines:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call = channel.stream_stream("/test.Probe/SendEach")(
                _stream_of(good, MALFORMED[0], good),
                metadata=(*as_tenant("ten_m", ("write",)), ("x-request-id", "req-bad-stream")),
            )
            [reply async for reply in call]
        entries = await lines.settled(request_id="req-bad-stream")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "INVALID_REQUEST_BODY"
    assert len(HANDLED) == 1  # the good first message only
    assert [e["status"] for e in entries if e.get("request_id") == "req-bad-stream"] == ["INVALID_ARGUMENT"]


async def test_malformed_health_check_is_invalid_argument_and_a_good_one_is_quiet(channel):
    with _Lines() as lines:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(MALFORMED[1])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ok = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="test.Probe"))
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        entries = await lines.settled(method="/grpc.health.v1.Health/Check")
    assert [(e["method"], e["status"]) for e in entries if e.get("method", "").startswith("/grpc.")] == [
        ("/grpc.health.v1.Health/Check", "INVALID_ARGUMENT")
    ]


async def test_health_watch_still_streams_through_the_guard(channel):
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="test.Probe"))
    first = await call.read()
    call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("content", "problem"),
    [("poem\u0000please", "NUL"), ("x" * 1_000_001, "at most 1000000 characters")],
)
async def test_unstorable_text_is_refused_before_the_handler(channel, as_tenant, content, problem):
    HANDLED.clear()
    request = conversation_service_pb2.SendMessageRequest(session="sessions/s1", content=content)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/test.Probe/Send")(
            request.SerializeToString(), metadata=as_tenant("ten_t", ("write",))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "INVALID_ARGUMENT"
    status = rpc_status.from_call(caught.value)
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details)
    assert [v.field for v in bad_request.field_violations] == ["content"]
    assert problem in bad_request.field_violations[0].description
    assert HANDLED == []
    # What the error echoes stays small whatever the input's size.
    assert len(caught.value.details()) < 1000


async def test_unstorable_text_in_a_client_stream_and_a_good_request_passes(channel, as_tenant):
    HANDLED.clear()
    ok = conversation_service_pb2.SendMessageRequest(session="sessions/s1", content="poem please")
    await channel.unary_unary("/test.Probe/Send")(ok.SerializeToString(), metadata=as_tenant("ten_t", ("write",)))
    assert [r.content for r in HANDLED] == ["poem please"]
    HANDLED.clear()
    bad = conversation_service_pb2.StreamVoiceTurnRequest(
        turn=conversation_service_pb2.VoiceTurnStart(
            session="sessions/s\u0000", content="hi", voice=conversation_service_pb2.VoiceTurn(speech_provider="p")
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = channel.stream_stream("/test.Probe/SendEach")(
            _stream_of(bad.SerializeToString()), metadata=as_tenant("ten_t", ("write",))
        )
        [reply async for reply in call]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details)
    assert [v.field for v in bad_request.field_violations] == ["turn.session"]
    assert HANDLED == []
