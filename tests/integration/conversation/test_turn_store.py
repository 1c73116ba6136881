"""The two turn stores keep the same promises, on PostgreSQL (hand-written statements on the
driver's connection) and on SQLite (SQLAlchemy): a turn opens only in the tenant's own
session, claims its key once, reads the history numbered after what it holds, and stores
(or fails) only while its claim still holds the key. Row-level security still holds under
the hand-written statements: without the tenant, they see nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.conftest import temporary_database
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.idempotency import new_claim
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.domain.sessions import Message, MessageStatus, Role, Session
from vocalbridge_conversation.domain.usage import OutboxEntry
from vocalbridge_conversation.repository import PgTurnStore, SessionRepository, SqlTurnStore, turn_store
from vocalbridge_conversation.server import MIGRATIONS_DIR, SCHEMA

LEASE, TTL = timedelta(minutes=2), timedelta(hours=24)
TENANT, STRANGER = new_id("ten"), new_id("ten")


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
async def db(request, tmp_path_factory):
    if request.param == "postgresql":
        with temporary_database() as url:
            migrate(url, SCHEMA, MIGRATIONS_DIR)
            database = Database(url, SCHEMA)
            yield database
            await database.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('turns') / 'conversation.db'}"
        migrate(url, SCHEMA, MIGRATIONS_DIR)
        database = Database(url, SCHEMA)
        yield database
        await database.dispose()


@pytest.fixture
def store(db):
    chosen = turn_store(db)
    assert isinstance(chosen, PgTurnStore if db.postgres else SqlTurnStore)
    return chosen


async def new_session(db: Database) -> str:
    now = utcnow()
    session = Session(new_id("ses"), new_id("agt"), 3, Channel.TEXT, "", {}, now, now)
    async with db.tenant_transaction(TENANT) as tx:
        await SessionRepository(tx, TENANT).add(session)
    return session.id


@pytest.fixture
async def session_id(db) -> str:
    return await new_session(db)


@pytest.fixture(scope="module")
async def postgres_db():
    """Row-level security is PostgreSQL's: its test runs there only, not on both stores."""
    with temporary_database() as url:
        migrate(url, SCHEMA, MIGRATIONS_DIR)
        database = Database(url, SCHEMA)
        yield database
        await database.dispose()


def claim_of(key: str, at=None):
    return new_claim(key, "fingerprint", at or utcnow(), LEASE, TTL)


def messages_of(session_id: str, user: str, reply: str) -> tuple[Message, Message]:
    now = utcnow()

    def message(role: Role, content: str) -> Message:
        return Message(new_id("msg"), session_id, role, content, MessageStatus.COMPLETE, Channel.TEXT, now)

    return message(Role.USER, user), message(Role.ASSISTANT, reply)


def event() -> OutboxEntry:
    return OutboxEntry(new_id("use"), b"usage", utcnow())


async def open_turn(store, session_id, key, after=0, tenant=TENANT):
    claim = claim_of(key)
    async with store.transaction(tenant) as turns:
        return claim, await turns.open_turn(session_id, claim, after, 200)


async def store_turn(store, claim, session_id, user, reply):
    async with store.transaction(TENANT) as turns:
        return await turns.store_turn(claim.id, b"response", messages_of(session_id, user, reply), event(), utcnow())


async def test_a_turn_opens_in_the_tenants_session_only(store, session_id):
    _, opened = await open_turn(store, session_id, "k-open")
    assert opened is not None and opened.claimed
    assert (opened.session.id, opened.session.last_seq, opened.history) == (session_id, 0, ())
    _, elsewhere = await open_turn(store, session_id, "k-stranger", tenant=STRANGER)
    assert elsewhere is None  # another tenant's session does not exist
    _, missing = await open_turn(store, new_id("ses"), "k-missing")
    assert missing is None
    async with store.transaction(TENANT) as turns:
        assert await turns.get("k-missing") is None  # nothing was claimed for a missing session


async def test_a_key_is_claimed_once(store, session_id):
    first, opened = await open_turn(store, session_id, "k-once")
    _, again = await open_turn(store, session_id, "k-once")
    assert opened.claimed and again is not None and not again.claimed
    async with store.transaction(TENANT) as turns:
        assert (await turns.get("k-once")).id == first.id


