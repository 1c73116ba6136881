"""The daily rollups against the ledger they sum, on PostgreSQL and on SQLite.

- For random events and random ranges, groupings and filters, the reports read from the
  rollups (whole days) and the ledger (the edges) equal the reports read from the ledger
  alone, and a Python sum of the events; the latency percentiles are the same estimates
  either way, within the documented bound of the exact ones.
- Exactly once: a re-sent batch (duplicates) and a refused one (a conflict) leave the
  rollups as they were.
- The migration's backfill builds the same rollups as the triggers that keep them.
- The SQL latency buckets (the triggers', the reports') are domain.latency_bucket.
- Row-level security and privileges: a tenant reads only its rows and no service role may
  delete them; the tenant role may not write them at all; one tenant's summary over whole
  days holds none of another's usage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, literal, make_url, select, text

from tests.conftest import PG_ADMIN_URL, temporary_database
from tests.integration.billing.billing_testkit import attempt, usage_event
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge_billing.domain import (
    LATENCY_RELATIVE_ERROR,
    AttemptDraft,
    DeliveryDraft,
    Grouping,
    Totals,
    UsageEventConflict,
    UsageEventDraft,
    UsageFilter,
    latency_bucket,
    ledger_only,
    percentile_cont,
    report_split,
)
from vocalbridge_billing.repository import UsageRepository, latency_bucket_expression
from vocalbridge_billing.server import MIGRATIONS_DIR, SCHEMA
from vocalbridge_billing.service.ledger import LedgerService
from vocalbridge_common.db import APP_ROLE, SYSTEM_ROLE, Database
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.pricing import SEED_PRICES, Quantities, charge, select_prices
from vocalbridge_common.vocabulary import AttemptOutcome, Channel

ROLLUPS = ("usage_daily_totals", "usage_daily_attempts", "usage_daily_latencies", "usage_daily_agent_latencies")
BACKENDS = ("postgresql", "sqlite")
# Four UTC days well in the past (events may not be in the future), midnights among them.
BASE = (datetime.now(UTC) - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
MIDNIGHTS = [BASE + timedelta(days=k) for k in range(5)]
AGENTS = ("agt_a", "agt_b", "agt_c")
PROVIDERS = ("vendorA", "vendorB")


def alembic(url: str, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    config.attributes["schema"] = SCHEMA
    getattr(command, action)(config, revision)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('billing') / 'billing.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    return url


@pytest.fixture(scope="module")
async def databases(billing_database, sqlite_url):
    """The service's Database on each backend, freshly migrated."""
    opened = {"postgresql": Database(billing_database, SCHEMA), "sqlite": Database(sqlite_url, SCHEMA)}
    yield opened
    for db in opened.values():
        await db.dispose()


# -- events, built the way a producer sends them ----------------------------------------------


def instants() -> st.SearchStrategy[datetime]:
    """Times over four days, UTC midnights and their neighbours often."""
    anywhere = st.integers(0, 4 * 86_400 * 10**6).map(lambda us: BASE + timedelta(microseconds=us))
    near_midnight = st.tuples(st.sampled_from(MIDNIGHTS), st.sampled_from([-1, 0, 1])).map(
        lambda pair: pair[0] + timedelta(microseconds=pair[1])
    )
    return st.one_of(anywhere, near_midnight)


latencies = st.one_of(
    st.integers(0, 100),
    st.integers(1, 40).flatmap(lambda bits: st.sampled_from([2**bits - 1, 2**bits])),
    st.integers(10**6, 5 * 10**9),
)
# Success twice as often as each failure.
outcomes = st.sampled_from([AttemptOutcome.SUCCESS, *AttemptOutcome])


@dataclass(frozen=True)
class Event:
    draft: UsageEventDraft

    @property
    def when(self) -> datetime:
        assert self.draft.event_time is not None
        return self.draft.event_time


