"""Conversation data access: rows in, domain values out (the one place where a row
becomes a domain value and back). Tenant repositories filter every query on their
tenant (row-level security enforces the same on PostgreSQL); the outbox relay's reads
span tenants and run in a system transaction. Flushes, never commits: the service
layer owns transactions.

A turn's data goes through `TurnStore` (its transactions) and the turn repository it
hands out, in two implementations behind one interface (`service.turns.TurnTransaction`):

- `PgTurns`, PostgreSQL's fast path: a few hand-written statements on the driver's own
  connection (asyncpg prepares each once per connection). Opening a turn (the session,
  the idempotency claim and the new history) is one statement, storing it (the key's
  completion, the messages, the usage event, the session's numbering) is another; each
  runs in a transaction of three round trips (BEGIN with the tenant, the statement,
  COMMIT). Row-level security applies as everywhere. A completion outside any session
  (the OpenAI-compatible API) is stored by one more function: its usage event, and its
  key's response when it has a key.
- `SqlTurns`, the same operations with SQLAlchemy, for SQLite (the embedded default) and
  for any other backend. Both keep the same promises (tests/integration/conversation/
  test_turn_store.py runs the same checks on both).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, or_, select, update

from vocalbridge_common.db import Database, tenant_begin
from vocalbridge_common.idempotency import IdempotencyRecord, KeyState, SqlIdempotencyStore
from vocalbridge_common.outbox import OutboxRepository
from vocalbridge_common.repository import TenantRepository
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.domain.history import HistoryMessage, OpenedTurn
from vocalbridge_conversation.domain.sessions import (
    HISTORY_STATUSES,
    Message,
    MessageStatus,
    Role,
    Session,
    SessionState,
)
from vocalbridge_conversation.domain.usage import OutboxEntry
from vocalbridge_conversation.models import IdempotencyRow, MessageRow, OutboxRow, SessionRow

if TYPE_CHECKING:
    from vocalbridge_common.db import DriverConnection

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
                last_seq=0,
            )
        )

    async def get(self, session_id: str) -> Session | None:
        query = select(SessionRow).where(SessionRow.tenant_id == self.tenant_id, SessionRow.id == session_id)
        row = (await self.session.scalars(query)).one_or_none()
        return _session_of(row) if row else None

    async def state(self, session_id: str) -> SessionState | None:
        query = select(SessionRow.agent_id, SessionRow.agent_version, SessionRow.last_seq).where(
            SessionRow.tenant_id == self.tenant_id, SessionRow.id == session_id
        )
        row = (await self.session.execute(query)).one_or_none()
        return SessionState(session_id, row[0], row[1], row[2]) if row else None

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

    async def advance(self, session_id: str, when: datetime, added: int) -> int | None:
        """Marks the session updated at `when` and reserves the next `added` message numbers;
        the last of them (None: no such session). The row stays locked until commit, so the
        stores of one session number their messages one after the other."""
        result = await self.session.execute(
            update(SessionRow)
            .where(SessionRow.tenant_id == self.tenant_id, SessionRow.id == session_id)
            .values(update_time=when, last_seq=SessionRow.last_seq + added)
            .returning(SessionRow.last_seq)
        )
        return result.scalar_one_or_none()


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
    async def add(self, first_seq: int, *messages: Message) -> None:
        """Stores `messages` numbered from `first_seq` on, in order."""
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
                    "seq": first_seq + offset,
                }
                for offset, message in enumerate(messages)
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

    async def history(self, session_id: str, after_seq: int, limit: int) -> tuple[HistoryMessage, ...]:
        """The newest `limit` history messages (what a provider sees) numbered above `after_seq`,
        oldest first."""
        query = (
            select(MessageRow.seq, MessageRow.role, MessageRow.content)
            .where(
                MessageRow.tenant_id == self.tenant_id,
                MessageRow.session_id == session_id,
                MessageRow.status.in_([int(status) for status in HISTORY_STATUSES]),
                MessageRow.seq > after_seq,
            )
            .order_by(MessageRow.seq.desc())
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        return tuple(HistoryMessage.of(seq, Role(role), content) for seq, role, content in reversed(rows))


# -- idempotency keys and the billing outbox: the common library's, on this schema's tables --


class IdempotencyRepository(SqlIdempotencyStore):
    """The tenant's idempotency keys (an IdempotencyStore)."""

    table = IdempotencyRow


