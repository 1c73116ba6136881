"""Migration 0002 turns the stored channel numbers into their names, on PostgreSQL
(row-level security intact) and on SQLite (batch mode: indexes and the foreign key
survive the table copy), and back again on downgrade. Migration 0003 numbers every
tenant's existing messages per session in conversation order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests import migration_support
from tests.conftest import temporary_database
from vocalbridge_common.db import Database, UtcDateTime
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.repository import MessageRepository, SessionRepository
from vocalbridge_conversation.server import MIGRATIONS_DIR, SCHEMA

TENANT, STRANGER = "ten_01m87srx2qrnbdce06p98dr0wk", "ten_01m87srx2qrnbdce06p98dr0wm"
TEXT_SESSION, VOICE_SESSION = "ses_01m87srx2qrnbdce06p98dr0wa", "ses_01m87srx2qrnbdce06p98dr0wb"
CREATED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# The two tables as revision 0001 left them, as far as these rows need.
SESSIONS_V1 = sa.table(
    "sessions",
    *(sa.column(name) for name in ("id", "tenant_id", "agent_id", "external_user_id", "metadata_json")),
    sa.column("agent_version", sa.Integer),
    sa.column("channel", sa.Integer),
    sa.column("create_time", UtcDateTime),
    sa.column("update_time", UtcDateTime),
)
MESSAGES_V1 = sa.table(
    "messages",
    *(sa.column(name) for name in ("id", "tenant_id", "session_id", "content")),
    sa.column("role", sa.Integer),
    sa.column("status", sa.Integer),
    sa.column("channel", sa.Integer),
    sa.column("create_time", UtcDateTime),
)


def alembic(url: str, action: str, revision: str) -> None:
    migration_support.alembic(url, MIGRATIONS_DIR, SCHEMA, action, revision)


def connect(url: str) -> sa.Engine:
    return migration_support.connect(url, SCHEMA)


def add_version_1_rows(url: str) -> None:
    """A text session with one message and a voice session with two, stored as numbers."""
    engine = connect(url)
    with engine.begin() as connection:
        for session_id, channel in ((TEXT_SESSION, 1), (VOICE_SESSION, 2)):
            connection.execute(
                SESSIONS_V1.insert().values(
                    id=session_id,
                    tenant_id=TENANT,
                    agent_id="agt_01m87srx2qrnbdce06p98dr0wk",
                    agent_version=1,
                    channel=channel,
                    external_user_id="",
                    metadata_json="{}",
                    create_time=CREATED,
                    update_time=CREATED,
                )
            )
        for number, (session_id, channel) in enumerate(((TEXT_SESSION, 1), (VOICE_SESSION, 2), (VOICE_SESSION, 2))):
            connection.execute(
                MESSAGES_V1.insert().values(
                    id=f"msg_01m87srx2qrnbdce06p98dr0w{number}",
                    tenant_id=TENANT,
                    session_id=session_id,
                    role=1,
                    content="hello",
                    status=1,
                    channel=channel,
                    create_time=CREATED,
                )
            )
    engine.dispose()


def stored_channels(url: str) -> dict[str, list[object]]:
    engine = connect(url)
    with engine.connect() as connection:
        channels = {
            table: sorted(connection.scalars(sa.text(f"SELECT channel FROM {table}")), key=str)
            for table in ("sessions", "messages")
        }
    engine.dispose()
    return channels


async def read_through_the_service(url: str) -> None:
    """The service's repositories read the converted rows; another tenant sees none of them."""
    db = Database(url, SCHEMA)
    try:
        async with db.tenant_transaction(TENANT) as tx:
            voice = await SessionRepository(tx, TENANT).get(VOICE_SESSION)
            messages = await MessageRepository(tx, TENANT).page(VOICE_SESSION, None, 10)
        assert voice is not None and voice.channel is Channel.VOICE
        assert [m.channel for m in messages] == [Channel.VOICE, Channel.VOICE]
        async with db.tenant_transaction(STRANGER) as tx:
            assert await SessionRepository(tx, STRANGER).get(VOICE_SESSION) is None
            if db.postgres:  # no tenant filter in this query: row-level security alone hides the rows
                assert await tx.scalar(sa.text("SELECT count(*) FROM sessions")) == 0
    finally:
        await db.dispose()


CONVERTED = {
    "sessions": ["CHANNEL_TEXT", "CHANNEL_VOICE"],
    "messages": ["CHANNEL_TEXT", "CHANNEL_VOICE", "CHANNEL_VOICE"],
}
AS_NUMBERS = {"sessions": [1, 2], "messages": [1, 2, 2]}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conversation.db'}"
    else:
        with temporary_database() as url:
            yield url


