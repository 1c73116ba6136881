"""The billing outbox, once for every service that bills: a usage event is written in the
same transaction as the result it bills, and a relay delivers the events to billing's
RecordUsage in batches.

Billing deduplicates on the event id, so delivering a batch twice (a crash between
RecordUsage and marking the rows delivered) is harmless: usage may be delayed by an
outage, never lost or doubled. While billing is down the relay backs off (exponential,
full jitter) and reports its lag: pending count, refused count and age of the oldest
pending event, in its logs and as the health status `vocalbridge.<service>.v1.OutboxRelay`
(NOT_SERVING past the lag alert).

Events go in order of age. An event billing refuses for good (INVALID_ARGUMENT,
FAILED_PRECONDITION, ALREADY_EXISTS) is logged and waits before it is offered again, its
own wait doubling with every refusal up to a cap (`refused_backoff_*`), so it neither
holds up the events behind it nor comes back on every poll; it stays in the outbox, counted
as refused in the lag, until billing accepts it (an operator fixes billing or the event).

Each service keeps its outbox in a table of its own schema: `OutboxColumns` gives the
columns, the repositories and the relay take the service's model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2
from sqlalchemy import Index, Integer, LargeBinary, String, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc, usage_event_pb2
from vocalbridge_common import metrics
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.config import Env
from vocalbridge_common.db import Database, UtcDateTime, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.repository import SystemRepository, TenantRepository
from vocalbridge_common.telemetry import continue_traces

log = logging.getLogger(__name__)

# The lag, as measured at each report (every relay sees the same outbox: a scrape shows the
# highest of the workers), and what the relays delivered.
RELAY_PENDING = metrics.gauge("relay_pending_events", "Usage events in the outbox not yet delivered to billing.")
RELAY_REFUSED = metrics.gauge(
    "relay_refused_events", "Usage events in the outbox that billing refused, each waiting to be offered again."
)
RELAY_OLDEST_AGE = metrics.gauge("relay_oldest_age_seconds", "Age of the oldest usage event not yet delivered.")
RELAY_DELIVERED = metrics.counter("relay_delivered_events", "Usage events delivered to billing by the outbox relay.")

# Codes after which resending the same event cannot succeed.
PERMANENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}
)


def health_name(service: str) -> str:
    """The health service name under which a service's relay reports its lag."""
    return f"vocalbridge.{service}.v1.OutboxRelay"


@dataclass(frozen=True)
class RelaySettings:
    """A billing outbox relay (VB_RELAY_*, the same variables in every service)."""

    batch_size: int = 100
    poll_interval_seconds: float = 0.5
    # While billing is unavailable: full-jitter exponential backoff from base to cap.
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    # Past this age of the oldest pending event the relay's health turns NOT_SERVING.
    lag_alert_seconds: float = 300.0
    # After a batch smaller than batch_size, wait this long so the next one gathers events.
    linger_seconds: float = 0.1
    # The lag (pending events, oldest age) is measured at most this often while delivering.
    report_interval_seconds: float = 2.0
    # An event billing refused is offered again after this, doubling with each refusal, up to the cap.
    refused_backoff_base_seconds: float = 10.0
    refused_backoff_cap_seconds: float = 3600.0

    @classmethod
    def from_env(cls, env: Env) -> RelaySettings:
        return cls(
            batch_size=env.int("VB_RELAY_BATCH_SIZE", cls.batch_size),
            poll_interval_seconds=env.float("VB_RELAY_POLL_INTERVAL_MS", cls.poll_interval_seconds * 1000) / 1000,
            backoff_base_seconds=env.float("VB_RELAY_BACKOFF_BASE_MS", cls.backoff_base_seconds * 1000) / 1000,
            backoff_cap_seconds=env.float("VB_RELAY_BACKOFF_CAP_MS", cls.backoff_cap_seconds * 1000) / 1000,
            lag_alert_seconds=env.float("VB_RELAY_LAG_ALERT_SECONDS", cls.lag_alert_seconds),
            linger_seconds=env.float("VB_RELAY_LINGER_MS", cls.linger_seconds * 1000) / 1000,
            refused_backoff_base_seconds=env.float(
                "VB_RELAY_REFUSED_BACKOFF_BASE_SECONDS", cls.refused_backoff_base_seconds
            ),
            refused_backoff_cap_seconds=env.float(
                "VB_RELAY_REFUSED_BACKOFF_CAP_SECONDS", cls.refused_backoff_cap_seconds
            ),
        )


# -- the table and its statements ----------------------------------------------------------