def draft(
    tenant: str,
    when: datetime,
    agent: str,
    provider: str,
    channel: Channel,
    tokens: tuple[int, int],
    audio_seconds: float,
    characters: int,
    attempts: list[tuple[str, AttemptOutcome, int]],
) -> UsageEventDraft:
    """A valid event, priced as the producer prices it (so billing agrees with its cost)."""
    standalone = not agent
    prompt, completion = (0, 0) if standalone else tokens
    priced = charge(
        Quantities(prompt, completion, Decimal(repr(audio_seconds)), characters),
        select_prices(SEED_PRICES, provider, "", at=when),
    )
    event_id = f"evt-{uuid.uuid4().hex}"
    session = "" if standalone else "sessions/ses_1"
    drafts = tuple(
        AttemptDraft(p, outcome, latency, 0, "" if outcome is AttemptOutcome.SUCCESS else "failed")
        for p, outcome, latency in attempts
    )
    return UsageEventDraft(
        name=f"usageEvents/{event_id}",
        tenant=f"tenants/{tenant}",
        agent=f"agents/{agent}" if agent else "",
        agent_version=0 if standalone else 1,
        session=session,
        message="",
        channel=Channel.VOICE if standalone else channel,
        provider=provider,
        model="",
        prompt_tokens=prompt,
        completion_tokens=completion,
        audio_seconds=audio_seconds,
        tts_characters=characters,
        cost_micros=priced.cost_micros,
        price_names=tuple(f"prices/{row.price_id}" for row in priced.prices_used),
        event_time=when,
        delivery=DeliveryDraft(
            provider,
            "",
            bool(attempts) and attempts[0][0] != provider,
            drafts,
            max((a[2] for a in attempts), default=0),
        ),
    )


@st.composite
def events(draw: st.DrawFn, tenant: str) -> UsageEventDraft:
    provider = draw(st.sampled_from(PROVIDERS))
    tried = draw(st.lists(st.tuples(st.sampled_from(PROVIDERS), outcomes, latencies), max_size=3))
    return draft(
        tenant,
        draw(instants()),
        draw(st.sampled_from([*AGENTS, ""])),
        provider,
        draw(st.sampled_from([Channel.TEXT, Channel.VOICE])),
        (draw(st.integers(0, 5000)), draw(st.integers(0, 3000))),
        draw(st.sampled_from([0.0, 0.25, 1.5, 12.125])),
        draw(st.integers(0, 400)),
        tried,
    )


@dataclass(frozen=True)
class Report:
    start: datetime | None
    end: datetime
    grouping: Grouping | None
    agent_id: str
    provider: str
    channel: Channel | None

    def summary_filter(self) -> UsageFilter:
        return UsageFilter(self.start, self.end, self.agent_id, self.provider, self.channel)

    def performance_filter(self) -> UsageFilter:
        return UsageFilter(self.start, self.end, self.agent_id)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    start = draw(st.one_of(st.none(), instants()))
    end = draw(instants().filter(lambda end: start is None or end > start))
    return Report(
        start,
        end,
        draw(st.sampled_from([None, *Grouping])),
        draw(st.sampled_from(["", *AGENTS])),
        draw(st.sampled_from(["", *PROVIDERS])),
        draw(st.sampled_from([None, Channel.TEXT, Channel.VOICE])),
    )


# -- what the ledger says, in Python ------------------------------------------------------------


def in_range(report: Report, when: datetime) -> bool:
    return (report.start is None or report.start <= when) and when < report.end


def python_totals(report: Report, drafts: list[UsageEventDraft]) -> Totals:
    total = Totals()
    for d in drafts:
        agent_id = d.agent.removeprefix("agents/")
        if not in_range(report, d.event_time or BASE) or (report.agent_id and agent_id != report.agent_id):
            continue
        if (report.provider and d.provider != report.provider) or (report.channel and d.channel != report.channel):
            continue
        quantities = Quantities(d.prompt_tokens, d.completion_tokens, Decimal(repr(d.audio_seconds)), d.tts_characters)
        total += Totals(
            1, d.prompt_tokens, d.completion_tokens, quantities.audio_millis, d.tts_characters, d.cost_micros
        )
    return total


