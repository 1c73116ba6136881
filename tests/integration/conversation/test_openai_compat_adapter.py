"""The OpenAI-compatible adapter against a real HTTP server on loopback
(loopback_http.LoopbackServer); each test tells it how to answer."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import httpx
import pytest

from tests.integration.conversation.loopback_http import (
    Handler,
    Received,
    drain,
    event_stream,
    failure_of,
    free_port,
    hang,
    head,
    loopback_server,
    raw,
    reply,
)
from vocalbridge_common.vocabulary import AttemptOutcome
from vocalbridge_conversation.delivery import BreakerRegistry, DeliveryEngine, RetryPolicy
from vocalbridge_conversation.providers import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    OpenAICompatibleProvider,
    ProviderRegistry,
    count_prompt_tokens,
    count_tokens,
)
from vocalbridge_conversation.providers.http_transport import parse_retry_after

API_KEY = "sk-test-0123456789"
REQUEST = CompletionRequest(
    model="gpt-test",
    messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there")),
    temperature=0.3,
    top_p=0.9,
    max_output_tokens=64,
)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Handler:
    return reply(status, {"error": {"message": message, "type": "test_error"}}, headers)


def completion_body(text="Hi! How can I help?", finish_reason="stop", usage=(12, 7)):
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return body


def sse(events: list, pause: float = 0.0, then_hang: bool = False) -> Handler:
    """Server-sent events: each item a JSON chunk (dict), a raw data string, or a
    comment line (a string starting with ":")."""
    return event_stream([_frame(event) for event in events], pause, then_hang)


def _frame(event) -> str:
    if isinstance(event, str) and event.startswith(":"):
        return f"{event}\n\n"
    return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"


def chunk(content=None, finish_reason=None, role=None):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-test-2024",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


USAGE_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "model": "gpt-test-2024",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


@pytest.fixture
async def server():
    async with loopback_server("/v1") as chat:
        yield chat


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def provider(server, client):
    return OpenAICompatibleProvider("myllm", server.base_url, API_KEY, "default-model", client)


async def test_completion_text_usage_and_the_request_sent(server, provider):
    server.handlers = [reply(200, completion_body())]

    completion = await provider.complete(REQUEST, timeout=2.0)

    assert completion == Completion("Hi! How can I help?", 12, 7, "gpt-test-2024", truncated=False)
    (received,) = server.received
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {API_KEY}"
    assert received.headers["content-type"] == "application/json"
    assert received.json == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 64,
    }


async def test_defaults_are_left_to_the_server_and_the_default_model_is_used(server, client):
    server.handlers = [reply(200, completion_body(finish_reason="length"))]
    provider = OpenAICompatibleProvider("local", server.base_url + "/", None, "llama-3", client)

    completion = await provider.complete(CompletionRequest("", REQUEST.messages, None, None, None), timeout=2.0)

    assert completion.truncated
    body = server.received[0].json
    assert body["model"] == "llama-3" and set(body) == {"model", "messages"}
    assert "authorization" not in server.received[0].headers
    assert server.received[0].path == "/v1/chat/completions"


async def test_missing_usage_is_estimated_with_the_gateway_tokenizer(server, provider):
    server.handlers = [reply(200, completion_body(text="Sure, here you go.", usage=None))]
    completion = await provider.complete(REQUEST, timeout=2.0)
    assert completion.prompt_tokens == count_prompt_tokens(REQUEST.messages)
    assert completion.completion_tokens == count_tokens("Sure, here you go.") == 6


async def test_streaming_yields_deltas_then_usage(server, provider):
    server.handlers = [
        sse(
            [
                chunk(role="assistant", content=""),
                chunk("Hel"),
                chunk("lo"),
                chunk(" there"),
                chunk(finish_reason="stop"),
                USAGE_CHUNK,
                "[DONE]",
            ],
            pause=0.005,
        )
    ]

    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))

    assert failure is None
    assert deltas == ["Hel", "lo", " there"]
    assert final == Completion("Hello there", 12, 3, "gpt-test-2024", truncated=False)
    body = server.received[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["temperature"] == 0.3
    assert server.received[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_streaming_without_usage_estimates_it_and_reports_truncation(server, provider):
    server.handlers = [sse([": keep-alive", chunk("one two"), chunk(finish_reason="length"), "[DONE]"])]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert failure is None and deltas == ["one two"]
    assert (final.completion_tokens, final.prompt_tokens, final.truncated) == (
        2,
        count_prompt_tokens(REQUEST.messages),
        True,
    )


async def test_rate_limited_with_retry_after_seconds(server, provider):
    server.handlers = [error(429, "slow down", headers={"Retry-After": "2"})]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.RATE_LIMITED and failure.kind.retryable
    assert failure.retry_after == 2.0
    assert "429" in failure.message and "slow down" in failure.message


async def test_rate_limited_with_retry_after_as_an_http_date(server, provider):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.handlers = [error(429, "slow down", headers={"Retry-After": when})]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert 27 <= failure.retry_after <= 30


async def test_rate_limited_while_streaming(server, provider):
    server.handlers = [error(429, "slow down", headers={"Retry-After": "1.5"})]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert (deltas, final) == ([], None)
    assert failure.kind is FailureKind.RATE_LIMITED and failure.retry_after == 1.5


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"}), now) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "1"}), now) == 0.25
    assert parse_retry_after(httpx.Headers({"Retry-After": email.utils.formatdate(now + 12, usegmt=True)}), now) == 12.0
    assert parse_retry_after(httpx.Headers({"Retry-After": email.utils.formatdate(now - 60, usegmt=True)}), now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "nan"}), now) is None
    assert parse_retry_after(httpx.Headers({}), now) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, FailureKind.UNAVAILABLE),
        (502, FailureKind.UNAVAILABLE),
        (503, FailureKind.UNAVAILABLE),
        (408, FailureKind.UNAVAILABLE),
        (409, FailureKind.UNAVAILABLE),
        (400, FailureKind.BAD_REQUEST),
        (404, FailureKind.BAD_REQUEST),
        (422, FailureKind.BAD_REQUEST),
        (401, FailureKind.AUTHENTICATION),
        (403, FailureKind.AUTHENTICATION),
    ],
)
async def test_status_codes_are_classified(server, provider, status, kind):
    server.handlers = [error(status, f"upstream says {status}")]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is kind
    assert f"HTTP {status}" in failure.message and f"upstream says {status}" in failure.message
    assert API_KEY not in failure.message


async def test_unavailable_may_carry_retry_after(server, provider):
    server.handlers = [raw(503, b"overloaded", content_type="text/plain", headers={"Retry-After": "1"})]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE and failure.retry_after == 1.0
    assert "overloaded" in failure.message


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b'{"choices": []}',
        b'{"object": "chat.completion"}',
        b'{"choices": [{"message": {"content": 42}}]}',
        b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "many"}}',
        b"[1, 2, 3]",
    ],
)
async def test_malformed_replies_are_provider_errors(server, provider, body):
    server.handlers = [raw(200, body)]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.PROVIDER_ERROR and failure.kind.retryable


@pytest.mark.parametrize(
    "events",
    [
        [chunk("ok"), "{not json"],
        [chunk("ok"), {"error": {"message": "model crashed"}}],
        [chunk("ok")],  # the stream ends with neither finish_reason nor [DONE]
    ],
)
async def test_malformed_streams_are_provider_errors(server, provider, events):
    server.handlers = [sse(events)]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert deltas == ["ok"] and final is None
    assert failure.kind is FailureKind.PROVIDER_ERROR


async def test_a_server_that_never_answers_times_out_within_the_timeout(server, provider):
    server.handlers = [hang]
    began = time.monotonic()
    failure = await failure_of(provider.complete(REQUEST, timeout=0.2))
    elapsed = time.monotonic() - began
    assert failure.kind is FailureKind.TIMEOUT
    assert 0.18 <= elapsed < 1.0


async def test_a_stream_that_stalls_times_out_within_the_timeout(server, provider):
    server.handlers = [sse([chunk("first")], then_hang=True)]
    began = time.monotonic()
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=0.2))
    assert time.monotonic() - began < 1.0
    assert deltas == ["first"] and final is None
    assert failure.kind is FailureKind.TIMEOUT


async def test_a_slowly_trickling_stream_is_bounded_by_the_overall_timeout(server, provider):
    # Every read succeeds within the per-read timeout, but the whole reply takes too long.
    # The whole stream would take 10 s; the bound is far below that even on a loaded machine.
    server.handlers = [sse([chunk(str(i)) for i in range(500)], pause=0.02)]
    began = time.monotonic()
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=0.25))
    assert time.monotonic() - began < 5.0
    assert failure.kind is FailureKind.TIMEOUT and len(deltas) < 500 and final is None


async def test_connection_refused_is_unavailable(client):
    provider = OpenAICompatibleProvider("gone", f"http://127.0.0.1:{free_port()}/v1", API_KEY, "m", client)
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE and "gone unreachable" in failure.message
    _deltas, _final, stream_failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert stream_failure.kind is FailureKind.UNAVAILABLE


async def test_a_connection_dropped_mid_reply_is_unavailable(server, provider):
    async def drop(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, "application/json", length=500) + b'{"choices": [')

    server.handlers = [drop]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE


async def test_delivery_engine_retries_a_real_endpoint(server, provider):
    server.handlers = [error(503, "warming up"), reply(200, completion_body("Ready now."))]
    engine = DeliveryEngine(
        ProviderRegistry([provider]),
        RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, attempt_timeout=2.0),
        BreakerRegistry(),
    )
    result = await engine.deliver(REQUEST, "myllm", None, deadline=None)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]
    assert result.completion.text == "Ready now." and result.model == "gpt-test-2024"
    assert len(server.received) == 2
