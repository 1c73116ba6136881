"""The conversation server sweeps its own idempotency keys and outbox (the common retention
sweeper, started with the relay), on its PostgreSQL schema."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from vocalbridge_common.db import utcnow
from vocalbridge_common.ids import new_id
from vocalbridge_conversation.models import IdempotencyRow, OutboxRow


async def _left(database, tenant) -> tuple[set[str], set[str]]:
    async with database.system_transaction() as tx:
        keys = set((await tx.scalars(select(IdempotencyRow.key).where(IdempotencyRow.tenant_id == tenant))).all())
        events = set((await tx.scalars(select(OutboxRow.event_id).where(OutboxRow.tenant_id == tenant))).all())
    return keys, events


async def test_the_server_prunes_what_is_past_retention(start_conversation, database):
    tenant, now = new_id("ten"), utcnow()
    old = now - timedelta(days=3)
    async with database.system_transaction() as tx:
        await tx.execute(
            IdempotencyRow.__table__.insert(),
            [
                {
                    "id": new_id("idk"),
                    "tenant_id": tenant,
                    "key": key,
                    "fingerprint": "f",
                    "state": "completed",
                    "response": b"r",
                    "create_time": created,
                    "lease_expire_time": created + timedelta(minutes=2),
                    "expire_time": created + timedelta(hours=24),
                }
                for key, created in (("expired", old), ("live", now))
            ],
        )
        await tx.execute(
            OutboxRow.__table__.insert(),
            [
                {
                    "event_id": f"evt-{new_id('x')}-{name}",
                    "tenant_id": tenant,
                    "payload": b"p",
                    "create_time": old,
                    "delivered_time": delivered,
                    "attempts": 0,
                    "retry_time": None,
                }
                for name, delivered in (("delivered", old), ("pending", None))
            ],
        )
    # Retention of one day, swept every 50 ms.
    await start_conversation(run_relay=True, VB_RETENTION_HOURS="24", VB_RETENTION_SWEEP_SECONDS="0.05")
    for _ in range(200):
        keys, events = await _left(database, tenant)
        if keys == {"live"} and len(events) == 1:
            break
        await asyncio.sleep(0.05)
    assert keys == {"live"}
    assert [event.rsplit("-", 1)[1] for event in events] == ["pending"]