# -- turns: SQLAlchemy ---------------------------------------------------------------


class SqlTurns(TenantRepository):
    """A tenant's turns through SQLAlchemy (SQLite, the embedded default; any backend)."""

    def __init__(self, session: Any, tenant_id: str) -> None:
        super().__init__(session, tenant_id)
        self._sessions = SessionRepository(session, tenant_id)
        self._messages = MessageRepository(session, tenant_id)
        self._keys = IdempotencyRepository(session, tenant_id)

    async def open_turn(
        self, session_id: str, claim: IdempotencyRecord, after_seq: int, limit: int
    ) -> OpenedTurn | None:
        state = await self._sessions.state(session_id)
        if state is None:
            return None
        if not await self._keys.insert_if_absent(claim):
            return OpenedTurn(state, claimed=False, history=())
        return OpenedTurn(state, claimed=True, history=await self._messages.history(session_id, after_seq, limit))

    async def read_history(self, session_id: str, after_seq: int, limit: int) -> OpenedTurn | None:
        state = await self._sessions.state(session_id)
        if state is None:
            return None
        return OpenedTurn(state, claimed=True, history=await self._messages.history(session_id, after_seq, limit))

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        return await self._keys.insert_if_absent(record)

    async def get(self, key: str) -> IdempotencyRecord | None:
        return await self._keys.get(key)

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        return await self._keys.take_over(key, old_id, record)

    async def complete(self, record_id: str, response: bytes) -> bool:
        return await self._keys.complete(record_id, response)

    async def release(self, record_id: str) -> bool:
        return await self._keys.release(record_id)

    async def store_turn(
        self, record_id: str, response: bytes, messages: Sequence[Message], event: OutboxEntry | None, when: datetime
    ) -> int | None:
        if not messages or not await self._keys.complete(record_id, response):
            return None
        return await self._write(messages, event, when)

    async def fail_turn(self, record_id: str, message: Message, when: datetime) -> int | None:
        if not await self._keys.release(record_id):
            return None
        return await self._write([message], None, when)

    async def store_completion(self, record_id: str | None, response: bytes, event: OutboxEntry) -> bool:
        if record_id is not None and not await self._keys.complete(record_id, response):
            return False
        await OutboxRepository(self.session, self.tenant_id, OutboxRow).add(
            event.event_id, event.payload, event.create_time
        )
        return True

    async def _write(self, messages: Sequence[Message], event: OutboxEntry | None, when: datetime) -> int:
        last_seq = await self._sessions.advance(messages[0].session_id, when, len(messages))
        if last_seq is None:
            raise LookupError(f"session {messages[0].session_id} vanished during its turn")
        await self._messages.add(last_seq - len(messages) + 1, *messages)
        if event is not None:
            await OutboxRepository(self.session, self.tenant_id, OutboxRow).add(
                event.event_id, event.payload, event.create_time
            )
        return last_seq


class SqlTurnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[SqlTurns]:
        async with self._db.tenant_transaction(tenant_id) as session:
            yield SqlTurns(session, tenant_id)


# -- turns: PostgreSQL's fast path ------------------------------------------------------

_HISTORY_STATUSES = ", ".join(str(int(status)) for status in HISTORY_STATUSES)
_RECORD_COLUMNS = "id, key, fingerprint, state, response, create_time, lease_expire_time, expire_time"

