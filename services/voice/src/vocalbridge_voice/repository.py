"""Voice data access: rows in, domain values out. Every tenant query filters on the
repository's tenant (row-level security enforces the same on PostgreSQL); the relay's
reads run in system transactions. Never commits: the use cases own transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from vocalbridge_common.db import insert_or_ignore
from vocalbridge_common.repository import SystemRepository, TenantRepository
from vocalbridge_voice.models import SpeechRequestRow, UsageOutboxRow


@dataclass(frozen=True)
class StoredRequest:
    fingerprint: str
    response: bytes
    expire_time: datetime


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    payload: bytes


class SpeechRequestRepository(TenantRepository):
    """One tenant's idempotent Transcribe and Synthesize requests."""

    async def add_if_absent(self, key: str, fingerprint: str, response: bytes, now: datetime, expire: datetime) -> bool:
        row = {
            "tenant_id": self.tenant_id,
            "idempotency_key": key,
            "fingerprint": fingerprint,
            "response": response,
            "create_time": now,
            "expire_time": expire,
        }
        return await insert_or_ignore(self.session, SpeechRequestRow, [row], ["tenant_id", "idempotency_key"]) == 1

    async def get(self, key: str) -> StoredRequest | None:
        query = select(SpeechRequestRow).where(
            SpeechRequestRow.tenant_id == self.tenant_id, SpeechRequestRow.idempotency_key == key
        )
        row = (await self.session.scalars(query)).one_or_none()
        return StoredRequest(row.fingerprint, row.response, row.expire_time) if row else None

    async def forget_expired(self, key: str, now: datetime) -> None:
        await self.session.execute(
            delete(SpeechRequestRow).where(
                SpeechRequestRow.tenant_id == self.tenant_id,
                SpeechRequestRow.idempotency_key == key,
                SpeechRequestRow.expire_time <= now,
            )
        )


class UsageOutboxRepository(TenantRepository):
    async def add(self, event_id: str, payload: bytes, now: datetime) -> None:
        await self.session.execute(
            insert(UsageOutboxRow).values(
                event_id=event_id, tenant_id=self.tenant_id, payload=payload, create_time=now, attempts=0
            )
        )


class UsageRelayRepository(SystemRepository):
    """The relay's view of the outbox: every tenant's events (system transactions only)."""

    async def pending(self, limit: int) -> list[PendingEvent]:
        query = (
            select(UsageOutboxRow.event_id, UsageOutboxRow.payload)
            .where(UsageOutboxRow.delivered_time.is_(None))
            .order_by(UsageOutboxRow.attempts, UsageOutboxRow.create_time, UsageOutboxRow.event_id)
            .limit(limit)
        )
        return [PendingEvent(event_id, payload) for event_id, payload in await self.session.execute(query)]

    async def mark_delivered(self, event_ids: Sequence[str], when: datetime) -> None:
        await self.session.execute(
            update(UsageOutboxRow).where(UsageOutboxRow.event_id.in_(event_ids)).values(delivered_time=when)
        )

    async def note_attempt(self, event_ids: Sequence[str]) -> None:
        await self.session.execute(
            update(UsageOutboxRow)
            .where(UsageOutboxRow.event_id.in_(event_ids))
            .values(attempts=UsageOutboxRow.attempts + 1)
        )
