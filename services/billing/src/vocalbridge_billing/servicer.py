"""BillingService RPCs: protobuf ⇄ service layer, nothing else."""

from __future__ import annotations

from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import billing_service_pb2_grpc, usage_event_pb2
from vocalbridge.conversation.v1 import delivery_pb2, session_pb2
from vocalbridge_billing.domain import AttemptDraft, DeliveryDraft, RecordedEvent, Totals, UsageEventDraft
from vocalbridge_billing.service import BillingService, UsageQuery
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.protoconv import from_timestamp, to_duration, to_timestamp

_OUTCOME_PREFIX = "ATTEMPT_OUTCOME_"


def _enum_name(enum, number: int, *, strip: str = "") -> str:
    """The name of a known enum number (without `strip`), or "" for unknown numbers."""
    try:
        return enum.Name(number).removeprefix(strip)
    except ValueError:
        return ""


def _unknown_or_name(enum, number: int) -> str:
    """ "" for 0 (unset), the value's name if known, a name no rule accepts otherwise."""
    if number == 0:
        return ""
    return _enum_name(enum, number) or f"#{number}"


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
                    outcome=_enum_name(delivery_pb2.AttemptOutcome, a.outcome, strip=_OUTCOME_PREFIX),
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
        channel=_enum_name(session_pb2.Channel, event.channel),
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


def event_to_proto(event: RecordedEvent) -> usage_event_pb2.UsageEvent:
    row = event.row
    message = usage_event_pb2.UsageEvent(
        name=f"usageEvents/{row.event_id}",
        tenant=f"tenants/{row.tenant_id}",
        agent=f"agents/{row.agent_id}",
        agent_version=row.agent_version,
        session=f"sessions/{row.session_id}",
        message=f"sessions/{row.session_id}/messages/{row.message_id}" if row.message_id else "",
        channel=session_pb2.Channel.Value(row.channel),
        provider=row.provider,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        audio_seconds=row.audio_millis / 1000,
        tts_characters=row.tts_characters,
        cost_micros=row.cost_micros,
        prices=[price_to_proto(price) for price in event.prices],
        event_time=to_timestamp(row.event_time),
        record_time=to_timestamp(row.record_time),
    )
    if row.delivery_provider or row.delivery_model or row.fallback_used or row.delivery_latency_ns or event.attempts:
        message.delivery.CopyFrom(
            delivery_pb2.Delivery(
                provider=row.delivery_provider,
                model=row.delivery_model,
                fallback_used=row.fallback_used,
                latency=to_duration(row.delivery_latency_ns),
                attempts=[
                    delivery_pb2.Attempt(
                        provider=a.provider,
                        outcome=delivery_pb2.AttemptOutcome.Value(_OUTCOME_PREFIX + a.outcome),
                        latency=to_duration(a.latency_ns),
                        backoff=to_duration(a.backoff_ns),
                        error_message=a.error_message,
                    )
                    for a in event.attempts
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


def _query(request, *, session: bool = False) -> UsageQuery:
    return UsageQuery(
        start=from_timestamp(request, "start_time"),
        end=from_timestamp(request, "end_time"),
        agent=request.agent,
        provider=getattr(request, "provider", ""),
        channel=_unknown_or_name(session_pb2.Channel, getattr(request, "channel", 0)),
        session=request.session if session else "",
    )


class BillingServicer(billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(self, service: BillingService) -> None:
        self._service = service

    async def RecordUsage(self, request, context):
        # The caller is a service identity (scope `internal`, checked by the
        # interceptor); each event names its own tenant.
        result = await self._service.record_usage([event_from_proto(event) for event in request.events])
        return pb.RecordUsageResponse(accepted_count=result.accepted, duplicate_count=result.duplicates)

    async def ListUsageEvents(self, request, context):
        page = await self._service.list_usage_events(
            current_tenant_id(), _query(request, session=True), request.page_size, request.page_token
        )
        return pb.ListUsageEventsResponse(
            usage_events=[event_to_proto(event) for event in page.items], next_page_token=page.next_page_token
        )

    async def GetUsageSummary(self, request, context):
        summary = await self._service.usage_summary(
            current_tenant_id(), _query(request), _unknown_or_name(pb.GroupBy, request.group_by)
        )
        return pb.GetUsageSummaryResponse(
            totals=totals_to_proto(summary.totals),
            groups=[pb.UsageGroup(key=key, totals=totals_to_proto(totals)) for key, totals in summary.groups],
        )

    async def GetProviderPerformance(self, request, context):
        stats = await self._service.provider_performance(current_tenant_id(), _query(request))
        return pb.GetProviderPerformanceResponse(
            providers=[
                pb.ProviderPerformance(
                    provider=s.provider,
                    attempts=s.attempts,
                    failed_attempts=s.failed_attempts,
                    failure_rate=s.failure_rate,
                    circuit_open_skips=s.circuit_open_skips,
                    turns_served=s.turns_served,
                    turns_started=s.turns_started,
                    turns_fallen_back=s.turns_fallen_back,
                    fallback_rate=s.fallback_rate,
                    latency_p50=to_duration(s.latency_p50_ns),
                    latency_p95=to_duration(s.latency_p95_ns),
                )
                for s in stats
            ]
        )

    async def ListPrices(self, request, context):
        # The price list is global: any identity with the read scope may list it,
        # a service identity without a tenant included.
        page = await self._service.list_prices(request.provider, request.page_size, request.page_token)
        return pb.ListPricesResponse(
            prices=[price_to_proto(price) for price in page.items], next_page_token=page.next_page_token
        )