class OutboxColumns:
    """The columns of a service's outbox table: mix into a model of the service's own
    DeclarativeBase with its `__tablename__` (the index is named after the table)."""

    __tablename__: str  # the service's model names its table

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index(f"ix_{cls.__tablename__}_pending", "delivered_time", "create_time"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # a serialized billing.v1.UsageEvent
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Times billing refused the event; while it waits after a refusal, when it may go again.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


@dataclass(frozen=True)
class PendingEvent:
    """A usage event waiting for the relay: its id, its serialized billing.v1.UsageEvent and
    how often billing refused it so far."""

    event_id: str
    payload: bytes
    attempts: int = 0


@dataclass(frozen=True)
class OutboxLag:
    pending: int
    refused: int  # of the pending, those billing refused at least once
    oldest: datetime | None  # creation time of the oldest pending event


class OutboxRepository(TenantRepository):
    """Writes a tenant's usage events into `table`, in the transaction of what they bill."""

    def __init__(self, session: AsyncSession, tenant_id: str, table: type[OutboxColumns]) -> None:
        super().__init__(session, tenant_id)
        self._table: Any = table

    async def add(self, event_id: str, payload: bytes, create_time: datetime) -> None:
        await self.session.execute(
            insert(self._table).values(
                event_id=event_id,
                tenant_id=self.tenant_id,
                payload=payload,
                create_time=create_time,
                delivered_time=None,
                attempts=0,
            )
        )


class OutboxRelayRepository(SystemRepository):
    """The relay's view of `table`: every tenant's events (system transactions only)."""

    def __init__(self, session: AsyncSession, table: type[OutboxColumns]) -> None:
        super().__init__(session)
        self._table: Any = table

    async def pending(self, limit: int, now: datetime, *, lock: bool = False) -> list[PendingEvent]:
        """The oldest undelivered events that are not waiting out a refusal. With `lock`, they
        stay locked until the transaction ends and events another transaction holds are
        skipped, so relays running side by side (several processes or replicas) send disjoint
        batches (PostgreSQL; SQLite has one writer)."""
        t = self._table
        query = (
            select(t.event_id, t.payload, t.attempts)
            .where(t.delivered_time.is_(None), or_(t.retry_time.is_(None), t.retry_time <= now))
            .order_by(t.create_time, t.event_id)
            .limit(limit)
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        rows = await self.session.execute(query)
        return [PendingEvent(event_id, payload, attempts) for event_id, payload, attempts in rows]

    async def mark_delivered(self, event_ids: Sequence[str], when: datetime) -> None:
        t = self._table
        await self.session.execute(update(t).where(t.event_id.in_(event_ids)).values(delivered_time=when))

    async def note_refused(self, event_id: str, retry_time: datetime) -> None:
        t = self._table
        await self.session.execute(
            update(t).where(t.event_id == event_id).values(attempts=t.attempts + 1, retry_time=retry_time)
        )

    async def lag(self) -> OutboxLag:
        t = self._table
        query = select(
            func.count(), func.coalesce(func.sum(case((t.attempts > 0, 1), else_=0)), 0), func.min(t.create_time)
        ).where(t.delivered_time.is_(None))
        count, refused, oldest = (await self.session.execute(query)).one()
        return OutboxLag(int(count), int(refused), oldest)


# -- the relay ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    pending: int
    oldest_age_seconds: float
    refused: int = 0


@dataclass
class _Batch:
    """What became of a batch: events delivered, events billing refused (each with the time it
    may go again), and whether billing was unavailable (the rest stays as it was)."""

    delivered: list[str] = field(default_factory=list)
    refused: list[tuple[str, datetime]] = field(default_factory=list)
    unavailable: bool = False


class OutboxRelay:
    """Delivers `table`'s events to billing with `service`'s own identity (no tenant, the
    internal scope): each event names its tenant."""

    def __init__(
        self,
        db: Database,
        table: type[OutboxColumns],
        channel: grpc.aio.Channel,
        signer: IdentitySigner,
        settings: RelaySettings,
        *,
        service: str,
        health: health.aio.HealthServicer | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._table = table
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._signer = signer
        self._settings = settings
        self._service = service
        self.health_name = health_name(service)
        self._health = health
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._failures = 0
        self._last_lag_log = 0.0
        self._last_report = 0.0

    async def announce(self) -> None:
        """Reports SERVING under the relay's health name (call before run_forever)."""
        if self._health is not None:
            await self._health.set(self.health_name, health_pb2.HealthCheckResponse.SERVING)

    async def lag(self) -> Lag:
        async with self._db.system_transaction() as tx:
            lag = await OutboxRelayRepository(tx, self._table).lag()
        age = (self._clock() - lag.oldest).total_seconds() if lag.oldest is not None else 0.0
        return Lag(lag.pending, max(0.0, age), lag.refused)

    async def run_forever(self) -> None:
        """Delivers until cancelled. Nothing else ends it: an iteration that fails (billing or
        the database unreachable, its lag report included) is logged and backed off."""
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
                try:
                    await self._report()
                except Exception:
                    # The lag is read from the database. Raised from here, this would end the
                    # loop, and every later usage event would wait in the outbox, unbilled,
                    # until the process restarts.
                    log.exception("outbox lag could not be measured")
                    if delivered == 0:
                        delivered = -1  # back off as after a failed delivery
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
        """Sends one batch; returns events delivered (0 when none were pending or billing refused
        every one), -1 when billing was unavailable.

        On PostgreSQL the batch stays locked (FOR UPDATE SKIP LOCKED) from the read until it is
        settled, in one transaction: relays of several processes or replicas send disjoint
        batches. (Billing deduplicates anyway: this only saves sending twice.) On SQLite, whose
        single writer cannot hold a transaction across the call, the batch is read, sent and
        settled in turn."""
        if not self._db.postgres:
            async with self._db.system_transaction() as tx:
                rows = await OutboxRelayRepository(tx, self._table).pending(self._settings.batch_size, self._clock())
            if not rows:
                return 0
            batch = await self._send(rows)
            if batch.delivered or batch.refused:
                async with self._db.system_transaction() as tx:
                    await self._settle(OutboxRelayRepository(tx, self._table), batch)
            return self._outcome(batch)
        async with self._db.system_transaction() as tx:
            relay = OutboxRelayRepository(tx, self._table)
            rows = await relay.pending(self._settings.batch_size, self._clock(), lock=True)
            if not rows:
                return 0
            batch = await self._send(rows)
            await self._settle(relay, batch)
            return self._outcome(batch)

    @staticmethod
    def _outcome(batch: _Batch) -> int:
        return -1 if batch.unavailable and not batch.delivered else len(batch.delivered)

    async def _send(self, rows: Sequence[PendingEvent]) -> _Batch:
        batch = _Batch()
        events: list[tuple[PendingEvent, usage_event_pb2.UsageEvent]] = []
        for row in rows:
            try:
                events.append((row, usage_event_pb2.UsageEvent.FromString(row.payload)))
            except DecodeError as error:
                self._refused(batch, row, f"the stored event cannot be read: {error}")
        if not events:
            return batch
        try:
            with continue_traces("outbox relay batch", [row.event_id for row, _ in events]):
                await self._record([event for _, event in events])
        except grpc.aio.AioRpcError as error:
            if error.code() not in PERMANENT_CODES:
                log.warning(
                    "billing unavailable; usage events stay queued",
                    extra={"code": error.code().name, "pending_batch": len(rows)},
                )
                batch.unavailable = True
                return batch
            if len(events) == 1:
                self._refused(batch, events[0][0], f"{error.code().name}: {error.details()}")
            else:
                await self._isolate(events, batch)
            return batch
        batch.delivered += [row.event_id for row, _ in events]
        return batch

    async def _isolate(self, events: Sequence[tuple[PendingEvent, usage_event_pb2.UsageEvent]], batch: _Batch) -> None:
        """A batch billing refuses outright: its events one by one, so that one bad event cannot
        hold up the others; each one billing refuses waits out a backoff of its own."""
        for row, event in events:
            try:
                await self._record([event])
            except grpc.aio.AioRpcError as single:
                if single.code() not in PERMANENT_CODES:
                    batch.unavailable = True  # the rest stays queued as it was
                    return
                self._refused(batch, row, f"{single.code().name}: {single.details()}")
            else:
                batch.delivered.append(row.event_id)

    def _refused(self, batch: _Batch, row: PendingEvent, why: str) -> None:
        ceiling = min(
            self._settings.refused_backoff_cap_seconds,
            self._settings.refused_backoff_base_seconds * 2**row.attempts,
        )
        wait = self._rng.uniform(ceiling / 2, ceiling)  # never less than half: no spinning
        log.error(
            "billing refused usage event %s (refusal %d); offered again in %.0f s: %s",
            row.event_id,
            row.attempts + 1,
            wait,
            why,
            extra={"event_id": row.event_id, "refusals": row.attempts + 1},
        )
        batch.refused.append((row.event_id, self._clock() + timedelta(seconds=wait)))

    async def _settle(self, relay: OutboxRelayRepository, batch: _Batch) -> None:
        if batch.delivered:
            await relay.mark_delivered(batch.delivered, self._clock())
        for event_id, retry_time in batch.refused:
            await relay.note_refused(event_id, retry_time)

    async def _record(self, events: Sequence[usage_event_pb2.UsageEvent]) -> None:
        # The relay's own identity (no tenant, internal scope): each event names its tenant.
        await self._stub.RecordUsage(
            billing_service_pb2.RecordUsageRequest(events=events),
            metadata=service_metadata(self._signer, self._service),
            timeout=10,
        )

    async def _report(self) -> None:
        self._last_report = time.monotonic()
        lag = await self.lag()
        RELAY_PENDING.set(lag.pending)
        RELAY_REFUSED.set(lag.refused)
        RELAY_OLDEST_AGE.set(lag.oldest_age_seconds)
        now = time.monotonic()
        if lag.pending and now - self._last_lag_log >= 10:
            self._last_lag_log = now
            log.info(
                "outbox lag",
                extra={
                    "pending": lag.pending,
                    "refused": lag.refused,
                    "oldest_age_seconds": round(lag.oldest_age_seconds, 1),
                },
            )
        if self._health is not None:
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if lag.oldest_age_seconds > self._settings.lag_alert_seconds
                else health_pb2.HealthCheckResponse.SERVING
            )
            await self._health.set(self.health_name, status)