async def test_channels_become_names_and_back(empty_database):
    url = empty_database
    alembic(url, "upgrade", "0001")
    add_version_1_rows(url)
    assert stored_channels(url) == AS_NUMBERS

    alembic(url, "upgrade", "0002")
    assert stored_channels(url) == CONVERTED
    alembic(url, "upgrade", "head")  # the service's repositories know the newest schema
    await read_through_the_service(url)

    alembic(url, "downgrade", "0001")
    assert stored_channels(url) == AS_NUMBERS
    alembic(url, "upgrade", "head")
    assert stored_channels(url) == CONVERTED


def test_postgresql_keeps_row_level_security_on_the_converted_tables():
    with temporary_database() as url:
        alembic(url, "upgrade", "head")
        engine = connect(url)
        with engine.connect() as connection:
            for table in ("sessions", "messages"):
                forced = connection.execute(
                    sa.text("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": f"{SCHEMA}.{table}"},
                ).one()
                policies = connection.scalar(
                    sa.text("SELECT count(*) FROM pg_policies WHERE schemaname = :s AND tablename = :t"),
                    {"s": SCHEMA, "t": table},
                )
                column_type = connection.scalar(
                    sa.text(
                        "SELECT data_type FROM information_schema.columns "
                        "WHERE table_schema = :s AND table_name = :t AND column_name = 'channel'"
                    ),
                    {"s": SCHEMA, "t": table},
                )
                assert (tuple(forced), policies, column_type) == ((True, True), 1, "character varying")
        engine.dispose()


def test_sqlite_keeps_indexes_and_the_foreign_key_through_the_table_copy(tmp_path):
    url = f"sqlite:///{tmp_path / 'conversation.db'}"
    alembic(url, "upgrade", "head")
    engine = connect(url)
    inspector = sa.inspect(engine)
    assert {index["name"] for index in inspector.get_indexes("sessions")} == {"ix_sessions_tenant_agent"}
    assert {index["name"] for index in inspector.get_indexes("messages")} == {
        "ix_messages_session",
        "uq_messages_session_seq",
    }
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("messages")] == ["sessions"]
    assert {column["name"]: str(column["type"]) for column in inspector.get_columns("messages")}["channel"] == (
        "VARCHAR(16)"
    )
    engine.dispose()


def numbering(url: str) -> tuple[dict[str, int | None], dict[str, int]]:
    engine = connect(url)
    with engine.connect() as connection:
        seqs = dict(connection.execute(sa.text("SELECT id, seq FROM messages")).all())
        last = dict(connection.execute(sa.text("SELECT id, last_seq FROM sessions")).all())
    engine.dispose()
    return seqs, last


async def test_existing_messages_are_numbered_in_conversation_order(empty_database):
    url = empty_database
    alembic(url, "upgrade", "0002")
    add_version_1_rows(url)  # (0001's shape is a subset of 0002's: channels as numbers convert below)
    engine = connect(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE sessions SET channel = 'CHANNEL_TEXT' WHERE channel = '1'"))
        connection.execute(sa.text("UPDATE sessions SET channel = 'CHANNEL_VOICE' WHERE channel = '2'"))
        connection.execute(sa.text("UPDATE messages SET channel = 'CHANNEL_TEXT' WHERE channel = '1'"))
        connection.execute(sa.text("UPDATE messages SET channel = 'CHANNEL_VOICE' WHERE channel = '2'"))
    engine.dispose()

    alembic(url, "upgrade", "0003")
    seqs, last = numbering(url)
    # The voice session's two messages share a creation time: ids break the tie.
    assert seqs == {
        "msg_01m87srx2qrnbdce06p98dr0w0": 1,
        "msg_01m87srx2qrnbdce06p98dr0w1": 1,
        "msg_01m87srx2qrnbdce06p98dr0w2": 2,
    }
    assert last == {TEXT_SESSION: 1, VOICE_SESSION: 2}

    alembic(url, "downgrade", "0002")
    alembic(url, "upgrade", "head")
    assert numbering(url) == (seqs, last)


def test_the_turn_functions_run_as_their_caller_under_row_level_security():
    """Migration 0004's functions are SECURITY INVOKER: the service role calls them and
    row-level security applies inside as everywhere (never the owner's rights)."""
    with temporary_database() as url:
        alembic(url, "upgrade", "head")
        engine = connect(url)
        with engine.connect() as connection:
            functions = connection.execute(
                sa.text(
                    "SELECT proname, prosecdef FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace "
                    "WHERE nspname = :s AND proname IN ('open_turn', 'store_turn', 'fail_turn')"
                ),
                {"s": SCHEMA},
            ).all()
        engine.dispose()
        assert sorted(functions) == [("fail_turn", False), ("open_turn", False), ("store_turn", False)]
