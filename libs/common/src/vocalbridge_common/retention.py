"""The retention sweeper: what a service keeps only for a while is deleted once that while is
over, so its idempotency and outbox tables stop growing.

- An idempotency record (which holds a whole response) is deleted once its key has expired
  (past the TTL, when the key may run again anyway), its lease is over and it is older than
  the retention. A key still in its lease, or within its TTL, is never touched.
- An outbox row is deleted once billing has had it (delivered) for longer than the retention.
  An undelivered row is never touched, however old.

Deletes go in batches, each its own short system transaction (cross-tenant, like the relay),
so a backlog never holds locks for long. One process per service sweeps (the one that runs
the relay); a second one would only find less to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, select
from sqlalchemy.sql.elements import ColumnElement

from vocalbridge_common import metrics
from vocalbridge_common.config import ConfigError, Env
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.idempotency import IdempotencyKeyColumns
from vocalbridge_common.outbox import OutboxColumns

log = logging.getLogger(__name__)

SWEPT = metrics.counter("retention_swept_rows", "Rows deleted by the retention sweeper, by table.", ("table",))


@dataclass(frozen=True)
class RetentionSettings:
    """VB_RETENTION_* (the same variables in every service that keeps such tables)."""

    # How long an expired idempotency record and a delivered outbox row are kept.
    retention: timedelta = timedelta(days=7)
    # How often the sweeper looks; a pass deletes everything due, batch by batch.
    interval_seconds: float = 300.0
    # Rows per DELETE (and per transaction).
    batch_size: int = 1000

    @classmethod
    def from_env(cls, env: Env) -> RetentionSettings:
        settings = cls(
            retention=timedelta(hours=env.float("VB_RETENTION_HOURS", cls.retention.total_seconds() / 3600)),
            interval_seconds=env.float("VB_RETENTION_SWEEP_SECONDS", cls.interval_seconds),
            batch_size=env.int("VB_RETENTION_BATCH_SIZE", cls.batch_size),
        )
        if settings.retention < timedelta(0):
            raise ConfigError("VB_RETENTION_HOURS must not be negative")
        if settings.interval_seconds <= 0:
            raise ConfigError("VB_RETENTION_SWEEP_SECONDS must be positive")
        if settings.batch_size < 1:
            raise ConfigError("VB_RETENTION_BATCH_SIZE must be at least 1")
        return settings


@dataclass(frozen=True)
class Swept:
    """What one pass deleted."""

    idempotency_records: int = 0
    outbox_rows: int = 0


class RetentionSweeper:
    def __init__(
        self,
        db: Database,
        settings: RetentionSettings,
        *,
        idempotency: type[IdempotencyKeyColumns] | None = None,
        outbox: type[OutboxColumns] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._settings = settings
        # Mapped models of the service's (the mixins alone map to no table).
        self._idempotency: Any = idempotency
        self._outbox: Any = outbox
        self._clock = clock

    async def sweep_once(self) -> Swept:
        """Deletes every row due now, in batches; returns how many of each kind."""
        now = self._clock()
        cutoff = now - self._settings.retention
        keys = rows = 0
        if self._idempotency is not None:
            t = self._idempotency
            keys = await self._drain(
                t, t.id, and_(t.expire_time <= now, t.lease_expire_time <= now, t.create_time <= cutoff)
            )
        if self._outbox is not None:
            t = self._outbox
            rows = await self._drain(t, t.event_id, and_(t.delivered_time.is_not(None), t.delivered_time <= cutoff))
        return Swept(keys, rows)

    async def _drain(self, table: Any, key: Any, due: ColumnElement[bool]) -> int:
        total = 0
        while True:
            batch = select(key).where(due).limit(self._settings.batch_size)
            async with self._db.system_transaction() as session:
                result = await session.execute(delete(table).where(key.in_(batch.scalar_subquery())))
            deleted = cast(CursorResult[Any], result).rowcount
            total += deleted
            if deleted:
                SWEPT.labels(table.__tablename__).inc(deleted)
            if deleted < self._settings.batch_size:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def run_forever(self) -> None:
        """Sweeps every interval until cancelled; a failed pass is logged and tried again next time."""
        while True:
            try:
                swept = await self.sweep_once()
                if swept.idempotency_records or swept.outbox_rows:
                    log.info(
                        "retention sweep",
                        extra={"idempotency_records": swept.idempotency_records, "outbox_rows": swept.outbox_rows},
                    )
            except Exception:  # the loop must outlive a database outage
                log.exception("retention sweep failed; trying again next interval")
            await asyncio.sleep(self._settings.interval_seconds)
