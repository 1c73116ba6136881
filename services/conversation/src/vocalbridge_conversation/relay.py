"""The billing outbox relay: delivers usage events, written in the same
transaction as the replies they bill, to billing's RecordUsage in batches.

Billing deduplicates on the event id, so delivering a batch twice (a crash
between RecordUsage and marking the rows delivered) is harmless: usage may be
delayed by an outage, never lost or doubled. While billing is down the relay
backs off (exponential, full jitter) and reports its lag: pending count and
age of the oldest pending event, in its logs and as the health status of
`vocalbridge.conversation.v1.OutboxRelay` (NOT_SERVING past the lag alert).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from grpc_health.v1 import health, health_pb2

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc, usage_event_pb2
from vocalbridge_common import metrics
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.telemetry import continue_traces
from vocalbridge_conversation.config import SERVICE, RelaySettings
from vocalbridge_conversation.repository import OutboxRelayRepository, PendingEvent

log = logging.getLogger(__name__)

HEALTH_NAME = "vocalbridge.conversation.v1.OutboxRelay"
# Codes after which resending the same batch cannot succeed.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}

# The lag, as measured at each report (every relay sees the same outbox: a scrape shows the
# highest of the workers), and what the relays delivered.
RELAY_PENDING = metrics.gauge("relay_pending_events", "Usage events in the outbox not yet delivered to billing.")
RELAY_OLDEST_AGE = metrics.gauge("relay_oldest_age_seconds", "Age of the oldest usage event not yet delivered.")
RELAY_DELIVERED = metrics.counter("relay_delivered_events", "Usage events delivered to billing by the outbox relay.")


@dataclass(frozen=True)
class _Sent:
    """What became of a batch: delivered, refused by billing for good (they sink to the back of
    the queue), or not sent at all (billing unavailable)."""

    ids: list[str]
    refused: list[str]
    failed: bool = False

    @property
    def count(self) -> int:
        return -1 if self.failed else len(self.ids)


@dataclass(frozen=True)
class Lag:
    pending: int
    oldest_age_seconds: float


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        channel: grpc.aio.Channel,
        signer: IdentitySigner,
        settings: RelaySettings,
        *,
        health: health.aio.HealthServicer | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._signer = signer
        self._settings = settings
        self._lag_alert = settings.lag_alert_seconds
        self._health = health
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._failures = 0
        self._last_lag_log = 0.0
        self._last_report = 0.0

    async def lag(self) -> Lag:
        async with self._db.system_transaction() as tx:
            lag = await OutboxRelayRepository(tx).lag()
        age = (self._clock() - lag.oldest).total_seconds() if lag.oldest is not None else 0.0
        return Lag(lag.pending, max(0.0, age))

    async def run_forever(self) -> None:
        while True:
            try:
                delivered = await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay iteration failed")
                delivered = -1
            if delivered > 0:
                RELAY_DELIVERED.inc(delivered)
            if delivered <= 0 or time.monotonic() - self._last_report >= self._settings.report_interval_seconds:
                await self._report()
            if delivered < 0:
                self._failures += 1
                ceiling = min(
                    self._settings.backoff_cap_seconds, self._settings.backoff_base_seconds * 2**self._failures
                )
                await self._sleep(self._rng.uniform(0, ceiling))
            elif delivered == 0:
                self._failures = 0
                await self._sleep(self._settings.poll_interval_seconds)
            else:
                self._failures = 0
                if delivered < self._settings.batch_size:
                    # Let the next batch gather: a batch costs about the same whatever its size.
                    await self._sleep(self._settings.linger_seconds)
                # A full batch: more may be waiting, go again at once.

    async def deliver_once(self) -> int:
        """Sends one batch; returns events delivered, 0 when none were pending, -1 when billing failed.

        On PostgreSQL the batch stays locked (FOR UPDATE SKIP LOCKED) from the read until it is
        marked delivered, in one transaction: relays of several processes or replicas send
        disjoint batches. (Billing deduplicates anyway: this only saves sending twice.) On
        SQLite, whose single writer cannot hold a transaction across the call, the batch is read,
        sent and marked in turn."""
        if not self._db.postgres:
            async with self._db.system_transaction() as tx:
                rows = await OutboxRelayRepository(tx).pending(self._settings.batch_size)
            if not rows:
                return 0
            sent = await self._send(rows)
            if sent.ids or sent.refused:
                async with self._db.system_transaction() as tx:
                    await self._settle(OutboxRelayRepository(tx), sent)
            return sent.count
        async with self._db.system_transaction() as tx:
            relay = OutboxRelayRepository(tx)
            rows = await relay.pending(self._settings.batch_size, lock=True)
            if not rows:
                return 0
            sent = await self._send(rows)
            await self._settle(relay, sent)
            return sent.count

    async def _send(self, rows: Sequence[PendingEvent]) -> _Sent:
        events = [usage_event_pb2.UsageEvent.FromString(row.payload) for row in rows]
        try:
            with continue_traces("outbox relay batch", [row.event_id for row in rows]):
                await self._record(events)
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT:
                return await self._isolate(rows, events)
            log.warning(
                "billing unavailable; usage events stay queued",
                extra={"code": error.code().name, "pending_batch": len(rows)},
            )
            return _Sent([], [], failed=True)
        return _Sent([row.event_id for row in rows], [])

    async def _settle(self, relay: OutboxRelayRepository, sent: _Sent) -> None:
        if sent.ids:
            await relay.mark_delivered(sent.ids, self._clock())
        if sent.refused:
            await relay.note_attempt(sent.refused)

    async def _record(self, events: Sequence[usage_event_pb2.UsageEvent]) -> None:
        # The relay's own identity (no tenant, internal scope): each event names its tenant.
        await self._stub.RecordUsage(
            billing_service_pb2.RecordUsageRequest(events=events),
            metadata=service_metadata(self._signer, SERVICE),
            timeout=10,
        )

    async def _isolate(
        self,
        rows: Sequence[PendingEvent],
        events: Sequence[usage_event_pb2.UsageEvent],
    ) -> _Sent:
        """A batch billing refuses outright: send its events one by one so one bad
        event cannot hold up the others; the bad one stays queued (and sinks to
        the back of the queue) for an operator, logged loudly."""
        delivered: list[str] = []
        refused: list[str] = []
        for row, event in zip(rows, events, strict=True):
            try:
                await self._record([event])
                delivered.append(row.event_id)
            except grpc.aio.AioRpcError as single:
                if single.code() not in _PERMANENT:
                    break
                log.error("billing refused usage event %s: %s", row.event_id, single.details())
                refused.append(row.event_id)
        return _Sent(delivered, refused)

    async def _report(self) -> None:
        self._last_report = time.monotonic()
        lag = await self.lag()
        RELAY_PENDING.set(lag.pending)
        RELAY_OLDEST_AGE.set(lag.oldest_age_seconds)
        now = time.monotonic()
        if lag.pending and now - self._last_lag_log >= 10:
            self._last_lag_log = now
            log.info(
                "outbox lag", extra={"pending": lag.pending, "oldest_age_seconds": round(lag.oldest_age_seconds, 1)}
            )
        if self._health is not None:
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if lag.oldest_age_seconds > self._lag_alert
                else health_pb2.HealthCheckResponse.SERVING
            )
            await self._health.set(HEALTH_NAME, status)
