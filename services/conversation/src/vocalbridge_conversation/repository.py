"""Conversation data access. Flushes, never commits: the service owns transactions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from vocalbridge_common.db import insert_or_ignore
from vocalbridge_conversation.models import IdempotencyRow, MessageRow, OutboxRow, SessionRow


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: SessionRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, tenant_id: str, session_id: str) -> SessionRow | None:
        query = select(SessionRow).where(SessionRow.tenant_id == tenant_id, SessionRow.id == session_id)
        return (await self._session.scalars(query)).one_or_none()

    async def page(self, tenant_id: str, agent_id: str | None, before_id: str | None, limit: int) -> list[SessionRow]:
        """Newest first."""
        query = select(SessionRow).where(SessionRow.tenant_id == tenant_id).order_by(SessionRow.id.desc()).limit(limit)
        if agent_id:
            query = query.where(SessionRow.agent_id == agent_id)
        if before_id:
            query = query.where(SessionRow.id < before_id)
        return list((await self._session.scalars(query)).all())

    async def touch(self, tenant_id: str, session_id: str, when: datetime) -> None:
        await self._session.execute(
            update(SessionRow)
            .where(SessionRow.tenant_id == tenant_id, SessionRow.id == session_id)
            .values(update_time=when)
        )


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, *rows: MessageRow) -> None:
        self._session.add_all(rows)
        await self._session.flush()

    async def page(
        self, tenant_id: str, session_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[MessageRow]:
        """Oldest first, by (create_time, id): ids alone do not order messages made in the same millisecond."""
        query = (
            select(MessageRow)
            .where(MessageRow.tenant_id == tenant_id, MessageRow.session_id == session_id)
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
        return list((await self._session.scalars(query)).all())

    async def latest(self, tenant_id: str, session_id: str, statuses: tuple[int, ...], limit: int) -> list[MessageRow]:
        """The newest `limit` messages with one of `statuses`, returned oldest first."""
        query = (
            select(MessageRow)
            .where(
                MessageRow.tenant_id == tenant_id,
                MessageRow.session_id == session_id,
                MessageRow.status.in_(statuses),
            )
            .order_by(MessageRow.create_time.desc(), MessageRow.id.desc())
            .limit(limit)
        )
        return list(reversed((await self._session.scalars(query)).all()))


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert_if_absent(self, row: dict) -> bool:
        inserted = await insert_or_ignore(self._session, IdempotencyRow, [row], ["tenant_id", "key"])
        return inserted == 1

    async def get(self, tenant_id: str, key: str) -> IdempotencyRow | None:
        query = select(IdempotencyRow).where(IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.key == key)
        return (await self._session.scalars(query)).one_or_none()

    async def take_over(self, tenant_id: str, key: str, old_id: str, new_values: dict) -> bool:
        """Replaces an abandoned or expired record, only if it is still the one we saw."""
        result = await self._session.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.key == key, IdempotencyRow.id == old_id)
            .values(**new_values)
        )
        return result.rowcount == 1

    async def complete(self, tenant_id: str, record_id: str, response: bytes) -> None:
        await self._session.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.id == record_id)
            .values(state="completed", response=response)
        )

    async def release(self, tenant_id: str, record_id: str) -> None:
        await self._session.execute(
            delete(IdempotencyRow).where(IdempotencyRow.tenant_id == tenant_id, IdempotencyRow.id == record_id)
        )


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: OutboxRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def pending(self, limit: int) -> list[OutboxRow]:
        """Oldest undelivered events of every tenant (system transactions only)."""
        query = (
            select(OutboxRow)
            .where(OutboxRow.delivered_time.is_(None))
            # Events billing refused sink behind the healthy ones.
            .order_by(OutboxRow.attempts, OutboxRow.create_time, OutboxRow.event_id)
            .limit(limit)
        )
        return list((await self._session.scalars(query)).all())

    async def mark_delivered(self, event_ids: list[str], when: datetime) -> None:
        await self._session.execute(
            update(OutboxRow).where(OutboxRow.event_id.in_(event_ids)).values(delivered_time=when)
        )

    async def note_attempt(self, event_ids: list[str]) -> None:
        await self._session.execute(
            update(OutboxRow).where(OutboxRow.event_id.in_(event_ids)).values(attempts=OutboxRow.attempts + 1)
        )

    async def lag(self) -> tuple[int, datetime | None]:
        """(pending count, creation time of the oldest pending event)."""
        query = select(func.count(), func.min(OutboxRow.create_time)).where(OutboxRow.delivered_time.is_(None))
        count, oldest = (await self._session.execute(query)).one()
        return count, oldest
