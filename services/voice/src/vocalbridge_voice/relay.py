"""The billing outbox relay of standalone speech usage: delivers the events written with
Transcribe and Synthesize responses to billing's RecordUsage in batches.

Billing deduplicates on the event id, so a batch delivered twice (a crash between
RecordUsage and marking the rows) bills once; while billing is down the events wait,
the relay backs off, and requests go on succeeding.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

import grpc

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc, usage_event_pb2
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_voice.config import SERVICE, RelaySettings
from vocalbridge_voice.repository import UsageRelayRepository

log = logging.getLogger(__name__)

# Codes after which resending the same event cannot succeed.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


class UsageRelay:
    def __init__(
        self,
        db: Database,
        channel: grpc.aio.Channel,
        signer: IdentitySigner,
        settings: RelaySettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._signer = signer
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._failures = 0

    async def run_forever(self) -> None:
        while True:
            try:
                delivered = await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage relay iteration failed")
                delivered = -1
            if delivered < 0:
                self._failures += 1
                ceiling = min(
                    self._settings.backoff_cap_seconds, self._settings.poll_interval_seconds * 2**self._failures
                )
                await self._sleep(random.uniform(0, ceiling))
            elif delivered == 0:
                self._failures = 0
                await self._sleep(self._settings.poll_interval_seconds)
            else:
                self._failures = 0

    async def deliver_once(self) -> int:
        """Sends one batch: events delivered, 0 when none were pending, -1 when billing failed."""
        async with self._db.system_transaction() as tx:
            rows = await UsageRelayRepository(tx).pending(self._settings.batch_size)
        if not rows:
            return 0
        delivered: list[str] = []
        try:
            await self._record([usage_event_pb2.UsageEvent.FromString(row.payload) for row in rows])
            delivered = [row.event_id for row in rows]
        except grpc.aio.AioRpcError as error:
            if error.code() not in _PERMANENT:
                log.warning("billing unavailable; speech usage stays queued", extra={"code": error.code().name})
                return -1
            # One bad event must not hold up the others: send them one by one.
            for row in rows:
                try:
                    await self._record([usage_event_pb2.UsageEvent.FromString(row.payload)])
                    delivered.append(row.event_id)
                except grpc.aio.AioRpcError as single:
                    if single.code() not in _PERMANENT:
                        break
                    log.error("billing refused usage event %s: %s", row.event_id, single.details())
                    async with self._db.system_transaction() as tx:
                        await UsageRelayRepository(tx).note_attempt([row.event_id])
        if delivered:
            async with self._db.system_transaction() as tx:
                await UsageRelayRepository(tx).mark_delivered(delivered, self._clock())
        return len(delivered)

    async def _record(self, events: list[usage_event_pb2.UsageEvent]) -> None:
        await self._stub.RecordUsage(
            billing_service_pb2.RecordUsageRequest(events=events),
            metadata=service_metadata(self._signer, SERVICE),
            timeout=10,
        )
