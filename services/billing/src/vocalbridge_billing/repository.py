"""Billing data access. Flushes, never commits: the service layer owns transactions.

Aggregations run in SQL (GROUP BY); only the latency percentiles on SQLite,
which has no percentile_cont, are computed in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import and_, case, func, insert, literal, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from vocalbridge_billing.domain import CIRCUIT_OPEN, SUCCESS, ProviderStats, Totals, UsageFilter, percentile_cont
from vocalbridge_billing.models import PriceListRow, UsageAttemptRow, UsageEventRow
from vocalbridge_common.pricing import PriceRow

E = UsageEventRow
A = UsageAttemptRow


def to_price(row: PriceListRow) -> PriceRow:
    return PriceRow(row.id, row.provider, row.model, row.unit, row.micros_per_unit, row.effective_time)


class PriceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def all(self) -> list[PriceRow]:
        """The whole price list (a few rows per provider and unit)."""
        return [to_price(row) for row in (await self._session.scalars(select(PriceListRow))).all()]

    async def add(self, row: PriceListRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def page(self, provider: str, after: list | None, limit: int) -> list[PriceListRow]:
        order = (
            PriceListRow.provider,
            PriceListRow.model,
            PriceListRow.unit,
            PriceListRow.effective_time,
            PriceListRow.id,
        )
        query = select(PriceListRow).order_by(*order).limit(limit)
        if provider:
            query = query.where(PriceListRow.provider == provider)
        if after is not None:
            bound = [literal(value, column.type) for value, column in zip(after, order, strict=True)]
            query = query.where(tuple_(*order) > tuple_(*bound))
        return list((await self._session.scalars(query)).all())


def _event_filters(tenant_id: str, f: UsageFilter) -> list:
    conditions = [E.tenant_id == tenant_id]
    if f.start is not None:
        conditions.append(E.event_time >= f.start)
    if f.end is not None:
        conditions.append(E.event_time < f.end)
    if f.agent_id:
        conditions.append(E.agent_id == f.agent_id)
    if f.provider:
        conditions.append(E.provider == f.provider)
    if f.channel:
        conditions.append(E.channel == f.channel)
    if f.session_id:
        conditions.append(E.session_id == f.session_id)
    return conditions


def _int(value) -> int:
    return int(value or 0)  # PostgreSQL's sum(bigint) is numeric


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def _postgres(self) -> bool:
        return self._session.get_bind().dialect.name == "postgresql"

    # -- writes ---------------------------------------------------------------

    async def insert_new(self, rows: Sequence[dict]) -> set[str]:
        """Inserts the events whose id is not recorded yet; returns the ids inserted.

        Rows go in event-id order, so concurrent batches that share ids wait on
        each other in one order instead of deadlocking.
        """
        if not rows:
            return set()
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        statement = dialect_insert(E).on_conflict_do_nothing(index_elements=[E.event_id]).returning(E.event_id)
        ordered = sorted(rows, key=lambda row: row["event_id"])
        return set((await self._session.execute(statement, ordered)).scalars().all())

    async def digests(self, event_ids: Iterable[str]) -> dict[str, str]:
        query = select(E.event_id, E.content_sha256).where(E.event_id.in_(list(event_ids)))
        return {event_id: digest for event_id, digest in (await self._session.execute(query)).all()}

    async def add_attempts(self, rows: Sequence[dict]) -> None:
        if rows:
            await self._session.execute(insert(A), list(rows))

    # -- reads ----------------------------------------------------------------

    async def page(self, tenant_id: str, f: UsageFilter, after: list | None, limit: int) -> list[UsageEventRow]:
        """Events oldest first, keyset-paged on (event_time, event_id)."""
        query = select(E).where(*_event_filters(tenant_id, f)).order_by(E.event_time, E.event_id).limit(limit)
        if after is not None:
            after_time, after_id = after
            query = query.where(
                tuple_(E.event_time, E.event_id) > tuple_(literal(after_time, E.event_time.type), literal(after_id))
            )
        return list((await self._session.scalars(query)).all())

    async def attempts_of(self, tenant_id: str, event_ids: Sequence[str]) -> dict[str, list[UsageAttemptRow]]:
        result: dict[str, list[UsageAttemptRow]] = {event_id: [] for event_id in event_ids}
        if event_ids:
            query = (
                select(A)
                .where(A.tenant_id == tenant_id, A.event_id.in_(list(event_ids)))
                .order_by(A.event_id, A.ordinal)
            )
            for row in (await self._session.scalars(query)).all():
                result[row.event_id].append(row)
        return result

    async def totals(self, tenant_id: str, f: UsageFilter, group_column=None) -> list[tuple[str | None, Totals]]:
        """Sums over the filtered events, per value of `group_column` when given."""
        sums = (
            func.count(),
            func.coalesce(func.sum(E.prompt_tokens), 0),
            func.coalesce(func.sum(E.completion_tokens), 0),
            func.coalesce(func.sum(E.audio_millis), 0),
            func.coalesce(func.sum(E.tts_characters), 0),
            func.coalesce(func.sum(E.cost_micros), 0),
        )
        conditions = _event_filters(tenant_id, f)
        if group_column is None:
            row = (await self._session.execute(select(*sums).where(*conditions))).one()
            return [(None, Totals(*(_int(v) for v in row)))]
        query = select(group_column, *sums).where(*conditions).group_by(group_column).order_by(group_column)
        return [(key, Totals(*(_int(v) for v in values))) for key, *values in (await self._session.execute(query))]

    async def provider_stats(self, tenant_id: str, f: UsageFilter) -> dict[str, ProviderStats]:
        stats: dict[str, dict] = {}

        def entry(provider: str) -> dict:
            return stats.setdefault(provider, {"provider": provider})

        attempt_conditions = [A.tenant_id == tenant_id]
        if f.start is not None:
            attempt_conditions.append(A.event_time >= f.start)
        if f.end is not None:
            attempt_conditions.append(A.event_time < f.end)
        if f.agent_id:
            attempt_conditions.append(A.agent_id == f.agent_id)
        called = case((A.outcome != CIRCUIT_OPEN, 1), else_=0)
        failed = case((and_(A.outcome != CIRCUIT_OPEN, A.outcome != SUCCESS), 1), else_=0)
        skipped = case((A.outcome == CIRCUIT_OPEN, 1), else_=0)
        columns = [A.provider, func.sum(called), func.sum(failed), func.sum(skipped)]
        if self._postgres:
            # percentile_cont ignores NULLs: only successful calls count.
            successful_latency = case((A.outcome == SUCCESS, A.latency_ns))
            columns += [
                func.percentile_cont(0.5).within_group(successful_latency),
                func.percentile_cont(0.95).within_group(successful_latency),
            ]
        query = select(*columns).where(*attempt_conditions).group_by(A.provider)
        for provider, attempts, failures, skips, *percentiles in await self._session.execute(query):
            values = entry(provider)
            values.update(attempts=_int(attempts), failed_attempts=_int(failures), circuit_open_skips=_int(skips))
            if percentiles:
                values.update(latency_p50_ns=round(percentiles[0] or 0), latency_p95_ns=round(percentiles[1] or 0))
        if not self._postgres:
            latencies: dict[str, list[int]] = {}
            query = (
                select(A.provider, A.latency_ns)
                .where(*attempt_conditions, A.outcome == SUCCESS)
                .order_by(A.provider, A.latency_ns)
            )
            for provider, latency in await self._session.execute(query):
                latencies.setdefault(provider, []).append(latency)
            for provider, values in latencies.items():
                entry(provider).update(
                    latency_p50_ns=round(percentile_cont(values, 0.5)),
                    latency_p95_ns=round(percentile_cont(values, 0.95)),
                )

        # One scan of the events for the turn counts: (served by, started at) pairs.
        event_conditions = _event_filters(tenant_id, UsageFilter(start=f.start, end=f.end, agent_id=f.agent_id))
        pairs = (
            select(E.provider, E.started_provider, func.count())
            .where(*event_conditions)
            .group_by(E.provider, E.started_provider)
        )
        for served_by, started_at, turns in await self._session.execute(pairs):
            served = entry(served_by)
            served["turns_served"] = served.get("turns_served", 0) + _int(turns)
            if started_at:
                started = entry(started_at)
                started["turns_started"] = started.get("turns_started", 0) + _int(turns)
                if started_at != served_by:
                    started["turns_fallen_back"] = started.get("turns_fallen_back", 0) + _int(turns)
        return {provider: ProviderStats(**values) for provider, values in stats.items()}
