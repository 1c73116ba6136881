"""Conversation data access: rows in, domain values out (the one place where a row
becomes a domain value and back). Tenant repositories filter every query on their
tenant (row-level security enforces the same on PostgreSQL); the outbox relay's reads
span tenants and run in a system transaction. Flushes, never commits: the service
layer owns transactions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, insert, or_, select, update

from vocalbridge_common.db import insert_or_ignore
from vocalbridge_common.repository import SystemRepository, TenantRepository
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.domain.idempotency import IdempotencyRecord, KeyState
from vocalbridge_conversation.domain.sessions import Message, MessageStatus, Role, Session
from vocalbridge_conversation.models import IdempotencyRow, MessageRow, OutboxRow, SessionRow

# -- sessions ----------------------------------------------------------------------


def _session_of(row: SessionRow) -> Session:
    return Session(
        id=row.id,
        agent_id=row.agent_id,
        agent_version=row.agent_version,
        channel=Channel(row.channel),
        external_user_id=row.external_user_id,
        metadata=json.loads(row.metadata_json),
        create_time=row.create_time,
        update_time=row.update_time,
    )


class SessionRepository(TenantRepository):
    async def add(self, session: Session) -> None:
        await self.session.execute(
            insert(SessionRow).values(
                id=session.id,
                tenant_id=self.tenant_id,
                agent_id=session.agent_id,
                agent_version=session.agent_version,
                channel=session.channel.value,
                external_user_id=session.external_user_id,
                metadata_json=json.dumps(dict(session.metadata), sort_keys=True),
                create_time=session.create_time,
                update_time=session.update_time,
            )
        )

    async def get(self, session_id: str) -> Session | None:
        query = select(SessionRow).where(SessionRow.tenant_id == self.tenant_id, SessionRow.id == session_id)
        row = (await self.session.scalars(query)).one_or_none()
        return _session_of(row) if row else None

    async def page(self, agent_id: str | None, before_id: str | None, limit: int) -> list[Session]:
        """Newest first (ids sort by creation)."""
        query = (
            select(SessionRow).where(SessionRow.tenant_id == self.tenant_id).order_by(SessionRow.id.desc()).limit(limit)
        )
        if agent_id:
            query = query.where(SessionRow.agent_id == agent_id)
        if before_id:
            query = query.where(SessionRow.id < before_id)
        return [_session_of(row) for row in await self.session.scalars(query)]

    async def touch(self, session_id: str, when: datetime) -> None:
        await self.session.execute(
            update(SessionRow)
            .where(SessionRow.tenant_id == self.tenant_id, SessionRow.id == session_id)
            .values(update_time=when)
        )


# -- messages ----------------------------------------------------------------------


def _message_of(row: MessageRow) -> Message:
    return Message(
        id=row.id,
        session_id=row.session_id,
        role=Role(row.role),
        content=row.content,
        status=MessageStatus(row.status),
        channel=Channel(row.channel),
        create_time=row.create_time,
    )


class MessageRepository(TenantRepository):
    async def add(self, *messages: Message) -> None:
        await self.session.execute(
            insert(MessageRow),
            [
                {
                    "id": message.id,
                    "tenant_id": self.tenant_id,
                    "session_id": message.session_id,
                    "role": int(message.role),
                    "content": message.content,
                    "status": int(message.status),
                    "channel": message.channel.value,
                    "create_time": message.create_time,
                }
                for message in messages
            ],
        )

    async def page(self, session_id: str, after: tuple[datetime, str] | None, limit: int) -> list[Message]:
        """Oldest first, by (create_time, id): ids alone do not order messages made in the same millisecond."""
        query = (
            select(MessageRow)
            .where(MessageRow.tenant_id == self.tenant_id, MessageRow.session_id == session_id)
            .order_by(MessageRow.create_time, MessageRow.id)
            .limit(limit)
        )
        if after:
            after_time, after_id = after
            query = query.where(
                or_(
                    MessageRow.create_time > after_time,
                    and_(MessageRow.create_time == after_time, MessageRow.id > after_id),
                )
            )
        return [_message_of(row) for row in await self.session.scalars(query)]

    async def latest(self, session_id: str, statuses: Sequence[MessageStatus], limit: int) -> list[Message]:
        """The newest `limit` messages with one of `statuses`, returned oldest first."""
        query = (
            select(MessageRow)
            .where(
                MessageRow.tenant_id == self.tenant_id,
                MessageRow.session_id == session_id,
                MessageRow.status.in_([int(status) for status in statuses]),
            )
            .order_by(MessageRow.create_time.desc(), MessageRow.id.desc())
            .limit(limit)
        )
        return [_message_of(row) for row in reversed((await self.session.scalars(query)).all())]


# -- idempotency keys --------------------------------------------------------------


def _record_values(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "fingerprint": record.fingerprint,
        "state": record.state.value,
        "response": record.response,
        "create_time": record.create_time,
        "lease_expire_time": record.lease_expire_time,
        "expire_time": record.expire_time,
    }


def _record_of(row: IdempotencyRow) -> IdempotencyRecord:
    return IdempotencyRecord(
        id=row.id,
        key=row.key,
        fingerprint=row.fingerprint,
        state=KeyState(row.state),
        response=row.response,
        create_time=row.create_time,
        lease_expire_time=row.lease_expire_time,
        expire_time=row.expire_time,
    )


def _rowcount(result: object) -> int:
    return cast(CursorResult[Any], result).rowcount


class IdempotencyRepository(TenantRepository):
    """The tenant's idempotency keys (service.idempotency.IdempotencyStore)."""

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        row = {**_record_values(record), "tenant_id": self.tenant_id, "key": record.key}
        inserted = await insert_or_ignore(self.session, IdempotencyRow, [row], ["tenant_id", "key"])
        return inserted == 1

    async def get(self, key: str) -> IdempotencyRecord | None:
        query = select(IdempotencyRow).where(IdempotencyRow.tenant_id == self.tenant_id, IdempotencyRow.key == key)
        row = (await self.session.scalars(query)).one_or_none()
        return _record_of(row) if row else None

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        result = await self.session.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.tenant_id == self.tenant_id, IdempotencyRow.key == key, IdempotencyRow.id == old_id)
            .values(**_record_values(record))
        )
        return _rowcount(result) == 1

    async def complete(self, record_id: str, response: bytes) -> None:
        await self.session.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.tenant_id == self.tenant_id, IdempotencyRow.id == record_id)
            .values(state=KeyState.COMPLETED.value, response=response)
        )

    async def release(self, record_id: str) -> None:
        await self.session.execute(
            delete(IdempotencyRow).where(IdempotencyRow.tenant_id == self.tenant_id, IdempotencyRow.id == record_id)
        )


