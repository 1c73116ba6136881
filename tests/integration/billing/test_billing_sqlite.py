"""The same production server on the embedded default, SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tests.integration.billing.billing_testkit import (
    SUCCESS,
    TIMEOUT,
    VOICE,
    assert_percentile,
    attempt,
    expect_failure,
    settings_for,
    usage_event,
)
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import billing_service_pb2_grpc
from vocalbridge_billing.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate


@pytest.fixture
async def sqlite_stub(tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'billing.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    running = await create_server(settings_for(url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield billing_service_pb2_grpc.BillingServiceStub(channel)
    finally:
        await running.stop(0)


async def test_record_and_summarize_on_sqlite(sqlite_stub, as_tenant):
    tenant, other = new_id("ten"), new_id("ten")
    relay = as_tenant("", ("internal",))
    md = as_tenant(tenant, ("read",))
    # Noon two days ago: 13 hours either side is still in the past at any time of day.
    day = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    events = [
        usage_event(tenant, event_time=day, attempts=[attempt("vendorA", SUCCESS, 100)]),
        usage_event(
            tenant,
            event_time=day + timedelta(hours=13),
            provider="vendorB",
            fallback_used=True,
            attempts=[attempt("vendorA", TIMEOUT, 300), attempt("vendorB", SUCCESS, 200)],
        ),
        usage_event(
            tenant,
            event_time=day - timedelta(hours=13),
            channel=VOICE,
            audio_seconds=1.25,
            tts_characters=40,
            attempts=[attempt("vendorA", SUCCESS, 300)],
        ),
        usage_event(other, event_time=day),
    ]

    first = await sqlite_stub.RecordUsage(pb.RecordUsageRequest(events=events), metadata=relay)
    again = await sqlite_stub.RecordUsage(pb.RecordUsageRequest(events=events), metadata=relay)
    assert (first.accepted_count, first.duplicate_count) == (4, 0)
    assert (again.accepted_count, again.duplicate_count) == (0, 4)
    tampered = pb.RecordUsageRequest(events=[events[0]]).events[0]
    tampered.completion_tokens += 1
    await expect_failure(
        sqlite_stub.RecordUsage(pb.RecordUsageRequest(events=[tampered]), metadata=relay),
        grpc.StatusCode.ALREADY_EXISTS,
        "USAGE_EVENT_CONFLICT",
    )

    summary = await sqlite_stub.GetUsageSummary(pb.GetUsageSummaryRequest(group_by=pb.DAY), metadata=md)
    mine = events[:3]
    assert summary.totals.turns == 3
    assert summary.totals.cost_micros == sum(e.cost_micros for e in mine) == 84 + 126 + (84 + 125 + 600)
    assert summary.totals.audio_seconds == 1.25 and summary.totals.tts_characters == 40
    expected_days = sorted({e.event_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d") for e in mine})
    assert [g.key for g in summary.groups] == expected_days
    assert sum(g.totals.cost_micros for g in summary.groups) == summary.totals.cost_micros

    by_provider = await sqlite_stub.GetUsageSummary(pb.GetUsageSummaryRequest(group_by=pb.PROVIDER), metadata=md)
    assert [(g.key, g.totals.turns) for g in by_provider.groups] == [("vendorA", 2), ("vendorB", 1)]

    listed = await sqlite_stub.ListUsageEvents(pb.ListUsageEventsRequest(page_size=2), metadata=md)
    rest = await sqlite_stub.ListUsageEvents(
        pb.ListUsageEventsRequest(page_size=2, page_token=listed.next_page_token), metadata=md
    )
    assert [e.name for e in [*listed.usage_events, *rest.usage_events]] == [
        events[2].name,
        events[0].name,
        events[1].name,
    ]
    assert rest.next_page_token == ""

    # The same latency histograms as on PostgreSQL: 100, 300 ms → p50 200 ms, p95 290 ms, estimated.
    performance = await sqlite_stub.GetProviderPerformance(pb.GetProviderPerformanceRequest(), metadata=md)
    a = {p.provider: p for p in performance.providers}["vendorA"]
    assert (a.attempts, a.failed_attempts, a.turns_started, a.turns_fallen_back) == (3, 1, 3, 1)
    assert_percentile(a.latency_p50, [100_000_000, 300_000_000], 0.5)
    assert_percentile(a.latency_p95, [100_000_000, 300_000_000], 0.95)

    # No row-level security in SQLite: the tenant filter alone isolates tenants.
    other_summary = await sqlite_stub.GetUsageSummary(pb.GetUsageSummaryRequest(), metadata=as_tenant(other, ("read",)))
    assert other_summary.totals.turns == 1