_HISTORY_ONLY = f"""
WITH session AS (
    SELECT agent_id, agent_version, last_seq FROM sessions WHERE tenant_id = $1 AND id = $2
), history AS (
    SELECT seq, role, content FROM messages
    WHERE tenant_id = $1 AND session_id = $2 AND status IN ({_HISTORY_STATUSES}) AND seq > $3
    ORDER BY seq DESC LIMIT $4
)
SELECT s.agent_id, s.agent_version, s.last_seq, true,
       (SELECT array_agg(seq ORDER BY seq) FROM history),
       (SELECT array_agg(role ORDER BY seq) FROM history),
       (SELECT array_agg(content ORDER BY seq) FROM history)
FROM session AS s
"""
# The server-side functions of migration 0004: one statement, one transaction, one round trip.
_OPEN_TURN = "SELECT * FROM open_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_STORE_TURN = "SELECT store_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
_FAIL_TURN = "SELECT fail_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
# Migration 0006's: a completion outside any session.
_STORE_COMPLETION = "SELECT store_completion($1, $2, $3, $4, $5, $6)"
_INSERT_KEY = """
INSERT INTO idempotency_keys (id, tenant_id, key, fingerprint, state, response, create_time, lease_expire_time,
                              expire_time)
VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tenant_id, key) DO NOTHING
RETURNING id
"""
_GET_KEY = f"SELECT {_RECORD_COLUMNS} FROM idempotency_keys WHERE tenant_id = $1 AND key = $2"
_TAKE_OVER = """
UPDATE idempotency_keys
SET id = $4, fingerprint = $5, state = $6, response = $7, create_time = $8, lease_expire_time = $9, expire_time = $10
WHERE tenant_id = $1 AND key = $2 AND id = $3
RETURNING id
"""
_COMPLETE = f"""
UPDATE idempotency_keys SET state = '{KeyState.COMPLETED.value}', response = $3
WHERE tenant_id = $1 AND id = $2 AND state = '{KeyState.IN_PROGRESS.value}'
RETURNING id
"""
_RELEASE = f"""
DELETE FROM idempotency_keys WHERE tenant_id = $1 AND id = $2 AND state = '{KeyState.IN_PROGRESS.value}'
RETURNING id
"""


def _opened(session_id: str, row: Any) -> OpenedTurn:
    """An OpenedTurn from (agent_id, agent_version, last_seq, claimed, seqs, roles, contents)."""
    agent_id, agent_version, last_seq, claimed, seqs, roles, contents = row
    history = tuple(
        HistoryMessage.of(seq, Role(role), content)
        for seq, role, content in zip(seqs or (), roles or (), contents or (), strict=True)
    )
    return OpenedTurn(SessionState(session_id, agent_id, agent_version, last_seq), claimed=claimed, history=history)


def _pg_record_of(row: Any) -> IdempotencyRecord:
    return IdempotencyRecord(
        id=row[0],
        key=row[1],
        fingerprint=row[2],
        state=KeyState(row[3]),
        response=row[4],
        create_time=row[5],
        lease_expire_time=row[6],
        expire_time=row[7],
    )


def _message_columns(messages: Sequence[Message]) -> list[list[Any]]:
    return [
        [message.id for message in messages],
        [int(message.role) for message in messages],
        [message.content for message in messages],
        [int(message.status) for message in messages],
        [message.channel.value for message in messages],
        [message.create_time for message in messages],
    ]


