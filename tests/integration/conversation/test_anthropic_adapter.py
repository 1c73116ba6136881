"""The Anthropic Messages adapter against a real HTTP server on loopback
(loopback_http.LoopbackServer); each test tells it how to answer, in the shapes
Anthropic's API documents: message bodies, SSE event streams, and error bodies
`{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

import asyncio
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
from vocalbridge_conversation.delivery import BreakerRegistry, DeliveryEngine, Done, Restart, RetryPolicy
from vocalbridge_conversation.providers import (
    AnthropicProvider,
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    ProviderRegistry,
    count_prompt_tokens,
    count_tokens,
)
from vocalbridge_conversation.providers.anthropic import DEFAULT_MAX_TOKENS, OPENING_USER_TURN

API_KEY = "sk-ant-test-0123456789"
MODEL = "claude-test-2025"
REQUEST = CompletionRequest(
    model="claude-test",
    messages=(
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hello there"),
        ChatMessage("assistant", "Hi."),
        ChatMessage("user", "What is 2+2?"),
        ChatMessage("user", "Answer in digits."),
    ),
    temperature=0.3,
    top_p=0.9,
    max_output_tokens=64,
)


def error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Handler:
    return reply(status, {"type": "error", "error": {"type": error_type, "message": message}}, headers)


def message_body(content=None, stop_reason="end_turn", usage=None):
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content if content is not None else [{"type": "text", "text": "4"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 21, "output_tokens": 2},
    }


def sse(events: list, pause: float = 0.0, then_hang: bool = False) -> Handler:
    """Server-sent events as Anthropic sends them (`event: <type>` then `data: <json>`);
    a string item is sent as a raw data line."""
    return event_stream([_frame(event) for event in events], pause, then_hang)


def _frame(event) -> str:
    if isinstance(event, str):
        return f"data: {event}\n\n"
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def message_start(input_tokens=25):
    usage = {"input_tokens": input_tokens, "output_tokens": 1}
    message = {"id": "msg_01", "type": "message", "role": "assistant", "model": MODEL, "content": []}
    return {"type": "message_start", "message": {**message, "stop_reason": None, "usage": usage}}


BLOCK_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
BLOCK_STOP = {"type": "content_block_stop", "index": 0}
PING = {"type": "ping"}
MESSAGE_STOP = {"type": "message_stop"}


def text_delta(text):
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def message_delta(output_tokens=3, stop_reason="end_turn"):
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def error_event(error_type, message):
    return {"type": "error", "error": {"type": error_type, "message": message}}


def stream_of(*texts, input_tokens=25, output_tokens=3, stop_reason="end_turn"):
    return [
        message_start(input_tokens),
        BLOCK_START,
        PING,
        *(text_delta(text) for text in texts),
        BLOCK_STOP,
        message_delta(output_tokens, stop_reason),
        MESSAGE_STOP,
    ]


@pytest.fixture
async def server():
    async with loopback_server() as messages:
        yield messages


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def provider(server, client):
    return AnthropicProvider("claude", server.base_url, API_KEY, "claude-default", client)


# --- Success --------------------------------------------------------------------------------


async def test_completion_text_usage_and_the_request_sent(server, provider):
    content = [
        {"type": "text", "text": "2+2 = "},
        {"type": "thinking", "thinking": "easy"},
        {"type": "text", "text": "4"},
    ]
    server.handlers = [reply(200, message_body(content, usage={"input_tokens": 21, "output_tokens": 5}))]

    completion = await provider.complete(REQUEST, timeout=2.0)

    assert completion == Completion("2+2 = 4", 21, 5, MODEL, truncated=False)
    (received,) = server.received
    assert (received.method, received.path) == ("POST", "/v1/messages")
    assert received.headers["x-api-key"] == API_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["content-type"] == "application/json"
    assert "authorization" not in received.headers
    # The system prompt is top-level; the two consecutive user messages are one user turn.
    assert received.json == {
        "model": "claude-test",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "What is 2+2?\n\nAnswer in digits."},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
    }


async def test_defaults_fill_what_the_agent_leaves_unset_and_max_tokens_means_truncated(server, client):
    server.handlers = [reply(200, message_body(stop_reason="max_tokens"))]
    provider = AnthropicProvider("claude", server.base_url + "/", API_KEY, "claude-default", client)
    request = CompletionRequest(
        "", (ChatMessage("assistant", "Welcome!"), ChatMessage("user", "hi")), temperature=1.7, top_p=None
    )

    completion = await provider.complete(request, timeout=2.0)

    assert completion.truncated
    body = server.received[0].json
    assert server.received[0].path == "/v1/messages"
    assert body["model"] == "claude-default"
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS  # Anthropic requires it
    assert body["temperature"] == 1.0  # Anthropic's scale ends at 1
    assert "system" not in body and "top_p" not in body and "stream" not in body
    assert body["messages"] == [
        {"role": "user", "content": OPENING_USER_TURN},
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "hi"},
    ]


async def test_prompt_cache_reads_and_writes_count_as_input(server, provider):
    usage = {"input_tokens": 4, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 2}
    server.handlers = [reply(200, message_body(usage=usage))]
    completion = await provider.complete(REQUEST, timeout=2.0)
    assert (completion.prompt_tokens, completion.completion_tokens) == (1104, 2)


async def test_missing_usage_is_estimated_with_the_gateway_tokenizer(server, provider):
    body = message_body([{"type": "text", "text": "Sure, here you go."}])
    del body["usage"]
    server.handlers = [reply(200, body)]
    completion = await provider.complete(REQUEST, timeout=2.0)
    assert completion.prompt_tokens == count_prompt_tokens(REQUEST.messages)
    assert completion.completion_tokens == count_tokens("Sure, here you go.") == 6


# --- Streaming ------------------------------------------------------------------------------


async def test_streaming_yields_deltas_then_usage_from_message_start_and_message_delta(server, provider):
    server.handlers = [sse(stream_of("Hel", "lo", " there"), pause=0.005)]

    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))

    assert failure is None
    assert deltas == ["Hel", "lo", " there"]
    assert final == Completion("Hello there", 25, 3, MODEL, truncated=False)
    body = server.received[0].json
    assert body["stream"] is True and body["system"] == "Be brief." and body["max_tokens"] == 64
    assert server.received[0].headers["x-api-key"] == API_KEY


async def test_a_stream_stopped_by_max_tokens_is_truncated(server, provider):
    server.handlers = [sse(stream_of("one", " two", output_tokens=64, stop_reason="max_tokens"))]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert failure is None and deltas == ["one", " two"]
    assert (final.text, final.completion_tokens, final.truncated) == ("one two", 64, True)


async def test_a_message_delta_that_restates_the_input_is_believed(server, provider):
    events = stream_of("ok")
    events[-2] = {**message_delta(7), "usage": {"input_tokens": 30, "cache_read_input_tokens": 10, "output_tokens": 7}}
    server.handlers = [sse(events)]
    _deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert failure is None and (final.prompt_tokens, final.completion_tokens) == (40, 7)


# --- HTTP errors ----------------------------------------------------------------------------


async def test_rate_limited_with_retry_after(server, provider):
    server.handlers = [
        error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "7"})
    ]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.RATE_LIMITED and failure.kind.retryable
    assert failure.retry_after == 7.0
    assert "HTTP 429 rate_limit_error: Number of requests" in failure.message


async def test_rate_limited_while_streaming(server, provider):
    server.handlers = [error(429, "rate_limit_error", "slow down", {"retry-after": "2"})]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert (deltas, final) == ([], None)
    assert failure.kind is FailureKind.RATE_LIMITED and failure.retry_after == 2.0


async def test_overloaded_is_unavailable_and_retryable(server, provider):
    server.handlers = [error(529, "overloaded_error", "Overloaded")]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE and failure.kind.retryable
    assert failure.retry_after is None
    assert "HTTP 529 overloaded_error: Overloaded" in failure.message
    _deltas, _final, stream_failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert stream_failure.kind is FailureKind.UNAVAILABLE


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (500, "api_error", FailureKind.UNAVAILABLE),
        (503, "api_error", FailureKind.UNAVAILABLE),
        (504, "timeout_error", FailureKind.UNAVAILABLE),
        (400, "invalid_request_error", FailureKind.BAD_REQUEST),
        (404, "not_found_error", FailureKind.BAD_REQUEST),
        (413, "request_too_large", FailureKind.BAD_REQUEST),
        (401, "authentication_error", FailureKind.AUTHENTICATION),
        (402, "billing_error", FailureKind.AUTHENTICATION),
        (403, "permission_error", FailureKind.AUTHENTICATION),
    ],
)
async def test_status_codes_are_classified(server, provider, status, error_type, kind):
    server.handlers = [error(status, error_type, f"upstream says {status}")]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is kind
    assert kind.retryable is (kind is FailureKind.UNAVAILABLE)
    assert f"HTTP {status} {error_type}: upstream says {status}" in failure.message
    assert API_KEY not in failure.message


async def test_an_invalid_request_is_refused_and_its_long_message_is_clipped(server, provider):
    server.handlers = [error(400, "invalid_request_error", "messages: " + "x" * 5000)]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.BAD_REQUEST and not failure.kind.retryable
    assert "invalid_request_error: messages: xxx" in failure.message
    assert len(failure.message) < 400 and failure.message.endswith("…")


async def test_an_error_body_that_is_not_anthropics_shape_is_still_reported(server, provider):
    server.handlers = [raw(502, b"<html>bad gateway</html>", content_type="text/html", headers={"retry-after": "1"})]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE and failure.retry_after == 1.0
    assert "bad gateway" in failure.message


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"type": "message"}',
        b'{"content": "4"}',
        b'{"content": [{"type": "text", "text": 4}]}',
        b'{"content": [{"text": "no type"}]}',
        b'{"content": [{"type": "text", "text": "4"}], "usage": {"input_tokens": "many", "output_tokens": 1}}',
        b'{"content": [{"type": "text", "text": "4"}], "usage": {"output_tokens": 1}}',
        b'{"content": [{"type": "text", "text": "4"}], "usage": {"input_tokens": -1, "output_tokens": 1}}',
    ],
)
async def test_malformed_bodies_are_provider_errors(server, provider, body):
    server.handlers = [raw(200, body)]
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.PROVIDER_ERROR and failure.kind.retryable


# --- Errors in a stream ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", FailureKind.UNAVAILABLE),
        ("api_error", FailureKind.UNAVAILABLE),
        ("rate_limit_error", FailureKind.RATE_LIMITED),
        ("invalid_request_error", FailureKind.BAD_REQUEST),
        ("something_new_error", FailureKind.PROVIDER_ERROR),
    ],
)
async def test_an_error_event_mid_stream_fails_the_attempt_by_its_type(server, provider, error_type, kind):
    server.handlers = [sse([message_start(), BLOCK_START, text_delta("par"), error_event(error_type, "went wrong")])]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert deltas == ["par"] and final is None
    assert failure.kind is kind
    assert error_type in failure.message and "went wrong" in failure.message


@pytest.mark.parametrize(
    "events",
    [
        [message_start(), text_delta("ok"), "{not json"],
        [message_start(), text_delta("ok"), "[1]"],
        [message_start(), text_delta("ok"), {"type": "content_block_delta", "delta": {"type": "text_delta"}}],
        [message_start(), text_delta("ok")],  # ends with neither a stop reason nor message_stop
        [BLOCK_START, text_delta("ok")],  # the same, and no usage that could fail first
        [message_start(), text_delta("ok"), {"type": "message_delta", "delta": {}, "usage": {}}, MESSAGE_STOP],
    ],
)
async def test_malformed_streams_are_provider_errors(server, provider, events):
    server.handlers = [sse(events)]
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert deltas == ["ok"] and final is None
    assert failure.kind is FailureKind.PROVIDER_ERROR


# --- Timeouts and the network ---------------------------------------------------------------


async def test_a_server_that_never_answers_times_out_within_the_timeout(server, provider):
    server.handlers = [hang]
    began = time.monotonic()
    failure = await failure_of(provider.complete(REQUEST, timeout=0.2))
    elapsed = time.monotonic() - began
    assert failure.kind is FailureKind.TIMEOUT
    assert 0.18 <= elapsed < 1.5


async def test_a_stream_that_stalls_times_out(server, provider):
    server.handlers = [sse([message_start(), text_delta("first")], then_hang=True)]
    began = time.monotonic()
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=0.2))
    assert time.monotonic() - began < 1.5
    assert deltas == ["first"] and final is None
    assert failure.kind is FailureKind.TIMEOUT


async def test_a_slowly_trickling_reply_is_bounded_by_the_overall_timeout(server, provider):
    # Every read succeeds within the per-read timeout, but the whole reply takes too long.
    body = json.dumps(message_body()).encode()

    async def trickle(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, "application/json", length=len(body)))
        for index in range(len(body)):
            writer.write(body[index : index + 1])
            await writer.drain()
            await asyncio.sleep(0.05)

    # The whole reply would take several seconds; the bound is far below that even when loaded.
    assert len(body) * 0.05 > 8
    server.handlers = [trickle]
    began = time.monotonic()
    failure = await failure_of(provider.complete(REQUEST, timeout=0.25))
    assert time.monotonic() - began < 4.0
    assert failure.kind is FailureKind.TIMEOUT


async def test_a_slowly_trickling_stream_is_bounded_by_the_overall_timeout(server, provider):
    # The whole stream would take 10 s; the bound is far below that even on a loaded machine.
    server.handlers = [sse([message_start()] + [text_delta(str(i)) for i in range(500)], pause=0.02)]
    began = time.monotonic()
    deltas, final, failure = await drain(provider.stream(REQUEST, timeout=0.25))
    assert time.monotonic() - began < 5.0
    assert failure.kind is FailureKind.TIMEOUT and len(deltas) < 500 and final is None


async def test_connection_refused_is_unavailable(client):
    provider = AnthropicProvider("gone", f"http://127.0.0.1:{free_port()}", API_KEY, "m", client)
    failure = await failure_of(provider.complete(REQUEST, timeout=2.0))
    assert failure.kind is FailureKind.UNAVAILABLE and "gone unreachable" in failure.message
    _deltas, _final, stream_failure = await drain(provider.stream(REQUEST, timeout=2.0))
    assert stream_failure.kind is FailureKind.UNAVAILABLE


# --- Through the delivery engine ------------------------------------------------------------


def engine_for(*providers, sleep=None) -> DeliveryEngine:
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, attempt_timeout=2.0)
    if sleep is None:
        return DeliveryEngine(ProviderRegistry(providers), policy, BreakerRegistry())
    return DeliveryEngine(ProviderRegistry(providers), policy, BreakerRegistry(), sleep=sleep)


@pytest.fixture
async def fallback_server():
    async with loopback_server() as messages:
        yield messages


async def test_delivery_retries_overloaded_then_falls_back_after_repeated_overloads(
    server, fallback_server, provider, client
):
    fallback = AnthropicProvider("claude-backup", fallback_server.base_url, API_KEY, "m", client)
    engine = engine_for(provider, fallback)
    fallback_server.handlers = [reply(200, message_body([{"type": "text", "text": "From the backup."}]))]

    # One overload: the same provider is tried again and answers.
    server.handlers = [error(529, "overloaded_error", "Overloaded"), reply(200, message_body())]
    result = await engine.deliver(REQUEST, "claude", "claude-backup", deadline=None)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]
    assert (result.provider, result.fallback_used, result.completion.text) == ("claude", False, "4")
    assert len(server.received) == 2 and fallback_server.received == []

    # Overloaded every time: all attempts on the primary, then the fallback.
    server.received.clear()
    server.handlers = [error(529, "overloaded_error", "Overloaded")]
    result = await engine.deliver(REQUEST, "claude", "claude-backup", deadline=None)
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("claude", AttemptOutcome.UNAVAILABLE),
        ("claude", AttemptOutcome.UNAVAILABLE),
        ("claude", AttemptOutcome.UNAVAILABLE),
        ("claude-backup", AttemptOutcome.SUCCESS),
    ]
    assert "overloaded_error" in result.attempts[0].error_message
    assert (result.provider, result.fallback_used, result.completion.text) == (
        "claude-backup",
        True,
        "From the backup.",
    )
    assert len(server.received) == 3 and len(fallback_server.received) == 1


async def test_delivery_never_retries_an_invalid_request(server, fallback_server, provider, client):
    fallback = AnthropicProvider("claude-backup", fallback_server.base_url, API_KEY, "m", client)
    server.handlers = [error(400, "invalid_request_error", "max_tokens: too large"), reply(200, message_body())]
    fallback_server.handlers = [reply(200, message_body())]

    result = await engine_for(provider, fallback).deliver(REQUEST, "claude", "claude-backup", deadline=None)

    assert [(a.provider, a.outcome) for a in result.attempts] == [("claude", AttemptOutcome.BAD_REQUEST)]
    assert result.completion is None
    assert len(server.received) == 1 and fallback_server.received == []


async def test_delivery_waits_at_least_the_retry_after_of_a_rate_limit(server, provider):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    # 0.005 s: within the policy's backoff cap, so the engine waits rather than moving on.
    server.handlers = [
        error(429, "rate_limit_error", "slow down", {"retry-after": "0.005"}),
        reply(200, message_body()),
    ]
    result = await engine_for(provider, sleep=sleep).deliver(REQUEST, "claude", None, deadline=None)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.RATE_LIMITED, AttemptOutcome.SUCCESS]
    assert len(waits) == 1 and waits[0] >= 0.005


async def test_a_stream_overloaded_midway_is_restarted_on_the_next_attempt(server, provider):
    server.handlers = [
        sse([message_start(), BLOCK_START, text_delta("Partial"), error_event("overloaded_error", "Overloaded")]),
        sse(stream_of("Whole ", "reply.")),
    ]
    events = [event async for event in engine_for(provider).deliver_stream(REQUEST, "claude", None, deadline=None)]

    assert [type(event).__name__ for event in events] == ["Delta", "Restart", "Delta", "Delta", "Done"]
    assert isinstance(events[1], Restart) and isinstance(events[-1], Done)
    result = events[-1].result
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]
    assert result.completion == Completion("Whole reply.", 25, 3, MODEL, truncated=False)
