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
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_conversation.config import SERVICE, RelaySettings
from vocalbridge_conversation.repository import OutboxRelayRepository, PendingEvent

log = logging.getLogger(__name__)

HEALTH_NAME = "vocalbridge.conversation.v1.OutboxRelay"
# Codes after which resending the same batch cannot succeed.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


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
                self._failures = 0  # more may be waiting: go again at once

    async def deliver_once(self) -> int:
        """Sends one batch; returns events delivered, 0 when none were pending, -1 when billing failed."""
        async with self._db.system_transaction() as tx:
            rows = await OutboxRelayRepository(tx).pending(self._settings.batch_size)
        if not rows:
            return 0
        events = [usage_event_pb2.UsageEvent.FromString(row.payload) for row in rows]
        ids = [row.event_id for row in rows]
        try:
            await self._record(events)
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT:
                return await self._isolate(rows, events)
            log.warning(
                "billing unavailable; usage events stay queued",
                extra={"code": error.code().name, "pending_batch": len(ids)},
            )
            return -1
        await self._mark(ids)
        return len(ids)

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
    ) -> int:
        """A batch billing refuses outright: send its events one by one so one bad
        event cannot hold up the others; the bad one stays queued (and sinks to
        the back of the queue) for an operator, logged loudly."""
        delivered: list[str] = []
        for row, event in zip(rows, events, strict=True):
            try:
                await self._record([event])
                delivered.append(row.event_id)
            except grpc.aio.AioRpcError as single:
                if single.code() not in _PERMANENT:
                    break
                log.error("billing refused usage event %s: %s", row.event_id, single.details())
                async with self._db.system_transaction() as tx:
                    await OutboxRelayRepository(tx).note_attempt([row.event_id])
        await self._mark(delivered)
        return len(delivered)

    async def _mark(self, ids: list[str]) -> None:
        if ids:
            async with self._db.system_transaction() as tx:
                await OutboxRelayRepository(tx).mark_delivered(ids, self._clock())

    async def _report(self) -> None:
        lag = await self.lag()
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