class PgTurns:
    """A tenant's turns on PostgreSQL through a driver connection (asyncpg). Opening, storing
    and failing a turn are calls of the functions of migration 0004, each a transaction of
    its own that sets the tenant first (the service's blocks hold one such call alone); any
    other statement runs in one tenant transaction, begun before the first of them (BEGIN
    with the tenant's set_config) and ended by the store. Every statement filters on the
    tenant, and row-level security enforces it again."""

    def __init__(self, connection: DriverConnection, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError("PgTurns needs a tenant")
        self._connection = connection
        self.tenant_id = tenant_id
        self._in_transaction = False

    async def _transaction(self) -> DriverConnection:
        """The connection, inside this tenant's transaction (begun on first use)."""
        if not self._in_transaction:
            await self._connection.execute(tenant_begin(self.tenant_id))
            self._in_transaction = True
        return self._connection

    def _alone(self) -> DriverConnection:
        """The connection for a function call: its own transaction, committed when it returns,
        unless this block began its transaction already (then it is part of that one)."""
        return self._connection

    async def end(self, commit: bool) -> None:
        if self._in_transaction:
            self._in_transaction = False
            await self._connection.execute("COMMIT" if commit else "ROLLBACK")

    async def open_turn(
        self, session_id: str, claim: IdempotencyRecord, after_seq: int, limit: int
    ) -> OpenedTurn | None:
        row = await self._alone().fetchrow(
            _OPEN_TURN,
            self.tenant_id,
            session_id,
            claim.id,
            claim.key,
            claim.fingerprint,
            claim.create_time,
            claim.lease_expire_time,
            claim.expire_time,
            after_seq,
            limit,
        )
        return _opened(session_id, row) if row is not None else None

    async def read_history(self, session_id: str, after_seq: int, limit: int) -> OpenedTurn | None:
        row = await (await self._transaction()).fetchrow(_HISTORY_ONLY, self.tenant_id, session_id, after_seq, limit)
        return _opened(session_id, row) if row is not None else None

    async def insert_if_absent(self, record: IdempotencyRecord) -> bool:
        inserted = await (await self._transaction()).fetchval(
            _INSERT_KEY,
            self.tenant_id,
            record.id,
            record.key,
            record.fingerprint,
            record.state.value,
            record.response,
            record.create_time,
            record.lease_expire_time,
            record.expire_time,
        )
        return inserted is not None

    async def get(self, key: str) -> IdempotencyRecord | None:
        row = await (await self._transaction()).fetchrow(_GET_KEY, self.tenant_id, key)
        return _pg_record_of(row) if row is not None else None

    async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
        taken = await (await self._transaction()).fetchval(
            _TAKE_OVER,
            self.tenant_id,
            key,
            old_id,
            record.id,
            record.fingerprint,
            record.state.value,
            record.response,
            record.create_time,
            record.lease_expire_time,
            record.expire_time,
        )
        return taken is not None

    async def complete(self, record_id: str, response: bytes) -> bool:
        return await (await self._transaction()).fetchval(_COMPLETE, self.tenant_id, record_id, response) is not None

    async def release(self, record_id: str) -> bool:
        return await (await self._transaction()).fetchval(_RELEASE, self.tenant_id, record_id) is not None

    async def store_turn(
        self, record_id: str, response: bytes, messages: Sequence[Message], event: OutboxEntry | None, when: datetime
    ) -> int | None:
        if not messages or event is None:
            raise ValueError("a stored turn has its messages and its usage event")
        last_seq = await self._alone().fetchval(
            _STORE_TURN,
            self.tenant_id,
            record_id,
            when,
            messages[0].session_id,
            *_message_columns(messages),
            response,
            event.event_id,
            event.payload,
            event.create_time,
        )
        return int(last_seq) if last_seq is not None else None  # None: the claim was lost, nothing written

    async def fail_turn(self, record_id: str, message: Message, when: datetime) -> int | None:
        last_seq = await self._alone().fetchval(
            _FAIL_TURN, self.tenant_id, record_id, when, message.session_id, *_message_columns([message])
        )
        return int(last_seq) if last_seq is not None else None

    async def store_completion(self, record_id: str | None, response: bytes, event: OutboxEntry) -> bool:
        stored = await self._alone().fetchval(
            _STORE_COMPLETION,
            self.tenant_id,
            record_id,
            response if record_id is not None else None,
            event.event_id,
            event.payload,
            event.create_time,
        )
        return bool(stored)  # False: the claim was lost, nothing written


class PgTurnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[PgTurns]:
        """A tenant's turns on one connection: a function call alone is one round trip; other
        statements share a transaction, committed when the block ends (rolled back if it raises)."""
        async with self._db.driver_connection() as connection:
            turns = PgTurns(connection, tenant_id)
            try:
                yield turns
            except BaseException:
                await turns.end(commit=False)
                raise
            await turns.end(commit=True)


def turn_store(db: Database) -> PgTurnStore | SqlTurnStore:
    """The turn store for this database: the fast path on PostgreSQL, SQLAlchemy elsewhere."""
    return PgTurnStore(db) if db.postgres else SqlTurnStore(db)
