"""Benchmark: usage analytics over a large ledger (not a test).

Creates a throw-away PostgreSQL database, migrates billing to the ledger's first
revision, bulk-loads 1,000,000 usage events (one attempt each, a third with a
failed attempt first) for one tenant over a year plus some rows of other tenants,
migrates to the newest revision (which backfills the daily rollups from that
ledger: timed), starts the real billing server on port 0, and times through real
gRPC stubs:

- GetUsageSummary over the full range, for each group_by;
- ListUsageEvents, first page (50 and 1000 events) and a page deep in the ledger;
- GetProviderPerformance over the full range, and for one agent.

    python -m bench.scenarios.usage_summary          (from the repository root)
    VB_BENCH_USAGE_EVENTS=200000 python -m …         (a smaller ledger)

`run()` returns rows {scenario, metric, value, unit} for the bench suite.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from alembic import command
from alembic.config import Config

from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import billing_service_pb2_grpc
from vocalbridge_billing.config import BillingSettings
from vocalbridge_billing.server import MIGRATIONS_DIR, SCHEMA, create_server
from vocalbridge_common.config import CommonSettings
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner

SCENARIO = "usage_summary"
ADMIN_URL = os.environ.get("VB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EVENTS = int(os.environ.get("VB_BENCH_USAGE_EVENTS", "1000000"))
OTHER_TENANTS = 3
OTHER_EVENTS = 20_000
RUNS = int(os.environ.get("VB_BENCH_RUNS", "7"))
TENANT = "ten_bench0000000000000000000000"
LEDGER_REVISION = "0001"  # the ledger without its rollups: the newest revision backfills them
SECRET = os.urandom(32).hex().encode()
SPAN = timedelta(days=365)

# One INSERT … SELECT per tenant; costs are computed with the seed prices and
# the same rule as vocalbridge_common.pricing (exact sum, rounded half up).
_LOAD_EVENTS = """
INSERT INTO usage_events
SELECT 'bench-' || %(tenant)s || '-' || g, %(tenant)s, 'agt_' || (g %% 20), 1, 'ses_' || (g / 20),
       'msg_' || g, CASE WHEN g %% 4 = 0 THEN 'CHANNEL_VOICE' ELSE 'CHANNEL_TEXT' END,
       provider, '', prompt, completion, audio, chars,
       floor((prompt + completion) * price / 1000.0 + audio * 100 / 1000.0 + chars * 15 + 0.5)::bigint,
       floor((prompt + completion) * price / 1000.0 + audio * 100 / 1000.0 + chars * 15 + 0.5)::bigint,
       price_prompt, price_completion,
       CASE WHEN audio > 0 THEN 'prc_00000000000000000000000005' END,
       CASE WHEN chars > 0 THEN 'prc_00000000000000000000000006' END,
       event_time, to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD'), event_time + interval '1 second',
       provider, '', g %% 3 = 0, 20000000 + (g %% 7) * 1000000, 1 + (g %% 3 = 0)::int, (g %% 3 = 0)::int, 0,
       CASE WHEN g %% 3 = 0 THEN 'vendorA' ELSE provider END, md5(g::text)
FROM (
  SELECT g,
         CASE WHEN g %% 3 = 0 OR g %% 5 = 0 THEN 'vendorB' ELSE 'vendorA' END AS provider,
         CASE WHEN g %% 3 = 0 OR g %% 5 = 0 THEN 3000 ELSE 2000 END AS price,
         CASE WHEN g %% 3 = 0 OR g %% 5 = 0 THEN 'prc_00000000000000000000000003'
              ELSE 'prc_00000000000000000000000001' END AS price_prompt,
         CASE WHEN g %% 3 = 0 OR g %% 5 = 0 THEN 'prc_00000000000000000000000004'
              ELSE 'prc_00000000000000000000000002' END AS price_completion,
         50 + g %% 400 AS prompt, 20 + g %% 300 AS completion,
         CASE WHEN g %% 4 = 0 THEN 500 + g %% 20000 ELSE 0 END AS audio,
         CASE WHEN g %% 4 = 0 THEN 20 + g %% 200 ELSE 0 END AS chars,
         %(start)s::timestamptz + (g::bigint * %(step)s) * interval '1 microsecond' AS event_time
  FROM generate_series(0, %(count)s - 1) AS g
) AS generated
"""
# Every third turn: vendorA timed out first, then vendorB served (two attempts).
_LOAD_ATTEMPTS = (
    """
INSERT INTO usage_attempts
SELECT event_id, 0, tenant_id, event_time, agent_id, started_provider,
       CASE WHEN fallback_used THEN 'TIMEOUT' ELSE 'SUCCESS' END,
       CASE WHEN fallback_used THEN 30000000 ELSE delivery_latency_ns END, 0,
       CASE WHEN fallback_used THEN 'simulated timeout' ELSE '' END
FROM usage_events WHERE tenant_id = %(tenant)s
""",
    """
INSERT INTO usage_attempts
SELECT event_id, 1, tenant_id, event_time, agent_id, provider, 'SUCCESS', delivery_latency_ns, 50000000, ''
FROM usage_events WHERE tenant_id = %(tenant)s AND fallback_used
""",
)


@contextmanager
def throwaway_database():
    name = f"vb_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate_to(url: str, revision: str) -> None:
    """Billing's schema at `revision` (vocalbridge_common.migrations.migrate, short of head)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    config.attributes["schema"] = SCHEMA
    command.upgrade(config, revision)


