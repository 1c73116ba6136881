"""BillingService over gRPC: protobuf ⇄ domain, nothing else. The tenant comes from
the verified identity of the call and is handed to the use cases."""

from __future__ import annotations

from grpc.aio import ServicerContext

from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import billing_service_pb2_grpc
from vocalbridge_billing.presenters import (
    event_from_proto,
    event_to_proto,
    grouping_of,
    list_query,
    performance_query,
    provider_to_proto,
    summary_query,
    totals_to_proto,
)
from vocalbridge_billing.service.analytics import AnalyticsService
from vocalbridge_billing.service.ledger import LedgerService
from vocalbridge_billing.service.prices import PriceService
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.price_protos import price_to_proto


class BillingServicer(billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(self, ledger: LedgerService, analytics: AnalyticsService, prices: PriceService) -> None:
        self._ledger = ledger
        self._analytics = analytics
        self._prices = prices

    async def RecordUsage(
        self, request: pb.RecordUsageRequest, context: ServicerContext[pb.RecordUsageRequest, pb.RecordUsageResponse]
    ) -> pb.RecordUsageResponse:
        # The caller is a service identity (scope `internal`, checked by the
        # interceptor); each event names its own tenant.
        result = await self._ledger.record_usage([event_from_proto(event) for event in request.events])
        return pb.RecordUsageResponse(accepted_count=result.accepted, duplicate_count=result.duplicates)

    async def ListUsageEvents(
        self,
        request: pb.ListUsageEventsRequest,
        context: ServicerContext[pb.ListUsageEventsRequest, pb.ListUsageEventsResponse],
    ) -> pb.ListUsageEventsResponse:
        page = await self._analytics.list_usage_events(
            current_tenant_id(), list_query(request), request.page_size, request.page_token
        )
        return pb.ListUsageEventsResponse(
            usage_events=[event_to_proto(event) for event in page.items], next_page_token=page.next_page_token
        )

    async def GetUsageSummary(
        self,
        request: pb.GetUsageSummaryRequest,
        context: ServicerContext[pb.GetUsageSummaryRequest, pb.GetUsageSummaryResponse],
    ) -> pb.GetUsageSummaryResponse:
        summary = await self._analytics.usage_summary(
            current_tenant_id(), summary_query(request), grouping_of(request.group_by)
        )
        return pb.GetUsageSummaryResponse(
            totals=totals_to_proto(summary.totals),
            groups=[pb.UsageGroup(key=key, totals=totals_to_proto(totals)) for key, totals in summary.groups],
        )

    async def GetProviderPerformance(
        self,
        request: pb.GetProviderPerformanceRequest,
        context: ServicerContext[pb.GetProviderPerformanceRequest, pb.GetProviderPerformanceResponse],
    ) -> pb.GetProviderPerformanceResponse:
        stats = await self._analytics.provider_performance(current_tenant_id(), performance_query(request))
        return pb.GetProviderPerformanceResponse(providers=[provider_to_proto(s) for s in stats])

    async def ListPrices(
        self, request: pb.ListPricesRequest, context: ServicerContext[pb.ListPricesRequest, pb.ListPricesResponse]
    ) -> pb.ListPricesResponse:
        # The price list is global: any identity with the read scope may list it,
        # a service identity without a tenant included.
        page = await self._prices.list_prices(request.provider, request.page_size, request.page_token)
        return pb.ListPricesResponse(
            prices=[price_to_proto(price) for price in page.items], next_page_token=page.next_page_token
        )
