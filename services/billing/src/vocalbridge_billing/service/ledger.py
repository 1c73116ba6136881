"""The ledger's use case: recording usage (RecordUsage). The rules the relay relies on:

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

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from vocalbridge_billing.domain import (
    MAX_BATCH_EVENTS,
    MAX_REPORTED,
    LedgerEntry,
    NewUsageEvent,
    RecordResult,
    UsageEventConflict,
    UsageEventDraft,
    price_event,
    refuse,
    validate_event,
)
from vocalbridge_billing.repository import LedgerRepository, PriceRepository
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.validation import Violations

log = logging.getLogger("vocalbridge.billing")


class LedgerService:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_clock_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self._db = db
        self._clock = clock
        self._max_clock_skew = max_clock_skew

    async def record_usage(self, drafts: Sequence[UsageEventDraft]) -> RecordResult:
        now = self._clock()
        unique = self._validate(drafts, now)

        async with self._db.system_transaction() as session:
            price_list = await PriceRepository(session).all()
            entries = [price_event(event, price_list, now) for event in unique.values()]
            for entry in entries:
                _log_unpriced(entry)
            ledger = LedgerRepository(session)
            inserted = await ledger.insert_new(entries)
            skipped = [event_id for event_id in unique if event_id not in inserted]
            if skipped:
                recorded = await ledger.digests(skipped)
                conflicts = {event_id for event_id in skipped if recorded.get(event_id) != unique[event_id].digest}
                if conflicts:
                    _log_conflicts(conflicts)
                    raise UsageEventConflict(sorted(conflicts))  # rolls the whole batch back
            await ledger.add_attempts([entry for entry in entries if entry.event_id in inserted])
        for entry in entries:
            if entry.event_id in inserted and not entry.agrees_with_producer:
                _log_disagreement(entry)
        return RecordResult(accepted=len(inserted), duplicates=len(drafts) - len(inserted))

    def _validate(self, drafts: Sequence[UsageEventDraft], now: datetime) -> dict[str, NewUsageEvent]:
        """The batch's events by id, once each; refuses an invalid batch or one that
        repeats an id with different content."""
        violations = Violations()
        if not drafts or len(drafts) > MAX_BATCH_EVENTS:
            violations.add("events", f"must hold 1 to {MAX_BATCH_EVENTS} events (got {len(drafts)})")
        events = [
            validate_event(draft, f"events[{index}]", now, self._max_clock_skew, violations)
            for index, draft in enumerate(drafts[:MAX_BATCH_EVENTS])
        ]
        if violations:
            raise refuse(violations)

        unique: dict[str, NewUsageEvent] = {}
        conflicts: set[str] = set()
        for event in filter(None, events):  # all of them: an invalid event added a violation
            first = unique.setdefault(event.event_id, event)
            if first.digest != event.digest:
                conflicts.add(event.event_id)
        if conflicts:
            _log_conflicts(conflicts)
            raise UsageEventConflict(sorted(conflicts))
        return unique


def _log_conflicts(event_ids: Collection[str]) -> None:
    log.error(
        "usage events re-sent with different content were refused",
        extra={"eventIds": sorted(event_ids)[:MAX_REPORTED], "conflictCount": len(event_ids)},
    )


def _log_unpriced(entry: LedgerEntry) -> None:
    event = entry.event
    if entry.unpriced_units:
        log.warning(
            "usage without a price in effect is charged nothing",
            extra={
                "eventId": event.event_id,
                "provider": event.provider,
                "model": event.model,
                "units": [unit.value for unit in entry.unpriced_units],
            },
        )


def _log_disagreement(entry: LedgerEntry) -> None:
    event = entry.event
    log.warning(
        "usage cost differs from the producer's; billing's is recorded",
        extra={
            "eventId": event.event_id,
            "tenant": event.tenant_id,
            "reportedCostMicros": event.reported_cost_micros,
            "costMicros": entry.cost_micros,
            "reportedPrices": list(event.price_ids),
            "prices": sorted(entry.price_ids.values()),
        },
    )
