"""Billing data access: rows in, domain values out, and the one mapping between them.
Flushes, never commits: the use cases own the transactions.

Aggregations run in SQL (GROUP BY). The reports read the whole UTC days of their range
from the daily rollups (kept by the database as events land, migration 0002) and the
partial days at its edges from the ledger, in one query each: the same sums as the
ledger alone gives. Latency percentiles are estimated in Python from the merged
histograms (domain.histogram_percentile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute

from vocalbridge_billing.domain import (
    LATENCY_SUB_BUCKET_BITS,
    DaySplit,
    EventCursor,
    Grouping,
    LedgerEntry,
    PriceCursor,
    ProviderStats,
    RecordedAttempt,
    RecordedDelivery,
    RecordedEvent,
    Totals,
    UsageFilter,
    histogram_percentile,
)
from vocalbridge_billing.models import (
    PriceListRow,
    UsageAttemptRow,
    UsageDailyAgentLatencyRow,
    UsageDailyAttemptsRow,
    UsageDailyLatencyRow,
    UsageDailyTotalsRow,
    UsageEventRow,
)
from vocalbridge_common.pricing import PriceRow, PriceUnit, Quantities
from vocalbridge_common.repository import SystemRepository, TenantRepository
from vocalbridge_common.vocabulary import AttemptOutcome, Channel

E = UsageEventRow
A = UsageAttemptRow
R = UsageDailyTotalsRow
RA = UsageDailyAttemptsRow
RL = UsageDailyLatencyRow
RAL = UsageDailyAgentLatencyRow
_EVENTS = cast(Table, UsageEventRow.__table__)
_ATTEMPTS = cast(Table, UsageAttemptRow.__table__)

# The price row charged for each unit, one column per unit.
_PRICE_COLUMN = {
    PriceUnit.PER_1K_PROMPT_TOKENS: "prompt_price_id",
    PriceUnit.PER_1K_COMPLETION_TOKENS: "completion_price_id",
    PriceUnit.PER_AUDIO_SECOND: "audio_price_id",
    PriceUnit.PER_CHARACTER: "character_price_id",
}
_GROUP_COLUMN: dict[Grouping, InstrumentedAttribute[str]] = {
    Grouping.DAY: E.event_day,
    Grouping.AGENT: E.agent_id,
    Grouping.PROVIDER: E.provider,
    Grouping.CHANNEL: E.channel,
}


# -- rows ⇄ domain ------------------------------------------------------------------


def _price_of(row: PriceListRow) -> PriceRow:
    return PriceRow(row.id, row.provider, row.model, PriceUnit(row.unit), row.micros_per_unit, row.effective_time)


def _event_values(entry: LedgerEntry) -> dict[str, Any]:
    event = entry.event
    delivery = event.delivery
    return {
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "agent_id": event.agent_id,
        "agent_version": event.agent_version,
        "session_id": event.session_id,
        "message_id": event.message_id,
        "channel": event.channel.value,
        "provider": event.provider,
        "model": event.model,
        "prompt_tokens": event.quantities.prompt_tokens,
        "completion_tokens": event.quantities.completion_tokens,
        "audio_millis": event.quantities.audio_millis,
        "tts_characters": event.quantities.tts_characters,
        "cost_micros": entry.cost_micros,
        "reported_cost_micros": event.reported_cost_micros,
        **{column: entry.price_ids.get(unit) for unit, column in _PRICE_COLUMN.items()},
        "event_time": event.event_time,
        "event_day": entry.event_day,
        "record_time": entry.record_time,
        "delivery_provider": delivery.provider,
        "delivery_model": delivery.model,
        "fallback_used": delivery.fallback_used,
        "delivery_latency_ns": delivery.latency_ns,
        "attempt_count": entry.attempt_count,
        "failed_attempt_count": entry.failed_attempt_count,
        "circuit_open_skips": entry.circuit_open_skips,
        "started_provider": entry.started_provider,
        "content_sha256": event.digest,
    }


def _attempt_values(entry: LedgerEntry) -> list[dict[str, Any]]:
    event = entry.event
    return [
        {
            "event_id": event.event_id,
            "ordinal": ordinal,
            "tenant_id": event.tenant_id,
            "event_time": event.event_time,
            "agent_id": event.agent_id,
            "provider": attempt.provider,
            "outcome": attempt.outcome.value,
            "latency_ns": attempt.latency_ns,
            "backoff_ns": attempt.backoff_ns,
            "error_message": attempt.error_message,
        }
        for ordinal, attempt in enumerate(entry.attempts)
    ]


def _attempt_of(row: UsageAttemptRow) -> RecordedAttempt:
    return RecordedAttempt(row.provider, AttemptOutcome(row.outcome), row.latency_ns, row.backoff_ns, row.error_message)


def _price_ids(row: UsageEventRow) -> list[str]:
    """The price rows an event was charged at, in PriceUnit order."""
    return [
        price_id for price_id in (getattr(row, column) for column in _PRICE_COLUMN.values()) if price_id is not None
    ]


def _recorded_event(
    row: UsageEventRow, attempts: Sequence[UsageAttemptRow], prices: dict[str, PriceRow]
) -> RecordedEvent:
    return RecordedEvent(
        event_id=row.event_id,
        tenant_id=row.tenant_id,
        agent_id=row.agent_id,
        agent_version=row.agent_version,
        session_id=row.session_id,
        message_id=row.message_id,
        channel=Channel(row.channel),
        provider=row.provider,
        model=row.model,
        quantities=Quantities.from_audio_millis(
            row.prompt_tokens, row.completion_tokens, row.audio_millis, row.tts_characters
        ),
        cost_micros=row.cost_micros,
        prices=tuple(prices[price_id] for price_id in _price_ids(row)),
        event_time=row.event_time,
        record_time=row.record_time,
        delivery=RecordedDelivery(
            provider=row.delivery_provider,
            model=row.delivery_model,
            fallback_used=row.fallback_used,
            latency_ns=row.delivery_latency_ns,
            attempts=tuple(_attempt_of(attempt) for attempt in attempts),
        ),
    )


def _int(value: Any) -> int:
    return int(value or 0)  # PostgreSQL's sum(bigint) is numeric


# -- the price list ---------------------------------------------------------------------


class PriceRepository(SystemRepository):
    """The price list: one list for every tenant (no row-level security on it)."""

    async def all(self) -> list[PriceRow]:
        """The whole price list (a few rows per provider and unit)."""
        return [_price_of(row) for row in (await self.session.scalars(select(PriceListRow))).all()]

    async def add(self, price: PriceRow, *, create_time: datetime) -> None:
        self.session.add(
            PriceListRow(
                id=price.price_id,
                provider=price.provider,
                model=price.model,
                unit=price.unit.value,
                micros_per_unit=price.micros_per_unit,
                effective_time=price.effective_time,
                create_time=create_time,
            )
        )
        await self.session.flush()

    async def page(self, provider: str, after: PriceCursor | None, limit: int) -> list[PriceRow]:
        """Rows ordered by provider, model, unit, effective time and id, keyset-paged."""
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
        return [_price_of(row) for row in (await self.session.scalars(query)).all()]


# -- the ledger: writes -------------------------------------------------------------------


class LedgerRepository(SystemRepository):
    """Writes to the ledger. A batch names many tenants (the caller is a service), so it
    is written in a system transaction; each row carries its own tenant."""

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def insert_new(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """Inserts the events whose id is not recorded yet; returns the ids inserted.

        The event id is the primary key, so the database decides what is new. Rows go
        in event-id order, so concurrent batches that share ids wait on each other in
        one order instead of deadlocking.
        """
        if not entries:
            return set()
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        # On the Table, not the mapped class: a Core insert is compiled once and cached, where
        # the ORM's bulk insert compiles again for every batch.
        table = _EVENTS
        statement = (
            dialect_insert(table).on_conflict_do_nothing(index_elements=[table.c.event_id]).returning(table.c.event_id)
        )
        rows = sorted((_event_values(entry) for entry in entries), key=lambda row: str(row["event_id"]))
        return set((await self.session.execute(statement, rows)).scalars().all())

    async def digests(self, event_ids: Iterable[str]) -> dict[str, str]:
        """The content digest recorded for each of `event_ids` that is recorded."""
        query = select(E.event_id, E.content_sha256).where(E.event_id.in_(list(event_ids)))
        return {event_id: digest for event_id, digest in (await self.session.execute(query)).all()}

    async def add_attempts(self, entries: Sequence[LedgerEntry]) -> None:
        rows = [row for entry in entries for row in _attempt_values(entry)]
        if rows:
            # RETURNING makes it one multi-row INSERT (SQLAlchemy's "insertmanyvalues"), where a
            # plain executemany is one statement per row on asyncpg: the ledger's rollup trigger
            # runs once per statement.
            await self.session.execute(insert(_ATTEMPTS).returning(_ATTEMPTS.c.ordinal), rows)


# -- the ledger: a tenant's reads -----------------------------------------------------------


def _event_filters(tenant_id: str, f: UsageFilter) -> list[ColumnElement[bool]]:
    conditions = [E.tenant_id == tenant_id]
    if f.start is not None:
        conditions.append(E.event_time >= f.start)
    if f.end is not None:
        conditions.append(E.event_time < f.end)
    if f.agent_id:
        conditions.append(E.agent_id == f.agent_id)
    if f.provider:
        conditions.append(E.provider == f.provider)
    if f.channel is not None:
        conditions.append(E.channel == f.channel.value)
    if f.session_id:
        conditions.append(E.session_id == f.session_id)
    return conditions


class UsageRepository(TenantRepository):
    """A tenant's usage ledger, read: events, totals and provider performance (these from
    the daily rollups for the whole days of their range)."""

    async def page(self, f: UsageFilter, after: EventCursor | None, limit: int) -> list[RecordedEvent]:
        """Events oldest first, keyset-paged on (event_time, event_id), with their attempts and prices."""
        query = select(E).where(*_event_filters(self.tenant_id, f)).order_by(E.event_time, E.event_id).limit(limit)
        if after is not None:
            after_time, after_id = after
            query = query.where(
                tuple_(E.event_time, E.event_id) > tuple_(literal(after_time, E.event_time.type), literal(after_id))
            )
        rows = list((await self.session.scalars(query)).all())
        attempts = await self._attempts_of([row.event_id for row in rows])
        prices = await self._prices({price_id for row in rows for price_id in _price_ids(row)})
        return [_recorded_event(row, attempts[row.event_id], prices) for row in rows]

    async def _attempts_of(self, event_ids: Sequence[str]) -> dict[str, list[UsageAttemptRow]]:
        result: dict[str, list[UsageAttemptRow]] = {event_id: [] for event_id in event_ids}
        if event_ids:
            query = (
                select(A)
                .where(A.tenant_id == self.tenant_id, A.event_id.in_(list(event_ids)))
                .order_by(A.event_id, A.ordinal)
            )
            for row in (await self.session.scalars(query)).all():
                result[row.event_id].append(row)
        return result

    async def _prices(self, price_ids: set[str]) -> dict[str, PriceRow]:
        """The price rows the events named (the price list is global, and rows are never deleted)."""
        if not price_ids:
            return {}
        query = select(PriceListRow).where(PriceListRow.id.in_(sorted(price_ids)))
        return {row.id: _price_of(row) for row in (await self.session.scalars(query)).all()}

    # -- the reports: whole days from the rollups, the rest of the range from the ledger --

    async def totals(self, f: UsageFilter, split: DaySplit) -> Totals:
        """Sums over the filtered events of the range `split` cuts (f's own times aside)."""
        row = (await self.session.execute(self._summary(f, split, None))).one()
        return Totals(*(_int(value) for value in row))

    async def grouped_totals(self, f: UsageFilter, grouping: Grouping, split: DaySplit) -> list[tuple[str, Totals]]:
        """Sums per stored value of the grouping's column, ordered by it (as the database orders)."""
        result = await self.session.execute(self._summary(f, split, grouping))
        return [(key, Totals(*(_int(value) for value in values))) for key, *values in result]

    def _summary(self, f: UsageFilter, split: DaySplit, grouping: Grouping | None) -> Select[Any]:
        parts: list[Select[Any]] = []
        if split.days is not None:
            conditions = [R.tenant_id == self.tenant_id, *_days(R.day, split.days)]
            if f.agent_id:
                conditions.append(R.agent_id == f.agent_id)
            if f.provider:
                conditions.append(R.provider == f.provider)
            if f.channel is not None:
                conditions.append(R.channel == f.channel.value)
            keys = [_ROLLUP_GROUP_COLUMN[grouping].label("key")] if grouping else []
            sums = [func.sum(getattr(R, name)).label(name) for name in _TOTALS]
            parts.append(select(*keys, *sums).where(*conditions).group_by(*keys))
        for window in split.windows:
            keys = [_GROUP_COLUMN[grouping].label("key")] if grouping else []
            sums = [func.count().label("turns"), *(func.sum(getattr(E, name)).label(name) for name in _TOTALS[1:])]
            conditions = _event_filters(self.tenant_id, _within(f, window))
            parts.append(select(*keys, *sums).where(*conditions).group_by(*keys))
        return _merged(parts, ["key"] if grouping else [], _TOTALS)

    async def provider_stats(self, f: UsageFilter, split: DaySplit) -> dict[str, ProviderStats]:
        """How each provider did for the filtered turns of the range `split` cuts. Counts are
        exact; the latency percentiles are estimated from a histogram (histogram_percentile)."""
        stats: dict[str, dict[str, Any]] = {}

        def entry(provider: str) -> dict[str, Any]:
            return stats.setdefault(provider, {"provider": provider})

        attempts_query = self._attempt_counts(f, split)
        for provider, attempts, failures, skips in await self.session.execute(attempts_query):
            entry(provider).update(
                attempts=_int(attempts), failed_attempts=_int(failures), circuit_open_skips=_int(skips)
            )

        # Turn counts from (served by, started at) pairs.
        for served_by, started_at, turns in await self.session.execute(self._turn_pairs(f, split)):
            served = entry(served_by)
            served["turns_served"] = served.get("turns_served", 0) + _int(turns)
            if started_at:
                started = entry(started_at)
                started["turns_started"] = started.get("turns_started", 0) + _int(turns)
                if started_at != served_by:
                    started["turns_fallen_back"] = started.get("turns_fallen_back", 0) + _int(turns)

        histograms: dict[str, list[tuple[int, int]]] = {}
        for provider, bucket, calls in await self.session.execute(self._latency_histograms(f, split)):
            histograms.setdefault(provider, []).append((int(bucket), _int(calls)))
        for provider, histogram in histograms.items():
            histogram.sort()
            entry(provider).update(
                latency_p50_ns=round(histogram_percentile(histogram, 0.5) or 0),
                latency_p95_ns=round(histogram_percentile(histogram, 0.95) or 0),
            )
        return {provider: ProviderStats(**values) for provider, values in stats.items()}

    def _attempt_conditions(self, f: UsageFilter, window: Window) -> list[ColumnElement[bool]]:
        start, end = window
        conditions = [A.tenant_id == self.tenant_id, A.event_time < end]
        if start is not None:
            conditions.append(A.event_time >= start)
        if f.agent_id:
            conditions.append(A.agent_id == f.agent_id)
        return conditions

    def _attempt_counts(self, f: UsageFilter, split: DaySplit) -> Select[Any]:
        columns = ("attempts", "failed_attempts", "circuit_open_skips")
        parts: list[Select[Any]] = []
        if split.days is not None:
            conditions = [RA.tenant_id == self.tenant_id, *_days(RA.day, split.days)]
            if f.agent_id:
                conditions.append(RA.agent_id == f.agent_id)
            sums = [func.sum(getattr(RA, name)).label(name) for name in columns]
            parts.append(select(RA.provider.label("provider"), *sums).where(*conditions).group_by(RA.provider))
        circuit_open = AttemptOutcome.CIRCUIT_OPEN.value
        success = AttemptOutcome.SUCCESS.value
        called = case((A.outcome != circuit_open, 1), else_=0)
        failed = case((and_(A.outcome != circuit_open, A.outcome != success), 1), else_=0)
        skipped = case((A.outcome == circuit_open, 1), else_=0)
        for window in split.windows:
            sums = [func.sum(value).label(name) for value, name in zip((called, failed, skipped), columns, strict=True)]
            conditions = self._attempt_conditions(f, window)
            parts.append(select(A.provider.label("provider"), *sums).where(*conditions).group_by(A.provider))
        return _merged(parts, ["provider"], columns)

    def _turn_pairs(self, f: UsageFilter, split: DaySplit) -> Select[Any]:
        parts: list[Select[Any]] = []
        if split.days is not None:
            conditions = [R.tenant_id == self.tenant_id, *_days(R.day, split.days)]
            if f.agent_id:
                conditions.append(R.agent_id == f.agent_id)
            keys = (R.provider.label("provider"), R.started_provider.label("started_provider"))
            parts.append(select(*keys, func.sum(R.turns).label("turns")).where(*conditions).group_by(*keys))
        for window in split.windows:
            conditions = _event_filters(
                self.tenant_id, UsageFilter(start=window[0], end=window[1], agent_id=f.agent_id)
            )
            keys = (E.provider.label("provider"), E.started_provider.label("started_provider"))
            parts.append(select(*keys, func.count().label("turns")).where(*conditions).group_by(*keys))
        return _merged(parts, ["provider", "started_provider"], ("turns",))

    def _latency_histograms(self, f: UsageFilter, split: DaySplit) -> Select[Any]:
        parts: list[Select[Any]] = []
        if split.days is not None:
            # One agent's from the histogram per agent; every agent's from the one that sums them.
            if f.agent_id:
                conditions = [RAL.tenant_id == self.tenant_id, RAL.agent_id == f.agent_id, *_days(RAL.day, split.days)]
                keys = (RAL.provider.label("provider"), RAL.bucket.label("bucket"))
                calls = func.sum(RAL.calls).label("calls")
            else:
                conditions = [RL.tenant_id == self.tenant_id, *_days(RL.day, split.days)]
                keys = (RL.provider.label("provider"), RL.bucket.label("bucket"))
                calls = func.sum(RL.calls).label("calls")
            parts.append(select(*keys, calls).where(*conditions).group_by(*keys))
        bucket = latency_bucket_expression(_ATTEMPTS.c.latency_ns)
        for window in split.windows:
            conditions = [*self._attempt_conditions(f, window), A.outcome == AttemptOutcome.SUCCESS.value]
            keys = (A.provider.label("provider"), bucket.label("bucket"))
            parts.append(select(*keys, func.count().label("calls")).where(*conditions).group_by(A.provider, bucket))
        return _merged(parts, ["provider", "bucket"], ("calls",))


# The summed columns of the totals, in Totals' order (turns first).
_TOTALS = ("turns", "prompt_tokens", "completion_tokens", "audio_millis", "tts_characters", "cost_micros")
_ROLLUP_GROUP_COLUMN: dict[Grouping, InstrumentedAttribute[str]] = {
    Grouping.DAY: R.day,
    Grouping.AGENT: R.agent_id,
    Grouping.PROVIDER: R.provider,
    Grouping.CHANNEL: R.channel,
}
Window = tuple[datetime | None, datetime]


def _days(column: InstrumentedAttribute[str], days: tuple[str | None, str]) -> list[ColumnElement[bool]]:
    first, end = days
    conditions = [column < end]
    if first is not None:
        conditions.append(column >= first)
    return conditions


def _within(f: UsageFilter, window: Window) -> UsageFilter:
    return dataclasses.replace(f, start=window[0], end=window[1])


def _merged(parts: Sequence[Select[Any]], keys: list[str], sums: Sequence[str]) -> Select[Any]:
    """One query over the parts (rollup and ledger reads of the same columns, each grouped):
    their sums added per key, ordered by the keys."""
    if not parts:
        raise ValueError("a report reads at least one part")
    if len(parts) == 1:
        return parts[0].order_by(*(literal_column(key) for key in keys))
    union = union_all(*parts).subquery()
    key_columns = [union.c[key] for key in keys]
    return (
        select(*key_columns, *(func.sum(union.c[name]).label(name) for name in sums))
        .group_by(*key_columns)
        .order_by(*key_columns)
    )


def latency_bucket_expression(latency: ColumnElement[int]) -> ColumnElement[int]:
    """domain.latency_bucket in SQL, for both databases (integer comparisons and shifts)."""
    kept = LATENCY_SUB_BUCKET_BITS + 1

    def shifted(shift: int) -> ColumnElement[int]:
        return literal_column(str(shift << LATENCY_SUB_BUCKET_BITS)) + latency.op(">>")(literal_column(str(shift)))

    whens: list[tuple[ColumnElement[bool], ColumnElement[int]]] = [(latency < literal_column(str(2**kept)), latency)]
    for bits in range(kept + 1, 63):
        whens.append((latency < literal_column(str(2**bits)), shifted(bits - kept)))
    return case(*whens, else_=shifted(63 - kept))