async def test_stored_turns_are_numbered_and_read_back_after_a_number(store, session_id):
    claim, _ = await open_turn(store, session_id, "k-1")
    assert await store_turn(store, claim, session_id, "one", "reply one") == 2
    claim, opened = await open_turn(store, session_id, "k-2")
    assert [(m.seq, m.role, m.content) for m in opened.history] == [
        (1, Role.USER, "one"),
        (2, Role.ASSISTANT, "reply one"),
    ]
    assert await store_turn(store, claim, session_id, "two", "reply two") == 4
    _, opened = await open_turn(store, session_id, "k-3", after=2)
    assert opened.session.last_seq == 4
    assert [m.content for m in opened.history] == ["two", "reply two"]
    async with store.transaction(TENANT) as turns:
        assert (await turns.get("k-2")).response == b"response"
        read = await turns.read_history(session_id, 3, 200)
    assert [m.content for m in read.history] == ["reply two"]


async def test_a_claim_taken_over_can_neither_store_nor_fail(store, session_id):
    old, _ = await open_turn(store, session_id, "k-taken")
    new = replace(claim_of("k-taken", utcnow() + LEASE), id=new_id("idk"))
    async with store.transaction(TENANT) as turns:
        assert await turns.take_over("k-taken", old.id, new)
    assert await store_turn(store, old, session_id, "late", "late reply") is None
    async with store.transaction(TENANT) as turns:
        failed = Message(new_id("msg"), session_id, Role.USER, "late", MessageStatus.FAILED, Channel.TEXT, utcnow())
        assert await turns.fail_turn(old.id, failed, utcnow()) is None
        assert not await turns.release(old.id)
        assert (await turns.get("k-taken")).id == new.id
        assert (await turns.read_history(session_id, 0, 200)).session.last_seq == 0  # nothing was written
    assert await store_turn(store, new, session_id, "retry", "retry reply") == 2
    async with store.transaction(TENANT) as turns:
        assert not await turns.release(new.id)  # a completed key is never freed


async def test_a_failed_turn_frees_its_key_and_stays_out_of_the_history(store, session_id):
    claim, _ = await open_turn(store, session_id, "k-fail")
    failed = Message(new_id("msg"), session_id, Role.USER, "lost", MessageStatus.FAILED, Channel.TEXT, utcnow())
    async with store.transaction(TENANT) as turns:
        assert await turns.fail_turn(claim.id, failed, utcnow()) == 1
        assert await turns.get("k-fail") is None
    _, opened = await open_turn(store, session_id, "k-fail")  # the key is free again
    assert opened.claimed and opened.session.last_seq == 1 and opened.history == ()


async def test_a_completion_outside_any_session_queues_its_event_and_completes_its_key_once(store, db):
    """The OpenAI-compatible API's stateless completion: no session, no messages; its usage event,
    and with a key its response, written only while the claim still holds the key."""
    claim = claim_of("k-completion")
    async with store.transaction(TENANT) as turns:
        assert await turns.insert_if_absent(claim)
    first, second, keyless = event(), event(), event()
    async with store.transaction(TENANT) as turns:
        assert await turns.store_completion(claim.id, b"completion", first)
    async with store.transaction(TENANT) as turns:
        assert (await turns.get("k-completion")).response == b"completion"
        # A second store by the same claim (a duplicate, or a claim taken over) writes nothing.
        assert not await turns.store_completion(claim.id, b"again", second)
        assert (await turns.get("k-completion")).response == b"completion"
        # Without a key only the event is queued.
        assert await turns.store_completion(None, b"ignored", keyless)
    queued = await pending_events(db)
    assert first.event_id in queued and keyless.event_id in queued and second.event_id not in queued


async def pending_events(db: Database) -> set[str]:
    """The tenant's usage events waiting in the outbox."""
    async with db.tenant_transaction(TENANT) as tx:
        result = await tx.execute(text("SELECT event_id FROM usage_outbox WHERE tenant_id = :t"), {"t": TENANT})
        return {row[0] for row in result}


async def test_without_the_tenant_the_statements_see_nothing(postgres_db):
    db = postgres_db
    store = turn_store(db)
    session_id = await new_session(db)
    claim, _ = await open_turn(store, session_id, "k-rls")
    await store_turn(store, claim, session_id, "secret", "secret reply")
    async with db.tenant_connection(STRANGER) as connection:
        # No tenant filter in these queries: the policy alone hides the rows.
        for table in ("sessions", "messages", "idempotency_keys", "usage_outbox"):
            assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0
    async with db.tenant_connection(TENANT) as connection:
        assert await connection.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", session_id) == 2
    async with db.tenant_connection(STRANGER) as connection:
        with pytest.raises(Exception, match="row-level security"):
            await connection.execute(
                "INSERT INTO usage_outbox (event_id, tenant_id, payload, create_time, attempts) "
                "VALUES ('use_x', $1, '\\x00', now(), 0)",
                TENANT,
            )