def vacuum_analyze(connection: psycopg.Connection) -> None:
    """VACUUM ANALYZE billing's tables (autovacuum is off on the project's server)."""
    tables = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,)).fetchall()
    for (table,) in tables:
        connection.execute(f'VACUUM ANALYZE "{SCHEMA}"."{table}"')


def load(url: str, now: datetime, tenant: str = TENANT) -> dict[str, float]:
    """Bulk-loads the ledger (EVENTS for `tenant`, some for other tenants) as the database owner;
    returns load timings in seconds. At the newest revision the ledger's triggers add the rows
    to the daily rollups as they go in; at an earlier one, migrating to the newest backfills them."""
    start = now - SPAN
    timings = {}
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"SET search_path TO {SCHEMA}")
        began = time.perf_counter()
        tenants = [(tenant, EVENTS)] + [(f"ten_bench_other_{i}", OTHER_EVENTS) for i in range(OTHER_TENANTS)]
        for tenant, count in tenants:
            step = SPAN // timedelta(microseconds=1) // count
            connection.execute(_LOAD_EVENTS, {"tenant": tenant, "count": count, "start": start, "step": step})
            for statement in _LOAD_ATTEMPTS:
                connection.execute(statement, {"tenant": tenant})
        timings["load"] = time.perf_counter() - began
        began = time.perf_counter()
        vacuum_analyze(connection)
        timings["vacuum_analyze"] = time.perf_counter() - began
    return timings


async def timed(call, runs: int = RUNS) -> list[float]:
    await call()  # warm-up: connection, plan cache, buffer cache
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def rows_for(name: str, samples: list[float]) -> list[dict]:
    return [
        {"scenario": SCENARIO, "metric": f"{name} {stat}", "value": round(value, 1), "unit": "ms"}
        for stat, value in (("min", min(samples)), ("p50", statistics.median(samples)), ("max", max(samples)))
    ]


async def run() -> list[dict]:
    now = datetime.now(UTC).replace(microsecond=0)
    results: list[dict] = []
    with throwaway_database() as url:
        migrate_to(url, LEDGER_REVISION)
        timings = load(url, now)
        began = time.perf_counter()
        migrate_to(url, "head")
        timings["rollup backfill (migration to head)"] = time.perf_counter() - began
        with psycopg.connect(url, autocommit=True) as connection:
            vacuum_analyze(connection)
        for name, seconds in timings.items():
            results.append(
                {
                    "scenario": SCENARIO,
                    "metric": f"bulk {name} ({EVENTS + OTHER_TENANTS * OTHER_EVENTS:,} events)",
                    "value": round(seconds, 1),
                    "unit": "s",
                }
            )
        settings = BillingSettings(
            common=CommonSettings(
                service_name="billing",
                listen_host="127.0.0.1",
                port=0,
                database_url=url,
                identity_secret=SECRET,
                log_level="WARNING",
                known_providers=("vendorA", "vendorB"),
                shutdown_grace_seconds=1,
            ),
            max_clock_skew_seconds=300,
        )
        running = await create_server(settings)
        try:
            md = ((IDENTITY_HEADER, IdentitySigner(SECRET, ttl_seconds=3600).mint(TENANT, "key_bench", ("read",))),)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = billing_service_pb2_grpc.BillingServiceStub(channel)
                full_range = {"start_time": _stamp(now - SPAN - timedelta(days=1)), "end_time": _stamp(now)}
                totals = (await stub.GetUsageSummary(pb.GetUsageSummaryRequest(**full_range), metadata=md)).totals
                assert totals.turns == EVENTS, totals
                for group_by in ("GROUP_BY_UNSPECIFIED", "DAY", "AGENT", "PROVIDER", "CHANNEL"):
                    request = pb.GetUsageSummaryRequest(group_by=pb.GroupBy.Value(group_by), **full_range)

                    async def summary(request=request):
                        return await stub.GetUsageSummary(request, metadata=md)

                    results += rows_for(f"GetUsageSummary {group_by}", await timed(summary))
                for page_size in (50, 1000):
                    request = pb.ListUsageEventsRequest(page_size=page_size)

                    async def first_page(request=request):
                        return await stub.ListUsageEvents(request, metadata=md)

                    results += rows_for(f"ListUsageEvents first page of {page_size}", await timed(first_page))
                deep = pb.ListUsageEventsRequest(page_size=50, start_time=_stamp(now - timedelta(days=30)))

                async def deep_page():
                    return await stub.ListUsageEvents(deep, metadata=md)

                results += rows_for("ListUsageEvents page 30 days back", await timed(deep_page))

                async def performance():
                    return await stub.GetProviderPerformance(
                        pb.GetProviderPerformanceRequest(**full_range), metadata=md
                    )

                results += rows_for("GetProviderPerformance", await timed(performance, runs=max(3, RUNS // 2)))

                async def agent_performance():
                    return await stub.GetProviderPerformance(
                        pb.GetProviderPerformanceRequest(agent="agents/agt_7", **full_range), metadata=md
                    )

                results += rows_for("GetProviderPerformance one agent", await timed(agent_performance))
        finally:
            await running.stop(0)
    return results


def _stamp(value: datetime):
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def print_table(results: list[dict]) -> None:
    width = max(len(r["metric"]) for r in results)
    print(f"{'metric':<{width}}  {'value':>10}  unit")
    for r in results:
        print(f"{r['metric']:<{width}}  {r['value']:>10}  {r['unit']}")


if __name__ == "__main__":
    print_table(asyncio.run(run()))