# -- the billing outbox ------------------------------------------------------------


@dataclass(frozen=True)
class PendingEvent:
    """A usage event waiting for the relay: its id and its serialized billing.v1.UsageEvent."""

    event_id: str
    payload: bytes


@dataclass(frozen=True)
class OutboxLag:
    pending: int
    oldest: datetime | None  # creation time of the oldest pending event


class OutboxRepository(TenantRepository):
    """Writes a tenant's usage events, in the transaction of the replies they bill."""

    async def add(self, event_id: str, payload: bytes, create_time: datetime) -> None:
        await self.session.execute(
            insert(OutboxRow).values(
                event_id=event_id,
                tenant_id=self.tenant_id,
                payload=payload,
                create_time=create_time,
                delivered_time=None,
                attempts=0,
            )
        )


class OutboxRelayRepository(SystemRepository):
    """The relay's view of the outbox: every tenant's events (system transactions only)."""

    async def pending(self, limit: int) -> list[PendingEvent]:
        """The oldest undelivered events."""
        query = (
            select(OutboxRow.event_id, OutboxRow.payload)
            .where(OutboxRow.delivered_time.is_(None))
            # Events billing refused sink behind the healthy ones.
            .order_by(OutboxRow.attempts, OutboxRow.create_time, OutboxRow.event_id)
            .limit(limit)
        )
        return [PendingEvent(event_id, payload) for event_id, payload in await self.session.execute(query)]

    async def mark_delivered(self, event_ids: Sequence[str], when: datetime) -> None:
        await self.session.execute(
            update(OutboxRow).where(OutboxRow.event_id.in_(event_ids)).values(delivered_time=when)
        )

    async def note_attempt(self, event_ids: Sequence[str]) -> None:
        await self.session.execute(
            update(OutboxRow).where(OutboxRow.event_id.in_(event_ids)).values(attempts=OutboxRow.attempts + 1)
        )

    async def lag(self) -> OutboxLag:
        query = select(func.count(), func.min(OutboxRow.create_time)).where(OutboxRow.delivered_time.is_(None))
        count, oldest = (await self.session.execute(query)).one()
        return OutboxLag(int(count), oldest)