def python_latencies(report: Report, drafts: list[UsageEventDraft]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for d in drafts:
        if not in_range(report, d.event_time or BASE):
            continue
        if report.agent_id and d.agent.removeprefix("agents/") != report.agent_id:
            continue
        assert d.delivery is not None
        for a in d.delivery.attempts:
            if a.outcome is AttemptOutcome.SUCCESS:
                found[a.provider].append(a.latency_ns)
    return found


# -- the property ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_reports_from_the_rollups_equal_reports_from_the_ledger(databases, backend, data):
    db = databases[backend]
    tenant = new_id("ten")
    drafts = data.draw(st.lists(events(tenant), min_size=1, max_size=40), label="events")
    ledger = LedgerService(db)
    for start in range(0, len(drafts), 15):
        await ledger.record_usage(drafts[start : start + 15])
    # Re-sent (the relay retries): counted once in the ledger, so once in the rollups.
    resent = data.draw(st.lists(st.sampled_from(drafts), max_size=10), label="re-sent")
    if resent:
        assert (await ledger.record_usage(resent)).accepted == 0

    for report in data.draw(st.lists(reports(), min_size=1, max_size=6), label="reports"):
        summary_filter = report.summary_filter()
        performance_filter = report.performance_filter()
        async with db.tenant_transaction(tenant) as session:
            repository = UsageRepository(session, tenant)
            split, everything = report_split(summary_filter), ledger_only(summary_filter)
            if report.grouping is None:
                from_rollups = await repository.totals(summary_filter, split)
                assert from_rollups == await repository.totals(summary_filter, everything), report
                assert from_rollups == python_totals(report, drafts), report
            else:
                grouped = await repository.grouped_totals(summary_filter, report.grouping, split)
                assert grouped == await repository.grouped_totals(summary_filter, report.grouping, everything), report
                total = Totals()
                for _, totals in grouped:
                    total += totals
                assert total == python_totals(report, drafts), report
            stats = await repository.provider_stats(performance_filter, report_split(performance_filter))
            assert stats == await repository.provider_stats(performance_filter, ledger_only(performance_filter))
        for provider, values in python_latencies(report, drafts).items():
            for fraction, estimate in ((0.5, stats[provider].latency_p50_ns), (0.95, stats[provider].latency_p95_ns)):
                exact = percentile_cont(sorted(values), fraction) or 0
                assert abs(estimate - exact) <= exact * LATENCY_RELATIVE_ERROR + 1, (provider, fraction, values)


# -- exactly once -------------------------------------------------------------------------------------


async def rollup_rows(db: Database, tenant: str | None = None) -> dict[str, list[tuple]]:
    """Every row of every rollup (of `tenant`, if given), as a system transaction sees them."""
    rows = {}
    async with db.system_transaction() as session:
        for table in ROLLUPS:
            where = " WHERE tenant_id = :tenant" if tenant else ""
            result = await session.execute(
                text(f"SELECT * FROM {table}{where} ORDER BY 1, 2, 3, 4, 5"), {"tenant": tenant}
            )
            rows[table] = [tuple(row) for row in result]
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
async def test_duplicates_and_a_refused_batch_leave_the_rollups_unchanged(databases, backend):
    db = databases[backend]
    tenant = new_id("ten")
    when = BASE + timedelta(days=1, hours=3)
    batch = [
        draft(
            tenant,
            when,
            "agt_a",
            "vendorA",
            Channel.TEXT,
            (10, 20),
            0.0,
            0,
            [("vendorA", AttemptOutcome.SUCCESS, 5_000_000)],
        ),
        draft(
            tenant,
            when,
            "agt_a",
            "vendorB",
            Channel.VOICE,
            (30, 40),
            1.5,
            12,
            [("vendorA", AttemptOutcome.TIMEOUT, 9_000_000), ("vendorB", AttemptOutcome.SUCCESS, 7_000_000)],
        ),
    ]
    ledger = LedgerService(db)
    assert (await ledger.record_usage(batch)).accepted == 2
    before = await rollup_rows(db, tenant)
    assert all(before[table] for table in ROLLUPS)

    again = await ledger.record_usage(batch)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert await rollup_rows(db, tenant) == before

    changed = dataclasses.replace(batch[0], prompt_tokens=11)
    fresh = draft(
        tenant, when, "agt_b", "vendorA", Channel.TEXT, (1, 1), 0.0, 0, [("vendorA", AttemptOutcome.SUCCESS, 1)]
    )
    with pytest.raises(UsageEventConflict):
        await ledger.record_usage([fresh, changed])
    assert await rollup_rows(db, tenant) == before

    assert (await ledger.record_usage([fresh])).accepted == 1
    after = await rollup_rows(db, tenant)
    assert after != before and any(row[2] == "agt_b" for row in after["usage_daily_totals"])


async def test_concurrent_batches_sharing_rollup_rows_all_land_once(databases):
    """Relays side by side: batches whose events fall on the same rollup rows, recorded at once.
    Every batch succeeds, as the triggers take shared rows in one order (in any other, some of
    these batches die in deadlocks), and the rollups still equal the ledger. (No event is in two
    of them: a shared event id makes the second batch wait for the first to commit.)"""
    db = databases["postgresql"]
    rng = random.Random(8)
    for _ in range(3):
        tenant = new_id("ten")
        pool = [
            draft(
                tenant,
                BASE + timedelta(hours=rng.randrange(72)),
                rng.choice(AGENTS),
                rng.choice(PROVIDERS),
                rng.choice([Channel.TEXT, Channel.VOICE]),
                (rng.randrange(100), rng.randrange(100)),
                0.0,
                0,
                [(rng.choice(PROVIDERS), AttemptOutcome.SUCCESS, rng.randrange(10**6, 10**8))],
            )
            for _ in range(800)
        ]
        batches = [pool[k * 100 : k * 100 + 100] for k in range(8)]
        ledger = LedgerService(db)
        results = await asyncio.gather(*(ledger.record_usage(batch) for batch in batches), return_exceptions=True)
        assert [type(result) for result in results if isinstance(result, Exception)] == []
        assert sum(result.accepted for result in results if not isinstance(result, Exception)) == len(pool)

        f = Report(BASE, BASE + timedelta(days=3), Grouping.AGENT, "", "", None).summary_filter()
        async with db.tenant_transaction(tenant) as session:
            repository = UsageRepository(session, tenant)
            assert report_split(f).windows == ()  # all of it from the rollups
            grouped = await repository.grouped_totals(f, Grouping.AGENT, report_split(f))
            assert grouped == await repository.grouped_totals(f, Grouping.AGENT, ledger_only(f))
            assert sum(totals.turns for _, totals in grouped) == len(pool)
            stats = await repository.provider_stats(f, report_split(f))
            assert stats == await repository.provider_stats(f, ledger_only(f))


# -- the backfill -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_backfill_builds_what_the_triggers_keep(backend, tmp_path):
    """Rollups kept as events land, dropped (downgrade) and backfilled (upgrade): the same rows."""

    async def check(url: str) -> None:
        migrate(url, SCHEMA, MIGRATIONS_DIR)
        db = Database(url, SCHEMA)
        try:
            ledger = LedgerService(db)
            for tenant in (new_id("ten"), new_id("ten")):
                batch = [
                    draft(
                        tenant,
                        BASE + timedelta(hours=7 * i),
                        AGENTS[i % 3] if i % 5 else "",
                        PROVIDERS[i % 2],
                        Channel.VOICE if i % 3 == 0 else Channel.TEXT,
                        (10 * i, 3 * i),
                        0.25 * (i % 4),
                        i,
                        [
                            (PROVIDERS[(i + 1) % 2], [AttemptOutcome.CIRCUIT_OPEN, AttemptOutcome.TIMEOUT][i % 2], i),
                            (PROVIDERS[i % 2], AttemptOutcome.SUCCESS, 1_000_003 * i**3),
                        ][i % 2 :],
                    )
                    for i in range(40)
                ]
                await ledger.record_usage(batch)
            kept = await rollup_rows(db)
            assert all(kept[table] for table in ROLLUPS)
            await db.dispose()

            await _alembic_off_loop(url, "downgrade", "0001")
            await _alembic_off_loop(url, "upgrade", "head")
            db = Database(url, SCHEMA)
            assert await rollup_rows(db) == kept

            # And the triggers are back: a new event is added to what was backfilled.
            tenant = new_id("ten")
            await LedgerService(db).record_usage(
                [
                    draft(
                        tenant,
                        BASE,
                        "agt_a",
                        "vendorA",
                        Channel.TEXT,
                        (1, 2),
                        0.0,
                        0,
                        [("vendorA", AttemptOutcome.SUCCESS, 9)],
                    )
                ]
            )
            assert [row[6] for row in (await rollup_rows(db, tenant))["usage_daily_totals"]] == [1]
        finally:
            await db.dispose()

    if backend == "sqlite":
        await check(f"sqlite:///{tmp_path / 'billing.db'}")
    else:
        with temporary_database() as url:
            await check(url)


async def test_a_migrator_that_is_no_superuser_backfills_every_tenant(billing_database):
    """Production migrates as an account that owns the schema and may become the service roles,
    not as a superuser (deploy/k8s/README.md). Row-level security is forced on the ledger's
    owner too, yet the backfill must see every tenant's events."""
    login = f"vb_migrator_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {login} LOGIN")  # billing_database made the service roles
        admin.execute(f"GRANT {APP_ROLE}, {SYSTEM_ROLE} TO {login}")
    try:
        with temporary_database() as admin_url:
            name = make_url(admin_url).database
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'GRANT CREATE ON DATABASE "{name}" TO {login}')
            url = make_url(admin_url).set(username=login).render_as_string(hide_password=False)
            await _alembic_off_loop(url, "upgrade", "0001")
            db = Database(url, SCHEMA)
            tenants = [new_id("ten"), new_id("ten")]
            try:
                await LedgerService(db).record_usage(
                    [
                        draft(
                            who,
                            BASE + timedelta(hours=h),
                            "agt_a",
                            "vendorA",
                            Channel.TEXT,
                            (h, 1),
                            0.0,
                            0,
                            [("vendorA", AttemptOutcome.SUCCESS, 1_000_000 * h)],
                        )
                        for who in tenants
                        for h in range(1, 30)
                    ]
                )
                await db.dispose()
                await _alembic_off_loop(url, "upgrade", "head")
                db = Database(url, SCHEMA)
                f = UsageFilter(BASE, BASE + timedelta(days=1))
                for tenant in tenants:
                    async with db.tenant_transaction(tenant) as session:
                        repository = UsageRepository(session, tenant)
                        assert report_split(f).windows == ()
                        totals = await repository.totals(f, report_split(f))
                        assert totals.turns == 23 and totals == await repository.totals(f, ledger_only(f))
                        stats = await repository.provider_stats(f, report_split(f))
                        assert stats == await repository.provider_stats(f, ledger_only(f))
            finally:
                await db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {login}")


