"""The usage reports of a tenant: the events (ListUsageEvents), totals grouped by
day, agent, provider or channel (GetUsageSummary), and how each provider performed
(GetProviderPerformance). Each runs in one tenant transaction.

The summary and the provider performance read the whole UTC days of their range from the
daily rollups and the partial days at its edges from the ledger (domain.report_split):
the same totals and counts as the ledger alone, at the cost of a few rows per day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vocalbridge_billing.domain import (
    Grouping,
    ProviderStats,
    RecordedEvent,
    Summary,
    Totals,
    Unrecognized,
    UsageQuery,
    check_page_size,
    event_cursor,
    event_list_query,
    event_page_key,
    group_key,
    known_grouping,
    report_split,
    usage_filter,
)
from vocalbridge_billing.repository import UsageRepository
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.pagination import Page, Paginator
from vocalbridge_common.validation import Violations


class AnalyticsService:
    def __init__(self, db: Database, paginator: Paginator, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._paginator = paginator
        self._clock = clock

    async def list_usage_events(
        self, tenant_id: str, query: UsageQuery, page_size: int, page_token: str
    ) -> Page[RecordedEvent]:
        violations = Violations()
        check_page_size(page_size, violations)
        events_filter = usage_filter(query, violations, default_end=None)
        if violations:
            raise invalid_fields(violations)
        # The tenant and every filter are part of the query: a token fits only the list that made it.
        request = self._paginator.request(event_list_query(tenant_id, events_filter), page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            events = await UsageRepository(session, tenant_id).page(events_filter, event_cursor(request), request.fetch)
        return self._paginator.page(request, events, key=event_page_key)

    async def usage_summary(
        self, tenant_id: str, query: UsageQuery, group_by: Grouping | Unrecognized | None
    ) -> Summary:
        violations = Violations()
        summary_filter = usage_filter(query, violations, default_end=self._clock())
        grouping = known_grouping(group_by, violations)
        if violations:
            raise invalid_fields(violations)
        split = report_split(summary_filter)
        async with self._db.tenant_transaction(tenant_id) as session:
            repository = UsageRepository(session, tenant_id)
            if grouping is None:
                return Summary(await repository.totals(summary_filter, split), ())
            grouped = await repository.grouped_totals(summary_filter, grouping, split)
        groups = tuple((group_key(grouping, key), totals) for key, totals in grouped)
        total = Totals()
        for _, totals in groups:
            total += totals
        return Summary(total, groups)

    async def provider_performance(self, tenant_id: str, query: UsageQuery) -> list[ProviderStats]:
        violations = Violations()
        performance_filter = usage_filter(query, violations, default_end=self._clock())
        if violations:
            raise invalid_fields(violations)
        split = report_split(performance_filter)
        async with self._db.tenant_transaction(tenant_id) as session:
            stats = await UsageRepository(session, tenant_id).provider_stats(performance_filter, split)
        return [stats[provider] for provider in sorted(stats)]
