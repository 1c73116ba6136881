"""Protobuf ⇄ billing's domain values: what the servicer reads from requests and
builds into responses. No rules here; those live in the domain."""

from __future__ import annotations

from google.protobuf.message import Message

from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import delivery_pb2, session_pb2
from vocalbridge_billing.domain import (
    AGENTS,
    MESSAGES,
    SESSIONS,
    TENANTS,
    USAGE_EVENTS,
    AttemptDraft,
    DeliveryDraft,
    Grouping,
    ProviderStats,
    RecordedEvent,
    Totals,
    Unrecognized,
    UsageEventDraft,
    UsageQuery,
)
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.protoconv import from_timestamp, to_duration, to_timestamp
from vocalbridge_common.vocabulary import AttemptOutcome, Channel

# -- requests → domain ---------------------------------------------------------------


def event_from_proto(event: usage_event_pb2.UsageEvent) -> UsageEventDraft:
    delivery = None
    if event.HasField("delivery"):
        d = event.delivery
        delivery = DeliveryDraft(
            provider=d.provider,
            model=d.model,
            fallback_used=d.fallback_used,
            attempts=tuple(
                AttemptDraft(
                    provider=a.provider,
                    outcome=AttemptOutcome.from_proto(a.outcome),
                    latency_ns=a.latency.ToNanoseconds(),
                    backoff_ns=a.backoff.ToNanoseconds(),
                    error_message=a.error_message,
                )
                for a in d.attempts
            ),
            latency_ns=d.latency.ToNanoseconds(),
        )
    return UsageEventDraft(
        name=event.name,
        tenant=event.tenant,
        agent=event.agent,
        agent_version=event.agent_version,
        session=event.session,
        message=event.message,
        channel=Channel.from_proto(event.channel),
        provider=event.provider,
        model=event.model,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        audio_seconds=event.audio_seconds,
        tts_characters=event.tts_characters,
        cost_micros=event.cost_micros,
        price_names=tuple(price.name for price in event.prices),
        event_time=from_timestamp(event, "event_time"),
        delivery=delivery,
    )


def channel_filter(value: int) -> Channel | Unrecognized | None:
    """A request's channel filter: None when unset (any channel)."""
    if value == session_pb2.CHANNEL_UNSPECIFIED:
        return None
    return Channel.from_proto(value) or Unrecognized(value)


def grouping_of(value: int) -> Grouping | Unrecognized | None:
    """A summary's grouping: None when unset (totals only)."""
    if value == pb.GROUP_BY_UNSPECIFIED:
        return None
    if value not in pb.GroupBy.values():
        return Unrecognized(value)
    return Grouping(pb.GroupBy.Name(value))


def _usage_query(
    request: Message,
    agent: str,
    provider: str = "",
    channel: int = session_pb2.CHANNEL_UNSPECIFIED,
    session: str = "",
) -> UsageQuery:
    return UsageQuery(
        start=from_timestamp(request, "start_time"),
        end=from_timestamp(request, "end_time"),
        agent=agent,
        provider=provider,
        channel=channel_filter(channel),
        session=session,
    )


def list_query(request: pb.ListUsageEventsRequest) -> UsageQuery:
    return _usage_query(request, request.agent, request.provider, request.channel, request.session)


def summary_query(request: pb.GetUsageSummaryRequest) -> UsageQuery:
    return _usage_query(request, request.agent, request.provider, request.channel)


def performance_query(request: pb.GetProviderPerformanceRequest) -> UsageQuery:
    return _usage_query(request, request.agent)


# -- domain → responses -----------------------------------------------------------------


def event_to_proto(event: RecordedEvent) -> usage_event_pb2.UsageEvent:
    # Standalone speech usage (Transcribe, Synthesize) has no agent or session.
    session = f"{SESSIONS}/{event.session_id}" if event.session_id else ""
    message = usage_event_pb2.UsageEvent(
        name=f"{USAGE_EVENTS}/{event.event_id}",
        tenant=f"{TENANTS}/{event.tenant_id}",
        agent=f"{AGENTS}/{event.agent_id}" if event.agent_id else "",
        agent_version=event.agent_version,
        session=session,
        message=f"{session}/{MESSAGES}/{event.message_id}" if event.message_id else "",
        channel=event.channel.to_proto(),
        provider=event.provider,
        model=event.model,
        prompt_tokens=event.quantities.prompt_tokens,
        completion_tokens=event.quantities.completion_tokens,
        audio_seconds=event.quantities.audio_millis / 1000,
        tts_characters=event.quantities.tts_characters,
        cost_micros=event.cost_micros,
        prices=[price_to_proto(price) for price in event.prices],
        event_time=to_timestamp(event.event_time),
        record_time=to_timestamp(event.record_time),
    )
    delivery = event.delivery
    if delivery.sent:
        message.delivery.CopyFrom(
            delivery_pb2.Delivery(
                provider=delivery.provider,
                model=delivery.model,
                fallback_used=delivery.fallback_used,
                latency=to_duration(delivery.latency_ns),
                attempts=[
                    delivery_pb2.Attempt(
                        provider=a.provider,
                        outcome=a.outcome.to_proto(),
                        latency=to_duration(a.latency_ns),
                        backoff=to_duration(a.backoff_ns),
                        error_message=a.error_message,
                    )
                    for a in delivery.attempts
                ],
            )
        )
    return message


def totals_to_proto(totals: Totals) -> pb.UsageTotals:
    return pb.UsageTotals(
        turns=totals.turns,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        audio_seconds=totals.audio_millis / 1000,
        tts_characters=totals.tts_characters,
        cost_micros=totals.cost_micros,
    )


def provider_to_proto(stats: ProviderStats) -> pb.ProviderPerformance:
    return pb.ProviderPerformance(
        provider=stats.provider,
        attempts=stats.attempts,
        failed_attempts=stats.failed_attempts,
        failure_rate=stats.failure_rate,
        circuit_open_skips=stats.circuit_open_skips,
        turns_served=stats.turns_served,
        turns_started=stats.turns_started,
        turns_fallen_back=stats.turns_fallen_back,
        fallback_rate=stats.fallback_rate,
        latency_p50=to_duration(stats.latency_p50_ns),
        latency_p95=to_duration(stats.latency_p95_ns),
    )