async def _alembic_off_loop(url: str, action: str, revision: str) -> None:
    """Alembic is synchronous (and runs its own event loop for SQLite's async driver): beside ours."""
    await asyncio.to_thread(alembic, url, action, revision)


# -- the buckets in SQL -------------------------------------------------------------------------------

BOUNDARIES = sorted(
    {0, 1, 63, 64, 65, *(v for bits in range(6, 63) for v in (2**bits - 1, 2**bits, 2**bits + 1)), 2**63 - 1}
)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_reports_sql_buckets_are_the_domains(databases, backend):
    db = databases[backend]
    async with db.system_transaction() as session:
        for value in BOUNDARIES:
            assert await session.scalar(
                select(latency_bucket_expression(literal(value, BigInteger)))
            ) == latency_bucket(value), value


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_triggers_sql_buckets_are_the_domains(databases, backend):
    db = databases[backend]
    tenant = new_id("ten")
    attempts = [("vendorA", AttemptOutcome.SUCCESS, value) for value in BOUNDARIES]
    batch = [
        draft(tenant, BASE, "agt_a", "vendorA", Channel.TEXT, (1, 1), 0.0, 0, attempts[start : start + 45])
        for start in range(0, len(attempts), 45)
    ]
    await LedgerService(db).record_usage(batch)
    rows = (await rollup_rows(db, tenant))["usage_daily_latencies"]
    assert {row[3]: row[4] for row in rows} == dict(Counter(latency_bucket(value) for value in BOUNDARIES))


