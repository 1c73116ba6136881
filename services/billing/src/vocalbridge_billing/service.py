"""Billing use cases. Each opens its own transaction.

Recording usage (RecordUsage) — the rules the relay relies on:

- A batch is validated whole first; any invalid event fails the whole batch with
  INVALID_ARGUMENT and BadRequest violations named `events[i].<field>`.
- The event id is the deduplication key (the table's primary key; INSERT … ON
  CONFLICT DO NOTHING). An id already recorded with the same content (SHA-256 of
  every field the producer sent) is a duplicate: counted, left unchanged.
- An id already recorded (or repeated in the batch) with DIFFERENT content is a
  conflict: the whole batch is refused with ALREADY_EXISTS, reason
  USAGE_EVENT_CONFLICT, metadata `eventIds` naming them, the ledger is left
  unchanged and the conflict logged. The relay must set those events aside and
  alert; resending the rest succeeds.
- Billing is authoritative for cost: it prices every event itself with the
  shared pricing function, at the price rows in effect at the event time, and
  stores its own cost and rows. The producer's cost and price names are kept
  for audit; a difference is logged as a warning, never refused (refusing would
  wedge the relay and lose usage). A producer that prices with the rows from
  ListPrices (or the same SEED_PRICES) computes the same cost by construction.
- Cross-tenant batches are written in one system transaction: each event names
  its tenant, and the caller is a service, not a tenant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from vocalbridge_billing.domain import (
    CHANNELS,
    CIRCUIT_OPEN,
    GROUPINGS,
    MAX_BATCH_EVENTS,
    MAX_ERROR_MESSAGE,
    MAX_REPORTED,
    RESOURCE_ID,
    SUCCESS,
    NewUsageEvent,
    ProviderStats,
    RecordedAttempt,
    RecordedEvent,
    RecordResult,
    Summary,
    Totals,
    UsageEventDraft,
    UsageFilter,
    validate_event,
)
from vocalbridge_billing.models import PriceListRow, UsageEventRow
from vocalbridge_billing.repository import PriceRepository, UsageRepository, to_price
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import AlreadyExists, FieldViolation, InvalidArgument, invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokenCodec
from vocalbridge_common.pricing import (
    DEFAULT_SPEECH_PROVIDER,
    SPEECH_UNITS,
    PriceRow,
    PriceUnit,
    charge,
    select_prices,
)
from vocalbridge_common.validation import Violations

log = logging.getLogger("vocalbridge.billing")

_PRICE_COLUMN = {
    PriceUnit.PER_1K_PROMPT_TOKENS: "prompt_price_id",
    PriceUnit.PER_1K_COMPLETION_TOKENS: "completion_price_id",
    PriceUnit.PER_AUDIO_SECOND: "audio_price_id",
    PriceUnit.PER_CHARACTER: "character_price_id",
}
_GROUP_COLUMN = {
    "DAY": UsageEventRow.event_day,
    "AGENT": UsageEventRow.agent_id,
    "PROVIDER": UsageEventRow.provider,
    "CHANNEL": UsageEventRow.channel,
}


class UsageEventConflict(AlreadyExists):
    default_reason = "USAGE_EVENT_CONFLICT"

    def __init__(self, event_ids: Sequence[str]) -> None:
        named = sorted(event_ids)
        shown = ",".join(named[:MAX_REPORTED])
        super().__init__(
            f"{len(named)} usage event id(s) already recorded with different content; nothing in the batch was "
            f"recorded: {shown}",
            metadata={"eventIds": shown, "conflictCount": str(len(named))},
        )


def _refuse(violations: Violations) -> InvalidArgument:
    error = invalid_fields(violations[:MAX_REPORTED])
    if len(violations) > MAX_REPORTED:
        error.message = f"{len(violations)} invalid fields, the first {MAX_REPORTED} shown: {error.message}"
        error.args = (error.message,)
    return error


def page_size_or_refuse(page_size: int) -> int:
    """0 means the default; 1 to 1000 as asked; anything else is refused (not clamped)."""
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 0 and {MAX_PAGE_SIZE}",
            reason="INVALID_PAGE_SIZE",
            field_violations=[FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")],
        )
    return page_size


@dataclass(frozen=True)
class Page:
    items: list
    next_page_token: str


@dataclass(frozen=True)
class UsageQuery:
    """Filters of the analytics RPCs as the caller sent them (resource names, enum names)."""

    start: datetime | None = None
    end: datetime | None = None
    agent: str = ""
    provider: str = ""
    channel: str = ""  # "" = any; CHANNEL_TEXT / CHANNEL_VOICE; anything else is invalid
    session: str = ""


class BillingService:
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokenCodec,
        clock: Callable[[], datetime] = utcnow,
        max_clock_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self._db = db
        self._page_tokens = page_tokens
        self._clock = clock
        self._max_clock_skew = max_clock_skew

    # -- the ledger -------------------------------------------------------------

    async def record_usage(self, drafts: Sequence[UsageEventDraft]) -> RecordResult:
        now = self._clock()
        violations = Violations()
        if not drafts or len(drafts) > MAX_BATCH_EVENTS:
            violations.add("events", f"must hold 1 to {MAX_BATCH_EVENTS} events (got {len(drafts)})")
        events = [
            validate_event(draft, f"events[{index}]", now, self._max_clock_skew, violations)
            for index, draft in enumerate(drafts[:MAX_BATCH_EVENTS])
        ]
        if violations:
            raise _refuse(violations)

        unique: dict[str, NewUsageEvent] = {}
        conflicts: set[str] = set()
        for event in events:
            first = unique.setdefault(event.event_id, event)
            if first.digest != event.digest:
                conflicts.add(event.event_id)
        if conflicts:
            self._log_conflicts(conflicts)
            raise UsageEventConflict(sorted(conflicts))

        mismatches: list[dict] = []
        async with self._db.system_transaction() as session:
            price_list = await PriceRepository(session).all()
            rows, attempts = [], []
            for event in unique.values():
                row, event_attempts, mismatch = self._ledger_entry(event, price_list, now)
                rows.append(row)
                attempts.append(event_attempts)
                if mismatch:
                    mismatches.append(mismatch)
            repository = UsageRepository(session)
            inserted = await repository.insert_new(rows)
            skipped = [event_id for event_id in unique if event_id not in inserted]
            if skipped:
                recorded = await repository.digests(skipped)
                conflicts = {event_id for event_id in skipped if recorded.get(event_id) != unique[event_id].digest}
                if conflicts:
                    self._log_conflicts(conflicts)
                    raise UsageEventConflict(sorted(conflicts))  # rolls the whole batch back
            await repository.add_attempts(
                [
                    attempt
                    for row, event_attempts in zip(rows, attempts, strict=True)
                    if row["event_id"] in inserted
                    for attempt in event_attempts
                ]
            )
        for mismatch in mismatches:
            if mismatch["eventId"] in inserted:
                log.warning("usage cost differs from the producer's; billing's is recorded", extra=mismatch)
        return RecordResult(accepted=len(inserted), duplicates=len(drafts) - len(inserted))

    @staticmethod
    def _log_conflicts(event_ids) -> None:
        log.error(
            "usage events re-sent with different content were refused",
            extra={"eventIds": sorted(event_ids)[:MAX_REPORTED], "conflictCount": len(event_ids)},
        )

    @staticmethod
    def _ledger_entry(event: NewUsageEvent, price_list: list[PriceRow], now: datetime):
        by_id = {row.price_id: row for row in price_list}
        speech_provider = DEFAULT_SPEECH_PROVIDER
        for price_id in event.price_ids:
            named = by_id.get(price_id)
            if named is not None and named.unit in SPEECH_UNITS:
                speech_provider = named.provider
        prices = select_prices(price_list, event.provider, event.model, speech_provider, event.event_time)
        result = charge(event.quantities, prices)
        used = {row.unit: row.price_id for row in result.prices_used}
        mismatch = None
        if result.cost_micros != event.reported_cost_micros or sorted(used.values()) != sorted(event.price_ids):
            mismatch = {
                "eventId": event.event_id,
                "tenant": event.tenant_id,
                "reportedCostMicros": event.reported_cost_micros,
                "costMicros": result.cost_micros,
                "reportedPrices": list(event.price_ids),
                "prices": sorted(used.values()),
            }
        if result.unpriced_units:
            log.warning(
                "usage without a price in effect is charged nothing",
                extra={
                    "eventId": event.event_id,
                    "provider": event.provider,
                    "model": event.model,
                    "units": [unit.value for unit in result.unpriced_units],
                },
            )
        delivery = event.delivery
        attempts = delivery.attempts
        row = {
            "event_id": event.event_id,
            "tenant_id": event.tenant_id,
            "agent_id": event.agent_id,
            "agent_version": event.agent_version,
            "session_id": event.session_id,
            "message_id": event.message_id,
            "channel": event.channel,
            "provider": event.provider,
            "model": event.model,
            "prompt_tokens": event.quantities.prompt_tokens,
            "completion_tokens": event.quantities.completion_tokens,
            "audio_millis": event.quantities.audio_millis,
            "tts_characters": event.quantities.tts_characters,
            "cost_micros": result.cost_micros,
            "reported_cost_micros": event.reported_cost_micros,
            **{column: used.get(unit) for unit, column in _PRICE_COLUMN.items()},
            "event_time": event.event_time,
            "event_day": event.event_time.astimezone(UTC).strftime("%Y-%m-%d"),
            "record_time": now,
            "delivery_provider": delivery.provider,
            "delivery_model": delivery.model,
            "fallback_used": delivery.fallback_used,
            "delivery_latency_ns": delivery.latency_ns,
            "attempt_count": sum(1 for a in attempts if a.outcome != CIRCUIT_OPEN),
            "failed_attempt_count": sum(1 for a in attempts if a.outcome not in (SUCCESS, CIRCUIT_OPEN)),
            "circuit_open_skips": sum(1 for a in attempts if a.outcome == CIRCUIT_OPEN),
            "started_provider": attempts[0].provider if attempts else "",
            "content_sha256": event.digest,
        }
        attempt_rows = [
            {
                "event_id": event.event_id,
                "ordinal": ordinal,
                "tenant_id": event.tenant_id,
                "event_time": event.event_time,
                "agent_id": event.agent_id,
                "provider": attempt.provider,
                "outcome": attempt.outcome,
                "latency_ns": attempt.latency_ns,
                "backoff_ns": attempt.backoff_ns,
                "error_message": attempt.error_message[:MAX_ERROR_MESSAGE],
            }
            for ordinal, attempt in enumerate(attempts)
        ]
        return row, attempt_rows, mismatch

    async def list_usage_events(self, tenant_id: str, query: UsageQuery, page_size: int, page_token: str) -> Page:
        violations = Violations()
        limit = self._page_size(violations, page_size)
        usage_filter = self._filter(violations, query, default_end=None)
        if violations:
            raise invalid_fields(violations)
        fingerprint = self._fingerprint("usageEvents", tenant_id, usage_filter)
        after = self._page_tokens.decode(page_token, fingerprint)
        if after is not None:
            after = [datetime.fromisoformat(after[0]), after[1]]
        async with self._db.tenant_transaction(tenant_id) as session:
            repository = UsageRepository(session)
            rows = await repository.page(tenant_id, usage_filter, after, limit + 1)
            attempts = await repository.attempts_of(tenant_id, [row.event_id for row in rows[:limit]])
            prices = {price.price_id: price for price in await PriceRepository(session).all()}
        events = [
            RecordedEvent(
                row=row,
                attempts=tuple(
                    RecordedAttempt(a.provider, a.outcome, a.latency_ns, a.backoff_ns, a.error_message)
                    for a in attempts[row.event_id]
                ),
                prices=tuple(
                    prices[price_id]
                    for price_id in (getattr(row, column) for column in _PRICE_COLUMN.values())
                    if price_id is not None
                ),
            )
            for row in rows[:limit]
        ]
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = self._page_tokens.encode(fingerprint, [last.event_time.astimezone(UTC).isoformat(), last.event_id])
        return Page(events, token)

    # -- analytics ----------------------------------------------------------------

    async def usage_summary(self, tenant_id: str, query: UsageQuery, group_by: str) -> Summary:
        violations = Violations()
        usage_filter = self._filter(violations, query, default_end=self._clock())
        if group_by and group_by not in GROUPINGS:
            violations.add("group_by", "must be DAY, AGENT, PROVIDER, CHANNEL or unset")
        if violations:
            raise invalid_fields(violations)
        async with self._db.tenant_transaction(tenant_id) as session:
            repository = UsageRepository(session)
            if not group_by:
                ((_, totals),) = await repository.totals(tenant_id, usage_filter)
                return Summary(totals, ())
            grouped = await repository.totals(tenant_id, usage_filter, _GROUP_COLUMN[group_by])
        prefix = "agents/" if group_by == "AGENT" else ""
        groups = tuple((prefix + key, totals) for key, totals in grouped)
        total = Totals()
        for _, totals in groups:
            total += totals
        return Summary(total, groups)

    async def provider_performance(self, tenant_id: str, query: UsageQuery) -> list[ProviderStats]:
        violations = Violations()
        usage_filter = self._filter(violations, query, default_end=self._clock())
        if violations:
            raise invalid_fields(violations)
        async with self._db.tenant_transaction(tenant_id) as session:
            stats = await UsageRepository(session).provider_stats(tenant_id, usage_filter)
        return [stats[provider] for provider in sorted(stats)]

    # -- prices -----------------------------------------------------------------------

    async def list_prices(self, provider: str, page_size: int, page_token: str) -> Page:
        violations = Violations()
        limit = self._page_size(violations, page_size)
        if len(provider) > 64:
            violations.add("provider", "must be at most 64 characters")
        if violations:
            raise invalid_fields(violations)
        fingerprint = json.dumps({"q": "prices", "provider": provider}, sort_keys=True)
        after = self._page_tokens.decode(page_token, fingerprint)
        if after is not None:
            after = [*after[:3], datetime.fromisoformat(after[3]), after[4]]
        async with self._db.system_transaction() as session:
            rows = await PriceRepository(session).page(provider, after, limit + 1)
        prices = [to_price(row) for row in rows[:limit]]
        token = ""
        if len(rows) > limit:
            last = prices[-1]
            token = self._page_tokens.encode(
                fingerprint,
                [
                    last.provider,
                    last.model,
                    last.unit.value,
                    last.effective_time.astimezone(UTC).isoformat(),
                    last.price_id,
                ],
            )
        return Page(prices, token)

    async def add_price(
        self, provider: str, model: str, unit: PriceUnit | str, micros_per_unit: int, effective_time: datetime
    ) -> PriceRow:
        """Adds a price row (an operator action; no RPC in the contract yet). A row in
        effect is never changed, so a new row may not take effect in the past."""
        now = self._clock()
        violations = Violations()
        if not provider or len(provider) > 64:
            violations.add("provider", "is required, at most 64 characters")
        if len(model) > 100:
            violations.add("model", "must be at most 100 characters")
        if unit not in {member.value for member in PriceUnit}:
            violations.add("unit", "must be a PriceUnit")
        if micros_per_unit < 0:
            violations.add("micros_per_unit", "must not be negative")
        if effective_time.tzinfo is None or effective_time < now:
            violations.add("effective_time", "must be a time-zone-aware time, not in the past")
        if violations:
            raise invalid_fields(violations)
        row = PriceListRow(
            id=new_id("prc"),
            provider=provider,
            model=model,
            unit=PriceUnit(unit).value,
            micros_per_unit=micros_per_unit,
            effective_time=effective_time.astimezone(UTC),
            create_time=now,
        )
        async with self._db.system_transaction() as session:
            await PriceRepository(session).add(row)
        return to_price(row)

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _page_size(violations: Violations, page_size: int) -> int:
        try:
            return page_size_or_refuse(page_size)
        except InvalidArgument as error:
            violations.extend(error.field_violations)
            return DEFAULT_PAGE_SIZE

    @staticmethod
    def _filter(violations: Violations, query: UsageQuery, default_end: datetime | None) -> UsageFilter:
        agent_id = session_id = ""
        if query.agent:
            head, _, agent_id = query.agent.partition("/")
            if head != "agents" or not RESOURCE_ID.match(agent_id):
                violations.add("agent", "must be `agents/{agent_id}`")
        if query.session:
            head, _, session_id = query.session.partition("/")
            if head != "sessions" or not RESOURCE_ID.match(session_id):
                violations.add("session", "must be `sessions/{session_id}`")
        if len(query.provider) > 64:
            violations.add("provider", "must be at most 64 characters")
        if query.channel and query.channel not in CHANNELS:
            violations.add("channel", "must be CHANNEL_TEXT, CHANNEL_VOICE or unset")
        start = query.start.astimezone(UTC) if query.start else None
        end = query.end.astimezone(UTC) if query.end else default_end
        if start is not None and end is not None and start >= end:
            if query.end is not None:
                violations.add("end_time", "must be after start_time")
            else:
                violations.add("start_time", "must be before end_time, which defaults to now")
        return UsageFilter(start, end, agent_id, query.provider, query.channel, session_id)

    @staticmethod
    def _fingerprint(collection: str, tenant_id: str, usage_filter: UsageFilter) -> str:
        """What a page token is bound to: the collection, the tenant and every filter."""
        fields = asdict(usage_filter)
        for name in ("start", "end"):
            fields[name] = fields[name].isoformat() if fields[name] else None
        return json.dumps({"q": collection, "t": tenant_id, **fields}, sort_keys=True)
