"""Helpers for the billing integration tests: settings, usage events built the
way the conversation service builds them, and unpacking rich error details."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import TEST_IDENTITY_SECRET
from tests.support import error_reason, violated_fields
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import delivery_pb2, session_pb2
from vocalbridge_billing.config import BillingSettings
from vocalbridge_billing.domain import LATENCY_RELATIVE_ERROR, histogram_percentile, latency_bucket, percentile_cont
from vocalbridge_common.config import Env
from vocalbridge_common.pricing import SEED_PRICES, Quantities, charge, select_prices

TEXT = session_pb2.CHANNEL_TEXT
VOICE = session_pb2.CHANNEL_VOICE
SUCCESS = delivery_pb2.ATTEMPT_OUTCOME_SUCCESS
UNAVAILABLE = delivery_pb2.ATTEMPT_OUTCOME_UNAVAILABLE
TIMEOUT = delivery_pb2.ATTEMPT_OUTCOME_TIMEOUT
CIRCUIT_OPEN = delivery_pb2.ATTEMPT_OUTCOME_CIRCUIT_OPEN


def settings_for(database_url: str) -> BillingSettings:
    """Production settings parsing, pointed at a test database and port 0."""
    return BillingSettings.from_env(
        Env(
            {
                "VB_IDENTITY_SECRET": TEST_IDENTITY_SECRET.decode(),
                "VB_BILLING_DATABASE_URL": database_url,
                "VB_BILLING_HOST": "127.0.0.1",
                "VB_BILLING_PORT": "0",
            }
        )
    )


def duration_ms(ms: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(ms * 1_000_000))
    return value


def attempt(provider: str, outcome=SUCCESS, latency_ms: float = 10.0) -> delivery_pb2.Attempt:
    return delivery_pb2.Attempt(
        provider=provider,
        outcome=outcome,
        latency=duration_ms(0 if outcome == CIRCUIT_OPEN else latency_ms),
        backoff=duration_ms(0),
        error_message="" if outcome == SUCCESS else "simulated failure",
    )


def usage_event(
    tenant_id: str,
    *,
    event_id: str | None = None,
    agent: str = "agents/agt_support",
    session: str = "sessions/ses_1",
    channel=TEXT,
    provider: str = "vendorA",
    model: str = "",
    prompt_tokens: int = 12,
    completion_tokens: int = 30,
    audio_seconds: float = 0.0,
    tts_characters: int = 0,
    event_time: datetime | None = None,
    attempts: list[delivery_pb2.Attempt] | None = None,
    fallback_used: bool = False,
    price_rows=SEED_PRICES,
    cost_micros: int | None = None,
) -> usage_event_pb2.UsageEvent:
    """An event priced the way the producer prices it: the shared function over `price_rows`."""
    event_id = event_id or f"evt-{uuid.uuid4().hex}"
    event_time = event_time or datetime.now(UTC) - timedelta(seconds=1)
    attempts = attempts if attempts is not None else [attempt(provider)]
    priced = charge(
        Quantities(prompt_tokens, completion_tokens, audio_seconds, tts_characters),
        select_prices(price_rows, provider, model, at=event_time),
    )
    event = usage_event_pb2.UsageEvent(
        name=f"usageEvents/{event_id}",
        tenant=f"tenants/{tenant_id}",
        agent=agent,
        agent_version=1,
        session=session,
        message=f"{session}/messages/msg_{event_id[-8:]}",
        channel=channel,
        provider=provider,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        audio_seconds=audio_seconds,
        tts_characters=tts_characters,
        cost_micros=priced.cost_micros if cost_micros is None else cost_micros,
        delivery=delivery_pb2.Delivery(
            provider=provider,
            model=model,
            fallback_used=fallback_used,
            attempts=attempts,
            latency=duration_ms(sum(a.latency.ToNanoseconds() for a in attempts) / 1e6),
        ),
    )
    for row in priced.prices_used:
        event.prices.add(name=f"prices/{row.price_id}")
    event.event_time.FromDatetime(event_time)
    return event


def estimated_percentile_ns(latencies_ns: list[int], fraction: float) -> int:
    """What GetProviderPerformance reports for these successful calls: the percentile
    estimated from their latency histogram (a bucket's latencies as its midpoint)."""
    counts: dict[int, int] = {}
    for latency in latencies_ns:
        counts[latency_bucket(latency)] = counts.get(latency_bucket(latency), 0) + 1
    return round(histogram_percentile(sorted(counts.items()), fraction) or 0)


def assert_percentile(reported: duration_pb2.Duration, latencies_ns: list[int], fraction: float) -> None:
    """`reported` is the documented estimate, and within the documented bound of the exact
    percentile (PostgreSQL's percentile_cont over the latencies), give or take rounding."""
    exact = percentile_cont(sorted(latencies_ns), fraction) or 0
    value = reported.ToNanoseconds()
    assert value == estimated_percentile_ns(latencies_ns, fraction), (value, exact)
    assert abs(value - exact) <= exact * LATENCY_RELATIVE_ERROR + 1, (value, exact)


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    fields: set[str]
    metadata: dict[str, str]


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in rpc_status.from_call(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return dict(info.metadata)
    return {}


async def expect_failure(call, code: grpc.StatusCode, reason: str | None = None) -> Failure:
    """Awaits `call`, which must fail with `code` (and ErrorInfo `reason`, if given)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    failure = Failure(error.code(), error_reason(error), violated_fields(error), error_metadata(error))
    assert failure.code == code, (failure, error.details())
    if reason is not None:
        assert failure.reason == reason, failure
    return failure