# -- isolation and privileges ---------------------------------------------------------------------------


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


async def test_whole_day_reports_hold_only_the_callers_usage(stub, relay, as_tenant):
    """Two tenants with usage on the same days, agents and providers; a third with none. Over
    whole days (read from the rollups) each sees exactly its own."""
    first, second, third = new_id("ten"), new_id("ten"), new_id("ten")
    days = [BASE + timedelta(days=d, hours=5) for d in range(3)]
    mine = {
        first: [
            usage_event(first, event_time=t, prompt_tokens=100, attempts=[attempt("vendorA", latency_ms=10)])
            for t in days
        ],
        second: [
            usage_event(second, event_time=t, prompt_tokens=7, attempts=[attempt("vendorA", latency_ms=900)])
            for t in days + days
        ],
    }
    await stub.RecordUsage(pb.RecordUsageRequest(events=mine[first] + mine[second]), metadata=relay)
    whole_days = {"start_time": stamp(BASE), "end_time": stamp(BASE + timedelta(days=3))}
    for tenant, turns, prompt in ((first, 3, 300), (second, 6, 42), (third, 0, 0)):
        md = as_tenant(tenant, ("read",))
        summary = await stub.GetUsageSummary(pb.GetUsageSummaryRequest(group_by=pb.AGENT, **whole_days), metadata=md)
        assert (summary.totals.turns, summary.totals.prompt_tokens) == (turns, prompt), tenant
        assert [(g.key, g.totals.turns) for g in summary.groups] == ([("agents/agt_support", turns)] if turns else [])
        performance = await stub.GetProviderPerformance(pb.GetProviderPerformanceRequest(**whole_days), metadata=md)
        if turns:
            (vendor,) = performance.providers
            assert vendor.attempts == turns
            expected = 10 if tenant == first else 900
            assert abs(vendor.latency_p50.ToNanoseconds() - expected * 1_000_000) <= expected * 1_000_000 / 64
        else:
            assert list(performance.providers) == []


async def test_row_level_security_and_privileges_on_the_rollups(billing_database, databases):
    tenant, other = new_id("ten"), new_id("ten")
    await LedgerService(databases["postgresql"]).record_usage(
        [
            draft(who, BASE, "agt_a", "vendorA", Channel.TEXT, (1, 2), 0.0, 0, [("vendorA", AttemptOutcome.SUCCESS, 5)])
            for who in (tenant, other)
        ]
    )
    with psycopg.connect(billing_database, autocommit=False) as connection:

        def become(role: str) -> None:
            connection.rollback()
            connection.execute("SET search_path TO billing")
            connection.execute(f"SET ROLE {role}")

        become(APP_ROLE)
        for table in ROLLUPS:
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        connection.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        for table in ROLLUPS:
            assert connection.execute(f"SELECT DISTINCT tenant_id FROM {table}").fetchall() == [(tenant,)], table
        assert connection.execute("SELECT turns FROM usage_daily_totals").fetchall() == [(1,)]
        # The tenant role reads, and nothing more.
        for statement in (
            "UPDATE usage_daily_totals SET turns = 0",
            "DELETE FROM usage_daily_latencies",
            "INSERT INTO usage_daily_attempts VALUES ('x', '2026-01-01', 'a', 'p', 1, 0, 0)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
            become(APP_ROLE)
        # The ledger's role adds to them (its triggers run as it), and never removes.
        for table in ROLLUPS:
            for statement in (f"DELETE FROM {table}", f"TRUNCATE {table}"):
                become(SYSTEM_ROLE)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    connection.execute(statement)
        become(SYSTEM_ROLE)
        forced = connection.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relnamespace = 'billing'::regnamespace AND relname = ANY(%s) ORDER BY relname",
            (list(ROLLUPS),),
        ).fetchall()
        assert forced == [(table, True, True) for table in sorted(ROLLUPS)]
